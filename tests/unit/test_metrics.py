"""vLLM metrics: the pinned vLLM's real /metrics text (golden, captured under KV-cache pressure
by `python -m e2e.engine golden`) and the stand-in's, parsed into per-pod scrapes and Signals."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmop.metrics import (
    METRICS,
    Histogram,
    MetricsParseError,
    Scrape,
    family_names,
    histogram_quantile,
    parse_exposition,
    signals,
)
from mmop.vllm import PINNED_VLLM_VERSION

GOLDEN = Path(__file__).parent / "golden"
PINNED = GOLDEN / f"vllm-{PINNED_VLLM_VERSION}"
STAND_IN = GOLDEN / "llm-d-inference-sim-0.10.2-metrics.txt"


def golden(name: str) -> Scrape:
    times = json.loads((PINNED / "times.json").read_text())
    return parse_exposition((PINNED / f"metrics-{name}.txt").read_text(), "pod-0", times[name])


def raw(name: str, sample: str) -> float:
    """A sample's value read straight from the golden text (one label set per sample here)."""
    pattern = re.compile(rf"^{re.escape(sample)}(?:{{[^}}]*}})? (\S+)$", re.M)
    values = pattern.findall((PINNED / f"metrics-{name}.txt").read_text())
    assert len(values) == 1, (sample, values)
    return float(values[0])


def test_the_golden_exposition_is_from_the_pinned_vllm() -> None:
    # A new pin needs a new golden: `python -m e2e.engine golden tests/unit/golden/vllm-<pin>`.
    assert PINNED.is_dir(), f"no golden exposition for vLLM {PINNED_VLLM_VERSION}"
    source = json.loads((PINNED / "source.json").read_text())
    assert source["vllm"] == PINNED_VLLM_VERSION


def test_every_name_mmop_reads_is_in_the_pinned_exposition() -> None:
    names = family_names((PINNED / "metrics-loaded.txt").read_text())
    missing = [m.name for m in METRICS if m.name not in names]
    assert missing == []
    # Names of older releases that the pinned vLLM no longer writes.
    assert "vllm:gpu_cache_usage_perc" not in names
    assert "vllm:time_per_output_token_seconds" not in names


@pytest.mark.parametrize("name", ["idle", "loaded", "after"])
def test_what_the_pinned_vllm_writes_is_valid(name: str) -> None:
    assert golden(name).invalid == ()
    assert parse_exposition(STAND_IN.read_text(), "sim", 0.0).invalid == ()


def test_idle_server_reads_as_zeros() -> None:
    idle = golden("idle")
    assert idle.gauges == {"kv_cache_usage": 0.0, "requests_running": 0.0, "requests_waiting": 0.0}
    assert set(idle.counters) == {
        "preemptions",
        "prompt_tokens",
        "generation_tokens",
        "request_success",
        "mm_cache_queries",
        "mm_cache_hits",
    }
    assert all(v == 0.0 for v in idle.counters.values())
    assert set(idle.histograms) == {"ttft", "itl", "tpot", "e2e", "inference_time"}
    assert all(h.count == 0 for h in idle.histograms.values())


def test_loaded_server_reads_a_full_kv_cache_and_a_queue() -> None:
    loaded = golden("loaded")
    assert loaded.gauges == {
        "kv_cache_usage": raw("loaded", "vllm:kv_cache_usage_perc"),
        "requests_running": raw("loaded", "vllm:num_requests_running"),
        "requests_waiting": raw("loaded", "vllm:num_requests_waiting"),
    }
    # two ~1,660-token requests hold at least 26 of the 31 usable 128-token blocks
    assert loaded.gauges["kv_cache_usage"] >= 26 / 31
    assert loaded.gauges["requests_waiting"] >= 1
    assert loaded.counters["mm_cache_queries"] == 16  # 4 requests × 4 images, all distinct
    assert loaded.counters["mm_cache_hits"] == 0
    ttft = loaded.histograms["ttft"]
    assert ttft.count == raw("loaded", "vllm:time_to_first_token_seconds_count")
    assert ttft.sum == raw("loaded", "vllm:time_to_first_token_seconds_sum")
    assert ttft.buckets[-1] == (math.inf, ttft.count)


def test_signals_over_the_pressure_run() -> None:
    idle, after = golden("idle"), golden("after")
    window = after.time_seconds - idle.time_seconds
    s = signals([idle], [after])
    assert s.pods == 1
    assert s.window_seconds == pytest.approx(window)
    assert s.preemptions_per_second == pytest.approx(
        raw("after", "vllm:num_preemptions_total") / window
    )
    assert s.preemptions_per_second > 0  # the pressure run preempted
    assert s.requests_per_second == pytest.approx(4 / window)
    assert s.prompt_tokens_per_second == pytest.approx(after.counters["prompt_tokens"] / window)
    assert s.generation_tokens_per_second == pytest.approx(4 * 380 / window)
    assert s.mm_cache_hit_rate == 0.0
    assert s.kv_cache_usage_max == 0.0 and s.requests_waiting == 0.0  # all finished
    for name in ("ttft", "itl", "tpot", "e2e"):
        p50, p95 = getattr(s, f"{name}_p50_seconds"), getattr(s, f"{name}_p95_seconds")
        assert p50 is not None and p95 is not None
        assert 0 < p50 <= p95
    # every request took between one and ten seconds end to end; each token well under 0.1 s
    assert s.e2e_p50_seconds is not None and 1.0 <= s.e2e_p50_seconds <= 10.0
    assert s.itl_p95_seconds is not None and s.itl_p95_seconds < 0.1


