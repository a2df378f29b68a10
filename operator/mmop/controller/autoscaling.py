"""The operator's periodic loop: autoscaler ticks, placement retries and child checks.

One loop per operator (started with it, not a per-object kopf timer, so models carry no
finalizer and no timer bookkeeping). Once a second it looks at the models the watches last
showed (``OperatorContext.models``):

- a placed model is ticked every ``autoscale_interval_seconds`` (default 10; 0 turns the
  autoscaler off): its Ready pods' ``/metrics`` are scraped concurrently (podIP and the ``http``
  container port) — or, with a Prometheus URL configured, the same signals are queried from
  Prometheus (falling back to scraping when it fails) — and ``mmop.autoscaler.decide`` says to
  scale (mode Auto), re-plan with what the engines proved, or hold. A scale is recorded only
  once the API server accepted it;
- a model that could not be placed is planned again every ``unplaced_retry_seconds`` (15);
- a placed model's Service and PodDisruptionBudget are compared with what the watches show
  every ``children_check_seconds`` (5): one that is missing or changed is re-applied; a model
  waiting for its weight cache (CacheReady not True) is reconciled as often, so its
  Deployment follows the download Job's completion within seconds.

Non-hold decisions become Events and entries of status.decisions (the last 10); of the holds,
only the notable ones are recorded, once. status.autoscaler keeps what a restart must not
forget; the short stabilisation history lives in memory (``ModelHistory``) and starts again
after a restart, which only delays a scale-down. A standby (kopf peering) receives no events,
so it ticks nothing.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from mmop import autoscaler, children
from mmop.api import Scaling, Slo
from mmop.autoscaler import Action, ScalingDecision
from mmop.controller.context import Indexes, ModelHistory, ModelKey, OperatorContext
from mmop.controller.reconcile import (
    UNPLACED_REASONS,
    UNRESOLVED_REASONS,
    ChildrenNotApplied,
    Logger,
    observe,
    plan_model,
    reconcile_model,
)
from mmop.controller.report import post_event, write_status
from mmop.controller.workload import CHILD_REASONS
from mmop.hub import HubError
from mmop.metrics import Scrape, Signals, signals
from mmop.metrics.promql import PromQLError, query_model
from mmop.metrics.scrape import ScrapeResult, Target, scrape, unusable_message
from mmop.planner import Limits, PlanningError
from mmop.render import LWS_KIND, companions
from mmop.status import (
    Cond,
    autoscaler_status,
    decisions_log,
    find_condition,
    limits_from_status,
    ready_condition,
    restore_history,
)

NOTABLE_HOLDS = ("ReplanLimitReached", "ExternalScaling", "NoCheaperPlan", "ScaleRefused")
CONCURRENT_TICKS = 32
METRICS_CONDITION = "MetricsUsable"

log = logging.getLogger("mmop.autoscaler")


# What the loop reads of a model: not managedFields, kopf's annotations, nor the plan's
# arguments, alternatives and explanation.
_PLAN_KEPT = (
    "config", "memory", "performance", "templateHash", "replicas", "gpu", "costPerHourUsd",
    "startupSeconds",
    # what the calibration key is made of (calibration.key_of_plan)
    "model", "modelCommit", "gpusPerReplica", "pipelineParallelSize", "quantization",
    "kvCacheDtype", "kvMemoryScale",
)  # fmt: skip
_STATUS_KEPT = (
    "conditions", "observedGeneration", "decisions", "autoscaler", "replicas", "readyReplicas",
)  # fmt: skip


def slim_model(body: Mapping[str, Any]) -> dict[str, Any]:
    """The copy of a model the loop keeps (a fresh one per watch event: never changed in
    place, so a tick's view needs no copy of its own)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    plan = status.get("plan") or {}
    slim_status = {k: copy.deepcopy(v) for k, v in status.items() if k in _STATUS_KEPT}
    if plan:
        slim_status["plan"] = {k: copy.deepcopy(plan[k]) for k in _PLAN_KEPT if k in plan}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion")
        },
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": slim_status,
    }


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Due:
    """When each model is next due for a tick, a placement retry or a child check."""

    tick: dict[ModelKey, float] = field(default_factory=dict)
    place: dict[ModelKey, float] = field(default_factory=dict)
    check: dict[ModelKey, float] = field(default_factory=dict)

    def forget_all_but(self, live: set[ModelKey]) -> None:
        for due in (self.tick, self.place, self.check):
            for gone in set(due) - live:
                due.pop(gone, None)


