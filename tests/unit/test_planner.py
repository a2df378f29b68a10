"""The planner: feasibility edges, tie-breaking, infeasible messages, golden plans for examples/."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop.api import MultimodalModel
from mmop.inventory import Inventory, default_inventory, load_inventory
from mmop.planner import AssessmentCache, Limits, PlanningError, plan
from mmop.render import vllm_args

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).parent / "golden"


def manifest(spec: dict[str, Any], name: str = "m") -> MultimodalModel:
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def inventory(tmp_path: Path, pools: list[dict[str, Any]]) -> Inventory:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"pools": pools}))
    return load_inventory(path)


QWEN = {"model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"}}


def golden_view(p: Any) -> dict[str, Any]:
    return {
        "gpu": p.gpu,
        "gpu_product": p.gpu_product,
        "tensor_parallel_size": p.tensor_parallel_size,
        "replicas": p.replicas,
        "quantization": p.quantization,
        "kv_cache_dtype": p.kv_cache_dtype,
        "image_cap": p.image_cap,
        "max_model_len": p.max_model_len,
        "args": vllm_args(p),
        "cost_per_hour_usd": p.cost_per_hour_usd,
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_plan_to_their_golden_plans(path: Path) -> None:
    m = MultimodalModel.model_validate(yaml.safe_load(path.read_text()))
    result = plan(m, default_inventory())
    view = golden_view(result)
    golden = GOLDEN / f"{path.stem}.json"
    if os.environ.get("MMOP_UPDATE_GOLDEN") == "1":
        golden.write_text(json.dumps(view, indent=2) + "\n")
    assert golden.is_file(), f"no golden plan for {path.name}; run with MMOP_UPDATE_GOLDEN=1"
    assert view == json.loads(golden.read_text())


def test_examples_cover_six_families() -> None:
    families = set()
    from mmop.model import load_profile

    for path in EXAMPLES:
        m = MultimodalModel.model_validate(yaml.safe_load(path.read_text()))
        families.add(load_profile(m.spec.model.id).family)
    assert len(families) >= 6, families


def test_plan_fits_what_the_estimator_says_and_args_are_vllm_flags() -> None:
    m = manifest(
        {
            **QWEN,
            "workload": {
                "images": {"perRequest": 2, "maxWidth": 1280, "maxHeight": 720},
                "concurrency": 8,
            },
        }
    )
    p = plan(m, default_inventory())
    assert p.memory.fits
    assert vllm_args(p)[0] == "Qwen/Qwen2.5-VL-7B-Instruct"
    flags = {a.split("=", 1)[0] for a in vllm_args(p)[1:]}
    assert {
        "--tensor-parallel-size",
        "--max-model-len",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--gpu-memory-utilization",
        "--limit-mm-per-prompt",
    } <= flags
    limit = json.loads(
        next(a for a in vllm_args(p) if a.startswith("--limit-mm-per-prompt=")).split("=", 1)[1]
    )
    assert limit["video"] == 0  # not used by the workload: not profiled
    assert limit["image"]["count"] == 2
    assert p.max_model_len >= 4096


def test_cheapest_feasible_gpu_wins(tmp_path: Path) -> None:
    inv = inventory(tmp_path, [
        {"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpusPerNode": 8},
        {"name": "l4", "gpu": "L4", "nodes": 4, "gpusPerNode": 1},
    ])  # fmt: skip
    small = plan(
        manifest(
            {
                "model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"},
                "workload": {"images": {"perRequest": 1}, "concurrency": 2},
            }
        ),
        inv,
    )
    assert small.gpu == "L4"
    assert small.cost_per_hour_usd == pytest.approx(
        small.replicas * small.tensor_parallel_size * 0.44
    )


def test_a_model_too_big_for_small_gpus_uses_tensor_parallel_or_a_bigger_gpu(
    tmp_path: Path,
) -> None:
    inv = inventory(tmp_path, [{"name": "l40s", "gpu": "L40S", "nodes": 2, "gpusPerNode": 4}])
    p = plan(manifest({"model": {"id": "Qwen/Qwen2.5-VL-72B-Instruct"}, "workload": {"images": {"perRequest": 1}},
                       "placement": {"quantizations": ["none"]}}), inv)  # fmt: skip
    assert p.gpu == "L40S" and p.tensor_parallel_size == 4 and p.quantization == "none"


def test_quality_floor_is_never_crossed() -> None:
    base = {
        **QWEN,
        "workload": {
            "images": {"perRequest": 8, "maxWidth": 3840, "maxHeight": 2160},
            "concurrency": 16,
        },
    }
    floor = {
        **QWEN,
        "workload": {
            "images": {
                "perRequest": 8,
                "maxWidth": 3840,
                "maxHeight": 2160,
                "minTokensPerImage": 4000,
            },
            "concurrency": 16,
        },
    }
    native = plan(manifest(base), default_inventory())
    held = plan(manifest(floor), default_inventory())
    assert held.max_tokens_per_image is not None and held.max_tokens_per_image >= 4000
    # Without a floor nothing is downscaled; a floor below native may only make it cheaper.
    assert native.tokens_per_image == native.native_tokens_per_image
    assert held.cost_per_hour_usd <= native.cost_per_hour_usd


def test_ties_prefer_higher_fidelity(tmp_path: Path) -> None:
    inv = inventory(tmp_path, [{"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpusPerNode": 8}])
    p = plan(
        manifest({"model": {"id": "Qwen/Qwen2.5-7B-Instruct"}, "workload": {"concurrency": 1}}), inv
    )
    # One H100 holds bf16 weights with ample KV: fp8 would cost the same, so bf16 wins.
    assert p.quantization == "none" and p.kv_cache_dtype == "auto"


def test_placement_limits_gpu_types() -> None:
    p = plan(manifest({**QWEN, "placement": {"gpuTypes": ["H100-80GB"]}}), default_inventory())
    assert p.gpu == "H100-80GB-SXM" and p.gpu_product == "NVIDIA-H100-80GB-HBM3"


def test_fp8_is_not_offered_on_gpus_without_it(tmp_path: Path) -> None:
    inv = inventory(tmp_path, [{"name": "t4", "gpu": "T4", "nodes": 4, "gpusPerNode": 4}])
    p = plan(manifest({"model": {"id": "Qwen/Qwen2.5-1.5B-Instruct"}}), inv)
    assert p.quantization != "fp8"


def test_infeasible_names_the_nearest_miss_and_the_fix(tmp_path: Path) -> None:
    inv = inventory(tmp_path, [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1}])
    with pytest.raises(PlanningError) as info:
        plan(
            manifest(
                {
                    "model": {"id": "Qwen/Qwen2.5-VL-72B-Instruct"},
                    "placement": {"quantizations": ["none"]},
                }
            ),
            inv,
        )
    assert info.value.reason == "Infeasible"
    assert "nearest miss" in str(info.value) and "more memory" in str(info.value)


def test_not_enough_gpus_is_insufficient_capacity(tmp_path: Path) -> None:
    inv = inventory(
        tmp_path,
        [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "freeGpusPerNode": [0]}],
    )
    with pytest.raises(PlanningError) as info:
        plan(manifest({"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct"}}), inv)
    assert info.value.reason == "InsufficientCapacity"


def test_modalities_the_model_lacks_are_refused() -> None:
    with pytest.raises(PlanningError, match="does not take audio"):
        plan(manifest({**QWEN, "workload": {"audio": {"enabled": True}}}), default_inventory())


def test_alternatives_say_why_they_lost() -> None:
    p = plan(
        manifest({**QWEN, "workload": {"images": {"perRequest": 1}, "concurrency": 4}}),
        default_inventory(),
    )
    assert p.alternatives
    assert all(a.reason for a in p.alternatives)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_cached_assessments_give_the_same_plan_as_a_cold_planner(path: Path) -> None:
    m = MultimodalModel.model_validate(yaml.safe_load(path.read_text()))
    cache = AssessmentCache()
    cold = plan(m, default_inventory(), cache=cache)
    assert len(cache) > 0
    warm = plan(m, default_inventory(), cache=cache)
    assert warm.model_dump() == cold.model_dump() == plan(m, default_inventory()).model_dump()


def test_cached_assessments_still_see_the_cluster_fill_up(tmp_path: Path) -> None:
    """The cache holds what a candidate is worth, never whether the cluster has room for it."""
    spec = manifest({"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct"}})
    free = inventory(tmp_path, [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1}])
    full = inventory(
        tmp_path,
        [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "freeGpusPerNode": [0]}],
    )
    cache = AssessmentCache()
    assert plan(spec, free, cache=cache).gpu == "L4"
    with pytest.raises(PlanningError) as info:
        plan(spec, full, cache=cache)
    assert info.value.reason == "InsufficientCapacity"
    assert plan(spec, free, cache=cache).gpu == "L4"


def test_the_assessment_cache_drops_the_least_recently_used() -> None:
    cache = AssessmentCache(size=3)
    plan(
        manifest({"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct"}}), default_inventory(), cache=cache
    )
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0


def test_avoided_configurations_and_a_kv_floor_move_the_plan() -> None:
    m = manifest({**QWEN, "workload": {"images": {"perRequest": 1}, "concurrency": 4}})
    first = plan(m, default_inventory())
    assert first.config and first.config.startswith(first.gpu)
    second = plan(m, default_inventory(), limits=Limits(avoid=frozenset({first.config})))
    assert second.config != first.config
    assert second.cost_per_hour_usd >= first.cost_per_hour_usd
    roomier = plan(
        m, default_inventory(), limits=Limits(min_kv_cache_tokens=first.memory.kv_cache_tokens)
    )
    assert roomier.memory.kv_cache_tokens > first.memory.kv_cache_tokens


def test_avoiding_everything_is_infeasible_with_the_reason() -> None:
    m = manifest({"model": {"id": "Qwen/Qwen2.5-0.5B-Instruct"}})
    with pytest.raises(PlanningError) as info:
        plan(m, default_inventory(), limits=Limits(min_kv_cache_tokens=10**9))
    assert "proved too few" in str(info.value)


LLAVA_PEAK = {
    "model": {"id": "llava-hf/llava-1.5-7b-hf"},
    "workload": {
        "images": {"perRequest": 1, "maxWidth": 640, "maxHeight": 480},
        "concurrency": 400,
    },
    "scaling": {"minReplicas": 1, "maxReplicas": 8},
}


def test_a_plan_for_observed_demand_is_cheaper_and_still_scales_to_the_peak() -> None:
    m = manifest(LLAVA_PEAK)
    peak = plan(m, default_inventory())
    idle = plan(m, default_inventory(), limits=Limits(demand=2))
    assert idle.config != peak.config
    assert idle.replicas == 1 and idle.cost_per_hour_usd < peak.cost_per_hour_usd
    # The demand plan's configuration carries the peak within maxReplicas.
    per_replica = idle.performance.concurrency_per_replica
    peak_replicas = -(-400 // per_replica)
    assert peak_replicas <= 8
    assert f"{peak_replicas} replica(s) carry spec.workload's peak" in idle.explanation
    # More demand, more replicas of the same kind; never fewer than minReplicas.
    busier = plan(m, default_inventory(), limits=Limits(demand=3 * per_replica))
    assert busier.replicas == 3


def test_a_demand_plan_must_still_carry_the_peak_within_max_replicas() -> None:
    spec = {**LLAVA_PEAK, "scaling": {"minReplicas": 1, "maxReplicas": 2}}
    m = manifest(spec)
    peak = plan(m, default_inventory())
    idle = plan(m, default_inventory(), limits=Limits(demand=2))
    # The small configuration needs more than 2 replicas for the peak: only the peak's own
    # kind (or one as large) remains, sized down to one replica.
    assert idle.tensor_parallel_size == peak.tensor_parallel_size
    assert idle.replicas == 1


# --- typed reasons: the planner never reads its own messages ----------------------------------

LONG_CONTEXT = {
    "model": {"id": "meta-llama/Llama-3.1-8B-Instruct"},
    "workload": {"contextLength": {"min": 131072}},
    "placement": {"quantizations": ["none"], "kvCacheDtypes": ["auto"], "maxGpusPerReplica": 1},
}


def test_planning_reasons_are_typed_and_keep_their_names() -> None:
    from mmop.planner import PlanningReason

    assert [str(r) for r in PlanningReason] == [
        "UnknownModel",
        "UnsupportedModality",
        "ContextTooLong",
        "RemoteCodeRequired",
        "InvalidSpec",
        "Infeasible",
        "InsufficientCapacity",
    ]
    with pytest.raises(PlanningError) as info:
        plan(manifest({"model": {"id": "acme/none"}}), default_inventory())
    assert info.value.reason is PlanningReason.UNKNOWN_MODEL
    assert info.value.reason == "UnknownModel" and info.value.bad_input
    assert PlanningError("x", reason="Infeasible").reason is PlanningReason.INFEASIBLE


def test_a_refusal_is_classified_by_its_kind_not_by_vllms_wording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's start-up message ("max seq len") may change wording between releases: the
    nearest miss and its hint follow the estimator's typed failure, whatever the words."""
    from mmop import planner

    inv = inventory(tmp_path, [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1}])
    with pytest.raises(PlanningError) as before:
        plan(manifest(LONG_CONTEXT), inv)
    assert "a shorter contextLength" in str(before.value)
    real = planner.estimate

    def reworded(*args: Any, **kwargs: Any) -> Any:
        est = real(*args, **kwargs)
        if est.fits:
            return est
        return est.model_copy(update={"reason": "the KV pool is smaller than one sequence"})

    monkeypatch.setattr(planner, "estimate", reworded)
    with pytest.raises(PlanningError) as after:
        plan(manifest(LONG_CONTEXT), inv)
    assert "the KV pool is smaller than one sequence" in str(after.value)
    assert "a shorter contextLength" in str(after.value)
    assert after.value.reason == "Infeasible"