def test_signals_while_loaded() -> None:
    loaded = golden("loaded")
    s = signals([golden("idle")], [loaded])
    assert s.kv_cache_usage_mean == s.kv_cache_usage_max == loaded.gauges["kv_cache_usage"]
    assert s.requests_running == loaded.gauges["requests_running"]
    assert s.requests_waiting == loaded.gauges["requests_waiting"]
    finished = raw("loaded", "vllm:e2e_request_latency_seconds_count")
    # latency quantiles exist exactly when a request finished inside the window
    assert (s.e2e_p95_seconds is None) == (finished == 0)
    assert s.ttft_p50_seconds is not None  # the running requests had their first token


def test_the_stand_in_server_is_read_through_documented_aliases() -> None:
    text = STAND_IN.read_text()
    scrape = parse_exposition(text, "sim", 1.0)
    assert set(scrape.gauges) == {"kv_cache_usage", "requests_running", "requests_waiting"}
    assert "tpot" in scrape.histograms  # vllm:time_per_output_token_seconds, the older name
    assert "preemptions" not in scrape.counters and "mm_cache_queries" not in scrape.counters
    s = signals([scrape], [Scrape(pod="sim", time_seconds=2.0, counters=dict(scrape.counters))])
    assert s.preemptions_per_second is None and s.mm_cache_hit_rate is None


def test_the_pinned_name_wins_over_its_alias() -> None:
    text = "\n".join(
        [
            "# TYPE vllm:time_per_output_token_seconds histogram",
            'vllm:time_per_output_token_seconds_bucket{le="+Inf"} 7',
            "vllm:time_per_output_token_seconds_sum 7",
            "vllm:time_per_output_token_seconds_count 7",
            "# TYPE vllm:request_time_per_output_token_seconds histogram",
            'vllm:request_time_per_output_token_seconds_bucket{le="+Inf"} 2',
            "vllm:request_time_per_output_token_seconds_sum 1",
            "vllm:request_time_per_output_token_seconds_count 2",
            "",
        ]
    )
    assert parse_exposition(text, "p", 0.0).histograms["tpot"].count == 2


@pytest.mark.parametrize(
    "text",
    ["", "<html><body>502 Bad Gateway</body></html>\n", 'vllm:kv_cache_usage_perc{a="b" 1\n'],
)
def test_garbage_is_a_clear_error(text: str) -> None:
    with pytest.raises(MetricsParseError, match="exposition"):
        parse_exposition(text, "p", 0.0)


def test_an_exposition_without_vllm_metrics_gives_no_signals() -> None:
    text = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n"
    before, after = parse_exposition(text, "p", 0.0), parse_exposition(text, "p", 10.0)
    s = signals([before], [after])
    assert s.pods == 1 and s.unusable_pods == 0
    counts = {"pods", "unusable_pods", "window_seconds", "finished_per_pod"}
    assert s.model_dump(exclude=counts) == dict.fromkeys(s.model_dump(exclude=counts))
    assert s.finished_per_pod == {}


def _pod(
    name: str, t: float, *, kv: float, waiting: float, preempted: float, ttft: list[float]
) -> Scrape:
    bounds = (0.1, 0.5, 1.0, math.inf)
    buckets = tuple((le, float(sum(1 for x in ttft if x <= le))) for le in bounds)
    return Scrape(
        pod=name,
        time_seconds=t,
        gauges={"kv_cache_usage": kv, "requests_running": 1.0, "requests_waiting": waiting},
        counters={"preemptions": preempted},
        histograms={"ttft": Histogram(buckets, sum(ttft), float(len(ttft)))},
    )


