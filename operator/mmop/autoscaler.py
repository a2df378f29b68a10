"""The autoscaler's policy: replicas (and re-plan requests) from what the engines report. Pure.

Horizontal scaling is model-based (policy v2). Each tick the policy estimates demand from the
engines — arrivals per second (requests finished over the window plus the growth of those in
flight) and requests in flight — and sets the replicas that carry it directly, with no fixed
step: the most of

- the forecast arrival rate, plus the queue drained within 30 s, over one replica's capacity:
  the plan's requests/s per replica at the SLO, corrected online from the throughput replicas
  really reach when saturated and bounded by the engine's concurrency over a request's running
  time (Little's law), kept at a target utilisation (0.7); the forecast is the smoothed
  demand plus its growth (its least-squares slope over 30 s or half a start-up, the longer)
  over one replica's predicted start-up time (capped at twice demand), so what is ordered now
  is sized for when it arrives;
- without the engines' request rates: requests in flight over the plan's in-SLO concurrency per
  replica (the engines' ``--max-num-seqs``), at the same utilisation;
- the KV cache and queue the replicas report, spread so each keeps ``kvSpare`` (0.10) KV and
  ``queueSpare`` (3) queue slots to spare (a replica is saturated at ``kvCacheUsage`` 0.80 or
  ``queueLength`` 5 waiting).

Replicas that are starting count as capacity arriving at their predicted ready time: they are
part of the fleet the demand is compared with, never a block on further decisions. A breach —
every replica saturated, too little spare room, or the TTFT p95 above the SLO — adds at least
one replica when none is already on its way. Scale-down is stabilised (the highest
recommendation over a longer window, as the HPA does), one replica at a time by default, and
only when the load of all replicas spread over fewer would still leave the spare room (and the
TTFT p95 well inside the SLO); a scale-up step limit is available in spec.scaling.behavior but
off by default.

Re-planning: pods killed for memory (OOMKilled, or a CUDA out-of-memory termination message)
ask for a plan with more memory headroom; sustained preemptions, or a saturated KV cache at low
concurrency, ask for more KV headroom. Re-plans are spaced and bounded in number; past the
bound the model is Degraded instead, so a wrong plan never loops.

Consolidation (mode Auto): when every replica has stayed below half its planned load — requests
in flight against the plan's concurrency per replica, and KV use against the saturation target —
for ``spec.scaling.consolidation.idleSeconds``, the policy asks for a plan sized for what the
fleet carried (twice the peak in flight seen over that time). The operator takes it only if it
is another configuration that still serves spec.workload's peak and costs at least
``minSavings`` less than the fleet does now. A consolidated fleet that later grows until it
costs more than the plan for the peak would is re-planned back to that plan (DemandReturned).
Both count against the same re-plan budget as the others.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from mmop.api import Scaling, ScalingMode, Slo


class Action(StrEnum):
    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    HOLD = "Hold"
    REPLAN = "Replan"


class ReplicaLoad(BaseModel):
    """One Ready replica's load at the end of the window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pod: str = Field(description="Pod name")
    kv_cache_usage: float = Field(ge=0, le=1, description="vllm:kv_cache_usage_perc, 0–1")
    requests_waiting: float = Field(ge=0, description="vllm:num_requests_waiting")
    requests_running: float = Field(default=0, ge=0, description="vllm:num_requests_running")
    requests_per_second: float | None = Field(
        default=None,
        ge=0,
        description="Requests it finished per second over its window (None: scraped only once "
        "so far, e.g. it turned Ready since the last tick)",
    )


