"""Replicas over several nodes: vLLM's pipeline split, per-stage memory, the planner's multi-node
candidates, the vLLM argv of each pod, the LeaderWorkerSet, and single-node plans unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.api import MultimodalModel
from mmop.catalog import default_catalog
from mmop.cli import main
from mmop.estimator import EngineArgs, EstimateError, estimate, pipeline_layers
from mmop.inventory import Inventory, default_inventory, inter_node_gbps, load_inventory
from mmop.model import load_profile
from mmop.perf import PerfWorkload, estimate_performance, inter_node_gbit_per_second
from mmop.planner import Plan, PlanningError, PlanningReason, plan
from mmop.render import (
    LWS_WORKER_INDEX_LABEL,
    RenderOptions,
    group_name,
    render,
    render_multinode,
    startup_budget_seconds,
    vllm_args,
)
from mmop.status import plan_status

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
BIG = "Qwen/Qwen3-235B-A22B-FP8"  # 94 layers, ~220 GiB of weights: more than a 4× L40S node
VL = "Qwen/Qwen3-VL-30B-A3B-Instruct"  # vision, 48 layers: more than one L4 (22 GiB)
VL_BIG = "Qwen/Qwen3-VL-235B-A22B-Instruct"  # vision, 94 layers, ~439 GiB in bf16
VL_BIG_FP8 = "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8"  # the same in 128×128-block FP8


def manifest(
    model: str, gpu_types: list[str], name: str = "big", quantizations: list[str] | None = None
) -> MultimodalModel:
    placement: dict[str, Any] = {"gpuTypes": gpu_types}
    if quantizations is not None:
        placement["quantizations"] = quantizations
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": name},
            "spec": {"model": {"id": model}, "placement": placement},
        }
    )


def inventory(tmp_path: Path, pools: list[dict[str, Any]]) -> Inventory:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"pools": pools}))
    return load_inventory(path)


@pytest.fixture(scope="module")
def big_plan() -> Plan:
    return plan(manifest(BIG, ["L40S"]), default_inventory(), multinode=True)


# ------------------------------------------------------------------------- vLLM's layer split


@pytest.mark.parametrize(
    ("layers", "pp", "split"),
    [
        (94, 2, [47, 47]),
        (94, 4, [23, 24, 24, 23]),  # remainder 2: the two stages before the last
        (48, 5, [9, 10, 10, 10, 9]),
        (11, 4, [3, 3, 3, 2]),  # remainder 3 = pp − 1: reaches the first stage too
        (7, 7, [1] * 7),
    ],
)
def test_layers_are_split_as_vllm_get_pp_indices(layers: int, pp: int, split: list[int]) -> None:
    assert pipeline_layers(layers, pp) == split
    assert sum(split) == layers


def test_more_stages_than_layers_is_refused() -> None:
    with pytest.raises(EstimateError):
        pipeline_layers(4, 5)


# ------------------------------------------------------------------------------- estimator


def _est(model: str, gpu: str, tp: int, pp: int, **kw: Any) -> Any:
    args = EngineArgs(
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        max_model_len=16384,
        gpu_memory_utilization=0.9,
        **kw,
    )
    return estimate(load_profile(model), default_catalog().resolve(gpu), args)


def test_a_model_larger_than_a_node_fits_two_pipeline_stages() -> None:
    one = _est(BIG, "L40S", 4, 1)
    two = _est(BIG, "L40S", 4, 2)
    assert not one.fits and one.failure == "Weights"
    assert two.fits, two.reason
    first, last = two.stages
    assert (first.first_layer, first.layers, last.first_layer, last.layers) == (0, 47, 47, 47)
    assert first.embedding and not first.lm_head and last.lm_head and not last.embedding
    # Each stage holds about half the decoder; both halves and the embeddings make the whole.
    whole = one.weights_gib - 0.05
    assert first.weights_gib + last.weights_gib - 0.1 == pytest.approx(whole, rel=1e-3)
    # Only the last stage runs the sampler's dummy pass: its activation peak is the larger
    # where the sampler's peak exceeds the forward's (the V1 model runner's fp32 copies, before
    # vLLM 0.32.0); Model Runner V2's dummy sampler holds only the logits.
    assert last.activation_gib >= first.activation_gib
    v1 = _est(BIG, "L40S", 4, 2, vllm_version="0.31.0")
    assert v1.stages[1].activation_gib > v1.stages[0].activation_gib
    # Every stage allocates the smallest stage's blocks (vLLM's min over workers).
    assert two.kv_cache_blocks == min(s.kv_cache_blocks for s in two.stages) == last.kv_cache_blocks
    assert first.kv_cache_blocks > two.kv_cache_blocks
    assert first.kv_cache_gib == pytest.approx(last.kv_cache_gib, abs=1e-3)
    assert two.kv_cache_tokens == int(two.kv_cache_blocks / (16384 / 16) * 16384)
    # The headline figures are the deciding (last) stage's.
    assert two.weights_gib == last.weights_gib
    assert two.kv_cache_gib == last.available_kv_gib


def test_the_vision_tower_is_on_every_stage() -> None:
    profile = load_profile(VL)
    tower = (profile.params.vision) * 2 / 1024**3
    est = _est(VL, "L4", 1, 2, quantization="fp8")
    assert est.fits, est.reason
    for stage in est.stages:  # vLLM 0.32.0 builds the tower on every stage
        assert stage.weights_gib > tower
    text_only = _est(VL, "L4", 1, 2, quantization="fp8", limit_mm_per_prompt={"image": 0})
    assert [s.weights_gib for s in text_only.stages] == [s.weights_gib for s in est.stages]


def test_the_fit_is_the_worst_stage_s() -> None:
    # On 2 × 1 L4 in bf16 the model does not fit: the stage that fails is named.
    est = _est(VL, "L4", 1, 2)
    assert not est.fits
    assert "pipeline stage" in est.reason


def test_single_node_estimates_are_unchanged() -> None:
    a = _est(BIG, "H100-80GB", 8, 1)
    b = estimate(
        load_profile(BIG),
        default_catalog().resolve("H100-80GB"),
        EngineArgs(tensor_parallel_size=8, max_model_len=16384, gpu_memory_utilization=0.9),
    )
    assert a == b
    dumped = json.loads(a.model_dump_json())
    assert "stages" not in dumped and "pipeline_parallel_size" not in dumped


# ------------------------------------------------------------------------------ performance


def test_pipeline_stages_add_inter_node_hops() -> None:
    profile = load_profile(BIG)
    catalog = default_catalog()
    workload = PerfWorkload(prompt_tokens=1000, output_tokens=200)
    l40s, h100 = catalog.resolve("L40S"), catalog.resolve("H100-80GB")
    one = estimate_performance(profile, h100, workload, tensor_parallel_size=8, concurrency=16)
    two = estimate_performance(
        profile, h100, workload, tensor_parallel_size=8, pipeline_parallel_size=2, concurrency=16
    )
    slow = estimate_performance(
        profile,
        h100,
        workload,
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        concurrency=16,
        inter_node_gbit_per_second=10,
    )
    assert one.tpot_seconds < two.tpot_seconds < slow.tpot_seconds
    assert inter_node_gbit_per_second(h100) == 400  # SXM / NVLink-class nodes: RDMA fabric
    assert inter_node_gbit_per_second(l40s) == 100  # PCIe cards: Ethernet


# --------------------------------------------------------------------------------- planner


def test_a_235b_model_is_planned_over_two_nodes(big_plan: Plan) -> None:
    p = big_plan
    assert (p.gpu, p.tensor_parallel_size, p.pipeline_parallel_size) == ("L40S", 4, 2)
    assert p.nodes_per_replica == 2
    assert p.memory.pipeline_parallel_size == 2 and len(p.memory.stages) == 2
    price = default_inventory().price("L40S")
    assert p.cost_per_hour_usd == pytest.approx(p.replicas * 2 * 4 * price)
    assert p.config.startswith("L40S/tp4/pp2/")
    assert any("LeaderWorkerSet" in note for note in p.notes)
    assert "2 nodes × 4× L40S" in p.explanation
    assert p.resources.gpus == 4  # per pod: one node's GPUs


def test_without_multinode_the_answer_is_unchanged() -> None:
    with pytest.raises(PlanningError) as err:
        plan(manifest(BIG, ["L40S"]), default_inventory())
    assert err.value.reason == PlanningReason.INFEASIBLE


def test_a_vision_model_over_single_gpu_nodes() -> None:
    p = plan(manifest(VL, ["L4"]), default_inventory(), multinode=True)
    assert (p.tensor_parallel_size, p.pipeline_parallel_size) == (1, 2)
    assert len(p.memory.stages) == 2 and p.memory.fits
    assert all(s.kv_cache_gib > 0 for s in p.memory.stages)


def test_a_235b_vision_model_in_bf16_is_planned_over_two_a100_nodes() -> None:
    # 439 GiB of bf16 weights: more than a node of 8× A100-40GB (54.9 GiB per GPU at tp 8).
    p = plan(
        manifest(VL_BIG, ["A100-40GB"], quantizations=["none"]), default_inventory(), multinode=True
    )
    assert (p.gpu, p.tensor_parallel_size, p.pipeline_parallel_size) == ("A100-40GB-SXM", 8, 2)
    assert p.nodes_per_replica == 2 and p.replicas == 1
    assert (p.quantization, p.kv_cache_dtype) == ("none", "auto")
    assert p.memory.fits and len(p.memory.stages) == 2
    first, last = p.memory.stages
    assert (first.first_layer, first.layers, last.first_layer, last.layers) == (0, 47, 47, 47)
    assert all(s.kv_cache_gib > 0 for s in p.memory.stages)
    assert p.memory.kv_cache_tokens >= p.max_model_len
    price = default_inventory().price("A100-40GB-SXM")
    assert p.cost_per_hour_usd == pytest.approx(p.replicas * 2 * 8 * price)
    assert p.config.startswith("A100-40GB-SXM/tp8/pp2/none/")
    assert "--pipeline-parallel-size=2" in vllm_args(p)
    assert p.resources.gpus == 8  # per pod: one node's GPUs


def test_a_235b_vision_model_in_bf16_on_a100_40gb_is_infeasible_without_multinode() -> None:
    with pytest.raises(PlanningError) as err:
        plan(manifest(VL_BIG, ["A100-40GB"], quantizations=["none"]), default_inventory())
    assert err.value.reason == PlanningReason.INFEASIBLE


def test_a_235b_vision_model_in_fp8_fits_one_node_of_8_h100(tmp_path: Path) -> None:
    # ~220 GiB of block-FP8 weights (the vision tower, lm_head and router gates in bf16): one
    # replica within one node of 8× H100-80GB (tp 4), with or without multi-node planning.
    inv = inventory(tmp_path, [{"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpusPerNode": 8}])
    spec = manifest(VL_BIG_FP8, ["H100-80GB"])
    single = plan(spec, inv)
    assert single.gpu == "H100-80GB-SXM" and single.quantization == "fp8"
    assert (single.pipeline_parallel_size, single.nodes_per_replica) == (1, 1)
    assert single.tensor_parallel_size == 4 and single.memory.fits  # 4 of the 8 GPUs
    assert single.memory.kv_cache_tokens >= single.max_model_len
    assert "--pipeline-parallel-size=2" not in vllm_args(single)
    assert plan(spec, inv, multinode=True) == single


def test_multinode_needs_whole_free_nodes(tmp_path: Path) -> None:
    pool = {"name": "l40s", "gpu": "L40S", "nodes": 3, "gpusPerNode": 4}
    inv = inventory(tmp_path, [{**pool, "freeGpusPerNode": [4, 3, 4]}])
    assert inv.can_place_groups("L40S", 4, 2, 2) == 1
    busy = inventory(tmp_path, [{**pool, "freeGpusPerNode": [4, 3, 3]}])
    with pytest.raises(PlanningError) as err:
        plan(manifest(BIG, ["L40S"]), busy, multinode=True)
    # A node is too few; the multi-node search found no room either: the single-node answer.
    assert err.value.reason == PlanningReason.INFEASIBLE


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_single_node_plans_are_byte_identical_with_multinode(path: Path) -> None:
    m = MultimodalModel.model_validate(yaml.safe_load(path.read_text()))
    for inv in (default_inventory(), load_inventory(ROOT / "bench/planner/inventories/small.yaml")):
        a, b = plan(m, inv), plan(m, inv, multinode=True)
        assert a.model_dump_json() == b.model_dump_json()
        assert "pipeline_parallel_size" not in a.model_dump()
        rendered = render("m", "ns", None, m.spec, a, RenderOptions())
        status = plan_status(a, rendered.template_hash)
        assert "pipelineParallelSize" not in status and "nodesPerReplica" not in status


# -------------------------------------------------------------------------- argv and render


def test_the_argv_of_leader_and_workers(big_plan: Plan) -> None:
    common = vllm_args(big_plan)
    assert "--pipeline-parallel-size=2" in common
    assert (
        common.index("--pipeline-parallel-size=2") == common.index("--tensor-parallel-size=4") + 1
    )
    leader = vllm_args(big_plan, "leader")
    worker = vllm_args(big_plan, "worker")
    assert leader[: len(common)] == common and worker[: len(common)] == common
    assert leader[len(common) :] == [
        "--distributed-executor-backend=mp",
        "--nnodes=2",
        "--node-rank=0",
        "--master-addr=$(LWS_LEADER_ADDRESS)",
        "--master-port=29501",
    ]
    assert worker[len(common) :] == [
        "--distributed-executor-backend=mp",
        "--nnodes=2",
        "--node-rank=$(LWS_WORKER_INDEX)",
        "--master-addr=$(LWS_LEADER_ADDRESS)",
        "--master-port=29501",
        "--headless",
    ]


def test_a_multinode_plan_renders_a_leader_worker_set(big_plan: Plan) -> None:
    m = manifest(BIG, ["L40S"])
    options = RenderOptions()
    out = render_multinode("big", "ns", "uid-1", m.spec, big_plan, options, generation=3)
    lws = out.leader_worker_set
    assert (lws["apiVersion"], lws["kind"]) == ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    spec = lws["spec"]
    assert spec["replicas"] == big_plan.replicas
    assert spec["startupPolicy"] == "LeaderCreated"
    group = spec["leaderWorkerTemplate"]
    assert group["size"] == 2 and group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    assert leader["args"] == vllm_args(big_plan, "leader")
    assert worker["args"] == vllm_args(big_plan, "worker")
    assert leader["resources"] == worker["resources"]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == 4
    for template in (group["leaderTemplate"], group["workerTemplate"]):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["dshm"]["emptyDir"]["sizeLimit"] == big_plan.resources.shm_size
        assert template["metadata"]["labels"]["mmop.dev/model"] == "big"
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= leader.keys()
    assert not {"startupProbe", "readinessProbe", "livenessProbe", "ports"} & worker.keys()
    # The leader waits for its workers to be scheduled and pulled: a longer start-up budget.
    single = startup_budget_seconds(big_plan, options) // 10
    assert leader["startupProbe"]["failureThreshold"] == single + 60
    assert out.service["spec"]["selector"] == {
        "app.kubernetes.io/instance": "big",
        "mmop.dev/model": "big",
        LWS_WORKER_INDEX_LABEL: "0",
    }
    assert out.pod_disruption_budget["spec"]["selector"]["matchLabels"] == out.selector
    assert [o["kind"] for o in out.objects()] == [
        "LeaderWorkerSet",
        "Service",
        "PodDisruptionBudget",
    ]
    assert lws["metadata"]["annotations"] == {"mmop.dev/generation": "3"}
    status = plan_status(big_plan, out.template_hash)
    assert status["pipelineParallelSize"] == 2 and status["nodesPerReplica"] == 2
    assert "--pipeline-parallel-size=2" in status["args"]


def test_the_group_is_not_named_as_the_models_service(big_plan: Plan) -> None:
    # LWS names its headless Service after the LeaderWorkerSet (the leaders' DNS names,
    # LWS_LEADER_ADDRESS = <set>-<group>.<set>.<namespace>, resolve through it) and creates it
    # only if no Service of that name exists (lws v0.9.0 pkg/utils/controller/
    # controller_utils.go CreateHeadlessServiceIfNotExists): the model's own Service must take
    # another name, or the workers cannot find their leader.
    m = manifest(BIG, ["L40S"])
    out = render_multinode("big", "ns", "uid-1", m.spec, big_plan, RenderOptions())
    assert out.service["metadata"]["name"] == "big"  # what clients reach, as for one node
    assert out.leader_worker_set["metadata"]["name"] == group_name("big") == "big-lws"
    assert out.pod_disruption_budget["metadata"]["name"] == "big"


def test_render_multinode_refuses_a_single_node_plan() -> None:
    m = MultimodalModel.model_validate(yaml.safe_load(EXAMPLES[0].read_text()))
    with pytest.raises(ValueError):
        render_multinode("m", "ns", None, m.spec, plan(m, default_inventory()), RenderOptions())


def test_mmop_plan_plans_over_nodes_only_when_asked_as_the_operator_does_not_yet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(
        yaml.safe_dump(
            manifest(BIG, ["L40S"]).model_dump(by_alias=True, mode="json", exclude_none=True)
        )
    )
    assert main(["plan", str(path), "--json", "--multinode"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pipeline_parallel_size"] == 2 and "--pipeline-parallel-size=2" in out["args"]
    assert main(["plan", str(path), "--json"]) == 3  # the operator's answer: Infeasible


# ----------------------------------------------------------- the inter-node link, from labels


def _l40s_pool(labels: dict[str, str] | None = None) -> dict[str, Any]:
    pool: dict[str, Any] = {"name": "l40s", "gpu": "L40S", "nodes": 4, "gpusPerNode": 4}
    if labels is not None:
        pool["labels"] = labels
    return pool


def test_the_inter_node_link_comes_from_the_nodes_label(tmp_path: Path) -> None:
    unlabelled = plan(manifest(BIG, ["L40S"]), inventory(tmp_path, [_l40s_pool()]),
                      multinode=True)  # fmt: skip
    slow_inv = inventory(tmp_path, [_l40s_pool({"mmop.dev/inter-node-gbps": "10"})])
    slow = plan(manifest(BIG, ["L40S"]), slow_inv, multinode=True)
    assert unlabelled.config == slow.config  # the same shape: only its speed changes
    # L40S (PCIe) nodes default to 100 Gb/s Ethernet; 10 Gb/s makes every step's hand-over
    # between the stages slower.
    assert any("inter-node link 100 Gb/s" in n and "assumed for L40S" in n
               for n in unlabelled.notes)  # fmt: skip
    assert any("inter-node link 10 Gb/s" in n and "slowest node's mmop.dev/inter-node-gbps" in n
               for n in slow.notes)  # fmt: skip
    assert slow.performance.tpot_p95_seconds > unlabelled.performance.tpot_p95_seconds
    fast_inv = inventory(tmp_path, [_l40s_pool({"mmop.dev/inter-node-gbps": "400"})])
    fast = plan(manifest(BIG, ["L40S"]), fast_inv, multinode=True)
    assert fast.performance.tpot_p95_seconds < unlabelled.performance.tpot_p95_seconds
    # A value that is not a figure counts as absent.
    odd_inv = inventory(tmp_path, [_l40s_pool({"mmop.dev/inter-node-gbps": "fast"})])
    odd = plan(manifest(BIG, ["L40S"]), odd_inv, multinode=True)
    assert odd.performance == unlabelled.performance


def test_a_pool_labelled_in_part_is_not_credited_more_than_the_default(tmp_path: Path) -> None:
    from mmop.planner import inter_node_link

    inv = inventory(tmp_path, [_l40s_pool()])
    (pool,) = inv.pools
    nodes = list(pool.nodes)
    nodes[0] = nodes[0].model_copy(update={"labels": {**nodes[0].labels,
                                                      "mmop.dev/inter-node-gbps": "800"}})  # fmt: skip
    partial = pool.model_copy(update={"nodes": tuple(nodes)})
    assert partial.inter_node_link == (800.0, False)
    figure, source = inter_node_link(partial, partial.gpu_spec())
    assert figure == 100.0 and "some nodes lack" in source
    nodes[1] = nodes[1].model_copy(update={"labels": {**nodes[1].labels,
                                                      "mmop.dev/inter-node-gbps": "25"}})  # fmt: skip
    slower = pool.model_copy(update={"nodes": tuple(nodes)})
    assert inter_node_link(slower, slower.gpu_spec())[0] == 25.0
    for bad in ("0", "-5", "1e9", "nan"):
        assert inter_node_gbps(bad) is None, bad
    assert inter_node_gbps("200") == 200.0


# ------------------------------------------------------------------- spanning when cheaper


def _mixed(tmp_path: Path, l4_price: float) -> Inventory:
    return inventory(
        tmp_path,
        [
            {"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpusPerNode": 8,
             "pricePerHourUsd": 4.0},
            {"name": "l4", "gpu": "L4", "nodes": 4, "gpusPerNode": 1,
             "pricePerHourUsd": l4_price},
        ],
    )  # fmt: skip


def test_a_replica_spans_nodes_when_that_saves_enough(tmp_path: Path) -> None:
    m = manifest(VL, [], quantizations=["none"])
    one_node = plan(m, _mixed(tmp_path, 0.5))
    assert (one_node.gpu, one_node.nodes_per_replica) == ("H100-80GB-SXM", 1)
    spanning = plan(m, _mixed(tmp_path, 0.5), multinode=True)
    assert spanning.gpu == "L4" and spanning.nodes_per_replica > 1
    assert spanning.cost_per_hour_usd <= 0.8 * one_node.cost_per_hour_usd
    assert any(
        f"against ${one_node.cost_per_hour_usd:.2f}/h for the cheapest plan on one node" in n
        for n in spanning.notes
    )
    # Less than a fifth saved: one node per replica is kept, as without --multinode.
    l4_price = 0.95 * one_node.cost_per_hour_usd / spanning.nodes_per_replica
    close = plan(m, _mixed(tmp_path, l4_price), multinode=True)
    assert (close.config, close.nodes_per_replica) == (one_node.config, 1)
