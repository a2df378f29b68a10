"""kopf glue for the autoscaler: scrape the engines, ask the pure policy, act, and record.

One loop per operator (started with it, not a per-object kopf timer, so models carry no
finalizer and no timer bookkeeping): every ``MMOP_AUTOSCALE_INTERVAL_SECONDS`` (default 10; 0
turns the autoscaler off) each placed MultimodalModel gets a tick, and every 15 s each model
that could not be placed is planned again (it is placed once capacity appears). A tick scrapes
the model's Ready pods' ``/metrics`` concurrently (podIP and the ``http`` container port) — or,
with ``MMOP_PROMETHEUS_URL`` set, queries the same signals from Prometheus (falling back to
scraping when it fails) — turns them into per-replica loads and window signals
(``spec.scaling.behavior.windowSeconds``), reads OOM kills from the pods' container states, and
asks ``mmop.autoscaler.decide``. mmop then sets the Deployment's replicas (mode Auto), re-plans
with what the engines proved (status.autoscaler.avoid / minKvCacheTokens), or holds. Non-hold
decisions become Events and entries of status.decisions (the last 10); of the holds, only a
reached re-plan limit and the recommendation in External mode are recorded, once.
status.autoscaler keeps what a restart must not forget (last change, reversals, re-plans,
avoided configurations, the newest OOM handled); the short stabilisation history lives in
memory and starts again after a restart, which only delays a scale-down. The loop sees models
through a watch-event handler, so a standby (kopf peering) that receives no events ticks
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import kopf
from pydantic import ValidationError

from mmop import autoscaler
from mmop.api import API_GROUP, API_VERSION, Decision, Scaling, Slo
from mmop.controller import handlers, telemetry
from mmop.controller.kube import MODEL_LABEL
from mmop.metrics import Scrape, Signals, signals
from mmop.metrics.promql import PromQLError, query_model
from mmop.metrics.scrape import ScrapeResult, Target, scrape
from mmop.planner import OPENAI_PORT, Limits, PlanningError
from mmop.render import CONTAINER_NAME, PORT_NAME

INTERVAL_SECONDS = float(os.environ.get("MMOP_AUTOSCALE_INTERVAL_SECONDS", "10"))
SCRAPE_TIMEOUT_SECONDS = 2.0
PROMETHEUS_ENV = "MMOP_PROMETHEUS_URL"  # set: signals come from PromQL instead of scraping
DECISIONS_KEPT = 10
NOTABLE_HOLDS = ("ReplanLimitReached", "ExternalScaling", "NoCheaperPlan")
# How a CUDA OOM reads in a termination message (vLLM's own, torch's, the CUDA runtime's).
OOM_MESSAGE = re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.IGNORECASE)

log = logging.getLogger("mmop.autoscaler")


@dataclass
class ModelMemory:
    """What the autoscaler keeps in memory per model between ticks."""

    state: autoscaler.State
    scrapes: deque[tuple[float, list[Scrape]]] = field(default_factory=lambda: deque(maxlen=64))
    last_oom: str = ""
    signals: Signals | None = None
    failures: dict[str, str] = field(default_factory=dict)


MEMORY: dict[tuple[str, str], ModelMemory] = {}


# ----------------------------------------------------------------------------- time


def _rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ----------------------------------------------------------------------------- pods


@kopf.index("", "v1", "pods", labels={"app.kubernetes.io/managed-by": "mmop"})
async def model_pods(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """Pods of each model: address, readiness and the newest OOM kill of its engine."""
    meta = body.get("metadata") or {}
    model = (meta.get("labels") or {}).get(MODEL_LABEL)
    if not model:
        return None
    status = body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    port = OPENAI_PORT
    for container in (body.get("spec") or {}).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            for p in container.get("ports") or []:
                if p.get("name") == PORT_NAME:
                    port = int(p.get("containerPort") or OPENAI_PORT)
    return {
        (namespace, model): {
            "name": name,
            "ip": status.get("podIP"),
            "port": port,
            "ready": ready,
            "deleting": bool(meta.get("deletionTimestamp")),
            "oom": _newest_oom(status),
        }
    }


def _newest_oom(status: Mapping[str, Any]) -> str | None:
    """finishedAt of the newest termination for memory of any container (None: none)."""
    found: list[str] = []
    for cs in status.get("containerStatuses") or []:
        for state in (cs.get("lastState") or {}, cs.get("state") or {}):
            term = state.get("terminated") or {}
            if not term:
                continue
            if term.get("reason") == "OOMKilled" or OOM_MESSAGE.search(term.get("message") or ""):
                found.append(str(term.get("finishedAt") or term.get("startedAt") or "unknown"))
    return max(found) if found else None


# ----------------------------------------------------------------------------- the tick


def _planned(status: Mapping[str, Any]) -> dict[str, Any] | None:
    conditions = (status or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Planned"), None)


# The models this operator handles, as their last watch event showed them, and the indexes
# the loop reads (kopf hands them to every handler; the loop is not a handler).
MODELS: dict[tuple[str, str], dict[str, Any]] = {}
INDEXES: dict[str, Any] = {}
INDEX_NAMES = ("mmop_deployments", "model_pods", "gpu_nodes", "gpu_pods")
UNPLACED_RETRY_SECONDS = 15.0
CONCURRENT_TICKS = 32


@kopf.on.event(API_GROUP, API_VERSION, handlers.PLURAL)
async def track_model(body: kopf.Body, type: str | None, **kwargs: Any) -> None:
    """Keep the loop's view of each model current (an event handler: no finalizer, no
    bookkeeping written to the object — a per-object kopf timer would add both)."""
    for index in INDEX_NAMES:
        INDEXES[index] = kwargs[index]
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if type == "DELETED" or meta.get("deletionTimestamp"):
        MODELS.pop(key, None)
        forget(*key)
        return
    MODELS[key] = _slim(body)


# What the loop (a tick, or a placement retry through the reconcile) reads of a model: not
# managedFields, kopf's annotations, nor the plan's arguments, alternatives and explanation.
_PLAN_KEPT = (
    "config", "memory", "performance", "templateHash", "replicas", "gpu", "costPerHourUsd",
)  # fmt: skip


def _slim(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    plan = status.get("plan") or {}
    slim_status = {
        k: copy.deepcopy(v)
        for k, v in status.items()
        if k
        in (
            "conditions",
            "observedGeneration",
            "decisions",
            "autoscaler",
            "replicas",
            "readyReplicas",
        )
    }
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


@dataclass
class _Due:
    """When each model is next due for an autoscaler tick or a placement retry."""

    tick: dict[tuple[str, str], float] = field(default_factory=dict)
    place: dict[tuple[str, str], float] = field(default_factory=dict)


async def run_loop(interval: float = INTERVAL_SECONDS) -> None:
    """The autoscaler and placement-retry loop: once a second, tick the placed models that are
    due (every ``interval`` seconds each) and plan again the unplaced ones (every 15 s)."""
    due = _Due()
    gate = asyncio.Semaphore(CONCURRENT_TICKS)

    async def one(key: tuple[str, str], body: dict[str, Any], unplaced: bool) -> None:
        async with gate:
            try:
                if unplaced:
                    await asyncio.to_thread(
                        handlers.reconcile_model,
                        body,
                        None,  # type: ignore[arg-type]
                        log,
                        INDEXES["gpu_nodes"],
                        INDEXES["gpu_pods"],
                        INDEXES["mmop_deployments"],
                    )
                else:
                    await tick(
                        body,
                        log,
                        deployments=INDEXES["mmop_deployments"],
                        pods=INDEXES["model_pods"],
                        nodes_index=INDEXES["gpu_nodes"],
                        pods_index=INDEXES["gpu_pods"],
                    )
            except Exception:  # one model's trouble never stops the loop
                log.exception(f"{key[0]}/{key[1]}: {'placement' if unplaced else 'tick'} failed")

    while True:
        await asyncio.sleep(1.0)
        if not all(name in INDEXES for name in INDEX_NAMES):
            continue
        now = time.monotonic()
        work = []
        for key, body in list(MODELS.items()):
            planned = _planned(body.get("status") or {})
            if planned is None:
                continue
            if planned.get("status") == "True":
                due.place.pop(key, None)
                if interval <= 0:
                    continue
                if now >= due.tick.setdefault(key, now + interval):
                    due.tick[key] = now + interval
                    work.append(one(key, body, unplaced=False))
            elif planned.get("reason") in handlers.UNPLACED_REASONS:
                due.tick.pop(key, None)
                if now >= due.place.setdefault(key, now + UNPLACED_RETRY_SECONDS):
                    due.place[key] = now + UNPLACED_RETRY_SECONDS
                    work.append(one(key, body, unplaced=True))
        for gone in set(due.tick) - set(MODELS):
            due.tick.pop(gone, None)
        for gone in set(due.place) - set(MODELS):
            due.place.pop(gone, None)
        if work:
            await asyncio.gather(*work)


_loops: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


@kopf.on.startup()
async def start_loop(**_: Any) -> None:
    loop = asyncio.get_running_loop()
    _loops[loop] = loop.create_task(run_loop())


@kopf.on.cleanup()
async def stop_loop(**_: Any) -> None:
    task = _loops.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


async def _session() -> aiohttp.ClientSession:
    """One HTTP client session per event loop, for every scrape (kept-alive connections)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        for other in [lp for lp in _sessions if lp.is_closed()]:
            _sessions.pop(other, None)
        session = _sessions[loop] = aiohttp.ClientSession()
    return session


