"""The autoscaler under real traffic on the sandbox: stand-in vLLM servers at pod addresses,
scraped by the operator, scaled up under saturation, down after the load, re-planned on OOM."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import (
    apply_manifest,
    deployment,
    get_mm,
    in_process_operator,
    kubectl,
)

# Each stand-in engine runs at most 2 requests at once, 200 ms to the first token, then 40 ms
# per token: 12 clients asking for 60 tokens keep ~10 requests waiting on one replica.
SIM_ANNOTATIONS = {
    "sandbox.mmop.dev/time-to-first-token": "200",
    "sandbox.mmop.dev/inter-token-latency": "40",
    "sandbox.mmop.dev/sim-args": "--max-num-seqs=2",
}


@pytest.fixture(scope="module")
def scaler(sandbox: SandboxState) -> Iterator[Any]:
    """The operator in-process, its autoscaler ticking every 2 s, engines that saturate."""
    with in_process_operator(sandbox, SIM_ANNOTATIONS, autoscale_interval_seconds=2) as state:
        yield state


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"id": "Qwen/Qwen2-VL-2B-Instruct"},
            "workload": {"images": {"perRequest": 1, "maxWidth": 640, "maxHeight": 480}},
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "behavior": {
                    "scaleDownStabilizationSeconds": 6,
                    "scaleDownCooldownSeconds": 6,
                    "scaleUpCooldownSeconds": 4,
                    "windowSeconds": 6,
                },
            },
        },
    }


def ready_pod_urls(sandbox: SandboxState, namespace: str, name: str) -> list[str]:
    pods = json.loads(
        kubectl(sandbox, "get", "pods", "-n", namespace, "-l", f"mmop.dev/model={name}", "-o",
                "json")
    )["items"]  # fmt: skip
    out = []
    for p in pods:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
        if ready and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp"):
            out.append(f"http://{p['status']['podIP']}:8000")
    return out


class Load:
    """Clients sending chat requests with an image part, spread over the Ready pods (what a
    gateway would do), until stopped. Counts answers and failures."""

    def __init__(self, sandbox: SandboxState, namespace: str, name: str, clients: int) -> None:
        self.sandbox, self.namespace, self.name = sandbox, namespace, name
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.by_pod: dict[str, int] = {}
        self.urls: list[str] = ready_pod_urls(sandbox, namespace, name)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]
        self.refresher = threading.Thread(target=self.refresh)

    def refresh(self) -> None:
        while not self.stop.wait(1.0):
            urls = ready_pod_urls(self.sandbox, self.namespace, self.name)
            with self.lock:
                self.urls = urls

    def run(self, i: int) -> None:
        body = json.dumps(
            {
                "model": self.name,
                "max_tokens": 60,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": f"describe image {i}"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                            },
                        ],
                    }
                ],
            }
        ).encode()
        n = i
        while not self.stop.is_set():
            with self.lock:
                urls = list(self.urls)
            if not urls:
                self.stop.wait(0.2)
                continue
            url = urls[n % len(urls)]
            n += 1
            req = urllib.request.Request(
                f"{url}/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    resp.read()
                with self.lock:
                    self.ok += 1
                    self.by_pod[url] = self.by_pod.get(url, 0) + 1
            except (urllib.error.URLError, OSError) as err:
                with self.lock:
                    self.failed.append(f"{url}: {err}")

    def __enter__(self) -> Load:
        self.refresher.start()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=90)
        self.refresher.join(timeout=10)


def decisions(mm: dict[str, Any]) -> list[dict[str, Any]]:
    return list((mm.get("status") or {}).get("decisions") or [])


def replicas(sandbox: SandboxState, namespace: str, name: str) -> int:
    dep = deployment(sandbox, namespace, name)
    return int(dep["spec"]["replicas"]) if dep else 0


@pytest.mark.parametrize("source", ["scrape", "prometheus"])
def test_saturation_scales_up_new_replicas_take_traffic_then_scale_down(
    sandbox: SandboxState,
    scaler: Any,
    namespace: str,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if source == "prometheus":
        # The sandbox's Prometheus scrapes every served pod (file_sd, labels namespace and pod).
        assert sandbox.prometheus_url, "the sandbox runs Prometheus (Debian's package)"
        scaler.config = scaler.config.model_copy(update={"prometheus_url": sandbox.prometheus_url})
    else:
        scaler.config = scaler.config.model_copy(update={"prometheus_url": None})
    name = "busy"
    apply_manifest(sandbox, namespace, model(name))
    wait_for(lambda: len(ready_pod_urls(sandbox, namespace, name)) == 1, "one Ready replica", 120)
    with Load(sandbox, namespace, name, clients=12) as load:
        wait_for(lambda: replicas(sandbox, namespace, name) >= 2, "a scale-up", 60)
        mm = get_mm(sandbox, namespace, name)
        ups = [d for d in decisions(mm) if d["action"] == "ScaleUp"]
        assert ups and ups[0]["reason"] in ("Saturated", "LowSpareCapacity", "DemandForecast"), (
            decisions(mm)
        )
        wait_for(
            lambda: len(ready_pod_urls(sandbox, namespace, name)) >= 2, "the new replicas Ready",
            120,
        )  # fmt: skip
        # The new replicas take traffic.
        wait_for(lambda: len(load.by_pod) >= 2, "answers from more than one replica", 60)
        # mmop's own metrics: what the plan predicted against what the engines hold (the
        # stand-in reports 1024 blocks of 16 tokens), and the decision counted.
        labels = {"namespace": namespace, "model": name}
        sample = scaler.telemetry.registry.get_sample_value
        if source == "scrape":
            observed = {**labels, "source": "observed"}
            assert sample("mmop_model_kv_cache_tokens", observed) == 16384
        assert sample("mmop_model_kv_cache_tokens", {**labels, "source": "predicted"})
        ups_counted = sum(
            sample("mmop_decisions_total", {**labels, "decision": "ScaleUp", "reason": r}) or 0
            for r in ("Saturated", "LowSpareCapacity", "DemandForecast")
        )
        assert ups_counted >= 1
    assert load.ok > 0
    in_flight_failures = list(load.failed)
    # After the load: back to minReplicas, one step at a time, without flapping.
    wait_for(lambda: replicas(sandbox, namespace, name) == 1, "the scale-down to 1", 150)
    mm = get_mm(sandbox, namespace, name)
    downs = [d for d in decisions(mm) if d["action"] == "ScaleDown"]
    assert downs and all(d["reason"] == "SpareCapacity" for d in downs), decisions(mm)
    assert len((mm["status"].get("autoscaler") or {}).get("reversals") or []) <= 2
    assert not in_flight_failures, in_flight_failures[:5]
    # The signals came from the source under test (no fallback from Prometheus to scraping).
    assert "scraping the pods instead" not in caplog.text
    events = kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json")
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Saturated", "SpareCapacity"} & reasons or "LowSpareCapacity" in reasons


def test_an_oom_killed_engine_leads_to_a_replan_recorded_in_status(
    sandbox: SandboxState, scaler: Any, namespace: str
) -> None:
    name = "oom"
    apply_manifest(sandbox, namespace, model(name))
    wait_for(lambda: len(ready_pod_urls(sandbox, namespace, name)) == 1, "a Ready replica", 120)
    before = get_mm(sandbox, namespace, name)["status"]["plan"]
    pod = json.loads(
        kubectl(sandbox, "get", "pods", "-n", namespace, "-l", f"mmop.dev/model={name}", "-o",
                "json")
    )["items"][0]  # fmt: skip
    statuses = pod["status"]["containerStatuses"]
    statuses[0]["restartCount"] = int(statuses[0].get("restartCount") or 0) + 1
    statuses[0]["lastState"] = {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:01:00Z",
        }
    }
    patch = json.dumps({"status": {"containerStatuses": statuses}})
    kubectl(
        sandbox, "patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
        "--type=merge", "-p", patch,
    )  # fmt: skip
    mm = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, name))
            and any(d["action"] == "Replan" for d in decisions(m))
            and m
        ),
        "a Replan decision",
        60,
    )
    replan = next(d for d in decisions(mm) if d["action"] == "Replan")
    assert replan["reason"] == "OOMKilled"
    memory = mm["status"]["autoscaler"]
    assert before["config"] in memory["avoid"]
    after = wait_for(
        lambda: (
            (p := get_mm(sandbox, namespace, name)["status"]["plan"])["config"] != before["config"]
            and p
        ),
        "a new plan",
        60,
    )
    assert after["templateHash"] != before["templateHash"]
    dep = wait_for(
        lambda: (
            (d := deployment(sandbox, namespace, name))
            and d["spec"]["template"]["metadata"]["annotations"]["mmop.dev/template-hash"]
            == after["templateHash"]
            and d
        ),
        "the Deployment rolled to the new plan",
        60,
    )
    assert dep
    # The OOM is remembered (a restart will not handle it again) and handled once.
    memory = get_mm(sandbox, namespace, name)["status"]["autoscaler"]
    assert memory["lastOomTime"] == "2026-01-01T00:01:00Z"
    assert len(memory["replans"]) == 1


def test_an_idle_fleet_is_consolidated_onto_a_cheaper_plan_until_the_spec_changes(
    sandbox: SandboxState, scaler: Any, namespace: str
) -> None:
    """Planned for 400 requests in flight (2 × 2 L40S), the engines carry none: after the idle
    period mmop moves the model onto the cheapest plan that still scales to the peak, rolls the
    Deployment, and records why; a spec edit plans for spec.workload again."""
    name = "idle"
    manifest = model(name)
    manifest["spec"]["model"] = {"id": "llava-hf/llava-1.5-7b-hf"}
    manifest["spec"]["workload"]["concurrency"] = 400
    manifest["spec"]["scaling"]["maxReplicas"] = 8
    manifest["spec"]["scaling"]["consolidation"] = {"idleSeconds": 10}
    apply_manifest(sandbox, namespace, manifest)
    first = wait_for(
        lambda: (p := (get_mm(sandbox, namespace, name).get("status") or {}).get("plan")) and p,
        "a plan",
        60,
    )
    assert first["gpusPerReplica"] == 2 and first["replicas"] == 2, first["config"]
    consolidated = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, name))
            and any(d["reason"] == "LowUtilization" for d in decisions(m))
            and m["status"]["plan"]["config"] != first["config"]
            and m
        ),
        "a consolidation re-plan",
        120,
    )
    status = consolidated["status"]
    plan = status["plan"]
    assert plan["gpusPerReplica"] == 1 and plan["replicas"] == 1
    assert plan["costPerHourUsd"] < first["costPerHourUsd"] / 2
    assert "carry spec.workload's peak" in plan["explanation"]
    memory = status["autoscaler"]
    assert memory["demand"] == 1  # nothing in flight: one request's worth
    assert memory["demandGeneration"] == consolidated["metadata"]["generation"]
    assert memory["peakCostPerHourUsd"] == first["costPerHourUsd"]
    assert len(memory["replans"]) == 1
    entry = next(d for d in decisions(consolidated) if d["reason"] == "LowUtilization")
    assert entry["action"] == "Replan" and plan["config"] in entry["message"]
    dep = wait_for(
        lambda: (
            (d := deployment(sandbox, namespace, name))
            and d["spec"]["template"]["metadata"]["annotations"]["mmop.dev/template-hash"]
            == plan["templateHash"]
            and d
        ),
        "the Deployment rolled to the consolidated plan",
        60,
    )
    assert dep["spec"]["replicas"] == 1
    limits = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    # A spec edit is a new statement of the workload: the plan is for its peak again.
    kubectl(
        sandbox, "patch", "mmm", name, "-n", namespace, "--type=merge", "-p",
        json.dumps({"spec": {"workload": {"concurrency": 401}}}),
    )  # fmt: skip
    wait_for(
        lambda: get_mm(sandbox, namespace, name)["status"]["plan"]["gpusPerReplica"] == 2,
        "the plan for the peak after the edit",
        60,
    )


def test_a_refused_scale_is_shown_and_not_recorded_as_a_change(
    sandbox: SandboxState, scaler: Any, namespace: str
) -> None:
    """R2: a scale the API server refuses (the chart's RBAC lacked patch on deployments/scale)
    was recorded as a change that never happened — its cooldown and reversal count then acted
    on it — and nothing reached status or Events. Here an admission policy refuses every
    scale in the namespace while the engines saturate."""
    scaler.config = scaler.config.model_copy(update={"prometheus_url": None})
    policy = f"deny-scale-{namespace}"
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["UPDATE"],
                            "resources": ["deployments/scale"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "injected scale fault"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]
    kubectl(sandbox, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))
    name = "refused"
    try:
        apply_manifest(sandbox, namespace, model(name))
        wait_for(lambda: len(ready_pod_urls(sandbox, namespace, name)) == 1, "one replica", 120)
        with Load(sandbox, namespace, name, clients=12):

            def degraded() -> dict[str, Any] | None:
                mm = get_mm(sandbox, namespace, name)
                for c in mm["status"].get("conditions") or []:
                    if c["type"] == "Degraded" and c["reason"] == "ScaleRefused":
                        return mm
                return None

            mm = wait_for(degraded, "Degraded=True, ScaleRefused", 90)
        assert replicas(sandbox, namespace, name) == 1
        saved = mm["status"].get("autoscaler") or {}
        assert not saved.get("lastChangeTime"), saved  # no change recorded
        assert any(d["reason"] == "ScaleRefused" for d in decisions(mm)), decisions(mm)
        events = json.loads(kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json"))
        assert any(e["reason"] == "ScaleRefused" for e in events["items"])
    finally:
        kubectl(sandbox, "delete", "validatingadmissionpolicybinding", policy)
        kubectl(sandbox, "delete", "validatingadmissionpolicy", policy)
