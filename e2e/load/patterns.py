"""Arrival patterns, turned into timestamped request traces the load generator replays.

A pattern is a request rate over time, r(t) in requests per second. Its arrivals are drawn once,
from a seed, as a renewal process in operational time: the time-rescaling of a process with unit
rate by Λ(t) = ∫₀ᵗ r. With exponential gaps (``shape`` 1) that is a Poisson process of rate r(t);
with gamma gaps of shape k < 1 the arrivals are burstier than Poisson (coefficient of variation
1/√k) at the same mean rate. The same seed gives the same arrivals, so every policy of a
benchmark sees exactly the same requests.

Each arrival becomes one chat request with a text part and one image part (a PNG from the load
venv's image folder), in AIPerf's ``single_turn`` JSONL format with a ``timestamp`` in
milliseconds; AIPerf's fixed schedule sends each at its time.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STEP_SECONDS = 0.05  # resolution of the numerical Λ(t)

PROMPT = (
    "describe the picture and say what colours and shapes it holds, then count the objects "
    "in it and tell which one is the largest, in one short sentence"
)
WORDS = tuple(PROMPT.split(" "))


@dataclass(frozen=True)
class Pattern:
    """A request rate over ``duration_seconds``."""

    name: str
    duration_seconds: float
    rate: Callable[[float], float]
    description: str
    # When the load first rises above its opening level (the reaction-time reference).
    increase_at_seconds: float | None = None
    # Gamma shape of the gaps in operational time (1: Poisson).
    shape: float = 1.0
    # Facts about the pattern worth reporting (e.g. when a generated trace's surges start).
    notes: tuple[str, ...] = field(default=())

    def peak_rate(self) -> float:
        n = int(self.duration_seconds / STEP_SECONDS)
        return max(self.rate(i * STEP_SECONDS) for i in range(n + 1))

    def expected_requests(self) -> float:
        return _integral(self.rate, self.duration_seconds)[-1]

    def arrivals(self, seed: int = 0) -> list[float]:
        """Arrival times in seconds from the start, sorted."""
        cumulative = _integral(self.rate, self.duration_seconds)
        total = cumulative[-1]
        rng = random.Random(seed)
        out: list[float] = []
        s = 0.0
        k = self.shape
        while True:
            s += rng.gammavariate(k, 1.0 / k) if k != 1 else rng.expovariate(1.0)
            if s >= total:
                return out
            i = bisect.bisect_left(cumulative, s)
            lo, hi = cumulative[i - 1], cumulative[i]
            frac = (s - lo) / (hi - lo) if hi > lo else 0.0
            out.append((i - 1 + frac) * STEP_SECONDS)


def _integral(rate: Callable[[float], float], duration: float) -> list[float]:
    """Λ on the grid 0, STEP, 2·STEP, … (trapezoids)."""
    n = max(1, math.ceil(duration / STEP_SECONDS))
    out = [0.0]
    prev = max(0.0, rate(0.0))
    for i in range(1, n + 1):
        cur = max(0.0, rate(min(duration, i * STEP_SECONDS)))
        out.append(out[-1] + (prev + cur) / 2 * STEP_SECONDS)
        prev = cur
    return out


# ---------------------------------------------------------------------------- the patterns
def step(
    low: float, high: float, at: float, hold: float, after: float, end_rate: float | None = None
) -> Pattern:
    """``low`` until ``at``, ``high`` for ``hold`` seconds, then ``end_rate`` (default ``low``)
    for ``after`` seconds."""
    tail = low if end_rate is None else end_rate

    def rate(t: float) -> float:
        if t < at:
            return low
        if t < at + hold:
            return high
        return tail

    return Pattern(
        name="step",
        duration_seconds=at + hold + after,
        rate=rate,
        description=(
            f"{low:g} req/s for {at:g} s, {high:g} req/s for {hold:g} s, then {tail:g} req/s "
            f"for {after:g} s"
        ),
        increase_at_seconds=at,
    )


def burst(
    base: float, peak: float, at: float, length: float, duration: float, bursts: int = 1
) -> Pattern:
    """``base`` req/s with ``bursts`` bursts to ``peak`` of ``length`` seconds, the first at
    ``at``, spaced evenly over the rest of ``duration``."""
    gap = (duration - at) / bursts

    def rate(t: float) -> float:
        if t >= at and (t - at) % gap < length:
            return peak
        return base

    return Pattern(
        name="burst",
        duration_seconds=duration,
        rate=rate,
        description=(
            f"{base:g} req/s with {bursts} burst(s) to {peak:g} req/s lasting {length:g} s "
            f"(first at {at:g} s) over {duration:g} s"
        ),
        increase_at_seconds=at,
    )


def lead_in(pattern: Pattern, seconds: float) -> Pattern:
    """``pattern`` after ``seconds`` at its opening rate: a fleet that has been serving that load
    (and an autoscaler that has sized it) when the measured pattern begins, as a service in
    production has. The lead-in's requests are sent but belong to no measurement."""
    if seconds <= 0:
        return pattern
    opening = pattern.rate(0.0)

    def rate(t: float) -> float:
        return opening if t < seconds else pattern.rate(t - seconds)

    increase = pattern.increase_at_seconds
    return Pattern(
        name=pattern.name,
        duration_seconds=pattern.duration_seconds + seconds,
        rate=rate,
        description=f"{seconds:g} s at {opening:g} req/s, then {pattern.description}",
        increase_at_seconds=None if increase is None else increase + seconds,
        shape=pattern.shape,
        notes=pattern.notes,
    )


