"""The planner: the cheapest deployment that meets a MultimodalModel's workload on the GPUs the
cluster has, and why.

Search space, per GPU type the inventory offers (and the spec allows): tensor-parallel size
(1, 2, 4, 8; one node; dividing the attention heads) × weights (the checkpoint's precision; fp8
where the GPU runs it; the pre-quantized variants the spec lists) × KV-cache dtype × image cap
(per family: max_pixels, tiles, crops or slices, never below the quality floor) × max_model_len
(the context the workload needs; the preferred one when it is free). For each candidate the
estimator decides whether vLLM starts (and with how much KV cache), the performance model how
many requests a replica sustains within the SLO, and the workload how many replicas are needed.
Objective: lowest $/hour for all replicas; ties go to fewer GPUs, then more KV headroom, then
fidelity (bf16 > fp8 > int4, larger image cap).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmop import modalities, perf
from mmop.api import MultimodalModel, MultimodalModelSpec, Quantization
from mmop.calibration import Calibrated, CalibrationStore, MemoryKey
from mmop.catalog import GpuSpec
from mmop.estimator import (
    DEFAULT_CALIBRATION,
    EngineArgs,
    Estimate,
    EstimateError,
    FitFailure,
    batch_defaults,
    estimate,
    hardware_refusal,
    requests_fitting,
)
from mmop.inventory import INTER_NODE_LABEL, GpuPool, Inventory
from mmop.model import (
    CheckpointQuantization,
    ModelError,
    ModelProfile,
    catalog_ids,
    is_catalog_id,
    load_profile,
)
from mmop.vllm import DEFAULT_MM_PROCESSOR_CACHE_GB, KV_CACHE_DTYPE_AUTO, PINNED_VLLM_VERSION

PLANNER_UTILIZATION = 0.9  # leaves ~10% for CUDA context, fragmentation and spikes
# A model read by the generic path (ModelProfile.approximate) is planned with this share of the
# KV memory the estimate finds, until an engine of its configuration has reported its own
# (mmop.calibration): what the standard config keys miss must not turn into a false fit.
APPROXIMATE_KV_SCALE = 0.8
TP_SIZES = (1, 2, 4, 8)
# Pipeline stages a multi-node replica may have (one node each) (docs/multinode.md).
MAX_PIPELINE_STAGES = 8
# A replica spans nodes although one node would hold it only when that saves at least this share
# of the cheapest single-node plan's cost: a group is recreated whole when any of its pods fails,
# rolls out and starts slower, and needs the LeaderWorkerSet controller and a fast network.
MULTINODE_MIN_SAVING = 0.2
MM_PROCESSOR_CACHE_GB = DEFAULT_MM_PROCESSOR_CACHE_GB
# Smaller caches the planner may render (--mm-processor-cache-gb) when a node's memory cannot
# hold the default one; the cache only saves re-processing repeated media.
MM_CACHE_OPTIONS_GB = (MM_PROCESSOR_CACHE_GB, 2, 1, 0)
GIB_BYTES = 1024**3
# Ephemeral storage of a pod (ephemeral_gib): the download plus this share for the repository's
# other files and partial downloads, and what vLLM and its compilers cache under HOME.
DOWNLOAD_OVERHEAD = 1.1
HOME_CACHES_GIB = 10
# When the spec's model is a directory of the planning machine, the pod cannot serve that path:
# the argv names this placeholder until the caller says what the pod serves (model_ref).
LOCAL_MODEL_PLACEHOLDER = "MODEL"

# Image caps per family, largest first: (tokens-ish label, mm_processor_kwargs).
QWEN_CAP_TOKENS = (16384, 8192, 4096, 2048, 1280, 1024, 768, 512, 256)
INTERNVL_TILES = (12, 6, 4, 2, 1)
PHI3V_CROPS = (16, 8, 4, 1)
MINICPMV_SLICES = (9, 4, 2, 1)
IDEFICS3_EDGES = (1536, 1152, 768, 384)

PRUNED_GROUPS_FOR_ALTERNATIVES = 3  # cheapest bound-skipped groups evaluated for alternatives
VARIANT_ALTERNATIVES = 3  # image-cap / KV-cache variants of the chosen configuration shown

FIDELITY = {"none": 3, "fp8": 2, "compressed-tensors": 2, "awq": 1, "gptq": 1}


class PlanningReason(StrEnum):
    """Why nothing was planned: the condition reason users see (status, Events, `mmop plan`'s
    JSON error). The values are part of the API and never change."""

    UNKNOWN_MODEL = "UnknownModel"
    UNSUPPORTED_MODALITY = "UnsupportedModality"
    CONTEXT_TOO_LONG = "ContextTooLong"
    REMOTE_CODE_REQUIRED = "RemoteCodeRequired"
    INVALID_SPEC = "InvalidSpec"
    INFEASIBLE = "Infeasible"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"


BAD_INPUT_REASONS = frozenset(
    {
        PlanningReason.UNKNOWN_MODEL,
        PlanningReason.UNSUPPORTED_MODALITY,
        PlanningReason.CONTEXT_TOO_LONG,
        PlanningReason.REMOTE_CODE_REQUIRED,
        PlanningReason.INVALID_SPEC,
    }
)
"""Reasons that mean the spec asks for something the model cannot do (CLI exit 2); every other
reason means nothing fits the cluster (exit 3)."""


class Rejection(StrEnum):
    """Why one candidate configuration (GPU, TP, weights, KV dtype, image cap) was not chosen."""

    GPU_CAPABILITY = "GpuCapability"
    """vLLM refuses the weights' dtype or quantization on this GPU (never evaluated)."""
    KV_CACHE_DTYPE = "KvCacheDtype"
    """vLLM has no attention backend for this KV-cache dtype on this GPU (never evaluated)."""
    COST_BOUND = "CostBound"
    """Its lower bound on cost is above the best plan found: skipped by the search."""
    MEDIA = "Media"
    """The workload's media cannot be costed for this model and image cap."""
    MODEL_CONTEXT = "ModelContext"
    """One request needs more tokens than the model's context."""
    VLLM_REFUSES = "VllmRefuses"
    """vLLM rejects these flags before loading anything."""
    WEIGHTS_TOO_LARGE = "WeightsTooLarge"
    """The weights alone exceed the GPU memory vLLM may use."""
    NO_KV_CACHE_MEMORY = "NoKvCacheMemory"
    """Nothing is left for the KV cache after weights, activations and graphs."""
    MAX_SEQ_LEN = "MaxSeqLen"
    """The KV cache cannot hold one request of max_model_len (vLLM's start-up check)."""
    KV_CACHE_TOO_SMALL = "KvCacheTooSmall"
    """The KV cache holds no whole request of the workload."""
    LATENCY_SLO = "LatencySlo"
    """Misses the latency targets even with one request in flight."""
    MAX_REPLICAS = "MaxReplicas"
    """The workload needs more replicas than scaling.maxReplicas."""
    AVOIDED = "Avoided"
    """The engines showed this configuration fails (status.autoscaler.avoid)."""
    KV_BELOW_OBSERVED = "KvBelowObserved"
    """No more KV cache than the amount that proved too few."""
    NO_SCHEDULABLE_NODE = "NoSchedulableNode"
    """Every node of the GPU type is cordoned or NotReady."""
    POD_TOO_LARGE = "PodTooLarge"
    """No node of the GPU type has the pod's CPU, memory or storage free."""
    NO_CLUSTER_ROOM = "NoClusterRoom"
    """The nodes have room for fewer replicas than the workload needs."""


CAPACITY_REJECTIONS = frozenset({Rejection.POD_TOO_LARGE, Rejection.NO_CLUSTER_ROOM})
"""Rejections that more free nodes would lift: with no feasible plan they make the planning
reason InsufficientCapacity rather than Infeasible."""


class PlanningError(ValueError):
    """Nothing fits: the message names the nearest miss and what would make it fit."""

    def __init__(
        self, message: str, reason: PlanningReason | str = PlanningReason.INFEASIBLE
    ) -> None:
        super().__init__(message)
        self.reason = PlanningReason(reason)

    @property
    def bad_input(self) -> bool:
        """The spec itself is at fault (unknown model, a context beyond the model's, …)."""
        return self.reason in BAD_INPUT_REASONS


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int = Field(description="nvidia.com/gpu per pod")
    cpu: str = Field(description="CPU request and limit")
    memory: str = Field(description="Memory request and limit")
    shm_size: str = Field(description="Memory-backed /dev/shm size")
    mm_processor_cache_gb: int = Field(
        default=MM_PROCESSOR_CACHE_GB, description="--mm-processor-cache-gb the pod is sized for"
    )
    ephemeral_storage: str | None = Field(
        default=None,
        description="ephemeral-storage request: the checkpoint downloaded into the pod (no "
        "spec.model.cache) plus the caches vLLM writes under HOME",
    )

    @property
    def cpu_millicores(self) -> int:
        return int(self.cpu) * 1000

    @property
    def memory_bytes(self) -> int:
        return int(self.memory.removesuffix("Gi")) * GIB_BYTES

    @property
    def ephemeral_bytes(self) -> int:
        if self.ephemeral_storage is None:
            return 0
        return int(self.ephemeral_storage.removesuffix("Gi")) * GIB_BYTES