@kopf.on.cleanup()
async def close_sessions(**_: Any) -> None:
    loop = asyncio.get_running_loop()
    session = _sessions.pop(loop, None)
    if session is not None:
        await session.close()


def _restore(status: Mapping[str, Any]) -> ModelMemory:
    saved = status.get("autoscaler") or {}

    def times(key: str) -> tuple[float, ...]:
        out = [_seconds(t) for t in saved.get(key) or ()]
        return tuple(t for t in out if t is not None)

    state = autoscaler.State(
        last_change_seconds=_seconds(saved.get("lastChangeTime")),
        last_direction=int(saved.get("lastDirection") or 0),
        reversals=times("reversals"),
        replans=times("replans"),
    )
    return ModelMemory(state=state, last_oom=str(saved.get("lastOomTime") or ""))


def _window_start(memory: ModelMemory, now: float, window: float) -> list[Scrape]:
    """The scrapes that open the window: the newest at least ``window`` old, else the oldest."""
    chosen: list[Scrape] = []
    for t, scrapes in memory.scrapes:
        if now - t >= window or not chosen:
            chosen = scrapes
    return chosen


def _remember(memory: ModelMemory, now: float, window: float, scrapes: list[Scrape]) -> None:
    """Add this tick's scrapes; keep only what later windows can open with (the newest
    scrapes at least a window old, and the ones after them)."""
    memory.scrapes.append((now, scrapes))
    while len(memory.scrapes) > 1 and now - memory.scrapes[1][0] >= window:
        memory.scrapes.popleft()