class Observation(BaseModel):
    """What the operator saw for one model at one tick."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    now_seconds: float = Field(description="Monotonic-enough wall time of the tick, seconds")
    desired_replicas: int = Field(ge=0, description="The Deployment's spec.replicas")
    ready_replicas: int = Field(ge=0, description="Ready pods")
    loads: tuple[ReplicaLoad, ...] = Field(default=(), description="Ready pods that reported")
    ttft_p95_seconds: float | None = Field(default=None, ge=0, description="Over the window")
    preemptions_per_second: float | None = Field(default=None, ge=0, description="All pods")
    oom_killed: tuple[str, ...] = Field(
        default=(), description="Pods whose engine was killed for memory since the last tick"
    )
    kv_below_prediction: str | None = Field(
        default=None,
        description="A new engine's KV cache far below the plan's prediction (what it reported)",
    )
    planned_concurrency: int | None = Field(
        default=None, ge=1, description="Requests in flight per replica the plan was sized for"
    )
    replica_cost_per_hour: float | None = Field(
        default=None, ge=0, description="$/h of one replica of the plan in force"
    )
    consolidated: bool = Field(
        default=False, description="The plan in force is sized for observed demand"
    )
    peak_cost_per_hour: float | None = Field(
        default=None, ge=0, description="$/h of the plan for spec.workload's peak"
    )
    requests_per_second: float | None = Field(
        default=None, ge=0, description="Requests finished per second over the window, all pods"
    )
    planned_requests_per_second: float | None = Field(
        default=None, gt=0, description="Requests/s one replica carries at the SLO (the plan's)"
    )
    startup_seconds: float | None = Field(
        default=None, ge=0, description="Predicted time for a new replica to turn Ready"
    )
    running_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Mean time the requests finished over the window spent running, as the "
        "engines report it (vllm:request_inference_time_seconds)",
    )
    replica_startups: tuple[float, ...] = Field(
        default=(),
        description="Seconds each Ready replica took from its creation to Ready (replicas whose "
        "engine never restarted)",
    )


class State(BaseModel):
    """What the policy remembers between ticks; persisted in status.autoscaler."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    recommendations: tuple[tuple[float, int], ...] = Field(
        default=(), description="(time, replicas) recommended within the longest window"
    )
    last_change_seconds: float | None = Field(default=None, description="Last replica change")
    last_direction: int = Field(default=0, ge=-1, le=1, description="+1 up, -1 down, 0 none")
    reversals: tuple[float, ...] = Field(default=(), description="Times of direction reversals")
    pressure_since_seconds: float | None = Field(
        default=None, description="Since when KV pressure (preemptions/saturation) has lasted"
    )
    replans: tuple[float, ...] = Field(default=(), description="Times of re-plans requested")
    idle_since_seconds: float | None = Field(
        default=None, description="Since when every replica has stayed below half its load"
    )
    idle_peak: float = Field(default=0, ge=0, description="Most requests in flight while idle")
    demand_seconds: float | None = Field(default=None, description="When demand was last seen")
    demand: float | None = Field(default=None, ge=0, description="Smoothed arrivals/s then")
    demand_history: tuple[tuple[float, float], ...] = Field(
        default=(), description="(time, smoothed demand) over the growth window"
    )
    in_flight: float | None = Field(default=None, ge=0, description="Requests in flight then")
    growth: float = Field(default=0, description="Growth of demand, req/s per second")
    capacity_factor: float = Field(
        default=1.0, gt=0, description="Observed over planned requests/s per replica"
    )
    engine_concurrency: float | None = Field(
        default=None,
        gt=0,
        description="Most requests one engine ran while others waited on it: its real limit",
    )
    service_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Time a request spends running (the engines' figure, else Little's "
        "law), smoothed",
    )
    startup_seconds: float | None = Field(
        default=None,
        ge=0,
        description="A replica's start-up as observed: the median of the Ready replicas' "
        "creation-to-Ready times, kept while none reports one",
    )
    startup_samples: int = Field(default=0, ge=0, description="Replicas that median is over")


class ScalingDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    replicas: int = Field(ge=0, description="Replicas after the decision")
    reason: str = Field(description="CamelCase reason")
    message: str = Field(default="")
    headroom: str | None = Field(
        default=None,
        description="For a re-plan: 'memory' or 'kv' — what the new plan needs more of; "
        "'cost' — a cheaper plan sized for ``demand``; 'peak' — back to the plan for the peak; "
        "'calibration' — planned again with the KV cache the engines reported",
    )
    demand: int | None = Field(
        default=None, ge=1, description="For a 'cost' re-plan: requests in flight to size for"
    )


class Tuning(BaseModel):
    """Policy constants that are not (yet) part of the CRD."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kv_spare: float = Field(default=0.10, description="Scale up below this average spare KV")
    queue_spare: float = Field(default=3, description="Scale up below this average spare queue")
    scale_up_window_seconds: float = Field(default=0, ge=0)
    scale_down_window_seconds: float = Field(default=120, ge=0)
    scale_up_cooldown_seconds: float = Field(default=15, ge=0)
    scale_down_cooldown_seconds: float = Field(default=60, ge=0)
    max_scale_up_step: int | None = Field(default=None, ge=1, description="None: no limit")
    max_scale_down_step: int | None = Field(default=None, ge=1, description="None: no limit")
    slo_down_margin: float = Field(default=0.8, gt=0, le=1, description="Scale down only below")
    pressure_seconds: float = Field(default=60, ge=0, description="KV pressure before re-plan")
    replan_spacing_seconds: float = Field(default=300, ge=0)
    max_replans: int = Field(default=3, ge=0, description="Re-plans per replan_window_seconds")
    replan_window_seconds: float = Field(default=3600, gt=0)
    reversal_window_seconds: float = Field(default=3600, gt=0)
    target_utilization: float = Field(
        default=0.7, gt=0, le=1, description="Load per replica, as a share of its capacity"
    )
    demand_smoothing: float = Field(
        default=0.5, gt=0, le=1, description="Weight of the newest arrival rate in the demand"
    )
    growth_window_seconds: float = Field(
        default=30,
        gt=0,
        description="Growth: the smoothed demand's least-squares slope over this long, or half a "
        "replica's start-up if longer",
    )
    max_forecast_factor: float = Field(
        default=2.0, ge=1, description="The forecast is at most this many times demand now"
    )
    capacity_smoothing: float = Field(
        default=0.5, gt=0, le=1, description="Weight of the newest saturated throughput"
    )
    drain_seconds: float = Field(
        default=30, gt=0, description="Replicas are sized to drain the queue within this long"
    )
    consolidate: bool = Field(default=True, description="Consolidate an idle fleet (mode Auto)")
    idle_seconds: float = Field(default=600, ge=0, description="Idle this long to consolidate")
    idle_fraction: float = Field(
        default=0.5, gt=0, le=1, description="Idle: below this fraction of the planned load"
    )


def tuning_for(scaling: Scaling) -> Tuning:
    """The policy constants a MultimodalModel's spec.scaling sets."""
    b, t = scaling.behavior, scaling.targets
    return Tuning(
        kv_spare=t.kv_spare,
        queue_spare=t.queue_spare,
        target_utilization=t.utilization,
        scale_up_window_seconds=b.scale_up_stabilization_seconds,
        scale_down_window_seconds=b.scale_down_stabilization_seconds,
        scale_up_cooldown_seconds=b.scale_up_cooldown_seconds,
        scale_down_cooldown_seconds=b.scale_down_cooldown_seconds,
        max_scale_up_step=b.max_scale_up_step,
        max_scale_down_step=b.max_scale_down_step,
        consolidate=scaling.consolidation.enabled,
        idle_seconds=scaling.consolidation.idle_seconds,
    )


