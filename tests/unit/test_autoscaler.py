"""The autoscaler's policy, tick by tick."""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from mmop import autoscaler
from mmop.api import Scaling, ScalingMode, Slo
from mmop.autoscaler import (
    Action,
    Observation,
    ReplicaLoad,
    State,
    Tuning,
    decide,
    loads_from,
    replanned,
)

SCALING = Scaling(min_replicas=1, max_replicas=8)
NO_SLO = Slo()


def obs(
    t: float,
    loads: list[tuple[float, float]],
    desired: int | None = None,
    ready: int | None = None,
    **kw: object,
) -> Observation:
    n = len(loads) if desired is None else desired
    return Observation(
        now_seconds=t,
        desired_replicas=n,
        ready_replicas=n if ready is None else ready,
        loads=tuple(
            ReplicaLoad(pod=f"p{i}", kv_cache_usage=kv, requests_waiting=q)
            for i, (kv, q) in enumerate(loads)
        ),
        **kw,  # type: ignore[arg-type]
    )


def test_saturated_replicas_scale_up_straight_to_what_the_queue_needs() -> None:
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.95, 10), (0.9, 6)]), State())
    assert d.action == Action.SCALE_UP and d.reason == "Saturated"
    assert d.replicas == 8  # 16 waiting, each replica keeping 3 of its 5 queue slots spare


def test_a_step_limit_from_the_spec_still_holds() -> None:
    scaling = Scaling.model_validate({"maxReplicas": 8, "behavior": {"maxScaleUpStep": 2}})
    d, _ = decide(scaling, NO_SLO, obs(0, [(0.95, 20), (0.9, 12)]), State())
    assert d.action == Action.SCALE_UP and d.replicas == 4


def test_low_spare_capacity_scales_up_before_saturation() -> None:
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.75, 0), (0.72, 1)]), State())
    assert d.action == Action.SCALE_UP and d.reason == "LowSpareCapacity"
    assert d.replicas == 3


def test_comfortable_load_holds() -> None:
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.5, 0), (0.55, 1)]), State())
    assert d.action == Action.HOLD and d.reason == "WithinTargets"


def test_starting_replicas_count_as_capacity_on_its_way() -> None:
    # One Ready replica saturated, two starting: they will carry it, so no more.
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.95, 3)], desired=3, ready=1), State())
    assert d.action == Action.HOLD and d.reason == "ReplicasPending"
    # Demand beyond the fleet including the starting ones: more at once, not after they arrive.
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.95, 9)], desired=3, ready=1), State())
    assert d.action == Action.SCALE_UP and d.replicas == 5


def test_no_metrics_holds() -> None:
    d, _ = decide(SCALING, NO_SLO, obs(0, [], desired=2, ready=2), State())
    assert d.action == Action.HOLD and d.reason == "NoSignals"


def test_ttft_above_the_slo_scales_up() -> None:
    slo = Slo(ttft_p95_seconds=1.0)
    d, _ = decide(SCALING, slo, obs(0, [(0.3, 0), (0.3, 0)], ttft_p95_seconds=2.5), State())
    assert d.action == Action.SCALE_UP and d.reason == "SloMissed" and d.replicas == 3


def test_scale_down_waits_for_the_stabilization_window_then_goes_to_what_carries_it() -> None:
    state = State()
    idle = [(0.05, 0)] * 4
    for t in range(0, 120, 15):
        d, state = decide(SCALING, NO_SLO, obs(t, idle), state)
        assert d.action == Action.HOLD, t
        assert d.reason == "ScaleDownStabilizing"
    d, state = decide(SCALING, NO_SLO, obs(120, idle), state)
    # 4 × 0.05 KV on one replica is 0.2, far below 0.8 − 0.1: one carries it.
    assert d.action == Action.SCALE_DOWN and d.replicas == 1 and d.reason == "SpareCapacity"


def test_a_scale_down_step_from_the_spec_removes_that_many_at_most() -> None:
    scaling = Scaling.model_validate({"maxReplicas": 8, "behavior": {"maxScaleDownStep": 1}})
    state = State()
    idle = [(0.05, 0)] * 4
    for t in range(0, 135, 15):
        d, state = decide(scaling, NO_SLO, obs(t, idle), state)
    assert d.action == Action.SCALE_DOWN and d.replicas == 3


def test_a_falling_load_is_followed_one_window_behind() -> None:
    """Recommendations are replica counts, so the stabilisation history goes on across
    changes: the fleet follows the highest count of the last window, never waiting a whole
    window again after each scale-down, and never below what the load needs at the time."""
    replicas, state = 8, State()
    kv_needed = 0.8 - 0.1

    def total_kv(t: float) -> float:  # the fleet's KV use, falling at 0.6 replica-loads a minute
        return 4.0 - t / 100

    fleet = {}
    for t in range(0, 330, 15):
        load = [(total_kv(t) / replicas, 0.0)] * replicas
        d, state = decide(SCALING, NO_SLO, obs(t, load), state)
        if d.action == Action.SCALE_DOWN:
            replicas = d.replicas
        assert replicas >= math.ceil(total_kv(t) / kv_needed), t
        fleet[t] = replicas
    # What the load needed 120 s + one cooldown before: ceil(2.2 / 0.7) = 4 at t = 300.
    assert fleet[300] <= math.ceil(total_kv(180) / kv_needed) == 4, fleet


