"""Parse one vLLM ``/metrics`` text exposition into a per-pod ``Scrape``.

Pure: the caller fetches the text and says which pod it came from and when; nothing here does
I/O or reads a clock. Families are found by the names in ``names.METRICS`` (aliases included);
label sets of one family (several engines or models in one server) are combined per the table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mmop.metrics.names import METRICS, Combine, Kind, MetricName


class MetricsParseError(ValueError):
    """The text is not a Prometheus text exposition (or holds no samples at all)."""


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (the last bound is +Inf), with sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier`` (a reset — counts going down — starts over)."""
        before = dict(earlier.buckets)
        if self.count < earlier.count or any(
            count < before.get(le, 0.0) for le, count in self.buckets
        ):
            return self
        return Histogram(
            buckets=tuple((le, count - before.get(le, 0.0)) for le, count in self.buckets),
            sum=self.sum - earlier.sum,
            count=self.count - earlier.count,
        )


@dataclass(frozen=True)
class Scrape:
    """One pod's metrics at one moment, keyed by ``MetricName.key``; absent metrics are absent."""

    pod: str
    time_seconds: float
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)


def _families(text: str) -> list[Metric]:
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as err:
        first = next((ln for ln in text.splitlines() if ln.strip()), "")[:80]
        raise MetricsParseError(
            f"not a Prometheus text exposition ({err}); it starts with {first!r}"
        ) from err
    if not any(f.samples for f in families):
        raise MetricsParseError("the exposition holds no samples")
    return families


def _combine(values: list[float], how: Combine) -> float:
    total = math.fsum(values)
    return total / len(values) if how is Combine.MEAN else total


def _gauge_or_counter(family: Metric, metric: MetricName) -> float | None:
    wanted = family.name + "_total" if metric.kind is Kind.COUNTER else family.name
    values = [s.value for s in family.samples if s.name in (wanted, family.name)]
    return _combine(values, metric.combine) if values else None


def _histogram(family: Metric) -> Histogram | None:
    buckets: dict[float, float] = {}
    total = count = 0.0
    seen = False
    for s in family.samples:
        if s.name == family.name + "_bucket":
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
            seen = True
        elif s.name == family.name + "_sum":
            total += s.value
        elif s.name == family.name + "_count":
            count += s.value
    if not seen:
        return None
    return Histogram(buckets=tuple(sorted(buckets.items())), sum=total, count=count)


def parse_exposition(text: str, pod: str, time_seconds: float) -> Scrape:
    """Parse ``text`` (what ``GET /metrics`` answered) as pod ``pod`` at ``time_seconds``.

    Raises MetricsParseError when the text is not an exposition. Metrics the table names but the
    text lacks are simply absent from the Scrape (the signals that need them are then None).
    """
    by_name: dict[str, Metric] = {f.name: f for f in _families(text)}
    scrape = Scrape(pod=pod, time_seconds=time_seconds)
    for metric in METRICS:
        names = [metric.name, *metric.aliases]
        if metric.kind is Kind.COUNTER:  # an untyped counter keeps its _total in the family name
            names += [n + "_total" for n in names]
        family = next((by_name[n] for n in names if n in by_name), None)
        if family is None:
            continue
        if metric.kind is Kind.HISTOGRAM:
            hist = _histogram(family)
            if hist is not None:
                scrape.histograms[metric.key] = hist
            continue
        value = _gauge_or_counter(family, metric)
        if value is None:
            continue
        target = scrape.gauges if metric.kind is Kind.GAUGE else scrape.counters
        target[metric.key] = value
    return scrape


def family_names(text: str) -> set[str]:
    """Every family name in an exposition (for checks that a source exposes what mmop reads)."""
    return {f.name for f in _families(text)}


def merge_histograms(parts: Iterable[Histogram]) -> Histogram | None:
    """Sum histograms with the same bounds (bounds only in some parts count as zero elsewhere)."""
    parts = list(parts)
    if not parts:
        return None
    buckets: dict[float, float] = {}
    for h in parts:
        for le, count in h.buckets:
            buckets[le] = buckets.get(le, 0.0) + count
    return Histogram(
        buckets=tuple(sorted(buckets.items())),
        sum=math.fsum(h.sum for h in parts),
        count=math.fsum(h.count for h in parts),
    )


def histogram_quantile(q: float, hist: Histogram) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket that holds rank
    q·count; a rank in the +Inf bucket gives the highest finite bound. None with no observations."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    if not hist.buckets or hist.buckets[-1][0] != math.inf:
        return None
    total = hist.buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for i, (le, count) in enumerate(hist.buckets):
        if count >= rank:
            if le == math.inf:
                return hist.buckets[i - 1][0] if i > 0 else None
            if i == 0 and le <= 0:
                return le
            in_bucket = count - lower_count
            if in_bucket <= 0:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = le, count
    return None
