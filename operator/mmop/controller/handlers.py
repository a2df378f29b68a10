"""kopf handlers: glue between MultimodalModel objects and the pure core.

One reconcile serves create, update and resume: read the inventory, plan, render, server-side
apply what changed (decided by the rendered pod template's hash), and write status — the plan,
conditions Planned / Ready / Degraded with observedGeneration, and an event per decision. A model
that could not be placed is planned again by a timer when the cluster changes. Deployment events
keep status.replicas / readyReplicas and the Ready condition current.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from mmop.api import (
    API_GROUP,
    API_VERSION,
    KIND,
    MultimodalModel,
    PlanStatus,
    ScalingMode,
)
from mmop.controller import telemetry
from mmop.controller.diffbase import LightDiffBaseStorage
from mmop.controller.kube import MODEL_LABEL, Kube
from mmop.inventory import (
    NO_REQUESTS,
    Inventory,
    NodeGpus,
    Requests,
    UnrecognisedNode,
    inventory_from_records,
    node_record,
    place_pending,
    pod_requests,
    pod_spec_requests,
)
from mmop.planner import Limits, Plan, PlanningError, plan
from mmop.render import GPU_PRODUCT_LABEL, TEMPLATE_HASH, RenderOptions, render

PLURAL = "multimodalmodels"
UNPLACED_REASONS = ("Infeasible", "InsufficientCapacity")
RETRY_DELAYS = (1, 2, 5, 10, 30, 60)  # seconds before the n-th retry of a failed reconcile
# kopf runs the reconciles (sync handlers) in a pool of this many threads. A reconcile spends
# nearly all its time waiting for the API server (three applies, an Event, a status write; a
# Service's create took seconds on a loaded API server), so the pool bounds how many models are
# reconciled per second: threads / seconds per reconcile. Threads start only when needed.
HANDLER_THREADS = int(os.environ.get("MMOP_HANDLER_THREADS", "256"))
API_CONNECTIONS = HANDLER_THREADS + 2

log = logging.getLogger("mmop.controller")


@dataclass
class OperatorState:
    """Process-wide operator state, set up at start-up."""

    kube: Kube | None = None
    render_options: RenderOptions = field(default_factory=RenderOptions)
    replan_interval_seconds: float = 15.0
    last_ready: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


STATE = OperatorState()


def _kube() -> Kube:
    if STATE.kube is None:
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
            )
        # One kept-alive connection per handler thread: with fewer, urllib3 drops the extras
        # and every request beyond them pays a new TLS handshake (on both ends).
        cfg.connection_pool_maxsize = API_CONNECTIONS
        STATE.kube = Kube(client.ApiClient(cfg))
    return STATE.kube


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    current: Sequence[Mapping[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
) -> dict[str, Any]:
    """A condition, keeping lastTransitionTime when the status did not change."""
    previous = next((c for c in current if c.get("type") == ctype), None)
    changed = previous is None or previous.get("status") != status
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:4000],
        "observedGeneration": generation,
        "lastTransitionTime": (
            _now() if previous is None or changed else previous.get("lastTransitionTime", _now())
        ),
    }


def _merge_conditions(
    current: Sequence[Mapping[str, Any]], updates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_type = {c["type"]: dict(c) for c in current if "type" in c}
    for update in updates:
        by_type[update["type"]] = update
    order = ["Planned", "Ready", "Degraded"]
    return sorted(
        by_type.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else 9
    )


def _same_conditions(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    def key(cs: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason"), c.get("message"),
             c.get("observedGeneration"))
            for c in cs
        )  # fmt: skip

    return key(a) == key(b)


def _plan_status(p: Plan, template_hash: str) -> dict[str, Any]:
    status = PlanStatus(
        model=p.model,
        gpu=p.gpu,
        gpu_product=p.gpu_product,
        gpus_per_replica=p.tensor_parallel_size,
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
        args=p.args,
        memory={
            k: getattr(p.memory, k)
            for k in (
                "weights_gib",
                "non_torch_gib",
                "activation_gib",
                "cudagraph_gib",
                "kv_cache_gib",
                "kv_cache_tokens",
                "max_concurrency",
            )
        },
        performance=p.performance.model_dump(by_alias=False),
        alternatives=[a.model_dump(exclude_none=True) for a in p.alternatives],
        explanation=p.explanation,
        template_hash=template_hash,
        config=p.config,
    )
    return status.model_dump(by_alias=True, exclude_none=True)


def limits_from_status(status: Mapping[str, Any], generation: int | None = None) -> Limits:
    """What the autoscaler learnt (status.autoscaler) as planner limits. The demand a fleet was
    consolidated for holds only for the generation it was seen under: a spec edit plans for
    the new spec.workload."""
    memory = status.get("autoscaler") or {}
    floor = memory.get("minKvCacheTokens")
    demand = memory.get("demand")
    if generation is None or memory.get("demandGeneration") != generation:
        demand = None
    return Limits(
        avoid=frozenset(str(a) for a in memory.get("avoid") or ()),
        min_kv_cache_tokens=int(floor) if floor is not None else None,
        demand=int(demand) if demand is not None else None,
    )


def _template_hash(deployment: Mapping[str, Any] | None) -> str | None:
    """The hash mmop stamped on a Deployment's pod template (None: not ours, or none)."""
    if not deployment:
        return None
    template = (deployment.get("spec") or {}).get("template") or {}
    value = ((template.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
    return str(value) if value else None


def _desired_replicas(
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


class NotPlannedYet(Exception):
    """The model has no plan in its status yet (the reconcile that writes one is under way)."""


def _write_status(
    kube: Kube,
    namespace: str,
    name: str,
    fields: Mapping[str, Any],
    conditions: Sequence[dict[str, Any]],
    current: Mapping[str, Any] | None = None,
    planned_only: bool = False,
    raise_unplanned: bool = False,
) -> bool:
    """Set status fields and merge conditions against the object's current status, with
    optimistic concurrency; nothing is written when nothing changes (nor, with
    ``planned_only``, before the reconcile has written a plan: it writes these fields too)."""

    def changes(obj: Mapping[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        if planned_only and not status.get("plan"):
            raise NotPlannedYet

        update = {k: v for k, v in fields.items() if status.get(k) != v}
        current = list(status.get("conditions") or [])
        generation = (obj.get("metadata") or {}).get("generation")
        fresh = [
            _condition(current, c["type"], c["status"], c["reason"], c["message"], generation)
            for c in conditions
        ]
        merged = _merge_conditions(current, fresh)
        if not _same_conditions(current, merged):
            update["conditions"] = merged
        return update

    try:
        return kube.update_status(namespace, name, changes, current=current)
    except NotPlannedYet:
        if raise_unplanned:
            raise
        return False


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """An Event on the model for a decision. Posting one never fails a reconcile: a refused
    Event is logged and the work goes on."""
    try:
        _kube().event(body, kind, reason, message)
    except Exception as err:  # the decision stands; only its Event is lost
        log.warning(f"event {reason} not posted: {type(err).__name__}: {err}")


def _cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def reconcile_model(
    body: kopf.Body | Mapping[str, Any],
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    nodes: Any = None,
    pods: Any = None,
    deployments: Any = None,
    *,
    limits: Limits | None = None,
    force: bool = False,
    replicas_from_plan: bool = False,
) -> str:
    """Plan, render, apply and report for one MultimodalModel; returns what it did."""
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    name, namespace, uid = meta["name"], meta["namespace"], meta.get("uid")
    generation = meta.get("generation")
    conditions: Sequence[Mapping[str, Any]] = list(status.get("conditions") or [])
    kube = _kube()

    try:
        manifest = _manifest(name, namespace, spec)
    except ValidationError as err:
        first = err.errors()[0]
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        if _write_status(
            kube,
            namespace,
            name,
            {"observedGeneration": generation},
            [_cond("Planned", "False", "InvalidSpec", message)],
        ):
            post_event(body, "Warning", "InvalidSpec", message)
        raise kopf.PermanentError(f"invalid spec: {message}") from err

    if deployments is not None:
        existing = _deployment_from_index(deployments, namespace, name)
    else:
        existing = kube.deployment(namespace, name)
    in_force = (status.get("plan") or {}).get("templateHash")
    existing_hash = _template_hash(existing)
    if (
        not force
        and status.get("observedGeneration") == generation
        and in_force
        and existing_hash == in_force
    ):
        # Already handled and in place: a resume or a repeat does not re-plan a running model
        # (that would move it whenever the cluster changed); spec edits and the autoscaler do.
        return "unchanged"

    inventory = _inventory_for(namespace, name, nodes, pods, deployments)
    try:
        p = plan(manifest, inventory, limits=limits or limits_from_status(status, generation))
    except PlanningError as err:
        was = next((c for c in conditions if c.get("type") == "Planned"), {})
        _write_status(
            kube,
            namespace,
            name,
            {"observedGeneration": generation},
            [
                _cond("Planned", "False", err.reason, str(err)),
                _cond("Ready", "False", "NotPlanned", "no plan in force"),
            ],
        )
        if was.get("reason") != err.reason or was.get("message") != str(err):
            post_event(body, "Warning", err.reason, str(err))
            telemetry.record_decision(namespace, name, "NotPlaced", err.reason)
        logger.info(f"not placed: {err.reason}: {err}")
        return "unplaced"

    current_replicas = (existing or {}).get("spec", {}).get("replicas")
    replicas = _desired_replicas(manifest, p, current_replicas, replicas_from_plan)
    rendered = render(
        name, namespace, uid, manifest.spec, p, STATE.render_options, generation, replicas=replicas
    )
    action = "unchanged"
    if existing is None or existing_hash != rendered.template_hash or current_replicas != replicas:
        for obj in rendered.objects():
            kube.apply(obj)
        action = "created" if existing is None else "updated"
        decision = "Applied" if existing is None else "Replanned"
        telemetry.record_decision(namespace, name, decision, "PlanFound")
        post_event(
            body,
            "Normal",
            decision,
            f"{p.explanation} Deployment {name}: {replicas} replica(s), template "
            f"{rendered.template_hash}.",
        )
    selector = f"app.kubernetes.io/instance={name},{MODEL_LABEL}={name}"
    updates = [_cond("Planned", "True", "PlanFound", p.explanation)]
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("observedGeneration") != generation:
        # The replicas' readiness holds for this generation too until the Deployment says
        # otherwise (its events re-assess it); re-stamped here, in the same write, rather than
        # by the first Deployment event after an operator restart.
        updates.append(
            _cond(
                "Ready",
                str(ready.get("status")),
                str(ready.get("reason")),
                str(ready.get("message") or ""),
            )
        )
    fields: dict[str, Any] = {
        "plan": _plan_status(p, rendered.template_hash),
        "selector": selector,
        "observedGeneration": generation,
    }
    if existing is None and not any(c.get("type") == "Ready" for c in conditions):
        # What the new Deployment's first event will report, so that event writes nothing.
        updates.append(_cond("Ready", "False", "ReplicasNotReady", f"0/{replicas} ready"))
        fields.update(replicas=0, readyReplicas=0)
    _write_status(kube, namespace, name, fields, updates, current=body)
    telemetry.set_plan(
        namespace, name, p.gpu, p.tensor_parallel_size, p.quantization, p.kv_cache_dtype,
        p.cost_per_hour_usd,
    )  # fmt: skip
    telemetry.set_replicas(namespace, name, replicas)
    return action


def _manifest(name: str, namespace: str, spec: Mapping[str, Any]) -> MultimodalModel:
    return MultimodalModel.model_validate(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def _inventory_for(namespace: str, name: str, nodes: Any, pods: Any, deployments: Any) -> Inventory:
    """The cluster as one model's plan sees it: its own GPUs count as free."""
    if nodes is not None and pods is not None:
        return _inventory_from_indexes(
            nodes, pods, exclude_model=(namespace, name), deployments=deployments
        )
    return _kube().inventory(exclude_model=(namespace, name))


def plan_model(
    body: Mapping[str, Any], nodes: Any, pods: Any, deployments: Any, limits: Limits
) -> Plan:
    """The plan reconcile_model would make now under ``limits``, without acting on it.
    Raises PlanningError (nothing fits) or ValidationError (invalid spec)."""
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    manifest = _manifest(name, namespace, body.get("spec") or {})
    return plan(manifest, _inventory_for(namespace, name, nodes, pods, deployments), limits=limits)


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
def reconcile(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **kwargs: Any) -> None:
    # kopf passes the Node and Pod indexes by the indexing functions' names.
    started = time.monotonic()
    try:
        action = reconcile_model(
            body, patch, logger, kwargs["gpu_nodes"], kwargs["gpu_pods"], kwargs["mmop_deployments"]
        )
    except kopf.PermanentError as err:
        telemetry.record_error(err)
        raise
    except Exception as err:
        # Transient API trouble (conflicts, timeouts, an admission webhook saying no for now):
        # try again soon, backing off, instead of kopf's fixed minute.
        telemetry.record_error(err)
        delay = RETRY_DELAYS[min(int(kwargs.get("retry") or 0), len(RETRY_DELAYS) - 1)]
        raise kopf.TemporaryError(f"{type(err).__name__}: {err}", delay=delay) from err
    telemetry.record_reconcile(action, time.monotonic() - started)
    logger.debug(f"reconcile: {action}")


# ----------------------------------------------------------------------------------------------
# The inventory, kept current from watches instead of listed on every reconcile


@dataclass
class InventoryCache:
    """The inventory assembled from the Node and Pod indexes, rebuilt only after they change.

    The index functions keep parsed records (a NodeGpus per GPU node; node, requests and model
    per pod bound to a node; replicas, pod requests and product per mmop Deployment) and bump
    ``version`` when a record changes; a deletion (kopf drops the record without calling the
    index function) shows as an index that shrank. Reconciles share one assembled inventory per
    change and only build a variant for a model whose own pods must be left out (a re-plan may
    reuse what the model holds). Pods a Deployment wants but the scheduler has not bound yet are
    placed as it would place them, so models planned in quick succession do not count the same
    free GPUs, CPU and memory."""

    version: int = 0
    built: tuple[int, int, int, int] = (-1, 0, 0, 0)
    base: Inventory | None = None
    records: list[NodeGpus | UnrecognisedNode] = field(default_factory=list)
    requested: dict[str, Requests] = field(default_factory=dict)
    by_model: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)
    pending: dict[tuple[str, str], list[tuple[str, Requests]]] = field(default_factory=dict)
    copies: dict[tuple[str, Requests], tuple[NodeGpus, NodeGpus]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def changed(self) -> None:
        self.version += 1

    def inventory(
        self,
        nodes: Mapping[str, Any],
        pods: Mapping[str, Any],
        exclude_model: tuple[str, str],
        deployments: Mapping[Any, Any] | None = None,
    ) -> Inventory:
        with self.lock:
            seen = (self.version, len(nodes), len(pods), len(deployments or {}))
            if self.built != seen or self.base is None:
                self._assemble(nodes, pods, deployments or {})
                self.built = seen
            held = self.by_model.get(exclude_model)
            if not held and exclude_model not in self.pending:
                assert self.base is not None
                return self.base
            without = dict(self.requested)
            for node, *asked in held or ():
                without[node] = without.get(node, NO_REQUESTS).minus(Requests(*asked[:4]))
            others = [p for k, claims in self.pending.items() if k != exclude_model for p in claims]
            return inventory_from_records(
                self.records, place_pending(self.records, without, others), self.copies
            )

    def _assemble(
        self, nodes: Mapping[str, Any], pods: Mapping[str, Any], deployments: Mapping[Any, Any]
    ) -> None:
        self.records = [r for store in list(nodes.values()) for r in list(store)]
        if len(self.copies) > 16 * len(self.records) + 64:
            self.copies.clear()  # nodes came and went: forget the copies of old ones
        sums: dict[str, list[int]] = {}
        by_model: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for store in list(pods.values()):
            for record in list(store):
                node = record[0]
                total = sums.get(node)
                if total is None:
                    sums[node] = [record[1], record[2], record[3], record[4]]
                else:
                    total[0] += record[1]
                    total[1] += record[2]
                    total[2] += record[3]
                    total[3] += record[4]
                model = record[5]
                if model is not None:
                    mine = by_model.get(model)
                    if mine is None:
                        by_model[model] = [record]
                    else:
                        mine.append(record)
        requested = {node: Requests(*total) for node, total in sums.items()}
        pending: dict[tuple[str, str], list[tuple[str, Requests]]] = {}
        for key, store in list(deployments.items()):
            for dep in list(store):
                want = int(dep.get("replicas") or 0) - len(by_model.get(key, ()))
                if want > 0 and dep.get("product") and dep.get("gpus"):
                    pod = Requests(
                        int(dep["gpus"]),
                        int(dep.get("cpu") or 0),
                        int(dep.get("memory") or 0),
                        int(dep.get("ephemeral") or 0),
                    )
                    pending[key] = [(str(dep["product"]), pod)] * want
        self.requested, self.by_model, self.pending = requested, by_model, pending
        every = [p for claims in pending.values() for p in claims]
        self.base = inventory_from_records(
            self.records, place_pending(self.records, requested, every), self.copies
        )


INVENTORY = InventoryCache()


# The indexes and the event handlers that only read are coroutines: kopf runs sync handlers in
# its thread pool, where every watch event (each pod's, node's and Deployment's) would wait for a
# thread behind the reconciles blocked on API calls.
@kopf.index("", "v1", "nodes")
async def gpu_nodes(body: kopf.Body, name: str, logger: kopf.Logger, **kwargs: Any) -> Any:
    """A NodeGpus per GPU node; nothing for other nodes (an empty result drops what an earlier
    event of the node indexed: a node that lost its GPUs leaves the inventory)."""
    try:
        record = node_record(body)
    except ValueError as err:
        logger.warning(f"node {name} left out of the GPU inventory: {err}")
        record = None
    _index_changed(kwargs.get("gpu_nodes"), name, record)
    return {} if record is None else {name: record}


@kopf.index("", "v1", "pods")
async def gpu_pods(
    body: kopf.Body, namespace: str | None, name: str, logger: kopf.Logger, **kwargs: Any
) -> Any:
    """Per pod bound to a node and not terminated that requests anything, GPU pod or not:
    (node, GPUs, CPU millicores, memory bytes, ephemeral-storage bytes, (namespace, model) or
    None) — what the scheduler counts it as taking off the node. Nothing for other pods (an
    empty result drops what an earlier event indexed: a pod that terminated frees its node)."""
    key = f"{namespace}/{name}"
    try:
        found = pod_requests(body)
    except ValueError as err:
        logger.warning(f"pod {namespace}/{name} left out of the GPU inventory: {err}")
        found = None
    record: tuple[Any, ...] | None = None
    if found is not None:
        node, asked = found
        model = ((body.get("metadata") or {}).get("labels") or {}).get(MODEL_LABEL)
        owner = (str(namespace), str(model)) if model else None
        # One string per node name, not one per pod: the index holds every bound pod.
        record = (sys.intern(node), *asked, owner)
    _index_changed(kwargs.get("gpu_pods"), key, record)
    return {} if record is None else {key: record}


def _index_changed(index: Any, key: Any, record: Any) -> None:
    """Mark the inventory changed unless ``index`` already holds just ``record`` under ``key``.

    kopf updates the index after the index function returns, so the version is bumped again
    once that is done: a reconcile assembling in between cannot keep an inventory built from
    the index as it was."""
    store = index.get(key) if isinstance(index, Mapping) else None
    if list(store or ()) == ([] if record is None else [record]):
        return
    INVENTORY.changed()
    with contextlib.suppress(RuntimeError):  # no running loop: called outside kopf
        asyncio.get_running_loop().call_soon(INVENTORY.changed)


def _inventory_from_indexes(
    nodes: Mapping[str, Any],
    pods: Mapping[str, Any],
    exclude_model: tuple[str, str],
    deployments: Mapping[Any, Any] | None = None,
) -> Inventory:
    return INVENTORY.inventory(nodes, pods, exclude_model, deployments)


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "mmop"})
async def mmop_deployments(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """The Deployments mmop manages: what a reconcile compares with (no read per reconcile)."""
    template = (body.get("spec") or {}).get("template") or {}
    INVENTORY.changed()
    pod_spec = template.get("spec") or {}
    try:
        pod = pod_spec_requests(pod_spec, name)
    except ValueError:
        pod = NO_REQUESTS
    slim = {
        "replicas": (body.get("spec") or {}).get("replicas"),
        "gpus": pod.gpus,
        "cpu": pod.cpu_millicores,
        "memory": pod.memory_bytes,
        "ephemeral": pod.ephemeral_bytes,
        "product": _affinity_product(pod_spec),
        "status": {"readyReplicas": (body.get("status") or {}).get("readyReplicas") or 0},
        "spec": {
            "replicas": (body.get("spec") or {}).get("replicas"),
            "template": {"metadata": {"annotations": dict(
                (template.get("metadata") or {}).get("annotations") or {}
            )}},
        }
    }  # fmt: skip
    return {(namespace, name): slim}


def _affinity_product(pod_spec: Mapping[str, Any]) -> str | None:
    """The GPU product a rendered pod is pinned to (its required node affinity)."""
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            if expr.get("key") == GPU_PRODUCT_LABEL and expr.get("values"):
                return str(expr["values"][0])
    return None


def _deployment_from_index(
    index: Mapping[Any, Any], namespace: str, name: str
) -> dict[str, Any] | None:
    store = index.get((namespace, name))
    found = list(store) if store is not None else []
    return dict(found[0]) if found else None


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "mmop"})
async def deployment_changed(
    body: kopf.Body, type: str | None, logger: kopf.Logger, **_: Any
) -> None:
    """Mirror the Deployment's replica counts and readiness into the model's status."""
    meta = body.get("metadata") or {}
    name = (meta.get("labels") or {}).get(MODEL_LABEL)
    namespace = meta.get("namespace")
    if not name or not namespace:
        return
    if type == "DELETED":
        STATE.last_ready.pop((namespace, name), None)  # keep the cache bounded by live models
        mmop.controller.autoscaling.forget(namespace, name)
        telemetry.forget_model(namespace, name)
        return
    st = body.get("status") or {}
    desired = int((body.get("spec") or {}).get("replicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    current = int(st.get("replicas") or 0)
    key = (namespace, name)
    if STATE.last_ready.get(key) == (current, ready) and type != "ADDED":
        return
    if desired > 0 and ready >= desired:
        cond = _cond("Ready", "True", "AllReplicasReady", f"{ready}/{desired} ready")
    else:
        cond = _cond("Ready", "False", "ReplicasNotReady", f"{ready}/{desired} ready")

    telemetry.set_replicas(namespace, name, desired, current, ready)

    def mirror(seen: Mapping[str, Any] | None) -> bool:
        return _write_status(
            _kube(),
            namespace,
            name,
            {"replicas": current, "readyReplicas": ready},
            [cond],
            current=seen,
            planned_only=True,
            raise_unplanned=True,
        )

    try:
        # Compared first with the model as the watch last delivered it, without a read: a stale
        # copy fails the write's resourceVersion check and the object is read then. A copy that
        # needs no write, or has no plan yet, may predate a status write (ours or the
        # reconcile's) that the watch has not delivered: then the API server decides.
        seen = mmop.controller.autoscaling.MODELS.get((namespace, name))
        wrote = False
        with contextlib.suppress(NotPlannedYet):
            wrote = seen is not None and await asyncio.to_thread(mirror, seen)
        if not wrote:
            wrote = await asyncio.to_thread(mirror, None)
    except NotPlannedYet:
        # The reconcile writes these counts with the plan; later Deployment events (its
        # ReplicaSet, its pods) carry the news on. Not remembered: the next event writes.
        return
    STATE.last_ready[key] = (current, ready)
    if wrote and cond["status"] == "True":
        logger.info(f"{namespace}/{name}: {cond['message']}")


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials from the in-cluster service account, else from the kubeconfig ($KUBECONFIG
    as it is now, not as it was when the client library was imported): client certificates and
    bearer tokens alike."""
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=cfg
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


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Hardened kopf settings: timeouts, backoff, annotation-only bookkeeping, events."""
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
    settings.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    settings.posting.level = logging.INFO
    settings.execution.max_workers = HANDLER_THREADS
    _kube()


# The autoscaler's handlers register when this module is imported (it needs the names above),
# as does the heap trimming.
import mmop.controller.autoscaling  # noqa: E402
import mmop.controller.heap  # noqa: E402
