"""Parse one vLLM ``/metrics`` text exposition into a per-pod ``Scrape``.

Pure: the caller fetches the text and says which pod it came from and when; nothing here does
I/O or reads a clock. Families are found by the names in ``names.METRICS`` (aliases included);
label sets of one family (several engines or models in one server) are combined per the table.

Values the pinned vLLM cannot report make a Scrape unusable, never an exception: every metric mmop
reads is a count, a duration or a fraction, so a sample that is NaN, ±Inf, negative or above
2**53 (no count of vLLM's gets there; it also keeps every sum finite), a KV-cache usage above 1
(``BlockPool.get_usage`` is ``1 - free / total``), or histogram buckets whose cumulative counts
fall as the bound grows, is named in ``Scrape.invalid`` and its metric left out. A counter lower
than in an earlier scrape is not invalid: the server restarted (``signals`` counts it from zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mmop.metrics.names import BY_KEY, METRICS, Combine, Kind, MetricName


class MetricsParseError(ValueError):
    """The text is not a Prometheus text exposition (or holds no samples at all)."""


# The largest value any metric mmop reads may take: far above any count vLLM reaches, and small
# enough that sums and rates of such values stay finite.
MAX_VALUE = 2.0**53


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
    """One pod's metrics at one moment, keyed by ``MetricName.key``; absent metrics are absent.

    ``invalid`` names the values the pinned vLLM cannot report (e.g. ``vllm:num_requests_waiting
    is NaN``); their metrics are left out, and a Scrape with any is unusable as a whole."""

    pod: str
    time_seconds: float
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    invalid: tuple[str, ...] = ()


def value_problem(name: str, value: float, upper: float = MAX_VALUE) -> str | None:
    """Why ``value`` of metric ``name`` cannot come from the pinned vLLM, or None when it can.
    The wording carries no live figure, so a status built from it changes only when the fault
    does."""
    if math.isnan(value):
        return f"{name} is NaN"
    if math.isinf(value):
        return f"{name} is {'+' if value > 0 else '-'}Inf"
    if value < 0:
        return f"{name} is negative"
    if value > upper:
        return f"{name} is above {'2^53' if upper == MAX_VALUE else f'{upper:g}'}"
    return None


def histogram_problem(name: str, hist: Histogram) -> str | None:
    """Why a histogram cannot come from the pinned vLLM (a bad bound, count or sum, or
    cumulative bucket counts that fall as the bound grows), or None when it can."""
    previous = 0.0
    for le, count in hist.buckets:
        if math.isnan(le):
            return f"{name}_bucket has a NaN bound"
        if problem := value_problem(f"{name}_bucket", count):
            return problem
        if count < previous:
            return f"{name}_bucket counts fall as the bound grows"
        previous = count
    return value_problem(f"{name}_count", hist.count) or value_problem(f"{name}_sum", hist.sum)


def _upper(key: str) -> float:
    return 1.0 if key == "kv_cache_usage" else MAX_VALUE


def invalid_values(scrape: Scrape) -> list[str]:
    """Every value in ``scrape`` the pinned vLLM cannot report (``Scrape.invalid`` as well as
    the values themselves, for Scrapes not made by ``parse_exposition``); empty: usable."""
    found = list(scrape.invalid)
    for values in (scrape.gauges, scrape.counters):
        for key, value in values.items():
            metric = BY_KEY.get(key)
            if problem := value_problem(metric.name if metric else key, value, _upper(key)):
                found.append(problem)
    for key, hist in scrape.histograms.items():
        metric = BY_KEY.get(key)
        if problem := histogram_problem(metric.name if metric else key, hist):
            found.append(problem)
    return found


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


class _Invalid(Exception):
    """A sample the pinned vLLM cannot write (its message says which)."""


def _gauge_or_counter(family: Metric, metric: MetricName) -> float | None:
    wanted = family.name + "_total" if metric.kind is Kind.COUNTER else family.name
    values = [s.value for s in family.samples if s.name in (wanted, family.name)]
    for value in values:
        if problem := value_problem(family.name, value, _upper(metric.key)):
            raise _Invalid(problem)
    return _combine(values, metric.combine) if values else None


def _histogram(family: Metric) -> Histogram | None:
    """The histogram summed over label sets; each label set's buckets checked on their own."""
    name = family.name
    per_set: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    buckets: dict[float, float] = {}
    total = count = 0.0
    seen = False
    for s in family.samples:
        if s.name == family.name + "_bucket":
            try:
                le = float(s.labels["le"])
            except (KeyError, ValueError) as err:
                le_text = str(s.labels.get("le"))[:20]
                raise MetricsParseError(
                    f"{family.name}_bucket has a bound that is not a number: le={le_text!r}"
                ) from err
            if problem := value_problem(f"{name}_bucket", s.value):
                raise _Invalid(problem)
            if math.isnan(le):
                raise _Invalid(f"{name}_bucket has a NaN bound")
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            per_set.setdefault(labels, []).append((le, s.value))
            buckets[le] = buckets.get(le, 0.0) + s.value
            seen = True
        elif s.name == family.name + "_sum":
            if problem := value_problem(f"{name}_sum", s.value):
                raise _Invalid(problem)
            total += s.value
        elif s.name == family.name + "_count":
            if problem := value_problem(f"{name}_count", s.value):
                raise _Invalid(problem)
            count += s.value
    if not seen:
        return None
    for one in per_set.values():
        counts = [c for _, c in sorted(one)]
        if any(later < earlier for earlier, later in pairwise(counts)):
            raise _Invalid(f"{name}_bucket counts fall as the bound grows")
    return Histogram(buckets=tuple(sorted(buckets.items())), sum=total, count=count)


def parse_exposition(text: str, pod: str, time_seconds: float) -> Scrape:
    """Parse ``text`` (what ``GET /metrics`` answered) as pod ``pod`` at ``time_seconds``.

    Raises MetricsParseError when the text is not an exposition. Metrics the table names but the
    text lacks are simply absent from the Scrape (the signals that need them are then None);
    metrics with a value vLLM cannot report are absent too, and named in ``Scrape.invalid``.
    """
    by_name: dict[str, Metric] = {f.name: f for f in _families(text)}
    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    histograms: dict[str, Histogram] = {}
    invalid: list[str] = []
    for metric in METRICS:
        names = [metric.name, *metric.aliases]
        if metric.kind is Kind.COUNTER:  # an untyped counter keeps its _total in the family name
            names += [n + "_total" for n in names]
        family = next((by_name[n] for n in names if n in by_name), None)
        if family is None:
            continue
        try:
            if metric.kind is Kind.HISTOGRAM:
                hist = _histogram(family)
                if hist is not None:
                    histograms[metric.key] = hist
                continue
            value = _gauge_or_counter(family, metric)
        except _Invalid as err:
            invalid.append(str(err))
            continue
        if value is None:
            continue
        target = gauges if metric.kind is Kind.GAUGE else counters
        target[metric.key] = value
    return Scrape(
        pod=pod,
        time_seconds=time_seconds,
        gauges=gauges,
        counters=counters,
        histograms=histograms,
        invalid=tuple(invalid),
    )


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
