"""Policy v2 on the sandbox with start-ups as slow as they are: stand-in engines that turn Ready
only after an emulated start-up (sandbox.mmop.dev/startup-seconds), a load far beyond one
replica, and the autoscaler jumping straight to the replicas the demand needs in one decision,
while the new replicas are still starting."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_autoscaling import SIM_ANNOTATIONS, Load, ready_pod_urls, replicas
from tests.integration.test_autoscaling import model as autoscaling_model
from tests.integration.test_operator import apply_manifest, get_mm, in_process_operator, kubectl

STARTUP_SECONDS = 12


@pytest.fixture(scope="module")
def slow_scaler(sandbox: SandboxState) -> Iterator[Any]:
    annotations = {**SIM_ANNOTATIONS, "sandbox.mmop.dev/startup-seconds": str(STARTUP_SECONDS)}
    with in_process_operator(sandbox, annotations, autoscale_interval_seconds=2) as state:
        yield state


def model(name: str) -> dict[str, Any]:
    """test_autoscaling's model, with room to jump and no scale-down during the test."""
    doc = autoscaling_model(name)
    doc["spec"]["scaling"] = {
        "minReplicas": 1,
        "maxReplicas": 8,
        "behavior": {"windowSeconds": 6, "scaleDownStabilizationSeconds": 600},
    }
    return doc


def seconds(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def ready_after(pod: dict[str, Any]) -> float | None:
    """Seconds from the pod's start to its Ready condition (None: not Ready)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True" and c.get("lastTransitionTime"):
            return seconds(c["lastTransitionTime"]) - seconds(pod["status"]["startTime"])
    return None


def test_demand_far_beyond_a_replica_is_met_in_one_decision_while_replicas_start_slowly(
    sandbox: SandboxState, slow_scaler: Any, namespace: str
) -> None:
    name = "surge"
    apply_manifest(sandbox, namespace, model(name))
    wait_for(lambda: len(ready_pod_urls(sandbox, namespace, name)) == 1, "one Ready replica", 120)
    # 24 clients on engines that run 2 requests at once: ~12 replicas' worth of demand.
    with Load(sandbox, namespace, name, clients=24) as load:
        wait_for(lambda: replicas(sandbox, namespace, name) > 1, "a scale-up", 60)
        ups = [d for d in get_mm(sandbox, namespace, name)["status"]["decisions"]
               if d["action"] == "ScaleUp"]  # fmt: skip
        # One decision, straight from 1 to what the demand needs (v1 added at most 2).
        assert ups[0]["replicas"] >= 4, ups
        # The new replicas start slowly: Running, not Ready, for the emulated start-up.
        pods = json.loads(
            kubectl(sandbox, "get", "pods", "-n", namespace, "-o", "json")
        )["items"]  # fmt: skip
        starting = [p for p in pods if ready_after(p) is None]
        assert starting, "the new replicas are still starting"
        wait_for(
            lambda: len(ready_pod_urls(sandbox, namespace, name)) >= ups[0]["replicas"],
            "the new replicas Ready",
            120,
        )
        wait_for(lambda: len(load.by_pod) >= 4, "answers from the new replicas", 60)
    pods = json.loads(kubectl(sandbox, "get", "pods", "-n", namespace, "-o", "json"))["items"]
    took = [t for t in (ready_after(p) for p in pods) if t is not None]
    assert took and min(took) >= STARTUP_SECONDS - 1, took  # RFC 3339 stamps: whole seconds
    # While they started, the starting replicas counted as capacity: no second jump for the
    # same demand before they arrived.
    mm = get_mm(sandbox, namespace, name)
    ups = [d for d in mm["status"]["decisions"] if d["action"] == "ScaleUp"]
    first = seconds(ups[0]["time"])
    early = [d for d in ups[1:] if seconds(d["time"]) < first + STARTUP_SECONDS - 2]
    assert not early, ups
    assert not load.failed, load.failed[:5]

    # The start-up the replicas took (creation to Ready) is learned and shown: the forecast
    # looks that far ahead instead of the plan's prediction.
    def observed() -> float | None:
        saved = get_mm(sandbox, namespace, name)["status"].get("autoscaler") or {}
        return saved.get("observedStartupSeconds")

    wait_for(lambda: observed() is not None, "status.autoscaler.observedStartupSeconds", 30)
    learned = observed()
    assert learned is not None and STARTUP_SECONDS - 1 <= learned <= max(took) + 10, (
        learned,
        took,
    )