async def tick(
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    deployments: Mapping[Any, Any],
    pods: Mapping[Any, Any],
    nodes_index: Any = None,
    pods_index: Any = None,
    now: float | None = None,
) -> autoscaler.Decision | None:
    """One autoscaler tick for one model; returns the decision (None: nothing to decide on)."""
    # The loop's bodies (MODELS) are never changed in place — each watch event replaces the
    # model's entry with a fresh copy — so this moment's view needs no copy of its own.
    meta, spec = dict(body["metadata"]), dict(body.get("spec") or {})
    status = dict(body.get("status") or {})
    namespace, name = str(meta["namespace"]), str(meta["name"])
    key = (namespace, name)
    deployment = handlers._deployment_from_index(deployments, namespace, name)
    if deployment is None:
        return None
    scaling = Scaling.model_validate(spec.get("scaling") or {})
    slo = Slo.model_validate(((spec.get("workload") or {}).get("slo")) or {})
    memory = MEMORY.get(key)
    if memory is None:
        memory = MEMORY[key] = _restore(status)

    store = pods.get(key)
    members = [dict(p) for p in (list(store) if store is not None else [])]
    targets = [
        Target(p["name"], f"http://{p['ip']}:{p['port']}/metrics")
        for p in members
        if p.get("ready") and p.get("ip") and not p.get("deleting")
    ]
    now = time.time() if now is None else now
    window = float(scaling.behavior.window_seconds)
    prom_url = os.environ.get(PROMETHEUS_ENV)
    from_prometheus = None
    if prom_url and targets:
        try:
            from_prometheus = await query_model(
                prom_url, namespace, name, int(window), SCRAPE_TIMEOUT_SECONDS, await _session()
            )
        except (PromQLError, ValueError, TimeoutError) as err:
            logger.warning(f"Prometheus at {prom_url} failed ({err}); scraping the pods instead")
    if from_prometheus is not None:
        ready = {t.pod for t in targets}
        loaded = [
            (pod, load.kv_cache_usage, load.requests_waiting, load.requests_running)
            for pod, load in sorted(from_prometheus.pods.items())
            if pod in ready
        ]
        sig = Signals(
            pods=len(loaded),
            window_seconds=window,
            ttft_p95_seconds=from_prometheus.ttft_p95_seconds,
            preemptions_per_second=from_prometheus.preemptions_per_second,
        )
        result = ScrapeResult()
    else:
        result = await scrape(
            targets, timeout_seconds=SCRAPE_TIMEOUT_SECONDS, session=await _session()
        )
        before = _window_start(memory, now, window)
        _remember(memory, now, window, result.scrapes)
        try:
            sig = signals(before, result.scrapes)
        except ValueError:
            sig = signals([], result.scrapes)
        loaded = [
            (
                s.pod,
                s.gauges.get("kv_cache_usage"),
                s.gauges.get("requests_waiting"),
                s.gauges.get("requests_running"),
            )
            for s in result.scrapes
        ]
    memory.signals, memory.failures = sig, dict(result.failures)
    if result.failures:
        logger.debug(f"scrapes failed: {result.failures}")

    ooms = sorted(p["name"] for p in members if p.get("oom") and str(p["oom"]) > memory.last_oom)
    newest_oom = max([memory.last_oom, *(str(p["oom"]) for p in members if p.get("oom"))])
    loads = autoscaler.loads_from(loaded)
    plan_status = status.get("plan") or {}
    planned = (plan_status.get("performance") or {}).get("concurrency_per_replica")
    plan_replicas = int(plan_status.get("replicas") or 0)
    plan_cost = plan_status.get("costPerHourUsd")
    saved = status.get("autoscaler") or {}
    consolidated = handlers.limits_from_status(status, meta.get("generation")).demand is not None
    peak_cost = saved.get("peakCostPerHourUsd") if consolidated else None
    obs = autoscaler.Observation(
        now_seconds=now,
        desired_replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
        ready_replicas=int((deployment.get("status") or {}).get("readyReplicas") or 0),
        loads=loads,
        ttft_p95_seconds=sig.ttft_p95_seconds,
        preemptions_per_second=sig.preemptions_per_second,
        oom_killed=tuple(ooms),
        planned_concurrency=int(planned) if planned else None,
        replica_cost_per_hour=(
            float(plan_cost) / plan_replicas if plan_cost is not None and plan_replicas else None
        ),
        consolidated=consolidated,
        peak_cost_per_hour=float(peak_cost) if peak_cost is not None else None,
    )
    decision, memory.state = autoscaler.decide(scaling, slo, obs, memory.state)
    memory.last_oom = newest_oom
    observed = [
        s.gauges["kv_cache_tokens"] for s in result.scrapes if "kv_cache_tokens" in s.gauges
    ]
    predicted = (plan_status.get("memory") or {}).get("kv_cache_tokens")
    telemetry.set_kv_tokens(
        namespace,
        name,
        int(predicted) if predicted is not None else None,
        sum(observed) / len(observed) if observed else None,
    )
    snapshot = {"metadata": meta, "spec": spec, "status": status}
    peak_plan_cost: float | None = None
    if decision.action == autoscaler.Action.REPLAN and decision.headroom in ("cost", "peak"):
        decision, learned, peak_plan_cost = await asyncio.to_thread(
            _rightsize, snapshot, logger, decision, obs, scaling, nodes_index, pods_index,
            deployments,
        )  # fmt: skip
        if decision.action == autoscaler.Action.REPLAN:
            memory.state = autoscaler.replanned(memory.state, now)
    else:
        replan = decision.action == autoscaler.Action.REPLAN
        learned = _learned(status, meta.get("generation"), decision) if replan else None
        await _act(snapshot, logger, decision, learned, nodes_index, pods_index, deployments)
    if decision.action != autoscaler.Action.HOLD or decision.reason in NOTABLE_HOLDS:
        telemetry.record_decision(namespace, name, str(decision.action), decision.reason)
    await asyncio.to_thread(
        _record, snapshot, status, decision, learned, memory, now, peak_plan_cost
    )
    return decision