def test_scale_down_only_if_the_rest_would_stay_below_the_triggers() -> None:
    tuning = Tuning(scale_down_window_seconds=0, scale_down_cooldown_seconds=0)
    # 3 × 0.5 KV spread over 2 = 0.75 each: above 0.80 - 0.10, so keep 3.
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.5, 0)] * 3), State(), tuning)
    assert d.action == Action.HOLD and d.reason == "WithinTargets"
    d, _ = decide(SCALING, NO_SLO, obs(0, [(0.3, 0)] * 3), State(), tuning)
    assert d.action == Action.SCALE_DOWN and d.replicas == 2


def test_scale_down_keeps_the_slo_margin() -> None:
    tuning = Tuning(scale_down_window_seconds=0)
    slo = Slo(ttft_p95_seconds=1.0)
    d, _ = decide(SCALING, slo, obs(0, [(0.1, 0)] * 3, ttft_p95_seconds=0.9), State(), tuning)
    assert d.action == Action.HOLD


def test_cooldown_after_a_change() -> None:
    tuning = Tuning(scale_down_window_seconds=0)
    d, state = decide(SCALING, NO_SLO, obs(0, [(0.95, 9)]), State(), tuning)
    assert d.action == Action.SCALE_UP
    d, state = decide(SCALING, NO_SLO, obs(10, [(0.1, 0)] * 3), state, tuning)
    assert d.action == Action.HOLD and d.reason == "CoolingDown"
    d, state = decide(SCALING, NO_SLO, obs(61, [(0.1, 0)] * 3), state, tuning)
    assert d.action == Action.SCALE_DOWN
    assert len(state.reversals) == 1


def test_bounds_win_over_signals() -> None:
    scaling = Scaling(min_replicas=2, max_replicas=3)
    d, _ = decide(scaling, NO_SLO, obs(0, [(0.0, 0)], desired=1, ready=1), State())
    assert d.action == Action.SCALE_UP and d.replicas == 2 and d.reason == "BelowMinimum"
    d, _ = decide(scaling, NO_SLO, obs(0, [(0.99, 50)] * 3), State())
    assert d.action == Action.HOLD and d.replicas == 3


def test_external_mode_reports_and_off_mode_does_nothing() -> None:
    ext = Scaling(mode=ScalingMode.EXTERNAL, max_replicas=8)
    d, _ = decide(ext, NO_SLO, obs(0, [(0.95, 20)]), State())
    assert d.action == Action.HOLD and d.reason == "ExternalScaling"
    assert "would set 8 replicas" in d.message  # the queue asks for 10; maxReplicas is 8
    off = Scaling(mode=ScalingMode.OFF, max_replicas=8)
    d, _ = decide(off, NO_SLO, obs(0, [(0.95, 20)]), State())
    assert d.action == Action.HOLD and d.reason == "ScalingOff"


def test_oom_asks_for_a_plan_with_more_memory_and_is_bounded() -> None:
    tuning = Tuning(replan_spacing_seconds=100, max_replans=2)
    state = State()
    d, state = decide(SCALING, NO_SLO, obs(0, [(0.1, 0)], oom_killed=("p0",)), state, tuning)
    assert d.action == Action.REPLAN and d.headroom == "memory" and d.reason == "OOMKilled"
    # Too soon for another re-plan: the fleet is handled by the scaler meanwhile.
    d, state = decide(SCALING, NO_SLO, obs(50, [(0.1, 0)], oom_killed=("p1",)), state, tuning)
    assert d.action != Action.REPLAN
    d, state = decide(SCALING, NO_SLO, obs(150, [(0.1, 0)], oom_killed=("p1",)), state, tuning)
    assert d.action == Action.REPLAN
    d, state = decide(SCALING, NO_SLO, obs(300, [(0.1, 0)], oom_killed=("p2",)), state, tuning)
    assert d.action == Action.HOLD and d.reason == "ReplanLimitReached"
    # The bound is per window: an hour later a re-plan is possible again.
    d, state = decide(SCALING, NO_SLO, obs(4000, [(0.1, 0)], oom_killed=("p3",)), state, tuning)
    assert d.action == Action.REPLAN


def test_sustained_preemptions_ask_for_kv_headroom() -> None:
    state = State()
    for t in (0, 30):
        d, state = decide(SCALING, NO_SLO, obs(t, [(0.5, 0)], preemptions_per_second=0.4), state)
        assert d.action != Action.REPLAN
    d, state = decide(SCALING, NO_SLO, obs(60, [(0.5, 0)], preemptions_per_second=0.4), state)
    assert d.action == Action.REPLAN and d.headroom == "kv" and d.reason == "KVCachePressure"


def test_pressure_that_stops_resets() -> None:
    state = State()
    _, state = decide(SCALING, NO_SLO, obs(0, [(0.5, 0)], preemptions_per_second=1), state)
    _, state = decide(SCALING, NO_SLO, obs(30, [(0.5, 0)], preemptions_per_second=0), state)
    d, state = decide(SCALING, NO_SLO, obs(61, [(0.5, 0)], preemptions_per_second=1), state)
    assert d.action != Action.REPLAN


