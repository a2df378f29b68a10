"""A model's serving workload as the watches see it: its Deployment or, for a replica over
several nodes, its LeaderWorkerSet (docs/multinode.md). One record shape for both, kept in the
watch indexes (``mmop_deployments``, ``mmop_groups``), and the mirror of its replica counts and
readiness into the model's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from mmop import children
from mmop.controller.context import OperatorContext
from mmop.controller.report import NotPlannedYet, write_status
from mmop.inventory import NO_REQUESTS, pod_spec_requests
from mmop.render import GPU_PRODUCT_LABEL, LABEL_MODEL, LWS_KIND
from mmop.status import find_condition, ready_condition

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

# Ready reasons a reconcile sets (a workload's event must not replace them with the replicas'
# count: the model is not ready while a child is missing).
CHILD_REASONS = ("ChildConflict", "ApplyFailed")


def model_of(body: Mapping[str, Any], name: str) -> str:
    """The model an object of mmop's belongs to (its model label, else its own name)."""
    return str(((body.get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL) or name)


def affinity_product(pod_spec: Mapping[str, Any]) -> str | None:
    """The GPU product a rendered pod is pinned to (its required node affinity)."""
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == GPU_PRODUCT_LABEL and expr.get("values"):
                return str(expr["values"][0])
    return None


def pod_template(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], int]:
    """The pod template of a workload and its pods per replica: a Deployment's template and 1;
    a LeaderWorkerSet's leader template (its workers ask for the same resources) and the
    group's size."""
    spec = body.get("spec") or {}
    if body.get("kind") == LWS_KIND:
        group = spec.get("leaderWorkerTemplate") or {}
        template = group.get("leaderTemplate") or group.get("workerTemplate") or {}
        return template, max(1, int(group.get("size") or 1))
    return spec.get("template") or {}, 1


def workload_record(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What an index keeps of a workload: replicas (Deployment pods, or LeaderWorkerSet
    groups), pods per replica, one pod's requests and GPU product (for the inventory), the
    ready counts and conditions, and the child record a reconcile compares with."""
    spec = body.get("spec") or {}
    template, size = pod_template(body)
    pod_spec = template.get("spec") or {}
    try:
        pod = pod_spec_requests(pod_spec, name)
    except ValueError:
        pod = NO_REQUESTS
    status = body.get("status") or {}
    return {
        "kind": str(body.get("kind") or "Deployment"),
        "replicas": spec.get("replicas"),
        "podsPerReplica": size,
        "gpus": pod.gpus,
        "cpu": pod.cpu_millicores,
        "memory": pod.memory_bytes,
        "ephemeral": pod.ephemeral_bytes,
        "product": affinity_product(pod_spec),
        "status": {
            "readyReplicas": status.get("readyReplicas") or 0,
            "replicas": status.get("replicas") or 0,
        },
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in status.get("conditions") or []
        ],
        "child": children.record(body),
    }


async def mirror_workload(
    ctx: OperatorContext, body: Mapping[str, Any], type: str | None, logger: Logger
) -> None:
    """Mirror a workload's replica counts and readiness (and why pods are not created) into
    its model's status."""
    meta = body.get("metadata") or {}
    name = (meta.get("labels") or {}).get(LABEL_MODEL)
    namespace = meta.get("namespace")
    if not name or not namespace:
        return
    key = (str(namespace), str(name))
    if type == "DELETED":
        ctx.last_ready.pop(key, None)  # keep the cache bounded by live models
        return
    st = body.get("status") or {}
    desired = int((body.get("spec") or {}).get("replicas") or 0)
    ready, current = int(st.get("readyReplicas") or 0), int(st.get("replicas") or 0)
    cond = ready_condition(desired, ready, st.get("conditions") or [])
    seen = (current, ready, cond.reason)
    if ctx.last_ready.get(key) == seen and type != "ADDED":
        return
    ctx.telemetry.set_replicas(*key, desired, current, ready)
    wrote = await _mirror(ctx, key, {"replicas": current, "readyReplicas": ready}, cond)
    if wrote is None:
        return  # no plan yet: the reconcile writes these counts with it
    ctx.last_ready[key] = seen
    if wrote and cond.status == "True":
        logger.info(f"{key[0]}/{key[1]}: {cond.message}")


async def _mirror(
    ctx: OperatorContext, key: tuple[str, str], fields: dict[str, Any], cond: Any
) -> bool | None:
    """Write the counts and Ready; None when the model has no plan yet. Ready is left alone
    while a reconcile reports a child it could not apply."""

    def mirror(seen: Mapping[str, Any] | None) -> bool:
        conds = [cond]
        model = seen if seen is not None else ctx.models.get(key)
        ready = find_condition((model or {}).get("status") or {}, "Ready")
        if ready and ready.get("reason") in CHILD_REASONS:
            conds = []
        return write_status(ctx.kube(), *key, fields, conds, current=seen, planned_only=True)

    try:
        # Compared first with the model as the watch last delivered it, without a read: a stale
        # copy fails the write's resourceVersion check and the object is read then. A copy that
        # needs no write, or has no plan yet, may predate a status write (ours or the
        # reconcile's) that the watch has not delivered: then the API server decides.
        seen = ctx.models.get(key)
        wrote = False
        with contextlib.suppress(NotPlannedYet):
            wrote = seen is not None and await asyncio.to_thread(mirror, seen)
        if not wrote:
            wrote = await asyncio.to_thread(mirror, None)
    except NotPlannedYet:
        return None
    return wrote
