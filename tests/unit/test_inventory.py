"""GPU inventory: pools from Node/Pod objects (as the sandbox creates them) and from files."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox.pools import DEFAULT_POOLS, load_pools, node_objects

from mmop.catalog import GpuCatalog, GpuError, default_catalog, resolve_gpu
from mmop.inventory import (
    DEFAULT_INVENTORY_FILE,
    PLACEMENT_LABELS,
    Inventory,
    InventoryError,
    NodeGpus,
    Requests,
    Taint,
    default_inventory,
    inventory_from_objects,
    inventory_from_records,
    load_inventory,
    node_record,
    parse_quantity,
    place_pending,
    pod_gpu_request,
    pod_requests,
)

Obj = dict[str, Any]


def placement_view(inventory: Inventory) -> Inventory:
    """The inventory with each node's labels cut to the placement labels: a file inventory
    knows only those (and the hostname), the cluster's nodes carry many more."""
    pools = tuple(
        pool.model_copy(
            update={
                "nodes": tuple(
                    n.model_copy(
                        update={
                            "labels": {k: n.labels[k] for k in PLACEMENT_LABELS if k in n.labels}
                        }
                    )
                    for n in pool.nodes
                )
            }
        )
        for pool in inventory.pools
    )
    return inventory.model_copy(update={"pools": pools})


def sandbox_nodes() -> list[Obj]:
    return node_objects(load_pools(), pod_cidr_octet=120)


def node_named(nodes: list[Obj], name: str) -> Obj:
    return next(n for n in nodes if n["metadata"]["name"] == name)


def gpu_node(name: str, labels: dict[str, str], gpus: int = 8) -> Obj:
    """A GPU node that is not from the sandbox (other label sets)."""
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": "31850m", "memory": "250Gi", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    node: str | None,
    gpus: int,
    phase: str = "Running",
    *,
    limits_only: bool = False,
    init: list[Obj] | None = None,
) -> Obj:
    resource = {"nvidia.com/gpu": str(gpus)}
    resources = {"limits": resource} if limits_only else {"requests": resource, "limits": resource}
    spec: Obj = {"containers": [{"name": "c", "resources": resources}, {"name": "side"}]}
    if node is not None:
        spec["nodeName"] = node
    if init is not None:
        spec["initContainers"] = init
    return {
        "metadata": {"name": f"p-{node}-{gpus}-{phase}"},
        "spec": spec,
        "status": {"phase": phase},
    }


def init_container(gpus: int, *, sidecar: bool = False) -> Obj:
    container: Obj = {"name": "i", "resources": {"requests": {"nvidia.com/gpu": gpus}}}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


@pytest.fixture
def cluster() -> Inventory:
    nodes = sandbox_nodes()
    cordoned = node_named(nodes, "l40s-0")
    cordoned["spec"]["unschedulable"] = True
    cordoned["spec"]["taints"].append(
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    )
    not_ready = node_named(nodes, "l40s-1")
    not_ready["status"]["conditions"] = [
        {"type": "MemoryPressure", "status": "False"},
        {"type": "Ready", "status": "Unknown"},
    ]
    nodes += [
        gpu_node("gke-h100-0", {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}),
        gpu_node("gke-t4-0", {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}, gpus=4),
        gpu_node(
            "mig-0",
            {
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
                "nvidia.com/gpu.memory": "4864",
                "nvidia.com/mig.strategy": "single",
            },
            gpus=7,
        ),
        gpu_node("h800-0", {"nvidia.com/gpu.product": "NVIDIA-H800"}),
        gpu_node("h800-1", {"nvidia.com/gpu.product": "NVIDIA-H800"}),
        gpu_node("bare-gpu-0", {}, gpus=2),
        {
            "metadata": {"name": "cpu-0", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi"}},
        },
        {
            "metadata": {"name": "cpu-1", "labels": {}},
            "spec": {},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "0"}},
        },
    ]
    pods = [
        pod("h100-0", 4),
        pod("h100-0", 2, "Pending", limits_only=True),
        pod("h100-1", 8, "Succeeded"),
        pod("h100-1", 8, "Failed"),
        pod(None, 8, "Pending"),  # not bound yet: holds nothing
        pod("h100-1", 1, init=[init_container(3)]),  # init containers count as a max: 3
        pod("l40s-2", 1, init=[init_container(1, sidecar=True), init_container(2)]),
        pod("cpu-0", 0),
        pod("l40s-0", 4),
    ]
    return inventory_from_objects(nodes, pods)


def test_sandbox_nodes_become_one_pool_per_gpu_type(cluster: Inventory) -> None:
    assert set(cluster.gpu_types()) == {
        "H100-80GB-SXM",
        "A100-40GB-SXM",
        "A100-40GB-SXM-MIG-1g.5gb",
        "L40S",
        "L4",
        "T4",
    }
    l4 = cluster.pool("L4")
    assert l4 is not None
    assert (l4.node_count, l4.gpus_per_node, l4.total_gpus, l4.free_gpus) == (8, 1, 8, 8)
    assert l4.product_label == "NVIDIA-L4"
    assert l4.price_per_hour_usd == resolve_gpu("L4").price_per_hour_usd
    assert l4.taints == (Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule"),)
    assert l4.node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-L4",
        "nvidia.com/gpu.family": "ada-lovelace",
    }
    node = l4.nodes[0]
    assert node.name == "l4-0" and node.gpu == "L4"
    assert node.cpu_allocatable_millicores == 16_000
    assert node.memory_allocatable_bytes == 64 * 2**30
    # every label is kept (a spec's nodeSelector may name any); only placement labels select
    assert node.labels["kubernetes.io/hostname"] == "l4-0"
    assert node.labels["type"] == "kwok"
    assert {k: node.labels[k] for k in l4.node_selector} == l4.node_selector


