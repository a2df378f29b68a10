"""What the cached virtualenv installers (e2e/engine, e2e/load) share: a logged install step and
a size measure."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def run_step(
    step: str,
    argv: list[str],
    log_dir: Path,
    say: Callable[[str], None],
    error: type[Exception],
) -> None:
    """Run one install step with its output in ``log_dir/<step>.log``; raise ``error`` with the
    log's tail when it fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{step}.log"
    say(f"{step}: {' '.join(argv)}")
    started = time.monotonic()
    with log_file.open("wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        detail = "\n".join("  | " + line for line in tail)
        raise error(f"step {step!r} failed (exit {proc.returncode}); log: {log_file}\n{detail}")
    say(f"{step}: done in {time.monotonic() - started:.0f} s")


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total