async def _act(
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    decision: autoscaler.Decision,
    learned: Limits | None,
    nodes_index: Any,
    pods_index: Any,
    deployments: Any,
) -> None:
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    kube = handlers._kube()
    if decision.action in (autoscaler.Action.SCALE_UP, autoscaler.Action.SCALE_DOWN):
        await asyncio.to_thread(kube.scale_deployment, namespace, name, decision.replicas)
        logger.info(f"{decision.action} to {decision.replicas}: {decision.message}")
    elif decision.action == autoscaler.Action.REPLAN:
        await asyncio.to_thread(
            _replan, body, logger, decision, learned, nodes_index, pods_index, deployments
        )


def _replan(
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    decision: autoscaler.Decision,
    limits: Limits | None,
    nodes_index: Any,
    pods_index: Any,
    deployments: Any,
    replicas_from_plan: bool = False,
) -> None:
    """Re-plan and roll the model now, under what the engines taught (``limits``)."""
    logger.info(f"re-planning ({decision.reason}): {decision.message}")
    handlers.reconcile_model(
        body,
        None,  # type: ignore[arg-type]
        logger,
        nodes_index,
        pods_index,
        deployments,
        limits=limits,
        force=True,
        replicas_from_plan=replicas_from_plan,
    )


def _learned(
    status: Mapping[str, Any], generation: int | None, decision: autoscaler.Decision
) -> Limits:
    """Planner limits after a re-plan decision: the current configuration is avoided when it
    ran out of memory; the KV cache must grow when it was too small (a consolidated fleet
    stays sized for its demand)."""
    limits = handlers.limits_from_status(status, generation)
    plan = status.get("plan") or {}
    config = str(plan.get("config") or "")
    if decision.headroom == "memory" and config:
        return replace(limits, avoid=limits.avoid | {config})
    if decision.headroom == "kv":
        tokens = (plan.get("memory") or {}).get("kv_cache_tokens")
        if tokens is not None:
            floor = max(int(tokens), limits.min_kv_cache_tokens or 0)
            return replace(limits, min_kv_cache_tokens=floor)
    return limits