def decide(
    scaling: Scaling,
    slo: Slo,
    obs: Observation,
    state: State,
    tuning: Tuning | None = None,
) -> tuple[ScalingDecision, State]:
    """One tick of the policy: the decision and the state to remember."""
    if tuning is None:
        tuning = tuning_for(scaling)
    now = obs.now_seconds
    replans = tuple(t for t in state.replans if now - t < tuning.replan_window_seconds)
    state = state.model_copy(update={"replans": replans})

    replan = _replan(obs, state, tuning)
    if replan is not None:
        decision, state = replan
        if decision is not None:
            return decision, state

    if scaling.mode == ScalingMode.OFF:
        return _hold(obs, "ScalingOff", "spec.scaling.mode is Off"), state
    consolidation, state = _consolidate(scaling, obs, state, tuning)
    if consolidation is not None:
        return consolidation, state
    state = _learn_startup(obs, state)
    state = _learn(obs, state, tuning)
    recommended, reason, message = _recommend(scaling, slo, obs, state, tuning)
    window = max(tuning.scale_up_window_seconds, tuning.scale_down_window_seconds)
    # The recommendations within the longest window, and the last one before it (it was still
    # in force when the window opened).
    older = [(t, r) for t, r in state.recommendations if now - t > window]
    kept = [(t, r) for t, r in state.recommendations if now - t <= window]
    history = (*older[-1:], *kept, (now, recommended))
    state = state.model_copy(update={"recommendations": history})
    current = obs.desired_replicas
    target = current
    if recommended > current:
        step = tuning.max_scale_up_step
        target = min(
            max(_over(history, now, tuning.scale_up_window_seconds, current, pick=min), current),
            current + step if step is not None else scaling.max_replicas,
            scaling.max_replicas,
        )
    elif recommended < current:
        step = tuning.max_scale_down_step
        target = max(
            _over(history, now, tuning.scale_down_window_seconds, current, pick=max),
            current - step if step is not None else scaling.min_replicas,
            scaling.min_replicas,
        )
        target = min(target, current)
        if target == current:
            reason, message = (
                "ScaleDownStabilizing",
                (
                    f"{message}; waiting for the recommendation to hold for "
                    f"{tuning.scale_down_window_seconds:.0f} s"
                ),
            )
    # Bounds always win, whatever the signals.
    bounded = min(max(target, scaling.min_replicas), scaling.max_replicas)
    if bounded != target:
        target, reason = bounded, "OutsideBounds"
        message = f"replicas kept within [{scaling.min_replicas}, {scaling.max_replicas}]"
    if target == current:
        return _hold(obs, reason, message), state

    direction = 1 if target > current else -1
    since = None if state.last_change_seconds is None else now - state.last_change_seconds
    cooldown = (
        tuning.scale_up_cooldown_seconds if direction > 0 else tuning.scale_down_cooldown_seconds
    )
    if direction > 0 and state.last_direction > 0:
        # Scale-ups in a row are not spaced: the starting replicas already count as capacity,
        # so a second one is demand beyond them, and waiting only makes it arrive later.
        cooldown = 0
    if since is not None and since < cooldown and reason != "OutsideBounds":
        return _hold(
            obs, "CoolingDown", f"{message}; last change {since:.0f} s ago (< {cooldown:.0f} s)"
        ), state
    if scaling.mode == ScalingMode.EXTERNAL:
        # Stable wording (no live figures), so the status records it once per recommendation.
        return _hold(obs, "ExternalScaling", f"would set {target} replicas ({reason})"), state
    reversals = tuple(t for t in state.reversals if now - t < tuning.reversal_window_seconds)
    if state.last_direction and direction != state.last_direction:
        reversals += (now,)
    # The stabilisation history goes on across changes (as the HPA's does): recommendations
    # are replica counts for the demand, not steps from the fleet of their time, so a fall is
    # followed one window behind it. Starting it again at each change made each further
    # scale-down wait a whole window: one replica per ~126 s on the benchmark's falling sine.
    state = state.model_copy(
        update={"last_change_seconds": now, "last_direction": direction, "reversals": reversals}
    )
    action = Action.SCALE_UP if direction > 0 else Action.SCALE_DOWN
    return ScalingDecision(action=action, replicas=target, reason=reason, message=message), state


