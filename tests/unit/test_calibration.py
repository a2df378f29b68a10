"""The calibration loop's pure parts: recording engines' KV caches per configuration, the store's
round trip through ConfigMap data, and plans that use the observed figure."""

from __future__ import annotations

from pathlib import Path

import yaml

from mmop.api import MultimodalModel
from mmop.autoscaler import Action, Scaling, Slo, State, decide, observation
from mmop.calibration import (
    FAR_BELOW,
    MAX_RECORDS,
    CalibrationStore,
    MemoryKey,
    key_of_plan,
)
from mmop.inventory import default_inventory
from mmop.planner import Limits, plan
from mmop.status import plan_status

ROOT = Path(__file__).resolve().parents[2]
KEY = MemoryKey("Qwen/Qwen2.5-VL-7B-Instruct", None, "L40S", 1, "none", "auto", "0.32.0")


def manifest() -> MultimodalModel:
    return MultimodalModel.model_validate(
        yaml.safe_load((ROOT / "examples" / "qwen2.5-vl-7b.yaml").read_text())
    )


def test_an_engine_is_counted_once_and_the_smallest_cache_is_kept() -> None:
    store = CalibrationStore.empty()
    store, seen = store.observe(KEY, "pod-a", 1_000_000, 900_000)
    assert seen is not None and seen.new and not seen.far_below
    again, twice = store.observe(KEY, "pod-a", 1_000_000, 800_000)
    assert twice is None and again is store  # the same engine's next scrape
    store, seen = store.observe(KEY, "pod-b", 1_000_000, 850_000)
    assert seen is not None
    found = store.lookup(KEY)
    assert found is not None and (found.startups, found.observed_tokens) == (2, 850_000)
    assert found.ratio == 0.85 and "calibrated from 2 start-up(s)" in found.note()


def test_far_below_and_unbelievable_figures() -> None:
    _, seen = CalibrationStore.empty().observe(KEY, "p", 1_000_000, 600_000)
    assert seen is not None and seen.far_below and FAR_BELOW * 1_000_000 > 600_000
    # 1 % of the prediction: another engine's figure or a stand-in, not this configuration's
    same, none = CalibrationStore.empty().observe(KEY, "p", 1_000_000, 10_000)
    assert none is None and same.records == {}


def test_a_second_prediction_already_calibrated_is_compared_on_the_first_ones_scale() -> None:
    store, _ = CalibrationStore.empty().observe(KEY, "a", 1_000_000, 600_000)
    # A later plan predicted 1,100,000 raw tokens (another max_model_len); its engine has 660,000:
    store, seen = store.observe(KEY, "b", 1_100_000, 660_000)
    assert seen is not None
    found = store.lookup(KEY)
    assert found is not None and found.observed_tokens == 600_000 and found.startups == 2


def test_the_store_round_trips_through_configmap_data_and_stays_bounded() -> None:
    store = CalibrationStore.empty()
    for i in range(MAX_RECORDS + 10):
        key = MemoryKey(f"org/m{i}", None, "L4", 1, "none", "auto", "0.32.0")
        store, _ = store.observe(key, "p", 100_000, 90_000)
    assert len(store.records) == MAX_RECORDS
    assert store.lookup(MemoryKey("org/m0", None, "L4", 1, "none", "auto", "0.32.0")) is None
    data = store.to_data()
    assert all(len(k) <= 253 and k.startswith("kv-") for k in data)
    back = CalibrationStore.from_data({**data, "kv-broken": "{not json", "other": "x"})
    assert back.records == store.records
    assert sum(len(k) + len(v) for k, v in data.items()) < 512 * 1024  # far below 1 MiB


def test_a_plan_of_an_observed_configuration_uses_the_observed_figure_and_says_so() -> None:
    inventory = default_inventory()
    first = plan(manifest(), inventory)
    key = key_of_plan(plan_status(first, "h"), [], first.vllm_version)
    assert key is not None
    observed = int(first.memory.kv_cache_tokens * 0.7)
    store, _ = CalibrationStore.empty().observe(key, "pod", first.memory.kv_cache_tokens, observed)
    second = plan(manifest(), inventory, limits=Limits(kv_calibration=store))
    assert second.config == first.config and second.kv_memory_scale == 0.7
    # The KV memory is the engines': within a block of 70 % of the first prediction.
    assert abs(second.memory.kv_cache_tokens - observed) <= 0.01 * observed
    assert any("calibrated from 1 start-up(s)" in n for n in second.notes)
    status = plan_status(second, "h")
    assert status["kvMemoryScale"] == 0.7
    assert "kvMemoryScale" not in plan_status(first, "h")
    # Another configuration of the same model is not affected.
    other = MemoryKey(key.model, None, key.gpu, key.tensor_parallel_size, "fp8", "auto",
                      key.vllm_version)  # fmt: skip
    store2, _ = CalibrationStore.empty().observe(other, "pod", 1_000_000, 500_000)
    third = plan(manifest(), inventory, limits=Limits(kv_calibration=store2))
    assert third.memory.kv_cache_tokens == first.memory.kv_cache_tokens


