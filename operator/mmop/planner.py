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

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmop import modalities, perf
from mmop.api import MultimodalModel, MultimodalModelSpec, Quantization
from mmop.catalog import GpuSpec, resolve_gpu
from mmop.estimator import (
    PINNED_VLLM_VERSION,
    EngineArgs,
    Estimate,
    EstimateError,
    batch_defaults,
    estimate,
    hardware_refusal,
)
from mmop.inventory import Inventory
from mmop.model import ModelError, ModelProfile, is_catalog_id, load_profile
from mmop.model import Quantization as ModelQuantization

PLANNER_UTILIZATION = 0.9  # leaves ~10% for CUDA context, fragmentation and spikes
TP_SIZES = (1, 2, 4, 8)
OPENAI_PORT = 8000
MM_PROCESSOR_CACHE_GB = 4  # vLLM's default host-RAM cache of processed multimodal inputs
# Smaller caches the planner may render (--mm-processor-cache-gb) when a node's memory cannot
# hold the default one; the cache only saves re-processing repeated media.
MM_CACHE_OPTIONS_GB = (MM_PROCESSOR_CACHE_GB, 2, 1, 0)
GIB_BYTES = 1024**3
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


BAD_INPUT_REASONS = frozenset(
    {"UnknownModel", "UnsupportedModality", "ContextTooLong", "RemoteCodeRequired", "InvalidSpec"}
)
"""Reasons that mean the spec asks for something the model cannot do (CLI exit 2); every other
reason means nothing fits the cluster (exit 3)."""


class PlanningError(ValueError):
    """Nothing fits: the message names the nearest miss and what would make it fit."""

    def __init__(self, message: str, reason: str = "Infeasible") -> None:
        super().__init__(message)
        self.reason = reason

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

    @property
    def cpu_millicores(self) -> int:
        return int(self.cpu) * 1000

    @property
    def memory_bytes(self) -> int:
        return int(self.memory.removesuffix("Gi")) * GIB_BYTES


class Performance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency_per_replica: int
    requests_per_second_per_replica: float
    ttft_p95_seconds: float
    tpot_p95_seconds: float