def _over(
    history: Sequence[tuple[float, int]],
    now: float,
    window: float,
    current: int,
    pick: Callable[[Sequence[int]], int],
) -> int:
    """The stabilised recommendation: min (scale-up) or max (scale-down) of those made over the
    window, counting the one in force when it opened; while the history does not reach back
    that far, the current count counts too (a new operator does not scale down at once)."""
    if window <= 0:
        return history[-1][1]
    start = now - window
    inside = [r for t, r in history if t >= start]
    before = [r for t, r in history if t < start]
    if before:
        return pick([before[-1], *inside])
    if history[0][0] <= start:
        return pick(inside)
    return pick([current, *inside])


def _hold(obs: Observation, reason: str, message: str) -> ScalingDecision:
    return ScalingDecision(
        action=Action.HOLD, replicas=obs.desired_replicas, reason=reason, message=message
    )


def _in_flight(obs: Observation) -> float:
    return sum(r.requests_running + r.requests_waiting for r in obs.loads)


def _learn(obs: Observation, state: State, tuning: Tuning) -> State:
    """Demand (arrivals/s: finished plus the growth of those in flight, smoothed), its growth
    (the smoothed demand's slope over the growth window: a slope between two ticks is mostly
    Poisson noise), and the capacity correction (what a saturated replica really finishes per
    second against the plan's figure), from this tick's signals."""
    if obs.requests_per_second is None or not obs.loads:
        return state
    now, in_flight = obs.now_seconds, _in_flight(obs)
    arrivals = obs.requests_per_second
    demand = arrivals
    if state.demand_seconds is not None and now > state.demand_seconds:
        if state.in_flight is not None:
            dt = now - state.demand_seconds
            arrivals = max(0.0, arrivals + (in_flight - state.in_flight) / dt)
        if state.demand is not None:
            a = tuning.demand_smoothing
            demand = a * arrivals + (1 - a) * state.demand
        else:
            demand = arrivals
    # The forecast extrapolates the growth over a replica's start-up, which multiplies the
    # slope's Poisson noise by that long: over a window of at least half the start-up, fitted by
    # least squares, the noise carried into the forecast stays a fraction of the demand (at
    # 5 req/s and a 342-s start-up, ±17 req/s from a 30-s two-point slope; ~±1 from a 171-s fit).
    window = max(tuning.growth_window_seconds, (_startup(obs, state) or 0.0) / 2)
    history = (*(h for h in state.demand_history if now - h[0] <= window), (now, demand))
    first_t = history[0][0]
    growth = _slope(history) if now - first_t >= window / 2 else 0.0
    factor = state.capacity_factor
    planned = obs.planned_requests_per_second
    # Capacity is read from the replicas with a finished rate: one scraped only once runs and
    # queues requests whose finishing no rate counts yet, so counting it taught a fleet of 4
    # saturated replicas and 1 new one 80 % of its capacity.
    rated = [r for r in obs.loads if r.requests_per_second is not None]
    sample = rated or list(obs.loads)
    finished = (
        sum(r.requests_per_second or 0.0 for r in rated) if rated else obs.requests_per_second
    )
    if planned is not None:
        observed = finished / len(sample) / planned
        # Saturated — every replica with a queue, or every one running all it may — is when
        # what they finish is what a replica can finish. (A mean of one waiting is not: one
        # replica's burst among idle ones taught the fleet a capacity of what it was sent.)
        queued = all(r.requests_waiting >= 1 for r in sample)
        full = obs.planned_concurrency is not None and all(
            r.requests_running >= obs.planned_concurrency for r in sample
        )
        if queued or full:  # saturated: this is what a replica can finish
            a = tuning.capacity_smoothing
            factor = a * observed + (1 - a) * factor
        elif observed > factor:  # carries more than thought without saturating
            factor = observed
        factor = min(20.0, max(0.05, factor))
    # Little's law: requests running = finished/s × time each runs; an engine with requests
    # waiting runs as many as it can, which is its real concurrency limit.
    concurrency = state.engine_concurrency
    for r in obs.loads:
        if r.requests_waiting >= 1 and r.requests_running > 0:
            concurrency = max(concurrency or 0.0, r.requests_running)
    # The time a request runs: what the engines report it took, else Little's law (requests
    # running now over those finished per second in the window — a gauge read at one instant,
    # which overstated it by a third against the stand-in engines' own figure in the benchmark).
    service = state.service_seconds
    running = sum(r.requests_running for r in sample)
    seen: float | None = None
    if obs.running_seconds:
        seen = obs.running_seconds
    elif finished and running > 0:
        seen = running / finished
    if seen is not None:
        a = tuning.capacity_smoothing
        service = seen if service is None else a * seen + (1 - a) * service
    return state.model_copy(
        update={
            "demand_seconds": now,
            "demand": demand,
            "demand_history": history,
            "in_flight": in_flight,
            "growth": growth,
            "capacity_factor": factor,
            "engine_concurrency": concurrency,
            "service_seconds": service,
        }
    )