def sinusoid(low: float, high: float, period: float, duration: float) -> Pattern:
    """A sine between ``low`` and ``high`` req/s with ``period`` seconds, starting at ``low``."""

    def rate(t: float) -> float:
        return low + (high - low) * (1 - math.cos(2 * math.pi * t / period)) / 2

    return Pattern(
        name="sinusoid",
        duration_seconds=duration,
        rate=rate,
        description=f"sine {low:g}→{high:g} req/s, period {period:g} s, for {duration:g} s",
        increase_at_seconds=0.0,
    )


def generated_trace(duration: float = 180.0, seed: int = 7) -> Pattern:
    """A production-like trace made from a stated distribution (no public trace ships in a
    PyPI package we could find): a slow swell 4 → 14 → 6 req/s (a compressed day: half-sine up,
    then down to 6), three 10-second surges ×1.8 at seeded random times, and gamma(0.5) gaps in
    operational time (CV √2, burstier than Poisson, as request arrivals of LLM services are)."""
    rng = random.Random(seed)
    surges = sorted(rng.uniform(0.15, 0.85) * duration for _ in range(3))

    def swell(t: float) -> float:
        x = t / duration
        if x < 0.5:
            return 4 + 10 * math.sin(math.pi * x)
        return 6 + 8 * math.sin(math.pi * x)

    def rate(t: float) -> float:
        factor = 1.8 if any(s <= t < s + 10 for s in surges) else 1.0
        return swell(t) * factor

    return Pattern(
        name="trace",
        duration_seconds=duration,
        rate=rate,
        description=(
            "GENERATED trace (stated distribution, not a recorded one): swell 4→14→6 req/s, "
            f"3 surges ×1.8 for 10 s at {', '.join(f'{s:.0f}' for s in surges)} s, "
            f"gamma(0.5) inter-arrival gaps, {duration:g} s"
        ),
        increase_at_seconds=0.0,
        shape=0.5,
        notes=tuple(f"surge at {s:.1f} s" for s in surges),
    )


# ---------------------------------------------------------------------------- the trace file
def write_trace(
    path: Path,
    arrivals: Sequence[float],
    images: Sequence[Path],
    seed: int = 0,
    prompt_words: int = 24,
) -> Path:
    """AIPerf ``single_turn`` JSONL: one line per arrival, text + one image + timestamp (ms)."""
    if not images:
        raise ValueError("no images to attach")
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i, t in enumerate(arrivals):
            words = [WORDS[(i + j) % len(WORDS)] for j in range(prompt_words)]
            line = {
                "timestamp": round(t * 1000.0, 1),
                "text": f"request {i}: " + " ".join(words),
                "image": str(images[rng.randrange(len(images))]),
            }
            out.write(json.dumps(line) + "\n")
    return path