class PlanPerformance(BaseModel):
    """The chosen configuration's predicted capacity and latency per replica (as planned; the
    performance model's full operating point is :class:`mmop.perf.ReplicaPerformance`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency_per_replica: int
    requests_per_second_per_replica: float
    ttft_p95_seconds: float
    tpot_p95_seconds: float


def _is_one(value: int) -> bool:
    return value == 1


class Alternative(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str
    tensor_parallel_size: int
    pipeline_parallel_size: int = Field(
        default=1, exclude_if=_is_one, description="Nodes per replica (pipeline stages)"
    )
    quantization: str
    kv_cache_dtype: str
    image_cap: str
    tokens_per_image: int | None = None
    replicas: int | None
    cost_per_hour_usd: float | None
    reason: str = Field(description="Why it was not chosen")


class Plan(BaseModel):
    """The chosen deployment and its reasons."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Checkpoint served (a variant id when quantized ahead)")
    served_model_name: str
    gpu: str = Field(description="Catalog GPU name")
    gpu_product: str = Field(description="nvidia.com/gpu.product the pods select")
    tensor_parallel_size: int = Field(description="GPUs per pod (per node of a replica)")
    pipeline_parallel_size: int = Field(
        default=1,
        exclude_if=_is_one,
        description="--pipeline-parallel-size: stages of a replica, one node each (1: one node)",
    )
    nodes_per_replica: int = Field(
        default=1,
        exclude_if=_is_one,
        description="Nodes (pods) one replica spans: a LeaderWorkerSet group when more than 1",
    )
    replicas: int
    quantization: str
    kv_cache_dtype: str
    image_cap: str
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    limit_mm_per_prompt: dict[str, Any]
    mm_processor_kwargs: dict[str, Any]
    max_tokens_per_image: int | None
    tokens_per_image: int | None = Field(
        default=None, description="Planned tokens per image: the worst case within the bounds"
    )
    tokens_per_video: int | None = Field(default=None, description="Planned tokens per video")
    tokens_per_audio: int | None = Field(default=None, description="Planned tokens per audio clip")
    native_tokens_per_image: int | None = Field(
        default=None, description="Tokens per image at the model's own processing (no cap)"
    )
    native_cost_per_hour_usd: float | None = Field(
        default=None,
        description="$/h of the cheapest plan at native image size, when the plan caps images",
    )
    trust_remote_code: bool = Field(
        default=False, description="vLLM runs the model repository's own code"
    )
    notes: list[str] = Field(
        default_factory=list, description="What the plan changed or the user must know"
    )
    quantization_method: str | None = Field(
        default=None,
        description="--quantization vLLM is given (None: the checkpoint's config names its "
        "method, or it has none)",
    )
    revision: str | None = Field(default=None, description="--revision: spec.model.revision")
    model_origin: str = Field(
        default="catalog",
        description="Where the model's config was read: catalog, hub, directory, configmap",
    )
    model_commit: str | None = Field(
        default=None, description="The Hub commit the model's config was read at"
    )
    kv_memory_scale: float = Field(
        default=1.0,
        description="Observed / predicted KV cache of this configuration on earlier start-ups, "
        "applied to the estimate (1.0: not calibrated); the margin of an approximate plan",
    )
    approximate: bool = Field(
        default=False,
        description="The model was read by the generic path and no engine has calibrated it",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="spec.engine.extraArgs, after mmop's flags"
    )
    vllm_version: str
    resources: Resources
    memory: Estimate = Field(description="Predicted start-up memory per GPU")
    performance: PlanPerformance
    cost_per_hour_usd: float
    config: str = ""  # the configuration's key (what status.autoscaler.avoid lists)
    alternatives: list[Alternative]
    explanation: str


@dataclass(frozen=True)
class _Weights:
    label: str  # none | fp8 | awq | …
    profile: ModelProfile
    model_id: str
    quantization_flag: str | None  # --quantization value, None when the checkpoint says it


@dataclass(frozen=True)
class _Cap:
    label: str
    kwargs: dict[str, Any]
    rank: int  # larger = higher fidelity


@dataclass(frozen=True, eq=False)
class _Candidate:
    """One configuration the search may choose (compared by identity)."""

    gpu: GpuSpec
    pool: str  # inventory pool name (a MIG slice has its own)
    product: str
    tp: int
    weights: _Weights
    kv: str
    cap: _Cap
    refusal: Refused | None = None  # the GPU cannot run these weights / this KV dtype
    pp: int = 1  # pipeline stages, one node each (tp = the node's GPUs when more than 1)
    # The link between the stages' nodes, Gb/s, and where the figure comes from (pp > 1 only).
    link_gbit: float | None = None
    link_source: str = ""

    @property
    def key(self) -> str:
        """The configuration, as status.autoscaler.avoid names it."""
        stages = f"/pp{self.pp}" if self.pp > 1 else ""
        return f"{self.pool}/tp{self.tp}{stages}/{self.weights.label}/kv-{self.kv}/{self.cap.label}"


@dataclass(frozen=True)
class Refused:
    """A candidate that does not work here, why (typed) and the sentence users read."""

    reason: Rejection
    message: str
    image_tokens: int = 0  # tokens per image at the candidate's cap, when it got that far
    replicas: int | None = None  # replicas the workload needs, when it got that far


@dataclass(frozen=True)
class Accepted:
    """A candidate that works: its figures and its price."""

    est: Estimate
    perf: perf.ReplicaPerformance
    resources: Resources
    replicas: int  # what the plan runs (sized for observed demand when Limits.demand is set)
    peak_replicas: int | None  # replicas for spec.workload's peak, when sized for demand
    cost_per_hour_usd: float
    max_model_len: int
    max_num_seqs: int
    image_tokens: int
    video_tokens: int
    audio_tokens: int
    tokens_per_request: int
    planned_load: int  # requests in flight per replica under the stated workload


Outcome = Accepted | Refused


@dataclass(frozen=True)
class _Option:
    """A candidate with its accepted outcome: what the search ranks."""

    cand: _Candidate
    acc: Accepted

    @property
    def gpus(self) -> int:
        return self.cand.tp * self.cand.pp * self.acc.replicas

    @property
    def cost(self) -> float:
        return self.acc.cost_per_hour_usd

    def headroom(self) -> float:
        """How many times the KV cache covers the requests a replica is planned to hold,
        in steps of 0.5 and capped at 2 (beyond that, more headroom does not matter)."""
        load = max(1, self.acc.planned_load)
        per_request = max(1, self.acc.tokens_per_request)
        est = self.acc.est
        if est.state_blocks_per_request:  # hybrid: state blocks count too
            ratio = requests_fitting(est, per_request) / load
        else:
            ratio = est.kv_cache_tokens / (load * per_request)
        return min(2.0, math.floor(ratio * 2) / 2)

    def sort_key(self) -> tuple[float, int, int, int, int, float]:
        """Cheapest first; at the same cost, fewer GPUs, then fidelity (larger images, then
        weights, then KV cache), then KV headroom: nothing is downscaled for no saving."""
        c = self.cand
        return (
            round(self.cost, 6),
            self.gpus,
            -c.cap.rank,
            -FIDELITY.get(c.weights.label, 0),
            -(1 if c.kv == KV_CACHE_DTYPE_AUTO else 0),
            -self.headroom(),
        )


# ----------------------------------------------------------------------------------------------
# Candidate generation


def _weights_options(
    spec: MultimodalModelSpec,
    profile: ModelProfile,
    allow_local: bool = False,
    resolved: Mapping[str, ModelProfile] | None = None,
) -> list[_Weights]:
    """The checkpoint's own precision, online fp8 of an unquantized checkpoint, and the listed
    pre-quantized variants. A listed variant replaces online quantization with the same method:
    the user named the checkpoint they want for it. A variant outside the catalog is taken from
    ``resolved`` (read by the caller, e.g. from the Hub), else read from a local directory only
    with `allow_local` (the CLI); the operator never looks."""
    allowed = set(spec.placement.quantizations)
    options: list[_Weights] = []
    native = profile.quantization.method if profile.quantization else "none"
    if native == "none" and Quantization.NONE in allowed:
        options.append(_Weights("none", profile, spec.model.id, None))
    elif native != "none":
        options.append(_Weights(native, profile, spec.model.id, None))
    variants: list[_Weights] = []
    for variant in spec.model.variants:
        if variant.quantization not in allowed:
            continue
        try:
            if resolved and variant.id in resolved:
                vprof = resolved[variant.id]
            elif not (allow_local or is_catalog_id(variant.id)):
                raise ModelError(f"{variant.id} is not in the catalog")
            else:
                vprof = load_profile(variant.id)
        except ModelError:
            # Not in the catalog: the base model's shape with the listed method in its config,
            # as a pre-quantized checkpoint of it has (vLLM reads the method from there).
            method = str(variant.quantization.value)
            bits = 8 if method in ("fp8", "compressed-tensors") else 4
            vprof = profile.model_copy(
                update={
                    "id": variant.id,
                    "quantization": CheckpointQuantization(
                        method=method,
                        weight_bits=bits,
                        group_size=None if bits == 8 else 128,
                    ),
                }
            )
        if vprof.needs_remote_code and not spec.model.trust_remote_code:
            continue
        flag = None if vprof.quantization else str(variant.quantization.value)
        variants.append(_Weights(str(variant.quantization.value), vprof, variant.id, flag))
    listed = {v.label for v in variants}
    if native == "none" and Quantization.FP8 in allowed and "fp8" not in listed:
        options.append(_Weights("fp8", profile, spec.model.id, "fp8"))
    return options + variants