def test_pods_hold_gpus_until_they_terminate(cluster: Inventory) -> None:
    h100 = cluster.pool("H100-80GB")
    assert h100 is not None
    by_name = {n.name: n for n in h100.nodes}
    assert by_name["h100-0"].gpus_requested == 6  # 4 requested + 2 by limit only
    assert by_name["h100-1"].gpus_requested == 3  # succeeded/failed pods hold nothing
    assert by_name["gke-h100-0"].gpus_requested == 0
    assert [n.name for n in h100.nodes] == ["gke-h100-0", "h100-0", "h100-1"]
    assert h100.free_gpus_per_node == (8, 2, 5)
    assert (h100.total_gpus, h100.free_gpus, h100.largest_free_block) == (24, 15, 8)
    # GKE and GFD nodes share the pool, so no one product label selects all of it
    assert h100.node_selector == {}
    assert h100.product_label == "NVIDIA-H100-80GB-HBM3"


def test_cordoned_and_not_ready_nodes_stay_visible_without_free_capacity(
    cluster: Inventory,
) -> None:
    l40s = cluster.pool("L40S")
    assert l40s is not None
    by_name = {n.name: n for n in l40s.nodes}
    assert not by_name["l40s-0"].schedulable
    assert by_name["l40s-0"].unschedulable_reason == "cordoned"
    assert not by_name["l40s-1"].schedulable
    assert by_name["l40s-1"].unschedulable_reason == "NotReady"
    assert by_name["l40s-1"].gpus_free == 4 and by_name["l40s-1"].gpus_available == 0
    # max(app 1 + sidecar 1, sidecar 1 + init 2): the init container started after the sidecar
    assert by_name["l40s-2"].gpus_requested == 3
    assert l40s.free_gpus_per_node == (0, 0, 1, 4)
    assert (l40s.node_count, l40s.schedulable_nodes, l40s.total_gpus) == (4, 2, 16)
    assert l40s.free_gpus == 5
    # the cordon taint is on one node only: not a pool taint
    assert l40s.taints == (Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule"),)


def test_cloud_labels_stand_in_for_gfd(cluster: Inventory) -> None:
    t4 = cluster.pool("T4")
    assert t4 is not None
    (node,) = t4.nodes
    assert (node.product_label, node.product_label_key) == (
        "nvidia-tesla-t4",
        "cloud.google.com/gke-accelerator",
    )
    assert node.cpu_allocatable_millicores == 31_850
    assert t4.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert t4.taints == (Taint(key="nvidia.com/gpu", effect="NoSchedule"),)


@pytest.mark.parametrize(
    ("labels", "gpu"),
    [
        ({"cloud.google.com/gke-accelerator": "nvidia-l4"}, "L4"),
        ({"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}, "A100-80GB-SXM"),
        ({"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}, "A100-40GB-SXM"),
        ({"cloud.google.com/gke-accelerator": "nvidia-h200-141gb"}, "H200"),
        ({"karpenter.k8s.aws/instance-gpu-name": "l4"}, "L4"),
        ({"karpenter.k8s.aws/instance-gpu-name": "a10g"}, "A10G"),
        ({"karpenter.k8s.aws/instance-gpu-name": "h100"}, "H100-80GB-SXM"),
        ({"karpenter.k8s.aws/instance-gpu-name": "a100"}, "A100-40GB-SXM"),
        (
            {
                "karpenter.k8s.aws/instance-gpu-name": "a100",
                "karpenter.k8s.aws/instance-gpu-memory": "81920",
            },
            "A100-80GB-SXM",
        ),
        ({"eks.amazonaws.com/instance-gpu-name": "l40s"}, "L40S"),
        # GFD wins over a cloud label when both are there
        (
            {
                "nvidia.com/gpu.product": "NVIDIA-L4",
                "cloud.google.com/gke-accelerator": "nvidia-tesla-t4",
            },
            "L4",
        ),
    ],
)
def test_gpu_from_labels(labels: dict[str, str], gpu: str) -> None:
    inventory = inventory_from_objects([gpu_node("n", labels)], [])
    assert inventory.gpu_types() == (gpu,)
    assert inventory.unknown == ()


def test_mig_single_strategy_is_its_own_pool_with_the_slice_memory(cluster: Inventory) -> None:
    mig = cluster.pool("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb")
    assert mig is not None
    assert mig is cluster.pool("A100-40GB-SXM-MIG-1g.5gb")
    assert (mig.gpu, mig.mig_profile, mig.name) == (
        "A100-40GB-SXM",
        "1g.5gb",
        "A100-40GB-SXM-MIG-1g.5gb",
    )
    assert mig.memory_gib_override == pytest.approx(4.75)
    assert mig.gpu_spec().memory_gib == pytest.approx(4.75)
    assert mig.price_per_hour_usd == pytest.approx(resolve_gpu("A100-40GB").price_per_hour_usd / 7)
    assert mig.nodes[0].labels["nvidia.com/mig.strategy"] == "single"
    assert cluster.can_place("A100-40GB-SXM-MIG-1g.5gb", 1, 10) == 7
    whole = cluster.pool("A100-40GB")
    assert whole is not None and whole.mig_profile is None and whole.memory_gib_override is None
    assert [n.name for n in whole.nodes] == ["a100-0", "a100-1"]


def test_gke_gpu_partition_is_a_mig_pool() -> None:
    node = gpu_node(
        "gke-mig",
        {
            "cloud.google.com/gke-accelerator": "nvidia-a100-80gb",
            "cloud.google.com/gke-gpu-partition-size": "3g.40gb",
        },
        gpus=2,
    )
    inventory = inventory_from_objects([node], [])
    (pool,) = inventory.pools
    assert pool.name == "A100-80GB-SXM-MIG-3g.40gb"
    assert pool.memory_gib_override == pytest.approx(40e9 / 2**30)


def test_unknown_products_are_reported_not_dropped(cluster: Inventory) -> None:
    assert cluster.unknown_products == ("", "NVIDIA-H800")
    by_product = {u.product_label: u for u in cluster.unknown}
    assert by_product["NVIDIA-H800"].nodes == ("h800-0", "h800-1")
    assert by_product["NVIDIA-H800"].gpus_allocatable == 16
    assert by_product[""].nodes == ("bare-gpu-0",)
    all_nodes = {n.name for p in cluster.pools for n in p.nodes}
    assert not all_nodes & {"h800-0", "h800-1", "bare-gpu-0", "cpu-0", "cpu-1"}


def test_can_place_needs_a_whole_replica_on_one_node(cluster: Inventory) -> None:
    assert cluster.can_place("L4", 1, 3) == 3  # capped at what was asked
    assert cluster.can_place("L4", 1, 20) == 8
    assert cluster.can_place("L4", 2, 1) == 0  # bigger than any node
    assert cluster.can_place("H100", 16, 1) == 0
    assert cluster.can_place("H100", 8, 5) == 1  # h100-0 and h100-1 are partly used
    assert cluster.can_place("H100", 2, 10) == 4 + 1 + 2
    assert cluster.can_place("L40S", 4, 4) == 1  # the cordoned and NotReady nodes do not count
    assert cluster.can_place("B200", 1, 1) == 0  # in the catalog, not in the cluster
    assert cluster.can_place("L4", 1, 0) == 0
    with pytest.raises(GpuError):
        cluster.can_place("H300", 1, 1)
    with pytest.raises(ValueError, match="at least 1 GPU"):
        cluster.can_place("L4", 0, 1)
    with pytest.raises(ValueError, match="replicas"):
        cluster.can_place("L4", 1, -1)


GiB = 2**30


def l4_node(name: str, cpu: str = "4", memory: str = "16Gi", **extra: str) -> Obj:
    """A single-L4 instance as clouds sell it (g6.xlarge, g2-standard-4): 4 CPU, 16 GiB."""
    obj = gpu_node(name, {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=1)
    obj["status"]["allocatable"].update(cpu=cpu, memory=memory, **extra)
    return obj


def test_a_pod_bigger_than_the_nodes_cpu_and_memory_is_not_placed(tmp_path: Path) -> None:
    """The finding: 6 CPU / 19Gi pods were planned onto 4 CPU / 16Gi L4 nodes, and stayed
    Pending. The whole pod must fit one node."""
    from_file = load_inventory(
        write(
            tmp_path,
            [{"name": "l4", "gpu": "L4", "nodes": 8, "gpusPerNode": 1, "cpu": 4, "memory": "16Gi"}],
        )
    )
    from_nodes = inventory_from_objects([l4_node(f"l4-{i}") for i in range(8)], [])
    for inventory in (from_file, from_nodes):
        assert inventory.can_place("L4", 1, 1) == 1  # GPUs alone would fit
        assert inventory.can_place("L4", 1, 1, cpu_millicores=6000, memory_bytes=19 * GiB) == 0
        assert inventory.can_place("L4", 1, 8, cpu_millicores=4000, memory_bytes=16 * GiB) == 8
        assert inventory.can_place("L4", 1, 8, cpu_millicores=3000, memory_bytes=17 * GiB) == 0
        assert inventory.pod_shortfall("L4", 1, cpu_millicores=6000, memory_bytes=19 * GiB) == (
            "no L4 node can hold the pod: it requests 6 CPU and 19Gi memory; the most any node "
            "has free is 4 CPU and 16Gi memory (ephemeral storage: ok)"
        )
        assert inventory.pod_shortfall("L4", 1, cpu_millicores=4000, memory_bytes=16 * GiB) is None
        pool = inventory.pool("L4")
        assert pool is not None
        assert pool.replicas_that_fit(1, cpu_millicores=6000, memory_bytes=19 * GiB) == 0


def test_several_replicas_share_a_node_when_gpus_cpu_and_memory_allow() -> None:
    node = gpu_node("h", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, gpus=8)
    node["status"]["allocatable"].update(cpu="64", memory="512Gi")
    inventory = inventory_from_objects([node], [])
    assert inventory.can_place("H100", 1, 8) == 8
    assert inventory.can_place("H100", 1, 8, cpu_millicores=10_000) == 6
    assert inventory.can_place("H100", 2, 8, cpu_millicores=10_000, memory_bytes=200 * GiB) == 2
    assert inventory.can_place("H100", 2, 8, memory_bytes=100 * GiB) == 4
    with pytest.raises(ValueError, match="cpu_millicores"):
        inventory.can_place("H100", 1, 1, cpu_millicores=-1)


def test_pods_take_cpu_memory_and_storage_as_the_scheduler_counts_them() -> None:
    def bound(node: str, spec: Obj, phase: str = "Running") -> Obj:
        return {
            "metadata": {"name": "p"},
            "spec": {"nodeName": node, **spec},
            "status": {"phase": phase},
        }

    def c(**requests: str) -> Obj:
        return {"name": "c", "resources": {"requests": requests}}

    pods = [
        # a DaemonSet's agent: no GPUs, still takes CPU and memory
        bound("l4-0", {"containers": [c(cpu="250m", memory="512Mi")]}),
        # limits only: the API server makes them the requests
        bound("l4-0", {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}),
        # no requests at all: counts 0
        bound("l4-0", {"containers": [{"name": "c"}]}),
        # terminated and unbound pods take nothing
        bound("l4-0", {"containers": [c(cpu="2")]}, phase="Succeeded"),
        {"metadata": {"name": "u"}, "spec": {"containers": [c(cpu="2")]}, "status": {}},
        # max(app 1 + sidecar 1, sidecar 1 + init 3) = 4 CPU; memory max(2Gi + 0, 0 + 1Gi)
        bound(
            "l4-1",
            {
                "containers": [c(cpu="1", memory="2Gi")],
                "initContainers": [
                    {**c(cpu="1"), "restartPolicy": "Always"},
                    c(cpu="3", memory="1Gi"),
                ],
                "overhead": {"cpu": "100m", "memory": "64Mi"},
            },
        ),
        # pod-level requests win over the containers' for CPU and memory
        bound(
            "l4-2",
            {
                "containers": [c(cpu="1", memory="1Gi", **{"ephemeral-storage": "10Gi"})],
                "resources": {"requests": {"cpu": "3", "memory": "4Gi"}},
            },
        ),
    ]
    nodes = [l4_node("l4-0"), l4_node("l4-1"), l4_node("l4-2", **{"ephemeral-storage": "100Gi"})]
    inventory = inventory_from_objects(nodes, pods)
    pool = inventory.pool("L4")
    assert pool is not None
    got = {
        n.name: (
            n.cpu_requested_millicores,
            n.memory_requested_bytes,
            n.ephemeral_storage_requested_bytes,
        )
        for n in pool.nodes
    }
    assert got == {
        "l4-0": (1250, 512 * 2**20, 0),
        "l4-1": (4100, 2 * GiB + 64 * 2**20, 0),
        "l4-2": (3000, 4 * GiB, 10 * GiB),
    }
    by_name = {n.name: n for n in pool.nodes}
    assert by_name["l4-0"].cpu_free_millicores == 2750
    assert by_name["l4-1"].cpu_free_millicores == 0  # more requested than allocatable: 0, not less
    assert by_name["l4-0"].ephemeral_storage_allocatable_bytes is None  # not reported
    assert by_name["l4-0"].ephemeral_storage_free_bytes is None
    assert by_name["l4-2"].ephemeral_storage_free_bytes == 90 * GiB
    assert pod_requests(pods[0]) == ("l4-0", Requests(0, 250, 512 * 2**20, 0))
    assert pod_requests(pods[2]) is None and pod_gpu_request(pods[0]) is None
    assert inventory.can_place("L4", 1, 3, ephemeral_bytes=95 * GiB) == 2  # l4-2 has 90Gi left
    assert inventory.can_place("L4", 1, 3, cpu_millicores=1000) == 2  # l4-0 and l4-2
    bad = bound("l4-0", {"containers": [c(memory="-1Gi")]})
    with pytest.raises(ValueError, match="memory: negative"):
        pod_requests(bad)


def test_nodes_without_cpu_memory_or_storage_are_not_limited_by_them() -> None:
    obj = gpu_node("n", {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=1)
    obj["status"]["allocatable"] = {"nvidia.com/gpu": "1"}
    record = node_record(obj)
    assert isinstance(record, NodeGpus)
    assert record.cpu_allocatable_millicores is None and record.memory_allocatable_bytes is None
    inventory = inventory_from_records([record], {"n": Requests(0, 500, GiB, GiB)})
    assert inventory.can_place("L4", 1, 1, cpu_millicores=10**6, memory_bytes=10**15) == 1
    assert inventory.pod_shortfall("L4", 1, cpu_millicores=10**6, memory_bytes=10**15) is None


def test_shortfall_names_what_no_node_has() -> None:
    nodes = [
        l4_node("a", cpu="8", memory="16Gi", **{"ephemeral-storage": "50Gi"}),
        l4_node("b", cpu="4", memory="32Gi", **{"ephemeral-storage": "50Gi"}),
        l4_node("c", cpu="3850m", memory="15.5Gi"),
    ]
    nodes[2]["spec"]["unschedulable"] = True
    inventory = inventory_from_objects(nodes, [])
    short = inventory.pod_shortfall
    assert short("L4", 2, cpu_millicores=1000, memory_bytes=GiB) == (
        "no L4 node can hold the pod: it requests 2 GPUs; the most any node has free is 1 GPU "
        "(CPU, memory and ephemeral storage: ok)"
    )
    assert short("L4", 1, cpu_millicores=9500, memory_bytes=GiB, ephemeral_bytes=60 * GiB) == (
        "no L4 node can hold the pod: it requests 9.5 CPU and 60Gi ephemeral storage; the most "
        "any node has free is 8 CPU and 50Gi ephemeral storage (memory: ok)"
    )
    # each resource is free somewhere, but not all of them on one node
    assert short("L4", 1, cpu_millicores=6000, memory_bytes=20 * GiB) == (
        "no L4 node can hold the pod: it requests 1 GPU, 6 CPU and 20Gi memory; no node has all "
        "of it free at once (the closest, a, has 1 GPU, 8 CPU and 16Gi memory)"
    )
    assert short("L4", 1, cpu_millicores=6000, memory_bytes=8 * GiB) is None
    assert short("H100", 1, cpu_millicores=1, memory_bytes=1) == (
        "the cluster has no H100-80GB-SXM nodes"
    )
    cordoned = inventory_from_objects([nodes[2]], [])
    assert cordoned.pod_shortfall("L4", 1, cpu_millicores=0, memory_bytes=0) == (
        "no L4 node takes new pods: all 1 are cordoned or NotReady"
    )
    # a node's free amounts are rounded down, a pod's requests up
    odd = inventory_from_objects([l4_node("o", cpu="3999m", memory="16383Mi")], [])
    assert odd.pod_shortfall("L4", 1, cpu_millicores=4001, memory_bytes=16 * GiB + 1) == (
        "no L4 node can hold the pod: it requests 4.001 CPU and 16.1Gi memory; the most any node "
        "has free is 3.999 CPU and 15.9Gi memory (ephemeral storage: ok)"
    )


def write(tmp_path: Path, pools: list[dict[str, Any]]) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"pools": pools}))
    return path


def test_fragmented_free_gpus_do_not_add_up(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [{"name": "l40s", "gpu": "L40S", "nodes": 2, "gpusPerNode": 4, "freeGpusPerNode": [3, 3]}],
    )
    inventory = load_inventory(path)
    pool = inventory.pool("L40S")
    assert pool is not None
    assert (pool.free_gpus, pool.largest_free_block, pool.total_gpus) == (6, 3, 8)
    assert inventory.can_place("L40S", 4, 1) == 0
    assert inventory.can_place("L40S", 3, 5) == 2
    assert inventory.can_place("L40S", 2, 5) == 2
    assert inventory.can_place("L40S", 1, 5) == 5


def test_file_pools_prices_and_merging(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "spot", "gpu": "H100", "nodes": 1, "gpusPerNode": 8, "pricePerHourUsd": 2.0},
            {"name": "ondemand", "gpu": "NVIDIA-H100-80GB-HBM3", "nodes": 2, "gpusPerNode": 8},
            {"name": "cpu", "gpu": "L4", "nodes": 3, "gpusPerNode": 0},
            {"name": "l4", "gpu": "l4", "nodes": 1, "gpusPerNode": 1, "cpu": 8, "memory": "32Gi"},
        ],
    )
    inventory = load_inventory(str(path))
    assert inventory.gpu_types() == ("L4", "H100-80GB-SXM")
    h100 = inventory.pool("H100-80GB-SXM")
    assert h100 is not None
    assert [n.name for n in h100.nodes] == ["ondemand-0", "ondemand-1", "spot-0"]
    assert h100.price_per_hour_usd == 2.0
    assert inventory.price("H100") == 2.0
    assert inventory.price("L4") == resolve_gpu("L4").price_per_hour_usd
    assert inventory.price("B200") == resolve_gpu("B200").price_per_hour_usd
    l4 = inventory.pool("L4")
    assert l4 is not None
    assert l4.node_count == 1  # the GPU-less pool is not a GPU pool
    assert l4.nodes[0].cpu_allocatable_millicores == 8000
    assert l4.nodes[0].memory_allocatable_bytes == 32 * 2**30


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        (
            [{"name": "x", "gpu": "H300", "nodes": 1, "gpusPerNode": 8}],
            r"pool 'x'.*unknown GPU 'H300'",
        ),
        ([{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "color": "red"}], "color"),
        (
            [{"name": "x", "gpu": "L4", "nodes": 2, "gpusPerNode": 1, "freeGpusPerNode": [1]}],
            r"pool 'x'.*freeGpusPerNode",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "freeGpusPerNode": [2]}],
            r"pool 'x'.*freeGpusPerNode",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "cpu": "lots"}],
            r"pool 'x'.*quantity",
        ),
        ([{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1}] * 2, r"pool 'x'.*unique"),
        (
            [
                {"name": "a", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "pricePerHourUsd": 1},
                {"name": "b", "gpu": "L4-24GB", "nodes": 1, "gpusPerNode": 1, "pricePerHourUsd": 2},
            ],
            r"pool 'b'.*different price",
        ),
        ([], "pools"),
    ],
)
def test_bad_inventory_files_name_the_file_and_entry(
    tmp_path: Path, pools: list[dict[str, Any]], message: str
) -> None:
    path = write(tmp_path, pools)
    with pytest.raises(InventoryError, match=message) as err:
        load_inventory(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        (
            [
                {"name": "a", "gpu": "L4", "nodes": 1, "gpusPerNode": 1},
                {"name": "b", "gpu": "L4", "nodes": 1, "gpusPerNode": 1},
                {"name": "c", "gpu": "L4", "nodes": 0, "gpusPerNode": 1},
            ],
            "pools[2].nodes: must be ≥ 1 (got 0)",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": -1}],
            "pools[0].gpusPerNode: must be ≥ 0 (got -1)",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 65}],
            "pools[0].gpusPerNode: must be ≤ 64 (got 65)",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "color": "red"}],
            "pools[0].color: unknown key",
        ),
        ([{"gpu": "L4", "nodes": 1, "gpusPerNode": 1}], "pools[0].name: required"),
        (
            [{"name": "X", "gpu": "L4", "nodes": 1, "gpusPerNode": 1}],
            "pools[0].name: must be lower-case letters, digits and '-' (got 'X')",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": "many", "gpusPerNode": 1}],
            "pools[0].nodes: must be a whole number (got 'many')",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "memory": ["16Gi"]}],
            "pools[0].memory: must be a Kubernetes quantity such as 16Gi (got ['16Gi'])",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "ephemeralStorage": "x"}],
            "pool 'x': ephemeralStorage: not a Kubernetes quantity: 'x'",
        ),
        (
            [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "freeGpusPerNode": ["x"]}],
            "pools[0].freeGpusPerNode[0]: must be a whole number (got 'x')",
        ),
        (["l4"], "pools[0]: must be a mapping (got 'l4')"),
        ([], "pools: needs at least 1 entry (got [])"),
        (
            [
                {"name": "x", "gpu": "L4", "nodes": 0, "gpusPerNode": 1},
                {"name": "y", "gpu": "L4", "nodes": 1, "gpusPerNode": -1},
            ],
            "pools[0].nodes: must be ≥ 1 (got 0) (and 1 more problem)",
        ),
    ],
)
def test_inventory_file_errors_are_one_line(tmp_path: Path, pools: list[Any], message: str) -> None:
    path = write(tmp_path, pools)
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    assert str(err.value) == f"{path}: {message}"
    assert isinstance(err.value, ValueError)