def test_full_kv_at_low_concurrency_is_pressure() -> None:
    loads = (ReplicaLoad(pod="p0", kv_cache_usage=0.99, requests_waiting=0, requests_running=1),)
    state = State()
    for t in (0, 61):
        o = Observation(
            now_seconds=t, desired_replicas=1, ready_replicas=1, loads=loads, planned_concurrency=8
        )
        d, state = decide(SCALING, NO_SLO, o, state)
    assert d.action == Action.REPLAN and "only 1 requests running" in d.message


def test_loads_leave_out_pods_without_gauges() -> None:
    loads = loads_from([("a", 0.5, 1.0, 2.0), ("b", None, 0.0, 0.0), ("c", 1.2, 0.0, None)])
    assert [(r.pod, r.kv_cache_usage) for r in loads] == [("a", 0.5), ("c", 1.0)]


def simulate(demand: list[float], capacity_per_replica: float = 10.0) -> list[tuple[float, int]]:
    """A fluid model of a fleet under load: demand in requests in flight per tick (15 s);
    new replicas become Ready one tick after they are asked for."""
    state, desired, ready = State(), 1, 1
    out: list[tuple[float, int]] = []
    for i, load in enumerate(demand):
        t = 15.0 * i
        per = load / max(1, ready)
        kv = min(1.0, per / capacity_per_replica * 0.8)
        queue = max(0.0, per - capacity_per_replica)
        o = obs(t, [(kv, queue)] * ready, desired=desired, ready=ready)
        d, state = decide(SCALING, NO_SLO, o, state)
        ready = desired  # what was asked one tick ago is Ready now
        desired = d.replicas
        out.append((t, desired))
    return out


def test_a_step_of_load_scales_up_within_one_window_then_down_without_flapping() -> None:
    demand = [4.0] * 8 + [40.0] * 40 + [4.0] * 60
    history = simulate(demand)
    step_at = 8 * 15.0
    first_up = next(t for t, r in history if r > 1)
    assert first_up - step_at <= 15.0
    peak = max(r for _, r in history)
    assert peak >= 5  # 40 in flight need 40 / (0.7 × 10) → 6 replicas at most
    assert history[-1][1] == 1
    directions = []
    for (_, a), (_, b) in pairwise(history):
        if b != a:
            directions.append(1 if b > a else -1)
    reversals = sum(1 for x, y in pairwise(directions) if x != y)
    assert reversals <= 2


@settings(max_examples=200, deadline=None)
@given(
    loads=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 100)), min_size=0, max_size=10),
    desired=st.integers(0, 12),
    lo=st.integers(0, 4),
    span=st.integers(0, 6),
    ttft=st.none() | st.floats(0, 10),
)
def test_decisions_stay_within_bounds(
    loads: list[tuple[float, float]], desired: int, lo: int, span: int, ttft: float | None
) -> None:
    scaling = Scaling(min_replicas=lo, max_replicas=max(1, lo + span))
    o = obs(0, loads, desired=desired, ready=desired, ttft_p95_seconds=ttft)
    d, _ = decide(scaling, Slo(ttft_p95_seconds=1.0), o, State())
    if d.action in (Action.SCALE_UP, Action.SCALE_DOWN):
        assert scaling.min_replicas <= d.replicas <= scaling.max_replicas
        assert abs(d.replicas - desired) <= max(2, abs(desired - scaling.max_replicas))


def test_spec_behavior_sets_the_policy() -> None:
    scaling = Scaling.model_validate(
        {
            "maxReplicas": 10,
            "behavior": {"maxScaleUpStep": 5, "scaleDownStabilizationSeconds": 0},
            "targets": {"kvCacheUsage": 0.9, "queueLength": 10},
        }
    )
    d, _ = decide(scaling, NO_SLO, obs(0, [(0.99, 40)]), State())
    assert d.action == Action.SCALE_UP and d.replicas == 6
    d, _ = decide(scaling, NO_SLO, obs(0, [(0.1, 0)] * 3), State())
    assert d.action == Action.SCALE_DOWN


# ----------------------------------------------------------------------------- consolidation

CONSOLIDATING = Scaling.model_validate(
    {"minReplicas": 1, "maxReplicas": 8, "consolidation": {"idleSeconds": 60}}
)


def quiet(t: float, running: list[float], **kw: object) -> Observation:
    """Replicas planned for 64 requests each, running a few."""
    return Observation(
        now_seconds=t,
        desired_replicas=len(running),
        ready_replicas=len(running),
        loads=tuple(
            ReplicaLoad(pod=f"p{i}", kv_cache_usage=0.05, requests_waiting=0, requests_running=r)
            for i, r in enumerate(running)
        ),
        planned_concurrency=64,
        **kw,  # type: ignore[arg-type]
    )


