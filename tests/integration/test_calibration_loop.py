"""The calibration loop in the sandbox: the stand-in engines report a KV cache of 60 % of what
the plan predicted (llm-d-inference-sim's ``--kv-cache-size``, through its ``vllm:cache_config_info``
as vLLM reports it); the operator records it, re-plans the model with the observed figure, keeps
it in its ConfigMap, and plans the next model of the same configuration — in another namespace,
and after a restart of the operator — with it from the start."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import (
    apply_manifest,
    condition,
    example,
    get_mm,
    in_process_operator,
    kubectl,
)

from mmop.api import MultimodalModel
from mmop.inventory import inventory_from_objects
from mmop.planner import plan

RATIO = 0.6
BLOCK = 16  # the simulator's block size


@pytest.fixture
def two_namespaces(sandbox: SandboxState) -> Iterator[list[str]]:
    names = [f"cal-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        kubectl(sandbox, "create", "namespace", name)
    try:
        yield names
    finally:
        for name in names:
            kubectl(sandbox, "delete", "namespace", name, "--wait=false")


def predicted_tokens(sandbox: SandboxState, doc: dict[str, Any]) -> int:
    """What the operator will predict for ``doc`` on the sandbox's empty GPU nodes."""
    nodes = json.loads(kubectl(sandbox, "get", "nodes", "-o", "json"))["items"]
    inventory = inventory_from_objects(nodes, [])
    return int(plan(MultimodalModel.model_validate(doc), inventory).memory.kv_cache_tokens)


def plan_of(sandbox: SandboxState, namespace: str, name: str) -> dict[str, Any]:
    def planned() -> dict[str, Any] | None:
        mm = get_mm(sandbox, namespace, name)
        cond = condition(mm, "Planned")
        return mm if cond and cond["status"] == "True" else None

    return dict(wait_for(planned, f"{namespace}/{name} planned", timeout=90)["status"]["plan"])


def test_engines_reporting_less_kv_than_planned_recalibrate_every_later_plan(
    sandbox: SandboxState, two_namespaces: list[str]
) -> None:
    store_ns, first_ns, second_ns = two_namespaces
    doc = example("qwen2.5-vl-7b.yaml")
    doc["metadata"]["name"] = "first"
    predicted = predicted_tokens(sandbox, doc)
    blocks = int(predicted * RATIO) // BLOCK
    shaped = {"sandbox.mmop.dev/kv-cache-blocks": str(blocks)}
    configmap = f"{store_ns}/mmop-calibration"
    with in_process_operator(
        sandbox, pod_annotations=shaped, calibration_configmap=configmap,
        autoscale_interval_seconds=2.0,
    ):  # fmt: skip
        apply_manifest(sandbox, first_ns, doc)
        before = plan_of(sandbox, first_ns, "first")
        assert before["memory"]["kv_cache_tokens"] == predicted and "kvMemoryScale" not in before

        def recalibrated() -> dict[str, Any] | None:
            got = (get_mm(sandbox, first_ns, "first").get("status") or {}).get("plan") or {}
            return got if got.get("kvMemoryScale") else None

        after = wait_for(recalibrated, "the model re-planned with the engines' KV cache", 120)
        assert abs(after["kvMemoryScale"] - RATIO) < 0.01
        assert abs(after["memory"]["kv_cache_tokens"] - blocks * BLOCK) < 0.02 * blocks * BLOCK
        assert any("calibrated from 1 start-up(s)" in n for n in after["notes"])
        events = json.loads(kubectl(sandbox, "get", "events", "-n", first_ns, "-o", "json"))
        observed = [e for e in events["items"] if e["reason"] == "KvCacheObserved"]
        assert observed and observed[0]["type"] == "Warning", observed
        decisions = (get_mm(sandbox, first_ns, "first").get("status") or {}).get("decisions")
        assert any(d["reason"] == "KvBelowPrediction" for d in decisions or []), decisions

        # Another model of the same configuration, elsewhere: calibrated from its first plan.
        doc["metadata"]["name"] = "second"
        apply_manifest(sandbox, second_ns, doc)
        second = plan_of(sandbox, second_ns, "second")
        assert abs(second["kvMemoryScale"] - RATIO) < 0.01

        data = wait_for(
            lambda: json.loads(
                kubectl(sandbox, "get", "configmap", "mmop-calibration", "-n", store_ns,
                        "-o", "json", "--ignore-not-found") or "{}"
            ).get("data"),
            "the calibration ConfigMap",
            60,
        )  # fmt: skip
        records = [json.loads(v) for v in data.values()]
        assert len(records) == 1 and records[0]["startups"] >= 1
        assert records[0]["key"].startswith("Qwen/Qwen2.5-VL-7B-Instruct on ")

    # A new operator (a restart) reads the store: a third model is calibrated from the start.
    with in_process_operator(sandbox, calibration_configmap=configmap):
        doc["metadata"]["name"] = "third"
        apply_manifest(sandbox, second_ns, doc)
        third = plan_of(sandbox, second_ns, "third")
        assert abs(third["kvMemoryScale"] - RATIO) < 0.01
