"""The renderer: a Plan and its MultimodalModel spec → Deployment, Service and PodDisruptionBudget.

Pure: plain data in, plain dicts out (ready for the Kubernetes API or `kubectl apply`); no API
calls, no clock. The same inputs always give the same dicts, key for key.

What matters for reconciling is `Rendered.template_hash`: the SHA-256 of the canonical JSON of
the pod template (first 16 hex digits). It is written as the pod-template annotation
`mmop.dev/template-hash` (and, for `kubectl get -l`, as a Deployment label of the same name); the
controller compares the live Deployment's pod-template annotation with it to decide whether the
pods must change. Replicas live outside the pod template, so scaling
never changes the hash and never restarts a pod.

The vLLM argv is built here and only here (:func:`vllm_args`), from the plan's structured
fields, with the flag names of the pinned vLLM (:mod:`mmop.vllm`).

Choices (explained in docs/rendering.md): `command: ["vllm", "serve"]` with :func:`vllm_args` as
`args`; a startup probe whose budget grows with the checkpoint size; a preStop sleep so the
endpoint is gone before SIGTERM; a memory-backed /dev/shm; required node affinity to the
planned GPU product; rolling updates that never surge by default (GPUs rarely have room); a pod
that passes the Pod Security Standard `restricted` (non-root, no privilege escalation, every
capability dropped, RuntimeDefault seccomp), with HOME and vLLM's caches on writable volumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmop import vllm
from mmop.api import API_GROUP, API_VERSION, KIND, MultimodalModelSpec, SecretKeyRef
from mmop.inventory import GPU_RESOURCE
from mmop.planner import Plan, checkpoint_weights_gib, ephemeral_gib
from mmop.planner import checkpoint_gib as _checkpoint_gib

CONTAINER_NAME = "vllm"
PORT_NAME = "http"
# Overrides the image's ENTRYPOINT: recent vllm/vllm-openai images use ["vllm", "serve"], older
# ones `python3 -m vllm.entrypoints.openai.api_server`; `vllm serve` exists in both, so the
# rendered pod does not depend on which one an image (or a user's own image) declares.
COMMAND = vllm.SERVE_COMMAND
HEALTH_PATH = vllm.HEALTH_PATH
METRICS_PATH = vllm.METRICS_PATH

# The engine runs as a non-root user whose HOME is a writable emptyDir: every cache vLLM, torch,
# Triton, FlashInfer and CUDA keep under ~ lands there (docs/rendering.md lists them).
HOME = "/home/vllm"
HF_HOME = f"{HOME}/.cache/huggingface"  # the model cache volume (a PVC when configured)
XDG_CACHE_HOME = f"{HOME}/.cache"
XDG_CONFIG_HOME = f"{HOME}/.config"
VLLM_CACHE_ROOT = f"{XDG_CACHE_HOME}/vllm"  # vLLM's default under XDG_CACHE_HOME, made explicit
VLLM_CONFIG_ROOT = f"{XDG_CONFIG_HOME}/vllm"
# Default user, group and fsGroup: not root, not a system account (< 1000); the vLLM image needs
# no particular uid (its files are world-readable) once HOME and the caches are volumes.
DEFAULT_UID = 1000

# Labels and annotations mmop owns.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL = f"{API_GROUP}/model"
TEMPLATE_HASH = f"{API_GROUP}/template-hash"
GENERATION_ANNOTATION = f"{API_GROUP}/generation"
APP_NAME = "vllm"
MANAGER = "mmop"
RESERVED_KEYS = frozenset({LABEL_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY})
RESERVED_PREFIX = f"{API_GROUP}/"

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

# Start-up budget: download + load the checkpoint at a conservative rate, plus a fixed part for
# CUDA/NCCL init, torch.compile, encoder profiling and CUDA-graph capture; never below the floor.
ASSUMED_LOAD_GIB_PER_SECOND = 0.1  # ≈ 107 MB/s end to end (Hugging Face download, then load)
STARTUP_FIXED_SECONDS = 300
STARTUP_FLOOR_SECONDS = 600
STARTUP_PERIOD_SECONDS = 10
# Time to schedule the pod and pull a ~10 GiB vLLM image, added to the start-up budget for the
# Deployment's progressDeadlineSeconds (a pod still loading weights is progress, not a failure).
PULL_AND_SCHEDULE_SECONDS = 600
# Seconds after the drain for streams in flight to finish once vLLM has had SIGTERM.
SHUTDOWN_GRACE_SECONDS = 60
REVISION_HISTORY_LIMIT = 5

# The weight cache (spec.model.cache): a ReadWriteMany claim filled once per (checkpoint,
# revision) by a download Job, mounted read-only at HF_HOME by every replica.
CACHE_LOAD_GIB_PER_SECOND = 0.5  # reading safetensors from a shared volume, no download
CACHE_SIZE_FACTOR = 1.2  # the claim mmop creates: the checkpoint plus a fifth
CACHE_MIN_GIB = 10
CACHE_COMPONENT = "model-cache"  # app.kubernetes.io/name of the claim, the Job and its pods
CACHE_OF_LABEL = f"{API_GROUP}/cache-of"  # on the Job and its pods: the model it fills for
CACHE_CHECKPOINT_ANNOTATION = f"{API_GROUP}/checkpoint"  # id@revision the Job downloads
FILL_BACKOFF_LIMIT = 6  # pods the Job may fail; each new one resumes the partial files
FILL_MIN_GIB_PER_SECOND = 0.02  # the Job's deadline: the checkpoint at ~20 MB/s …
FILL_FLOOR_SECONDS = 3600  # … and never under an hour
FILL_CPU = "1"
FILL_MEMORY = "2Gi"
FILL_COMMAND = ("hf", "download")  # huggingface_hub's CLI, in the vLLM image
# Files a vLLM replica never reads (other formats of the same weights), not downloaded.
FILL_EXCLUDE = ("original/*", "*.gguf", "*.pth", "*.onnx", "*.msgpack", "*.h5", "*.ot")
JOB_NAME_MAX = 63  # the Job controller labels its pods with the Job's name

# A replica over several nodes (plan.nodes_per_replica > 1): one LeaderWorkerSet group per
# replica, LWS v0.10.0's API (api/leaderworkerset/v1/leaderworkerset_types.go of
# sigs.k8s.io/lws v0.10.0; docs/multinode.md).
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_KIND = "LeaderWorkerSet"
# The label LWS puts on every pod of a group: 0 on the leader, 1 … size − 1 on the workers
# (leaderworkerset_types.go l. 45, WorkerIndexLabelKey).
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
# Variables LWS's pod webhook adds to every container (leaderworkerset_types.go l. 67-75;
# pkg/utils/pod/pod_utils.go AddLWSVariables, l. 132-176): the leader pod's DNS name and this
# pod's index in its group. The kubelet expands $(NAME) in args from the container's env.
LWS_LEADER_ADDRESS_ENV = "LWS_LEADER_ADDRESS"
LWS_WORKER_INDEX_ENV = "LWS_WORKER_INDEX"
# Recreate the whole group when one of its pods or containers restarts (l. 328-332): a vLLM
# engine whose worker died cannot take a new one in.
LWS_RESTART_POLICY = "RecreateGroupOnPodRestart"
# Create the workers with the leader, not once it is Ready (l. 353-360): the leader's vLLM turns
# Ready only after every worker has joined, so LeaderReady would never start them.
LWS_STARTUP_POLICY = "LeaderCreated"
ROLE_LEADER = "leader"
ROLE_WORKER = "worker"
# LWS names a headless Service after the LeaderWorkerSet, through which the leaders' DNS names
# (LWS_LEADER_ADDRESS) resolve, and creates it only when no Service of that name exists
# (pkg/controllers/leaderworkerset_controller.go reconcileHeadlessServices, l. 213-221;
# pkg/utils/controller/controller_utils.go CreateHeadlessServiceIfNotExists, l. 33-65): the
# set takes the model's name with this suffix, and the model's Service keeps the model's name.
LWS_NAME_SUFFIX = "-lws"

_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        raise ValueError(f"{key!r}: the prefix must be a DNS subdomain")
    if not _LABEL_NAME_RE.match(name):
        raise ValueError(f"{key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.'")
    if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX):
        raise ValueError(f"{key!r} is set by mmop and cannot be overridden")


class RenderOptions(BaseModel):
    """Operator-wide rendering knobs (from the operator's configuration, not from a spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extra_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels added to every vLLM pod (not to the selector)"
    )
    extra_pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations added to every vLLM pod"
    )
    model_cache_pvc: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description=f"PersistentVolumeClaim mounted at {HF_HOME} (default: a per-pod emptyDir)",
    )
    cache_storage_class: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Storage class of the weight-cache claims mmop creates when the spec names "
        "none (default: the cluster's default class)",
    )
    metrics_annotations: bool = Field(
        default=True, description="Add prometheus.io/scrape, port and path pod annotations"
    )
    drain_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="preStop sleep so endpoints drop the pod before vLLM gets SIGTERM",
    )
    startup_budget_factor: float = Field(
        default=1.0, gt=0, le=100, description="Multiplies the start-up probe budget"
    )
    max_surge: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Rolling-update surge pods (0: replace in place; >0 needs spare GPUs)",
    )
    run_as_user: int = Field(
        default=DEFAULT_UID,
        ge=1,
        le=2**31 - 1,
        description="UID vLLM runs as (never root: Pod Security Standard restricted)",
    )
    run_as_group: int = Field(
        default=DEFAULT_UID, ge=1, le=2**31 - 1, description="Primary GID vLLM runs as"
    )
    fs_group: int = Field(
        default=DEFAULT_UID,
        ge=1,
        le=2**31 - 1,
        description="Group that owns the pod's volumes (HOME, the model cache), writable by it",
    )

    @field_validator("extra_pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            _check_key(key)
            if not _LABEL_VALUE_RE.match(val):
                raise ValueError(f"label {key}={val!r}: not a valid label value")
        return value

    @field_validator("extra_pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _check_key(key)
        return value


class RenderedGroup(BaseModel):
    """The objects of a MultimodalModel whose replicas span several nodes: a LeaderWorkerSet
    (one group of leader + workers per replica) instead of a Deployment, the Service (leaders
    only) and the PodDisruptionBudget (every pod of the model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leader_worker_set: dict[str, Any]
    service: dict[str, Any]
    pod_disruption_budget: dict[str, Any]
    template_hash: str = Field(description="sha256 of the canonical leader and worker templates")
    selector: dict[str, str] = Field(description="Labels that select the model's pods")

    @property
    def selector_string(self) -> str:
        """The selector as `kubectl get -l` (and the scale subresource) writes it."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))

    @property
    def workload(self) -> dict[str, Any]:
        """The object that runs the replicas."""
        return self.leader_worker_set

    def objects(self) -> list[dict[str, Any]]:
        """All objects, in the order to apply them: the LeaderWorkerSet first."""
        return [self.leader_worker_set, self.service, self.pod_disruption_budget]


class Rendered(BaseModel):
    """The objects for one MultimodalModel, and the hash of their pod template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployment: dict[str, Any]
    service: dict[str, Any]
    pod_disruption_budget: dict[str, Any]
    template_hash: str = Field(description="sha256 of the canonical pod template, 16 hex")
    selector: dict[str, str] = Field(description="Labels that select the pods")

    @property
    def selector_string(self) -> str:
        """The selector as `kubectl get -l` (and the scale subresource) writes it."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))

    @property
    def workload(self) -> dict[str, Any]:
        """The object that runs the replicas."""
        return self.deployment

    def objects(self) -> list[dict[str, Any]]:
        """All objects, in the order to apply them: the Deployment first, so that its pods are
        on their way while the Service and the PodDisruptionBudget follow."""
        return [self.deployment, self.service, self.pod_disruption_budget]


def template_hash(pod_template: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of a pod template."""
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def vllm_args(plan: Plan, role: str | None = None) -> list[str]:
    """The `vllm serve` arguments for `plan` (after the executable; the model first): the pinned
    vLLM's flags, each from a field of the plan, then spec.engine.extraArgs verbatim. A flag
    whose value is vLLM's default is left out (KV cache auto, the multimodal processor cache).

    A plan over several nodes adds ``--pipeline-parallel-size``; with `role` (``leader`` or
    ``worker``: the pod of a LeaderWorkerSet group) the multi-node flags of that pod follow,
    before the extra args (:func:`multinode_args`)."""
    args = [
        plan.model,
        f"{vllm.FLAG_SERVED_MODEL_NAME}={plan.served_model_name}",
        f"{vllm.FLAG_PORT}={vllm.OPENAI_PORT}",
        f"{vllm.FLAG_TENSOR_PARALLEL_SIZE}={plan.tensor_parallel_size}",
        *(
            [f"{vllm.FLAG_PIPELINE_PARALLEL_SIZE}={plan.pipeline_parallel_size}"]
            if plan.pipeline_parallel_size > 1
            else []
        ),
        f"{vllm.FLAG_MAX_MODEL_LEN}={plan.max_model_len}",
        f"{vllm.FLAG_MAX_NUM_SEQS}={plan.max_num_seqs}",
        f"{vllm.FLAG_MAX_NUM_BATCHED_TOKENS}={plan.max_num_batched_tokens}",
        f"{vllm.FLAG_GPU_MEMORY_UTILIZATION}={plan.gpu_memory_utilization}",
    ]
    if plan.quantization_method:
        args.append(f"{vllm.FLAG_QUANTIZATION}={plan.quantization_method}")
    if plan.kv_cache_dtype != vllm.KV_CACHE_DTYPE_AUTO:
        args.append(f"{vllm.FLAG_KV_CACHE_DTYPE}={plan.kv_cache_dtype}")
    if plan.limit_mm_per_prompt:
        args.append(f"{vllm.FLAG_LIMIT_MM_PER_PROMPT}={_json(plan.limit_mm_per_prompt)}")
    if plan.mm_processor_kwargs:
        args.append(f"{vllm.FLAG_MM_PROCESSOR_KWARGS}={_json(plan.mm_processor_kwargs)}")
    cache_gb = plan.resources.mm_processor_cache_gb
    if cache_gb != vllm.DEFAULT_MM_PROCESSOR_CACHE_GB:
        args.append(f"{vllm.FLAG_MM_PROCESSOR_CACHE_GB}={cache_gb}")
    if plan.revision:
        args.append(f"{vllm.FLAG_REVISION}={plan.revision}")
    if plan.trust_remote_code:
        args.append(vllm.FLAG_TRUST_REMOTE_CODE)
    if role is not None:
        args.extend(multinode_args(plan, role))
    args.extend(plan.extra_args)
    return args


def multinode_args(plan: Plan, role: str) -> list[str]:
    """The flags one pod of a multi-node replica adds (vLLM 0.32.0's multiprocessing executor
    across nodes, mmop.vllm): every pod names the group's size (``--nnodes``), its rank and the
    leader's address and port (LWS's variables, expanded by the kubelet); the leader is rank 0
    and runs the API server, the engine core and the first stage; a worker (rank =
    ``LWS_WORKER_INDEX``, 1 … size − 1) runs ``--headless``: its GPUs' workers only."""
    if role not in (ROLE_LEADER, ROLE_WORKER):
        raise ValueError(f"role must be {ROLE_LEADER!r} or {ROLE_WORKER!r}, got {role!r}")
    rank = "0" if role == ROLE_LEADER else f"$({LWS_WORKER_INDEX_ENV})"
    args = [
        f"{vllm.FLAG_DISTRIBUTED_EXECUTOR_BACKEND}={vllm.EXECUTOR_BACKEND_MP}",
        f"{vllm.FLAG_NNODES}={plan.nodes_per_replica}",
        f"{vllm.FLAG_NODE_RANK}={rank}",
        f"{vllm.FLAG_MASTER_ADDR}=$({LWS_LEADER_ADDRESS_ENV})",
        f"{vllm.FLAG_MASTER_PORT}={vllm.DEFAULT_MASTER_PORT}",
    ]
    if role == ROLE_WORKER:
        args.append(vllm.FLAG_HEADLESS)
    return args


def _json(value: dict[str, Any]) -> str:
    """A flag's JSON value as vLLM's parser takes it: compact, keys in the plan's order."""
    return json.dumps(value, separators=(",", ":"))


def checkpoint_gib(plan: Plan) -> float:
    """GiB to download and load (``planner.checkpoint_gib``)."""
    return _checkpoint_gib(
        checkpoint_weights_gib(plan.memory),
        plan.tensor_parallel_size,
        plan.quantization_method == "fp8",
    )


def predicted_startup_seconds(plan: Plan, cached: bool = False) -> int:
    """How long a new replica takes to turn Ready once scheduled: the checkpoint downloaded and
    loaded at the assumed rate — or, from a filled weight cache (``cached``), read from the
    shared volume — plus the fixed part (CUDA/NCCL init, compilation, encoder profiling,
    graph capture). The autoscaler sizes what it orders for demand this far ahead."""
    rate = CACHE_LOAD_GIB_PER_SECOND if cached else ASSUMED_LOAD_GIB_PER_SECOND
    return math.ceil(STARTUP_FIXED_SECONDS + checkpoint_gib(plan) / rate)


def startup_budget_seconds(plan: Plan, options: RenderOptions, cached: bool = False) -> int:
    """How long the start-up probe lets vLLM download (or read from the cache), load and warm
    up before restarting it."""
    seconds = predicted_startup_seconds(plan, cached)
    budget = max(float(STARTUP_FLOOR_SECONDS), seconds * options.startup_budget_factor)
    return math.ceil(budget / STARTUP_PERIOD_SECONDS) * STARTUP_PERIOD_SECONDS


def render(
    mm_name: str,
    namespace: str,
    uid: str | None,
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
    generation: int | None = None,
    replicas: int | None = None,
) -> Rendered:
    """Render the objects serving `plan` for the MultimodalModel `namespace/mm_name`.

    `uid` adds an owner reference (controller) to the MultimodalModel; `generation` is recorded
    as a Deployment annotation; `replicas` overrides `plan.replicas` (the autoscaler's or, in
    External mode, the scale subresource's count).
    """
    selector = _selector(mm_name)
    labels = _labels(mm_name)
    template = _pod_template(spec, plan, options, labels)
    digest = template_hash(template)
    template["metadata"]["annotations"] = _sorted(
        {**template["metadata"].get("annotations", {}), TEMPLATE_HASH: digest}
    )
    dep_meta = _meta(mm_name, namespace, uid, {TEMPLATE_HASH: digest})
    if generation is not None:
        dep_meta["annotations"] = {GENERATION_ANNOTATION: str(generation)}
    surge = options.max_surge
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": dep_meta,
        "spec": {
            "replicas": plan.replicas if replicas is None else replicas,
            "selector": {"matchLabels": _sorted(selector)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0 if surge else 1},
            },
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "progressDeadlineSeconds": startup_budget_seconds(
                plan, options, spec.model.cache is not None
            )
            + PULL_AND_SCHEDULE_SECONDS,
            "template": template,
        },
    }
    service, pdb = companions(mm_name, namespace, uid)
    return Rendered(
        deployment=_compact(deployment),
        service=service,
        pod_disruption_budget=pdb,
        template_hash=digest,
        selector=_sorted(selector),
    )


