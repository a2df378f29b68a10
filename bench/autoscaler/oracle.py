"""The fewest GPU-hours any policy could spend on a benchmark pattern: a lower bound to read the
autoscaler results against.

Usage (from the repository root):
    python bench/autoscaler/oracle.py [--patterns sinusoid] [--stretch 8] [--startup 180]
                                      [--capacity 3.33] [--utilization 1,0.9,0.8] [--peak 7]

A policy that knew the whole pattern in advance and a replica's exact capacity (requests/s,
``--capacity``; the benchmark's stand-ins run 2 requests at once, each 0.2 s to its first token
and 9 × 40 ms to its other nine: 3.57/s — they reported 0.565 s per request in a run, 3.54/s)
needs ceil(rate(τ) / (capacity × utilization)) Ready replicas at every instant τ. A replica Ready
at τ was ordered ``--startup`` seconds before and counted (Pending) from then, so at t the fleet
is at least the most needed over [t, t + startup] (``with start-up``); without start-ups it is the
need at t (``instant``). GPU-hours are the benchmark's: the fleet integrated over the pattern, one
GPU per replica, compared with the static fleet of ``--peak`` replicas. Utilization 1 is a bound
no policy holding a latency SLO reaches (a fully busy replica queues); the benchmark's mmop sizes
for 0.8.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import PATTERNS

STEP_SECONDS = 1.0


def needed(rate: float, capacity: float, utilization: float) -> int:
    return max(1, math.ceil(rate / (capacity * utilization) - 1e-9))


def fleet_bound(
    rates: list[float], capacity: float, utilization: float, startup_steps: int
) -> list[int]:
    """The least fleet at each step of ``rates`` (one per STEP_SECONDS): the most Ready
    replicas needed from then until a start-up later."""
    need = [needed(r, capacity, utilization) for r in rates]
    return [max(need[i : i + startup_steps + 1]) for i in range(len(need))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patterns", default="step,burst,sinusoid,trace")
    ap.add_argument("--stretch", type=float, default=1.0)
    ap.add_argument("--startup", type=float, default=180.0)
    ap.add_argument("--capacity", type=float, default=2 / (0.2 + 9 * 0.04))
    ap.add_argument("--utilization", default="1,0.9,0.8")
    ap.add_argument("--peak", type=int, default=7)
    ns = ap.parse_args(argv)
    print(
        "| pattern | utilization | instant: mean replicas (× static) | with a "
        f"{ns.startup:g}-s start-up: mean replicas (× static) |"
    )
    print("|---|---|---|---|")
    for name in ns.patterns.split(","):
        pattern = PATTERNS[name](ns.stretch)
        steps = int(pattern.duration_seconds / STEP_SECONDS)
        rates = [pattern.rate(i * STEP_SECONDS) for i in range(steps)]
        for u in (float(x) for x in ns.utilization.split(",")):
            instant = sum(fleet_bound(rates, ns.capacity, u, 0)) / steps
            ahead = fleet_bound(rates, ns.capacity, u, int(ns.startup / STEP_SECONDS))
            mean = sum(ahead) / steps
            print(
                f"| {name} | {u:g} | {instant:.2f} ({instant / ns.peak:.2f}×) | "
                f"{mean:.2f} ({mean / ns.peak:.2f}×) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