def test_an_unreadable_inventory_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(InventoryError, match=r"missing\.yaml: cannot read: No such file"):
        load_inventory(path)


def test_file_pools_without_cpu_or_memory_are_not_limited_by_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "open", "gpu": "L4", "nodes": 1, "gpusPerNode": 1},
            {
                "name": "small",
                "gpu": "L40S",
                "nodes": 2,
                "gpusPerNode": 4,
                "cpu": "16",
                "memory": "128Gi",
                "ephemeralStorage": "200Gi",
            },
        ],
    )
    inventory = load_inventory(path)
    l4 = inventory.pool("L4")
    assert l4 is not None
    node = l4.nodes[0]
    assert node.cpu_allocatable_millicores is None and node.memory_allocatable_bytes is None
    assert node.ephemeral_storage_allocatable_bytes is None
    assert inventory.can_place("L4", 1, 1, cpu_millicores=10**6, memory_bytes=10**15) == 1
    l40s = inventory.pool("L40S")
    assert l40s is not None
    assert l40s.nodes[0].ephemeral_storage_allocatable_bytes == 200 * GiB
    assert inventory.can_place("L40S", 1, 8, ephemeral_bytes=150 * GiB) == 2
    assert inventory.can_place("L40S", 1, 8, cpu_millicores=5000, memory_bytes=40 * GiB) == 6


