"""Signals: what the autoscaler needs to know about a model's pods over a window, from two scrapes.

Pure: ``signals(before, after)`` takes the scrapes of one or more pods at the start and at the end
of a window (``parse_exposition`` results) and returns one ``Signals``. Gauges are read at the
end; counters become per-second rates and histograms become quantiles of the observations made
inside the window (bucket deltas, summed over pods, interpolated as Prometheus'
``histogram_quantile`` does). A pod with no scrape at the start counts for gauges only. A counter
that went down (the server restarted) counts from zero, as Prometheus' ``rate`` does.
Everything a source does not expose is None, never a guess.

A scrape holding a value the pinned vLLM cannot report (``exposition.invalid_values``: NaN, ±Inf,
negative, …) is left out: at the end of the window its pod is counted in ``unusable_pods``, not
in ``pods``; at the start, its pod counts for gauges only. So no such value reaches a Signals.
The caller adds the pods whose scrape failed outright (``unusable=``, e.g.
``len(ScrapeResult.failures)``), so ``pods == 0`` with ``unusable_pods > 0`` says that pods were
scraped and none of their metrics was usable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from mmop.metrics.exposition import (
    Histogram,
    Scrape,
    histogram_quantile,
    invalid_values,
    merge_histograms,
)

LATENCIES = ("ttft", "itl", "tpot", "e2e")


class Signals(BaseModel):
    """A model's serving state over one window, summed or averaged over its pods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pods: int = Field(ge=0, description="pods with a usable scrape at the end of the window")
    unusable_pods: int = Field(
        default=0,
        ge=0,
        description="pods scraped but left out: the scrape failed or held a value the pinned "
        "vLLM cannot report",
    )
    window_seconds: float | None = Field(
        default=None, ge=0, description="mean length of the pods' windows"
    )
    kv_cache_usage_mean: float | None = Field(
        default=None, ge=0, le=1, description="KV-cache blocks in use, mean over pods (0-1)"
    )
    kv_cache_usage_max: float | None = Field(
        default=None, ge=0, le=1, description="KV-cache blocks in use, fullest pod (0-1)"
    )
    requests_running: float | None = Field(default=None, ge=0, description="running, all pods")
    requests_waiting: float | None = Field(default=None, ge=0, description="queued, all pods")
    preemptions_per_second: float | None = Field(default=None, ge=0)
    requests_per_second: float | None = Field(default=None, ge=0, description="finished")
    finished_per_pod: dict[str, float] = Field(
        default_factory=dict,
        description="requests finished per second by each pod scraped at both ends of the "
        "window (a pod with no scrape at the start has none: its finished requests are not in "
        "requests_per_second either)",
    )
    prompt_tokens_per_second: float | None = Field(default=None, ge=0)
    generation_tokens_per_second: float | None = Field(default=None, ge=0)
    ttft_p50_seconds: float | None = Field(default=None, ge=0, description="time to first token")
    ttft_p95_seconds: float | None = Field(default=None, ge=0)
    itl_p50_seconds: float | None = Field(default=None, ge=0, description="inter-token latency")
    itl_p95_seconds: float | None = Field(default=None, ge=0)
    tpot_p50_seconds: float | None = Field(
        default=None, ge=0, description="per request mean time per output token"
    )
    tpot_p95_seconds: float | None = Field(default=None, ge=0)
    e2e_p50_seconds: float | None = Field(default=None, ge=0, description="request latency")
    e2e_p95_seconds: float | None = Field(default=None, ge=0)
    running_mean_seconds: float | None = Field(
        default=None,
        ge=0,
        description="mean time the requests finished in the window spent running "
        "(vllm:request_inference_time_seconds: sum over count)",
    )
    mm_cache_hit_rate: float | None = Field(
        default=None, ge=0, le=1, description="multimodal cache hits / lookups in the window"
    )


def _counter_delta(before: Scrape, after: Scrape, key: str) -> float | None:
    if key not in after.counters or key not in before.counters:
        return None
    now, then = after.counters[key], before.counters[key]
    return now if now < then else now - then


def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) if present else None


def signals(before: Sequence[Scrape], after: Sequence[Scrape], unusable: int = 0) -> Signals:
    """Signals of the pods in ``after`` over the window since their scrape in ``before``
    (scrapes with invalid values left out); ``unusable``: pods whose scrape failed outright."""
    usable = [s for s in after if not invalid_values(s)]
    unusable_pods = unusable + len(after) - len(usable)
    after = usable
    start = {s.pod: s for s in before if not invalid_values(s)}
    pairs = [(start[s.pod], s) for s in after if s.pod in start]
    windows = [b_after.time_seconds - b.time_seconds for b, b_after in pairs]
    if any(not 0 < w < math.inf for w in windows):
        raise ValueError("every pod's end scrape must be later than its start scrape")

    usage = [s.gauges["kv_cache_usage"] for s in after if "kv_cache_usage" in s.gauges]
    values: dict[str, float | None] = {
        "kv_cache_usage_mean": math.fsum(usage) / len(usage) if usage else None,
        "kv_cache_usage_max": max(usage) if usage else None,
        "requests_running": _sum([s.gauges.get("requests_running") for s in after]),
        "requests_waiting": _sum([s.gauges.get("requests_waiting") for s in after]),
    }

    def rate(key: str) -> float | None:
        parts = [
            (delta / w)
            for (b, a), w in zip(pairs, windows, strict=True)
            if (delta := _counter_delta(b, a, key)) is not None
        ]
        try:
            return math.fsum(parts) if parts else None
        except OverflowError:  # only over a vanishing window; such a rate is no signal
            return None

    per_pod = {
        a.pod: delta / w
        for (b, a), w in zip(pairs, windows, strict=True)
        if (delta := _counter_delta(b, a, "request_success")) is not None
        and math.isfinite(delta / w)
    }
    values["preemptions_per_second"] = rate("preemptions")
    values["requests_per_second"] = rate("request_success")
    values["prompt_tokens_per_second"] = rate("prompt_tokens")
    values["generation_tokens_per_second"] = rate("generation_tokens")

    for key in LATENCIES:
        deltas: list[Histogram] = [
            a.histograms[key].minus(b.histograms[key])
            for b, a in pairs
            if key in a.histograms and key in b.histograms
        ]
        merged = merge_histograms(deltas)
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            values[f"{key}_{label}_seconds"] = (
                histogram_quantile(q, merged) if merged is not None else None
            )

    running = merge_histograms(
        [
            a.histograms["inference_time"].minus(b.histograms["inference_time"])
            for b, a in pairs
            if "inference_time" in a.histograms and "inference_time" in b.histograms
        ]
    )
    values["running_mean_seconds"] = (
        running.sum / running.count if running is not None and running.count > 0 else None
    )

    queries = _sum([_counter_delta(b, a, "mm_cache_queries") for b, a in pairs])
    hits = _sum([_counter_delta(b, a, "mm_cache_hits") for b, a in pairs])
    values["mm_cache_hit_rate"] = min(1.0, hits / queries) if queries and hits is not None else None
    # Valid inputs give finite values; a rate over a vanishing window could still overflow.
    finite = {k: v if v is None or math.isfinite(v) else None for k, v in values.items()}
    return Signals(
        pods=len(after),
        unusable_pods=unusable_pods,
        window_seconds=math.fsum(windows) / len(windows) if windows else None,
        finished_per_pod=per_pod,
        **finite,
    )
