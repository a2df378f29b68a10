"""The operator's side of replicas over several nodes (docs/multinode.md): a LeaderWorkerSet is
indexed, compared, observed and counted in the inventory as the Deployment is; the Service
selects leaders; `--multinode` is an explicit choice (config, flag, chart)."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_controller_inventory import Indexes as FakeIndexes
from tests.unit.test_controller_inventory import free, node, pod
from tests.unit.test_multinode import BIG, manifest

from mmop import children
from mmop.cli import _build_parser as build_parser
from mmop.controller import handlers_multinode
from mmop.controller.config import OperatorConfig
from mmop.controller.context import Indexes, OperatorContext
from mmop.controller.reconcile import NO_LWS, observe
from mmop.controller.workload import workload_record
from mmop.inventory import default_inventory
from mmop.planner import Plan, plan
from mmop.render import (
    LWS_KIND,
    LWS_WORKER_INDEX_LABEL,
    RenderedGroup,
    RenderOptions,
    companions,
    render,
    render_multinode,
)

ROOT = Path(__file__).resolve().parents[2]
L40S = "NVIDIA-L40S"


@pytest.fixture(scope="module")
def big_plan() -> Plan:
    return plan(manifest(BIG, ["L40S"]), default_inventory(), multinode=True)


@pytest.fixture(scope="module")
def group(big_plan: Plan) -> RenderedGroup:
    m = manifest(BIG, ["L40S"])
    return render_multinode("big", "ns", "uid-1", m.spec, big_plan, RenderOptions(), 1, 3)


def index_group(obj: dict[str, Any]) -> dict[str, Any]:
    memo = types.SimpleNamespace(context=OperatorContext())
    out = asyncio.run(
        handlers_multinode.mmop_groups(body=obj, namespace="ns", name="big", memo=memo)
    )
    return dict(out[("ns", "big")])


def test_a_leader_worker_set_is_indexed_with_its_groups_and_pod_size(
    big_plan: Plan, group: RenderedGroup
) -> None:
    entry = index_group(group.leader_worker_set)
    assert entry["kind"] == LWS_KIND
    assert entry["replicas"] == 3  # groups
    assert entry["podsPerReplica"] == big_plan.nodes_per_replica == 2
    assert entry["gpus"] == big_plan.tensor_parallel_size == 4  # one pod: one node's GPUs
    assert entry["product"] == big_plan.gpu_product == L40S
    assert entry["child"].owner_uid == "uid-1"
    assert entry["child"].fields["templateHash"] == group.template_hash


def test_the_rendered_group_is_in_place_against_its_own_record(group: RenderedGroup) -> None:
    record = children.record(group.leader_worker_set)
    assert children.in_place(group.leader_worker_set, record, "uid-1")
    scaled = {**group.leader_worker_set, "spec": {**group.leader_worker_set["spec"], "replicas": 4}}
    assert not children.in_place(scaled, record, "uid-1")  # the groups changed: apply again


def test_observe_finds_the_group_and_the_deployment_left_over(group: RenderedGroup) -> None:
    m = manifest(BIG, ["L40S"])
    single = plan(manifest("Qwen/Qwen2.5-VL-7B-Instruct", ["L40S"]), default_inventory())
    dep = render("big", "ns", "uid-1", m.spec, single, RenderOptions(), 1).deployment
    idx = Indexes(
        gpu_nodes={},
        gpu_pods={},
        mmop_deployments={("ns", "big"): [workload_record(dep, "big")]},
        mmop_services={},
        mmop_pdbs={},
        model_pods={},
        mmop_groups={("ns", "big"): [workload_record(group.leader_worker_set, "big")]},
    )
    seen = observe(idx, "ns", "big", kind=LWS_KIND)
    assert seen.kind == LWS_KIND and seen.replicas == 3
    assert seen.template_hash == group.template_hash
    assert seen.stale is not None and seen.stale["kind"] == "Deployment"  # to scale to 0
    back = observe(idx, "ns", "big", kind="Deployment")
    assert back.kind == "Deployment" and back.stale is not None
    assert back.stale["kind"] == LWS_KIND
    # without a wish (a settled model's check), the group is the workload
    assert observe(idx, "ns", "big").kind == LWS_KIND
    # both indexes feed the inventory
    assert {r["kind"] for r in idx.workloads()[("ns", "big")]} == {"Deployment", LWS_KIND}
    # What the autoscaler scales: the workload by its own name (the group is <model>-lws, not
    # the model's name, which LWS's headless Service would collide with).
    assert seen.scale_target == (LWS_KIND, "big-lws")
    assert back.scale_target == ("Deployment", "big")
    none = observe(Indexes(gpu_nodes={}, gpu_pods={}, mmop_deployments={}, mmop_services={},
                           mmop_pdbs={}, model_pods={}), "ns", "big")  # fmt: skip
    assert none.scale_target is None


def test_groups_not_bound_yet_hold_a_whole_node_per_pod() -> None:
    idx = FakeIndexes()
    for i in range(4):
        idx.add_node(node(f"l{i}", 4, L40S))
    idx.add_pod(pod("big-0", "l0", 4, "big"))  # the first group's leader is bound
    record = {"replicas": 2, "podsPerReplica": 2, "gpus": 4, "product": L40S}
    idx.ctx.inventory.changed()
    inv = idx.ctx.inventory.inventory(
        idx.nodes, idx.pods, ("ns", "other"), {("ns", "big"): [record]}
    )
    assert sum(free(inv).values()) == 0  # 2 groups x 2 pods x 4 GPUs: every node
    mine = idx.ctx.inventory.inventory(
        idx.nodes, idx.pods, ("ns", "big"), {("ns", "big"): [record]}
    )
    assert sum(free(mine).values()) == 16


def test_the_service_of_a_group_selects_its_leaders_and_repairs_the_same(
    group: RenderedGroup,
) -> None:
    service, pdb = companions("big", "ns", "uid-1", leaders_only=True)
    assert service == group.service and pdb == group.pod_disruption_budget
    assert service["spec"]["selector"][LWS_WORKER_INDEX_LABEL] == "0"
    assert LWS_WORKER_INDEX_LABEL not in pdb["spec"]["selector"]["matchLabels"]  # every pod
    plain, _ = companions("big", "ns", "uid-1")
    assert LWS_WORKER_INDEX_LABEL not in plain["spec"]["selector"]


def test_multinode_is_off_unless_asked() -> None:
    assert OperatorConfig().multinode is False
    parser = build_parser()
    assert parser.parse_args(["run"]).multinode is None
    assert parser.parse_args(["run", "--multinode"]).multinode is True
    assert "LeaderWorkerSet controller" in NO_LWS and "--multinode" in NO_LWS


def test_the_chart_grants_leaderworkersets_only_with_multinode() -> None:
    values = yaml.safe_load((ROOT / "charts/mmop/values.yaml").read_text())
    assert values["multiNode"] == {"enabled": False}
    rbac = (ROOT / "charts/mmop/templates/rbac.yaml").read_text()
    block = rbac.split("{{- if .Values.multiNode.enabled }}")[1].split("{{- end }}")[0]
    assert "leaderworkersets" in block and "leaderworkersets/scale" in block
    assert "delete" not in block
    deployment = (ROOT / "charts/mmop/templates/deployment.yaml").read_text()
    assert "--multinode" in deployment.split("{{- if .Values.multiNode.enabled }}")[1]