@pytest.mark.parametrize(
    "text", ["pools: [{name: x, gpu: L4", "pools:\n  - a\n b: :", "- 1\n- 2\n"]
)
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError, match=r"broken\.yaml") as err:
        load_inventory(path)
    assert "\n" not in str(err.value)


def test_default_inventory_is_the_sandbox_cluster() -> None:
    assert DEFAULT_INVENTORY_FILE.is_file()
    from_sandbox = inventory_from_objects(node_objects(load_pools(DEFAULT_POOLS), 7), [])
    assert placement_view(default_inventory()) == placement_view(from_sandbox)
    # the sandbox's file reads as is
    assert placement_view(load_inventory(DEFAULT_POOLS)) == placement_view(from_sandbox)
    summary = {
        p.name: (p.node_count, p.gpus_per_node, p.free_gpus) for p in default_inventory().pools
    }
    assert summary == {
        "H100-80GB-SXM": (2, 8, 16),
        "A100-40GB-SXM": (2, 8, 16),
        "L40S": (4, 4, 16),
        "L4": (8, 1, 8),
    }
    assert default_inventory().unknown_products == ()


def test_sandbox_nodes_with_pods_match_file_free_counts(tmp_path: Path) -> None:
    nodes = sandbox_nodes()
    pods = [pod("l40s-0", 3), pod("l40s-3", 4), pod("h100-1", 8)]
    from_objects = inventory_from_objects(nodes, pods)
    data = yaml.safe_load(DEFAULT_INVENTORY_FILE.read_text())
    for entry in data["pools"]:
        if entry["name"] == "l40s":
            entry["freeGpusPerNode"] = [1, 4, 4, 0]
        if entry["name"] == "h100":
            entry["freeGpusPerNode"] = [8, 0]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    assert placement_view(load_inventory(path)) == placement_view(from_objects)