def test_an_idle_fleet_asks_for_a_plan_sized_for_twice_its_peak_after_idle_seconds() -> None:
    state = State()
    seen = []
    for t, running in ((0, [3, 2]), (30, [6, 4]), (59, [1, 1]), (61, [2, 2])):
        d, state = decide(CONSOLIDATING, NO_SLO, quiet(t, running), state)
        seen.append(d)
    assert all(d.action != Action.REPLAN for d in seen[:3])
    last = seen[-1]
    assert last.action == Action.REPLAN and last.reason == "LowUtilization"
    assert last.headroom == "cost" and last.demand == 20  # 2 × the 10 in flight at t=30
    # Asking spends no re-plan budget (the operator spends it when it takes a plan), and the
    # idle period starts again.
    assert state.replans == () and state.idle_since_seconds is None


def test_a_busy_tick_restarts_the_idle_period() -> None:
    state = State()
    _, state = decide(CONSOLIDATING, NO_SLO, quiet(0, [2, 2]), state)
    _, state = decide(CONSOLIDATING, NO_SLO, quiet(40, [40, 40]), state)  # above half of 64
    assert state.idle_since_seconds is None
    d, state = decide(CONSOLIDATING, NO_SLO, quiet(70, [2, 2]), state)
    assert d.action != Action.REPLAN and state.idle_since_seconds == 70


def test_consolidation_needs_mode_auto_and_can_be_turned_off() -> None:
    for scaling in (
        CONSOLIDATING.model_copy(update={"mode": ScalingMode.EXTERNAL}),
        Scaling.model_validate({"consolidation": {"enabled": False, "idleSeconds": 60}}),
    ):
        state = State()
        for t in (0, 100, 200):
            d, state = decide(scaling, NO_SLO, quiet(t, [1]), state)
            assert d.action != Action.REPLAN


def test_consolidation_waits_for_the_replan_budget_and_never_degrades() -> None:
    used = State(replans=(0.0, 10.0, 20.0))  # 3 re-plans within the hour: the bound
    d = None
    state = used
    for t in (100, 200, 400):
        d, state = decide(CONSOLIDATING, NO_SLO, quiet(t, [1]), state)
        assert d.action != Action.REPLAN and d.reason != "ReplanLimitReached"
    recent = State(replans=(350.0,))  # spaced less than 5 minutes ago
    d, _ = decide(CONSOLIDATING, NO_SLO, quiet(400, [1]), recent.model_copy(
        update={"idle_since_seconds": 0.0}
    ))  # fmt: skip
    assert d.action != Action.REPLAN
    assert replanned(State(), 5.0).replans == (5.0,)


def test_a_consolidated_fleet_that_costs_more_than_the_peak_plan_goes_back_to_it() -> None:
    cheap = {"consolidated": True, "replica_cost_per_hour": 0.79, "peak_cost_per_hour": 3.16}
    d, _ = decide(CONSOLIDATING, NO_SLO, quiet(0, [60, 60, 60, 60], **cheap), State())
    assert d.action != Action.REPLAN  # 4 × 0.79 = 3.16: not more than the peak plan
    d, _ = decide(CONSOLIDATING, NO_SLO, quiet(0, [60] * 5, **cheap), State())
    assert d.action == Action.REPLAN and d.reason == "DemandReturned" and d.headroom == "peak"
    assert "$3.95/h" in d.message and "$3.16/h" in d.message
    # Not consolidated: the fleet's size alone never re-plans.
    plain = {**cheap, "consolidated": False}
    d, _ = decide(CONSOLIDATING, NO_SLO, quiet(0, [60] * 5, **plain), State())
    assert d.action != Action.REPLAN


# ----------------------------------------------------------------------------- engine faults


def test_non_finite_or_negative_gauges_leave_their_replica_out_instead_of_failing() -> None:
    """An engine that reports NaN, ±Inf or a negative count must not fail the tick (the
    ReplicaLoad model refuses such values): its replica is simply not measured."""
    nan, inf = float("nan"), float("inf")
    loads = autoscaler.loads_from(
        [
            ("ok", 0.5, 1.0, 2.0),
            ("nan-kv", nan, 0.0, 0.0),
            ("inf-waiting", 0.2, inf, 0.0),
            ("negative", 0.2, -1.0, 0.0),
            ("nan-running", 0.2, 0.0, nan),
        ]
    )
    assert [load.pod for load in loads] == ["ok"]
    obs = autoscaler.observation(
        now_seconds=0,
        desired_replicas=1,
        ready_replicas=1,
        loads=loads,
        ttft_p95_seconds=nan,
        preemptions_per_second=-inf,
        oom_killed=(),
        plan={"performance": {"concurrency_per_replica": 8}, "replicas": 2, "costPerHourUsd": 4},
        saved={},
        consolidated=False,
    )
    assert obs.ttft_p95_seconds is None and obs.preemptions_per_second is None
    assert obs.planned_concurrency == 8 and obs.replica_cost_per_hour == 2.0


def test_a_consolidation_is_taken_only_when_it_saves_enough() -> None:
    obs = autoscaler.Observation(
        now_seconds=0, desired_replicas=4, ready_replicas=4, replica_cost_per_hour=2.0
    )  # a fleet of $8/h
    assert autoscaler.consolidation_saves(obs, "A", "B", 5.0, 0.3)
    assert not autoscaler.consolidation_saves(obs, "A", "B", 6.0, 0.3)
    assert not autoscaler.consolidation_saves(obs, "A", "A", 1.0, 0.3)  # the same configuration