def _learn_startup(obs: Observation, state: State) -> State:
    """A replica's start-up as this cluster delivers it: the median of the Ready replicas'
    creation-to-Ready times (image pull, weights, loading, compilation, graph capture — and the
    wait for a node), kept while no replica reports one. The plan's prediction is a model of
    that path; once a replica has come up, what it took is the better forecast horizon."""
    if not obs.replica_startups:
        return state
    return state.model_copy(
        update={
            "startup_seconds": statistics.median(obs.replica_startups),
            "startup_samples": len(obs.replica_startups),
        }
    )


def _startup(obs: Observation, state: State) -> float | None:
    """The forecast horizon: the observed start-up, else the plan's prediction."""
    return state.startup_seconds if state.startup_seconds is not None else obs.startup_seconds


def _startup_source(obs: Observation, state: State) -> str:
    if state.startup_seconds is not None:
        n = state.startup_samples
        return f"a replica's start-up, observed on {n} replica{'s' if n != 1 else ''}"
    if obs.startup_seconds is not None:
        return "a replica's start-up, as the plan predicts it"
    return "no start-up known"


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (time, value) points (0 without a spread of times)."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def _capacity(obs: Observation, state: State) -> float | None:
    """Requests/s one replica carries. Once an engine has been seen at its limit (requests
    waiting on it), its concurrency over the time a request runs (Little's law: an engine that
    runs at most 2 at once, 0.56 s each, finishes 3.5 a second). Before that, the plan's figure
    corrected by what replicas finished, and no more than the plan's concurrency over that
    time. (What replicas with a queue finish is a floor, not the capacity: at three quarters of
    it, Poisson arrivals leave a request waiting on every replica at some ticks, and the
    benchmark's fleet learned 1.9–2.3 req/s per replica where the engines ran 3.5.)"""
    if obs.planned_requests_per_second is None:
        return None
    if state.engine_concurrency and state.service_seconds:
        return state.engine_concurrency / state.service_seconds
    capacity = obs.planned_requests_per_second * state.capacity_factor
    if obs.planned_concurrency is not None and state.service_seconds:
        capacity = min(capacity, obs.planned_concurrency / state.service_seconds)
    return capacity


def _needs(
    scaling: Scaling, obs: Observation, state: State, tuning: Tuning
) -> list[tuple[float, str, str]]:
    """Replicas the demand needs, by each measure: (replicas, reason, what it is from). With
    a rate model (the engines' finished requests and the plan's requests/s per replica): the
    forecast arrival rate plus the queue drained within ``drain_seconds``; without one, the
    requests in flight over the plan's concurrency. Always: the KV cache, spread so each replica
    keeps its spare room; and the queue spread the same way (a queue is demand the rate cannot
    show when clients wait for their answers before asking again) — except while replicas are
    starting under a rate model: the queue then grows with every tick of their start-up, and
    spreading it would order a replica per few requests that the starting ones will drain (the
    rate model's drain term still counts it)."""
    util = tuning.target_utilization
    loads = obs.loads
    kv_limit = scaling.targets.kv_cache_usage
    total_kv = sum(r.kv_cache_usage for r in loads)
    total_queue = sum(r.requests_waiting for r in loads)
    saturated = all(
        r.kv_cache_usage >= kv_limit or r.requests_waiting >= scaling.targets.queue_length
        for r in loads
    )
    reason = "Saturated" if saturated else "LowSpareCapacity"
    queue_room = max(1e-9, scaling.targets.queue_length - tuning.queue_spare)
    capacity = _capacity(obs, state)
    rate_model = state.demand is not None and capacity is not None
    starting = obs.desired_replicas > obs.ready_replicas
    needs: list[tuple[float, str, str]] = [
        (
            total_kv / max(1e-9, kv_limit - tuning.kv_spare),
            reason,
            f"KV {total_kv / len(loads):.2f} mean over {len(loads)} replica(s)",
        ),
    ]
    if not (rate_model and starting):
        needs.append(
            (
                total_queue / queue_room,
                reason,
                f"{total_queue:.0f} waiting over {len(loads)} replica(s)",
            )
        )
    if rate_model:
        assert state.demand is not None and capacity is not None
        ahead = _startup(obs, state) or 0.0
        forecast = min(
            state.demand + max(0.0, state.growth) * ahead,
            state.demand * tuning.max_forecast_factor,
        )
        forecast = max(forecast, state.demand)
        drain = total_queue / tuning.drain_seconds
        needs.append(
            (
                (forecast + drain) / (capacity * util),
                "DemandForecast",
                f"{state.demand:.2f} req/s now, {forecast:.2f} forecast {ahead:.0f} s ahead "
                f"({_startup_source(obs, state)}), {total_queue:.0f} waiting to drain in "
                f"{tuning.drain_seconds:.0f} s, {capacity:.2f} req/s per replica",
            )
        )
        return needs
    if obs.planned_concurrency is not None:
        in_flight = _in_flight(obs)
        needs.append(
            (
                in_flight / (obs.planned_concurrency * util),
                "ConcurrencyDemand",
                f"{in_flight:.0f} requests in flight, {obs.planned_concurrency} per replica",
            )
        )
    return needs


