"""The kopf registrations, and nothing else: which events reach which part of the operator.

``mmop run`` loads this module as kopf's handler module (nothing imports it). Every handler
takes the operator's state from kopf's memo (``memo.context``, an ``OperatorContext``); a
reconcile is ``reconcile.reconcile_model``, the periodic loop ``autoscaling.run_loop``.

Indexes (kept current by watches, read by reconciles and the loop instead of listing): GPU
nodes, pods bound to nodes, mmop's Deployments, Services and PodDisruptionBudgets, the weight
cache's Jobs and claims, and each model's pods. The index functions and the event handlers that
only read are coroutines: kopf runs sync handlers in its thread pool, where every watch event
would wait behind the reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import kopf

from mmop import children
from mmop.api import API_GROUP, API_VERSION
from mmop.autoscaler import oom_time
from mmop.controller import autoscaling, calibration, heap
from mmop.controller.config import from_environment
from mmop.controller.context import Indexes, OperatorContext, context_of
from mmop.controller.diffbase import LightDiffBaseStorage
from mmop.controller.reconcile import ChildrenNotApplied, reconcile_model
from mmop.controller.workload import mirror_workload, model_of, workload_record
from mmop.crd import PLURAL
from mmop.inventory import node_record, pod_requests
from mmop.render import (
    CONTAINER_NAME,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LWS_WORKER_INDEX_LABEL,
    MANAGER,
    PORT_NAME,
)
from mmop.status import replica_startup_seconds
from mmop.vllm import OPENAI_PORT

RETRY_DELAYS = (1, 2, 5, 10, 30, 60)  # seconds before the n-th retry of a failed reconcile
MANAGED = {LABEL_MANAGED_BY: MANAGER}

log = logging.getLogger("mmop.controller")


# ----------------------------------------------------------------------------- lifecycle


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Hardened kopf settings, the operator context (``mmop run`` puts one in the memo; a bare
    ``kopf run`` of this module gets one from the environment) and the periodic loops."""
    if getattr(memo, "context", None) is None:
        memo.context = OperatorContext(config=from_environment())
    ctx = context_of(memo)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mmop.dev")
    # kopf's annotation diff-base, built without deep-copying the status (diffbase.py).
    settings.persistence.diffbase_storage = LightDiffBaseStorage(
        prefix="mmop.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    settings.queueing.error_delays = RETRY_DELAYS
    settings.posting.level = logging.INFO
    settings.execution.max_workers = ctx.config.handler_threads
    await asyncio.to_thread(ctx.kube)
    await asyncio.to_thread(calibration.load, ctx)
    loop = asyncio.get_running_loop()
    ctx.tasks.append(loop.create_task(autoscaling.run_loop(ctx)))
    ctx.tasks.append(loop.create_task(calibration.save_loop(ctx)))
    ctx.tasks.append(loop.create_task(heap.trim_loop(ctx.config.heap_trim_seconds)))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    ctx = context_of(memo)
    for task in ctx.tasks:
        task.cancel()
    for task in ctx.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    ctx.tasks.clear()
    with contextlib.suppress(Exception):  # what the last engines showed, kept
        await asyncio.to_thread(calibration.save, ctx)
    if ctx.http is not None:
        await ctx.http.close()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Credentials from the in-cluster service account, else from the configured kubeconfig:
    client certificates and bearer tokens alike."""
    from kubernetes import client
    from kubernetes import config as kubeconfig

    ctx = getattr(memo, "context", None)
    path = ctx.config.kubeconfig if isinstance(ctx, OperatorContext) else None
    cfg = client.Configuration()
    try:
        kubeconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except kubeconfig.ConfigException:
        kubeconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=cfg
        )
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        token=bearer_token(cfg.api_key or {}),
    )


def bearer_token(api_key: Mapping[str, str]) -> str | None:
    """The token a kubernetes client Configuration holds: kubernetes-client ≥ 36 keeps it under
    ``BearerToken``, older releases under ``authorization`` (either with a ``Bearer`` prefix)."""
    for key in ("BearerToken", "authorization"):
        value = (api_key.get(key) or "").strip()
        if value:
            for prefix in ("Bearer ", "bearer "):
                value = value.removeprefix(prefix)
            return value.strip() or None
    return None


# ----------------------------------------------------------------------------- the reconcile


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    ctx = context_of(memo)
    started = time.monotonic()
    try:
        action = reconcile_model(ctx, body, Indexes.from_kwargs(kwargs), logger)
    except kopf.PermanentError as err:
        ctx.telemetry.record_error(err)
        raise
    except Exception as err:
        # Refused children, transient API trouble (conflicts, timeouts, an admission webhook
        # saying no for now): try again, backing off, instead of kopf's fixed minute.
        ctx.telemetry.record_error(err)
        delay = RETRY_DELAYS[min(int(kwargs.get("retry") or 0), len(RETRY_DELAYS) - 1)]
        if isinstance(err, ChildrenNotApplied):
            delay = RETRY_DELAYS[-1] if kwargs.get("retry") else RETRY_DELAYS[2]
        raise kopf.TemporaryError(f"{type(err).__name__}: {err}", delay=delay) from err
    ctx.telemetry.record_reconcile(action, time.monotonic() - started)
    logger.debug(f"reconcile: {action}")


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def track_model(body: kopf.Body, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the loop's view of each model current (an event handler: no finalizer, no
    bookkeeping written to the object — a per-object kopf timer would add both)."""
    ctx = context_of(memo)
    ctx.indexes = Indexes.from_kwargs(kwargs)
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if type == "DELETED" or meta.get("deletionTimestamp"):
        ctx.forget(key)
        return
    ctx.models[key] = autoscaling.slim_model(body)


# ----------------------------------------------------------------------------- indexes


@kopf.index("", "v1", "nodes")
async def gpu_nodes(
    body: kopf.Body, name: str, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> Any:
    """A NodeGpus per GPU node; nothing for other nodes (an empty result drops what an earlier
    event of the node indexed: a node that lost its GPUs leaves the inventory)."""
    try:
        record = node_record(body, context_of(memo).inventory.catalog)
    except ValueError as err:
        logger.warning(f"node {name} left out of the GPU inventory: {err}")
        record = None
    _index_changed(context_of(memo), kwargs.get("gpu_nodes"), name, record)
    return {} if record is None else {name: record}


@kopf.index("", "v1", "pods")
async def gpu_pods(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **kwargs: Any,
) -> Any:
    """Per pod bound to a node and not terminated that requests anything, GPU pod or not:
    (node, GPUs, CPU millicores, memory bytes, ephemeral-storage bytes, (namespace, model) or
    None) — what the scheduler counts it as taking off the node."""
    key = f"{namespace}/{name}"
    try:
        found = pod_requests(body)
    except ValueError as err:
        logger.warning(f"pod {namespace}/{name} left out of the GPU inventory: {err}")
        found = None
    record: tuple[Any, ...] | None = None
    if found is not None:
        node, asked = found
        model = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_MODEL)
        owner = (str(namespace), str(model)) if model else None
        # One string per node name, not one per pod: the index holds every bound pod.
        record = (sys.intern(node), *asked, owner)
    _index_changed(context_of(memo), kwargs.get("gpu_pods"), key, record)
    return {} if record is None else {key: record}


def _index_changed(ctx: OperatorContext, index: Any, key: Any, record: Any) -> None:
    """Mark the inventory changed unless ``index`` already holds just ``record`` under ``key``.

    kopf updates the index after the index function returns, so the version is bumped again
    once that is done: a reconcile assembling in between cannot keep an inventory built from
    the index as it was."""
    store = index.get(key) if isinstance(index, Mapping) else None
    if list(store or ()) == ([] if record is None else [record]):
        return
    ctx.inventory.changed()
    with contextlib.suppress(RuntimeError):  # no running loop: called outside kopf
        asyncio.get_running_loop().call_soon(ctx.inventory.changed)


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def mmop_deployments(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> Any:
    """The Deployments mmop manages: replicas, readiness, pod requests and GPU product (for
    the inventory), and the child record a reconcile compares with."""
    context_of(memo).inventory.changed()
    return {(namespace, model_of(body, name)): workload_record(body, name)}


@kopf.index("", "v1", "services", labels=MANAGED)
async def mmop_services(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """mmop's Services, as child records."""
    return {(namespace, model_of(body, name)): children.record(body)}


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def mmop_pdbs(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """mmop's PodDisruptionBudgets, as child records."""
    return {(namespace, model_of(body, name)): children.record(body)}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def mmop_jobs(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """mmop's weight-cache download Jobs (spec.model.cache): the child record and how far the
    Job got (a model may have one per checkpoint and revision)."""
    status = body.get("status") or {}
    return {
        (namespace, model_of(body, name)): {
            "child": children.record(body),
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")}
                for c in status.get("conditions") or []
            ],
            "active": status.get("active") or 0,
            "failed": status.get("failed") or 0,
            "startTime": status.get("startTime"),
            "completionTime": status.get("completionTime"),
        }
    }


@kopf.index("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def mmop_claims(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """The weight-cache claims mmop created: the child record and the claim's phase."""
    phase = (body.get("status") or {}).get("phase")
    return {(namespace, model_of(body, name)): {"child": children.record(body), "phase": phase}}


@kopf.index("", "v1", "pods", labels=MANAGED)
async def model_pods(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """Pods of each model: address, readiness, the newest OOM kill of its engine and how long
    it took to turn Ready."""
    meta = body.get("metadata") or {}
    model = (meta.get("labels") or {}).get(LABEL_MODEL)
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
            # a LeaderWorkerSet's worker pods run no API server: nothing to scrape there
            "serves": str((meta.get("labels") or {}).get(LWS_WORKER_INDEX_LABEL, "0")) == "0",
            "oom": oom_time(status),
            "startup": replica_startup_seconds(body),
        }
    }


# ----------------------------------------------------------------------------- Deployments


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def deployment_changed(
    body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Mirror the Deployment's replica counts and readiness (and why pods are not created)
    into the model's status."""
    await mirror_workload(context_of(memo), body, type, logger)
