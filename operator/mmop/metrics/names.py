"""The vLLM metric names mmop reads: one table, for the pinned vLLM release.

Names are the Prometheus family names (counters without ``_total``, histograms without
``_bucket``/``_sum``/``_count``), exactly as the pinned vLLM exposes them on ``/metrics``. A test
against the real engine (tests/engine) fails when the pinned release stops exposing one of them.

Aliases are older names for the same signal that a source other than the pinned vLLM still uses.
There is one: the sandbox's stand-in server (llm-d-inference-sim v0.10.2) exposes
``vllm:time_per_output_token_seconds`` (vLLM's name before 0.11, observed once per output token)
where the pinned vLLM exposes ``vllm:request_time_per_output_token_seconds`` (one observation per
request: its mean time per output token). The pinned name wins when both are present.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


class Combine(StrEnum):
    """How the label sets of one pod's family (e.g. one per engine) combine into one value."""

    SUM = "sum"
    MEAN = "mean"


@dataclass(frozen=True)
class MetricName:
    key: str
    name: str
    kind: Kind
    help: str
    aliases: tuple[str, ...] = ()
    combine: Combine = Combine.SUM


METRICS: tuple[MetricName, ...] = (
    MetricName(
        "kv_cache_usage",
        "vllm:kv_cache_usage_perc",
        Kind.GAUGE,
        "fraction of KV-cache blocks in use, 0-1",
        combine=Combine.MEAN,
    ),
    MetricName("requests_running", "vllm:num_requests_running", Kind.GAUGE, "requests running"),
    MetricName("requests_waiting", "vllm:num_requests_waiting", Kind.GAUGE, "requests queued"),
    MetricName("preemptions", "vllm:num_preemptions", Kind.COUNTER, "requests preempted"),
    MetricName("prompt_tokens", "vllm:prompt_tokens", Kind.COUNTER, "prefill tokens processed"),
    MetricName("generation_tokens", "vllm:generation_tokens", Kind.COUNTER, "tokens generated"),
    MetricName("request_success", "vllm:request_success", Kind.COUNTER, "requests finished"),
    MetricName("ttft", "vllm:time_to_first_token_seconds", Kind.HISTOGRAM, "time to first token"),
    MetricName(
        "itl", "vllm:inter_token_latency_seconds", Kind.HISTOGRAM, "time between output tokens"
    ),
    MetricName(
        "tpot",
        "vllm:request_time_per_output_token_seconds",
        Kind.HISTOGRAM,
        "per request: mean time per output token",
        aliases=("vllm:time_per_output_token_seconds",),
    ),
    MetricName(
        "e2e", "vllm:e2e_request_latency_seconds", Kind.HISTOGRAM, "request latency end to end"
    ),
    MetricName(
        "inference_time",
        "vllm:request_inference_time_seconds",
        Kind.HISTOGRAM,
        "time a request spent running (the RUNNING phase, queueing excluded)",
    ),
    MetricName(
        "mm_cache_queries", "vllm:mm_cache_queries", Kind.COUNTER, "multimodal cache lookups"
    ),
    MetricName("mm_cache_hits", "vllm:mm_cache_hits", Kind.COUNTER, "multimodal cache hits"),
)

BY_KEY: dict[str, MetricName] = {m.key: m for m in METRICS}


def exposed_names(metric: MetricName) -> tuple[str, ...]:
    """The sample names the pinned vLLM writes for one metric (``_total`` for counters, etc.)."""
    if metric.kind is Kind.COUNTER:
        return (metric.name + "_total",)
    if metric.kind is Kind.HISTOGRAM:
        return tuple(metric.name + s for s in ("_bucket", "_sum", "_count"))
    return (metric.name,)