def test_models_are_frozen_and_reject_unknown_fields(cluster: Inventory) -> None:
    pool = cluster.pools[0]
    with pytest.raises(ValueError):
        pool.nodes[0].gpus_requested = 0  # type: ignore[misc]
    with pytest.raises(ValueError):
        Inventory.model_validate({"pools": [], "color": "red"})
    # a pool built by hand takes the catalog's price and canonical name
    copied = pool.model_dump()
    copied.pop("price_per_hour_usd")
    rebuilt = type(pool).model_validate(copied)
    assert rebuilt.price_per_hour_usd == pool.price_per_hour_usd
    with pytest.raises(ValueError):
        Inventory(pools=(pool, copy.deepcopy(pool)))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", Decimal(8)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("64Gi", Decimal(64 * 2**30)),
        ("129M", Decimal(129_000_000)),
        ("1e3", Decimal(1000)),
        ("2E", Decimal(2 * 10**18)),
        ("100Ki", Decimal(102_400)),
        (4, Decimal(4)),
    ],
)
def test_quantities(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2.3", "5 Gi", "Gi"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_pending_pods_are_placed_least_allocated_first() -> None:
    def n(name: str, gpus: int, product: str = "P", schedulable: bool = True) -> NodeGpus:
        return NodeGpus(
            name=name,
            gpu="H100-80GB-SXM",
            product_label=product,
            product_label_key="nvidia.com/gpu.product",
            gpus_allocatable=gpus,
            cpu_allocatable_millicores=1000,
            memory_allocatable_bytes=1,
            schedulable=schedulable,
        )

    nodes = [n("a", 8), n("b", 8), n("c", 8, schedulable=False), n("d", 8, product="Q")]
    placed = place_pending(nodes, {"a": 2}, [("P", 4), ("P", 4), ("P", 8), ("P", 8), ("X", 1)])
    # b (8 free) takes the first 4, a (6 free) the next, then no node has 8 free: not placed.
    assert placed == {"a": Requests(gpus=6), "b": Requests(gpus=4)}


def test_pending_pods_go_where_the_whole_pod_fits() -> None:
    def n(name: str, gpus: int, cpu: int | None, memory: int | None = None) -> NodeGpus:
        return NodeGpus(
            name=name,
            gpu="L4",
            product_label="NVIDIA-L4",
            product_label_key="nvidia.com/gpu.product",
            gpus_allocatable=gpus,
            cpu_allocatable_millicores=cpu,
            memory_allocatable_bytes=memory,
        )

    nodes = [n("wide", 4, 8000, 64 * GiB), n("narrow", 2, 16_000, 64 * GiB), n("free", 1, None)]
    pod = Requests(1, 6000, 19 * GiB)
    requested = {"narrow": Requests(0, 1000, 0)}
    placed = place_pending(nodes, requested, [("NVIDIA-L4", pod)] * 4)
    # wide has the most free GPUs but CPU for one pod; then narrow (15 CPU free) takes two;
    # the node that reports no CPU or memory is not limited by them.
    assert placed == {
        "wide": Requests(1, 6000, 19 * GiB),
        "narrow": Requests(2, 13_000, 38 * GiB),
        "free": Requests(1, 6000, 19 * GiB),
    }
    inventory = inventory_from_records(nodes, placed)
    assert inventory.can_place("L4", 1, 5, cpu_millicores=2000) == 1  # wide: 2 CPU left
    # bare GPU counts still work, for both what is bound and what is pending
    assert place_pending(nodes, {"wide": 3}, [("NVIDIA-L4", 1)]) == {
        "wide": Requests(3),
        "narrow": Requests(1),
    }


def test_pending_placement_matches_the_scan_over_every_node() -> None:
    """The heap placement gives what a plain scan gives: among the nodes that hold the whole pod,
    the one with the most free GPUs, the first listed on a tie."""
    import random

    def scan(
        nodes: list[NodeGpus], requested: dict[str, Requests], pending: list[tuple[str, Requests]]
    ) -> dict[str, Requests]:
        out = dict(requested)
        for product, ask in pending:
            best, best_free = None, -1
            for node in nodes:
                if node.product_label != product or not node.schedulable or ask.gpus <= 0:
                    continue
                used = out.get(node.name, Requests())
                free = node.gpus_allocatable - used.gpus
                cpu = node.cpu_allocatable_millicores
                memory = node.memory_allocatable_bytes
                # as the scheduler: a resource the pod does not request is not checked
                if ask.cpu_millicores and cpu is not None and cpu - used.cpu_millicores < ask[1]:
                    continue
                if ask.memory_bytes and memory is not None and memory - used.memory_bytes < ask[2]:
                    continue
                if free >= ask.gpus and free > best_free:
                    best, best_free = node, free
            if best is not None:
                out[best.name] = out.get(best.name, Requests()).plus(ask)
        return out

    rng = random.Random(5)
    for _ in range(300):
        nodes = [
            NodeGpus(
                name=f"n{i}",
                gpu="H100-80GB-SXM",
                product_label=rng.choice("PQ"),
                product_label_key="nvidia.com/gpu.product",
                gpus_allocatable=rng.choice([1, 2, 4, 8]),
                cpu_allocatable_millicores=rng.choice([None, 4000, 16_000, 64_000]),
                memory_allocatable_bytes=rng.choice([None, 16 * GiB, 256 * GiB]),
                schedulable=rng.random() > 0.1,
            )
            for i in range(rng.randint(0, 12))
        ]
        requested = {
            n.name: Requests(
                rng.randint(0, n.gpus_allocatable + 1),
                rng.choice([0, 1000, 8000]),
                rng.choice([0, 4 * GiB]),
            )
            for n in nodes
        }
        pending = [
            (
                rng.choice("PQX"),
                Requests(
                    rng.choice([0, 1, 2, 4, 8]),
                    rng.choice([0, 0, 2000, 6000, 20_000]),
                    rng.choice([0, 0, 8 * GiB, 19 * GiB, 100 * GiB]),
                ),
            )
            for _ in range(20)
        ]
        assert place_pending(nodes, requested, pending) == scan(nodes, requested, pending)


def test_matching_keeps_only_nodes_whose_labels_match(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "pools": [
                    {"name": "a", "gpu": "L4", "nodes": 2, "gpusPerNode": 1, "labels": {"z": "1"}},
                    {"name": "b", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "labels": {"z": "2"}},
                    {"name": "c", "gpu": "T4", "nodes": 1, "gpusPerNode": 1},
                ]
            }
        )
    )
    inv = load_inventory(path)
    assert inv.matching({}) is inv
    one = inv.matching({"z": "1"})
    assert [p.name for p in one.pools] == ["L4"]
    assert [n.name for n in one.pools[0].nodes] == ["a-0", "a-1"]
    assert one.matching({"kubernetes.io/hostname": "a-1"}).pools[0].node_count == 1
    assert inv.matching({"z": "3"}).pools == ()
    l4 = inv.pool("L4")
    assert l4 is not None and l4.nodes[0].labels["z"] == "1"


