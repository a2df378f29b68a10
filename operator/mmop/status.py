"""What a MultimodalModel's status says, computed from plain data (pure: no cluster, no clock).

Conditions (Planned, Ready, Degraded) and how they merge; the plan in force as ``status.plan``;
the Ready condition from the Deployment's own status (including the pod-creation failures its
ReplicaSet reports); the replica count a Deployment gets; what the autoscaler learnt, read back
from ``status.autoscaler`` as planner limits; the autoscaler's history round trip; and the
entries of ``status.decisions``. The controller calls these and writes the result.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmop.api import Decision as DecisionRecord
from mmop.api import MultimodalModel, PlanStatus, ScalingMode
from mmop.autoscaler import ScalingDecision, State
from mmop.planner import Limits, Plan
from mmop.render import (
    FILL_BACKOFF_LIMIT,
    cache_claim_name,
    cache_revision,
    checkpoint_gib,
    predicted_startup_seconds,
    vllm_args,
)

CONDITION_ORDER = ("Planned", "Ready", "CacheReady", "Degraded", "MetricsUsable")
DECISIONS_KEPT = 10
MESSAGE_LIMIT = 4000
# The figures of the estimate that status.plan.memory shows (one list, used everywhere).
MEMORY_KEYS = (
    "weights_gib",
    "non_torch_gib",
    "activation_gib",
    "cudagraph_gib",
    "kv_cache_gib",
    "kv_cache_tokens",
    "max_concurrency",
)


@dataclass(frozen=True)
class Cond:
    """A condition to set: type, status ("True"/"False"/"Unknown"), reason, message."""

    type: str
    status: str
    reason: str
    message: str


# ------------------------------------------------------------------------------- time


def rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_of(text: str | None) -> float | None:
    """An RFC 3339 time as epoch seconds (None: missing or unreadable)."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------------------- conditions


def condition(
    current: Sequence[Mapping[str, Any]], cond: Cond, generation: int | None, now: str
) -> dict[str, Any]:
    """``cond`` as a status condition, keeping lastTransitionTime when the status did not
    change (``now``: the time to stamp otherwise)."""
    previous = next((c for c in current if c.get("type") == cond.type), None)
    changed = previous is None or previous.get("status") != cond.status
    return {
        "type": cond.type,
        "status": cond.status,
        "reason": cond.reason,
        "message": cond.message[:MESSAGE_LIMIT],
        "observedGeneration": generation,
        "lastTransitionTime": (
            now if previous is None or changed else previous.get("lastTransitionTime", now)
        ),
    }