def test_new_oom_kills_are_the_ones_after_the_last_handled() -> None:
    pods = [("a", "2026-01-01T00:00:05Z"), ("b", None), ("c", "2026-01-01T00:00:01Z")]
    killed, newest = autoscaler.new_oom_kills(pods, "2026-01-01T00:00:02Z")
    assert killed == ("a",) and newest == "2026-01-01T00:00:05Z"
    assert autoscaler.new_oom_kills(pods, newest) == ((), newest)


# ------------------------------------------------------------------- policy v2: the demand model


def engines(
    t: float,
    finished: float,
    running: list[float],
    waiting: list[float] | None = None,
    desired: int | None = None,
    **kw: object,
) -> Observation:
    """Replicas planned for 2 req/s and 4 in flight each, reporting what they finished."""
    waiting = waiting or [0.0] * len(running)
    n = len(running) if desired is None else desired
    return Observation(
        now_seconds=t,
        desired_replicas=n,
        ready_replicas=len(running),
        loads=tuple(
            ReplicaLoad(pod=f"p{i}", kv_cache_usage=0.2, requests_waiting=w, requests_running=r)
            for i, (r, w) in enumerate(zip(running, waiting, strict=True))
        ),
        requests_per_second=finished,
        planned_requests_per_second=2.0,
        planned_concurrency=4,
        **kw,  # type: ignore[arg-type]
    )


def test_demand_sets_the_replicas_directly_without_a_step_limit() -> None:
    scaling = Scaling(min_replicas=1, max_replicas=20)
    tuning = Tuning(scale_up_cooldown_seconds=0, target_utilization=0.8)
    # 4 replicas finishing 6 req/s with 3 each in flight: 6 / (2 × 0.8) → 4, hold.
    d, state = decide(scaling, NO_SLO, engines(0, 6.0, [3] * 4), State(), tuning)
    assert d.action == Action.HOLD
    # Then a surge: arrivals 7 finished + (28 - 12) more in flight over 5 s = 10.2 req/s.
    d, state = decide(scaling, NO_SLO, engines(5, 7.0, [4] * 4, [3] * 4), state, tuning)
    assert state.demand is not None and abs(state.demand - (6 + 10.2) / 2) < 1e-9  # smoothed
    # (8.1 + 12 waiting drained in 30 s) / (capacity 1.875 × 0.8): 5.7 → 6 replicas, the queue
    # spread (12 / 2 per replica) asks as many.
    assert d.action == Action.SCALE_UP and d.replicas == 6
    # It lasts: 8 req/s finished while 14 more a second queue (22 req/s arriving).
    d, state = decide(scaling, NO_SLO, engines(10, 8.0, [4] * 4, [20.5] * 4), state, tuning)
    assert state.demand is not None and abs(state.demand - (8.1 + 22) / 2) < 1e-9
    assert d.action == Action.SCALE_UP and d.replicas == 20  # the 82 waiting: no step limit


def test_the_forecast_looks_one_start_up_ahead() -> None:
    scaling = Scaling(min_replicas=1, max_replicas=50)

    def run(startup: float) -> tuple[int, State]:
        state, replicas = State(), 4
        tuning = Tuning(scale_up_cooldown_seconds=0, target_utilization=0.8)
        for k in range(40):  # 4 req/s rising by 0.05 req/s a second, for 195 s
            o = engines(5 * k, 4 + 0.25 * k, [8 / replicas] * replicas, startup_seconds=startup)
            d, state = decide(scaling, NO_SLO, o, state, tuning)
            replicas = d.replicas
        return replicas, state

    quick, state = run(0)
    # Smoothed demand 13.5 req/s at the end; its least-squares slope 0.05 req/s².
    assert abs(state.demand - 13.5) < 1e-6 and abs(state.growth - 0.05) < 1e-6
    assert quick == math.ceil(13.5 / (2 * 0.8))
    # Ordered now, a replica arrives after its start-up: sized for the demand then (at most
    # twice demand now), not for today's.
    slow, state = run(180)
    assert abs(state.growth - 0.05) < 1e-6  # fitted over 90 s, half the start-up
    assert slow == math.ceil((13.5 + 0.05 * 180) / (2 * 0.8))
    medium, _ = run(20)
    assert medium == math.ceil((13.5 + 0.05 * 20) / (2 * 0.8))


def test_noise_over_a_long_start_up_is_not_growth() -> None:
    # Poisson arrivals at 5 req/s, ticks of 5 s, a 342-s start-up: a 30-s two-point slope of the
    # smoothed demand, extrapolated over 342 s, swung the forecast by tens of req/s (so it sat
    # at twice the demand); fitted over half the start-up it stays within a fraction of it.
    import random

    rng = random.Random(5)
    state, tuning = State(), Tuning(scale_up_cooldown_seconds=0)
    scaling = Scaling(min_replicas=1, max_replicas=50)
    worst = 0.0
    for k in range(120):
        count = sum(1 for _ in range(5 * 50) if rng.random() < 0.1)  # ~Poisson(25) in 5 s
        o = engines(5 * k, count / 5, [2.0] * 3, startup_seconds=342)
        _, state = decide(scaling, NO_SLO, o, state, tuning)
        if k * 5 >= 342:
            worst = max(worst, abs(state.growth) * 342)
    assert worst < 2.5, worst  # under half the demand