def image_tokens(profile: ModelProfile, spec: MultimodalModelSpec, kwargs: dict[str, Any]) -> int:
    """Tokens of the costliest image the workload's bounds allow, with these processor kwargs
    (not just the maxWidth × maxHeight corner: a smaller image of another shape can cost more
    in tile-based families)."""
    images = spec.workload.images
    return modalities.worst_image_cost(profile, images.max_width, images.max_height, kwargs).tokens


def native_image_tokens(profile: ModelProfile, spec: MultimodalModelSpec) -> int:
    """Tokens per image at the model's own processing: the count no cap goes below by default."""
    return image_tokens(profile, spec, {})


def _image_floor(profile: ModelProfile, spec: MultimodalModelSpec) -> int:
    """The fewest tokens per image a cap may leave: the spec's floor, else native (no cap)."""
    images = spec.workload.images
    native = native_image_tokens(profile, spec)
    if images.min_tokens_per_image is not None:
        return min(native, images.min_tokens_per_image)
    if images.min_pixels is not None:
        side = max(16, math.isqrt(images.min_pixels))
        w, h = min(side, images.max_width), min(side, images.max_height)
        return min(native, modalities.worst_image_cost(profile, w, h, {}).tokens)
    return native


def _caps(profile: ModelProfile, spec: MultimodalModelSpec) -> list[_Cap]:
    images = spec.workload.images
    if images.per_request == 0 or profile.vision is None:
        return [_Cap("none", {}, 0)]
    fam = profile.family
    caps: list[_Cap] = []
    if fam in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"):
        patch = profile.vision.patch_size * profile.vision.spatial_merge_size
        unit = patch * patch
        native = native_image_tokens(profile, spec)
        for i, tokens in enumerate(QWEN_CAP_TOKENS):
            if tokens >= native and caps:
                continue
            cap_tokens = min(tokens, native)
            caps.append(
                _Cap(f"max_pixels={cap_tokens * unit}", {"max_pixels": cap_tokens * unit}, 100 - i)
            )
        caps = list({c.label: c for c in caps}.values())
    elif fam == "internvl":
        caps = [
            _Cap(f"max_dynamic_patch={n}", {"max_dynamic_patch": n}, 100 - i)
            for i, n in enumerate(INTERNVL_TILES)
        ]
    elif fam == "phi3_v":
        caps = [
            _Cap(f"num_crops={n}", {"num_crops": n}, 100 - i) for i, n in enumerate(PHI3V_CROPS)
        ]
    elif fam == "minicpmv":
        caps = [
            _Cap(f"max_slice_nums={n}", {"max_slice_nums": n}, 100 - i)
            for i, n in enumerate(MINICPMV_SLICES)
        ]
    elif fam == "idefics3":
        caps = [
            _Cap(f"longest_edge={n}", {"size": {"longest_edge": n}}, 100 - i)
            for i, n in enumerate(IDEFICS3_EDGES)
        ]
    else:
        caps = [_Cap("native", {}, 100)]
    floor_tokens = _image_floor(profile, spec)
    native = native_image_tokens(profile, spec)
    kept = []
    for cap in caps:
        tokens = image_tokens(profile, spec, cap.kwargs)
        # between the floor and native: never below what the spec allows, never above what the
        # model's own processing gives (e.g. more Phi-3.5-V crops than its processor's default)
        if tokens < floor_tokens or tokens > native:
            continue
        if images.min_pixels and cap.kwargs.get("max_pixels", math.inf) < images.min_pixels:
            continue
        kept.append(cap)
    return kept


def _limit_mm(spec: MultimodalModelSpec, profile: ModelProfile) -> dict[str, Any]:
    """--limit-mm-per-prompt: the workload's counts and sizes; unused modalities off."""
    supported = modalities.supported_modalities(profile)
    w = spec.workload
    limits: dict[str, Any] = {}
    if "image" in supported:
        if w.images.per_request:
            limits["image"] = {
                "count": w.images.per_request,
                "width": w.images.max_width,
                "height": w.images.max_height,
            }
        else:
            limits["image"] = 0
    if "video" in supported:
        if w.video.enabled:
            limits["video"] = {
                "count": 1,
                "num_frames": w.video.max_frames,
                "width": w.video.max_width,
                "height": w.video.max_height,
            }
        else:
            limits["video"] = 0
    if "audio" in supported:
        limits["audio"] = 1 if w.audio.enabled else 0
    return limits


def request_items(
    spec: MultimodalModelSpec, profile: ModelProfile, image_kwargs: dict[str, Any] | None = None
) -> tuple[list[modalities.ItemCost], list[modalities.ItemCost], int]:
    """(vision items, audio items, their tokens) of one request, with the processor kwargs of an
    image cap (none: the model's own processing)."""
    kwargs = image_kwargs or {}
    w = spec.workload
    items: list[modalities.ItemCost] = []
    audio: list[modalities.ItemCost] = []
    if w.images.per_request and profile.vision:
        worst = modalities.worst_image_cost(
            profile, w.images.max_width, w.images.max_height, kwargs
        )
        items.extend([worst] * w.images.per_request)
    if w.video.enabled and "video" in modalities.supported_modalities(profile):
        items.append(
            modalities.worst_video_cost(
                profile, w.video.max_width, w.video.max_height, w.video.max_frames, kwargs
            )
        )
    if w.audio.enabled and profile.audio is not None:
        audio.append(modalities.audio_cost(profile, w.audio.max_seconds))
    return items, audio, sum(i.prompt_tokens for i in (*items, *audio))


# ----------------------------------------------------------------------------------------------
# Evaluation


def _round_len(tokens: int) -> int:
    return int(math.ceil(tokens / 1024) * 1024)


@dataclass(frozen=True)
class Limits:
    """What observed serving taught about this model: configurations that failed, the KV
    cache a replica must beat, and the requests in flight the fleet actually carries (all from
    status.autoscaler).

    With ``demand`` set, a candidate must still serve spec.workload's peak (its replicas for the
    peak within scaling.maxReplicas and placeable now), but is sized — and priced — for the
    demand: the cheapest plan for the traffic the engines see that can still scale to the peak.
    """

    avoid: frozenset[str] = frozenset()
    min_kv_cache_tokens: int | None = None
    demand: int | None = None
    # The KV caches engines reported at start-up, cluster-wide (mmop.calibration): a candidate
    # whose MemoryKey was observed is planned with the observed figure.
    kv_calibration: CalibrationStore | None = None

    def calibrated(
        self, cand: _Candidate, spec: MultimodalModelSpec, vllm_version: str
    ) -> Calibrated | None:
        # A group's leader reports the group's cache: vLLM gives every rank the smallest rank's
        # block count (vllm/v1/core/kv_cache_utils.py l. 2662-2671 at 0.32.0, get_kv_cache_configs)
        # and publishes it (vllm/v1/engine/core.py l. 340), as the plan's memory.kv_cache_tokens
        # takes the smallest stage; the key carries the stages (MemoryKey.pipeline_parallel_size).
        if self.kv_calibration is None:
            return None
        return self.kv_calibration.lookup(memory_key(cand, spec, vllm_version))


@dataclass(frozen=True)
class _Assessment:
    """What a candidate is worth regardless of the cluster's free capacity: the estimate, the
    performance and the replicas the workload needs, or why it does not work."""

    rejection: Rejection | None = None
    message: str = ""
    est: Estimate | None = None
    max_model_len: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    audio_tokens: int = 0
    tokens_per_request: int = 0
    perf: perf.ReplicaPerformance | None = None
    replicas: int | None = None
    max_num_seqs: int = 0
    planned_load: int = 0

    def refused(self, reason: Rejection, message: str) -> Refused:
        """This assessment's figures with a refusal: what the alternatives show of it."""
        return Refused(reason, message, self.image_tokens, self.replicas)