def group_name(mm_name: str) -> str:
    """The LeaderWorkerSet's name (and so its headless Service's and its pods' prefix): the
    model's with ``-lws``, never the model's own, which the model's Service keeps. LWS requires
    a DNS-1035 label (at most 63 characters), so a model served over nodes may have at most
    59; a longer name is refused by LWS's webhook, reported as ApplyFailed."""
    return f"{mm_name}{LWS_NAME_SUFFIX}"


def render_multinode(
    mm_name: str,
    namespace: str,
    uid: str | None,
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
    generation: int | None = None,
    replicas: int | None = None,
) -> RenderedGroup:
    """Render the objects serving a plan whose replicas span ``plan.nodes_per_replica`` nodes:
    a LeaderWorkerSet of ``replicas`` groups (LWS v0.10.0), each a leader pod (``vllm serve``
    with the plan's flags, the API server, probes) and ``nodes_per_replica − 1`` worker pods
    (the same image, flags, GPUs, CPU, memory and /dev/shm, ``--headless``, no probes); the
    Service (the model's name) selects the leaders only; the set is :func:`group_name`, whose
    headless Service LWS creates; one PodDisruptionBudget covers every pod of the model.
    Pure, like :func:`render` (which single-node plans keep)."""
    if plan.nodes_per_replica < 2:
        raise ValueError("render_multinode renders plans over several nodes; use render()")
    selector = _selector(mm_name)
    labels = _labels(mm_name)
    leader = _pod_template(spec, plan, options, labels, role=ROLE_LEADER)
    worker = _pod_template(spec, plan, options, labels, role=ROLE_WORKER)
    digest = template_hash({ROLE_LEADER: leader, ROLE_WORKER: worker})
    for template in (leader, worker):
        template["metadata"]["annotations"] = _sorted(
            {**template["metadata"].get("annotations", {}), TEMPLATE_HASH: digest}
        )
    meta = {**_meta(mm_name, namespace, uid, {TEMPLATE_HASH: digest}), "name": group_name(mm_name)}
    if generation is not None:
        meta["annotations"] = {GENERATION_ANNOTATION: str(generation)}
    surge = options.max_surge
    lws: dict[str, Any] = {
        "apiVersion": LWS_API_VERSION,
        "kind": LWS_KIND,
        "metadata": meta,
        "spec": {
            "replicas": plan.replicas if replicas is None else replicas,
            "startupPolicy": LWS_STARTUP_POLICY,
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {
                    "maxSurge": surge,
                    "maxUnavailable": 0 if surge else 1,
                },
            },
            "leaderWorkerTemplate": {
                "size": plan.nodes_per_replica,
                "restartPolicy": LWS_RESTART_POLICY,
                "leaderTemplate": leader,
                "workerTemplate": worker,
            },
        },
    }
    service, pdb = companions(mm_name, namespace, uid, leaders_only=True)
    return RenderedGroup(
        leader_worker_set=_compact(lws),
        service=service,
        pod_disruption_budget=pdb,
        template_hash=digest,
        selector=_sorted(selector),
    )