def _take(due: dict[ModelKey, float], key: ModelKey, now: float, every: float) -> bool:
    """Whether ``key`` is due now (the first time: ``every`` from now); re-arms it."""
    if now >= due.setdefault(key, now + every):
        due[key] = now + every
        return True
    return False


async def run_loop(ctx: OperatorContext) -> None:
    """Once a second, do the work that is due (see the module's docstring)."""
    due = _Due()
    gate = asyncio.Semaphore(CONCURRENT_TICKS)
    cfg = ctx.config
    while True:
        await asyncio.sleep(1.0)
        idx = ctx.indexes
        if idx is None:
            continue
        now = time.monotonic()
        work = []
        for key, body in list(ctx.models.items()):
            planned = find_condition(body.get("status") or {}, "Planned")
            if planned is None:
                continue
            if planned.get("status") == "True":
                due.place.pop(key, None)
                checking = _take(due.check, key, now, cfg.children_check_seconds)
                if checking and (filling(body) or not children_in_place(idx, body)):
                    work.append(_guarded(gate, key, "repair", _reconcile(ctx, body, idx)))
                    continue
                if checking and ready_behind(idx, body):
                    work.append(_guarded(gate, key, "readiness", _sync_ready(ctx, body, idx)))
                interval = cfg.autoscale_interval_seconds
                if interval > 0 and _take(due.tick, key, now, interval):
                    work.append(_guarded(gate, key, "tick", tick(ctx, body, idx, log)))
            elif planned.get("reason") in (*UNPLACED_REASONS, *UNRESOLVED_REASONS):
                due.tick.pop(key, None)
                if _take(due.place, key, now, cfg.unplaced_retry_seconds):
                    work.append(_guarded(gate, key, "placement", _reconcile(ctx, body, idx)))
        due.forget_all_but(set(ctx.models))
        if work:
            await asyncio.gather(*work)


async def _guarded(gate: asyncio.Semaphore, key: ModelKey, what: str, job: Any) -> None:
    async with gate:
        try:
            await job
        except ChildrenNotApplied as err:  # already on the model (Ready=False); retried
            log.debug(f"{key[0]}/{key[1]}: {what}: {err}")
        except Exception as err:  # one model's trouble never stops the loop
            log.warning(f"{key[0]}/{key[1]}: {what} failed: {type(err).__name__}: {err}")


async def _reconcile(ctx: OperatorContext, body: dict[str, Any], idx: Indexes) -> None:
    await asyncio.to_thread(reconcile_model, ctx, body, idx, log)


def ready_behind(idx: Indexes, body: Mapping[str, Any]) -> bool:
    """Whether the model's Ready condition or replica counts lag behind its Deployment as the
    watch shows it (a Deployment event that came before the plan was written is not written
    by the event handler; this catches it up)."""
    wanted = _ready_from_deployment(idx, body)
    if wanted is None:
        return False
    status = body.get("status") or {}
    ready, fields = wanted
    have = find_condition(status, "Ready") or {}
    if have.get("reason") in CHILD_REASONS:
        return False
    same = (have.get("status"), have.get("reason"), have.get("message")) == (
        ready.status,
        ready.reason,
        ready.message,
    )
    return not same or any(status.get(k) != v for k, v in fields.items())


def _ready_from_deployment(
    idx: Indexes, body: Mapping[str, Any]
) -> tuple[Cond, dict[str, int]] | None:
    meta = body["metadata"]
    deployment = observe(idx, str(meta["namespace"]), str(meta["name"])).deployment
    if deployment is None or not (body.get("status") or {}).get("plan"):
        return None
    st = deployment.get("status") or {}
    ready, current = int(st.get("readyReplicas") or 0), int(st.get("replicas") or 0)
    cond = ready_condition(int(deployment.get("replicas") or 0), ready, deployment.get(
        "conditions") or ())  # fmt: skip
    return cond, {"replicas": current, "readyReplicas": ready}


async def _sync_ready(ctx: OperatorContext, body: Mapping[str, Any], idx: Indexes) -> None:
    wanted = _ready_from_deployment(idx, body)
    if wanted is None:
        return
    cond, fields = wanted
    meta = body["metadata"]
    key = (str(meta["namespace"]), str(meta["name"]))
    await asyncio.to_thread(write_status, ctx.kube(), *key, fields, [cond])