class Alternative(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str
    tensor_parallel_size: int
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
    tensor_parallel_size: int
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
    vllm_version: str
    args: list[str] = Field(description="vLLM arguments after the executable")
    resources: Resources
    memory: Estimate = Field(description="Predicted start-up memory per GPU")
    performance: Performance
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


@dataclass
class _Candidate:
    gpu: GpuSpec
    pool: str  # inventory pool name (a MIG slice has its own)
    product: str
    tp: int
    weights: _Weights
    kv: str
    cap: _Cap
    est: Estimate | None = None
    replicas: int | None = None
    cost: float | None = None
    perf: perf.Performance | None = None
    max_num_seqs: int = 0
    reason: str = ""
    image_tokens: int = 0
    max_model_len: int = 0
    tokens_per_request: int = 0
    planned_load: int = 0  # requests in flight per replica under the stated workload
    peak_replicas: int | None = None  # replicas for spec.workload's peak (sized for demand)
    resources: Resources | None = None
    refused: bool = False  # the GPU cannot run these weights / this KV dtype: never evaluated
    tokens_per_video: int = 0
    tokens_per_audio: int = 0

    @property
    def gpus(self) -> int:
        return self.tp * (self.replicas or 0)

    @property
    def key(self) -> str:
        """The configuration, as status.autoscaler.avoid names it."""
        return f"{self.pool}/tp{self.tp}/{self.weights.label}/kv-{self.kv}/{self.cap.label}"

    def headroom(self) -> float:
        """How many times the KV cache covers the requests a replica is planned to hold,
        in steps of 0.5 and capped at 2 (beyond that, more headroom does not matter)."""
        assert self.est is not None
        need = max(1, self.planned_load) * max(1, self.tokens_per_request)
        ratio = self.est.kv_cache_tokens / need
        return min(2.0, math.floor(ratio * 2) / 2)

    def sort_key(self) -> tuple[float, int, int, int, int, float]:
        """Cheapest first; at the same cost, fewer GPUs, then fidelity (larger images, then
        weights, then KV cache), then KV headroom: nothing is downscaled for no saving."""
        assert self.cost is not None
        return (
            round(self.cost, 6),
            self.gpus,
            -self.cap.rank,
            -FIDELITY.get(self.weights.label, 0),
            -(1 if self.kv == "auto" else 0),
            -self.headroom(),
        )


# ----------------------------------------------------------------------------------------------
# Candidate generation


def _weights_options(spec: MultimodalModelSpec, profile: ModelProfile) -> list[_Weights]:
    """The checkpoint's own precision, online fp8 of an unquantized checkpoint, and the listed
    pre-quantized variants. A listed variant replaces online quantization with the same method:
    the user named the checkpoint they want for it."""
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
            vprof = load_profile(variant.id)
        except ModelError:
            # Not in the catalog: the base model's shape with the listed method in its config,
            # as a pre-quantized checkpoint of it has (vLLM reads the method from there).
            method = str(variant.quantization.value)
            bits = 8 if method in ("fp8", "compressed-tensors") else 4
            vprof = profile.model_copy(
                update={
                    "id": variant.id,
                    "quantization": ModelQuantization(
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
    if fam in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"):
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


@dataclass(frozen=True)
class _Assessment:
    """What a candidate is worth regardless of the cluster's free capacity: the estimate, the
    performance and the replicas the workload needs (or why it does not work)."""

    reason: str = ""
    est: Estimate | None = None
    max_model_len: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    audio_tokens: int = 0
    tokens_per_request: int = 0
    perf: perf.Performance | None = None
    replicas: int | None = None
    max_num_seqs: int = 0
    planned_load: int = 0


# Assessments are pure functions of (spec, candidate, vLLM version); the operator plans the same
# specs again and again as the cluster changes, so they are kept (least recently used dropped).
ASSESSMENT_CACHE_SIZE = 4096
_assessments: OrderedDict[tuple[Any, ...], _Assessment] = OrderedDict()


def clear_cache() -> None:
    """Forget cached assessments (tests; after the catalogs change)."""
    _assessments.clear()


def _evaluate(
    cand: _Candidate,
    spec: MultimodalModelSpec,
    inventory: Inventory,
    vllm_version: str,
    spec_key: str | None = None,
    limits: Limits | None = None,
) -> None:
    limits = limits or Limits()
    key = (
        spec_key if spec_key is not None else spec.model_dump_json(),
        vllm_version,
        cand.gpu.name,
        cand.gpu.memory_gib,
        cand.tp,
        cand.weights.label,
        cand.weights.model_id,
        cand.kv,
        cand.cap.label,
    )
    if cand.refused:
        return
    found = _assessments.get(key)
    if found is None:
        found = _assess(cand, spec, vllm_version)
        _assessments[key] = found
        if len(_assessments) > ASSESSMENT_CACHE_SIZE:
            _assessments.popitem(last=False)
    else:
        _assessments.move_to_end(key)
    cand.reason = found.reason
    cand.image_tokens = found.image_tokens
    cand.tokens_per_video = found.video_tokens
    cand.tokens_per_audio = found.audio_tokens
    cand.tokens_per_request = found.tokens_per_request
    cand.max_model_len = found.max_model_len
    cand.replicas = found.replicas
    if found.est is None or found.perf is None or found.replicas is None or found.reason:
        return
    replicas = found.replicas
    if cand.key in limits.avoid:
        cand.reason = "the engines showed this configuration fails (status.autoscaler.avoid)"
        return
    if limits.min_kv_cache_tokens is not None and (
        found.est.kv_cache_tokens <= limits.min_kv_cache_tokens
    ):
        cand.reason = (
            f"{found.est.kv_cache_tokens} KV tokens per replica, not more than the "
            f"{limits.min_kv_cache_tokens} that proved too few"
        )
        return
    resources, shortfall = _pod_resources(cand, found.est, inventory)
    if resources is None:
        cand.reason = shortfall
        return
    cand.resources = resources
    placeable = inventory.can_place(
        cand.pool,
        cand.tp,
        replicas,
        cpu_millicores=resources.cpu_millicores,
        memory_bytes=resources.memory_bytes,
    )
    if placeable < replicas:
        cand.reason = (
            f"needs {replicas} replicas × {cand.tp} {cand.gpu.name} ({resources.cpu} CPU, "
            f"{resources.memory} memory each); the cluster has room for {placeable}"
        )
        return
    if limits.demand is not None:
        # Room for the peak was checked above; the fleet is sized for what it carries.
        cand.peak_replicas = replicas
        replicas = max(
            1, spec.scaling.min_replicas, math.ceil(limits.demand / found.perf.concurrency)
        )
        cand.replicas = replicas
    cand.est, cand.perf = found.est, found.perf
    cand.max_num_seqs, cand.planned_load = found.max_num_seqs, found.planned_load
    cand.cost = replicas * cand.tp * inventory.price(cand.pool)


def _assess(cand: _Candidate, spec: MultimodalModelSpec, vllm_version: str) -> _Assessment:
    profile = cand.weights.profile
    w = spec.workload
    try:
        items, audio, mm_tokens = request_items(spec, profile, cand.cap.kwargs)
    except ValueError as err:
        return _Assessment(reason=str(err))
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
            reason=f"a request needs {need} tokens (prompt, output and media) but the model's "
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
    reason = ""
    for length in lengths:
        try:
            est = estimate(profile, cand.gpu, engine_args(length, default_seqs))
        except EstimateError as err:
            return replace(base, reason=str(err))
        if est.fits:
            found, max_model_len = est, length
            break
        reason = est.reason
    base = replace(base, max_model_len=max_model_len)
    if found is None:
        return replace(base, reason=reason)
    kv_concurrency = max(0, found.kv_cache_tokens // max(1, need))
    if kv_concurrency < 1:
        return replace(
            base,
            reason=f"the KV cache ({found.kv_cache_tokens} tokens) holds no whole request of "
            f"{need} tokens",
        )
    max_conc = min(default_seqs, kv_concurrency)
    workload = perf.Workload(
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
            reason="misses the latency targets (at "
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
            reason=f"needs {replicas} replicas for the workload, more than scaling.maxReplicas "
            f"{spec.scaling.max_replicas}",
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
        rendered = estimate(profile, cand.gpu, engine_args(max_model_len, max_num_seqs))
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
    spec: MultimodalModelSpec, profile: ModelProfile, inventory: Inventory
) -> list[_Candidate]:
    allowed = {resolve_gpu(name).name for name in spec.placement.gpu_types}
    out: list[_Candidate] = []
    kv_options = [str(k.value) for k in spec.placement.kv_cache_dtypes]
    weights = _weights_options(spec, profile)
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
                    for cap in caps[wopt.label]:
                        cand = _Candidate(gpu, pool.name, pool.product_label, tp, wopt, kv, cap)
                        if refusal:
                            cand.reason, cand.refused = refusal, True
                        out.append(cand)
    return out


def _refusal(wopt: _Weights, kv: str, gpu: GpuSpec) -> str | None:
    """The pinned vLLM's refusal of these weights and KV-cache dtype on this GPU (the dtype it
    resolves, the quantization kernels and the attention backends: mmop.capabilities)."""
    args = EngineArgs(quantization=wopt.quantization_flag, kv_cache_dtype=kv)
    try:
        return hardware_refusal(wopt.profile, args, gpu)
    except EstimateError as err:
        return str(err)


# ----------------------------------------------------------------------------------------------
# Plan


def _search(
    cands: Sequence[_Candidate],
    spec: MultimodalModelSpec,
    inventory: Inventory,
    vllm_version: str,
    exhaustive: bool,
    limits: Limits,
) -> list[list[_Candidate]]:
    """Evaluate candidates cheapest group first; return the groups skipped by the bound,
    cheapest first (their candidates carry the bound as their reason)."""
    groups: dict[tuple[str, int], list[_Candidate]] = {}
    for cand in cands:
        groups.setdefault((cand.pool, cand.tp), []).append(cand)
    floor_replicas = max(1, spec.scaling.min_replicas)

    def lower_bound(key: tuple[str, int]) -> float:
        return floor_replicas * key[1] * inventory.price(key[0])

    best: float | None = None
    spec_key = spec.model_dump_json()
    pruned: list[list[_Candidate]] = []
    for key in sorted(groups, key=lower_bound):
        bound = lower_bound(key)
        if not exhaustive and best is not None and bound > best + 1e-9:
            for cand in groups[key]:
                if not cand.refused:
                    cand.reason = f"costs at least ${bound:.2f}/h, more than ${best:.2f}/h"
            pruned.append(groups[key])
            continue
        for cand in groups[key]:
            _evaluate(cand, spec, inventory, vllm_version, spec_key, limits)
            if cand.cost is not None and (best is None or cand.cost < best):
                best = cand.cost
    return pruned


def pod_resources(
    weights_gib_per_gpu: float, tp: int, multimodal: bool, mm_cache_gb: int
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
    )


def _pod_resources(
    cand: _Candidate, est: Estimate, inventory: Inventory
) -> tuple[Resources | None, str]:
    """The pod for this candidate: vLLM's default multimodal cache when a node can hold it,
    else the largest smaller cache that fits (rendered as --mm-processor-cache-gb); None and
    the resource no node has when even the smallest pod does not fit."""
    multimodal = cand.weights.profile.multimodal
    options = MM_CACHE_OPTIONS_GB if multimodal else (MM_PROCESSOR_CACHE_GB,)
    shortfall = ""
    for cache in options:
        res = pod_resources(est.weights_gib, cand.tp, multimodal, cache)
        missing = inventory.pod_shortfall(
            cand.pool, cand.tp, cpu_millicores=res.cpu_millicores, memory_bytes=res.memory_bytes
        )
        if missing is None:
            return res, ""
        shortfall = missing
    return None, shortfall


def _args(
    cand: _Candidate, name: str, spec: MultimodalModelSpec, model_ref: str | None = None
) -> list[str]:
    assert cand.est is not None
    est = cand.est
    args = [
        model_ref or cand.weights.model_id,
        f"--served-model-name={name}",
        f"--port={OPENAI_PORT}",
        f"--tensor-parallel-size={cand.tp}",
        f"--max-model-len={cand.max_model_len}",
        f"--max-num-seqs={cand.max_num_seqs}",
        f"--max-num-batched-tokens={est.max_num_batched_tokens}",
        f"--gpu-memory-utilization={PLANNER_UTILIZATION}",
    ]
    if cand.weights.quantization_flag:
        args.append(f"--quantization={cand.weights.quantization_flag}")
    if cand.kv != "auto":
        args.append(f"--kv-cache-dtype={cand.kv}")
    limit = _limit_mm(spec, cand.weights.profile)
    if limit:
        args.append("--limit-mm-per-prompt=" + json.dumps(limit, separators=(",", ":")))
    if cand.cap.kwargs:
        args.append("--mm-processor-kwargs=" + json.dumps(cand.cap.kwargs, separators=(",", ":")))
    assert cand.resources is not None
    if cand.weights.profile.multimodal and (
        cand.resources.mm_processor_cache_gb != MM_PROCESSOR_CACHE_GB
    ):
        args.append(f"--mm-processor-cache-gb={cand.resources.mm_processor_cache_gb}")
    if spec.model.revision:
        args.append(f"--revision={spec.model.revision}")
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    args.extend(spec.engine.extra_args)
    return args


def _describe(c: _Candidate) -> str:
    return f"{c.tp}× {c.gpu.name}, weights {c.weights.label}, KV {c.kv}, image cap {c.cap.label}"


def _load(spec: MultimodalModelSpec, allow_local: bool) -> tuple[ModelProfile, bool]:
    """The model's profile, and whether it was read from a directory of this machine."""
    model_id = spec.model.id
    local = not is_catalog_id(model_id) and Path(model_id).expanduser().is_dir()
    if local and not allow_local:
        raise PlanningError(
            f"unknown model {model_id!r}: not a catalog id (the operator does not read paths "
            "of its own filesystem; `mmop plan` and `mmop estimate` read a local directory)",
            reason="UnknownModel",
        )
    try:
        return load_profile(model_id), local
    except ModelError as err:
        raise PlanningError(str(err), reason="UnknownModel") from err


def _check_spec(spec: MultimodalModelSpec, profile: ModelProfile) -> list[str]:
    """Refuse what the model cannot do (bad input); return notes on what the plan adjusts."""
    w = spec.workload
    notes: list[str] = []
    if w.video.enabled and "video" not in modalities.supported_modalities(profile):
        raise PlanningError(f"{profile.id} does not take video", reason="UnsupportedModality")
    if w.audio.enabled and profile.audio is None:
        raise PlanningError(f"{profile.id} does not take audio", reason="UnsupportedModality")
    if w.images.per_request and profile.vision is None:
        raise PlanningError(f"{profile.id} does not take images", reason="UnsupportedModality")
    if profile.needs_remote_code and not spec.model.trust_remote_code:
        auto = (profile.config.get("auto_map") or {}).get("AutoConfig", "")
        raise PlanningError(
            f"{profile.id} needs vLLM to run code from the model repository (its config maps "
            f"AutoConfig to {auto}); vLLM refuses it without --trust-remote-code. Set "
            "spec.model.trustRemoteCode: true to allow it",
            reason="RemoteCodeRequired",
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
            reason="ContextTooLong",
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
) -> Plan:
    """Plan a MultimodalModel on an inventory; raise PlanningError when nothing fits.

    Candidates are evaluated cheapest (GPU type, TP size) first; a group whose lower bound on
    cost (minReplicas × GPUs × price) exceeds the best plan found is skipped, which never changes
    the answer (the cheapest skipped groups are evaluated afterwards for the alternatives).
    `exhaustive=True` evaluates everything (the benchmark's reference).

    `allow_local` lets spec.model.id name a directory of this machine (the CLI); the pod cannot
    serve that path, so the argv names `model_ref` (a Hub id or a path on the pod's model
    volume) or, without one, the placeholder MODEL, and the plan says so.
    """
    if isinstance(manifest, MultimodalModel):
        spec, name = manifest.spec, name or manifest.metadata.name
    else:
        spec, name = manifest, name or "model"
    profile, local = _load(spec, allow_local)
    notes = _check_spec(spec, profile)
    if local and model_ref is None:
        model_ref = LOCAL_MODEL_PLACEHOLDER
        notes.append(
            f"the model was read from the local directory {spec.model.id}; the argv names "
            f"{LOCAL_MODEL_PLACEHOLDER}: replace it with the Hub id or the path on the pod's "
            "model volume (mmop plan --model-ref)"
        )
    for gpu_name in spec.placement.gpu_types:
        resolve_gpu(gpu_name)
    cands = _candidates(spec, profile, inventory)
    if not cands:
        raise PlanningError(
            "no GPU in the cluster matches spec.placement (types "
            f"{', '.join(spec.placement.gpu_types) or 'any'}, at most "
            f"{spec.placement.max_gpus_per_replica} per replica)",
            reason="InsufficientCapacity",
        )
    limits = limits or Limits()
    pruned = _search(cands, spec, inventory, vllm_version, exhaustive, limits)
    feasible = sorted((c for c in cands if c.cost is not None), key=_Candidate.sort_key)
    if not feasible:
        raise PlanningError(_nearest_miss(cands), reason=_infeasible_reason(cands))
    best = feasible[0]
    # The cheapest groups the bound skipped still belong among the alternatives.
    spec_key = spec.model_dump_json()
    for group in pruned[:PRUNED_GROUPS_FOR_ALTERNATIVES]:
        for cand in group:
            _evaluate(cand, spec, inventory, vllm_version, spec_key, limits)
    feasible = sorted((c for c in cands if c.cost is not None), key=_Candidate.sort_key)
    assert best.est is not None and best.perf is not None and best.replicas is not None
    assert best.resources is not None
    alts = _alternatives(best, feasible, cands, alternatives)
    native_tokens = native_image_tokens(profile, spec) if best.image_tokens else None
    native_cost: float | None = None
    if native_tokens is not None and best.image_tokens < native_tokens:
        native = [c for c in feasible if c.image_tokens >= native_tokens]
        if not native:  # the bound skipped them: price native images before saying they cost
            for cand in cands:
                if cand.cost is not None or cand.refused:
                    continue
                if image_tokens(cand.weights.profile, spec, cand.cap.kwargs) >= native_tokens:
                    _evaluate(cand, spec, inventory, vllm_version, spec_key, limits)
            feasible = sorted((c for c in cands if c.cost is not None), key=_Candidate.sort_key)
            native = [c for c in feasible if c.image_tokens >= native_tokens]
        if native:
            native_cost = round(native[0].cost or 0.0, 4)
            notes.append(
                f"images are capped at {best.image_tokens} tokens ({best.cap.label}; native "
                f"{native_tokens}, allowed by the spec's quality floor); native size would cost "
                f"${native_cost:.2f}/h"
            )
        else:
            notes.append(
                f"images are capped at {best.image_tokens} tokens ({best.cap.label}; native "
                f"{native_tokens}, allowed by the spec's quality floor); nothing fits at native "
                "size"
            )
    if best.resources.mm_processor_cache_gb != MM_PROCESSOR_CACHE_GB and profile.multimodal:
        notes.append(
            f"--mm-processor-cache-gb={best.resources.mm_processor_cache_gb} (vLLM's default "
            f"{MM_PROCESSOR_CACHE_GB}) so the pod fits the memory of a {best.gpu.name} node"
        )
    if best.est.dtype != best.weights.profile.dtype:
        notes.append(
            f"vLLM runs the model in {best.est.dtype} on {best.gpu.name} (the checkpoint is "
            f"{best.weights.profile.dtype}; compute capability {best.gpu.compute_capability}): "
            "memory is planned for that"
        )
    if best.weights.model_id != spec.model.id:
        notes.append(f"serves the listed pre-quantized checkpoint {best.weights.model_id}")
    product = best.product
    explanation = (
        f"{best.replicas} replica(s) of {best.tp}× {best.gpu.name} "
        f"(${best.cost:.2f}/h): weights {best.weights.label}, KV cache {best.kv}, "
        f"{best.est.kv_cache_tokens:,} KV tokens per replica, up to "
        f"{best.perf.concurrency} requests in flight per replica within "
        f"{round(100 * spec.workload.slo.margin)} % of the SLO (--max-num-seqs "
        f"{best.max_num_seqs}); image cap {best.cap.label}"
        + (f" ({best.image_tokens} tokens per image)" if best.image_tokens else "")
        + f"; max_model_len {best.max_model_len}."
    )
    if limits.demand is not None:
        explanation += (
            f" Sized for the {limits.demand} requests in flight the engines showed; "
            f"{best.peak_replicas} replica(s) carry spec.workload's peak."
        )
    return Plan(
        model=model_ref or best.weights.model_id,
        served_model_name=name,
        gpu=best.gpu.name,
        gpu_product=product,
        tensor_parallel_size=best.tp,
        replicas=best.replicas,
        quantization=best.weights.label,
        kv_cache_dtype=best.kv,
        image_cap=best.cap.label,
        max_model_len=best.max_model_len,
        max_num_seqs=best.max_num_seqs,
        max_num_batched_tokens=best.est.max_num_batched_tokens,
        gpu_memory_utilization=PLANNER_UTILIZATION,
        limit_mm_per_prompt=_limit_mm(spec, best.weights.profile),
        mm_processor_kwargs=best.cap.kwargs,
        max_tokens_per_image=best.image_tokens or None,
        tokens_per_image=best.image_tokens or None,
        tokens_per_video=best.tokens_per_video or None,
        tokens_per_audio=best.tokens_per_audio or None,
        native_tokens_per_image=native_tokens,
        native_cost_per_hour_usd=native_cost,
        trust_remote_code=spec.model.trust_remote_code,
        notes=notes,
        vllm_version=vllm_version,
        args=_args(best, name, spec, None if model_ref is None else model_ref),
        resources=best.resources,
        memory=best.est,
        performance=Performance(
            concurrency_per_replica=best.perf.concurrency,
            requests_per_second_per_replica=round(best.perf.requests_per_second, 3),
            ttft_p95_seconds=round(best.perf.ttft_p95_seconds, 4),
            tpot_p95_seconds=round(best.perf.tpot_p95_seconds, 5),
        ),
        cost_per_hour_usd=round(best.cost or 0.0, 4),
        config=best.key,
        alternatives=alts,
        explanation=explanation,
    )


def _alternatives(
    best: _Candidate, feasible: Sequence[_Candidate], cands: Sequence[_Candidate], n: int
) -> list[Alternative]:
    """The runners-up: one per (GPU, TP, weights) first, then the chosen configuration's image
    cap and KV-cache variants, then configurations that do not work, each with its reason."""
    out: list[Alternative] = []
    assert best.cost is not None

    def why(c: _Candidate) -> str:
        assert c.cost is not None and best.cost is not None
        if c.cost > best.cost + 1e-9:
            return f"costs ${c.cost:.2f}/h, more than ${best.cost:.2f}/h"
        return "same cost; lost the tie-break (GPUs, image fidelity, weights, KV, headroom)"

    seen_config: set[tuple[str, int, str]] = {(best.gpu.name, best.tp, best.weights.label)}
    seen: set[str] = {best.key}
    for c in feasible[1:]:
        config = (c.gpu.name, c.tp, c.weights.label)
        if config in seen_config:
            continue
        seen_config.add(config)
        seen.add(c.key)
        out.append(_alt(c, why(c)))
        if len(out) >= n:
            break
    variants = 0
    for c in feasible[1:]:
        if variants >= VARIANT_ALTERNATIVES:
            break
        same = (c.gpu.name, c.tp, c.weights.label) == (best.gpu.name, best.tp, best.weights.label)
        if same and c.key not in seen and (c.kv != best.kv or c.cap.label != best.cap.label):
            seen.add(c.key)
            out.append(_alt(c, why(c)))
            variants += 1
    failed = 0
    for c in cands:
        config = (c.gpu.name, c.tp, c.weights.label)
        if c.cost is None and config not in seen_config and c.reason:
            seen_config.add(config)
            out.append(_alt(c, c.reason))
            failed += 1
            if failed >= n:
                break
    return out


def _alt(c: _Candidate, reason: str) -> Alternative:
    return Alternative(
        gpu=c.gpu.name,
        tensor_parallel_size=c.tp,
        quantization=c.weights.label,
        kv_cache_dtype=c.kv,
        image_cap=c.cap.label,
        tokens_per_image=c.image_tokens or None,
        replicas=c.replicas,
        cost_per_hour_usd=None if c.cost is None else round(c.cost, 4),
        reason=reason,
    )


def _infeasible_reason(cands: Sequence[_Candidate]) -> str:
    if any(
        c.est is None and ("cluster has room" in c.reason or "can hold the pod" in c.reason)
        for c in cands
    ):
        return "InsufficientCapacity"
    return "Infeasible"


def _nearest_miss(cands: Sequence[_Candidate]) -> str:
    """Describe the candidate that came closest, and what would make something fit."""

    def closeness(c: _Candidate) -> tuple[int, float]:
        if "cluster has room" in c.reason or "can hold the pod" in c.reason:
            return (0, 0.0)
        if "replicas" in c.reason:
            return (1, 0.0)
        if "latency" in c.reason:
            return (2, 0.0)
        if "max seq len" in c.reason or "KV cache" in c.reason:
            return (3, 0.0)
        if c.refused:
            return (5, 0.0)
        return (4, -c.gpu.memory_gib * c.tp)

    nearest = min(cands, key=closeness)
    hints = []
    if any("weights take" in c.reason or "No available memory" in c.reason for c in cands):
        hints.append("a GPU with more memory, more GPUs per replica, or fp8/int4 weights")
    if any("max seq len" in c.reason for c in cands):
        hints.append("a shorter contextLength, fewer or smaller images, or an fp8 KV cache")
    if any("latency" in c.reason for c in cands):
        hints.append("looser latency targets or a faster GPU")
    if any("replicas" in c.reason for c in cands):
        hints.append("a higher scaling.maxReplicas or more GPUs in the cluster")
    return f"nothing fits; nearest miss: {_describe(nearest)}: {nearest.reason}. " + (
        "Would fit with: " + "; or ".join(hints) + "." if hints else ""
    )
