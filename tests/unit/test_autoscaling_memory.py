"""The autoscaler's per-model history: windows open on the right scrapes; old ones are dropped;
what a restart must not forget comes back from status."""

from __future__ import annotations

from mmop import autoscaler
from mmop.controller.autoscaling import remember, window_start
from mmop.controller.context import ModelHistory
from mmop.metrics import Scrape
from mmop.status import restore_history


def scrapes(t: float) -> list[Scrape]:
    return [Scrape(pod="p", time_seconds=t)]


def test_the_window_opens_on_the_newest_scrape_at_least_a_window_old() -> None:
    history = ModelHistory(state=autoscaler.State())
    assert window_start(history, 0, 30) == []
    for t in range(0, 100, 10):
        remember(history, float(t), 30, scrapes(t))
    start = window_start(history, 100, 30)
    assert start[0].time_seconds == 70
    # Only what a later window can use is kept: one scrape older than the window at most.
    assert [t for t, _ in history.scrapes] == [60, 70, 80, 90]


def test_a_young_history_opens_on_its_oldest_scrape() -> None:
    history = ModelHistory(state=autoscaler.State())
    remember(history, 5, 30, scrapes(5))
    remember(history, 10, 30, scrapes(10))
    assert window_start(history, 15, 30)[0].time_seconds == 5


def test_a_pod_that_turned_ready_inside_the_window_opens_it_at_its_first_scrape() -> None:
    # Pod "a" is scraped from t=0, pod "b" from t=20: at t=40 with a 30-s window, "a" opens at
    # t=10 (its newest at least 30 s old) and "b" at its first scrape, so what "b" finished
    # between t=20 and t=40 counts instead of being left out of the rate.
    history = ModelHistory(state=autoscaler.State())
    for t in range(0, 40, 10):
        pods = ["a"] if t < 20 else ["a", "b"]
        remember(history, float(t), 30, [Scrape(pod=p, time_seconds=t) for p in pods])
    start = {s.pod: s.time_seconds for s in window_start(history, 40, 30)}
    assert start == {"a": 10, "b": 20}


def test_history_comes_back_from_status_after_a_restart() -> None:
    state, last_oom = restore_history(
        {
            "lastChangeTime": "2026-11-22T10:00:00Z",
            "lastDirection": -1,
            "reversals": ["2026-11-22T09:59:00Z"],
            "replans": ["2026-11-22T09:00:00Z", "not a time"],
            "lastOomTime": "2026-11-22T08:00:00Z",
        }
    )
    assert state.last_direction == -1
    assert state.last_change_seconds == 1795341600.0
    assert len(state.reversals) == 1 and len(state.replans) == 1
    assert last_oom == "2026-11-22T08:00:00Z"


def test_unusable_metrics_are_named_on_the_model_and_cleared_once_they_report() -> None:
    """R7: a replica whose /metrics times out or holds NaN used to fail its model's tick
    invisibly; now the model says which replica and why (MetricsUsable=False)."""
    from mmop.controller.autoscaling import metrics_condition
    from mmop.metrics.scrape import FailureReason, ScrapeFailure, ScrapeResult, TargetResult

    ok = TargetResult("pod-a", scrape=Scrape(pod="pod-a", time_seconds=1))
    slow = TargetResult(
        "pod-b", failure=ScrapeFailure(FailureReason.TIMEOUT, "/metrics timed out after 2 s")
    )
    cond = metrics_condition(ScrapeResult([ok, slow]), None)
    assert cond is not None and (cond.type, cond.status, cond.reason) == (
        "MetricsUsable", "False", "Timeout",
    )  # fmt: skip
    assert "pod-b: /metrics timed out after 2 s" in cond.message and "1/2" in cond.message
    healthy = ScrapeResult([ok])
    assert metrics_condition(healthy, None) is None  # a healthy model carries no condition
    back = metrics_condition(healthy, {"type": "MetricsUsable", "status": "False"})
    assert back is not None and (back.status, back.reason) == ("True", "AllReplicasReporting")
    assert metrics_condition(healthy, {"type": "MetricsUsable", "status": "True"}) is None
