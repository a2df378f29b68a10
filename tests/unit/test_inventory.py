"""GPU inventory: pools from Node/Pod objects (as the sandbox creates them) and from files."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox.pools import DEFAULT_POOLS, load_pools, node_objects

from mmop.catalog import GpuError, resolve_gpu
from mmop.inventory import (
    DEFAULT_INVENTORY_FILE,
    Inventory,
    Taint,
    default_inventory,
    inventory_from_objects,
    load_inventory,
    parse_quantity,
)

Obj = dict[str, Any]


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
    assert node.labels == l4.node_selector  # the sandbox's own labels are not placement labels


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
    with pytest.raises(ValueError, match=message) as err:
        load_inventory(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "text", ["pools: [{name: x, gpu: L4", "pools:\n  - a\n b: :", "- 1\n- 2\n"]
)
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"broken\.yaml"):
        load_inventory(path)


def test_default_inventory_is_the_sandbox_cluster() -> None:
    assert DEFAULT_INVENTORY_FILE.is_file()
    from_sandbox = inventory_from_objects(node_objects(load_pools(DEFAULT_POOLS), 7), [])
    assert default_inventory() == from_sandbox
    assert load_inventory(DEFAULT_POOLS) == from_sandbox  # the sandbox's file reads as is
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
    assert load_inventory(path) == from_objects


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
    from mmop.inventory import NodeGpus, place_pending

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
    assert placed == {"a": 6, "b": 4}


def test_pending_placement_matches_the_scan_over_every_node() -> None:
    """The heap placement gives what a plain scan (most free GPUs, first listed on a tie) gives."""
    import random

    from mmop.inventory import NodeGpus, place_pending

    def scan(nodes: list[NodeGpus], requested: dict[str, int], pending: list[tuple[str, int]]):
        out = dict(requested)
        for product, gpus in pending:
            best, best_free = None, -1
            for node in nodes:
                if node.product_label != product or not node.schedulable or gpus <= 0:
                    continue
                free = node.gpus_allocatable - out.get(node.name, 0)
                if free >= gpus and free > best_free:
                    best, best_free = node, free
            if best is not None:
                out[best.name] = out.get(best.name, 0) + gpus
        return out

    rng = random.Random(5)
    for _ in range(200):
        nodes = [
            NodeGpus(
                name=f"n{i}",
                gpu="H100-80GB-SXM",
                product_label=rng.choice("PQ"),
                product_label_key="nvidia.com/gpu.product",
                gpus_allocatable=rng.choice([1, 2, 4, 8]),
                cpu_allocatable_millicores=1000,
                memory_allocatable_bytes=1,
                schedulable=rng.random() > 0.1,
            )
            for i in range(rng.randint(0, 12))
        ]
        requested = {n.name: rng.randint(0, n.gpus_allocatable + 1) for n in nodes}
        pending = [(rng.choice("PQX"), rng.choice([0, 1, 2, 4, 8])) for _ in range(20)]
        assert place_pending(nodes, requested, pending) == scan(nodes, requested, pending)