def test_a_new_engine_far_below_its_prediction_asks_for_a_bounded_replan() -> None:
    obs = observation(
        now_seconds=1000.0, desired_replicas=1, ready_replicas=1, loads=(),
        ttft_p95_seconds=None, preemptions_per_second=None, oom_killed=(), plan={}, saved={},
        consolidated=False, kv_below_prediction="engine p reported 600,000 KV tokens, 60 %",
    )  # fmt: skip
    decision, state = decide(Scaling(), Slo(), obs, State())
    assert (decision.action, decision.reason, decision.headroom) == (
        Action.REPLAN, "KvBelowPrediction", "calibration",
    )  # fmt: skip
    # Spaced like every re-plan: the next tick does not re-plan again.
    again, _ = decide(Scaling(), Slo(), obs.model_copy(update={"now_seconds": 1010.0}), state)
    assert again.action != Action.REPLAN


def test_the_loops_slim_copy_of_a_model_keeps_what_the_calibration_key_is_made_of() -> None:
    from mmop.controller.autoscaling import slim_model

    status = {"plan": plan_status(plan(manifest(), default_inventory()), "h")}
    full = key_of_plan(status["plan"], [], "0.32.0")
    slim = slim_model({"metadata": {"name": "m"}, "spec": {}, "status": status})
    assert full is not None and key_of_plan(slim["status"]["plan"], [], "0.32.0") == full


def test_single_node_keys_keep_their_configmap_names() -> None:
    # Records written before pipeline stages joined the key are still found.
    key = MemoryKey("Qwen/Qwen3-VL-8B-Instruct", "abc", "L40S", 4, "none", "auto", "0.32.0",
                    ("--enforce-eager",))  # fmt: skip
    assert key.name == "kv-bc4cc4ee8c93ceedf5ed8f54384d060162c5d"


def multinode_manifest() -> MultimodalModel:
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "big"},
            "spec": {
                "model": {"id": "Qwen/Qwen3-235B-A22B-FP8"},
                "placement": {"gpuTypes": ["L40S"]},
            },
        }
    )


def test_a_replica_over_nodes_is_a_calibration_key_of_its_own() -> None:
    from mmop.controller.autoscaling import slim_model

    big = plan(multinode_manifest(), default_inventory(), multinode=True)
    assert (big.tensor_parallel_size, big.pipeline_parallel_size) == (4, 2)
    status = plan_status(big, "h")
    assert status["gpusPerReplica"] == 8  # every GPU of the group, as the GPUs column says
    key = key_of_plan(status, [], big.vllm_version)
    assert key is not None
    assert (key.tensor_parallel_size, key.pipeline_parallel_size) == (4, 2)
    assert "4× L40S × 2 stages" in key.describe()
    # Not the key of the same model on one node at tp 4 (or tp 8): a group's engine report
    # never calibrates a single-node plan.
    single = MemoryKey(key.model, key.commit, key.gpu, 4, key.weights, key.kv_cache_dtype,
                       key.vllm_version)  # fmt: skip
    assert key.name != single.name
    assert key.name != MemoryKey(key.model, key.commit, key.gpu, 8, key.weights,
                                 key.kv_cache_dtype, key.vllm_version).name  # fmt: skip
    slim = slim_model({"metadata": {"name": "big"}, "spec": {}, "status": {"plan": status}})
    assert key_of_plan(slim["status"]["plan"], [], big.vllm_version) == key
    # A group's observation calibrates the next plan of the group.
    observed = int(big.memory.kv_cache_tokens * 0.7)
    store, _ = CalibrationStore.empty().observe(key, "big-lws-0", big.memory.kv_cache_tokens,
                                                observed)  # fmt: skip
    again = plan(multinode_manifest(), default_inventory(), multinode=True,
                 limits=Limits(kv_calibration=store))  # fmt: skip
    assert again.config == big.config and again.kv_memory_scale == 0.7
