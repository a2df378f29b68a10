"""The opt-in memory report names the lines that hold memory."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

import pytest

from mmop.controller import memory_report


def test_without_the_variable_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory_report.ENV, raising=False)
    assert memory_report.install() is None


def test_sigusr2_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "memory.txt"
    monkeypatch.setenv(memory_report.ENV, str(out))
    before = signal.getsignal(signal.SIGUSR2)
    try:
        assert memory_report.install() == out
        held = [bytearray(1024) for _ in range(2000)]  # ~2 MiB from this file
        os.kill(os.getpid(), signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = out.read_text().splitlines()
        assert lines[0].startswith("rss_kib ") and int(lines[0].split()[1]) > 0
        assert int(lines[1].split()[1]) >= 2000
        top = lines[2]
        assert "test_memory_report.py" in top and int(top.split()[0]) >= 2000
        assert held
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGUSR2, before)