ASSESSMENT_CACHE_SIZE = 4096


class AssessmentCache:
    """What candidates are worth regardless of the cluster's free capacity, kept between plans.

    Assessments are pure functions of (spec, candidate, vLLM version); the operator plans the
    same specs again and again as the cluster changes, so it keeps one cache and hands it to
    every :func:`plan` (least recently used entries dropped beyond `size`). Without one, a plan
    assesses every candidate afresh."""

    def __init__(self, size: int = ASSESSMENT_CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], _Assessment] = OrderedDict()
        self._lock = threading.Lock()  # the operator plans in many threads at once

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every assessment (after the catalogs change)."""
        with self._lock:
            self._items.clear()

    def lookup(self, key: tuple[Any, ...], assess: Callable[[], _Assessment]) -> _Assessment:
        """The assessment under `key`, computed by `assess` when not kept (outside the lock:
        two threads may both compute it; the result is the same)."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        found = assess()
        with self._lock:
            self._items[key] = found
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return found


# What the estimator's "does not fit" becomes for a candidate.
_FIT_REJECTIONS: dict[FitFailure, Rejection] = {
    FitFailure.HARDWARE: Rejection.VLLM_REFUSES,
    FitFailure.WEIGHTS: Rejection.WEIGHTS_TOO_LARGE,
    FitFailure.NO_KV_CACHE_MEMORY: Rejection.NO_KV_CACHE_MEMORY,
    FitFailure.MAX_SEQ_LEN: Rejection.MAX_SEQ_LEN,
}


def _evaluate(
    cand: _Candidate,
    spec: MultimodalModelSpec,
    inventory: Inventory,
    vllm_version: str,
    cache: AssessmentCache,
    spec_key: str | None = None,
    limits: Limits | None = None,
) -> Outcome:
    """The candidate on this cluster: accepted with its figures and price, or refused and why."""
    if cand.refusal is not None:
        return cand.refusal
    limits = limits or Limits()
    key = (
        spec_key if spec_key is not None else spec.model_dump_json(),
        vllm_version,
        cand.gpu,  # the whole spec: two catalogs may describe one GPU name differently
        cand.tp,
        cand.pp,
        cand.weights.label,
        cand.weights.model_id,
        cand.weights.profile.commit,  # a Hub model's config at another commit is another model
        cand.kv,
        cand.cap.label,
        cand.link_gbit,
        scale := (
            c.ratio
            if (c := limits.calibrated(cand, spec, vllm_version))
            else APPROXIMATE_KV_SCALE
            if cand.weights.profile.approximate
            else 1.0
        ),
    )
    found = cache.lookup(key, lambda: _assess(cand, spec, vllm_version, scale))
    if found.rejection is not None:
        return found.refused(found.rejection, found.message)
    assert found.est is not None and found.perf is not None and found.replicas is not None
    replicas = found.replicas
    if cand.key in limits.avoid:
        return found.refused(
            Rejection.AVOIDED,
            "the engines showed this configuration fails (status.autoscaler.avoid)",
        )
    if limits.min_kv_cache_tokens is not None and (
        found.est.kv_cache_tokens <= limits.min_kv_cache_tokens
    ):
        return found.refused(
            Rejection.KV_BELOW_OBSERVED,
            f"{found.est.kv_cache_tokens} KV tokens per replica, not more than the "
            f"{limits.min_kv_cache_tokens} that proved too few",
        )
    resources = _pod_resources(cand, found.est, inventory, spec.model.cache is not None)
    if isinstance(resources, Refused):
        return found.refused(resources.reason, resources.message)
    pod_size = {
        "cpu_millicores": resources.cpu_millicores,
        "memory_bytes": resources.memory_bytes,
        "ephemeral_bytes": resources.ephemeral_bytes,
    }
    if cand.pp > 1:
        placeable = inventory.can_place_groups(cand.pool, cand.tp, cand.pp, replicas, **pod_size)
    else:
        placeable = inventory.can_place(cand.pool, cand.tp, replicas, **pod_size)
    if placeable < replicas:
        nodes = f"{cand.pp} nodes × " if cand.pp > 1 else ""
        return found.refused(
            Rejection.NO_CLUSTER_ROOM,
            f"needs {replicas} replicas × {nodes}{cand.tp} {cand.gpu.name} ({resources.cpu} "
            f"CPU, {resources.memory} memory, {resources.ephemeral_storage} ephemeral storage "
            f"each{' pod' if cand.pp > 1 else ''}); the cluster has room for {placeable}",
        )
    peak: int | None = None
    if limits.demand is not None:
        # Room for the peak was checked above; the fleet is sized for what it carries.
        peak = replicas
        replicas = max(
            1, spec.scaling.min_replicas, math.ceil(limits.demand / found.perf.concurrency)
        )
    return Accepted(
        est=found.est,
        perf=found.perf,
        resources=resources,
        replicas=replicas,
        peak_replicas=peak,
        cost_per_hour_usd=replicas * cand.tp * cand.pp * inventory.price(cand.pool),
        max_model_len=found.max_model_len,
        max_num_seqs=found.max_num_seqs,
        image_tokens=found.image_tokens,
        video_tokens=found.video_tokens,
        audio_tokens=found.audio_tokens,
        tokens_per_request=found.tokens_per_request,
        planned_load=found.planned_load,
    )


def memory_key(cand: _Candidate, spec: MultimodalModelSpec, vllm_version: str) -> MemoryKey:
    """The calibration key of a candidate (mmop.calibration)."""
    return MemoryKey(
        model=cand.weights.model_id,
        commit=cand.weights.profile.commit,
        gpu=cand.gpu.name,
        tensor_parallel_size=cand.tp,
        pipeline_parallel_size=cand.pp,
        weights=cand.weights.label,
        kv_cache_dtype=cand.kv,
        vllm_version=vllm_version,
        extra_args=tuple(spec.engine.extra_args),
    )


def _assess(
    cand: _Candidate, spec: MultimodalModelSpec, vllm_version: str, kv_scale: float = 1.0
) -> _Assessment:
    profile = cand.weights.profile
    cal = replace(DEFAULT_CALIBRATION, kv_memory_scale=kv_scale)
    w = spec.workload
    try:
        items, audio, mm_tokens = request_items(spec, profile, cand.cap.kwargs)
    except ValueError as err:
        return _Assessment(rejection=Rejection.MEDIA, message=str(err))
    n_images = w.images.per_request if profile.vision is not None else 0
    image_tokens = items[0].tokens if n_images else 0
    video_tokens = items[n_images].tokens if len(items) > n_images else 0
    audio_tokens = audio[0].tokens if audio else 0
    need = w.prompt_tokens + w.output_tokens + mm_tokens
    model_max = profile.max_position_embeddings
    base = _Assessment(
        image_tokens=image_tokens,
        video_tokens=video_tokens,
        audio_tokens=audio_tokens,
        tokens_per_request=need,
    )
    if need > model_max:
        return replace(
            base,
            rejection=Rejection.MODEL_CONTEXT,
            message=f"a request needs {need} tokens (prompt, output and media) but the model's "
            f"context is {model_max}",
        )
    lengths = [min(model_max, max(w.context_length.min, _round_len(need)))]
    if w.context_length.preferred and w.context_length.preferred > lengths[0]:
        lengths.insert(0, min(model_max, w.context_length.preferred))
    mnbt, default_seqs = batch_defaults(cand.gpu)
    limit = _limit_mm(spec, profile)

    def engine_args(length: int, max_num_seqs: int) -> EngineArgs:
        return EngineArgs(
            tensor_parallel_size=cand.tp,
            pipeline_parallel_size=cand.pp,
            quantization=cand.weights.quantization_flag,
            kv_cache_dtype=cand.kv,
            gpu_memory_utilization=PLANNER_UTILIZATION,
            max_model_len=length,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=mnbt,
            limit_mm_per_prompt=limit,
            mm_processor_kwargs=cand.cap.kwargs,
            vllm_version=vllm_version,
        )

    found: Estimate | None = None
    max_model_len = 0
    misfit: Estimate | None = None
    for length in lengths:
        try:
            est = estimate(profile, cand.gpu, engine_args(length, default_seqs), cal)
        except EstimateError as err:
            return replace(base, rejection=Rejection.VLLM_REFUSES, message=str(err))
        if est.fits:
            found, max_model_len = est, length
            break
        misfit = est
    base = replace(base, max_model_len=max_model_len)
    if found is None:
        assert misfit is not None and misfit.failure is not None
        return replace(base, rejection=_FIT_REJECTIONS[misfit.failure], message=misfit.reason)
    kv_concurrency = max(0, requests_fitting(found, need))
    if kv_concurrency < 1:
        return replace(
            base,
            rejection=Rejection.KV_CACHE_TOO_SMALL,
            message=f"the KV cache ({found.kv_cache_tokens} tokens) holds no whole request of "
            f"{need} tokens",
        )
    max_conc = min(default_seqs, kv_concurrency)
    workload = perf.PerfWorkload(
        prompt_tokens=w.prompt_tokens,
        output_tokens=w.output_tokens,
        mm_items=tuple(items),
        audio_items=tuple(audio),
    )
    margin = w.slo.margin
    ttft = None if w.slo.ttft_p95_seconds is None else w.slo.ttft_p95_seconds * margin
    tpot = None if w.slo.tpot_p95_seconds is None else w.slo.tpot_p95_seconds * margin
    cap_perf = perf.replica_capacity(
        profile,
        cand.gpu,
        workload,
        tensor_parallel_size=cand.tp,
        pipeline_parallel_size=cand.pp,
        inter_node_gbit_per_second=cand.link_gbit,
        quantization=cand.weights.quantization_flag
        or (profile.quantization.method if profile.quantization else None),
        kv_cache_dtype=cand.kv,
        max_concurrency=max_conc,
        ttft_p95_seconds=ttft,
        tpot_p95_seconds=tpot,
    )
    if cap_perf.concurrency < 1 or cap_perf.requests_per_second <= 0:
        return replace(
            base,
            rejection=Rejection.LATENCY_SLO,
            message="misses the latency targets (at "
            f"{round(100 * margin)} % of them, spec.workload.slo.margin) even with one request "
            "in flight",
        )
    demand: list[int] = [spec.scaling.min_replicas, 1]
    if w.concurrency:
        demand.append(math.ceil(w.concurrency / cap_perf.concurrency))
    if w.requests_per_second:
        demand.append(math.ceil(w.requests_per_second / cap_perf.requests_per_second))
    replicas = max(demand)
    if replicas > spec.scaling.max_replicas:
        return replace(
            base,
            rejection=Rejection.MAX_REPLICAS,
            message=f"needs {replicas} replicas for the workload, more than "
            f"scaling.maxReplicas {spec.scaling.max_replicas}",
        )
    load = 1
    if w.concurrency:
        load = max(load, math.ceil(w.concurrency / replicas))
    if w.requests_per_second:
        share = w.requests_per_second / replicas / cap_perf.requests_per_second
        load = max(load, math.ceil(cap_perf.concurrency * min(1.0, share)))
    # vLLM admits at most the requests a replica serves within the SLO: the rest queue, where
    # the autoscaler sees them. The memory shown is vLLM's at exactly the rendered flags.
    max_num_seqs = max(1, min(default_seqs, cap_perf.concurrency))
    rendered = found
    if max_num_seqs != default_seqs:
        rendered = estimate(profile, cand.gpu, engine_args(max_model_len, max_num_seqs), cal)
        if not rendered.fits:  # fewer sequences never need more memory; keep vLLM's default
            rendered, max_num_seqs = found, default_seqs
    return replace(
        base,
        est=rendered,
        perf=cap_perf,
        replicas=replicas,
        max_num_seqs=max_num_seqs,
        planned_load=load,
    )


