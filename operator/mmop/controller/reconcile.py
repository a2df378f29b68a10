"""One reconcile of a MultimodalModel: observe → desired (the pure core) → act → report.

Observe: the model's children as the watches saw them (the Deployment, Service and
PodDisruptionBudget indexes) and the inventory. Desired: the plan (``mmop.planner``), the
rendered objects (``mmop.render``), what to apply (``mmop.children``), the status
(``mmop.status``). Act: server-side apply of what is missing or different — never of an object
the model does not own — then one status write and an Event per decision.

A model already handled at its generation, whose Deployment carries the template in force, is
not planned again (a resume or a repeat must not move a running model when the cluster
changed): only its Service and PodDisruptionBudget are checked and, when missing or changed,
re-applied (``repair``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import kopf
from pydantic import ValidationError

from mmop import children, policy
from mmop.api import API_GROUP, API_VERSION, KIND, MultimodalModel
from mmop.children import ChildRecord
from mmop.controller.context import Indexes, OperatorContext
from mmop.controller.report import post_event, write_status
from mmop.controller.resolve import resolve_models
from mmop.controller.workload import CHILD_REASONS
from mmop.hub import HubError, HubReason
from mmop.inventory import Inventory
from mmop.planner import Limits, Plan, PlanningError, plan
from mmop.render import (
    LWS_KIND,
    Rendered,
    RenderedGroup,
    cache_objects,
    companions,
    render,
    render_multinode,
)
from mmop.status import (
    Cond,
    cache_condition,
    desired_replicas,
    find_condition,
    limits_from_status,
    plan_status,
    ready_condition,
    template_hash_in_force,
)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

UNPLACED_REASONS = ("Infeasible", "InsufficientCapacity")
# Planned=False reasons the loop retries (the Hub's own backoff bounds how often it is asked):
# the Hub unreachable, or a license, token or repository someone may fix without an edit.
UNRESOLVED_REASONS = tuple(str(r) for r in HubReason if r != HubReason.UNREADABLE)
# HTTP statuses of a refused write that a retry cannot fix by itself (the user, an admin or a
# quota must change something): shown as a condition, then retried with backoff.
REFUSED_STATUSES = (400, 403, 404, 422)
# What a 404 on a LeaderWorkerSet means: the cluster has no LWS API.
NO_LWS = (
    "the LeaderWorkerSet API (leaderworkerset.x-k8s.io/v1) is not served by this cluster: "
    "install the LeaderWorkerSet controller to run replicas over several nodes "
    "(docs/multinode.md), or run the operator without --multinode"
)


class ChildrenNotApplied(Exception):
    """Some children could not be applied (refused or conflicting); status says which."""


@dataclass(frozen=True)
class Problem:
    """A child not applied: ChildConflict (exists, not the model's) or ApplyFailed (refused)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """A model's children as the watches saw them."""

    # The serving workload's index record (controller/workload.py): its Deployment, or the
    # LeaderWorkerSet of a replica over several nodes.
    deployment: Mapping[str, Any] | None
    children: Mapping[str, ChildRecord | None]  # by kind
    job: Mapping[str, Any] | None = None  # the weight cache's fill Job asked for (index record)
    claim: Mapping[str, Any] | None = None  # the weight-cache claim mmop created (index record)
    # The index record of a workload of the other kind the model still has (its plan moved
    # between one node and several): scaled to zero once the new one is applied.
    stale: Mapping[str, Any] | None = None

    @property
    def kind(self) -> str | None:
        """The serving workload's kind (None: there is none)."""
        return str(self.deployment.get("kind") or "Deployment") if self.deployment else None

    @property
    def template_hash(self) -> str | None:
        record = self.children.get(self.kind) if self.kind else None
        value = record.fields.get("templateHash") if record else None
        return str(value) if value else None

    @property
    def replicas(self) -> int | None:
        value = (self.deployment or {}).get("replicas")
        return int(value) if value is not None else None

    @property
    def scale_target(self) -> tuple[str, str] | None:
        """(kind, name) of the serving workload, as its scale subresource is addressed: a
        Deployment has the model's name, a LeaderWorkerSet ``<model>-lws``
        (render.group_name). None: there is none."""
        kind = self.kind
        child = self.children.get(kind) if kind else None
        return (kind, child.name) if kind and child is not None else None


def observe(
    idx: Indexes,
    namespace: str,
    name: str,
    job_name: str | None = None,
    kind: str | None = None,
) -> Observed:
    """The model's children as the watches saw them; ``job_name``: the weight cache's fill
    Job of the plan's checkpoint (a model may have others, of earlier checkpoints); ``kind``:
    the workload the plan wants (Deployment or LeaderWorkerSet; None: whichever there is)."""

    def records(index: Mapping[Any, Any]) -> list[Any]:
        store = index.get((namespace, name))
        return list(store) if store is not None else []

    def first(index: Mapping[Any, Any]) -> Any:
        found = records(index)
        return found[0] if found else None

    deployment, group = first(idx.mmop_deployments), first(idx.mmop_groups)
    if kind is None:
        kind = LWS_KIND if group is not None else "Deployment"
    workload, other = (group, deployment) if kind == LWS_KIND else (deployment, group)
    service, pdb, claim = first(idx.mmop_services), first(idx.mmop_pdbs), first(idx.mmop_claims)
    jobs = [j for j in records(idx.mmop_jobs) if job_name and j["child"].name == job_name]
    job = jobs[0] if jobs else None
    return Observed(
        deployment=workload,
        stale=other,
        children={
            "Deployment": deployment.get("child") if deployment else None,
            LWS_KIND: group.get("child") if group else None,
            "Service": service,
            "PodDisruptionBudget": pdb,
            "PersistentVolumeClaim": claim.get("child") if claim else None,
            "Job": job.get("child") if job else None,
        },
        job=job,
        claim=claim,
    )


def manifest_of(
    ctx: OperatorContext,
    name: str,
    namespace: str,
    spec: Mapping[str, Any],
    operator_image: bool = True,
) -> MultimodalModel:
    """The model as the API model; with ``operator_image``, a spec that names no image gets
    the operator's default image (``--vllm-image``), else the pinned release's."""
    engine = dict(spec.get("engine") or {})
    if operator_image and ctx.config.default_vllm_image and not engine.get("image"):
        spec = {**spec, "engine": {**engine, "image": ctx.config.default_vllm_image}}
    return MultimodalModel.model_validate(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def inventory_for(ctx: OperatorContext, idx: Indexes, namespace: str, name: str) -> Inventory:
    """The cluster as one model's plan sees it: its own GPUs count as free."""
    return ctx.inventory.inventory(idx.gpu_nodes, idx.gpu_pods, (namespace, name), idx.workloads())


def plan_model(ctx: OperatorContext, body: Mapping[str, Any], idx: Indexes, limits: Limits) -> Plan:
    """The plan a reconcile would make now under ``limits``, without acting on it. Raises
    PlanningError (nothing fits), HubError (the model's config could not be read) or
    ValidationError (invalid spec)."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    manifest = manifest_of(ctx, name, namespace, body.get("spec") or {})
    return plan(
        manifest,
        inventory_for(ctx, idx, namespace, name),
        limits=calibrated(ctx, limits),
        cache=ctx.assessments,
        resolved=resolve_models(ctx, manifest),
        multinode=ctx.config.multinode,
    )


def calibrated(ctx: OperatorContext, limits: Limits) -> Limits:
    """``limits`` with the KV caches engines reported so far (every plan uses them)."""
    return replace(limits, kv_calibration=ctx.calibration.store)


def reconcile_model(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    idx: Indexes,
    logger: Logger,
    *,
    limits: Limits | None = None,
    force: bool = False,
    replicas_from_plan: bool = False,
) -> str:
    """Plan, render, apply and report for one MultimodalModel; returns what it did: created,
    updated, repaired, unchanged, waiting (for the weight cache) or unplaced. Raises
    kopf.PermanentError for a spec that can never be served, ChildrenNotApplied when a child
    was refused or conflicts."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    status = body.get("status") or {}
    manifest = _valid_manifest(ctx, body)
    observed = observe(idx, namespace, name)
    if not force and _settled(status, meta.get("generation"), observed):
        return _repair(ctx, body, observed, logger)
    p = _plan_or_report(ctx, body, manifest, idx, limits or limits_from_status(
        status, meta.get("generation")), logger)  # fmt: skip
    if p is None:
        return "unplaced"
    kind = LWS_KIND if p.nodes_per_replica > 1 else "Deployment"
    observed = observe(idx, namespace, name, kind=kind)
    replicas = desired_replicas(manifest, p, observed.replicas, replicas_from_plan)
    rendered = (render_multinode if kind == LWS_KIND else render)(
        name, namespace, meta.get("uid"), manifest.spec, p, ctx.config.render,
        meta.get("generation"), replicas=replicas,
    )  # fmt: skip
    desired, cache, job_name = _with_cache(ctx, body, manifest, p, rendered, idx)
    if cache is not None:
        observed = observe(idx, namespace, name, job_name, kind=kind)
    problems = apply_children(ctx, body, desired, observed)
    if not problems and observed.stale and (cache is None or cache.status == "True"):
        _retire(ctx, body, observed.stale, logger)
    action = "unchanged"
    if cache is not None and cache.status != "True":
        action = "waiting"  # for the weight cache: the Deployment is applied once it is filled
    elif observed.template_hash != rendered.template_hash or observed.replicas != replicas:
        action = "created" if observed.deployment is None else "updated"
        if not problems:
            _announce(ctx, body, p, rendered, replicas, created=observed.deployment is None)
    _report_plan(ctx, body, p, rendered, replicas, observed, problems, cache)
    if problems:
        raise ChildrenNotApplied("; ".join(p.message for p in problems))
    return action


def _retire(
    ctx: OperatorContext, body: Mapping[str, Any], stale: Mapping[str, Any], logger: Logger
) -> None:
    """Scale the model's workload of the other kind (a Deployment when the plan now spans
    nodes, a LeaderWorkerSet when one node holds it again) to zero once the new one is
    applied: both would hold GPUs. The operator may scale but not delete (least privilege);
    the empty object goes with the model (its owner reference). Only the model's own."""
    meta = body["metadata"]
    namespace, uid = str(meta["namespace"]), str(meta.get("uid"))
    child: ChildRecord = stale["child"]
    if child.owner_uid != uid or not int(stale.get("replicas") or 0):
        return
    ctx.kube().scale(child.kind, namespace, child.name, 0)
    message = (
        f"{child.kind} {child.name} scaled to 0: the plan in force runs as a "
        f"{'LeaderWorkerSet' if child.kind == 'Deployment' else 'Deployment'}"
    )
    post_event(ctx.kube(), body, "Normal", "Retired", message)
    logger.info(message)


def _with_cache(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    manifest: MultimodalModel,
    p: Plan,
    rendered: Rendered | RenderedGroup,
    idx: Indexes,
) -> tuple[list[dict[str, Any]], Cond | None, str | None]:
    """The children to apply and, for a model with spec.model.cache, its CacheReady: the
    claim and the fill Job first, and the Deployment only once the Job has filled the cache
    (until then a Deployment of an earlier checkpoint keeps serving, untouched); and the fill
    Job's name."""
    if manifest.spec.model.cache is None:
        return rendered.objects(), None, None
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    uid = meta.get("uid")
    cache_objs = cache_objects(name, namespace, uid, manifest.spec, p, ctx.config.render)
    job_name = str(cache_objs[-1]["metadata"]["name"])  # the Job comes last
    seen = observe(idx, namespace, name, job_name, kind=str(rendered.workload["kind"]))
    cond = cache_condition(name, manifest, p, job_name, seen.job, seen.claim)
    serving = rendered.objects() if cond.status == "True" else rendered.objects()[1:]
    return [*cache_objs, *serving], cond, job_name


def _valid_manifest(ctx: OperatorContext, body: Mapping[str, Any]) -> MultimodalModel:
    """The spec as the API model, or a PermanentError after InvalidSpec / PolicyDenied."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    spec = body.get("spec") or {}
    try:
        asked = manifest_of(ctx, name, namespace, spec, operator_image=False)
    except ValidationError as err:
        first = err.errors()[0]
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        _refuse(ctx, body, "InvalidSpec", message)
        raise kopf.PermanentError(f"invalid spec: {message}") from err
    # The policy judges what the spec asks for (the operator's own default image is the
    # administrator's choice, not the spec's).
    violations = policy.check(asked.spec, ctx.config.policy)
    if violations:
        message = "; ".join(f"{v.field}: {v.message}" for v in violations)
        _refuse(ctx, body, "PolicyDenied", message)
        raise kopf.PermanentError(f"denied by the operator's policy: {message}")
    manifest = manifest_of(ctx, name, namespace, spec)
    return manifest


def _refuse(ctx: OperatorContext, body: Mapping[str, Any], reason: str, message: str) -> None:
    meta = body["metadata"]
    kube = ctx.kube()
    if write_status(
        kube,
        str(meta["namespace"]),
        str(meta["name"]),
        {"observedGeneration": meta.get("generation")},
        [Cond("Planned", "False", reason, message)],
    ):
        post_event(kube, body, "Warning", reason, message)


def _settled(status: Mapping[str, Any], generation: Any, observed: Observed) -> bool:
    """Handled at this generation, and the Deployment carries the template in force."""
    in_force = template_hash_in_force(status)
    return (
        status.get("observedGeneration") == generation
        and in_force is not None
        and observed.template_hash == in_force
    )


def _repair(
    ctx: OperatorContext, body: Mapping[str, Any], observed: Observed, logger: Logger
) -> str:
    """Re-apply a settled model's Service and PodDisruptionBudget if missing or changed."""
    meta = body["metadata"]
    name, namespace, uid = str(meta["name"]), str(meta["namespace"]), str(meta.get("uid"))
    desired = companions(name, namespace, uid or None, leaders_only=observed.kind == LWS_KIND)
    actions = children.compare(desired, observed.children, uid, namespace)
    if not (actions.apply or actions.unknown or actions.conflicts):
        return "unchanged"
    problems = apply_children(ctx, body, desired, observed)
    _report_children(ctx, body, problems, observed)
    if problems:
        raise ChildrenNotApplied("; ".join(p.message for p in problems))
    logger.info(f"re-applied {', '.join(str(o['kind']) for o in actions.apply + actions.unknown)}")
    return "repaired"


def apply_children(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    desired: Sequence[Mapping[str, Any]],
    observed: Observed,
) -> list[Problem]:
    """Apply the desired children that are missing or different; returns the problems: a
    child owned by something else, or a write the API server refused."""
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    namespace, uid = str(meta["namespace"]), str(meta.get("uid"))
    actions = children.compare(desired, observed.children, uid, namespace)
    problems = [Problem("ChildConflict", c) for c in actions.conflicts]
    kube = ctx.kube()
    for obj in (*actions.apply, *actions.unknown):
        kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
        if obj in actions.unknown:
            # Not seen by the watches: it may exist without mmop's labels (someone else's).
            found = kube.read(str(obj["apiVersion"]), kind, namespace, name)
            owner = children.controller_uid(found) if found is not None else uid
            if owner != uid:
                message = children.conflict_message(kind, namespace, name, owner)
                problems.append(Problem("ChildConflict", message))
                continue
        try:
            kube.apply(obj)
        except ApiException as err:
            if err.status not in REFUSED_STATUSES:
                raise  # conflicts, throttling, the API server's trouble: retried by the caller
            message = f"{kind} {namespace}/{name}: {_api_reason(err)}"
            if kind == LWS_KIND and err.status == 404:
                message += f" ({NO_LWS})"
            problems.append(Problem("ApplyFailed", message))
    return problems


def _api_reason(err: Any) -> str:
    """The API server's own words for a refused write (its Status message), one line."""
    import json

    try:
        message = json.loads(err.body).get("message") or ""
    except (TypeError, ValueError, AttributeError):
        message = ""
    return f"{err.status} {err.reason}: {message or err}".replace("\n", " ")[:1000]


def _plan_or_report(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    manifest: MultimodalModel,
    idx: Indexes,
    limits: Limits,
    logger: Logger,
) -> Plan | None:
    """The plan, or None after reporting why there is none (Planned=False)."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    try:
        inventory = inventory_for(ctx, idx, namespace, name)
        resolved = resolve_models(ctx, manifest)
        return plan(
            manifest,
            inventory,
            limits=calibrated(ctx, limits),
            cache=ctx.assessments,
            resolved=resolved,
            multinode=ctx.config.multinode,
        )
    except (PlanningError, HubError) as err:
        was = find_condition(body.get("status") or {}, "Planned") or {}
        kube = ctx.kube()
        write_status(
            kube,
            namespace,
            name,
            {"observedGeneration": meta.get("generation")},
            [
                Cond("Planned", "False", str(err.reason), str(err)),
                Cond("Ready", "False", "NotPlanned", "no plan in force"),
            ],
        )
        if was.get("reason") != err.reason or was.get("message") != str(err):
            post_event(kube, body, "Warning", str(err.reason), str(err))
            ctx.telemetry.record_decision(namespace, name, "NotPlaced", str(err.reason))
        logger.info(f"not placed: {err.reason}: {err}")
        return None


def _announce(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    p: Plan,
    rendered: Rendered | RenderedGroup,
    replicas: int,
    created: bool,
) -> None:
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    decision = "Applied" if created else "Replanned"
    ctx.telemetry.record_decision(namespace, name, decision, "PlanFound")
    post_event(
        ctx.kube(),
        body,
        "Normal",
        decision,
        f"{p.explanation} {rendered.workload['kind']} {name}: {replicas} replica(s), template "
        f"{rendered.template_hash}.",
    )


def _ready(
    status: Mapping[str, Any],
    observed: Observed,
    replicas: int,
    problems: Sequence[Problem],
    cache: Cond | None = None,
) -> Cond | None:
    """The Ready condition a reconcile writes (None: leave it to the Deployment's events)."""
    if problems:
        conflict = any(p.reason == "ChildConflict" for p in problems)
        reason = "ChildConflict" if conflict else "ApplyFailed"
        return Cond("Ready", "False", reason, "; ".join(p.message for p in problems))
    ready = find_condition(status, "Ready")
    if observed.deployment is None and cache is not None and cache.status != "True":
        return Cond("Ready", "False", "WaitingForCache", cache.message)
    if observed.deployment is None:
        # What the new Deployment's first event will report, so that event writes nothing.
        return Cond("Ready", "False", "ReplicasNotReady", f"0/{replicas} ready")
    if ready is None or ready.get("reason") in (*CHILD_REASONS, "NotPlanned"):
        dep = observed.deployment
        have = int((dep.get("status") or {}).get("readyReplicas") or 0)
        return ready_condition(replicas, have, dep.get("conditions") or ())
    # The replicas' readiness holds for this generation too until the Deployment says
    # otherwise (its events re-assess it): re-stamped with this generation, in this write.
    return Cond("Ready", str(ready.get("status")), str(ready.get("reason")), str(
        ready.get("message") or ""))  # fmt: skip


def _report_plan(
    ctx: OperatorContext,
    body: Mapping[str, Any],
    p: Plan,
    rendered: Rendered | RenderedGroup,
    replicas: int,
    observed: Observed,
    problems: Sequence[Problem],
    cache: Cond | None = None,
) -> None:
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    status = body.get("status") or {}
    reason = "PlanFoundApproximate" if p.approximate else "PlanFound"
    conds = [Cond("Planned", "True", reason, p.explanation)]
    ready = _ready(status, observed, replicas, problems, cache)
    if ready is not None:
        conds.append(ready)
    if cache is not None:
        conds.append(cache)
    fields: dict[str, Any] = {
        "plan": plan_status(p, rendered.template_hash, cache is not None),
        "selector": rendered.selector_string,
        "observedGeneration": meta.get("generation"),
    }
    if observed.deployment is None and find_condition(status, "Ready") is None:
        fields.update(replicas=0, readyReplicas=0)
    kube = ctx.kube()
    wrote = write_status(kube, namespace, name, fields, conds, current=body)
    if wrote and problems and ready is not None:
        post_event(kube, body, "Warning", ready.reason, ready.message)
    was = find_condition(status, "CacheReady") or {}
    if cache is not None and was.get("reason") != cache.reason:
        kind = "Warning" if cache.reason == "CacheFillFailed" else "Normal"
        post_event(kube, body, kind, cache.reason, cache.message)
    ctx.telemetry.set_plan(
        namespace, name, p.gpu, p.tensor_parallel_size, p.quantization, p.kv_cache_dtype,
        p.cost_per_hour_usd,
    )  # fmt: skip
    ctx.telemetry.set_replicas(namespace, name, replicas)


def _report_children(
    ctx: OperatorContext, body: Mapping[str, Any], problems: Sequence[Problem], observed: Observed
) -> None:
    """Ready after a repair: the problems, or — when a problem was reported before — the
    replicas' readiness again."""
    meta = body["metadata"]
    status = body.get("status") or {}
    replicas = observed.replicas or 0
    ready = _ready(status, observed, replicas, problems)
    if ready is None:
        return
    kube = ctx.kube()
    if write_status(kube, str(meta["namespace"]), str(meta["name"]), {}, [ready]) and problems:
        post_event(kube, body, "Warning", ready.reason, ready.message)