def group_startup_budget_seconds(plan: Plan, options: RenderOptions, cached: bool = False) -> int:
    """The leader's start-up probe budget: the single-pod budget (every node downloads and
    loads the checkpoint at once, so the whole checkpoint sets it) plus the time for the
    workers, created with the leader, to be scheduled and pull the image, which the leader
    waits for before it loads anything."""
    budget = startup_budget_seconds(plan, options, cached) + PULL_AND_SCHEDULE_SECONDS
    return math.ceil(budget / STARTUP_PERIOD_SECONDS) * STARTUP_PERIOD_SECONDS


def companions(
    mm_name: str, namespace: str, uid: str | None, leaders_only: bool = False
) -> list[dict[str, Any]]:
    """The model's Service and PodDisruptionBudget, as :func:`render` (or, ``leaders_only``,
    :func:`render_multinode`: the Service selects the groups' leaders) renders them: they
    depend on the model's name, namespace and uid only (never on a plan), so a reconcile can
    check and repair them without planning."""
    selector = _sorted(_selector(mm_name))
    serving = _sorted({**selector, LWS_WORKER_INDEX_LABEL: "0"}) if leaders_only else selector
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(mm_name, namespace, uid),
        "spec": {
            "type": "ClusterIP",
            "selector": serving,
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": vllm.OPENAI_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(mm_name, namespace, uid),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    return [_compact(service), _compact(pdb)]


def cache_claim_name(mm_name: str, spec: MultimodalModelSpec) -> str:
    """The claim the replicas read the weights from: the spec's own, else ``<model>-weights``."""
    cache = spec.model.cache
    if cache is not None and cache.claim_name:
        return cache.claim_name
    return f"{mm_name[: 253 - len('-weights')].rstrip('-.')}-weights"


def cache_revision(plan: Plan) -> str:
    """The revision the replicas ask for (vLLM's --revision, else the Hub's default branch)."""
    return plan.revision or "main"


def fill_job_name(mm_name: str, job_spec: dict[str, Any]) -> str:
    """The download Job's name: the model's, and a digest of the Job's spec. A Job's spec
    cannot change once created, so a new checkpoint, revision, image or token is a new Job
    (which finds the files already there and finishes quickly), the same spec the same Job."""
    canonical = json.dumps(job_spec, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    base = mm_name[: JOB_NAME_MAX - len("-fill-") - len(digest)].rstrip("-.")
    return f"{base}-fill-{digest}"


def cache_gib(plan: Plan, spec: MultimodalModelSpec) -> int:
    """Size of the claim mmop creates: spec.model.cache.sizeGiB, else the checkpoint plus a
    fifth, at least CACHE_MIN_GIB."""
    cache = spec.model.cache
    if cache is not None and cache.size_gib is not None:
        return cache.size_gib
    return max(CACHE_MIN_GIB, math.ceil(checkpoint_gib(plan) * CACHE_SIZE_FACTOR))


def fill_deadline_seconds(plan: Plan) -> int:
    """How long the download Job may run, all its pods together (activeDeadlineSeconds)."""
    seconds = max(FILL_FLOOR_SECONDS, checkpoint_gib(plan) / FILL_MIN_GIB_PER_SECOND)
    # whole hours: a re-plan that moves the weights by a few MiB keeps the same Job
    return math.ceil(seconds / 3600) * 3600


def cache_objects(
    mm_name: str,
    namespace: str,
    uid: str | None,
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
) -> list[dict[str, Any]]:
    """The weight cache of a model with spec.model.cache, in the order to apply them: the
    claim (unless the spec names its own) and the Job that fills it with the plan's checkpoint
    at its revision. Empty without spec.model.cache."""
    cache = spec.model.cache
    if cache is None:
        return []
    labels = {**_labels(mm_name), LABEL_NAME: CACHE_COMPONENT}
    objects: list[dict[str, Any]] = []
    claim = cache_claim_name(mm_name, spec)
    if not cache.claim_name:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": f"{cache_gib(plan, spec)}Gi"}},
        }
        storage_class = cache.storage_class_name or options.cache_storage_class
        if storage_class:
            claim_spec["storageClassName"] = storage_class
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {**_meta(mm_name, namespace, uid), "name": claim, "labels": labels},
                "spec": claim_spec,
            }
        )
    objects.append(_fill_job(mm_name, namespace, uid, spec, plan, options, claim, labels))
    return [_compact(o) for o in objects]