def _candidates(
    spec: MultimodalModelSpec,
    profile: ModelProfile,
    inventory: Inventory,
    allow_local: bool,
    resolved: Mapping[str, ModelProfile] | None = None,
) -> list[_Candidate]:
    allowed = {inventory.catalog.resolve(name).name for name in spec.placement.gpu_types}
    out: list[_Candidate] = []
    kv_options = [str(k.value) for k in spec.placement.kv_cache_dtypes]
    weights = _weights_options(spec, profile, allow_local, resolved)
    caps = {wopt.label: _caps(wopt.profile, spec) for wopt in weights}
    for pool in inventory.pools:
        gpu = pool.gpu_spec()
        if allowed and gpu.name not in allowed:
            continue
        for tp in TP_SIZES:
            if tp > spec.placement.max_gpus_per_replica or tp > pool.gpus_per_node:
                continue
            if profile.text.num_attention_heads % tp:
                continue
            for wopt in weights:
                for kv in kv_options:
                    refusal = _refusal(wopt, kv, gpu)
                    out.extend(
                        _Candidate(gpu, pool.name, pool.product_label, tp, wopt, kv, cap, refusal)
                        for cap in caps[wopt.label]
                    )
    return out


def _multinode_candidates(
    spec: MultimodalModelSpec,
    profile: ModelProfile,
    inventory: Inventory,
    allow_local: bool,
    resolved: Mapping[str, ModelProfile] | None = None,
) -> list[_Candidate]:
    """Replicas over several nodes: tensor parallel over every GPU of a node (within
    spec.placement.maxGpusPerReplica, the tensor-parallel cap, and dividing the attention heads)
    × pipeline parallel over 2 … min(the pool's nodes, MAX_PIPELINE_STAGES, decoder layers)
    nodes. MIG pools are left out (a slice is not a whole node's GPU)."""
    allowed = {inventory.catalog.resolve(name).name for name in spec.placement.gpu_types}
    out: list[_Candidate] = []
    kv_options = [str(k.value) for k in spec.placement.kv_cache_dtypes]
    weights = _weights_options(spec, profile, allow_local, resolved)
    caps = {wopt.label: _caps(wopt.profile, spec) for wopt in weights}
    for pool in inventory.pools:
        gpu = pool.gpu_spec()
        tp = pool.gpus_per_node
        if (allowed and gpu.name not in allowed) or pool.mig_profile is not None:
            continue
        if tp > spec.placement.max_gpus_per_replica or profile.text.num_attention_heads % tp:
            continue
        most = min(pool.node_count, MAX_PIPELINE_STAGES, profile.text.num_layers)
        gbit, source = inter_node_link(pool, gpu)
        for pp in range(2, most + 1):
            for wopt in weights:
                for kv in kv_options:
                    refusal = _refusal(wopt, kv, gpu)
                    out.extend(
                        _Candidate(
                            gpu,
                            pool.name,
                            pool.product_label,
                            tp,
                            wopt,
                            kv,
                            cap,
                            refusal,
                            pp,
                            link_gbit=gbit,
                            link_source=source,
                        )
                        for cap in caps[wopt.label]
                    )
    return out


def inter_node_link(pool: GpuPool, gpu: GpuSpec) -> tuple[float, str]:
    """The link a group's stages talk over, Gb/s, and a phrase saying where it comes from: the
    slowest node's ``mmop.dev/inter-node-gbps`` label; a node without the label counts as the
    documented default of its GPU class (perf.inter_node_gbit_per_second), so a pool labelled
    only in part is never credited more than the default."""
    default = perf.inter_node_gbit_per_second(gpu)
    labelled, everywhere = pool.inter_node_link
    if labelled is None:
        return default, (
            f"assumed for {gpu.name} nodes; label the nodes {INTER_NODE_LABEL}=<Gb/s> to give "
            "the real figure"
        )
    if everywhere:
        return labelled, f"the slowest node's {INTER_NODE_LABEL} label"
    figure = min(labelled, default)
    return figure, (
        f"some nodes lack the {INTER_NODE_LABEL} label: the slower of their labels and the "
        f"default for {gpu.name} nodes"
    )


def _refusal(wopt: _Weights, kv: str, gpu: GpuSpec) -> Refused | None:
    """The pinned vLLM's refusal of these weights and KV-cache dtype on this GPU (the dtype it
    resolves, the quantization kernels and the attention backends: mmop.capabilities): a KV-cache
    refusal when the same weights run with vLLM's default KV cache."""

    def refused(kv_cache_dtype: str) -> str | None:
        args = EngineArgs(quantization=wopt.quantization_flag, kv_cache_dtype=kv_cache_dtype)
        try:
            return hardware_refusal(wopt.profile, args, gpu)
        except EstimateError as err:
            return str(err)

    message = refused(kv)
    if message is None:
        return None
    if kv != KV_CACHE_DTYPE_AUTO and refused(KV_CACHE_DTYPE_AUTO) is None:
        return Refused(Rejection.KV_CACHE_DTYPE, message)
    return Refused(Rejection.GPU_CAPABILITY, message)


# ----------------------------------------------------------------------------------------------
# Plan


def _search(
    cands: Sequence[_Candidate],
    spec: MultimodalModelSpec,
    inventory: Inventory,
    vllm_version: str,
    exhaustive: bool,
    limits: Limits,
    cache: AssessmentCache,
) -> tuple[dict[_Candidate, Outcome], list[list[_Candidate]]]:
    """Evaluate candidates cheapest group first. Returns every candidate's outcome (a group
    skipped by the bound is refused with the bound) and the skipped groups, cheapest first."""
    groups: dict[tuple[str, int, int], list[_Candidate]] = {}
    for cand in cands:
        groups.setdefault((cand.pool, cand.tp, cand.pp), []).append(cand)
    floor_replicas = max(1, spec.scaling.min_replicas)

    def lower_bound(key: tuple[str, int, int]) -> float:
        return floor_replicas * key[1] * key[2] * inventory.price(key[0])

    best: float | None = None
    spec_key = spec.model_dump_json()
    outcomes: dict[_Candidate, Outcome] = {}
    pruned: list[list[_Candidate]] = []
    for key in sorted(groups, key=lower_bound):
        bound = lower_bound(key)
        if not exhaustive and best is not None and bound > best + 1e-9:
            message = f"costs at least ${bound:.2f}/h, more than ${best:.2f}/h"
            for cand in groups[key]:
                outcomes[cand] = cand.refusal or Refused(Rejection.COST_BOUND, message)
            pruned.append(groups[key])
            continue
        for cand in groups[key]:
            outcome = outcomes[cand] = _evaluate(
                cand, spec, inventory, vllm_version, cache, spec_key, limits
            )
            if isinstance(outcome, Accepted) and (best is None or outcome.cost_per_hour_usd < best):
                best = outcome.cost_per_hour_usd
    return outcomes, pruned


