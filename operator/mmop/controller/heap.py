"""Giving freed heap memory back to the system (glibc's ``malloc_trim``).

CPython hands freed objects back to the C allocator, but glibc keeps freed memory in its arenas
and returns only the top of each heap, so after a burst of watch events (hundreds of bodies
parsed at once) the operator's RSS stays near the burst's peak while Python holds a fraction of
it: the operator benchmark's memory report (``MMOP_MEMORY_REPORT``) showed 52 MB traced at
441 MiB RSS after 400 models. ``malloc_trim(0)`` returns the free pages of every arena. The
operator calls it every ``heap_trim_seconds`` of its configuration (``MMOP_HEAP_TRIM_SECONDS``,
default 30; 0 turns it off), in a worker thread; where the C library has no ``malloc_trim``
(musl), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("mmop.heap")


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _find_malloc_trim()


def trim() -> bool:
    """Return free heap pages to the system; whether the C library could (glibc: 1 when it
    released memory, 0 when there was none to release — both are success)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


async def trim_loop(interval: float) -> None:
    """Trim every ``interval`` seconds until cancelled (nothing when 0 or unsupported)."""
    if interval <= 0 or _MALLOC_TRIM is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(trim)
