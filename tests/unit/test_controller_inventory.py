"""The operator's watch-fed GPU inventory: index records, one assembly per change, exclusion."""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import pytest

from mmop.controller import handlers
from mmop.controller.context import OperatorContext
from mmop.inventory import inventory_from_objects, parse_quantity
from mmop.status import limits_from_status

Obj = dict[str, Any]
LOG = logging.getLogger("test")


def node(name: str, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3") -> Obj:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, node_name: str | None, gpus: int, model: str | None, phase: str = "Running"):
    labels = {"mmop.dev/model": model} if model else {}
    resources = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    spec: Obj = {"containers": [{"name": "c", "resources": resources}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
        "spec": spec,
        "status": {"phase": phase},
    }


class Indexes:
    """What kopf keeps for an index: key → store of values, fed by the index function.

    As kopf does: a result of None leaves what the object indexed before; a mapping replaces it
    (an empty one drops it); a DELETED event drops it without calling the function; and every
    index function gets the indexes as keyword arguments."""

    def __init__(self) -> None:
        self.ctx = OperatorContext()
        self.memo = types.SimpleNamespace(context=self.ctx)
        self.nodes: dict[str, list[Any]] = {}
        self.pods: dict[str, list[Any]] = {}

    @staticmethod
    def _store(index: dict[str, list[Any]], key: str, out: Any) -> None:
        if out is None:
            return
        index.pop(key, None)
        for k, value in out.items():
            index[k] = [value]

    def add_node(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        out = asyncio.run(
            handlers.gpu_nodes(
                body=obj,
                name=name,
                memo=self.memo,
                logger=LOG,
                gpu_nodes=self.nodes,
                gpu_pods=self.pods,
            )
        )
        self._store(self.nodes, name, out)

    def add_pod(self, obj: Obj) -> None:
        meta = obj["metadata"]
        out = asyncio.run(
            handlers.gpu_pods(
                body=obj,
                namespace="ns",
                name=meta["name"],
                memo=self.memo,
                logger=LOG,
                gpu_nodes=self.nodes,
                gpu_pods=self.pods,
            )
        )
        self._store(self.pods, f"ns/{meta['name']}", out)

    def delete_pod(self, name: str) -> None:
        self.pods.pop(f"ns/{name}", None)

    def inventory(self, exclude: tuple[str, str] = ("ns", "none")) -> Any:
        return self.ctx.inventory.inventory(self.nodes, self.pods, exclude)


@pytest.fixture
def idx() -> Indexes:
    return Indexes()


def free(inv: Any) -> dict[str, int]:
    return {n.name: n.gpus_free for p in inv.pools for n in p.nodes}


def test_indexes_give_the_inventory_the_objects_give(idx: Indexes) -> None:
    nodes = [node("a"), node("b", 4, "NVIDIA-L40S"), node("cpu-only", 0)]
    pods = [
        pod("p1", "a", 2, "m1"),
        pod("p2", "b", 1, None),
        pod("p3", "a", 8, "m2", phase="Succeeded"),
        pod("p4", None, 1, "m3"),
        pod("p5", "a", 0, None),
    ]
    for n in nodes:
        idx.add_node(n)
    for p in pods:
        idx.add_pod(p)
    assert idx.inventory() == inventory_from_objects(nodes, pods)
    assert free(idx.inventory()) == {"a": 6, "b": 3}


def test_a_model_is_planned_without_the_gpus_it_holds(idx: Indexes) -> None:
    idx.add_node(node("a"))
    idx.add_pod(pod("mine", "a", 4, "m1"))
    idx.add_pod(pod("theirs", "a", 2, "m2"))
    assert free(idx.inventory(("ns", "m1"))) == {"a": 6}
    assert free(idx.inventory(("ns", "m2"))) == {"a": 4}
    assert free(idx.inventory(("other", "m1"))) == {"a": 2}


def test_changes_rebuild_and_no_change_reuses(idx: Indexes) -> None:
    idx.add_node(node("a"))
    first = idx.inventory()
    assert idx.inventory() is first  # nothing changed: the same assembled inventory
    idx.add_pod(pod("p", "a", 3, "m"))
    assert free(idx.inventory()) == {"a": 5}
    idx.add_pod(pod("p", "a", 3, "m", phase="Failed"))  # terminated: its GPUs are free again
    assert free(idx.inventory()) == {"a": 8}
    idx.add_node(node("a", 0))  # the node lost its GPUs
    assert idx.inventory().pools == ()


def test_pods_without_requests_do_not_invalidate_the_inventory(idx: Indexes) -> None:
    idx.add_node(node("a"))
    first = idx.inventory()
    idx.add_pod(pod("web", "a", 0, None))
    assert idx.inventory() is first
    assert idx.pods == {}


def test_events_that_change_no_record_reuse_the_inventory(idx: Indexes) -> None:
    idx.add_node(node("a"))
    idx.add_pod(pod("p", "a", 3, "m"))
    idx.add_pod(cpu_pod("agent", "a", "500m", "1Gi"))
    first = idx.inventory()
    idx.add_node(node("a"))  # a status update with the same allocatable
    idx.add_pod(pod("p", "a", 3, "m"))  # e.g. a readiness change
    idx.add_pod(cpu_pod("agent", "a", "500m", "1Gi"))
    assert idx.inventory() is first


def cpu_pod(name: str, node_name: str | None, cpu: str, memory: str, phase: str = "Running") -> Obj:
    """A pod without GPUs (a DaemonSet's agent, a web server) bound to ``node_name``."""
    obj = pod(name, node_name, 0, None, phase)
    obj["spec"]["containers"][0]["resources"] = {"requests": {"cpu": cpu, "memory": memory}}
    return obj


def test_pods_without_gpus_take_cpu_and_memory_off_their_node(idx: Indexes) -> None:
    l4 = node("l4", 1, "NVIDIA-L4")
    l4["status"]["allocatable"].update(cpu="4", memory="16Gi")
    idx.add_node(l4)
    idx.add_pod(cpu_pod("agent", "l4", "500m", "1Gi"))
    idx.add_pod(cpu_pod("web", None, "2", "2Gi"))  # not bound: takes nothing yet
    inv = idx.inventory()
    (n,) = inv.pools[0].nodes
    assert (n.cpu_requested_millicores, n.memory_requested_bytes) == (500, 2**30)
    assert inv.can_place("L4", 1, 1, cpu_millicores=3500, memory_bytes=15 * 2**30) == 1
    assert inv.can_place("L4", 1, 1, cpu_millicores=4000) == 0
    idx.add_pod(cpu_pod("web", "l4", "2", "2Gi"))  # bound now
    assert idx.inventory().can_place("L4", 1, 1, cpu_millicores=2000) == 0
    assert idx.inventory() == inventory_from_objects(
        [l4], [cpu_pod("agent", "l4", "500m", "1Gi"), cpu_pod("web", "l4", "2", "2Gi")]
    )


def test_a_pod_record_is_a_small_tuple(idx: Indexes) -> None:
    p = pod("p", "a", 2, "m1")
    p["spec"]["containers"][0]["resources"]["limits"].update(cpu="6", memory="19Gi")
    idx.add_pod(p)
    (record,) = idx.pods["ns/p"]
    assert record == ("a", 2, 6000, 19 * 2**30, 0, ("ns", "m1"))
    other = pod("q", "a", 1, None)
    idx.add_pod(other)
    assert idx.pods["ns/q"][0][0] is record[0]  # node names are shared, not one per pod


def test_a_terminated_pod_frees_its_node(idx: Indexes) -> None:
    """kopf keeps what an object indexed when the function returns None: a pod that terminates
    must give an empty result, or its GPUs stay taken until the pod object is deleted."""
    idx.add_node(node("a"))
    idx.add_pod(pod("p", "a", 3, "m"))
    idx.add_pod(cpu_pod("agent", "a", "2", "4Gi"))
    assert free(idx.inventory()) == {"a": 5}
    idx.add_pod(pod("p", "a", 3, "m", phase="Failed"))  # evicted pods stay around as Failed
    idx.add_pod(cpu_pod("agent", "a", "2", "4Gi", phase="Succeeded"))
    inv = idx.inventory()
    assert free(inv) == {"a": 8}
    assert inv.pools[0].nodes[0].cpu_requested_millicores == 0


def test_a_deleted_pod_frees_its_node(idx: Indexes) -> None:
    """kopf drops a deleted object's records without calling the index function."""
    idx.add_node(node("a"))
    idx.add_pod(pod("p", "a", 3, "m"))
    assert free(idx.inventory()) == {"a": 5}
    idx.delete_pod("p")
    assert free(idx.inventory()) == {"a": 8}


def test_a_node_that_loses_its_gpus_leaves_the_inventory(idx: Indexes) -> None:
    idx.add_node(node("a"))
    idx.add_node(node("b"))
    assert free(idx.inventory()) == {"a": 8, "b": 8}
    idx.add_node(node("a", 0))
    bad = node("b")
    bad["status"]["allocatable"]["memory"] = "lots"
    idx.add_node(bad)  # malformed now: left out, not kept as it was
    assert idx.inventory().pools == ()


def test_a_malformed_node_is_left_out_with_a_warning(
    idx: Indexes, caplog: pytest.LogCaptureFixture
) -> None:
    bad = node("bad")
    bad["status"]["allocatable"]["nvidia.com/gpu"] = "two"
    idx.add_node(bad)
    idx.add_node(node("good"))
    assert free(idx.inventory()) == {"good": 8}
    assert "node bad left out of the GPU inventory" in caplog.text


def deployment_entry(
    replicas: int, gpus: int, product: str, cpu: int = 0, memory: int = 0
) -> dict[str, Any]:
    """What the Deployment index keeps for an mmop Deployment (see handlers.mmop_deployments)."""
    return {
        "replicas": replicas,
        "gpus": gpus,
        "cpu": cpu,
        "memory": memory,
        "ephemeral": 0,
        "product": product,
        "spec": {"replicas": replicas},
    }


def test_pods_not_bound_yet_hold_their_gpus(idx: Indexes) -> None:
    idx.add_node(node("a"))
    idx.add_node(node("b"))
    deployments = {("ns", "m1"): [deployment_entry(3, 4, "NVIDIA-H100-80GB-HBM3")]}
    idx.add_pod(pod("m1-0", "a", 4, "m1"))  # one of three bound
    idx.ctx.inventory.changed()
    inv = idx.ctx.inventory.inventory(idx.nodes, idx.pods, ("ns", "other"), deployments)
    # 12 GPUs claimed on 16: the two pending pods go where the scheduler would put them.
    assert sum(free(inv).values()) == 4
    # The model itself is planned without its own claims, bound or pending.
    mine = idx.ctx.inventory.inventory(idx.nodes, idx.pods, ("ns", "m1"), deployments)
    assert sum(free(mine).values()) == 16


def test_pods_not_bound_yet_hold_cpu_and_memory_too(idx: Indexes) -> None:
    small, big = node("small"), node("big")
    small["status"]["allocatable"].update(cpu="8", memory="64Gi")
    for n in (small, big):
        idx.add_node(n)
    deployments = {("ns", "m1"): [deployment_entry(2, 1, "NVIDIA-H100-80GB-HBM3", 10_000, 2**30)]}
    inv = idx.ctx.inventory.inventory(idx.nodes, idx.pods, ("ns", "other"), deployments)
    # Both pending pods need 10 CPU: the 8-CPU node (most free GPUs, listed first) takes neither.
    by_name = {n.name: n for n in inv.pools[0].nodes}
    assert (by_name["small"].gpus_requested, by_name["small"].cpu_requested_millicores) == (0, 0)
    assert by_name["big"].gpus_requested == 2
    assert by_name["big"].cpu_requested_millicores == 20_000
    assert by_name["big"].memory_requested_bytes == 2 * 2**30


def test_rendered_deployment_is_indexed_with_its_gpus_and_product() -> None:
    from tests.unit.test_planner import QWEN, manifest

    from mmop.inventory import default_inventory
    from mmop.planner import plan
    from mmop.render import RenderOptions, render

    m = manifest({**QWEN})
    p = plan(m, default_inventory())
    objs = render("m", "ns", "uid", m.spec, p, RenderOptions(), 1, replicas=2).objects()
    dep = next(o for o in objs if o["kind"] == "Deployment")
    memo = types.SimpleNamespace(context=OperatorContext())
    indexed = asyncio.run(handlers.mmop_deployments(body=dep, namespace="ns", name="m", memo=memo))
    entry = indexed[("ns", "m")]
    assert entry["gpus"] == p.tensor_parallel_size and entry["replicas"] == 2
    assert entry["product"] == p.gpu_product
    assert entry["cpu"] == int(parse_quantity(p.resources.cpu) * 1000)
    assert entry["memory"] == int(parse_quantity(p.resources.memory))
    assert entry["ephemeral"] == p.resources.ephemeral_bytes
    # The child record a reconcile compares with: owned by the model, its template's hash.
    assert entry["child"].owner_uid == "uid"
    assert (
        entry["child"].fields["templateHash"]
        == dep["spec"]["template"]["metadata"]["annotations"]["mmop.dev/template-hash"]
    )


def test_bearer_tokens_are_found_under_either_client_key() -> None:
    assert handlers.bearer_token({"BearerToken": "Bearer abc"}) == "abc"
    assert handlers.bearer_token({"authorization": "bearer xyz"}) == "xyz"
    assert handlers.bearer_token({"BearerToken": "plain"}) == "plain"
    assert handlers.bearer_token({}) is None


def test_a_consolidated_demand_holds_only_for_its_generation() -> None:
    status = {
        "autoscaler": {
            "avoid": ["a"],
            "minKvCacheTokens": 10,
            "demand": 4,
            "demandGeneration": 3,
        }
    }
    same = limits_from_status(status, 3)
    assert same.demand == 4 and same.avoid == frozenset({"a"}) and same.min_kv_cache_tokens == 10
    # A spec edit (new generation) plans for spec.workload again; what failed stays avoided.
    edited = limits_from_status(status, 4)
    assert edited.demand is None and edited.avoid == frozenset({"a"})
    assert limits_from_status(status).demand is None