def filling(body: Mapping[str, Any]) -> bool:
    """Whether a model waits for its weight cache (CacheReady not True): reconciled at every
    child check until the download Job completes and the Deployment is applied."""
    if not (body.get("spec") or {}).get("model", {}).get("cache"):
        return False
    cache = find_condition(body.get("status") or {}, "CacheReady")
    return cache is None or cache.get("status") != "True"


def children_in_place(idx: Indexes, body: Mapping[str, Any]) -> bool:
    """Whether a placed model's Service and PodDisruptionBudget exist, are its own and hold
    what mmop sets, as the watches show them."""
    meta = body["metadata"]
    name, namespace, uid = str(meta["name"]), str(meta["namespace"]), str(meta.get("uid"))
    observed = observe(idx, namespace, name)
    return all(
        children.in_place(obj, observed.children.get(str(obj["kind"])), uid)
        for obj in companions(name, namespace, uid, leaders_only=observed.kind == LWS_KIND)
    )


# ----------------------------------------------------------------------------- the tick


def _history(ctx: OperatorContext, key: ModelKey, status: Mapping[str, Any]) -> ModelHistory:
    history = ctx.history.get(key)
    if history is None:
        state, last_oom = restore_history(status.get("autoscaler") or {})
        history = ctx.history[key] = ModelHistory(state=state, last_oom=last_oom)
    return history


def window_start(history: ModelHistory, now: float, window: float) -> list[Scrape]:
    """The scrapes that open the window, one per pod: its newest at least ``window`` old, else
    its oldest kept. A pod that turned Ready inside the window opens it at its first scrape, so
    the requests it finished count (over the time it served) from its second tick on."""
    chosen: dict[str, Scrape] = {}
    for t, scrapes in history.scrapes:
        for s in scrapes:
            if now - t >= window or s.pod not in chosen:
                chosen[s.pod] = s
    return list(chosen.values())


def remember(history: ModelHistory, now: float, window: float, scrapes: list[Scrape]) -> None:
    """Add this tick's scrapes; keep only what later windows can open with (the newest
    scrapes at least a window old, and the ones after them)."""
    history.scrapes.append((now, scrapes))
    while len(history.scrapes) > 1 and now - history.scrapes[1][0] >= window:
        history.scrapes.popleft()


@dataclass(frozen=True)
class _Reading:
    """One tick's view of the engines."""

    signals: Signals
    loads: tuple[autoscaler.ReplicaLoad, ...]
    result: ScrapeResult


async def _read_engines(
    ctx: OperatorContext,
    key: ModelKey,
    targets: list[Target],
    history: ModelHistory,
    window: float,
    now: float,
    logger: Logger,
) -> _Reading:
    """Signals and per-replica loads from Prometheus when configured, else from the pods."""
    url = ctx.config.prometheus_url
    timeout = ctx.config.scrape_timeout_seconds
    if url and targets:
        try:
            prom = await query_model(url, *key, int(window), timeout, await ctx.session())
        except (PromQLError, ValueError, TimeoutError) as err:
            logger.warning(f"Prometheus at {url} failed ({err}); scraping the pods instead")
        else:
            ready = {t.pod for t in targets}
            loaded = [
                (pod, load.kv_cache_usage, load.requests_waiting, load.requests_running)
                for pod, load in sorted(prom.pods.items())
                if pod in ready
            ]
            sig = Signals(
                pods=len(loaded),
                window_seconds=window,
                ttft_p95_seconds=prom.ttft_p95_seconds,
                preemptions_per_second=prom.preemptions_per_second,
            )
            return _Reading(sig, autoscaler.loads_from(loaded), ScrapeResult())
    result = await scrape(targets, timeout_seconds=timeout, session=await ctx.session())
    before = window_start(history, now, window)
    remember(history, now, window, result.scrapes)
    unusable = len(result.failures)
    try:
        sig = signals(before, result.scrapes, unusable=unusable)
    except ValueError:
        sig = signals([], result.scrapes, unusable=unusable)
    gauges = [
        (s.pod, s.gauges.get("kv_cache_usage"), s.gauges.get("requests_waiting"),
         s.gauges.get("requests_running"))
        for s in result.scrapes
    ]  # fmt: skip
    return _Reading(sig, autoscaler.loads_from(gauges, sig.finished_per_pod), result)


