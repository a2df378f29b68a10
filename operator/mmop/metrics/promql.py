"""The Prometheus source: the same signals as scraping, from PromQL over a window.

Used instead of scraping each pod when the operator is given a Prometheus URL
(``MMOP_PROMETHEUS_URL``). Series are selected by ``namespace`` and ``pod`` (the labels a
PodMonitor, a ServiceMonitor or a ``kubernetes_sd`` relabelling attach), pods matched by the
name prefix their Deployment gives them; the caller keeps only the pods it knows are Ready
(Prometheus keeps a stopped pod's last sample for minutes). Metric names come from the one
table in ``names.py``.

As with scraping, redirects are never followed (the URL is the operator's configuration, and
an answer should not send the operator elsewhere: a 3xx is a PromQLError, "redirect refused"),
an answer over ``MAX_BODY_BYTES`` is an error, and a value the pinned vLLM cannot produce —
NaN, ±Inf, negative (all of these are gauges, quantiles or rates of counts and durations) —
reads as no value.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mmop.metrics.names import BY_KEY
from mmop.metrics.scrape import MAX_BODY_BYTES, read_capped

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class PromQLError(RuntimeError):
    """Prometheus did not answer a query usefully."""


@dataclass
class PodLoad:
    kv_cache_usage: float | None = None
    requests_waiting: float | None = None
    requests_running: float | None = None


@dataclass
class PromSignals:
    """What the autoscaler needs, per pod and for the model, from one round of queries."""

    pods: dict[str, PodLoad] = field(default_factory=dict)
    ttft_p95_seconds: float | None = None
    preemptions_per_second: float | None = None


def _selector(namespace: str, model: str) -> str:
    """Pods of the model's Deployment, named <deployment>-<template hash>-<suffix>. Names are
    DNS labels (letters, digits, '-'), so they need no quoting inside the regex."""
    if not _NAME.match(namespace) or not _NAME.match(model):
        raise ValueError(f"not a Kubernetes name: {namespace!r}/{model!r}")
    return f'{{namespace="{namespace}",pod=~"{model}-[a-z0-9]+-[a-z0-9]+"}}'


def queries(namespace: str, model: str, window_seconds: int) -> dict[str, str]:
    """The PromQL for one model: per-pod gauges, TTFT p95 and the preemption rate."""
    sel = _selector(namespace, model)
    w = f"{max(1, int(window_seconds))}s"
    kv = BY_KEY["kv_cache_usage"].name
    waiting = BY_KEY["requests_waiting"].name
    running = BY_KEY["requests_running"].name
    ttft = BY_KEY["ttft"].name
    preempt = BY_KEY["preemptions"].name
    return {
        "kv_cache_usage": f"avg by (pod) ({kv}{sel})",
        "requests_waiting": f"sum by (pod) ({waiting}{sel})",
        "requests_running": f"sum by (pod) ({running}{sel})",
        "ttft_p95": (f"histogram_quantile(0.95, sum by (le) (rate({ttft}_bucket{sel}[{w}])))"),
        "preemptions": f"sum(rate({preempt}_total{sel}[{w}]))",
    }


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base.rstrip('/')}/api/v1/query"
    try:
        async with session.get(url, params={"query": expr}, allow_redirects=False) as r:
            if 300 <= r.status < 400:
                raise PromQLError(f"Prometheus answered HTTP {r.status}: redirect refused")
            raw = await read_capped(r)
        if raw is None:
            raise PromQLError(f"Prometheus' answer is larger than {MAX_BODY_BYTES} bytes")
        body = json.loads(raw)
    except (TimeoutError, aiohttp.ClientError, ValueError) as err:
        raise PromQLError(f"{type(err).__name__}: {err}") from err
    if not isinstance(body, Mapping) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, Mapping) else body
        raise PromQLError(f"query failed: {error}")
    result = (body.get("data") or {}).get("result") or []
    return list(result)


def _value(sample: Mapping[str, Any]) -> float | None:
    try:
        value = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


async def query_model(
    base_url: str,
    namespace: str,
    model: str,
    window_seconds: int,
    timeout_seconds: float = 2.0,
    session: aiohttp.ClientSession | None = None,
) -> PromSignals:
    """Run the model's queries concurrently; raises PromQLError when Prometheus fails."""
    exprs = queries(namespace, model, window_seconds)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def run(s: aiohttp.ClientSession) -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(_query(s, base_url, e) for e in exprs.values())))

    if session is None:
        async with aiohttp.ClientSession(timeout=timeout) as own:
            results = await run(own)
    else:
        results = await asyncio.wait_for(run(session), timeout_seconds)
    by_key = dict(zip(exprs, results, strict=True))
    out = PromSignals()
    for key in ("kv_cache_usage", "requests_waiting", "requests_running"):
        for sample in by_key[key]:
            pod = (sample.get("metric") or {}).get("pod")
            if not pod:
                continue
            setattr(out.pods.setdefault(pod, PodLoad()), key, _value(sample))
    ttft = by_key["ttft_p95"]
    out.ttft_p95_seconds = _value(ttft[0]) if ttft else None
    preempt = by_key["preemptions"]
    out.preemptions_per_second = _value(preempt[0]) if preempt else None
    return out