def _rightsize(
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    decision: autoscaler.Decision,
    obs: autoscaler.Observation,
    scaling: Scaling,
    nodes_index: Any,
    pods_index: Any,
    deployments: Any,
) -> tuple[autoscaler.Decision, Limits | None, float | None]:
    """Carry out a 'cost' re-plan (consolidation) or a 'peak' one (back to the plan for
    spec.workload's peak): (the decision as taken — a NoCheaperPlan hold when no plan saves
    enough —, the limits now in force, the peak plan's $/h)."""
    status = body.get("status") or {}
    current = handlers.limits_from_status(status, body["metadata"].get("generation"))
    peak_limits = replace(current, demand=None)
    config = str((status.get("plan") or {}).get("config") or "")
    try:
        peak = handlers.plan_model(body, nodes_index, pods_index, deployments, peak_limits)
        chosen, limits = peak, peak_limits
        if decision.headroom == "cost":
            limits = replace(peak_limits, demand=decision.demand)
            chosen = handlers.plan_model(body, nodes_index, pods_index, deployments, limits)
    except (PlanningError, ValidationError) as err:
        return _no_cheaper(obs, f"no plan for spec.workload's peak fits now: {err}"), None, None
    if decision.headroom == "cost":
        fleet = obs.desired_replicas * (obs.replica_cost_per_hour or 0.0)
        savings = scaling.consolidation.min_savings
        if chosen.config == config or chosen.cost_per_hour_usd > (1 - savings) * fleet + 1e-9:
            return (
                _no_cheaper(
                    obs,
                    f"the cheapest plan for {decision.demand} requests in flight, "
                    f"{chosen.replicas} × {chosen.config} at ${chosen.cost_per_hour_usd:.2f}/h, "
                    f"does not save {savings:.0%} of the fleet's ${fleet:.2f}/h",
                ),
                None,
                None,
            )
    _replan(body, logger, decision, limits, nodes_index, pods_index, deployments, True)
    message = (
        f"{decision.message}; now {chosen.replicas} × {chosen.config} at "
        f"${chosen.cost_per_hour_usd:.2f}/h"
    )
    taken = decision.model_copy(update={"message": message, "replicas": chosen.replicas})
    return taken, limits, peak.cost_per_hour_usd