async def tick(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    idx: Indexes,
    logger: Logger,
    now: float | None = None,
) -> ScalingDecision | None:
    """One autoscaler tick for one model; returns the decision (None: nothing to decide on)."""
    meta, spec = dict(body["metadata"]), dict(body.get("spec") or {})
    status = dict(body.get("status") or {})
    key = (str(meta["namespace"]), str(meta["name"]))
    deployment = observe(idx, *key).deployment
    if deployment is None:
        return None
    scaling = Scaling.model_validate(spec.get("scaling") or {})
    slo = Slo.model_validate(((spec.get("workload") or {}).get("slo")) or {})
    history = _history(ctx, key, status)
    store = idx.model_pods.get(key)
    members = [dict(p) for p in (list(store) if store is not None else [])]
    targets = _targets(members)
    now = time.time() if now is None else now
    window = float(scaling.behavior.window_seconds)
    reading = await _read_engines(ctx, key, targets, history, window, now, logger)
    history.signals, history.failures = reading.signals, dict(reading.result.failures)
    ooms, newest_oom = autoscaler.new_oom_kills(
        [(str(p["name"]), p.get("oom")) for p in members], history.last_oom
    )
    consolidated = limits_from_status(status, meta.get("generation")).demand is not None
    below = await asyncio.to_thread(_calibrate, ctx, body, reading.result)
    obs = autoscaler.observation(
        now_seconds=now,
        desired_replicas=int(deployment.get("replicas") or 0),
        ready_replicas=int((deployment.get("status") or {}).get("readyReplicas") or 0),
        loads=reading.loads,
        ttft_p95_seconds=reading.signals.ttft_p95_seconds,
        preemptions_per_second=reading.signals.preemptions_per_second,
        oom_killed=ooms,
        plan=status.get("plan") or {},
        saved=status.get("autoscaler") or {},
        consolidated=consolidated,
        kv_below_prediction=below,
        requests_per_second=reading.signals.requests_per_second,
        replica_startups=_startups(members),
        running_seconds=reading.signals.running_mean_seconds,
    )
    decision, state = autoscaler.decide(scaling, slo, obs, history.state)
    snapshot = {"metadata": meta, "spec": spec, "status": status}
    decision, learned, peak_cost, state = await _act(
        ctx, snapshot, idx, logger, decision, obs, scaling, state, now
    )
    history.state, history.last_oom = state, newest_oom
    if decision.action != Action.HOLD or decision.reason in NOTABLE_HOLDS:
        ctx.telemetry.record_decision(*key, str(decision.action), decision.reason)
    metrics = metrics_condition(reading.result, find_condition(status, METRICS_CONDITION))
    await asyncio.to_thread(
        _record, ctx, snapshot, decision, learned, history, now, peak_cost, metrics
    )
    return decision


def _targets(members: list[dict[str, Any]]) -> list[Target]:
    """The pods to scrape: Ready, addressed, not being deleted, serving the API."""
    return [
        Target(p["name"], f"http://{p['ip']}:{p['port']}/metrics")
        for p in members
        if p.get("ready") and p.get("ip") and not p.get("deleting") and p.get("serves", True)
    ]


def _startups(members: list[dict[str, Any]]) -> list[float]:
    """How long each live pod took to turn Ready (those that report it)."""
    return [
        float(p["startup"])
        for p in members
        if p.get("startup") is not None and not p.get("deleting")
    ]


def metrics_condition(result: ScrapeResult, current: Mapping[str, Any] | None) -> Cond | None:
    """MetricsUsable=False naming the replicas whose /metrics could not be used and why; True
    again once they all report (None: nothing to say — all usable and never reported
    otherwise, so a healthy model carries no such condition)."""
    message = unusable_message(result.targets)
    if message is None:
        if current is None or current.get("status") == "True":
            return None
        return Cond(METRICS_CONDITION, "True", "AllReplicasReporting", "every Ready replica's "
                    "/metrics is usable")  # fmt: skip
    reasons = {str(t.failure.reason) for t in result.targets if t.failure is not None}
    reason = reasons.pop() if len(reasons) == 1 else "MetricsUnusable"
    return Cond(METRICS_CONDITION, "False", reason, message)


