"""Condition-based waiting for tests and tools: poll a probe until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline."""


def wait_for(
    probe: Callable[[], T | bool | None], what: str, timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Return probe()'s first truthy value; raise WaitTimeout naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last  # type: ignore[no-any-return]
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
