"""Scraping the engines: GET /metrics from each Ready pod, concurrently, with a deadline.

A pod that does not answer in time, answers with an error status, or answers something that is
not an exposition is reported in ``ScrapeResult.failures`` (pod → why) and left out of the
scrapes; it never fails the others. The only I/O in the metrics package.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from mmop.metrics.exposition import MetricsParseError, Scrape, parse_exposition

MAX_BODY_BYTES = 4 * 1024 * 1024  # vLLM's exposition is tens of KiB; refuse anything absurd


@dataclass(frozen=True)
class Target:
    pod: str
    url: str


@dataclass
class ScrapeResult:
    scrapes: list[Scrape] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


async def _one(
    session: aiohttp.ClientSession,
    target: Target,
    gate: asyncio.Semaphore,
    timeout: aiohttp.ClientTimeout,
) -> Scrape | str:
    async with gate:
        try:
            async with session.get(target.url, timeout=timeout) as response:
                if response.status != 200:
                    return f"HTTP {response.status}"
                body = await response.content.read(MAX_BODY_BYTES + 1)
        except TimeoutError:
            return "timed out"
        except aiohttp.ClientError as err:
            return f"{type(err).__name__}: {err}"
    if len(body) > MAX_BODY_BYTES:
        return f"more than {MAX_BODY_BYTES} bytes"
    text = body.decode("utf-8", "replace")
    try:
        scraped = parse_exposition(text, target.pod, time.time())
    except MetricsParseError as err:
        return f"not a metrics exposition: {err}"
    tokens = kv_cache_tokens(text)
    if tokens is not None:
        scraped.gauges["kv_cache_tokens"] = tokens
    return scraped


_CACHE_INFO = re.compile(r"^vllm:cache_config_info\{(?P<labels>.*)\}\s", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def kv_cache_tokens(text: str) -> float | None:
    """The KV cache a pod's engines hold, in tokens, from ``vllm:cache_config_info``: its
    ``kv_cache_size_tokens`` label (recent vLLM), else ``num_gpu_blocks`` × ``block_size``;
    summed over engines (data parallel). None when the pod does not say. (A line scan, not a
    second parse of the whole exposition.)"""
    total, found = 0.0, False
    for match in _CACHE_INFO.finditer(text):
        labels = dict(_LABEL.findall(match["labels"]))
        try:
            if labels.get("kv_cache_size_tokens", "None") != "None":
                total += float(labels["kv_cache_size_tokens"])
            else:
                total += float(labels["num_gpu_blocks"]) * float(labels["block_size"])
        except (KeyError, ValueError):
            continue
        found = True
    return total if found else None


async def scrape(
    targets: Sequence[Target],
    timeout_seconds: float = 2.0,
    concurrency: int = 32,
    session: aiohttp.ClientSession | None = None,
) -> ScrapeResult:
    """Scrape every target at most ``concurrency`` at a time, each within ``timeout_seconds``.
    A long-lived caller passes its ``session`` (connections are then reused across calls)."""
    result = ScrapeResult()
    if not targets:
        return result
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    if session is None:
        async with aiohttp.ClientSession(timeout=timeout) as own:
            outcomes = await asyncio.gather(*(_one(own, t, gate, timeout) for t in targets))
    else:
        outcomes = await asyncio.gather(*(_one(session, t, gate, timeout) for t in targets))
    for target, outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, Scrape):
            result.scrapes.append(outcome)
        else:
            result.failures[target.pod] = outcome
    return result