def _fill_job(
    mm_name: str,
    namespace: str,
    uid: str | None,
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
    claim: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """The download Job: huggingface_hub's CLI from the serving image writes the checkpoint
    into the claim as the Hub's cache layout (HF_HOME/hub), which the replicas' vLLM reads
    offline. A failed pod's successor resumes the partial files."""
    revision = cache_revision(plan)
    argv = [*FILL_COMMAND, plan.model, "--revision", revision]
    for pattern in FILL_EXCLUDE:
        argv += ["--exclude", pattern]
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": HOME},
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        # Without it the CLI asks https://pypi.org for a newer huggingface_hub (and the Hub for
        # its skill hints) once a day per HF_HOME: traffic to outside HF_ENDPOINT, for a hint.
        {"name": "HF_HUB_DISABLE_UPDATE_CHECK", "value": "1"},
    ]
    env += [{"name": e.name, "value": e.value} for e in spec.engine.env if e.name == "HF_ENDPOINT"]
    if spec.model.token_secret_ref is not None:
        env.append(_secret_env("HF_TOKEN", spec.model.token_secret_ref))
    pod_labels = {
        LABEL_NAME: CACHE_COMPONENT,
        LABEL_INSTANCE: mm_name,
        LABEL_MANAGED_BY: MANAGER,
        CACHE_OF_LABEL: mm_name,
    }
    container = {
        "name": "download",
        "image": spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": argv,
        "env": env,
        "resources": {
            "requests": {"cpu": FILL_CPU, "memory": FILL_MEMORY},
            "limits": {"memory": FILL_MEMORY},
        },
        "volumeMounts": [
            {"name": "home", "mountPath": HOME},
            {"name": "model-cache", "mountPath": HF_HOME},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    job_spec = {
        "backoffLimit": FILL_BACKOFF_LIMIT,
        "activeDeadlineSeconds": fill_deadline_seconds(plan),
        "template": {
            "metadata": {"labels": _sorted(pod_labels)},
            "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [
                    {"name": "home", "emptyDir": {}},
                    {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}},
                ],
                # It uses no GPU, and may run on any node (GPU-only clusters have no other).
                "tolerations": [
                    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
                ],
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": options.run_as_user,
                    "runAsGroup": options.run_as_group,
                    "fsGroup": options.fs_group,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "enableServiceLinks": False,
                "automountServiceAccountToken": False,
            },
        },
    }
    meta = _meta(mm_name, namespace, uid)
    meta.update(
        name=fill_job_name(mm_name, job_spec),
        labels={**labels, CACHE_OF_LABEL: mm_name},
        annotations={CACHE_CHECKPOINT_ANNOTATION: f"{plan.model}@{revision}"},
    )
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def _selector(mm_name: str) -> dict[str, str]:
    return {LABEL_INSTANCE: mm_name, LABEL_MODEL: mm_name}