def test_noise_is_not_growth() -> None:
    # Poisson-like wobble around 10 req/s: no forecast beyond the wobble.
    state, tuning = State(), Tuning(scale_up_cooldown_seconds=0)
    scaling = Scaling(min_replicas=1, max_replicas=50)
    for k, rate in enumerate([10, 12, 8, 11, 9, 12, 8, 10, 11, 9]):
        o = engines(5 * k, float(rate), [2.0] * 8, startup_seconds=180)
        d, state = decide(scaling, NO_SLO, o, state, tuning)
    assert abs(state.growth) < 0.1
    assert d.replicas <= math.ceil((10 + 0.1 * 180) / (2 * 0.8))


def test_saturated_replicas_teach_the_real_capacity() -> None:
    # The plan said 2 req/s per replica; saturated replicas finish 4 each, so demand of 8 req/s
    # needs 8 / (4 × 0.8) → 3 replicas, not the plan's 5.
    scaling = Scaling(min_replicas=1, max_replicas=20)
    state = State()
    for t in range(0, 60, 5):
        o = engines(t, 8.0, [4, 4], [2, 2])
        _, state = decide(scaling, NO_SLO, o, state, Tuning(scale_up_cooldown_seconds=3600))
    assert 1.9 < state.capacity_factor <= 2.0
    d, _ = decide(scaling, NO_SLO, engines(60, 8.0, [4, 4], [2, 2], desired=2), state)
    assert d.action == Action.SCALE_UP and d.replicas == 3


def test_one_replicas_burst_does_not_teach_the_fleet_a_lower_capacity() -> None:
    # Four replicas finish 5 req/s between them (1.25 each, the plan says 2); a burst left 5
    # waiting on one, none on the others: not saturated, so nothing learned from 1.25.
    o = engines(0, 5.0, [2, 1, 1, 1], [5, 0, 0, 0])
    _, state = decide(SCALING, NO_SLO, o, State(capacity_factor=1.0))
    assert state.capacity_factor == 1.0


def test_a_replica_that_turned_ready_inside_the_window_teaches_no_capacity() -> None:
    # Four replicas served the whole window and finished 3.3 req/s each, two running and one
    # waiting on each; a fifth turned Ready inside it and already runs two with one waiting, but
    # its finished requests are not in the window's rate. Counting it read 13.2 / 5 = 2.64 req/s
    # per replica (and 10 running over 13.2 req/s, 0.76 s each): 80 % of the real capacity.
    def seen(t: float) -> Observation:
        loads = tuple(
            ReplicaLoad(
                pod=f"p{i}",
                kv_cache_usage=0.3,
                requests_waiting=1,
                requests_running=2,
                requests_per_second=3.3 if i < 4 else None,
            )
            for i in range(5)
        )
        return Observation(
            now_seconds=t,
            desired_replicas=5,
            ready_replicas=5,
            loads=loads,
            requests_per_second=13.2,
            planned_requests_per_second=3.3,
            planned_concurrency=2,
        )

    state = State()
    for t in range(0, 30, 5):
        _, state = decide(SCALING, NO_SLO, seen(t), state)
    assert abs(state.capacity_factor - 1.0) < 1e-9
    assert state.service_seconds is not None and abs(state.service_seconds - 8 / 13.2) < 1e-9
    capacity = autoscaler._capacity(seen(30), state)
    assert capacity is not None and abs(capacity - 3.3) < 1e-9


def test_the_engines_own_running_time_sets_a_replicas_capacity() -> None:
    # The benchmark's stand-ins ran 2 at once and reported 0.564 s per request (their
    # vllm:request_inference_time_seconds), 3.5 req/s each; the running gauge read at one
    # instant over the window's finished rate said 0.75 s, and the fleet was sized for 2.66.
    def seen(t: float, running_seconds: float | None) -> Observation:
        loads = tuple(
            ReplicaLoad(
                pod=f"p{i}",
                kv_cache_usage=0.3,
                requests_waiting=1 if t == 0 else 0,
                requests_running=2,
                requests_per_second=2.66,
            )
            for i in range(4)
        )
        return Observation(
            now_seconds=t,
            desired_replicas=4,
            ready_replicas=4,
            loads=loads,
            requests_per_second=4 * 2.66,
            planned_requests_per_second=7.1,
            planned_concurrency=256,
            running_seconds=running_seconds,
        )

    state = State()
    for t in range(0, 60, 5):
        _, state = decide(SCALING, NO_SLO, seen(t, 0.564), state)
    capacity = autoscaler._capacity(seen(60, 0.564), state)
    assert capacity is not None and abs(capacity - 2 / 0.564) < 1e-6
    # Without the engines' figure, Little's law from the gauges stands in.
    state = State()
    for t in range(0, 60, 5):
        _, state = decide(SCALING, NO_SLO, seen(t, None), state)
    capacity = autoscaler._capacity(seen(60, None), state)
    assert capacity is not None and abs(capacity - 2.66) < 1e-6