def _no_cheaper(obs: autoscaler.Observation, message: str) -> autoscaler.Decision:
    return autoscaler.Decision(
        action=autoscaler.Action.HOLD,
        replicas=obs.desired_replicas,
        reason="NoCheaperPlan",
        message=message,
    )


def _record(
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    decision: autoscaler.Decision,
    learned: Limits | None,
    memory: ModelMemory,
    now: float,
    peak_cost: float | None = None,
) -> None:
    """status.decisions, status.autoscaler, an Event and conditions, only when they change.
    ``status`` is the status the tick decided on; ``body`` only addresses the Event (and
    gives the generation a consolidated plan was made for)."""
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    decisions = list(status.get("decisions") or [])
    last = decisions[-1] if decisions else {}
    hold = decision.action == autoscaler.Action.HOLD
    fields: dict[str, Any] = {}
    conditions: list[dict[str, Any]] = []
    # Holds are the steady state: only the ones a user must see are recorded, once each.
    notable = decision.reason in NOTABLE_HOLDS and (
        last.get("reason") != decision.reason or last.get("message") != decision.message[:1000]
    )
    if not hold or notable:
        entry = Decision(
            time=_rfc3339(now),
            action=str(decision.action),
            replicas=decision.replicas,
            reason=decision.reason,
            message=decision.message[:1000],
        ).model_dump(by_alias=True, exclude_none=True)
        fields["decisions"] = [*decisions, entry][-DECISIONS_KEPT:]
    saved = dict(status.get("autoscaler") or {})
    state = memory.state
    update: dict[str, Any] = {
        "lastChangeTime": (
            _rfc3339(state.last_change_seconds) if state.last_change_seconds else None
        ),
        "lastDirection": state.last_direction,
        "reversals": [_rfc3339(t) for t in state.reversals],
        "replans": [_rfc3339(t) for t in state.replans],
        "lastOomTime": memory.last_oom or None,
    }
    if learned is not None:
        update["avoid"] = sorted(learned.avoid)
        update["minKvCacheTokens"] = learned.min_kv_cache_tokens
        update["demand"] = learned.demand
        update["demandGeneration"] = meta.get("generation") if learned.demand else None
        if peak_cost is not None or learned.demand is None:
            update["peakCostPerHourUsd"] = peak_cost if learned.demand else None

    def meaningful(fields: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if v not in (None, [], "", 0)}

    merged = meaningful({**saved, **update})
    if merged != meaningful(saved):
        fields["autoscaler"] = merged
    if decision.reason == "ReplanLimitReached":
        conditions.append(handlers._cond("Degraded", "True", decision.reason, decision.message))
    elif decision.action == autoscaler.Action.REPLAN:
        conditions.append(handlers._cond("Degraded", "False", "Replanned", decision.message))
    if not fields and not conditions:
        return
    wrote = handlers._write_status(handlers._kube(), namespace, name, fields, conditions)
    if wrote and not hold:
        handlers.post_event(
            body, "Normal", decision.reason, f"{decision.action}: {decision.message}"
        )
    elif wrote and decision.reason == "ReplanLimitReached":
        handlers.post_event(body, "Warning", decision.reason, decision.message)


def forget(namespace: str, name: str) -> None:
    MEMORY.pop((namespace, name), None)


def recent_signals() -> Sequence[tuple[tuple[str, str], Signals | None]]:
    return [(k, m.signals) for k, m in MEMORY.items()]