def _recommend(
    scaling: Scaling, slo: Slo, obs: Observation, state: State, tuning: Tuning
) -> tuple[int, str, str]:
    """(replicas, reason, message) from this tick's signals and the demand model."""
    current = obs.desired_replicas
    if current < scaling.min_replicas:
        return scaling.min_replicas, "BelowMinimum", "fewer replicas than scaling.minReplicas"
    loads = obs.loads
    pending = max(0, current - obs.ready_replicas)
    if not loads:
        if pending:
            return current, "ReplicasPending", _pending_message(obs, state, pending)
        return current, "NoSignals", "no Ready replica reported metrics"
    kv_limit = scaling.targets.kv_cache_usage
    queue_limit = scaling.targets.queue_length
    free = [r for r in loads if r.kv_cache_usage < kv_limit and r.requests_waiting < queue_limit]
    total_kv = sum(r.kv_cache_usage for r in loads)
    total_queue = sum(r.requests_waiting for r in loads)
    slo_target = slo.ttft_p95_seconds
    ttft = obs.ttft_p95_seconds
    summary = (
        f"KV {total_kv / len(loads):.2f} mean, {total_queue:.0f} waiting over "
        f"{len(loads)} replica(s)" + (f", TTFT p95 {ttft:.2f} s" if ttft is not None else "")
    )
    need, need_reason, need_message = max(_needs(scaling, obs, state, tuning), key=lambda n: n[0])
    wanted = max(1, math.ceil(need - 1e-9))
    if wanted > current:
        # Demand beyond the fleet, starting replicas included: straight to what it needs.
        return wanted, need_reason, f"{need_message}: needs {need:.1f} replicas ({summary})"
    # Breaches: at least one more replica, unless one is already on its way.
    spare_kv = sum(max(0.0, kv_limit - r.kv_cache_usage) for r in loads) / len(loads)
    spare_queue = sum(max(0.0, queue_limit - r.requests_waiting) for r in loads) / len(loads)
    breach: tuple[str, str] | None = None
    if not free:
        breach = "Saturated", f"every replica is saturated: {summary}"
    elif spare_kv < tuning.kv_spare or spare_queue < tuning.queue_spare:
        breach = (
            "LowSpareCapacity",
            f"spare KV {spare_kv:.2f} (trigger {tuning.kv_spare}), spare queue "
            f"{spare_queue:.1f} (trigger {tuning.queue_spare:g}): {summary}",
        )
    elif slo_target is not None and ttft is not None and ttft > slo_target:
        breach = "SloMissed", f"TTFT p95 above the {slo_target:g} s target: {summary}"
    if breach is not None:
        if pending:
            waiting = _pending_message(obs, state, pending)
            return current, "ReplicasPending", f"{breach[1]}; {waiting}"
        return current + 1, *breach
    if pending:
        return current, "ReplicasPending", _pending_message(obs, state, pending)
    slo_ok = slo_target is None or ttft is None or ttft <= tuning.slo_down_margin * slo_target
    if current > 1 and current > scaling.min_replicas and slo_ok:
        # The fewest replicas that every measure agrees carry it, spread so each keeps its
        # spare room: straight there (the stabilisation window and maxScaleDownStep pace it).
        step = tuning.max_scale_down_step
        floor = max(wanted, scaling.min_replicas, 1, current - step if step is not None else 1)
        for fewer in range(floor, current):
            if (
                total_kv / fewer < kv_limit - tuning.kv_spare
                and total_queue / fewer < queue_limit - tuning.queue_spare
            ):
                return fewer, "SpareCapacity", f"{fewer} replica(s) would carry it: {summary}"
    return current, "WithinTargets", summary


def _pending_message(obs: Observation, state: State, pending: int) -> str:
    startup = _startup(obs, state)
    when = f", ready in about {startup:.0f} s from their start" if startup else ""
    return (
        f"{obs.ready_replicas}/{obs.desired_replicas} Ready: {pending} starting count as "
        f"capacity on its way{when}"
    )


def _replan(
    obs: Observation, state: State, tuning: Tuning
) -> tuple[ScalingDecision | None, State] | None:
    """A re-plan decision when the engines show the plan was wrong; None when they do not."""
    now = obs.now_seconds
    headroom: str | None = None
    reason = message = ""
    if obs.oom_killed:
        headroom, reason = "memory", "OOMKilled"
        message = f"engine killed for memory in {', '.join(sorted(obs.oom_killed))}"
        state = state.model_copy(update={"pressure_since_seconds": None})
    elif obs.kv_below_prediction:
        headroom, reason, message = "calibration", "KvBelowPrediction", obs.kv_below_prediction
    else:
        pressure = _kv_pressure(obs)
        if pressure is None:
            return None, state.model_copy(update={"pressure_since_seconds": None})
        since = state.pressure_since_seconds
        if since is None:
            return None, state.model_copy(update={"pressure_since_seconds": now})
        if now - since < tuning.pressure_seconds:
            return None, state
        headroom, reason, message = "kv", "KVCachePressure", pressure
    if len(state.replans) >= tuning.max_replans:
        return (
            ScalingDecision(
                action=Action.HOLD,
                replicas=obs.desired_replicas,
                reason="ReplanLimitReached",
                message=f"{message}; {len(state.replans)} re-plans in the last "
                f"{tuning.replan_window_seconds:.0f} s already",
            ),
            state,
        )
    if state.replans and now - state.replans[-1] < tuning.replan_spacing_seconds:
        return None, state
    state = state.model_copy(
        update={"replans": (*state.replans, now), "pressure_since_seconds": None}
    )
    return (
        ScalingDecision(
            action=Action.REPLAN,
            replicas=obs.desired_replicas,
            reason=reason,
            message=message,
            headroom=headroom,
        ),
        state,
    )