def test_each_replicas_finished_rate_rides_on_its_load() -> None:
    loads = loads_from([("a", 0.2, 1.0, 2.0), ("b", 0.1, 0.0, 1.0)], {"a": 3.0})
    assert [r.requests_per_second for r in loads] == [3.0, None]
    assert loads_from([("a", 0.2, 1.0, 2.0)], {"a": math.nan})[0].requests_per_second is None


def test_a_replica_that_carries_more_without_saturating_raises_the_capacity() -> None:
    _, state = decide(SCALING, NO_SLO, engines(0, 6.0, [2]), State())
    assert state.capacity_factor == 3.0  # 6 req/s from one replica with room to spare


def test_an_engine_slower_than_its_plan_is_found_out_before_it_saturates() -> None:
    # Planned for 20 req/s and 64 in flight; the engine runs 2 at once, 0.67 s each (3 req/s).
    # A moment with one request waiting shows its real limit; Little's law its capacity.
    def seen(t: float, waiting: float) -> Observation:
        return Observation(
            now_seconds=t,
            desired_replicas=1,
            ready_replicas=1,
            loads=(
                ReplicaLoad(
                    pod="p0", kv_cache_usage=0.3, requests_waiting=waiting, requests_running=2
                ),
            ),
            requests_per_second=3.0,
            planned_requests_per_second=20.0,
            planned_concurrency=64,
        )

    d, state = decide(SCALING, NO_SLO, seen(0, 0), State())
    assert d.action == Action.HOLD  # 3 req/s against the plan's 20: nothing to do yet
    d, state = decide(SCALING, NO_SLO, seen(5, 1), state)
    assert state.engine_concurrency == 2 and state.service_seconds is not None
    assert abs(2 / state.service_seconds - 3.0) < 1e-9
    # 3 req/s at 0.8 of 3 req/s per replica: 2 replicas, before any queue builds up.
    assert d.action == Action.SCALE_UP and d.replicas == 2 and d.reason == "DemandForecast"


def test_scale_ups_in_a_row_are_not_spaced_by_the_cooldown() -> None:
    # 1 → 2 on a queue of 4; 5 s later the queue asks for 8, beyond the 2: at once.
    d, state = decide(SCALING, NO_SLO, obs(0, [(0.5, 4)]), State())
    assert d.action == Action.SCALE_UP and d.replicas == 2
    d, state = decide(SCALING, NO_SLO, obs(5, [(0.95, 16)], desired=2, ready=1), state)
    assert d.action == Action.SCALE_UP and d.replicas == 8
    # After a scale-down the cooldown still spaces a scale-up.
    tuning = Tuning(scale_down_window_seconds=0, scale_down_cooldown_seconds=0)
    d, state = decide(SCALING, NO_SLO, obs(0, [(0.1, 0)] * 3), State(), tuning)
    assert d.action == Action.SCALE_DOWN
    d, state = decide(SCALING, NO_SLO, obs(5, [(0.95, 9)] * 2), state, tuning)
    assert d.action == Action.HOLD and d.reason == "CoolingDown"


def test_a_queue_growing_while_replicas_start_does_not_order_a_replica_per_few_requests() -> None:
    # The autoscaler benchmark at 180-s start-ups: one Ready replica (3.3 req/s) under 5 req/s,
    # three ordered. Each tick of their start-up the queue grows by ~9; spread over the one
    # Ready replica it asked for 9, then 10 replicas (the cap), where the rate model — the demand
    # it measures, its growth over one start-up and the queue drained in 30 s, at 3.3 req/s a
    # replica — asks for at most 5.
    scaling = Scaling(min_replicas=1, max_replicas=10)

    def tick(t: float, waiting: float, desired: int) -> Observation:
        return Observation(
            now_seconds=t,
            desired_replicas=desired,
            ready_replicas=1,
            loads=(
                ReplicaLoad(
                    pod="p0", kv_cache_usage=0.6, requests_waiting=waiting, requests_running=2
                ),
            ),
            requests_per_second=3.3,
            planned_requests_per_second=3.3,
            planned_concurrency=2,
            startup_seconds=180,
        )

    d, state = decide(scaling, NO_SLO, tick(0, 8, 1), State())
    assert d.action == Action.SCALE_UP and d.replicas == 4  # nothing starting: the queue spread
    replicas = 4
    for t, waiting in ((5, 17), (10, 26), (15, 35)):
        d, state = decide(scaling, NO_SLO, tick(t, waiting, replicas), state)
        replicas = d.replicas
        assert replicas <= 5 and d.reason in ("ReplicasPending", "DemandForecast"), (t, d)


