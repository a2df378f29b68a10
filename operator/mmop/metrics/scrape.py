"""Scraping the engines: GET /metrics from each Ready pod, concurrently, with a deadline.

Each target gets a ``TargetResult``: a usable ``Scrape``, or a ``ScrapeFailure`` with a machine
reason (``FailureReason``) and a short human message. A pod that does not answer within the
timeout, answers with an error status or a redirect, sends more than ``MAX_BODY_BYTES``, sends
something that is not an exposition, or reports a value the pinned vLLM cannot report (NaN, ±Inf,
negative, … — see ``exposition``) fails on its own; it never fails, delays or changes the others.
Redirects are never followed: the address a pod answers with is not one the operator chose to
contact. ``unusable_message`` turns the results into one line for a model's status. With
``promql``, the only I/O of the metrics package.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp

from mmop.metrics.exposition import MetricsParseError, Scrape, parse_exposition

MAX_BODY_BYTES = 4 * 1024 * 1024  # vLLM's exposition is tens of KiB; refuse anything absurd
# Bodies above this are parsed off the event loop (a 4 MiB one takes about a second), so one
# pod's large exposition does not hold up the others' scrapes.
PARSE_INLINE_BYTES = 256 * 1024
MESSAGE_CHARS = 200  # of one target's failure message (status text stays short)


class FailureReason(StrEnum):
    """Why a target's metrics are unusable (machine-readable; CamelCase like condition reasons)."""

    TIMEOUT = "Timeout"
    REDIRECT_REFUSED = "RedirectRefused"
    HTTP_ERROR = "HttpError"
    UNREACHABLE = "Unreachable"
    TOO_LARGE = "TooLarge"
    UNPARSABLE = "Unparsable"
    INVALID = "InvalidValue"


@dataclass(frozen=True)
class ScrapeFailure:
    reason: FailureReason
    message: str  # for people: "/metrics timed out after 2 s", "vllm:… is NaN"


@dataclass(frozen=True)
class Target:
    pod: str
    url: str


@dataclass(frozen=True)
class TargetResult:
    """One target's outcome: exactly one of ``scrape`` (usable) and ``failure`` is set."""

    pod: str
    scrape: Scrape | None = None
    failure: ScrapeFailure | None = None


@dataclass
class ScrapeResult:
    """Every target's outcome, in the order of the targets."""

    targets: list[TargetResult] = field(default_factory=list)

    @property
    def scrapes(self) -> list[Scrape]:
        """The usable scrapes."""
        return [t.scrape for t in self.targets if t.scrape is not None]

    @property
    def failures(self) -> dict[str, str]:
        """Pod → why its metrics are unusable (the human message)."""
        return {t.pod: t.failure.message for t in self.targets if t.failure is not None}

    @property
    def reasons(self) -> dict[str, FailureReason]:
        """Pod → the machine reason its metrics are unusable."""
        return {t.pod: t.failure.reason for t in self.targets if t.failure is not None}


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