def _consolidate(
    scaling: Scaling, obs: Observation, state: State, tuning: Tuning
) -> tuple[ScalingDecision | None, State]:
    """A 'cost' or 'peak' re-plan when the fleet's size and its plan have drifted apart.

    Unlike the other re-plans this one is only a request: the operator takes it when a plan
    saves enough (then it calls ``replanned``), so the budget is not spent here."""
    if scaling.mode != ScalingMode.AUTO or not tuning.consolidate:
        return None, _not_idle(state)
    now = obs.now_seconds
    budget_left = len(state.replans) < tuning.max_replans and (
        not state.replans or now - state.replans[-1] >= tuning.replan_spacing_seconds
    )
    if (
        obs.consolidated
        and obs.replica_cost_per_hour is not None
        and obs.peak_cost_per_hour is not None
        and obs.desired_replicas * obs.replica_cost_per_hour > obs.peak_cost_per_hour + 1e-9
    ):
        if not budget_left:
            return None, _not_idle(state)
        fleet = obs.desired_replicas * obs.replica_cost_per_hour
        return (
            ScalingDecision(
                action=Action.REPLAN,
                replicas=obs.desired_replicas,
                reason="DemandReturned",
                message=f"{obs.desired_replicas} replicas of the consolidated plan cost "
                f"${fleet:.2f}/h, more than the ${obs.peak_cost_per_hour:.2f}/h of the plan for "
                "spec.workload's peak",
                headroom="peak",
            ),
            _not_idle(state),
        )
    in_flight = sum(r.requests_running + r.requests_waiting for r in obs.loads)
    planned = obs.planned_concurrency
    kv_limit = scaling.targets.kv_cache_usage
    idle = (
        planned is not None
        and obs.desired_replicas > 0
        and obs.ready_replicas >= obs.desired_replicas
        and len(obs.loads) >= obs.desired_replicas
        and in_flight <= tuning.idle_fraction * planned * obs.desired_replicas
        and all(r.kv_cache_usage < tuning.idle_fraction * kv_limit for r in obs.loads)
    )
    if not idle:
        return None, _not_idle(state)
    since = state.idle_since_seconds
    if since is None:
        return None, state.model_copy(update={"idle_since_seconds": now, "idle_peak": in_flight})
    peak = max(state.idle_peak, in_flight)
    state = state.model_copy(update={"idle_peak": peak})
    if now - since < tuning.idle_seconds or not budget_left:
        return None, state
    demand = max(1, math.ceil(peak / tuning.idle_fraction))
    return (
        ScalingDecision(
            action=Action.REPLAN,
            replicas=obs.desired_replicas,
            reason="LowUtilization",
            message=f"at most {peak:.0f} requests in flight over "
            f"{now - since:.0f} s on {obs.desired_replicas} replica(s) "
            f"planned for {planned} each",
            headroom="cost",
            demand=demand,
        ),
        _not_idle(state),
    )


def _not_idle(state: State) -> State:
    if state.idle_since_seconds is None and not state.idle_peak:
        return state
    return state.model_copy(update={"idle_since_seconds": None, "idle_peak": 0})


def replanned(state: State, now: float) -> State:
    """The state after the operator took a consolidation re-plan (it counts in the budget)."""
    return state.model_copy(update={"replans": (*state.replans, now)})


def _kv_pressure(obs: Observation) -> str | None:
    """Why the KV cache is too small for the traffic, or None."""
    if obs.preemptions_per_second and obs.preemptions_per_second > 0:
        return f"{obs.preemptions_per_second:.2f} preemptions/s"
    if obs.planned_concurrency and obs.loads:
        for r in obs.loads:
            low = r.requests_running < obs.planned_concurrency / 2
            if r.kv_cache_usage >= 0.95 and low:
                return (
                    f"{r.pod}: KV cache {r.kv_cache_usage:.2f} full with only "
                    f"{r.requests_running:.0f} requests running (planned for "
                    f"{obs.planned_concurrency})"
                )
    return None


def reversals_in(state: State, now: float, window_seconds: float) -> int:
    return sum(1 for t in state.reversals if now - t < window_seconds)