def test_the_forecast_looks_as_far_ahead_as_replicas_took_to_start() -> None:
    """The plan predicts a 342-s start-up; the cluster's replicas came up in about 180 s (a
    filled weight cache, a faster network): a replica ordered now arrives then, so the forecast
    looks 180 s ahead, not 342 s (which ordered twice the demand on every rise)."""
    scaling = Scaling(min_replicas=1, max_replicas=50)

    def run(startups: tuple[float, ...]) -> tuple[int, State, str]:
        state, replicas = State(), 4
        tuning = Tuning(scale_up_cooldown_seconds=0, target_utilization=0.8)
        message = ""
        for k in range(40):  # 4 req/s rising by 0.05 req/s a second, for 195 s
            o = engines(
                5 * k,
                4 + 0.25 * k,
                [8 / replicas] * replicas,
                startup_seconds=342,
                replica_startups=startups,
            )
            d, state = decide(scaling, NO_SLO, o, state, tuning)
            replicas = d.replicas
            if d.action == Action.SCALE_UP:
                message = d.message
        return replicas, state, message

    predicted, state, message = run(())
    assert state.startup_seconds is None
    assert predicted == math.ceil(min(13.5 + 0.05 * 342, 2 * 13.5) / (2 * 0.8))
    assert "as the plan predicts it" in message
    observed, state, message = run((178.0, 183.0, 180.0))
    assert state.startup_seconds == 180 and state.startup_samples == 3  # the median
    assert abs(state.growth - 0.05) < 1e-6  # fitted over 90 s, half the observed start-up
    assert observed == math.ceil((13.5 + 0.05 * 180) / (2 * 0.8))
    assert observed < predicted
    assert "180 s ahead (a replica's start-up, observed on 3 replicas)" in message


def test_the_observed_start_up_is_kept_while_no_replica_reports_one() -> None:
    scaling = Scaling(min_replicas=1, max_replicas=10)
    _, state = decide(
        scaling, NO_SLO, engines(0, 4.0, [2, 2], replica_startups=(90.0, 110.0)), State()
    )
    assert state.startup_seconds == 100 and state.startup_samples == 2
    # The replicas restarted (their Ready time is the restart's: not reported).
    d, state = decide(scaling, NO_SLO, engines(5, 4.0, [2, 2], desired=3), state)
    assert state.startup_seconds == 100
    assert d.reason == "ReplicasPending" and "ready in about 100 s" in d.message
    # Without any observation the plan's prediction is the horizon, as before.
    d, _ = decide(scaling, NO_SLO, engines(5, 4.0, [2, 2], desired=3, startup_seconds=342), State())
    assert "ready in about 342 s" in d.message


def test_a_replicas_start_up_is_read_from_its_pod() -> None:
    from mmop.status import replica_startup_seconds

    def pod(ready: str, at: str, restarts: int = 0) -> dict[str, object]:
        return {
            "metadata": {"creationTimestamp": "2026-12-06T10:00:00Z"},
            "status": {
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": ready, "lastTransitionTime": at},
                ],
                "containerStatuses": [{"name": "vllm", "restartCount": restarts}],
            },
        }

    assert replica_startup_seconds(pod("True", "2026-12-06T10:03:05Z")) == 185
    assert replica_startup_seconds(pod("False", "2026-12-06T10:00:01Z")) is None
    # Restarted: the Ready time is the restart's, not the start-up's.
    assert replica_startup_seconds(pod("True", "2026-12-06T11:00:00Z", restarts=1)) is None
    assert replica_startup_seconds(pod("True", "not a time")) is None
    assert replica_startup_seconds(pod("True", "2026-12-06T09:00:00Z")) is None  # before creation
    assert replica_startup_seconds({}) is None


def test_a_queue_below_capacity_does_not_teach_a_lower_capacity() -> None:
    # The benchmark's stand-ins run 2 at once, 0.565 s each (3.5 req/s); at 5 req/s over two of
    # them, Poisson arrivals leave one request waiting on both at some ticks. What they finish
    # then (2.5 req/s each) is what they were sent, not what they can carry: the fleet that
    # learned it was sized for 1.9-2.3 req/s per replica.
    def seen(t: float, waiting: float) -> Observation:
        return Observation(
            now_seconds=t,
            desired_replicas=2,
            ready_replicas=2,
            loads=tuple(
                ReplicaLoad(
                    pod=f"p{i}",
                    kv_cache_usage=0.2,
                    requests_waiting=waiting,
                    requests_running=2 if waiting else 1,
                    requests_per_second=2.5,
                )
                for i in range(2)
            ),
            requests_per_second=5.0,
            planned_requests_per_second=7.1,
            planned_concurrency=256,
            running_seconds=0.565,
        )

    state = State()
    for k in range(24):
        _, state = decide(SCALING, NO_SLO, seen(5 * k, 1 if k % 3 == 0 else 0), state)
    capacity = autoscaler._capacity(seen(120, 0), state)
    assert capacity is not None and abs(capacity - 2 / 0.565) < 1e-6


def test_the_utilization_a_replica_is_sized_for_comes_from_the_spec() -> None:
    # 4 replicas finishing 6 req/s, 2 req/s each by the plan: at 0.8 of it, 6 / 1.6 → 4 (hold);
    # at the default 0.7, 6 / 1.4 → 5; at 0.5, as a user with slow start-ups keeps headroom
    # for, 6 / 1.0 → 6.
    tuning = {"scaleUpCooldownSeconds": 0}

    def replicas(targets: dict[str, float]) -> tuple[Action, int]:
        spec = {"maxReplicas": 20, "behavior": tuning, "targets": targets}
        d, _ = decide(Scaling.model_validate(spec), NO_SLO, engines(0, 6.0, [1.5] * 4), State())
        return d.action, d.replicas

    assert replicas({"utilization": 0.8}) == (Action.HOLD, 4)
    assert replicas({}) == (Action.SCALE_UP, 5)
    assert replicas({"utilization": 0.5}) == (Action.SCALE_UP, 6)
