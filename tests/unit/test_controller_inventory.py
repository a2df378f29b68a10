"""The operator's watch-fed GPU inventory: index records, one assembly per change, exclusion."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mmop.controller import handlers
from mmop.inventory import inventory_from_objects

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
    """What kopf keeps for an index: key → store of values, fed by the index function."""

    def __init__(self) -> None:
        self.nodes: dict[str, list[Any]] = {}
        self.pods: dict[str, list[Any]] = {}

    def add_node(self, obj: Obj) -> None:
        out = asyncio.run(handlers.gpu_nodes(body=obj, name=obj["metadata"]["name"], logger=LOG))
        name = obj["metadata"]["name"]
        self.nodes.pop(name, None)
        for key, value in (out or {}).items():
            self.nodes[key] = [value]

    def add_pod(self, obj: Obj) -> None:
        meta = obj["metadata"]
        out = asyncio.run(
            handlers.gpu_pods(body=obj, namespace="ns", name=meta["name"], logger=LOG)
        )
        self.pods.pop(f"ns/{meta['name']}", None)
        for key, value in (out or {}).items():
            self.pods[key] = [value]

    def inventory(self, exclude: tuple[str, str] = ("ns", "none")) -> Any:
        return handlers._inventory_from_indexes(self.nodes, self.pods, exclude)


@pytest.fixture
def idx(monkeypatch: pytest.MonkeyPatch) -> Indexes:
    monkeypatch.setattr(handlers, "INVENTORY", handlers.InventoryCache())
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


def test_pods_without_gpus_do_not_invalidate_the_inventory(idx: Indexes) -> None:
    idx.add_node(node("a"))
    first = idx.inventory()
    idx.add_pod(pod("web", "a", 0, None))
    assert idx.inventory() is first


def test_a_malformed_node_is_left_out_with_a_warning(
    idx: Indexes, caplog: pytest.LogCaptureFixture
) -> None:
    bad = node("bad")
    bad["status"]["allocatable"]["nvidia.com/gpu"] = "two"
    idx.add_node(bad)
    idx.add_node(node("good"))
    assert free(idx.inventory()) == {"good": 8}
    assert "node bad left out of the GPU inventory" in caplog.text


def deployment_entry(replicas: int, gpus: int, product: str) -> dict[str, Any]:
    """What the Deployment index keeps for an mmop Deployment (see handlers.mmop_deployments)."""
    return {
        "replicas": replicas,
        "gpus": gpus,
        "product": product,
        "spec": {"replicas": replicas},
    }


def test_pods_not_bound_yet_hold_their_gpus(idx: Indexes) -> None:
    idx.add_node(node("a"))
    idx.add_node(node("b"))
    deployments = {("ns", "m1"): [deployment_entry(3, 4, "NVIDIA-H100-80GB-HBM3")]}
    idx.add_pod(pod("m1-0", "a", 4, "m1"))  # one of three bound
    handlers.INVENTORY.changed()
    inv = handlers._inventory_from_indexes(idx.nodes, idx.pods, ("ns", "other"), deployments)
    # 12 GPUs claimed on 16: the two pending pods go where the scheduler would put them.
    assert sum(free(inv).values()) == 4
    # The model itself is planned without its own claims, bound or pending.
    mine = handlers._inventory_from_indexes(idx.nodes, idx.pods, ("ns", "m1"), deployments)
    assert sum(free(mine).values()) == 16


def test_rendered_deployment_is_indexed_with_its_gpus_and_product() -> None:
    from tests.unit.test_planner import QWEN, manifest

    from mmop.inventory import default_inventory
    from mmop.planner import plan
    from mmop.render import RenderOptions, render

    m = manifest({**QWEN})
    p = plan(m, default_inventory())
    objs = render("m", "ns", "uid", m.spec, p, RenderOptions(), 1, replicas=2).objects()
    dep = next(o for o in objs if o["kind"] == "Deployment")
    entry = asyncio.run(handlers.mmop_deployments(body=dep, namespace="ns", name="m"))[("ns", "m")]
    assert entry["gpus"] == p.tensor_parallel_size and entry["replicas"] == 2
    assert entry["product"] == p.gpu_product


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
    same = handlers.limits_from_status(status, 3)
    assert same.demand == 4 and same.avoid == frozenset({"a"}) and same.min_kv_cache_tokens == 10
    # A spec edit (new generation) plans for spec.workload again; what failed stays avoided.
    edited = handlers.limits_from_status(status, 4)
    assert edited.demand is None and edited.avoid == frozenset({"a"})
    assert handlers.limits_from_status(status).demand is None