def loads_from(
    pods: Sequence[tuple[str, float | None, float | None, float | None]],
    finished: Mapping[str, float] | None = None,
) -> tuple[ReplicaLoad, ...]:
    """ReplicaLoads from (pod, kv usage, waiting, running) and, where known, each pod's finished
    requests per second over the window; pods missing a gauge are left out."""
    rates = finished or {}
    return tuple(
        ReplicaLoad(
            pod=pod,
            kv_cache_usage=min(1.0, max(0.0, kv)),
            requests_waiting=waiting,
            requests_running=running or 0.0,
            requests_per_second=rate if _usable(rate := rates.get(pod)) else None,
        )
        for pod, kv, waiting, running in pods
        if _usable(kv) and _usable(waiting) and (running is None or _usable(running))
    )


def _usable(value: float | None) -> TypeGuard[float]:
    """A gauge the policy can use: present, finite and not negative (an engine's NaN, ±Inf or
    negative reading leaves its replica out of the tick instead of failing it)."""
    return value is not None and math.isfinite(value) and value >= 0


def observation(
    now_seconds: float,
    desired_replicas: int,
    ready_replicas: int,
    loads: tuple[ReplicaLoad, ...],
    ttft_p95_seconds: float | None,
    preemptions_per_second: float | None,
    oom_killed: Sequence[str],
    plan: Mapping[str, Any],
    saved: Mapping[str, Any],
    consolidated: bool,
    kv_below_prediction: str | None = None,
    requests_per_second: float | None = None,
    replica_startups: Sequence[float] = (),
    running_seconds: float | None = None,
) -> Observation:
    """One tick's Observation from the Deployment's counts, the engines' signals and what the
    model's status holds: ``plan`` is status.plan (planned concurrency per replica, replicas,
    $/h) and ``saved`` status.autoscaler (the peak plan's $/h, when consolidated)."""
    performance = plan.get("performance") or {}
    planned = performance.get("concurrency_per_replica")
    planned_rps = performance.get("requests_per_second_per_replica")
    startup = plan.get("startupSeconds")
    plan_replicas = int(plan.get("replicas") or 0)
    plan_cost = plan.get("costPerHourUsd")
    peak_cost = saved.get("peakCostPerHourUsd") if consolidated else None

    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) and value >= 0 else None

    return Observation(
        now_seconds=now_seconds,
        desired_replicas=desired_replicas,
        ready_replicas=ready_replicas,
        loads=loads,
        ttft_p95_seconds=finite(ttft_p95_seconds),
        preemptions_per_second=finite(preemptions_per_second),
        oom_killed=tuple(oom_killed),
        kv_below_prediction=kv_below_prediction,
        planned_concurrency=int(planned) if planned else None,
        replica_cost_per_hour=(
            float(plan_cost) / plan_replicas if plan_cost is not None and plan_replicas else None
        ),
        consolidated=consolidated,
        peak_cost_per_hour=float(peak_cost) if peak_cost is not None else None,
        requests_per_second=finite(requests_per_second),
        planned_requests_per_second=float(planned_rps) if planned_rps else None,
        startup_seconds=float(startup) if startup is not None else None,
        replica_startups=tuple(float(s) for s in replica_startups if _usable(s)),
        running_seconds=finite(running_seconds) or None,
    )


# How a CUDA OOM reads in a termination message (vLLM's own, torch's, the CUDA runtime's).
OOM_MESSAGE = re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.IGNORECASE)


def oom_time(pod_status: Mapping[str, Any]) -> str | None:
    """finishedAt of the newest termination for memory of any container of a pod (None:
    none): OOMKilled, or a CUDA out-of-memory termination message."""
    found: list[str] = []
    for cs in pod_status.get("containerStatuses") or []:
        for state in (cs.get("lastState") or {}, cs.get("state") or {}):
            term = state.get("terminated") or {}
            if not term:
                continue
            if term.get("reason") == "OOMKilled" or OOM_MESSAGE.search(term.get("message") or ""):
                found.append(str(term.get("finishedAt") or term.get("startedAt") or "unknown"))
    return max(found) if found else None


def new_oom_kills(
    pods: Sequence[tuple[str, str | None]], last_handled: str
) -> tuple[tuple[str, ...], str]:
    """(pods whose newest OOM kill is newer than ``last_handled``, the newest OOM time seen):
    ``pods`` are (name, finishedAt of its newest OOM kill or None)."""
    killed = tuple(sorted(name for name, oom in pods if oom and str(oom) > last_handled))
    newest = max([last_handled, *(str(oom) for _, oom in pods if oom)])
    return killed, newest


def consolidation_saves(
    obs: Observation,
    current_config: str,
    chosen_config: str,
    chosen_cost_per_hour: float,
    min_savings: float,
) -> bool:
    """Whether a consolidation plan is taken: another configuration that costs at least
    ``min_savings`` less than the fleet does now."""
    fleet = obs.desired_replicas * (obs.replica_cost_per_hour or 0.0)
    return (
        chosen_config != current_config and chosen_cost_per_hour <= (1 - min_savings) * fleet + 1e-9
    )


def no_cheaper_plan(obs: Observation, message: str) -> ScalingDecision:
    """The hold a consolidation or a return to the peak plan turns into when no plan is taken."""
    return ScalingDecision(
        action=Action.HOLD, replicas=obs.desired_replicas, reason="NoCheaperPlan", message=message
    )