def _calibrate(ctx: OperatorContext, body: Mapping[str, Any], result: ScrapeResult) -> str | None:
    """Record each engine's KV cache against the plan (cluster-wide, for later plans of the
    same configuration), an Event per new engine; returns what to say when a new engine's is
    far below the prediction (the model then re-plans with it)."""
    meta, status = body["metadata"], body.get("status") or {}
    key = (str(meta["namespace"]), str(meta["name"]))
    engines = [(s.pod, s.gauges["kv_cache_tokens"]) for s in result.scrapes
               if "kv_cache_tokens" in s.gauges]  # fmt: skip
    predicted = ((status.get("plan") or {}).get("memory") or {}).get("kv_cache_tokens")
    ctx.telemetry.set_kv_tokens(
        *key,
        int(predicted) if predicted is not None else None,
        sum(t for _, t in engines) / len(engines) if engines else None,
    )
    below = []
    planned = int(predicted or 0)
    for pod, seen in ctx.calibration.observe_engines(body.get("spec") or {}, status, engines):
        tokens = dict(engines)[pod]
        message = (
            f"engine {pod} reported {int(tokens):,} KV tokens, {tokens / planned:.0%} of the "
            f"{planned:,} planned; plans of {seen.record.key} now use what "
            f"{seen.record.startups} start-up(s) showed"
        )
        post_event(ctx.kube(), body, "Warning" if seen.far_below else "Normal",
                   "KvCacheObserved", message)  # fmt: skip
        if seen.far_below:
            below.append(message)
    return "; ".join(below) or None


async def _act(
    ctx: OperatorContext,
    body: dict[str, Any],
    idx: Indexes,
    logger: Logger,
    decision: ScalingDecision,
    obs: autoscaler.Observation,
    scaling: Scaling,
    state: autoscaler.State,
    now: float,
) -> tuple[ScalingDecision, Limits | None, float | None, autoscaler.State]:
    """Carry the decision out: (the decision as taken, the planner limits now in force, the
    peak plan's $/h, the autoscaler state to keep). A scale the API server refuses is not
    recorded as a change: it becomes a ScaleRefused hold and the state stays as it was."""
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    status = body.get("status") or {}
    if decision.action in (Action.SCALE_UP, Action.SCALE_DOWN):
        try:
            # The workload by its own name: a LeaderWorkerSet is <model>-lws (render.group_name).
            kind, target = observe(idx, namespace, name).scale_target or ("Deployment", name)
            await asyncio.to_thread(ctx.kube().scale, kind, namespace, target, decision.replicas)
        except ApiException as err:
            refused = ScalingDecision(
                action=Action.HOLD,
                replicas=obs.desired_replicas,
                reason="ScaleRefused",
                message=f"{decision.action} to {decision.replicas} refused by the API server: "
                f"{err.status} {err.reason}",
            )
            previous = ctx.history[(namespace, name)].state
            return refused, None, None, previous
        logger.info(f"{decision.action} to {decision.replicas}: {decision.message}")
        return decision, None, None, state
    if decision.action != Action.REPLAN:
        return decision, None, None, state
    if decision.headroom in ("cost", "peak"):
        taken, learned, peak = await asyncio.to_thread(
            _rightsize, ctx, body, idx, logger, decision, obs, scaling
        )
        if taken.action == Action.REPLAN:
            state = autoscaler.replanned(state, now)
        return taken, learned, peak, state
    learned = learned_limits(status, meta.get("generation"), decision)
    await asyncio.to_thread(_replan, ctx, body, idx, logger, decision, learned)
    return decision, learned, None, state


def _replan(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    idx: Indexes,
    logger: Logger,
    decision: ScalingDecision,
    limits: Limits | None,
    replicas_from_plan: bool = False,
) -> None:
    """Re-plan and roll the model now, under what the engines taught (``limits``)."""
    logger.info(f"re-planning ({decision.reason}): {decision.message}")
    reconcile_model(
        ctx, body, idx, logger, limits=limits, force=True, replicas_from_plan=replicas_from_plan
    )


def learned_limits(
    status: Mapping[str, Any], generation: int | None, decision: ScalingDecision
) -> Limits:
    """Planner limits after a re-plan decision: the current configuration is avoided when it
    ran out of memory; the KV cache must grow when it was too small (a consolidated fleet
    stays sized for its demand)."""
    limits = limits_from_status(status, generation)
    plan = status.get("plan") or {}
    config = str(plan.get("config") or "")
    if decision.headroom == "memory" and config:
        return replace(limits, avoid=limits.avoid | {config})
    if decision.headroom == "calibration":
        return limits  # the reconcile plans with the engines' figures (reconcile.calibrated)
    if decision.headroom == "kv":
        tokens = (plan.get("memory") or {}).get("kv_cache_tokens")
        if tokens is not None:
            floor = max(int(tokens), limits.min_kv_cache_tokens or 0)
            return replace(limits, min_kv_cache_tokens=floor)
    return limits


