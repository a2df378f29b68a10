"""Freed heap memory goes back to the system after a burst of allocations."""

from __future__ import annotations

import gc
import json
from pathlib import Path

from mmop.controller import heap


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_trim_returns_what_a_burst_of_parsed_bodies_left_behind() -> None:
    assert heap._MALLOC_TRIM is not None, "glibc (the operator image's and CI's C library)"
    body = json.dumps({"metadata": {"name": "x" * 40, "labels": {str(i): "v" for i in range(30)}}})
    before = rss_kib()
    burst = [json.loads(body) for _ in range(60_000)]  # small dicts, like watch-event bodies
    keep = burst[::997]  # a few survive, pinning pages the way long-lived objects do
    peak = rss_kib()
    del burst
    gc.collect()
    after_free = rss_kib()
    assert heap.trim()
    after_trim = rss_kib()
    assert peak - before > 50_000  # the burst took > 50 MiB
    assert after_trim < after_free - 20_000, (before, peak, after_free, after_trim)
    assert keep
