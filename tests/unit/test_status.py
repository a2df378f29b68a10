"""What a model's status says, from plain data (mmop.status)."""

from __future__ import annotations

from mmop.autoscaler import Action, ScalingDecision, State
from mmop.planner import Limits
from mmop.status import (
    Cond,
    autoscaler_status,
    decisions_log,
    merge_conditions,
    ready_condition,
    restore_history,
    status_changes,
)

NOW = "2026-12-03T10:00:00Z"
LATER = "2026-12-03T11:00:00Z"


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = status_changes({}, 1, {}, [Cond("Ready", "False", "ReplicasNotReady", "0/1")], NOW)
    (ready,) = first["conditions"]
    assert ready["lastTransitionTime"] == NOW and ready["observedGeneration"] == 1
    same = status_changes(first, 1, {}, [Cond("Ready", "False", "ReplicasNotReady", "0/1")], LATER)
    assert same == {}  # nothing to write
    status = {"conditions": first["conditions"]}
    moved = status_changes(status, 1, {}, [Cond("Ready", "False", "PodCreationFailed", "x")], LATER)
    assert moved["conditions"][0]["lastTransitionTime"] == NOW  # still False
    flipped = status_changes(
        status, 1, {}, [Cond("Ready", "True", "AllReplicasReady", "1/1")], LATER
    )
    assert flipped["conditions"][0]["lastTransitionTime"] == LATER


def test_conditions_merge_by_type_in_a_stable_order() -> None:
    merged = merge_conditions(
        [{"type": "Degraded", "status": "False"}, {"type": "Ready", "status": "True"}],
        [{"type": "Planned", "status": "True"}, {"type": "Ready", "status": "False"}],
    )
    assert [(c["type"], c["status"]) for c in merged] == [
        ("Planned", "True"), ("Ready", "False"), ("Degraded", "False"),
    ]  # fmt: skip


def test_only_fields_that_differ_are_written() -> None:
    assert status_changes({"replicas": 2}, 1, {"replicas": 2, "readyReplicas": 1}, [], NOW) == {
        "readyReplicas": 1
    }


def test_ready_says_why_pods_are_not_created() -> None:
    """The ReplicaSet's refusal (Pod Security, a quota, an invalid image) reaches the model."""
    refused = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "m-1" is forbidden: violates PodSecurity "restricted:latest"',
    }
    cond = ready_condition(1, 0, [refused])
    assert (cond.status, cond.reason) == ("False", "PodCreationFailed")
    assert "violates PodSecurity" in cond.message and cond.message.startswith("0/1 ready")
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    assert ready_condition(2, 1, [stuck]).reason == "ProgressDeadlineExceeded"
    assert ready_condition(2, 2, [refused]).reason == "AllReplicasReady"
    assert ready_condition(0, 0).status == "False"


def test_the_autoscaler_history_survives_a_round_trip_through_status() -> None:
    state = State(
        last_change_seconds=1_800_000_000.0,
        last_direction=-1,
        reversals=(1.7e9,),
        startup_seconds=181.25,
    )
    saved = autoscaler_status({}, state, "2026-11-22T08:00:00Z")
    assert saved is not None
    assert saved["observedStartupSeconds"] == 181.2  # shown to the user, rounded
    back, last_oom = restore_history(saved)
    assert back.startup_seconds == 181.2
    assert back.last_change_seconds == state.last_change_seconds
    assert back.last_direction == -1 and back.reversals == (1.7e9,)
    assert last_oom == "2026-11-22T08:00:00Z"
    assert autoscaler_status(saved, back, last_oom) is None  # unchanged: nothing to write


def test_what_a_replan_learnt_is_kept_with_its_generation() -> None:
    learned = Limits(avoid=frozenset({"L4/tp1"}), min_kv_cache_tokens=None, demand=4)
    saved = autoscaler_status({}, State(), "", learned, generation=7, peak_cost_per_hour_usd=9.5)
    assert saved == {
        "avoid": ["L4/tp1"],
        "demand": 4,
        "demandGeneration": 7,
        "peakCostPerHourUsd": 9.5,
    }


def test_holds_are_logged_only_when_notable_and_once() -> None:
    hold = ScalingDecision(action=Action.HOLD, replicas=1, reason="Steady", message="ok")
    assert decisions_log([], hold, 0, ("ScaleRefused",)) is None
    refused = hold.model_copy(update={"reason": "ScaleRefused", "message": "403"})
    log = decisions_log([], refused, 0, ("ScaleRefused",))
    assert log is not None and log[-1]["reason"] == "ScaleRefused"
    assert decisions_log(log, refused, 5, ("ScaleRefused",)) is None
    up = ScalingDecision(action=Action.SCALE_UP, replicas=2, reason="Saturated", message="")
    many = [log[0]] * 10
    longer = decisions_log(many, up, 10, ())
    assert longer is not None and len(longer) == 10 and longer[-1]["action"] == "ScaleUp"