def _rightsize(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    idx: Indexes,
    logger: Logger,
    decision: ScalingDecision,
    obs: autoscaler.Observation,
    scaling: Scaling,
) -> tuple[ScalingDecision, Limits | None, float | None]:
    """Carry out a 'cost' re-plan (consolidation) or a 'peak' one (back to the plan for
    spec.workload's peak): (the decision as taken — a NoCheaperPlan hold when no plan saves
    enough —, the limits now in force, the peak plan's $/h)."""
    status = body.get("status") or {}
    current = limits_from_status(status, body["metadata"].get("generation"))
    peak_limits = replace(current, demand=None)
    config = str((status.get("plan") or {}).get("config") or "")
    try:
        peak = plan_model(ctx, body, idx, peak_limits)
        chosen, limits = peak, peak_limits
        if decision.headroom == "cost":
            limits = replace(peak_limits, demand=decision.demand)
            chosen = plan_model(ctx, body, idx, limits)
    except (PlanningError, HubError, ValidationError) as err:
        message = f"no plan for spec.workload's peak fits now: {err}"
        return autoscaler.no_cheaper_plan(obs, message), None, None
    savings = scaling.consolidation.min_savings
    if decision.headroom == "cost" and not autoscaler.consolidation_saves(
        obs, config, chosen.config, chosen.cost_per_hour_usd, savings
    ):
        fleet = obs.desired_replicas * (obs.replica_cost_per_hour or 0.0)
        message = (
            f"the cheapest plan for {decision.demand} requests in flight, "
            f"{chosen.replicas} × {chosen.config} at ${chosen.cost_per_hour_usd:.2f}/h, "
            f"does not save {savings:.0%} of the fleet's ${fleet:.2f}/h"
        )
        return autoscaler.no_cheaper_plan(obs, message), None, None
    _replan(ctx, body, idx, logger, decision, limits, replicas_from_plan=True)
    message = (
        f"{decision.message}; now {chosen.replicas} × {chosen.config} at "
        f"${chosen.cost_per_hour_usd:.2f}/h"
    )
    taken = decision.model_copy(update={"message": message, "replicas": chosen.replicas})
    return taken, limits, peak.cost_per_hour_usd


def _record(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    decision: ScalingDecision,
    learned: Limits | None,
    history: ModelHistory,
    now: float,
    peak_cost: float | None = None,
    metrics: Cond | None = None,
) -> None:
    """status.decisions, status.autoscaler, an Event and conditions, only when they change.
    ``body`` is the model as the tick decided on it."""
    meta, status = body["metadata"], body.get("status") or {}
    fields: dict[str, Any] = {}
    decisions = decisions_log(status.get("decisions") or [], decision, now, NOTABLE_HOLDS)
    if decisions is not None:
        fields["decisions"] = decisions
    saved = autoscaler_status(
        status.get("autoscaler") or {}, history.state, history.last_oom, learned,
        meta.get("generation"), peak_cost,
    )  # fmt: skip
    if saved is not None:
        fields["autoscaler"] = saved
    conds = _degraded(decision, find_condition(status, "Degraded"))
    if metrics is not None:
        conds.append(metrics)
    if not fields and not conds:
        return
    kube = ctx.kube()
    wrote = write_status(kube, str(meta["namespace"]), str(meta["name"]), fields, conds)
    if not wrote:
        return
    was = find_condition(status, METRICS_CONDITION) or {}
    if metrics is not None and metrics.status == "False" and was.get("status") != "False":
        post_event(kube, body, "Warning", metrics.reason, metrics.message)
    if decision.action != Action.HOLD:
        post_event(kube, body, "Normal", decision.reason, f"{decision.action}: {decision.message}")
    elif decision.reason in ("ReplanLimitReached", "ScaleRefused"):
        post_event(kube, body, "Warning", decision.reason, decision.message)


def _degraded(decision: ScalingDecision, current: Mapping[str, Any] | None) -> list[Cond]:
    """The Degraded condition a decision sets: True when the re-plan limit is reached or a
    scale was refused; False again after a re-plan, or after a scale that went through when
    the last one was refused."""
    if decision.reason in ("ReplanLimitReached", "ScaleRefused"):
        return [Cond("Degraded", "True", decision.reason, decision.message)]
    if decision.action == Action.REPLAN:
        return [Cond("Degraded", "False", "Replanned", decision.message)]
    if current and current.get("reason") == "ScaleRefused" and decision.action != Action.HOLD:
        return [Cond("Degraded", "False", "ScaleAccepted", decision.message)]
    return []