def checkpoint_weights_gib(est: Estimate) -> float:
    """Weights per GPU whose TP-fold is the whole checkpoint: the GPU's own without pipeline
    parallelism, every stage's together with it (each node downloads the whole checkpoint and
    loads its stage's share)."""
    return sum(s.weights_gib for s in est.stages) if est.stages else est.weights_gib


def checkpoint_gib(weights_gib_per_gpu: float, tp: int, quantized_on_load: bool) -> float:
    """GiB to download and load: the weights on all GPUs; twice that when vLLM quantizes a
    16-bit checkpoint to fp8 on load (the download is the 16-bit checkpoint)."""
    gib = weights_gib_per_gpu * tp
    return gib * 2 if quantized_on_load else gib


def ephemeral_gib(checkpoint: float | None) -> int:
    """The pod's ephemeral-storage request: the checkpoint it downloads (None: it reads a
    shared cache) with a tenth more for the repository's other files and partial downloads,
    plus what vLLM, torch.compile, Triton and FlashInfer write under HOME."""
    download = 0 if checkpoint is None else math.ceil(checkpoint * DOWNLOAD_OVERHEAD)
    return download + HOME_CACHES_GIB


def pod_resources(
    weights_gib_per_gpu: float,
    tp: int,
    multimodal: bool,
    mm_cache_gb: int,
    checkpoint: float | None = None,
) -> Resources:
    """CPU and memory of one vLLM pod (requests = limits), documented in docs/planner.md.

    CPU: one core for the API server (HTTP, tokenization), one for the engine core (scheduling;
    with one GPU the worker runs in it), one per worker process when tensor parallel, and one
    more for media decoding and the multimodal processor of a vision/audio model.
    Memory: 4 GiB for the API-server and engine-core processes (Python, torch, CUDA host
    state), 2 GiB per extra worker process, 5 % of the weights for loading buffers (safetensors
    are memory-mapped; their page cache is reclaimable), the multimodal processor cache held by
    both the API server and the engine core (2 × --mm-processor-cache-gb), and /dev/shm (a
    memory-backed emptyDir, counted against the pod's memory).
    Ephemeral storage (``ephemeral_gib``): ``checkpoint`` GiB downloaded into the pod, None
    when it reads the weights from a shared cache (spec.model.cache).
    """
    workers = tp if tp > 1 else 0
    cpu = 2 + workers + (1 if multimodal else 0)
    shm_gib = 2 if tp == 1 else 2 + 2 * tp
    cache = mm_cache_gb if multimodal else 0
    memory_gib = 4 + 2 * workers + math.ceil(weights_gib_per_gpu * tp * 0.05) + 2 * cache + shm_gib
    return Resources(
        gpus=tp,
        cpu=str(cpu),
        memory=f"{memory_gib}Gi",
        shm_size=f"{shm_gib}Gi",
        mm_processor_cache_gb=cache if multimodal else MM_PROCESSOR_CACHE_GB,
        ephemeral_storage=f"{ephemeral_gib(checkpoint)}Gi",
    )


def _pod_resources(
    cand: _Candidate, est: Estimate, inventory: Inventory, cached: bool
) -> Resources | Refused:
    """The pod for this candidate: vLLM's default multimodal cache when a node can hold it,
    else the largest smaller cache that fits (rendered as --mm-processor-cache-gb); refused,
    naming the resource no node has, when even the smallest pod does not fit."""
    multimodal = cand.weights.profile.multimodal
    options = MM_CACHE_OPTIONS_GB if multimodal else (MM_PROCESSOR_CACHE_GB,)
    shortfall = ""
    # A pipeline stage's pod loads its stage's weights; the heaviest stage sizes every pod.
    loaded = max((s.weights_gib for s in est.stages), default=est.weights_gib)
    for cache in options:
        checkpoint = (
            None
            if cached
            else checkpoint_gib(
                checkpoint_weights_gib(est), cand.tp, cand.weights.quantization_flag == "fp8"
            )
        )
        res = pod_resources(loaded, cand.tp, multimodal, cache, checkpoint)
        missing = inventory.pod_shortfall(
            cand.pool,
            cand.tp,
            cpu_millicores=res.cpu_millicores,
            memory_bytes=res.memory_bytes,
            ephemeral_bytes=res.ephemeral_bytes,
        )
        if missing is None:
            return res
        shortfall = missing
    pool = inventory.pool(cand.pool)
    if pool is None or pool.schedulable_nodes == 0:
        return Refused(Rejection.NO_SCHEDULABLE_NODE, shortfall)
    return Refused(Rejection.POD_TOO_LARGE, shortfall)


def _describe(c: _Candidate) -> str:
    nodes = f"{c.pp} nodes × " if c.pp > 1 else ""
    return (
        f"{nodes}{c.tp}× {c.gpu.name}, weights {c.weights.label}, KV {c.kv}, "
        f"image cap {c.cap.label}"
    )


def _load(
    spec: MultimodalModelSpec,
    allow_local: bool,
    resolved: Mapping[str, ModelProfile] | None = None,
) -> tuple[ModelProfile, bool]:
    """The model's profile, and whether it was read from a directory of this machine.

    A profile in ``resolved`` (what the caller read for this id, e.g. from the Hub) comes
    first. Without `allow_local` (the operator) only the catalog is consulted otherwise
    (``is_catalog_id`` looks inside the package's catalog directory only): nothing of this
    machine's filesystem is looked at, and the answer for an unknown id is the same whether or
    not a path of that name exists here."""
    model_id = spec.model.id
    if resolved and model_id in resolved:
        return resolved[model_id], False
    if is_catalog_id(model_id):
        return load_profile(model_id), False
    if not allow_local:
        last = model_id.lower().split("/")[-1]
        close = [m for m in catalog_ids() if last and last in m.lower()]
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise PlanningError(
            f"unknown model {model_id!r}: not a catalog id{hint} and no config was read for it "
            "(the operator reads other ids from the Hub and no paths of its own filesystem; "
            "`mmop plan` and `mmop estimate` also read a local directory)",
            reason=PlanningReason.UNKNOWN_MODEL,
        )
    local = Path(model_id).expanduser().is_dir()
    try:
        return load_profile(model_id), local
    except ModelError as err:
        raise PlanningError(str(err), reason=PlanningReason.UNKNOWN_MODEL) from err


def _check_spec(spec: MultimodalModelSpec, profile: ModelProfile) -> list[str]:
    """Refuse what the model cannot do (bad input); return notes on what the plan adjusts."""
    w = spec.workload
    notes: list[str] = []
    if w.video.enabled and "video" not in modalities.supported_modalities(profile):
        raise PlanningError(
            f"{profile.id} does not take video", reason=PlanningReason.UNSUPPORTED_MODALITY
        )
    if w.audio.enabled and profile.audio is None:
        raise PlanningError(
            f"{profile.id} does not take audio", reason=PlanningReason.UNSUPPORTED_MODALITY
        )
    if w.images.per_request and profile.vision is None:
        raise PlanningError(
            f"{profile.id} does not take images", reason=PlanningReason.UNSUPPORTED_MODALITY
        )
    if profile.needs_remote_code and not spec.model.trust_remote_code:
        auto = (profile.config.get("auto_map") or {}).get("AutoConfig", "")
        raise PlanningError(
            f"{profile.id} needs vLLM to run code from the model repository (its config maps "
            f"AutoConfig to {auto}); vLLM refuses it without --trust-remote-code. Set "
            "spec.model.trustRemoteCode: true to allow it",
            reason=PlanningReason.REMOTE_CODE_REQUIRED,
        )
    if spec.model.trust_remote_code:
        notes.append(
            "spec.model.trustRemoteCode: vLLM runs Python code from the model repository "
            "(--trust-remote-code)"
        )
    limit = profile.max_position_embeddings
    if w.context_length.min > limit:
        raise PlanningError(
            f"contextLength.min {w.context_length.min} is more than {profile.id} supports: its "
            f"context limit is {limit} tokens (max_position_embeddings); ask for at most {limit}",
            reason=PlanningReason.CONTEXT_TOO_LONG,
        )
    if w.context_length.preferred and w.context_length.preferred > limit:
        notes.append(
            f"contextLength.preferred {w.context_length.preferred} is more than the model's "
            f"limit; at most {limit} tokens are planned"
        )
    return notes