def test_node_records_keep_every_label_interned() -> None:
    def node(name: str) -> Obj:
        return {
            "metadata": {
                "name": name,
                "labels": {"nvidia.com/gpu.product": "NVIDIA-L4", "team": "vision" + "-a"},
            },
            "status": {"allocatable": {"nvidia.com/gpu": "1"}},
        }

    a, b = node_record(node("a")), node_record(node("b"))
    assert isinstance(a, NodeGpus) and isinstance(b, NodeGpus)
    assert a.labels["team"] == "vision-a"
    assert a.labels["team"] is b.labels["team"]  # one copy shared by every node


# ------------------------------------------------------------------------------------------------
# The catalog an inventory is built with


def test_an_inventory_resolves_and_orders_in_its_own_catalog(cluster: Inventory) -> None:
    packaged = default_catalog()
    assert cluster.catalog == packaged and all(p.catalog == packaged for p in cluster.pools)
    reversed_catalog = GpuCatalog(tuple(reversed(packaged.gpus)), "reversed")
    nodes = [l4_node("l4-0"), gpu_node("t4-0", {"nvidia.com/gpu.product": "Tesla-T4"}, gpus=4)]
    ordered = inventory_from_objects(nodes, [])
    backwards = inventory_from_objects(nodes, [], reversed_catalog)
    assert list(backwards.gpu_types()) == list(reversed(ordered.gpu_types()))
    assert backwards.catalog is reversed_catalog


def test_pool_specs_and_prices_come_from_the_inventorys_catalog() -> None:
    packaged = default_catalog()
    l4 = resolve_gpu("L4")
    cheap = l4.model_copy(update={"price_per_hour_usd": 0.01, "memory_gib": 20.0})
    catalog = GpuCatalog(tuple(cheap if g.name == "L4" else g for g in packaged.gpus), "cheap")
    record = node_record(l4_node("l4-0"), catalog)
    assert isinstance(record, NodeGpus)
    inventory = inventory_from_records([record], {}, catalog=catalog)
    pool = inventory.pool("NVIDIA-L4")
    assert pool is not None and pool.gpu_spec() is cheap and pool.price_per_hour_usd == 0.01
    assert inventory.price("L4") == 0.01
    assert inventory.price("H100") == resolve_gpu("H100").price_per_hour_usd  # no pool: catalog
    assert inventory_from_records([record], {}).price("L4") == l4.price_per_hour_usd
