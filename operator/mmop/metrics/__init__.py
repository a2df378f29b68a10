"""vLLM metrics: parse ``/metrics`` text and start-up logs of the pinned vLLM into plain data.

The parsers are pure: ``parse_exposition`` turns one pod's exposition into a ``Scrape`` (values
the pinned vLLM cannot report — NaN, ±Inf, negative, … — named in ``Scrape.invalid``, see
``invalid_values``); ``signals`` turns two scrapes of one or more pods into ``Signals``;
``parse_startup_log`` reads the KV-cache size and maximum concurrency vLLM logs when it starts.
The I/O around them lives in their own modules, imported by name: ``scrape`` (GET /metrics from
the pods) and ``promql`` (the same signals from Prometheus). Every metric name comes from the
one table in ``names``.
"""

from mmop.metrics.exposition import (
    Histogram,
    MetricsParseError,
    Scrape,
    family_names,
    histogram_quantile,
    invalid_values,
    merge_histograms,
    parse_exposition,
)
from mmop.metrics.names import METRICS, MetricName
from mmop.metrics.signals import Signals, signals
from mmop.metrics.startup import StartupReport, parse_startup_log

__all__ = [
    "METRICS",
    "Histogram",
    "MetricName",
    "MetricsParseError",
    "Scrape",
    "Signals",
    "StartupReport",
    "family_names",
    "histogram_quantile",
    "invalid_values",
    "merge_histograms",
    "parse_exposition",
    "parse_startup_log",
    "signals",
]