def plan(
    manifest: MultimodalModel | MultimodalModelSpec,
    inventory: Inventory,
    *,
    name: str | None = None,
    vllm_version: str = PINNED_VLLM_VERSION,
    alternatives: int = 5,
    exhaustive: bool = False,
    limits: Limits | None = None,
    allow_local: bool = False,
    model_ref: str | None = None,
    cache: AssessmentCache | None = None,
    resolved: Mapping[str, ModelProfile] | None = None,
    multinode: bool = False,
) -> Plan:
    """Plan a MultimodalModel on an inventory; raise PlanningError when nothing fits.

    Candidates are evaluated cheapest (GPU type, TP size) first; a group whose lower bound on
    cost (minReplicas × GPUs × price) exceeds the best plan found is skipped, which never changes
    the answer (the cheapest skipped groups are evaluated afterwards for the alternatives).
    `exhaustive=True` evaluates everything (the benchmark's reference).

    `allow_local` lets spec.model.id name a directory of this machine (the CLI); the pod cannot
    serve that path, so the argv names `model_ref` (a Hub id or a path on the pod's model
    volume) or, without one, the placeholder MODEL, and the plan says so.

    `cache` keeps what candidates are worth between calls (:class:`AssessmentCache`; the
    operator holds one); without it the plan assesses every candidate afresh.

    `resolved` holds the profiles of models outside the catalog that the caller read (the
    model and its variants, by id: from the Hub, a model volume or a ConfigMap); the planner
    itself reads no network and, without `allow_local`, no file outside its catalog.

    `multinode` lets a replica span several nodes (TP within a node × PP across nodes) when no
    single node holds one (docs/multinode.md); such a plan is served by a LeaderWorkerSet
    (``render.render_multinode``). Off by default: the operator asks for it once it applies
    LeaderWorkerSets; until then it keeps answering Infeasible for such models.
    """
    if isinstance(manifest, MultimodalModel):
        spec, name = manifest.spec, name or manifest.metadata.name
    else:
        spec, name = manifest, name or "model"
    profile, local = _load(spec, allow_local, resolved)
    notes = _check_spec(spec, profile)
    if local and model_ref is None:
        model_ref = LOCAL_MODEL_PLACEHOLDER
        notes.append(
            f"the model was read from the local directory {spec.model.id}; the argv names "
            f"{LOCAL_MODEL_PLACEHOLDER}: replace it with the Hub id or the path on the pod's "
            "model volume (mmop plan --model-ref)"
        )
    for gpu_name in spec.placement.gpu_types:
        inventory.catalog.resolve(gpu_name)  # GpuError for a type the inventory's catalog lacks
    selector = spec.placement.node_selector
    if selector:
        inventory = inventory.matching(selector)
        if not inventory.pools:
            raise PlanningError(
                f"no GPU node matches spec.placement.nodeSelector ({_selector_text(selector)}): "
                "its pods could never be scheduled",
                reason=PlanningReason.INSUFFICIENT_CAPACITY,
            )
    cands = _candidates(spec, profile, inventory, allow_local, resolved)
    if not cands:
        raise PlanningError(
            "no GPU in the cluster matches spec.placement (types "
            f"{', '.join(spec.placement.gpu_types) or 'any'}, at most "
            f"{spec.placement.max_gpus_per_replica} per replica"
            + (f", nodeSelector {_selector_text(selector)}" if selector else "")
            + ")",
            reason=PlanningReason.INSUFFICIENT_CAPACITY,
        )
    limits = limits or Limits()
    cache = cache if cache is not None else AssessmentCache()
    outcomes, pruned = _search(cands, spec, inventory, vllm_version, exhaustive, limits, cache)

    def ranked() -> list[_Option]:
        options = [_Option(c, o) for c in cands if isinstance(o := outcomes[c], Accepted)]
        return sorted(options, key=_Option.sort_key)

    feasible = ranked()
    single_cost = feasible[0].cost if feasible else None
    if multinode:
        # Replicas over several nodes (docs/multinode.md): when no single node holds one, or
        # when spanning saves at least MULTINODE_MIN_SAVING of the cheapest single-node plan.
        # When none is taken, the answer is the single-node search's, unchanged.
        multi = _multinode_candidates(spec, profile, inventory, allow_local, resolved)
        multi_outcomes, multi_pruned = _search(
            multi, spec, inventory, vllm_version, exhaustive, limits, cache
        )
        costs = [o.cost_per_hour_usd for o in multi_outcomes.values() if isinstance(o, Accepted)]
        if costs and (
            single_cost is None or min(costs) <= single_cost * (1 - MULTINODE_MIN_SAVING)
        ):
            cands = [*cands, *multi]
            outcomes.update(multi_outcomes)
            pruned = multi_pruned if single_cost is None else [*pruned, *multi_pruned]
            feasible = ranked()
    if not feasible:
        raise PlanningError(_nearest_miss(cands, outcomes), reason=_infeasible_reason(outcomes))
    best = feasible[0]
    # The cheapest groups the bound skipped still belong among the alternatives.
    spec_key = spec.model_dump_json()
    for group in pruned[:PRUNED_GROUPS_FOR_ALTERNATIVES]:
        for cand in group:
            outcomes[cand] = _evaluate(cand, spec, inventory, vllm_version, cache, spec_key, limits)
    feasible = ranked()
    alts = _alternatives(best, feasible, cands, outcomes, alternatives)
    chosen, acc = best.cand, best.acc
    calibrated = limits.calibrated(chosen, spec, vllm_version)
    if calibrated is not None:
        notes.append(calibrated.note())
    approximate = chosen.weights.profile.approximate and calibrated is None
    kv_scale = calibrated.ratio if calibrated else APPROXIMATE_KV_SCALE if approximate else 1.0
    if approximate:
        notes.append(
            f"approximate: {chosen.weights.profile.approximate_what}; planned with "
            f"{APPROXIMATE_KV_SCALE:.0%} of the estimated KV memory "
            "until an engine of this configuration reports its own"
        )
    native_tokens = native_image_tokens(profile, spec) if acc.image_tokens else None
    native_cost: float | None = None
    if native_tokens is not None and acc.image_tokens < native_tokens:
        native = [o for o in feasible if o.acc.image_tokens >= native_tokens]
        if not native:  # the bound skipped them: price native images before saying they cost
            for cand in cands:
                if isinstance(outcomes[cand], Accepted) or cand.refusal is not None:
                    continue
                if image_tokens(cand.weights.profile, spec, cand.cap.kwargs) >= native_tokens:
                    outcomes[cand] = _evaluate(
                        cand, spec, inventory, vllm_version, cache, spec_key, limits
                    )
            feasible = ranked()
            native = [o for o in feasible if o.acc.image_tokens >= native_tokens]
        if native:
            native_cost = round(native[0].cost, 4)
            notes.append(
                f"images are capped at {acc.image_tokens} tokens ({chosen.cap.label}; native "
                f"{native_tokens}, allowed by the spec's quality floor); native size would cost "
                f"${native_cost:.2f}/h"
            )
        else:
            notes.append(
                f"images are capped at {acc.image_tokens} tokens ({chosen.cap.label}; native "
                f"{native_tokens}, allowed by the spec's quality floor); nothing fits at native "
                "size"
            )
    if acc.resources.mm_processor_cache_gb != MM_PROCESSOR_CACHE_GB and profile.multimodal:
        notes.append(
            f"--mm-processor-cache-gb={acc.resources.mm_processor_cache_gb} (vLLM's default "
            f"{MM_PROCESSOR_CACHE_GB}) so the pod fits the memory of a {chosen.gpu.name} node"
        )
    if acc.est.dtype != chosen.weights.profile.dtype:
        notes.append(
            f"vLLM runs the model in {acc.est.dtype} on {chosen.gpu.name} (the checkpoint is "
            f"{chosen.weights.profile.dtype}; compute capability "
            f"{chosen.gpu.compute_capability}): memory is planned for that"
        )
    if chosen.weights.model_id != spec.model.id:
        notes.append(f"serves the listed pre-quantized checkpoint {chosen.weights.model_id}")
    shape = f"{chosen.tp}× {chosen.gpu.name}"
    if chosen.pp > 1:
        shape = f"{chosen.pp} nodes × {shape}"
        why = (
            "no single node of the cluster holds a replica"
            if single_cost is None
            else f"spanning nodes costs ${acc.cost_per_hour_usd:.2f}/h against "
            f"${single_cost:.2f}/h for the cheapest plan on one node per replica"
        )
        notes.append(
            f"{why}: each replica spans {chosen.pp} nodes "
            f"(tensor parallel {chosen.tp} within a node × pipeline parallel {chosen.pp} "
            "across nodes), served by a LeaderWorkerSet: the cluster needs the LeaderWorkerSet "
            "controller (v0.10.0) and a fast network between the nodes (docs/multinode.md)"
        )
        notes.append(
            f"inter-node link {chosen.link_gbit:g} Gb/s per GPU between stages "
            f"({chosen.link_source})"
        )
    explanation = (
        f"{acc.replicas} replica(s) of {shape} "
        f"(${acc.cost_per_hour_usd:.2f}/h): weights {chosen.weights.label}, KV cache "
        f"{chosen.kv}, {acc.est.kv_cache_tokens:,} KV tokens per replica, up to "
        f"{acc.perf.concurrency} requests in flight per replica within "
        f"{round(100 * spec.workload.slo.margin)} % of the SLO (--max-num-seqs "
        f"{acc.max_num_seqs}); image cap {chosen.cap.label}"
        + (f" ({acc.image_tokens} tokens per image)" if acc.image_tokens else "")
        + f"; max_model_len {acc.max_model_len}."
    )
    if limits.demand is not None:
        explanation += (
            f" Sized for the {limits.demand} requests in flight the engines showed; "
            f"{acc.peak_replicas} replica(s) carry spec.workload's peak."
        )
    return Plan(
        model=model_ref or chosen.weights.model_id,
        served_model_name=name,
        gpu=chosen.gpu.name,
        gpu_product=chosen.product,
        tensor_parallel_size=chosen.tp,
        pipeline_parallel_size=chosen.pp,
        nodes_per_replica=chosen.pp,
        replicas=acc.replicas,
        quantization=chosen.weights.label,
        kv_cache_dtype=chosen.kv,
        image_cap=chosen.cap.label,
        max_model_len=acc.max_model_len,
        max_num_seqs=acc.max_num_seqs,
        max_num_batched_tokens=acc.est.max_num_batched_tokens,
        gpu_memory_utilization=PLANNER_UTILIZATION,
        limit_mm_per_prompt=_limit_mm(spec, chosen.weights.profile),
        mm_processor_kwargs=chosen.cap.kwargs,
        max_tokens_per_image=acc.image_tokens or None,
        tokens_per_image=acc.image_tokens or None,
        tokens_per_video=acc.video_tokens or None,
        tokens_per_audio=acc.audio_tokens or None,
        native_tokens_per_image=native_tokens,
        native_cost_per_hour_usd=native_cost,
        trust_remote_code=spec.model.trust_remote_code,
        notes=notes,
        quantization_method=chosen.weights.quantization_flag,
        revision=spec.model.revision or None,
        model_origin=chosen.weights.profile.origin,
        model_commit=chosen.weights.profile.commit,
        kv_memory_scale=round(kv_scale, 4),
        approximate=approximate,
        extra_args=list(spec.engine.extra_args),
        vllm_version=vllm_version,
        resources=acc.resources,
        memory=acc.est,
        performance=PlanPerformance(
            concurrency_per_replica=acc.perf.concurrency,
            requests_per_second_per_replica=round(acc.perf.requests_per_second, 3),
            ttft_p95_seconds=round(acc.perf.ttft_p95_seconds, 4),
            tpot_p95_seconds=round(acc.perf.tpot_p95_seconds, 5),
        ),
        cost_per_hour_usd=round(acc.cost_per_hour_usd, 4),
        config=chosen.key,
        alternatives=alts,
        explanation=explanation,
    )