async def read_capped(
    response: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES
) -> bytes | None:
    """The whole body (decompressed), or None past ``limit`` bytes; never much more in memory
    (aiohttp decompresses a chunk at a time). Reads to the end: one ``read(n)`` returns only
    what has arrived so far, which cuts a body sent in several pieces short."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, pod: str, now: float) -> Scrape | ScrapeFailure:
    text = body.decode("utf-8", "replace")
    try:
        scraped = parse_exposition(text, pod, now)
    except MetricsParseError as err:
        return ScrapeFailure(FailureReason.UNPARSABLE, _short(f"/metrics: {err}"))
    except (ValueError, ArithmeticError, LookupError, TypeError) as err:  # the unforeseen
        message = f"/metrics is not a Prometheus text exposition ({type(err).__name__}: {err})"
        return ScrapeFailure(FailureReason.UNPARSABLE, _short(message))
    if scraped.invalid:
        more = len(scraped.invalid) - 3
        message = ", ".join(scraped.invalid[:3]) + (f" and {more} more" if more > 0 else "")
        return ScrapeFailure(FailureReason.INVALID, _short(message))
    tokens = kv_cache_tokens(text)
    if tokens is not None:
        scraped.gauges["kv_cache_tokens"] = tokens
    return scraped


async def _fetch(
    session: aiohttp.ClientSession, target: Target, timeout: aiohttp.ClientTimeout
) -> bytes | ScrapeFailure:
    try:
        async with session.get(target.url, timeout=timeout, allow_redirects=False) as response:
            if 300 <= response.status < 400:
                return ScrapeFailure(
                    FailureReason.REDIRECT_REFUSED,
                    f"/metrics answered HTTP {response.status}: redirect refused",
                )
            if response.status != 200:
                return ScrapeFailure(
                    FailureReason.HTTP_ERROR, f"/metrics answered HTTP {response.status}"
                )
            body = await read_capped(response)
    except TimeoutError:  # aiohttp's own timeouts are ClientErrors too: a timeout is a timeout
        raise
    except aiohttp.ClientError as err:
        message = f"/metrics unreachable: {type(err).__name__}: {err}"
        return ScrapeFailure(FailureReason.UNREACHABLE, _short(message))
    if body is None:
        return ScrapeFailure(
            FailureReason.TOO_LARGE, f"/metrics is larger than {MAX_BODY_BYTES} bytes"
        )
    return body


async def _one(
    session: aiohttp.ClientSession,
    target: Target,
    gate: asyncio.Semaphore,
    timeout_seconds: float,
) -> TargetResult:
    """One target, within ``timeout_seconds`` from when it gets its turn (the whole of it:
    connecting, a slow trickle of a body, and parsing)."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    outcome: Scrape | ScrapeFailure
    async with gate:
        try:
            async with asyncio.timeout(timeout_seconds):
                fetched = await _fetch(session, target, timeout)
                if isinstance(fetched, ScrapeFailure):
                    outcome = fetched
                elif len(fetched) <= PARSE_INLINE_BYTES:
                    outcome = _parse(fetched, target.pod, time.time())
                else:
                    outcome = await asyncio.to_thread(_parse, fetched, target.pod, time.time())
        except TimeoutError:
            outcome = ScrapeFailure(
                FailureReason.TIMEOUT, f"/metrics timed out after {timeout_seconds:g} s"
            )
    if isinstance(outcome, ScrapeFailure):
        return TargetResult(target.pod, failure=outcome)
    return TargetResult(target.pod, scrape=outcome)


_CACHE_INFO = re.compile(r"^vllm:cache_config_info\{(?P<labels>.*)\}\s", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def kv_cache_tokens(text: str) -> float | None:
    """The KV cache a pod's engines hold, in tokens, from ``vllm:cache_config_info``: its
    ``kv_cache_size_tokens`` label (recent vLLM), else ``num_gpu_blocks`` × ``block_size``;
    summed over engines (data parallel). None when the pod does not say. (A line scan, not a
    second parse of the whole exposition.) Labels that are not a finite, non-negative number
    are skipped."""
    total, found = 0.0, False
    for match in _CACHE_INFO.finditer(text):
        labels = dict(_LABEL.findall(match["labels"]))
        try:
            if labels.get("kv_cache_size_tokens", "None") != "None":
                tokens = float(labels["kv_cache_size_tokens"])
            else:
                tokens = float(labels["num_gpu_blocks"]) * float(labels["block_size"])
        except (KeyError, ValueError):
            continue
        if not math.isfinite(tokens) or tokens < 0:
            continue
        total += tokens
        found = True
    return total if found and math.isfinite(total) else None


async def scrape(
    targets: Sequence[Target],
    timeout_seconds: float = 2.0,
    concurrency: int = 32,
    session: aiohttp.ClientSession | None = None,
) -> ScrapeResult:
    """Scrape every target at most ``concurrency`` at a time, each within ``timeout_seconds``.
    A long-lived caller passes its ``session`` (connections are then reused across calls)."""
    if not targets:
        return ScrapeResult()
    gate = asyncio.Semaphore(concurrency)
    if session is None:
        async with aiohttp.ClientSession() as own:
            outcomes = await asyncio.gather(*(_one(own, t, gate, timeout_seconds) for t in targets))
    else:
        outcomes = await asyncio.gather(*(_one(session, t, gate, timeout_seconds) for t in targets))
    return ScrapeResult(targets=list(outcomes))


def unusable_message(results: Sequence[TargetResult], listed: int = 5) -> str | None:
    """The status text for a model whose replicas' metrics are not all usable, e.g. ``metrics
    of 2/3 replicas unusable: pod-x: /metrics timed out after 2 s; pod-y:
    vllm:num_requests_running is NaN``; pods in name order, at most ``listed`` named (then
    ``and N more``). None when every result is usable (or there are none). Pure; the wording
    holds no live figure, so the text changes only when the faults do."""
    failed = sorted(
        ((r.pod, r.failure) for r in results if r.failure is not None), key=lambda p: p[0]
    )
    if not failed:
        return None
    parts = [f"{pod}: {failure.message}" for pod, failure in failed[:listed]]
    if len(failed) > listed:
        parts.append(f"and {len(failed) - listed} more")
    return f"metrics of {len(failed)}/{len(results)} replicas unusable: " + "; ".join(parts)