def _labels(mm_name: str) -> dict[str, str]:
    return {**_selector(mm_name), LABEL_NAME: APP_NAME, LABEL_MANAGED_BY: MANAGER}


def _meta(
    mm_name: str, namespace: str, uid: str | None, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": mm_name,
        "namespace": namespace,
        "labels": _sorted({**_labels(mm_name), **(extra_labels or {})}),
    }
    if uid:
        out["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": mm_name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return out


def _pod_template(
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
    labels: dict[str, str],
    role: str | None = None,
) -> dict[str, Any]:
    """The vLLM pod: of a Deployment (`role` None), or a LeaderWorkerSet group's leader or
    worker (a worker serves no HTTP: no port, probes, metrics annotations or drain)."""
    port = vllm.OPENAI_PORT
    worker = role == ROLE_WORKER
    annotations: dict[str, str] = {"kubectl.kubernetes.io/default-container": CONTAINER_NAME}
    if options.metrics_annotations and not worker:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(port),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    annotations.update(options.extra_pod_annotations)
    gpus = plan.resources.gpus
    resources: dict[str, str | int] = {"cpu": plan.resources.cpu, "memory": plan.resources.memory}
    if gpus > 0:
        resources[GPU_RESOURCE] = gpus
    health = {"path": HEALTH_PATH, "port": PORT_NAME, "scheme": "HTTP"}
    cached = spec.model.cache is not None
    budget = startup_budget_seconds(plan, options, cached)
    if role == ROLE_LEADER:
        budget = group_startup_budget_seconds(plan, options, cached)
    ephemeral = plan.resources.ephemeral_storage
    if ephemeral and options.model_cache_pvc and not cached:
        ephemeral = f"{ephemeral_gib(None)}Gi"  # the operator's shared claim holds the download
    # Requests only: a limit would evict a pod whose download ran past the estimate.
    requests = {**resources, "ephemeral-storage": ephemeral} if ephemeral else resources
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "args": vllm_args(plan, role),
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": _env(spec),
        "resources": {"requests": _sorted(requests), "limits": _sorted(resources)},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "home", "mountPath": HOME},
            {"name": "model-cache", "mountPath": HF_HOME, **({"readOnly": True} if cached else {})},
        ],
        "startupProbe": {
            "httpGet": health,
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": budget // STARTUP_PERIOD_SECONDS,
        },
        "readinessProbe": {
            "httpGet": health,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": health,
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 6,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if worker:
        for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe"):
            del container[key]
    if options.drain_seconds > 0 and not worker:
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}
        }
    cache: dict[str, Any] = {"name": "model-cache", "emptyDir": {}}
    if spec.model.cache is not None:
        claim = cache_claim_name(str(labels[LABEL_MODEL]), spec)
        cache = {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
    elif options.model_cache_pvc:
        cache = {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": options.model_cache_pvc},
        }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {
                "name": "dshm",
                "emptyDir": {"medium": "Memory", "sizeLimit": plan.resources.shm_size},
            },
            {"name": "home", "emptyDir": {}},
            cache,
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": options.run_as_user,
            "runAsGroup": options.run_as_group,
            "fsGroup": options.fs_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": options.drain_seconds + SHUTDOWN_GRACE_SECONDS,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "restartPolicy": "Always",
    }
    if spec.placement.node_selector:
        pod_spec["nodeSelector"] = _sorted(spec.placement.node_selector)
    if gpus > 0:
        pod_spec["tolerations"] = [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
    if gpus > 0 and plan.gpu_product:
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": GPU_PRODUCT_LABEL,
                                    "operator": "In",
                                    "values": [plan.gpu_product],
                                }
                            ]
                        }
                    ]
                }
            }
        }
    return {
        "metadata": {
            "labels": _sorted({**options.extra_pod_labels, **labels}),
            "annotations": _sorted(annotations),
        },
        "spec": pod_spec,
    }