def _selector_text(selector: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _alternatives(
    best: _Option,
    feasible: Sequence[_Option],
    cands: Sequence[_Candidate],
    outcomes: dict[_Candidate, Outcome],
    n: int,
) -> list[Alternative]:
    """The runners-up: one per (GPU, TP, weights) first, then the chosen configuration's image
    cap and KV-cache variants, then configurations that do not work, each with its reason."""
    out: list[Alternative] = []

    def why(o: _Option) -> str:
        if o.cost > best.cost + 1e-9:
            return f"costs ${o.cost:.2f}/h, more than ${best.cost:.2f}/h"
        return "same cost; lost the tie-break (GPUs, image fidelity, weights, KV, headroom)"

    def config(c: _Candidate) -> tuple[str, int, int, str]:
        return (c.gpu.name, c.tp, c.pp, c.weights.label)

    b = best.cand
    seen_config: set[tuple[str, int, int, str]] = {config(b)}
    seen: set[str] = {b.key}
    for o in feasible[1:]:
        if config(o.cand) in seen_config:
            continue
        seen_config.add(config(o.cand))
        seen.add(o.cand.key)
        out.append(_alt(o.cand, o.acc.image_tokens, o.acc.replicas, o.cost, why(o)))
        if len(out) >= n:
            break
    variants = 0
    for o in feasible[1:]:
        if variants >= VARIANT_ALTERNATIVES:
            break
        c = o.cand
        if (
            config(c) == config(b)
            and c.key not in seen
            and (c.kv != b.kv or c.cap.label != b.cap.label)
        ):
            seen.add(c.key)
            out.append(_alt(c, o.acc.image_tokens, o.acc.replicas, o.cost, why(o)))
            variants += 1
    failed = 0
    for c in cands:
        refused = outcomes[c]
        if isinstance(refused, Refused) and config(c) not in seen_config and refused.message:
            seen_config.add(config(c))
            out.append(_alt(c, refused.image_tokens, refused.replicas, None, refused.message))
            failed += 1
            if failed >= n:
                break
    return out


def _alt(
    c: _Candidate, tokens_per_image: int, replicas: int | None, cost: float | None, reason: str
) -> Alternative:
    return Alternative(
        gpu=c.gpu.name,
        tensor_parallel_size=c.tp,
        pipeline_parallel_size=c.pp,
        quantization=c.weights.label,
        kv_cache_dtype=c.kv,
        image_cap=c.cap.label,
        tokens_per_image=tokens_per_image or None,
        replicas=replicas,
        cost_per_hour_usd=None if cost is None else round(cost, 4),
        reason=reason,
    )


def _infeasible_reason(outcomes: dict[_Candidate, Outcome]) -> PlanningReason:
    """InsufficientCapacity when more free nodes would let some candidate fit, else Infeasible."""
    if any(isinstance(o, Refused) and o.reason in CAPACITY_REJECTIONS for o in outcomes.values()):
        return PlanningReason.INSUFFICIENT_CAPACITY
    return PlanningReason.INFEASIBLE


# How near a refused candidate came (lower is nearer): no room beats too few replicas beats
# latency beats a KV cache too small for the context; the rest rank by GPU memory, and a GPU
# vLLM refuses comes last.
_CLOSENESS: dict[Rejection, int] = {
    Rejection.POD_TOO_LARGE: 0,
    Rejection.NO_CLUSTER_ROOM: 0,
    Rejection.MAX_REPLICAS: 1,
    Rejection.LATENCY_SLO: 2,
    Rejection.MAX_SEQ_LEN: 3,
    Rejection.KV_CACHE_TOO_SMALL: 3,
    Rejection.KV_CACHE_DTYPE: 3,
    Rejection.GPU_CAPABILITY: 5,
}
_BY_MEMORY = 4  # every other rejection

# What would make something fit, for the rejections seen.
_HINTS: tuple[tuple[frozenset[Rejection], str], ...] = (
    (
        frozenset({Rejection.WEIGHTS_TOO_LARGE, Rejection.NO_KV_CACHE_MEMORY}),
        "a GPU with more memory, more GPUs per replica, or fp8/int4 weights",
    ),
    (
        frozenset({Rejection.MAX_SEQ_LEN}),
        "a shorter contextLength, fewer or smaller images, or an fp8 KV cache",
    ),
    (frozenset({Rejection.LATENCY_SLO}), "looser latency targets or a faster GPU"),
    (
        frozenset({Rejection.MAX_REPLICAS, Rejection.NO_CLUSTER_ROOM}),
        "a higher scaling.maxReplicas or more GPUs in the cluster",
    ),
)


def _nearest_miss(cands: Sequence[_Candidate], outcomes: dict[_Candidate, Outcome]) -> str:
    """Describe the candidate that came closest, and what would make something fit."""
    refusals = {c: o for c in cands if isinstance(o := outcomes[c], Refused)}

    def closeness(c: _Candidate) -> tuple[int, float]:
        rank = _CLOSENESS.get(refusals[c].reason, _BY_MEMORY)
        return (rank, -c.gpu.memory_gib * c.tp * c.pp if rank == _BY_MEMORY else 0.0)

    nearest = min(refusals, key=closeness)
    seen = {o.reason for o in refusals.values()}
    hints = [hint for reasons, hint in _HINTS if reasons & seen]
    return f"nothing fits; nearest miss: {_describe(nearest)}: {refusals[nearest].message}. " + (
        "Would fit with: " + "; or ".join(hints) + "." if hints else ""
    )
