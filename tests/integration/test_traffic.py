"""The autoscaler under real traffic: NVIDIA's AIPerf (from the load venv, `python -m e2e.load
install`) replays a step of chat requests with an image each, through a round-robin gateway, to
stand-in engines at the pod addresses of a MultimodalModel; the operator scrapes them, scales out
to several replicas, brings TTFT back under the SLO, and scales in while traffic still flows
without dropping a request. A missing load venv is a failure, not a skip."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.load.fleet import FleetRecorder, reversals
from e2e.load.gateway import Gateway, ready_pod_urls
from e2e.load.patterns import burst, generated_trace, lead_in, sinusoid, step, write_trace
from e2e.load.runner import LoadRun, quantile, read_results
from e2e.load.venv import png, require
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import (
    apply_manifest,
    get_mm,
    in_process_operator,
    kubectl,
)

# Each stand-in runs 2 requests at once: 200 ms to the first token, then 40 ms per token; with
# 10 output tokens a replica serves about 3 requests a second before requests queue. Its KV cache
# holds 10 blocks of 16 tokens; a request here takes 4 (about 50 prompt and 10 output tokens), so
# two running requests fill it to 0.8 (saturated) and KV usage tracks the load, as in vLLM.
SIM_ANNOTATIONS = {
    "sandbox.mmop.dev/time-to-first-token": "200",
    "sandbox.mmop.dev/inter-token-latency": "40",
    "sandbox.mmop.dev/kv-cache-blocks": "10",
    "sandbox.mmop.dev/sim-args": "--max-num-seqs=2",
}
OUTPUT_TOKENS = 10
SLO_TTFT_SECONDS = 1.0
WINDOW_SECONDS = 6
MAX_REPLICAS = 6
# 1 req/s, a step to 12 req/s (about 4 replicas' worth) for 50 s, then 1.5 req/s while the
# fleet scales back in.
STEP_AT, STEP_HOLD = 10.0, 50.0
PATTERN = step(1.0, 12.0, at=STEP_AT, hold=STEP_HOLD, after=45, end_rate=1.5)


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState) -> Iterator[Any]:
    """The operator in-process (autoscaler tick 2 s, tests/conftest.py), engines that queue."""
    with in_process_operator(sandbox, SIM_ANNOTATIONS, autoscale_interval_seconds=2) as state:
        yield state


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"id": "Qwen/Qwen2-VL-2B-Instruct"},
            "workload": {
                "images": {"perRequest": 1, "maxWidth": 640, "maxHeight": 480},
                "slo": {"ttftP95Seconds": SLO_TTFT_SECONDS},
            },
            "scaling": {
                "minReplicas": 1,
                "maxReplicas": MAX_REPLICAS,
                "behavior": {
                    "windowSeconds": WINDOW_SECONDS,
                    "scaleUpCooldownSeconds": 4,
                    "scaleDownStabilizationSeconds": 20,
                    "scaleDownCooldownSeconds": 6,
                },
            },
        },
    }


def _time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_step_load_from_aiperf_scales_out_meets_the_slo_and_scales_in_without_drops(
    sandbox: SandboxState, operator: Any, namespace: str, api_client: Any, tmp_path: Path
) -> None:
    venv = require()  # raises (fails) when the load venv is missing
    name = "traffic"
    apply_manifest(sandbox, namespace, model(name))
    wait_for(lambda: len(ready_pod_urls(api_client, namespace, name)) == 1, "a Ready replica", 120)

    arrivals = PATTERN.arrivals(seed=1)
    trace = write_trace(tmp_path / "trace.jsonl", arrivals, venv.image_files(), seed=1)
    recorder = FleetRecorder(api_client, namespace, name, interval=0.5)
    with recorder, Gateway(lambda: ready_pod_urls(api_client, namespace, name)) as gateway:
        run = LoadRun(
            gateway.url,
            name,
            trace,
            tmp_path / "aiperf",
            first_arrival_seconds=arrivals[0],
            output_tokens=OUTPUT_TOKENS,
            venv=venv,
        ).start()
        result = run.wait(timeout=PATTERN.duration_seconds + 120)
        # Back to one replica, with the fleet still watched.
        wait_for(lambda: recorder.samples and recorder.samples[-1].desired == 1, "scale-in", 120)

    log = result.log_tail()
    assert result.returncode == 0, log
    t0 = result.schedule_start
    step_at, step_end = t0 + STEP_AT, t0 + STEP_AT + STEP_HOLD
    load_end = t0 + PATTERN.duration_seconds
    diagnostics = {
        "changes": str([(round(t - t0, 1), a, b) for t, a, b in recorder.changes()]),
        "by_backend": {u: b.answered for u, b in gateway.stats.backends.items()},
        "retried": gateway.stats.retried,
        "removed_while_busy": gateway.stats.removed_while_busy,
    }

    # Every request was sent and answered: none failed, at the generator or at the gateway.
    assert len(result.records) == len(arrivals), (len(result.records), len(arrivals), log)
    assert not result.failed(), [r.error for r in result.failed()][:5]
    assert not gateway.stats.failures and gateway.stats.no_backend == 0, gateway.stats.failures

    # Scale-up begins within one window of the load rising (so within one window of the
    # replicas saturating, which comes later).
    first_up = recorder.first(lambda s: s.desired > 1, after=step_at)
    assert first_up is not None, diagnostics
    assert first_up.time - step_at <= WINDOW_SECONDS, diagnostics

    # Several replicas, and the new ones took traffic.
    assert recorder.max_desired() >= 3, diagnostics
    answered = [u for u, b in gateway.stats.backends.items() if b.answered > 0]
    assert len(answered) >= 3, diagnostics

    # TTFT p95 back under the SLO for the last 20 s of the step.
    late_p95 = result.ttft_p95_between(step_end - 20, step_end)
    assert late_p95 is not None and late_p95 < SLO_TTFT_SECONDS, (late_p95, diagnostics)

    # The scale-in began while requests were still flowing, and dropped none (checked above).
    mm = get_mm(sandbox, namespace, name)
    decisions = mm["status"].get("decisions") or []
    downs = [d for d in decisions if d["action"] == "ScaleDown"]
    assert downs and all(d["reason"] == "SpareCapacity" for d in downs), decisions
    assert _time(downs[0]["time"]) < load_end, (decisions, diagnostics)
    # At most 2 direction reversals, as the operator counted them and as the fleet moved.
    assert len((mm["status"].get("autoscaler") or {}).get("reversals") or []) <= 2
    assert reversals(recorder.changes()) <= 2, diagnostics
    events = json.loads(kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json"))
    reasons = {e["reason"] for e in events["items"]}
    assert reasons & {"Saturated", "LowSpareCapacity", "SloMissed", "DemandForecast"}, reasons
    assert "SpareCapacity" in reasons, reasons


# ---------------------------------------------------------------------------- the patterns
@pytest.mark.parametrize(
    "pattern",
    [
        step(2, 8, at=10, hold=20, after=10),
        burst(2, 12, at=5, length=5, duration=40, bursts=2),
        sinusoid(5, 20, period=150, duration=150),
        generated_trace(duration=120),
    ],
    ids=lambda p: p.name,
)
def test_patterns_draw_their_rate_reproducibly(pattern: Any) -> None:
    a, b = pattern.arrivals(seed=3), pattern.arrivals(seed=3)
    assert a == b and a != pattern.arrivals(seed=4)
    assert a == sorted(a) and a[0] >= 0 and a[-1] < pattern.duration_seconds
    expected = pattern.expected_requests()
    # Poisson (and gamma-gap) counts: within 5 standard deviations of the mean (√(n/k)).
    assert abs(len(a) - expected) <= 5 * (expected / pattern.shape) ** 0.5, (len(a), expected)


def test_the_sinusoid_swings_between_its_bounds_and_the_step_rises_where_it_says() -> None:
    wave = sinusoid(5, 20, period=150, duration=300)
    assert wave.rate(0) == pytest.approx(5) and wave.rate(75) == pytest.approx(20)
    assert wave.peak_rate() == pytest.approx(20, abs=0.01)
    arrivals = wave.arrivals(seed=0)
    trough = sum(1 for t in arrivals if t < 25) / 25
    crest = sum(1 for t in arrivals if 62.5 <= t < 87.5) / 25
    assert crest > 2.5 * trough
    s = step(1, 10, at=20, hold=30, after=10)
    assert s.increase_at_seconds == 20 and s.rate(19.9) == 1 and s.rate(20) == 10
    assert s.rate(50) == 1


def test_a_lead_in_holds_the_opening_rate_then_plays_the_pattern_shifted() -> None:
    wave = sinusoid(5, 20, period=150, duration=300)
    led = lead_in(wave, 120)
    assert led.duration_seconds == 420 and led.increase_at_seconds == 120
    assert led.rate(0) == led.rate(119.9) == pytest.approx(5)
    assert led.rate(120 + 75) == pytest.approx(wave.rate(75)) == pytest.approx(20)
    arrivals = led.arrivals(seed=2)
    opening = sum(1 for t in arrivals if t < 120) / 120
    assert 4 < opening < 6  # about 5 req/s, 600 requests: within ~4 standard deviations
    s = step(3, 15, at=20, hold=60, after=40)
    assert lead_in(s, 0) is s and lead_in(s, 60).increase_at_seconds == 80


def test_the_trace_file_is_aiperf_single_turn_with_one_image_per_request(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png(8, 6, 1))
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = write_trace(tmp_path / "t.jsonl", [0.0, 0.5, 1.25], [image])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["timestamp"] for line in lines] == [0.0, 500.0, 1250.0]
    assert all(line["image"] == str(image) and line["text"] for line in lines)


def test_results_are_read_from_aiperf_per_request_export(tmp_path: Path) -> None:
    rows = [
        {
            "metadata": {"credit_issued_ns": 10_000_000_000, "request_start_ns": 10_001_000_000,
                         "request_end_ns": 10_501_000_000},
            "metrics": {"time_to_first_token": {"value": 200.0, "unit": "ms"},
                        "request_latency": {"value": 500.0, "unit": "ms"}},
        },
        {
            "metadata": {"credit_issued_ns": 12_000_000_000, "request_start_ns": 12_000_000_000},
            "metrics": {},
            "error": {"code": 502, "type": "Bad Gateway", "message": "upstream"},
        },
    ]  # fmt: skip
    (tmp_path / "profile_export.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = read_results(tmp_path, 0, first_arrival=0.25)
    assert result.schedule_start == pytest.approx(9.75)
    assert [r.ttft_seconds for r in result.records] == [pytest.approx(0.2), None]
    assert len(result.failed()) == 1 and "Bad Gateway" in (result.failed()[0].error or "")
    assert result.ttft_p95_between(10, 11) == pytest.approx(0.2)
    assert quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == 10
