"""An opt-in report of where the operator's memory goes (diagnosis, not for production runs).

With ``MMOP_MEMORY_REPORT=<file>`` in its environment, ``mmop run`` traces Python allocations
(``tracemalloc``, which slows allocation-heavy code down) and, on SIGUSR2, writes to the file the
traced total and the 40 source lines holding the most memory. The process's RSS is in the report
too, so what Python holds can be told apart from what the allocator keeps.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

ENV = "MMOP_MEMORY_REPORT"
TOP = 40


def install() -> Path | None:
    """Start tracing and handle SIGUSR2 when the environment asks for it; the report's path."""
    target = os.environ.get(ENV)
    if not target:
        return None
    path = Path(target)
    tracemalloc.start(1)

    def report(_signum: int, _frame: FrameType | None) -> None:
        write(path)

    signal.signal(signal.SIGUSR2, report)
    return path


def write(path: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("lineno")
    current, peak = tracemalloc.get_traced_memory()
    lines = [
        f"rss_kib {_rss_kib()}",
        f"traced_kib {current // 1024} peak_traced_kib {peak // 1024}",
        *(
            f"{s.size // 1024:>9} KiB {s.count:>8} blocks  {s.traceback[0].filename}:"
            f"{s.traceback[0].lineno}"
            for s in stats[:TOP]
        ),
    ]
    path.write_text("\n".join(lines) + "\n")


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1