def merge_conditions(
    current: Sequence[Mapping[str, Any]], updates: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``current`` with ``updates`` replacing the conditions of the same type, in the order
    Planned, Ready, Degraded, then the others."""
    by_type = {c["type"]: dict(c) for c in current if "type" in c}
    for update in updates:
        by_type[update["type"]] = dict(update)

    def rank(c: Mapping[str, Any]) -> int:
        return CONDITION_ORDER.index(c["type"]) if c["type"] in CONDITION_ORDER else 9

    return sorted(by_type.values(), key=rank)


def same_conditions(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Equal apart from lastTransitionTime."""

    def key(cs: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        fields = ("type", "status", "reason", "message", "observedGeneration")
        return sorted(tuple(str(c.get(f)) for f in fields) for c in cs)

    return key(a) == key(b)


def status_changes(
    status: Mapping[str, Any],
    generation: int | None,
    fields: Mapping[str, Any],
    conds: Sequence[Cond],
    now: str,
) -> dict[str, Any]:
    """The status fields to write so that ``status`` holds ``fields`` and ``conds``: only
    what differs (an empty dict: nothing to write)."""
    update = {k: v for k, v in fields.items() if status.get(k) != v}
    current = list(status.get("conditions") or [])
    fresh = [condition(current, c, generation, now) for c in conds]
    merged = merge_conditions(current, fresh)
    if not same_conditions(current, merged):
        update["conditions"] = merged
    return update


def find_condition(status: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


# ------------------------------------------------------------------------------- the plan


def plan_status(p: Plan, template_hash: str, cached: bool = False) -> dict[str, Any]:
    """``status.plan`` for the plan in force (camelCase, as kubectl shows it)."""
    status = PlanStatus(
        model=p.model,
        model_source=p.model_origin,
        model_commit=p.model_commit,
        kv_memory_scale=p.kv_memory_scale if p.kv_memory_scale != 1.0 else None,
        approximate=True if p.approximate else None,
        gpu=p.gpu,
        gpu_product=p.gpu_product,
        gpus_per_replica=p.tensor_parallel_size * p.pipeline_parallel_size,
        pipeline_parallel_size=p.pipeline_parallel_size if p.pipeline_parallel_size > 1 else None,
        nodes_per_replica=p.nodes_per_replica if p.nodes_per_replica > 1 else None,
        replicas=p.replicas,
        quantization=p.quantization,
        kv_cache_dtype=p.kv_cache_dtype,
        max_model_len=p.max_model_len,
        max_image_tokens=p.max_tokens_per_image,
        native_image_tokens=p.native_tokens_per_image,
        native_cost_per_hour_usd=p.native_cost_per_hour_usd,
        video_tokens=p.tokens_per_video,
        audio_tokens=p.tokens_per_audio,
        image_cap=p.image_cap,
        trust_remote_code=p.trust_remote_code,
        notes=p.notes,
        cost_per_hour_usd=p.cost_per_hour_usd,
        startup_seconds=predicted_startup_seconds(p, cached),
        args=vllm_args(p),
        memory={k: getattr(p.memory, k) for k in MEMORY_KEYS},
        performance=p.performance.model_dump(by_alias=False),
        alternatives=[a.model_dump(exclude_none=True) for a in p.alternatives],
        explanation=p.explanation,
        template_hash=template_hash,
        config=p.config,
    )
    return status.model_dump(by_alias=True, exclude_none=True)


# ------------------------------------------------------------------------------- weight cache


def cache_condition(
    mm_name: str,
    manifest: MultimodalModel,
    p: Plan,
    name: str,
    job: Mapping[str, Any] | None,
    claim: Mapping[str, Any] | None,
) -> Cond:
    """CacheReady of a model with spec.model.cache, from its download Job and claim as the
    watches show them (``job``: the index's record of the fill Job ``name``, None when not seen;
    ``claim``: the claim mmop created, None when not seen or the spec names its own). True only
    once the Job completed: the replicas are created then."""
    claim_name = cache_claim_name(mm_name, manifest.spec)
    what = f"{p.model}@{cache_revision(p)} (about {checkpoint_gib(p):.0f} GiB)"
    conditions = {
        str(c.get("type")): c
        for c in (job or {}).get("conditions") or ()
        if c.get("status") == "True"
    }
    if job is None:
        return Cond(
            "CacheReady",
            "False",
            "CacheFilling",
            f"creating Job {name} to download {what} into claim {claim_name}",
        )
    if "Complete" in conditions:
        done = job.get("completionTime")
        when = f" at {done}" if done else ""
        return Cond(
            "CacheReady",
            "True",
            "CacheFilled",
            f"{what} downloaded into claim {claim_name} by Job {name}{when}",
        )
    if "Failed" in conditions:
        failed = conditions["Failed"]
        why = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".rstrip(": ")
        return Cond(
            "CacheReady",
            "False",
            "CacheFillFailed",
            f"Job {name} could not download {what} ({why}); its pods' logs say why; delete the "
            "Job to try again",
        )
    phase = (claim or {}).get("phase")
    if claim is not None and phase != "Bound" and not job.get("active"):
        return Cond(
            "CacheReady",
            "False",
            "CacheFilling",
            f"claim {claim_name} is {phase or 'not bound'}: waiting for a ReadWriteMany volume "
            f"(its storage class must provide one) before downloading {what}",
        )
    attempt = int(job.get("failed") or 0) + 1
    started = job.get("startTime")
    since = f", started {started}" if started else ""
    state = "downloading" if job.get("active") else "waiting for its pod"
    return Cond(
        "CacheReady",
        "False",
        "CacheFilling",
        f"Job {name} {state}: {what} into claim {claim_name} (attempt {attempt} of "
        f"{FILL_BACKOFF_LIMIT + 1}{since})",
    )


def template_hash_in_force(status: Mapping[str, Any]) -> str | None:
    value = (status.get("plan") or {}).get("templateHash")
    return str(value) if value else None


def limits_from_status(status: Mapping[str, Any], generation: int | None = None) -> Limits:
    """What the autoscaler learnt (status.autoscaler) as planner limits. The demand a fleet was
    consolidated for holds only for the generation it was seen under: a spec edit plans for
    the new spec.workload."""
    saved = status.get("autoscaler") or {}
    floor = saved.get("minKvCacheTokens")
    demand = saved.get("demand")
    if generation is None or saved.get("demandGeneration") != generation:
        demand = None
    return Limits(
        avoid=frozenset(str(a) for a in saved.get("avoid") or ()),
        min_kv_cache_tokens=int(floor) if floor is not None else None,
        demand=int(demand) if demand is not None else None,
    )


def desired_replicas(
    manifest: MultimodalModel, p: Plan, current: int | None, from_plan: bool = False
) -> int:
    """Replicas for the Deployment. ``from_plan``: the plan was sized for the traffic seen
    (consolidation, or back to the peak plan), so the count of the old configuration — whose
    replicas each carried a different load — does not carry over."""
    scaling = manifest.spec.scaling
    if scaling.mode == ScalingMode.EXTERNAL and manifest.spec.replicas is not None:
        return manifest.spec.replicas
    wanted = max(p.replicas, scaling.min_replicas)
    if scaling.mode == ScalingMode.AUTO and current is not None and not from_plan:
        # The autoscaler may have moved the count; the plan sets the floor.
        wanted = max(wanted, min(current, scaling.max_replicas))
    return min(wanted, scaling.max_replicas)


# ------------------------------------------------------------------------------- readiness


def ready_condition(
    desired: int, ready: int, deployment_conditions: Sequence[Mapping[str, Any]] = ()
) -> Cond:
    """The model's Ready condition from its Deployment: all replicas ready, or why not — a
    pod its ReplicaSet could not create (admission refused it: Pod Security, a quota, an
    invalid field) or a rollout past its progress deadline, with the API server's words."""
    if desired > 0 and ready >= desired:
        return Cond("Ready", "True", "AllReplicasReady", f"{ready}/{desired} ready")
    counts = f"{ready}/{desired} ready"
    for c in deployment_conditions:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            why = str(c.get("message") or c.get("reason") or "")
            return Cond("Ready", "False", "PodCreationFailed", f"{counts}: {why}")
    for c in deployment_conditions:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            why = str(c.get("message") or "")
            return Cond("Ready", "False", "ProgressDeadlineExceeded", f"{counts}: {why}")
    return Cond("Ready", "False", "ReplicasNotReady", counts)


# ------------------------------------------------------------------------------- autoscaler


def restore_history(saved: Mapping[str, Any]) -> tuple[State, str]:
    """The autoscaler's state and the newest OOM handled, from ``status.autoscaler``."""

    def times(key: str) -> tuple[float, ...]:
        out = [seconds_of(t) for t in saved.get(key) or ()]
        return tuple(t for t in out if t is not None)

    state = State(
        last_change_seconds=seconds_of(saved.get("lastChangeTime")),
        last_direction=int(saved.get("lastDirection") or 0),
        reversals=times("reversals"),
        replans=times("replans"),
        startup_seconds=_non_negative(saved.get("observedStartupSeconds")),
    )
    return state, str(saved.get("lastOomTime") or "")


def _non_negative(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def replica_startup_seconds(pod: Mapping[str, Any]) -> float | None:
    """How long a pod took from its creation to Ready (None: not Ready, a container restarted —
    its Ready time is then the restart's — or the times are unreadable)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if any(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or []):
        return None
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if not ready or ready.get("status") != "True":
        return None
    created = seconds_of(meta.get("creationTimestamp"))
    became = seconds_of(ready.get("lastTransitionTime"))
    if created is None or became is None or became < created:
        return None
    return became - created


def _meaningful(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, [], "", 0)}


def autoscaler_status(
    saved: Mapping[str, Any],
    state: State,
    last_oom: str,
    learned: Limits | None = None,
    generation: int | None = None,
    peak_cost_per_hour_usd: float | None = None,
) -> dict[str, Any] | None:
    """The new ``status.autoscaler`` (None: unchanged) after a tick: the history a restart
    must not forget, and what the engines taught when a re-plan happened (``learned``)."""
    update: dict[str, Any] = {
        "lastChangeTime": rfc3339(state.last_change_seconds) if state.last_change_seconds else None,
        "lastDirection": state.last_direction,
        "reversals": [rfc3339(t) for t in state.reversals],
        "replans": [rfc3339(t) for t in state.replans],
        "lastOomTime": last_oom or None,
        "observedStartupSeconds": (
            round(state.startup_seconds, 1) if state.startup_seconds is not None else None
        ),
    }
    if learned is not None:
        update["avoid"] = sorted(learned.avoid)
        update["minKvCacheTokens"] = learned.min_kv_cache_tokens
        update["demand"] = learned.demand
        update["demandGeneration"] = generation if learned.demand else None
        if peak_cost_per_hour_usd is not None or learned.demand is None:
            update["peakCostPerHourUsd"] = peak_cost_per_hour_usd if learned.demand else None
    merged = _meaningful({**saved, **update})
    return merged if merged != _meaningful(saved) else None


def decisions_log(
    decisions: Sequence[Mapping[str, Any]],
    decision: ScalingDecision,
    now_seconds: float,
    notable_holds: Sequence[str],
) -> list[dict[str, Any]] | None:
    """``status.decisions`` with ``decision`` appended (the last DECISIONS_KEPT), or None when
    it is not recorded: holds are the steady state; only the notable ones are, once each."""
    last = decisions[-1] if decisions else {}
    message = decision.message[:1000]
    if decision.action == "Hold":
        repeat = last.get("reason") == decision.reason and last.get("message") == message
        if decision.reason not in notable_holds or repeat:
            return None
    entry = DecisionRecord(
        time=rfc3339(now_seconds),
        action=str(decision.action),
        replicas=decision.replicas,
        reason=decision.reason,
        message=message,
    ).model_dump(by_alias=True, exclude_none=True)
    return [*(dict(d) for d in decisions), entry][-DECISIONS_KEPT:]