def _env(spec: MultimodalModelSpec) -> list[dict[str, Any]]:
    """mmop's variables, then the spec's; a spec variable replaces mmop's of the same name."""
    ours: list[dict[str, Any]] = [
        {"name": "HOME", "value": HOME},
        {"name": "XDG_CACHE_HOME", "value": XDG_CACHE_HOME},
        {"name": "XDG_CONFIG_HOME", "value": XDG_CONFIG_HOME},
        {"name": vllm.ENV_CACHE_ROOT, "value": VLLM_CACHE_ROOT},
        {"name": vllm.ENV_CONFIG_ROOT, "value": VLLM_CONFIG_ROOT},
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": vllm.ENV_NO_USAGE_STATS, "value": "1"},
    ]
    if spec.model.cache is not None:
        # The weights are in the filled cache: vLLM and transformers resolve every file from
        # it (HF_HOME/hub, the revision's ref) and never reach the Hub.
        ours.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    token = spec.model.token_secret_ref
    if token is not None:
        ours.append(_secret_env("HF_TOKEN", token))
    # spec.engine.apiKeySecretRef: the OpenAI server's key, never in argv or status
    api_key = spec.engine.api_key_secret_ref
    if api_key is not None:
        ours.append(_secret_env(vllm.ENV_API_KEY, api_key))
    theirs = [{"name": e.name, "value": e.value} for e in spec.engine.env]
    overridden = {e["name"] for e in theirs}
    # Last occurrence wins within the spec's own list, as the kubelet would do.
    deduped = list({e["name"]: e for e in theirs}.values())
    return [e for e in ours if e["name"] not in overridden] + deduped


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    """An env var read from a Secret's key (not optional: a missing Secret stops the container
    with CreateContainerConfigError rather than starting vLLM without it)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _sorted(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: mapping[k] for k in sorted(mapping)}


def _compact(value: Any) -> Any:
    """Drop None values (and the keys holding them) everywhere; the API server has no use for
    them and they would make two equal objects compare different."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_compact(v) for v in value if v is not None]
    return value