def test_signals_over_several_pods() -> None:
    before = [
        _pod("a", 0.0, kv=0.1, waiting=0, preempted=5, ttft=[0.05]),
        _pod("b", 1.0, kv=0.1, waiting=0, preempted=0, ttft=[]),
    ]
    after = [
        _pod("a", 10.0, kv=0.5, waiting=1, preempted=25, ttft=[0.05, 0.3, 0.3]),
        _pod("b", 11.0, kv=0.9, waiting=3, preempted=10, ttft=[0.7, 0.8]),
        _pod("c", 11.0, kv=0.2, waiting=0, preempted=99, ttft=[0.05]),  # new: gauges only
    ]
    s = signals(before, after)
    assert s.pods == 3
    assert s.kv_cache_usage_max == pytest.approx(0.9)
    assert s.kv_cache_usage_mean == pytest.approx((0.5 + 0.9 + 0.2) / 3)
    assert s.requests_waiting == 4 and s.requests_running == 3
    assert s.preemptions_per_second == pytest.approx(20 / 10 + 10 / 10)
    # window observations: a has 0.3, 0.3 (0.1-0.5 bucket), b has 0.7, 0.8 (0.5-1 bucket)
    # p50: rank 2 of 4 ends the 0.1-0.5 bucket -> 0.5; p95: rank 3.8 in 0.5-1 -> 0.5 + 0.5*1.8/2
    assert s.ttft_p50_seconds == pytest.approx(0.5)
    assert s.ttft_p95_seconds == pytest.approx(0.95)


def test_each_pod_scraped_at_both_ends_has_its_own_finished_rate() -> None:
    def pod(name: str, t: float, done: float) -> Scrape:
        return Scrape(pod=name, time_seconds=t, counters={"request_success": done})

    s = signals(
        [pod("a", 0.0, 10), pod("b", 5.0, 0)],
        [pod("a", 10.0, 43), pod("b", 10.0, 16), pod("c", 10.0, 7)],
    )
    assert s.finished_per_pod == {"a": pytest.approx(3.3), "b": pytest.approx(3.2)}
    assert s.requests_per_second == pytest.approx(6.5)  # "c" has no start: in neither


def test_the_time_requests_ran_is_the_engines_own_mean_over_the_window() -> None:
    def pod(name: str, t: float, total: float, count: float) -> Scrape:
        hist = Histogram(((1.0, count), (math.inf, count)), total, count)
        return Scrape(pod=name, time_seconds=t, histograms={"inference_time": hist})

    s = signals(
        [pod("a", 0.0, 10.0, 20), pod("b", 0.0, 0.0, 0)],
        [pod("a", 30.0, 40.0, 70), pod("b", 30.0, 27.0, 50)],
    )
    assert s.running_mean_seconds == pytest.approx((30.0 + 27.0) / (50 + 50))
    idle = signals([pod("a", 0.0, 1.0, 2)], [pod("a", 30.0, 1.0, 2)])
    assert idle.running_mean_seconds is None  # nothing finished: no figure, not 0


def test_the_pinned_vllm_reports_the_time_requests_ran() -> None:
    before, after = golden("idle"), golden("after")
    assert "inference_time" in after.histograms
    s = signals([before], [after])
    assert s.running_mean_seconds is not None and s.running_mean_seconds > 0


def test_a_restarted_server_counts_from_zero() -> None:
    before = [_pod("a", 0.0, kv=0, waiting=0, preempted=100, ttft=[0.2] * 50)]
    after = [_pod("a", 10.0, kv=0, waiting=0, preempted=4, ttft=[0.7, 0.7])]
    s = signals(before, after)
    assert s.preemptions_per_second == pytest.approx(0.4)
    assert s.ttft_p50_seconds is not None and 0.5 < s.ttft_p50_seconds <= 1.0


def test_a_window_must_move_forward() -> None:
    scrape = _pod("a", 5.0, kv=0, waiting=0, preempted=0, ttft=[])
    with pytest.raises(ValueError, match="later"):
        signals([scrape], [scrape])


def test_histogram_quantile_edges() -> None:
    empty = Histogram(((1.0, 0.0), (math.inf, 0.0)), 0.0, 0.0)
    assert histogram_quantile(0.5, empty) is None
    overflow = Histogram(((1.0, 0.0), (2.0, 1.0), (math.inf, 10.0)), 50.0, 10.0)
    assert histogram_quantile(0.95, overflow) == 2.0  # in +Inf: the highest finite bound
    first = Histogram(((4.0, 10.0), (math.inf, 10.0)), 10.0, 10.0)
    assert histogram_quantile(0.5, first) == pytest.approx(2.0)  # 0 to 4, halfway
    with pytest.raises(ValueError):
        histogram_quantile(1.5, first)


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=200))
def test_quantiles_are_ordered_and_inside_the_buckets(values: list[float]) -> None:
    bounds = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, math.inf)
    buckets = tuple((le, float(sum(1 for v in values if v <= le))) for le in bounds)
    hist = Histogram(buckets, sum(values), float(len(values)))
    p50, p95 = histogram_quantile(0.5, hist), histogram_quantile(0.95, hist)
    assert p50 is not None and p95 is not None
    assert 0.0 <= p50 <= p95 <= 10.0
    # the true quantile lies in the same bucket as the estimate
    true95 = sorted(values)[max(0, math.ceil(0.95 * len(values)) - 1)]
    lower = max([b for b in (0.0, *bounds) if b < true95], default=0.0)
    assert p95 >= lower or true95 > 10.0