# --- spec.placement.nodeSelector (R6) ---------------------------------------------------------


def labelled_inventory(tmp_path: Path) -> Inventory:
    return inventory(tmp_path, [
        {"name": "l4", "gpu": "L4", "nodes": 2, "gpusPerNode": 1, "labels": {"team": "a"}},
        {"name": "l40s", "gpu": "L40S", "nodes": 1, "gpusPerNode": 4, "labels": {"team": "b"}},
    ])  # fmt: skip


def test_the_plan_uses_only_nodes_the_node_selector_matches(tmp_path: Path) -> None:
    small = {"model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"}, "workload": {"concurrency": 2}}
    inv = labelled_inventory(tmp_path)
    assert plan(manifest(small), inv).gpu == "L4"  # cheapest without a selector
    placed = plan(manifest({**small, "placement": {"nodeSelector": {"team": "b"}}}), inv)
    assert placed.gpu == "L40S"
    assert all(a.gpu == "L40S" for a in placed.alternatives)
    on_host = {"nodeSelector": {"kubernetes.io/hostname": "l4-1"}}
    assert plan(manifest({**small, "placement": on_host}), inv).gpu == "L4"


def test_a_node_selector_no_gpu_node_matches_is_not_planned(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"},
        "placement": {"nodeSelector": {"team": "c", "zone": "z1"}},
    }
    with pytest.raises(PlanningError) as info:
        plan(manifest(spec), labelled_inventory(tmp_path))
    assert info.value.reason == "InsufficientCapacity"
    assert "nodeSelector (team=c, zone=z1)" in str(info.value)
    # a selector that matches nodes of a type the spec does not allow says both
    spec["placement"] = {"nodeSelector": {"team": "b"}, "gpuTypes": ["L4"]}
    with pytest.raises(PlanningError) as info:
        plan(manifest(spec), labelled_inventory(tmp_path))
    assert info.value.reason == "InsufficientCapacity"
    assert "types L4" in str(info.value) and "nodeSelector team=b" in str(info.value)


def test_node_selector_matches_any_label_of_cluster_nodes() -> None:
    from mmop.inventory import inventory_from_objects

    def node(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "labels": {"nvidia.com/gpu.product": "NVIDIA-L4", **labels},
            },
            "status": {
                "allocatable": {"nvidia.com/gpu": "1", "cpu": "16", "memory": "64Gi"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    inv = inventory_from_objects(
        [node("a", {"example.com/tier": "gold"}), node("b", {"example.com/tier": "silver"})], []
    )
    spec = {"model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"}, "scaling": {"minReplicas": 2}}
    with pytest.raises(PlanningError) as info:
        plan(manifest({**spec, "placement": {"nodeSelector": {"example.com/tier": "gold"}}}), inv)
    assert info.value.reason == "InsufficientCapacity"  # one matching node for two replicas
    assert plan(manifest(spec), inv).replicas == 2
