"""The autoscaler's per-model memory: windows open on the right scrapes; old ones are dropped."""

from __future__ import annotations

from mmop import autoscaler
from mmop.controller.autoscaling import ModelMemory, _remember, _restore, _window_start
from mmop.metrics import Scrape


def scrapes(t: float) -> list[Scrape]:
    return [Scrape(pod="p", time_seconds=t)]


def test_the_window_opens_on_the_newest_scrape_at_least_a_window_old() -> None:
    memory = ModelMemory(state=autoscaler.State())
    assert _window_start(memory, 0, 30) == []
    for t in range(0, 100, 10):
        _remember(memory, float(t), 30, scrapes(t))
    start = _window_start(memory, 100, 30)
    assert start[0].time_seconds == 70
    # Only what a later window can use is kept: one scrape older than the window at most.
    assert [t for t, _ in memory.scrapes] == [60, 70, 80, 90]


def test_a_young_history_opens_on_its_oldest_scrape() -> None:
    memory = ModelMemory(state=autoscaler.State())
    _remember(memory, 5, 30, scrapes(5))
    _remember(memory, 10, 30, scrapes(10))
    assert _window_start(memory, 15, 30)[0].time_seconds == 5


def test_memory_comes_back_from_status_after_a_restart() -> None:
    memory = _restore(
        {
            "autoscaler": {
                "lastChangeTime": "2026-11-22T10:00:00Z",
                "lastDirection": -1,
                "reversals": ["2026-11-22T09:59:00Z"],
                "replans": ["2026-11-22T09:00:00Z", "not a time"],
                "lastOomTime": "2026-11-22T08:00:00Z",
            }
        }
    )
    assert memory.state.last_direction == -1
    assert memory.state.last_change_seconds == 1795341600.0
    assert len(memory.state.reversals) == 1 and len(memory.state.replans) == 1
    assert memory.last_oom == "2026-11-22T08:00:00Z"
