"""The renderer: a Plan and its MultimodalModel spec → Deployment, Service and PodDisruptionBudget.

Pure: plain data in, plain dicts out (ready for the Kubernetes API or `kubectl apply`); no API
calls, no clock. The same inputs always give the same dicts, key for key.

What matters for reconciling is `Rendered.template_hash`: the SHA-256 of the canonical JSON of
the pod template (first 16 hex digits). It is written as the pod-template annotation and the
Deployment label `mmop.dev/template-hash`; the controller compares it with the live Deployment's
label to decide whether the pods must change. Replicas live outside the pod template, so scaling
never changes the hash and never restarts a pod.

Choices (explained in docs/rendering.md): `command: ["vllm", "serve"]` with the plan's argv as
`args`; a startup probe whose budget grows with the checkpoint size; a preStop sleep so the
endpoint is gone before SIGTERM; a memory-backed /dev/shm; required node affinity to the
planned GPU product; rolling updates that never surge by default (GPUs rarely have room).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmop.api import API_GROUP, API_VERSION, KIND, MultimodalModelSpec
from mmop.planner import OPENAI_PORT, Plan

CONTAINER_NAME = "vllm"
PORT_NAME = "http"
# Overrides the image's ENTRYPOINT: recent vllm/vllm-openai images use ["vllm", "serve"], older
# ones `python3 -m vllm.entrypoints.openai.api_server`; `vllm serve` exists in both, so the
# rendered pod does not depend on which one an image (or a user's own image) declares.
COMMAND = ("vllm", "serve")
HF_HOME = "/root/.cache/huggingface"  # the official image runs as root; its HF cache default
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"

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

GPU_RESOURCE = "nvidia.com/gpu"
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

    def objects(self) -> list[dict[str, Any]]:
        """All objects, in the order to apply them: the Deployment first, so that its pods are
        on their way while the Service and the PodDisruptionBudget follow."""
        return [self.deployment, self.service, self.pod_disruption_budget]


def template_hash(pod_template: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of a pod template."""
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def checkpoint_gib(plan: Plan) -> float:
    """GiB to download and load: the weights on all GPUs; twice that when vLLM quantizes a
    16-bit checkpoint to fp8 on load (the download is the 16-bit checkpoint)."""
    gib = plan.memory.weights_gib * plan.tensor_parallel_size
    if "--quantization=fp8" in plan.args:
        gib *= 2
    return gib


def startup_budget_seconds(plan: Plan, options: RenderOptions) -> int:
    """How long the start-up probe lets vLLM download, load and warm up before restarting it."""
    seconds = STARTUP_FIXED_SECONDS + checkpoint_gib(plan) / ASSUMED_LOAD_GIB_PER_SECOND
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
    selector = {LABEL_INSTANCE: mm_name, LABEL_MODEL: mm_name}
    labels = {**selector, LABEL_NAME: APP_NAME, LABEL_MANAGED_BY: MANAGER}
    template = _pod_template(spec, plan, options, labels)
    digest = template_hash(template)
    template["metadata"]["annotations"] = _sorted(
        {**template["metadata"].get("annotations", {}), TEMPLATE_HASH: digest}
    )

    def meta(extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": mm_name,
            "namespace": namespace,
            "labels": _sorted({**labels, **(extra_labels or {})}),
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

    dep_meta = meta({TEMPLATE_HASH: digest})
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
            "progressDeadlineSeconds": startup_budget_seconds(plan, options)
            + PULL_AND_SCHEDULE_SECONDS,
            "template": template,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(),
        "spec": {
            "type": "ClusterIP",
            "selector": _sorted(selector),
            "ports": [
                {"name": PORT_NAME, "port": _port(plan), "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": _sorted(selector)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    return Rendered(
        deployment=_compact(deployment),
        service=_compact(service),
        pod_disruption_budget=_compact(pdb),
        template_hash=digest,
        selector=_sorted(selector),
    )


def _pod_template(
    spec: MultimodalModelSpec,
    plan: Plan,
    options: RenderOptions,
    labels: dict[str, str],
) -> dict[str, Any]:
    port = _port(plan)
    annotations: dict[str, str] = {"kubectl.kubernetes.io/default-container": CONTAINER_NAME}
    if options.metrics_annotations:
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
    budget = startup_budget_seconds(plan, options)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.engine.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(COMMAND),
        "args": list(plan.args),
        "ports": [{"name": PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "env": _env(spec),
        "resources": {"requests": _sorted(resources), "limits": _sorted(resources)},
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": HF_HOME},
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
            "privileged": False,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if options.drain_seconds > 0:
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(options.drain_seconds)]}}
        }
    cache: dict[str, Any] = (
        {"name": "model-cache", "persistentVolumeClaim": {"claimName": options.model_cache_pvc}}
        if options.model_cache_pvc
        else {"name": "model-cache", "emptyDir": {}}
    )
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {
                "name": "dshm",
                "emptyDir": {"medium": "Memory", "sizeLimit": plan.resources.shm_size},
            },
            cache,
        ],
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
        {"name": "HF_HOME", "value": HF_HOME},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    ref = spec.model.token_secret_ref
    if ref is not None:
        ours.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    theirs = [{"name": e.name, "value": e.value} for e in spec.engine.env]
    overridden = {e["name"] for e in theirs}
    # Last occurrence wins within the spec's own list, as the kubelet would do.
    deduped = list({e["name"]: e for e in theirs}.values())
    return [e for e in ours if e["name"] not in overridden] + deduped


def _port(plan: Plan) -> int:
    """The port vLLM listens on: the plan's --port, else vLLM's default."""
    for i, arg in enumerate(plan.args):
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
        if arg == "--port" and i + 1 < len(plan.args):
            return int(plan.args[i + 1])
    return OPENAI_PORT


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
