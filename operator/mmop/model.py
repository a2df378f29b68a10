"""Model profiles built from Hugging Face (or Mistral-native) configuration files.

A :class:`ModelProfile` is everything the estimator needs to know about a model: the language
model's shape (layers, heads, per-layer attention type, MoE), the vision tower and projector, the
audio encoder, the checkpoint's dtype and quantization, and parameter counts computed from the
config. Nothing here is typed in per model: each family's config layout is parsed and its
parameters are counted from the shapes, the way the modules are built.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mmop import capabilities
from mmop.vllm import PINNED_VLLM_VERSION

CATALOG_MODELS_DIR = Path(__file__).parent / "catalog" / "models"

Json = Mapping[str, Any]

ModelOrigin = Literal["catalog", "hub", "directory", "configmap"]

# The files of a model repository mmop reads, in the order they are merged: the model config
# (Mistral's native layout has params.json instead), then what the processor is built from.
CONFIG_FILES = ("config.json", "params.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
# ModelOpt 0.29 and earlier keep the quantization config beside config.json; vLLM reads it when
# config.json has none (vLLM 0.32.0 transformers_utils/config.py:888-900).
QUANT_CONFIG_FILE = "hf_quant_config.json"
MODEL_FILES = (*CONFIG_FILES, *PROCESSOR_FILES, VIDEO_PROCESSOR_FILE, QUANT_CONFIG_FILE)


# Families whose images vLLM sizes with a Qwen2-VL image processor (size / min_pixels /
# max_pixels of preprocessor_config.json), and the largest image, in merged-patch units, that the
# published Qwen vision models set there: Qwen2.5-VL max_pixels 12,845,056 = 16,384 x 28 x 28,
# Qwen3-VL / Qwen3.5 size.longest_edge 16,777,216 = 16,384 x 32 x 32 (catalog preprocessor configs).
QWEN_PROCESSOR_FAMILIES = frozenset(
    {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_omni", "qwen2_5_omni"}
)
QWEN_PUBLISHED_MAX_UNITS = 16384

_NATIVE_TYPES_FILE = Path(__file__).parent / "catalog" / "native_config_types.txt"
NATIVE_CONFIG_TYPES = frozenset(
    line.strip()
    for line in _NATIVE_TYPES_FILE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
"""Model types whose config class ships with transformers or with vLLM's own config registry at
the pinned release (catalog/native_config_types.txt), so an ``auto_map`` in their config does
not make vLLM ask for remote code."""


class ModelError(ValueError):
    """A model id that is not in the catalog, or a configuration mmop cannot read."""


class AttentionKind(StrEnum):
    FULL = "full"
    SLIDING = "sliding"
    LINEAR = "linear"
    CROSS = "cross"
    MLA = "mla"


class Layer(BaseModel):
    """Attention of one language-model layer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AttentionKind = Field(description="Attention type of the layer")
    window_tokens: int | None = Field(default=None, description="Sliding window size in tokens")


class MoE(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_experts: int = Field(description="Routed experts per MoE layer")
    experts_per_token: int = Field(description="Experts activated per token")
    expert_intermediate_size: int = Field(description="Intermediate size of one expert")
    shared_expert_intermediate_size: int = Field(default=0, description="Shared expert size")
    moe_layers: int = Field(description="Number of layers whose MLP is an MoE block")


class LinearAttention(BaseModel):
    """Gated DeltaNet layers' state (Qwen3-Next, Qwen3.5): what one request keeps per layer in
    place of a KV cache (vLLM 0.32.0 layers/mamba/mamba_utils.py:280-301)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_key_heads: int
    num_value_heads: int
    key_head_dim: int
    value_head_dim: int
    conv_kernel: int
    ssm_state_bytes: int | None = Field(
        default=None, description="Bytes per element of the recurrent state; None: the model's"
    )

    def state_bytes(self, tp: int, dtype_bytes: float) -> int:
        """One layer's state for one request on one GPU: the causal-convolution window over q, k
        and v in the model's dtype, and the recurrent state (value heads × v × k)."""
        conv_dim = 2 * self.num_key_heads * self.key_head_dim
        conv_dim += self.num_value_heads * self.value_head_dim
        conv = conv_dim // tp * (self.conv_kernel - 1) * dtype_bytes
        ssm = self.num_value_heads // tp * self.value_head_dim * self.key_head_dim
        return int(conv + ssm * (self.ssm_state_bytes or dtype_bytes))


class TextModel(BaseModel):
    """The decoder language model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    layers: tuple[Layer, ...]
    moe: MoE | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    linear_attention: LinearAttention | None = None
    attention_params: int = Field(default=0, description="All layers' attention projections")
    dense_mlp_params: int = Field(default=0, description="All dense (non-MoE) MLPs")
    mtp_layers: int = Field(
        default=0,
        description="Multi-token-prediction layers the checkpoint ships (mtp_num_hidden_layers, "
        "num_nextn_predict_layers): vLLM's MTP drafter for speculative decoding",
    )
    mtp_params: int = Field(
        default=0,
        description="Parameters of the MTP module: its decoder layers (full attention and the "
        "model's MLP or MoE block), the input projection and norms; the embedding and LM head "
        "are shared with the model",
    )

    @property
    def shared_expert_params(self) -> int:
        """Parameters of the shared experts' matrices, all MoE layers."""
        if self.moe is None:
            return 0
        m = self.moe
        return m.moe_layers * 3 * self.hidden_size * m.shared_expert_intermediate_size

    @property
    def routed_expert_params(self) -> int:
        """Parameters of the routed experts' matrices (gate, up, down), all MoE layers."""
        if self.moe is None:
            return 0
        m = self.moe
        return m.moe_layers * m.num_experts * 3 * self.hidden_size * m.expert_intermediate_size


class VisionTower(BaseModel):
    """The image/video encoder and the projector into the language model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(description="Encoder family: clip, siglip, qwen2_vl, internvit, pixtral, …")
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    patch_size: int
    image_size: int | None = Field(default=None, description="Native input side in pixels")
    spatial_merge_size: int = Field(default=1, description="Patches merged per output token side")
    temporal_patch_size: int = Field(default=1, description="Frames per temporal patch")
    gated_mlp: bool = Field(default=False, description="SwiGLU MLP (3 matrices) instead of 2")
    full_attention_layers: int = Field(description="Layers attending over all patches of an item")
    params: int = Field(description="Encoder parameters")
    projector_params: int = Field(description="Projector/merger/resampler parameters")
    item_tokens_bound: int | None = Field(
        default=None,
        description="Generic path only: an upper bound on one image's placeholder tokens "
        "(the family's processor is not known, so every image is costed at the bound)",
    )
    item_tiles_bound: int = Field(
        default=1, description="Generic path only: tiles (crops, slices) of that bound"
    )
    positions_per_token_bound: float | None = Field(
        default=None,
        description="Generic path only: an upper bound on encoder input positions per "
        "placeholder token (a fixed-size tower pooling or resampling its patches encodes many "
        "per token), so the encoder profile is bounded whatever the item size",
    )


class AudioEncoder(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_mel_bins: int
    max_source_positions: int
    tokens_per_second: float = Field(description="LM tokens per second of audio")
    params: int
    projector_params: int


class CheckpointQuantization(BaseModel):
    """The checkpoint's quantization_config, as far as memory is concerned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(description="vLLM quantization method: awq, gptq, fp8, compressed-tensors…")
    weight_bits: int = Field(description="Bits per quantized weight")
    group_size: int | None = Field(default=None, description="Weights per scale group")
    unquantized_modules: tuple[str, ...] = Field(default=(), description="Modules left as is")
    expert_bits: int | None = Field(
        default=None,
        description="ModelOpt MIXED_PRECISION: the MLPs' (experts', lm_head's) NVFP4 bits, the "
        "other listed layers at weight_bits",
    )
    vision_quantized: bool | None = Field(
        default=None, description="Whether the vision tower is among the quantized layers"
    )
    float_weights: bool = Field(
        default=False,
        description="compressed-tensors: the weights are floating-point (FP4: NVFP4 or MXFP4)",
    )


class ParamCounts(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding: int = Field(description="Input embedding (and untied LM head) parameters")
    language_model: int = Field(description="Decoder layers and final norm, without embeddings")
    vision: int = Field(description="Vision encoder and projector")
    audio: int = Field(description="Audio encoder and projector")
    other: int = Field(default=0, description="Loaded by transformers but not served by vLLM")

    @property
    def served(self) -> int:
        """Parameters vLLM loads to serve the model."""
        return self.embedding + self.language_model + self.vision + self.audio

    @property
    def total(self) -> int:
        return self.served + self.other


class ModelProfile(BaseModel):
    """What the estimator needs to know about one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    family: str = Field(description="Token-accounting family, e.g. qwen2_vl, llava, gemma3")
    architecture: str
    dtype: str = Field(description="Native weight dtype: bfloat16, float16 or float32")
    text: TextModel
    vision: VisionTower | None = None
    audio: AudioEncoder | None = None
    quantization: CheckpointQuantization | None = None
    params: ParamCounts
    config: dict[str, Any] = Field(default_factory=dict, repr=False, description="Raw config")
    preprocessor: dict[str, Any] = Field(default_factory=dict, repr=False)
    origin: ModelOrigin = Field(
        default="catalog",
        description="Where the config came from: catalog, hub, directory or configmap",
    )
    commit: str | None = Field(
        default=None, description="The repository commit the config was read at (the Hub)"
    )

    @property
    def multimodal(self) -> bool:
        return self.vision is not None or self.audio is not None

    @property
    def processor_config_missing(self) -> bool:
        """A Qwen-processor family whose preprocessor_config.json was not among the files read.
        vLLM sizes its images from that file; the processor class's own default (1,280 units of
        merged patches) is far below what every published Qwen vision model sets (16,384), so
        images are bounded by the published figure instead (QWEN_PUBLISHED_MAX_UNITS) and the
        estimate is approximate."""
        if self.vision is None or self.family not in QWEN_PROCESSOR_FAMILIES:
            return False
        return not any(k != "video" for k in self.preprocessor)

    @property
    def approximate(self) -> bool:
        """Read by the generic path: a text model type mmop has no family for, sized from the
        standard config keys alone (what it may miss: attention sinks, linear-attention state,
        unusual layer layouts), or a multimodal family mmop has no processor rule for, whose
        encoder and image tokens are upper bounds (GENERIC_MM_FAMILY), or a family whose
        processor config is missing (processor_config_missing). Plans keep a margin
        (planner.APPROXIMATE_KV_SCALE)."""
        if self.family == GENERIC_MM_FAMILY or self.processor_config_missing:
            return True
        return self.family == "text" and self.text.model_type not in GENERIC_KNOWN_TYPES

    @property
    def approximate_what(self) -> str:
        """What the generic path read, for messages: the model type and how it was read."""
        if self.family == GENERIC_MM_FAMILY:
            return (
                f"model_type {self.config.get('model_type')!r} is a multimodal family mmop has no "
                "processor rule for, read by the generic path (encoder and image tokens are "
                "upper bounds)"
            )
        if self.processor_config_missing:
            return (
                "no preprocessor_config.json was read: images are bounded by the largest size "
                f"published Qwen vision models set ({QWEN_PUBLISHED_MAX_UNITS:,} tokens), not the "
                "processor class default"
            )
        return (
            f"model_type {self.text.model_type!r} is read by the generic path (standard config "
            "keys only)"
        )

    @property
    def max_position_embeddings(self) -> int:
        return self.text.max_position_embeddings

    @property
    def needs_remote_code(self) -> bool:
        """Whether vLLM needs ``--trust-remote-code`` to read this model's config.

        transformers' ``AutoConfig`` (which vLLM's ``get_config`` calls for Hugging Face configs)
        refuses a config whose ``auto_map`` names an ``AutoConfig`` class when its ``model_type``
        has no config class of its own in transformers or in vLLM's config registry, unless
        remote code is trusted. The catalog's InternVL chat, Phi-3.5-vision and MiniCPM-V
        configs are such; the acceptance tier (tests/engine/test_vllm_acceptance.py) checks the
        rule against the pinned vLLM for every catalog model.
        """
        auto_map = self.config.get("auto_map")
        if not isinstance(auto_map, dict) or "AutoConfig" not in auto_map:
            return False
        return str(self.config.get("model_type", "")) not in NATIVE_CONFIG_TYPES


# ----------------------------------------------------------------------------------------------
# Defaults transformers applies when a config omits a field (only the fields mmop reads).

_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    },
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096 * 32,
        "tie_word_embeddings": False,
        "sliding_window": 4096,
    },
    "qwen2": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
    },
    "gemma3_text": {
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
}

# Text model types whose architecture mmop knows, checked against start-ups of catalog models
# (bench/estimator); the rest go through the generic path.
GENERIC_KNOWN_TYPES = frozenset(_TEXT_DEFAULTS) | frozenset({"qwen3", "qwen3_moe"})

_VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip_vision_model": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
        "num_channels": 3,
    },
    "siglip_vision_model": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
    },
}

_AUDIO_DEFAULTS: dict[str, Any] = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}


def _with_defaults(cfg: Json | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in (cfg or {}).items():
        # An explicit null keeps the default, except for a sliding window, where null means none.
        if value is not None or key not in merged or key == "sliding_window":
            merged[key] = value
    return merged


def _get(cfg: Json, *names: str, default: Any = None) -> Any:
    for name in names:
        if cfg.get(name) is not None:
            return cfg[name]
    return default


# ----------------------------------------------------------------------------------------------
# Language model


def _text_model(cfg: Json, model_type: str | None = None) -> tuple[TextModel, int, int]:
    """Build the decoder description; returns it with (embedding params, layer params)."""
    mtype = model_type or cfg.get("model_type") or "llama"
    base = _TEXT_DEFAULTS.get(mtype, _TEXT_DEFAULTS["qwen2" if "qwen" in mtype else "llama"])
    c = _with_defaults(cfg, base)
    hidden = int(c["hidden_size"])
    layers = int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv_heads = int(_get(c, "num_key_value_heads", default=heads))
    head_dim = int(_get(c, "head_dim", default=hidden // heads))
    inter = int(c["intermediate_size"])
    vocab = int(c["vocab_size"])
    tie = bool(c.get("tie_word_embeddings", False))
    max_pos = int(_get(c, "max_position_embeddings", default=2048))

    layer_list = _layer_types(c, layers)
    moe = _moe(c, layers)
    # Llama 4: the dense layers' MLP has its own width (vLLM 0.32.0 models/llama4.py:341-352);
    # Gemma 4: every layer runs its dense MLP, and an MoE block beside it when the config has
    # num_experts (models/gemma4.py:630-650, 738-755).
    dense_inter = int(c.get("intermediate_size_mlp") or inter)
    dense_beside_moe = mtype.startswith("gemma4")

    # Attention projections; Qwen2-family attention has q/k/v biases.
    qkv_bias = mtype in {
        "qwen2",
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen2_vl_text",
        "qwen2_5_vl_text",
    } or bool(c.get("attention_bias", False))
    attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
    if qkv_bias:
        attn += heads * head_dim + 2 * kv_heads * head_dim
    if mtype.startswith("qwen3") or mtype.startswith("gemma3"):
        attn += 2 * head_dim  # q_norm / k_norm
    if c.get("attn_output_gate", mtype.startswith(("qwen3_next", "qwen3_5"))):
        # Qwen3-Next / Qwen3.5 gated attention: q_proj also yields the output gate
        # (vLLM 0.32.0 models/qwen3_next.py:315-320).
        attn += hidden * heads * head_dim
    norms = (4 if mtype.startswith("gemma3") else 2) * hidden
    dense_mlp = 3 * hidden * dense_inter
    # Linear-attention layers (Gated DeltaNet) replace attention by their own projections.
    linear = sum(1 for layer in layer_list if layer.kind == AttentionKind.LINEAR)
    attn_total = (layers - linear) * attn + linear * (_gated_delta_net_params(c, hidden) or attn)
    per_layer_params = 0
    dense_mlp_total = layers * dense_mlp
    moe_mlp = 0
    if moe is None:
        per_layer_params = attn_total + layers * (dense_mlp + norms)
    else:
        expert = 3 * hidden * moe.expert_intermediate_size
        moe_mlp = moe.num_experts * expert + hidden * moe.num_experts
        if moe.shared_expert_intermediate_size:
            moe_mlp += 3 * hidden * moe.shared_expert_intermediate_size
            if c.get("shared_expert_intermediate_size"):
                # Qwen-MoE's sigmoid gate on the shared expert (vLLM 0.32.0
                # models/qwen2_moe.py:148-153, qwen3_next.py:197-202); DeepSeek / GLM / Kimi's
                # n_shared_experts and Llama 4's shared expert have none.
                moe_mlp += hidden
        if mtype.startswith(("glm4_moe", "glm4v_moe")) or c.get("topk_method") == "noaux_tc":
            # the router's per-expert score-correction bias (vLLM 0.32.0 models/glm4_moe.py:148,
            # deepseek_v2.py:327-330)
            moe_mlp += moe.num_experts
        per_layer_params = attn_total + layers * norms + moe.moe_layers * moe_mlp
        dense_layers = layers if dense_beside_moe else layers - moe.moe_layers
        per_layer_params += dense_layers * dense_mlp
        dense_mlp_total = dense_layers * dense_mlp
    lm_params = per_layer_params + hidden  # final norm
    embed = vocab * hidden * (1 if tie else 2)
    # The MTP module (vLLM 0.32.0 models/qwen3_5_mtp.py l. 66-141, deepseek_mtp.py): per layer a
    # full-attention decoder layer with the model's MLP (the MoE block in an MoE model), then
    # fc/eh_proj (2 × hidden → hidden) and three norms; embedding and LM head are the model's.
    mtp = int(_get(c, "mtp_num_hidden_layers", "num_nextn_predict_layers", default=0) or 0)
    mtp_layer = attn + norms + (moe_mlp if moe is not None else dense_mlp)
    mtp_params = mtp * mtp_layer + 2 * hidden * hidden + 3 * hidden if mtp else 0

    text = TextModel(
        model_type=mtype,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=vocab,
        tie_word_embeddings=tie,
        max_position_embeddings=max_pos,
        layers=tuple(layer_list),
        moe=moe,
        kv_lora_rank=int(c["kv_lora_rank"]) if c.get("kv_lora_rank") else None,
        qk_rope_head_dim=int(c["qk_rope_head_dim"]) if c.get("qk_rope_head_dim") else None,
        linear_attention=_linear_attention(c) if linear else None,
        attention_params=attn_total,
        dense_mlp_params=dense_mlp_total,
        mtp_layers=mtp,
        mtp_params=mtp_params,
    )
    return text, embed, lm_params


def _linear_attention(c: Json) -> LinearAttention | None:
    try:
        nk, nv = int(c["linear_num_key_heads"]), int(c["linear_num_value_heads"])
        dk, dv = int(c["linear_key_head_dim"]), int(c["linear_value_head_dim"])
    except (KeyError, TypeError, ValueError):
        return None
    # Qwen3.5 states its recurrent state's dtype (vLLM 0.32.0 models/config.py:858-875).
    ssm = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(c.get("mamba_ssm_dtype")))
    return LinearAttention(
        num_key_heads=nk,
        num_value_heads=nv,
        key_head_dim=dk,
        value_head_dim=dv,
        conv_kernel=int(c.get("linear_conv_kernel_dim") or 4),
        ssm_state_bytes=ssm,
    )


def _gated_delta_net_params(c: Json, hidden: int) -> int:
    """One Gated DeltaNet layer (Qwen3-Next, Qwen3.5; vLLM 0.32.0
    layers/mamba/gdn/qwen_gdn_linear_attn.py:483-590): q/k/v/z and b/a input projections, a
    depthwise causal convolution over q, k and v, per-head A_log and dt_bias, a gated RMSNorm and
    the output projection, all without biases. 0 when the config does not state the shape."""
    try:
        nk, nv = int(c["linear_num_key_heads"]), int(c["linear_num_value_heads"])
        dk, dv = int(c["linear_key_head_dim"]), int(c["linear_value_head_dim"])
    except (KeyError, TypeError, ValueError):
        return 0
    kernel = int(c.get("linear_conv_kernel_dim") or 4)
    key, value = nk * dk, nv * dv
    conv = (2 * key + value) * kernel
    return hidden * (2 * key + 2 * value) + hidden * 2 * nv + conv + 2 * nv + dv + value * hidden


def _layer_types(c: Json, layers: int) -> list[Layer]:
    window = c.get("sliding_window")
    chunk = c.get("attention_chunk_size")
    if chunk and str(c.get("model_type", "")).startswith("llama4"):
        # Llama 4: RoPE layers attend within chunks of attention_chunk_size tokens, every
        # no_rope_layer_interval-th layer (NoPE) attends globally (vLLM 0.32.0
        # models/llama4.py:184-185, 251-252). vLLM keeps a chunked layer's KV like a sliding
        # window's (at most one chunk), which this models it as.
        interval = int(c.get("no_rope_layer_interval") or 4)
        rope = c.get("no_rope_layers")
        if not (isinstance(rope, list) and len(rope) == layers):
            rope = [int((i + 1) % interval != 0) for i in range(layers)]
        return [
            Layer(kind=AttentionKind.SLIDING, window_tokens=int(chunk))
            if rope[i]
            else Layer(kind=AttentionKind.FULL)
            for i in range(layers)
        ]
    types = c.get("layer_types")
    full_every = c.get("full_attention_interval")
    if not isinstance(types, list) and full_every and c.get("linear_num_value_heads"):
        # Qwen3-Next: every full_attention_interval-th layer is full attention, the rest are
        # Gated DeltaNet (vLLM 0.32.0 models/qwen3_next.py, layer_types derived from it).
        types = [
            "full_attention" if (i + 1) % int(full_every) == 0 else "linear_attention"
            for i in range(layers)
        ]
    if isinstance(types, list) and len(types) == layers:
        out = []
        for t in types:
            if t in ("sliding_attention", "sliding", "local"):
                out.append(Layer(kind=AttentionKind.SLIDING, window_tokens=int(window or 4096)))
            elif t in ("linear_attention", "mamba"):
                out.append(Layer(kind=AttentionKind.LINEAR))
            else:
                out.append(Layer(kind=AttentionKind.FULL))
        return out
    pattern = c.get("sliding_window_pattern") or c.get("_sliding_window_pattern")
    if pattern and window:
        # Gemma 3: every `pattern`-th layer is global, the others slide.
        return [
            Layer(kind=AttentionKind.FULL)
            if (i + 1) % int(pattern) == 0
            else Layer(kind=AttentionKind.SLIDING, window_tokens=int(window))
            for i in range(layers)
        ]
    uses_window = c.get("use_sliding_window")
    if window and uses_window is not False and c.get("model_type") in {"mistral", "mixtral"}:
        return [Layer(kind=AttentionKind.SLIDING, window_tokens=int(window))] * layers
    if window and uses_window:
        max_window_layers = int(c.get("max_window_layers", layers))
        return [
            Layer(kind=AttentionKind.SLIDING, window_tokens=int(window))
            if i >= max_window_layers
            else Layer(kind=AttentionKind.FULL)
            for i in range(layers)
        ]
    return [Layer(kind=AttentionKind.FULL)] * layers


def _moe_layer_indexes(c: Json, layers: int) -> list[int]:
    """Layers whose MLP is an MoE block, from the keys the families use: Qwen's
    ``decoder_sparse_step``/``mlp_only_layers``, DeepSeek's ``first_k_dense_replace``/
    ``moe_layer_freq``, Llama 4's ``interleave_moe_layer_step``."""
    if c.get("moe_layers") and isinstance(c["moe_layers"], list):
        return [int(i) for i in c["moe_layers"] if 0 <= int(i) < layers]
    sparse_step = int(c.get("decoder_sparse_step") or c.get("interleave_moe_layer_step") or 1)
    mlp_only = set(c.get("mlp_only_layers") or [])
    first_dense = int(c.get("first_k_dense_replace") or 0)
    freq = int(c.get("moe_layer_freq") or 1)
    return [
        i
        for i in range(layers)
        if i not in mlp_only
        and (i + 1) % sparse_step == 0
        and i >= first_dense
        and (i - first_dense) % freq == 0
    ]


def _moe(c: Json, layers: int) -> MoE | None:
    experts = _get(c, "num_experts", "num_local_experts", "n_routed_experts")
    if not experts:
        return None
    expert_inter = int(_get(c, "moe_intermediate_size", "intermediate_size"))
    shared = int(c.get("shared_expert_intermediate_size") or 0)
    if not shared and c.get("n_shared_experts"):
        shared = int(c["n_shared_experts"]) * expert_inter  # DeepSeek, GLM-4.5, Kimi
    if not shared and str(c.get("model_type", "")).startswith("llama4"):
        shared = expert_inter  # Llama 4: one shared expert the size of a routed one
    return MoE(
        num_experts=int(experts),
        experts_per_token=int(
            _get(c, "num_experts_per_tok", "num_experts_per_token", "top_k_experts", default=1)
        ),
        expert_intermediate_size=expert_inter,
        shared_expert_intermediate_size=shared,
        moe_layers=len(_moe_layer_indexes(c, layers)),
    )


# ----------------------------------------------------------------------------------------------
# Vision encoders: parameter counts from shapes


def _vit_layer_params(d: int, dff: int, *, gated: bool, bias: bool, norm_bias: bool) -> int:
    attn = 4 * d * d + (4 * d if bias else 0)
    mlp = (3 if gated else 2) * d * dff + ((2 * dff + d if gated else dff + d) if bias else 0)
    norms = 2 * d * (2 if norm_bias else 1)
    return attn + mlp + norms


def _clip_like(vc: Json, kind: str, *, pos_tokens: int | None = None) -> tuple[dict[str, Any], int]:
    defaults = _VISION_DEFAULTS.get(
        "siglip_vision_model" if kind == "siglip" else "clip_vision_model"
    )
    c = _with_defaults(vc, defaults or {})
    d, dff = int(c["hidden_size"]), int(c["intermediate_size"])
    layers, patch = int(c["num_hidden_layers"]), int(c["patch_size"])
    image = int(c["image_size"])
    n_pos = pos_tokens if pos_tokens is not None else (image // patch) ** 2
    params = layers * _vit_layer_params(d, dff, gated=False, bias=True, norm_bias=True)
    params += 3 * patch * patch * d + (d if kind == "siglip" else 0)  # patch conv (+bias)
    if kind == "clip":
        n_pos += 1
        params += d + 2 * 2 * d  # class embedding, pre and post layernorm
    else:
        params += 2 * d  # post layernorm
    params += n_pos * d
    return c, params


def _vision_tower(
    kind: str,
    c: Json,
    params: int,
    projector: int,
    *,
    layers_key: str = "num_hidden_layers",
    merge: int = 1,
    temporal: int = 1,
    gated: bool = False,
    full_attention_layers: int | None = None,
) -> VisionTower:
    layers = int(c[layers_key])
    return VisionTower(
        kind=kind,
        num_layers=layers,
        hidden_size=int(c["hidden_size"]),
        intermediate_size=int(c["intermediate_size"]),
        num_heads=int(_get(c, "num_attention_heads", "num_heads", default=16)),
        patch_size=int(c["patch_size"]),
        image_size=int(c["image_size"]) if c.get("image_size") else None,
        spatial_merge_size=merge,
        temporal_patch_size=temporal,
        gated_mlp=gated,
        full_attention_layers=layers if full_attention_layers is None else full_attention_layers,
        params=params,
        projector_params=projector,
    )


def _qwen_vit(vc: Json, lm_hidden: int, model_type: str) -> VisionTower:
    """Qwen2-VL, Qwen2.5-VL (and the Omni thinker) and Qwen3-VL vision transformers."""
    if model_type == "qwen2_vl":
        d = int(_get(vc, "embed_dim", default=1280))
        dff = int(d * float(vc.get("mlp_ratio", 4)))
        gated = False
    else:
        d = int(_get(vc, "hidden_size", "embed_dim", default=1280))
        dff = int(_get(vc, "intermediate_size", default=3420))
        gated = model_type in ("qwen2_5_vl", "qwen2_5_omni")
    layers = int(_get(vc, "depth", "num_hidden_layers", default=32))
    patch = int(vc.get("patch_size", 14))
    temporal = int(vc.get("temporal_patch_size", 2))
    merge = int(vc.get("spatial_merge_size", 2))
    in_ch = int(_get(vc, "in_channels", "in_chans", default=3))
    out = int(_get(vc, "out_hidden_size", default=lm_hidden))
    heads = int(_get(vc, "num_heads", default=16))
    is_qwen3 = model_type.startswith("qwen3")
    params = layers * _vit_layer_params(d, dff, gated=gated, bias=True, norm_bias=not gated)
    params += in_ch * temporal * patch * patch * d + (d if is_qwen3 else 0)
    merged = d * merge * merge

    def merger(norm_width: int) -> int:
        return norm_width * (1 if gated else 2) + merged * merged + merged + merged * out + out

    projector = merger(d)
    if is_qwen3:
        params += int(vc.get("num_position_embeddings", 2304)) * d
        deepstack = len(vc.get("deepstack_visual_indexes") or [])
        projector += deepstack * merger(merged)
    window = vc.get("fullatt_block_indexes")
    c = {
        "hidden_size": d,
        "intermediate_size": dff,
        "num_hidden_layers": layers,
        "num_heads": heads,
        "patch_size": patch,
    }
    return _vision_tower(
        model_type,
        c,
        params,
        projector,
        merge=merge,
        temporal=temporal,
        gated=gated,
        full_attention_layers=len(window) if window else layers,
    )


def _internvit(vc: Json, lm_hidden: int, downsample: float, image_size: int) -> VisionTower:
    d, dff = int(vc["hidden_size"]), int(vc["intermediate_size"])
    layers, patch = int(vc["num_hidden_layers"]), int(vc["patch_size"])
    rms = vc.get("norm_type", "layer_norm") == "rms_norm"
    qk_norm = bool(vc.get("qk_normalization", False))
    qkv_bias = bool(vc.get("qkv_bias", True))
    per_layer = 3 * d * d + (3 * d if qkv_bias else 0) + d * d + d  # qkv, proj
    per_layer += 2 * d * dff + dff + d  # fc1, fc2
    per_layer += 2 * d * (1 if rms else 2) + 2 * d  # norm1, norm2, ls1, ls2
    if qk_norm:
        per_layer += 2 * d
    n_pos = (image_size // patch) ** 2 + 1
    params = layers * per_layer + d + 3 * patch * patch * d + d + n_pos * d
    merged = int(d / (downsample * downsample))
    projector = 2 * merged + merged * lm_hidden + lm_hidden + lm_hidden * lm_hidden + lm_hidden
    c = {**vc, "image_size": image_size}
    return _vision_tower("internvit", c, params, projector, merge=round(1 / downsample))


# ----------------------------------------------------------------------------------------------
# Quantization


# Checkpoint quantization methods whose weights mmop sizes (estimator.weights_bytes_per_gpu), as
# the pinned vLLM names them in a config's quantization_config.quant_method; bitsandbytes is
# kept so that the estimator can give vLLM's own refusal of it.
SIZED_CHECKPOINT_METHODS = frozenset(
    {"fp8", "fbgemm_fp8", "compressed-tensors", "gptq", "auto_gptq", "gptq_marlin", "awq",
     "auto_awq", "awq_marlin", "modelopt", "modelopt_fp4", "mxfp4", "bitsandbytes", "inc"}
)  # fmt: skip
# ModelOpt's quant_algo values mmop sizes: weight bits and elements per scale.
MODELOPT_ALGOS = {"FP8": (8, None), "FP8_PB_WO": (8, None), "NVFP4": (4, 16)}


def _modelopt_mixed(q: Json, skip: tuple[str, ...]) -> CheckpointQuantization:
    """ModelOpt MIXED_PRECISION: each quantized layer names its algorithm
    (``quantized_layers``). mmop sizes the layout NVIDIA's exports use: experts, shared experts
    and lm_head in NVFP4 (the MLP projections of a dense model too), attention (and linear
    attention) in FP8, the rest unquantized; any other algorithm, or NVFP4 outside the MLPs, gets
    no verdict."""
    layers = q.get("quantized_layers") or {}
    if not isinstance(layers, dict) or not layers:
        raise ValueError("ModelOpt MIXED_PRECISION without quantized_layers: no verdict")
    expert_bits, other_bits = None, None
    for name, spec in layers.items():
        algo = str((spec or {}).get("quant_algo", "")).upper()
        mlp = ".mlp." in name or name.endswith((".mlp", "lm_head"))
        if algo in ("NVFP4", "W4A16_NVFP4") and mlp:
            expert_bits = 4
        elif algo == "FP8" and not mlp:
            other_bits = 8
        else:
            raise ValueError(
                f"ModelOpt MIXED_PRECISION layer {name} in {algo!r}: not sized by mmop, no verdict"
            )
    return CheckpointQuantization(
        method="modelopt",
        weight_bits=other_bits or 16,
        group_size=16,
        unquantized_modules=skip,
        expert_bits=expert_bits,
        vision_quantized=any(k in n for n in layers for k in ("visual", "vision")),
    )


# Layers an AutoRound extra_config may keep in 16 bits that mmop sizes as part of the decoder
# (matched at the end of the layer name); smaller ones (routers, shared-expert gates, linear
# attention's in_proj_ba) are left out of the count.
_AUTOROUND_SIZED_LAYERS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "self_attn", "linear_attn",
    "in_proj_qkvz", "in_proj_qkv", "in_proj_z", "out_proj", "gate_proj", "up_proj", "down_proj",
    "gate_up_proj", "mlp", "experts", "shared_expert", "shared_experts",
)  # fmt: skip


def _auto_round(q: Json) -> CheckpointQuantization:
    """An AutoRound checkpoint (quant_method ``auto-round``), which vLLM 0.32.0 loads with its INC
    config (``INCConfig.override_quantization_method``, quantization/inc/inc.py l. 361-368).
    mmop sizes its integer formats (data_type ``int``, ``auto_round:auto_gptq`` or
    ``auto_round:auto_awq`` packing: GPTQ/AWQ tensors, inc.py l. 38-46, 160-175): a layer is
    quantized when it lies under ``block_name_to_quantize`` (all linear layers but lm_head when
    absent) unless ``extra_config`` gives it 16 bits or more (inc/config_parser.py l. 82-214,
    inc.py l. 322-340). Its FP8-block and MXFP formats get no verdict."""
    data_type = str(q.get("data_type") or "int")
    packing = str(q.get("packing_format") or "auto_round:auto_gptq")
    if data_type != "int" or packing not in ("auto_round:auto_gptq", "auto_round:auto_awq"):
        raise ValueError(
            f"AutoRound data_type {data_type!r} with packing_format {packing!r}: mmop sizes only "
            "AutoRound's integer (GPTQ/AWQ-packed) checkpoints, so no verdict is given"
        )
    bits = int(q.get("bits", 4))
    group = q.get("group_size", 128)
    blocks = q.get("block_name_to_quantize") or q.get("to_quant_block_names")
    if isinstance(blocks, str):
        blocks = blocks.split(",")
    names = [str(b) for b in blocks or []]
    extra = q.get("extra_config") or {}
    kept = tuple(
        sorted(
            name
            for name, layer in extra.items()
            if isinstance(layer, dict)
            and int(layer.get("bits", bits)) >= 16
            and name.rstrip(".*$").endswith(_AUTOROUND_SIZED_LAYERS)
            and "mtp" not in name
        )
    )
    return CheckpointQuantization(
        method="inc",
        weight_bits=bits,
        group_size=int(group) if isinstance(group, int) and group > 0 else None,
        unquantized_modules=kept,
        # vision towers are quantized only where a quantized block names them; without
        # block_name_to_quantize they are counted in 16 bits (the larger, safe count)
        vision_quantized=any(k in n for n in names for k in ("visual", "vision")),
    )


def _quantization(cfg: Json) -> CheckpointQuantization | None:
    q = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config")
    if not q:
        return None
    method = str(q.get("quant_method", "")).lower()
    if method == "auto-round":
        return _auto_round(q)
    if not method and (q.get("producer") or {}).get("name") == "modelopt":
        # vLLM names ModelOpt's method from its producer (model_arch_config_convertor.py:270-290)
        method = "modelopt"
    if method and method not in SIZED_CHECKPOINT_METHODS:
        known = method in capabilities.VLLM_QUANTIZATION_METHODS
        raise ValueError(
            f"quantization_config.quant_method {method!r}: "
            + (
                "mmop does not size this method's weights, so no verdict is given"
                if known
                else f"not a quantization method of vLLM {PINNED_VLLM_VERSION}"
            )
        )
    skip = tuple(
        q.get("modules_to_not_convert")
        or q.get("ignored_layers")
        or q.get("ignore")
        or q.get("modules_to_not_quantize")
        or q.get("exclude_modules")
        or (q.get("quantization") or {}).get("exclude_modules")  # hf_quant_config.json
        or ()
    )
    if method == "compressed-tensors":
        bits = 8
        group: int | None = None
        floats = False
        for scheme in (q.get("config_groups") or {}).values():
            weights = scheme.get("weights") or {}
            bits = int(weights.get("num_bits", bits))
            group = weights.get("group_size") or group
            floats = str(weights.get("type", "int")) == "float"
        return CheckpointQuantization(
            method=method,
            weight_bits=bits,
            group_size=group,
            unquantized_modules=skip,
            float_weights=floats and bits == 4,
        )
    if method in ("modelopt", "modelopt_fp4"):
        algo = str(q.get("quant_algo") or (q.get("quantization") or {}).get("quant_algo") or "")
        if algo.upper() == "MIXED_PRECISION":
            return _modelopt_mixed(q, skip)
        if algo.upper() not in MODELOPT_ALGOS:
            raise ValueError(f"ModelOpt quant_algo {algo!r}: not sized by mmop, no verdict")
        bits, per_scale = MODELOPT_ALGOS[algo.upper()]
        return CheckpointQuantization(
            method="modelopt_fp4" if bits == 4 else "modelopt",  # vLLM's override for NVFP4
            weight_bits=bits,
            group_size=per_scale,
            unquantized_modules=skip,
        )
    if method == "mxfp4":
        # vLLM quantizes only the routed experts (Mxfp4Config.get_quant_method: linear
        # layers and attention stay unquantized); 4-bit values with one 8-bit scale per 32.
        return CheckpointQuantization(
            method="mxfp4", weight_bits=4, group_size=32, unquantized_modules=skip
        )
    if method == "fp8":
        block = q.get("weight_block_size")
        return CheckpointQuantization(
            method="fp8",
            weight_bits=8,
            group_size=int(block[0] * block[1]) if block else None,
            unquantized_modules=skip,
        )
    bits = int(_get(q, "bits", "w_bit", default=4))
    group = _get(q, "group_size", "q_group_size")
    return CheckpointQuantization(
        method=method or "awq",
        weight_bits=bits,
        group_size=int(group) if group and int(group) > 0 else None,
        unquantized_modules=skip,
    )


def _dtype(cfg: Json) -> str:
    raw = (
        cfg.get("torch_dtype")
        or cfg.get("dtype")
        or (cfg.get("text_config") or {}).get("torch_dtype")
        or (cfg.get("text_config") or {}).get("dtype")
        or (cfg.get("llm_config") or {}).get("torch_dtype")
        or "bfloat16"
    )
    raw = str(raw).replace("torch.", "")
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(raw, raw)


# ----------------------------------------------------------------------------------------------
# Families


def _family_of(cfg: Json) -> str:
    if "vision_encoder" in cfg and "dim" in cfg:
        return "pixtral"
    if "dim" in cfg and "n_layers" in cfg:
        return "mistral_native"
    mtype = str(cfg.get("model_type", ""))
    arch = " ".join(cfg.get("architectures") or [])
    if mtype in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"}:
        return "qwen3_vl" if mtype.startswith("qwen3") else mtype
    if mtype in {"glm4v", "glm4v_moe"}:
        return "glm4v"
    if mtype == "qwen3_omni_moe" or "Qwen3OmniMoe" in arch:
        return "qwen3_omni"
    if mtype == "qwen2_5_omni" or "Qwen2_5Omni" in arch:
        return "qwen2_5_omni"
    if mtype == "qwen2_audio":
        return "qwen2_audio"
    if mtype == "llava":
        return "llava"
    if mtype == "llava_next":
        return "llava_next"
    if mtype == "internvl_chat" or ("InternVL" in arch and mtype != "internvl"):
        # the remote-code chat layout; transformers' own "-hf" layout (model_type internvl,
        # served by vLLM's InternS1 class with GotOcr2's tiling) is read by the generic path
        return "internvl"
    if mtype == "gemma3":
        return "gemma3"
    if mtype == "mistral3":
        return "mistral3"
    if mtype == "phi3_v" or "Phi3V" in arch:
        return "phi3_v"
    if mtype == "minicpmv" or "MiniCPMV" in arch:
        return "minicpmv"
    if mtype in {"idefics3", "smolvlm"}:
        return "idefics3"
    return "text"


def build_profile(model_id: str, cfg: Json, preprocessor: Json | None = None) -> ModelProfile:
    """Build a ModelProfile from a parsed config (and preprocessor config where needed)."""
    family = _family_of(cfg)
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ModelError(f"{model_id}: unsupported model family {family!r}")
    try:
        return builder(model_id, cfg, dict(preprocessor or {}))
    except ModelError:
        raise
    except KeyError as err:
        raise ModelError(
            f"{model_id}: cannot read config.json: the {family} family needs the key {err} "
            "and it is missing, so no verdict is given"
        ) from err
    except (TypeError, ValueError) as err:
        raise ModelError(f"{model_id}: cannot read config.json ({err})") from err


def _profile(
    model_id: str,
    family: str,
    cfg: Json,
    pre: Json,
    text_cfg: Json,
    *,
    text_type: str | None = None,
    vision: VisionTower | None = None,
    audio: AudioEncoder | None = None,
    other: int = 0,
) -> ModelProfile:
    text, embed, lm = _text_model(text_cfg, text_type)
    arch = (cfg.get("architectures") or [family])[0]
    return ModelProfile(
        id=model_id,
        family=family,
        architecture=str(arch),
        dtype=_dtype(cfg),
        text=text,
        vision=vision,
        audio=audio,
        quantization=_quantization(cfg),
        params=ParamCounts(
            embedding=embed,
            language_model=lm,
            vision=(vision.params + vision.projector_params) if vision else 0,
            audio=(audio.params + audio.projector_params) if audio else 0,
            other=other,
        ),
        config=dict(cfg),
        preprocessor=dict(pre),
    )


def _text_cfg_of(cfg: Json) -> dict[str, Any]:
    """Text fields: `text_config` where present, else the top level (older Qwen-VL layout)."""
    if isinstance(cfg.get("text_config"), dict) and "hidden_size" in cfg["text_config"]:
        tc = dict(cfg["text_config"])
        for key in ("tie_word_embeddings",):
            if key in cfg and key not in tc:
                tc[key] = cfg[key]
        return tc
    return {k: v for k, v in cfg.items() if k not in ("vision_config", "text_config")}


# What a config of a model type mmop has no defaults for must state itself: the generic path
# never sizes a model from another family's defaults.
GENERIC_REQUIRED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
# Sub-configs of a multimodal model: the generic path cannot size their towers.
TOWER_KEYS = (
    "vision_config",
    "audio_config",
    "vision_tower",
    "visual",
    "speech_config",
    "thinker_config",
    "img_processor",
    "embd_layer",
    "vision_encoder",
    "audio_processor",
    "mm_vision_tower",
    "image_encoder",
)


def _build_text(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    mtype = str(cfg.get("model_type") or "")
    towers = [k for k in TOWER_KEYS if cfg.get(k)]
    if towers:
        return _build_generic_mm(model_id, cfg, pre)
    if mtype not in _TEXT_DEFAULTS:
        missing = [k for k in GENERIC_REQUIRED_KEYS if k not in cfg]
        if missing:
            raise ModelError(
                f"{model_id}: model_type {mtype!r} is unknown and its config.json lacks "
                f"{', '.join(missing)}: it cannot be sized, so no verdict is given"
            )
    return _profile(model_id, "text", cfg, pre, cfg)


# ----------------------------------------------------------------------------------------------
# The generic multimodal path: a family mmop has no processor rule for
#
# The language model is read like any generic text model. The vision tower is sized as an upper
# bound from its sub-config's standard keys: a SwiGLU MLP with biases in every layer (at least
# the weights of a plain GELU MLP), learned position embeddings for every patch of the native
# side, a two-layer projector as wide as the merged patch (at least a linear one, a pixel
# shuffle or a patch merger). One image is costed at an upper bound on its placeholder tokens:
# the processor's own fixed count when the config states one, else every tile of the largest
# tiling the processor config allows (plus a thumbnail) at the native side, else the largest
# pixel budget it allows. A config whose tower or token count cannot be bounded this way gets
# no verdict. Audio towers are sized (Whisper-style keys) but audio is not planned.

GENERIC_MM_FAMILY = "generic_mm"
# Keys that state one image's placeholder tokens (per tile where the family tiles).
_FIXED_TOKEN_KEYS = (
    "vision_soft_tokens_per_image",
    "query_num",
    "mm_tokens_per_image",
    "num_image_tokens",
    "image_seq_length",
    "image_token_length",
)
# Processor keys that bound the number of tiles, crops or slices of one image.
_TILE_KEYS = (
    "max_dynamic_patch",
    "max_patches",
    "max_num_tiles",
    "max_image_tiles",
    "max_crops",
    "pan_and_scan_max_num_crops",
    "max_slice_nums",
    "dynamic_hd",
    "max_num",
)
# Processor keys that bound one image's pixels (dynamic-resolution processors).
_PIXEL_KEYS = ("max_pixels", "longest_edge")
LAYOUT_TOKENS_PER_TILE = 8
# A processor's longest_edge above this is a pixel count, not a side.
MAX_IMAGE_SIDE = 65536
_SUB_TEXT = ("text_config", "llm_config", "language_config", "thinker_config")
_SUB_VISION = ("vision_config", "vision_tower", "visual", "img_processor", "vision_encoder")
_SUB_AUDIO = ("audio_config", "speech_config")


def _sub(cfg: Json, keys: tuple[str, ...]) -> dict[str, Any] | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, dict) and value:
            if key == "thinker_config":
                value = value.get("text_config") or {}
            return dict(value)
    thinker = cfg.get("thinker_config")
    if isinstance(thinker, dict):
        for key in keys:
            if isinstance(thinker.get(key), dict) and thinker[key]:
                return dict(thinker[key])
    return None


def _merge_of(vc: Json, cfg: Json) -> int:
    """Patches merged per output token side (pixel shuffle, patch merger, pooling)."""
    for key in ("spatial_merge_size", "pooling_kernel_size", "merge_kernel_size"):
        value = vc.get(key) or cfg.get(key)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if value:
            return max(1, int(value))
    for key in ("downsample_ratio", "pixel_shuffle_ratio"):
        ratio = vc.get(key) or cfg.get(key)
        if ratio and 0 < float(ratio) < 1:
            return max(1, round(1 / float(ratio)))
    for key in ("scale_factor",):
        value = cfg.get(key)
        if value and int(value) > 1:
            return int(value)
    return 1


def _processor_int(pre: Json, keys: tuple[str, ...]) -> int | None:
    """The largest value the processor configs give any of `keys` (top level, ``size``,
    ``images_kwargs``)."""
    found: list[int] = []
    scopes = [pre, pre.get("size") or {}, pre.get("images_kwargs") or {}]
    for scope in scopes:
        if not isinstance(scope, dict):
            continue
        for key in keys:
            value = scope.get(key)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float) and value > 0:
                found.append(int(value))
    return max(found) if found else None


def _generic_item_bound(vc: Json, cfg: Json, pre: Json, patch: int, merge: int) -> tuple[int, int]:
    """(tokens per tile, tiles) bounding one image's placeholder tokens."""
    tiles_max = _processor_int(pre, _TILE_KEYS) or _processor_int(cfg, _TILE_KEYS)
    pins = cfg.get("image_grid_pinpoints") or pre.get("image_grid_pinpoints")
    side = int(_get(vc, "image_size", default=0) or 0)
    if isinstance(pins, list) and side:  # LLaVA-NeXT-style "anyres" grids of native tiles
        grids = [-(-int(p[0]) // side) * -(-int(p[1]) // side) for p in pins if len(p) == 2]
        tiles_max = max([tiles_max or 0, *grids])
    tiles = tiles_max + 1 if tiles_max and tiles_max > 1 else 1  # + the thumbnail
    fixed = [int(v) for k in _FIXED_TOKEN_KEYS for v in (cfg.get(k), vc.get(k)) if v]
    if fixed:
        return max(fixed), tiles
    image = int(_get(vc, "image_size", default=0) or cfg.get("force_image_size") or 0)
    if image and (tiles > 1 or not _processor_int(pre, _PIXEL_KEYS)):
        side = -(-image // patch)
        return ceil_div(side, merge) ** 2, tiles
    pixels = _processor_int(pre, ("max_pixels",))
    edge = _processor_int(pre, ("longest_edge",))
    if not pixels and edge:
        # A side in pixels, or (Qwen3-VL's processors) a pixel count.
        pixels = edge if edge > MAX_IMAGE_SIDE else edge * edge
    limit = _processor_int(pre, ("in_token_limit", "max_num_patches"))
    if pixels:
        tokens = -(-pixels // (patch * patch * merge * merge))
        if image:  # a global view at the native side besides the resized image (Idefics3)
            tokens += ceil_div(ceil_div(image, patch), merge) ** 2
        return tokens, 1
    if limit:
        return -(-limit // (merge * merge)), 1
    raise ValueError(
        "the vision tower states no image size and its processor config no pixel, token or "
        "tile budget: one image's tokens cannot be bounded"
    )


# embed_dim first: where a config states both (Qwen2-VL), hidden_size is the projector's output.
_WIDTH_KEYS = ("embed_dim", "hidden_size", "width", "hidden_dim", "d_model")
_DEPTH_KEYS = ("num_hidden_layers", "depth", "num_layers", "layers", "n_layers")


def _encoders(vc: Json) -> list[dict[str, Any]]:
    """The encoders of a vision config: itself, or the sub-encoders it nests (DeepSeek-OCR
    keeps a SAM and a CLIP encoder under one key), each stating a width and a depth."""

    def sized(c: Json) -> bool:
        w, n = _get(c, *_WIDTH_KEYS), _get(c, *_DEPTH_KEYS)
        return isinstance(w, int | float) and isinstance(n, int | float) and w > 0 and n > 0

    if sized(vc):
        return [dict(vc)]
    found: list[dict[str, Any]] = []
    for value in vc.values():
        if isinstance(value, dict):
            found += [dict(value)] if sized(value) else _encoders(value) if value else []
    return found


def _encoder_params(c: Json, default_image: int) -> tuple[int, int, int, int]:
    """(parameters, width, patch, heads) of one encoder, as an upper bound."""
    d, layers = int(_get(c, *_WIDTH_KEYS)), int(_get(c, *_DEPTH_KEYS))
    dff = int(_get(c, "intermediate_size", default=0) or d * float(c.get("mlp_ratio", 4)))
    heads = int(_get(c, "num_attention_heads", "num_heads", "heads", default=max(1, d // 64)))
    patch = int(_get(c, "patch_size", default=14 if default_image < 1024 else 16))
    temporal = int(c.get("temporal_patch_size") or 1)
    image = int(_get(c, "image_size", default=0) or default_image)
    positions = int(
        _get(c, "num_position_embeddings", "position_embedding_size", default=0)
        or ((image // patch) ** 2 + 1 if image else 0)
    )
    params = layers * _vit_layer_params(d, dff, gated=True, bias=True, norm_bias=True)
    params += 3 * temporal * patch * patch * d + d + positions * d + 2 * d
    return params, d, patch, heads


def _generic_vision(vc: Json, cfg: Json, pre: Json, lm_hidden: int) -> VisionTower:
    encoders = _encoders(vc)
    if not encoders:
        raise ValueError("the vision config states no hidden size or layer count")
    image = int(_get(vc, "image_size", default=0) or 0)
    sized = [_encoder_params(c, image) for c in encoders]
    params = sum(p for p, _, _, _ in sized)
    d = max(w for _, w, _, _ in sized)
    patch = int(_get(vc, "patch_size", default=0) or min(p for _, _, p, _ in sized))
    heads = max(h for _, _, _, h in sized)
    layers = sum(int(_get(c, *_DEPTH_KEYS)) for c in encoders)
    dff = max(
        int(_get(c, "intermediate_size", default=0) or _get(c, *_WIDTH_KEYS) * 4) for c in encoders
    )
    temporal = int(vc.get("temporal_patch_size") or 1)
    merge = _merge_of(vc, cfg)
    per_tile, tiles = _generic_item_bound(vc, cfg, pre, patch, merge)
    # Encoder positions per placeholder token: merge² where patches are merged into tokens; a
    # tower of a fixed input side that pools or resamples (Gemma 3: 4,096 patches to 256
    # tokens) encodes its whole native grid for each tile's tokens.
    ratio = float(merge * merge)
    if image:
        ratio = max(ratio, (-(-image // patch)) ** 2 / per_tile)
    # Layout tokens processors add around an image's embeddings: a break per row of the grid
    # (Pixtral's [IMG_BREAK]) and begin/end or tile tags.
    per_tile += math.isqrt(per_tile) + 1 + LAYOUT_TOKENS_PER_TILE
    out = int(_get(vc, "out_hidden_size", "projector_output_dim", default=lm_hidden))
    merged = d * merge * merge
    projector = merged * merged + merged + merged * max(out, lm_hidden) + lm_hidden + 2 * merged
    c = {
        "hidden_size": d,
        "intermediate_size": dff,
        "num_hidden_layers": layers,
        "num_heads": heads,
        "patch_size": patch,
        "image_size": image or None,
    }
    tower = _vision_tower(
        GENERIC_MM_FAMILY, c, params, projector, merge=merge, temporal=temporal, gated=True
    )
    return tower.model_copy(
        update={
            "item_tokens_bound": per_tile,
            "item_tiles_bound": tiles,
            "positions_per_token_bound": ratio,
        }
    )


def _generic_audio_params(ac: Json) -> int:
    d = _get(ac, "d_model", "hidden_size", "attention_dim")
    layers = _get(ac, "encoder_layers", "num_hidden_layers", "num_blocks", "num_layers")
    if not d or not layers:
        raise ValueError("the audio config states no width or layer count")
    d, layers = int(d), int(layers)
    dff = int(_get(ac, "encoder_ffn_dim", "intermediate_size", "linear_units", default=4 * d))
    mels = int(_get(ac, "num_mel_bins", "input_size", default=128))
    out = int(_get(ac, "output_dim", default=d))
    per_layer = _vit_layer_params(d, dff, gated=True, bias=True, norm_bias=True)
    return layers * per_layer + 2 * 3 * mels * d + 3 * d * d + d * out * 2 + 4 * d


def _square_sides(value: Any) -> Any:
    """Vision sub-configs that state sides as [height, width] (transformers' InternVL "-hf"
    layout) read as their larger side, an upper bound; nested encoders too."""
    if isinstance(value, dict):
        return {
            k: (
                max(int(x) for x in v)
                if k in ("image_size", "patch_size") and isinstance(v, list | tuple) and v
                else _square_sides(v)
            )
            for k, v in value.items()
        }
    return value


def _build_generic_mm(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    cfg = {k: (_square_sides(v) if k in _SUB_VISION else v) for k, v in cfg.items()}
    mtype = str(cfg.get("model_type") or "")
    tc = _sub(cfg, _SUB_TEXT) or {
        k: v for k, v in cfg.items() if k not in (*_SUB_VISION, *_SUB_AUDIO)
    }
    missing = [k for k in GENERIC_REQUIRED_KEYS if k not in tc]
    if missing and str(tc.get("model_type")) not in _TEXT_DEFAULTS:
        raise ModelError(
            f"{model_id}: model_type {mtype!r} is a multimodal family mmop does not know and "
            f"its language model's config lacks {', '.join(missing)}: no verdict is given"
        )
    for key in ("tie_word_embeddings", "torch_dtype", "dtype", "quantization_config"):
        if key in cfg and key not in tc:
            tc[key] = cfg[key]
    text_type = str(tc.get("model_type") or mtype)
    lm_hidden = int(_with_defaults(tc, _TEXT_DEFAULTS.get(text_type, {}))["hidden_size"])
    vc = _sub(cfg, _SUB_VISION)
    ac = _sub(cfg, _SUB_AUDIO)
    if vc is None and ac is None:
        towers = ", ".join(k for k in TOWER_KEYS if cfg.get(k))
        raise ModelError(
            f"{model_id}: model_type {mtype!r} is a multimodal family mmop does not know, and "
            f"its encoder ({towers}) has no vision or audio sub-config the generic path can "
            "bound: no verdict is given"
        )
    vision = None
    audio_params = 0
    try:
        if vc is not None:
            vision = _generic_vision(vc, cfg, pre, lm_hidden)
        if ac is not None:
            audio_params = _generic_audio_params(ac)
    except (ValueError, TypeError) as err:
        raise ModelError(
            f"{model_id}: model_type {mtype!r} is a multimodal family mmop does not know, and "
            f"the generic path cannot bound its encoder ({err}): no verdict is given"
        ) from None
    prof = _profile(model_id, GENERIC_MM_FAMILY, cfg, pre, tc, text_type=text_type, vision=vision)
    if audio_params:
        counts = prof.params.model_copy(update={"audio": audio_params})
        prof = prof.model_copy(update={"params": counts})
    return prof


def _build_qwen_vl(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    mtype = str(cfg["model_type"])
    tc = _text_cfg_of(cfg)
    hidden = int(tc["hidden_size"])
    vision = _qwen_vit(cfg["vision_config"], hidden, mtype)
    family = "qwen3_vl" if mtype.startswith("qwen3") else mtype
    text_type = (
        "qwen3_moe" if mtype == "qwen3_vl_moe" else ("qwen3" if family == "qwen3_vl" else "qwen2")
    )
    if mtype.startswith("qwen3_5"):
        # Qwen3.5: Qwen3-VL's vision tower and processors over a Qwen3-Next-style hybrid decoder
        # (vLLM 0.32.0 models/qwen3_5.py:111-125, 473, 703).
        text_type = str(tc.get("model_type") or f"{mtype}_text")
    return _profile(model_id, family, cfg, pre, tc, text_type=text_type, vision=vision)


def _whisper(ac: Json, out_hidden: int, *, omni: bool) -> AudioEncoder:
    c = _with_defaults(ac, _AUDIO_DEFAULTS)
    d, dff = int(c["d_model"]), int(c["encoder_ffn_dim"])
    layers, mels = int(c["encoder_layers"]), int(c["num_mel_bins"])
    src = int(c["max_source_positions"])
    per_layer = 4 * d * d + 3 * d + 2 * d * dff + dff + d + 2 * 2 * d  # k_proj has no bias
    params = layers * per_layer + mels * d * 3 + d + d * d * 3 + d + 2 * d
    if omni:
        params += 0  # sinusoidal positions are not parameters in the Omni encoder
        out = int(c.get("output_dim", out_hidden))
        projector = 2 * d + d * out + out  # ln_post + proj
    else:
        params += src * d
        projector = d * out_hidden + out_hidden
    return AudioEncoder(
        kind="whisper",
        num_layers=layers,
        hidden_size=d,
        intermediate_size=dff,
        num_mel_bins=mels,
        max_source_positions=src,
        tokens_per_second=25.0,
        params=params,
        projector_params=projector,
    )


def _build_qwen2_audio(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = _with_defaults(cfg.get("text_config"), _TEXT_DEFAULTS["qwen2"])
    audio = _whisper(cfg.get("audio_config") or {}, int(tc["hidden_size"]), omni=False)
    return _profile(model_id, "qwen2_audio", cfg, pre, tc, text_type="qwen2", audio=audio)


def _build_qwen2_5_omni(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    thinker = cfg.get("thinker_config") or cfg
    tc = dict(thinker["text_config"])
    hidden = int(tc["hidden_size"])
    vision = _qwen_vit(thinker["vision_config"], hidden, "qwen2_5_omni")
    audio = _whisper(thinker["audio_config"], hidden, omni=True)
    other = 0
    talker = cfg.get("talker_config")
    if talker:
        talker_text, t_embed, t_lm = _text_model(
            {**talker, "model_type": "qwen2", "tie_word_embeddings": False}, "qwen2"
        )
        # The talker also projects thinker states into its width.
        other = t_embed + t_lm + hidden * talker_text.hidden_size + talker_text.hidden_size
    merged = {**thinker, "torch_dtype": cfg.get("torch_dtype", thinker.get("torch_dtype"))}
    prof = _profile(
        model_id, "qwen2_5_omni", merged, pre, tc, text_type="qwen2", vision=vision, audio=audio
    )
    return prof.model_copy(update={"params": prof.params.model_copy(update={"other": other})})


def _qwen3_omni_audio(ac: Json, out_hidden: int) -> AudioEncoder:
    """Qwen3-Omni's audio encoder (vLLM 0.32.0 ``Qwen3OmniMoeAudioEncoder``,
    models/qwen3_omni_moe_thinker.py:345-400): three stride-2 3×3 convolutions of
    ``downsample_hidden_size`` channels, a linear from the flattened frequency axis to
    ``d_model``, Whisper-like layers (q/k/v/out with biases, :222-238), ``ln_post`` and a
    two-layer projection to ``output_dim``. 100 mel frames (1 s) give 13 tokens
    (``_get_feat_extract_output_lengths``, :154)."""
    c = _with_defaults(ac, _AUDIO_DEFAULTS)
    d, dff = int(c["d_model"]), int(c["encoder_ffn_dim"])
    layers, mels = int(c["encoder_layers"]), int(c["num_mel_bins"])
    ch = int(c.get("downsample_hidden_size", 480))
    out = int(c.get("output_dim", out_hidden))
    freq = mels
    for _ in range(3):
        freq = (freq + 1) // 2
    per_layer = 4 * d * d + 4 * d + 2 * d * dff + dff + d + 2 * 2 * d
    convs = (9 * ch + ch) + 2 * (9 * ch * ch + ch) + ch * freq * d
    return AudioEncoder(
        kind="qwen3_omni",
        num_layers=layers,
        hidden_size=d,
        intermediate_size=dff,
        num_mel_bins=mels,
        max_source_positions=int(c["max_source_positions"]),
        tokens_per_second=13.0,
        params=layers * per_layer + convs + 2 * d,
        projector_params=d * d + d + d * out + out,
    )


def _build_qwen3_omni(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    """Qwen3-Omni: vLLM serves the thinker alone (registry.py:581-584 maps
    ``Qwen3OmniMoeForConditionalGeneration`` to ``Qwen3OmniMoeThinkerForConditionalGeneration``),
    so the talker and code2wav weights are not loaded. The thinker is a Qwen3-MoE decoder, a
    Qwen3-VL-style vision transformer (patch 16, absolute positions, deepstack mergers,
    ``Qwen3Omni_VisionTransformer``, :753-840) and the audio encoder above."""
    thinker = cfg.get("thinker_config") or cfg
    tc = dict(thinker["text_config"])
    hidden = int(tc["hidden_size"])
    vc = dict(thinker["vision_config"])
    if "num_position_embeddings" not in vc and vc.get("image_size") and vc.get("patch_size"):
        vc["num_position_embeddings"] = (int(vc["image_size"]) // int(vc["patch_size"])) ** 2
    vision = _qwen_vit(vc, hidden, "qwen3_vl")
    audio = _qwen3_omni_audio(thinker["audio_config"], hidden)
    merged = {
        **thinker,
        "architectures": cfg.get("architectures"),
        "vision_config": vc,
        "torch_dtype": cfg.get("torch_dtype", cfg.get("dtype", thinker.get("dtype"))),
    }
    return _profile(
        model_id, "qwen3_omni", merged, pre, tc, text_type="qwen3_moe", vision=vision, audio=audio
    )


def _glm4v_vit(vc: Json) -> VisionTower:
    """GLM-4.1V / 4.5V vision transformer (vLLM 0.32.0 models/glm4_1v.py:214-700): a Conv3d
    patch embedding with bias, learned positions for (image_size / patch)² patches, blocks of
    RMSNorm, bias-free qkv and proj, and a bias-free SwiGLU MLP as wide as ``out_hidden_size``;
    RMSNorms after the blocks, a Conv2d downsample (merge × merge, with bias) into
    ``out_hidden_size`` and a merger (bias-free proj, LayerNorm, SwiGLU through
    ``intermediate_size``)."""
    d, out = int(vc["hidden_size"]), int(vc["out_hidden_size"])
    inter, layers = int(vc["intermediate_size"]), int(vc["depth"])
    patch, merge = int(vc.get("patch_size", 14)), int(vc.get("spatial_merge_size", 2))
    temporal = int(vc.get("temporal_patch_size", 2))
    image = int(vc.get("image_size", 336))
    per_layer = 4 * d * d + 3 * d * out + 2 * d
    params = layers * per_layer + int(vc.get("in_channels", 3)) * temporal * patch * patch * d + d
    params += (image // patch) ** 2 * d + 2 * d
    projector = d * out * merge * merge + out  # downsample
    projector += out * out + 2 * out + 3 * out * inter  # merger
    c = {
        "hidden_size": d,
        "intermediate_size": out,
        "num_hidden_layers": layers,
        "num_heads": int(vc.get("num_heads", 12)),
        "patch_size": patch,
        "image_size": image,
    }
    return _vision_tower("glm4v", c, params, projector, merge=merge, temporal=temporal, gated=True)


def _build_glm4v(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    """GLM-4.1V (``glm4v``: the text fields at the top level, or in ``text_config`` in newer
    exports) and GLM-4.5V / 4.6V (``glm4v_moe``: a GLM-4.5-Air MoE decoder in
    ``text_config``)."""
    tc = _text_cfg_of(cfg)
    text_type = str(tc.get("model_type") or "glm4")
    if text_type in ("glm4v", "glm4v_moe", "glm4v_text", "glm4v_moe_text"):
        text_type = "glm4_moe" if text_type.startswith("glm4v_moe") else "glm4"
    vision = _glm4v_vit(cfg["vision_config"])
    return _profile(model_id, "glm4v", cfg, pre, tc, text_type=text_type, vision=vision)


def _build_llava(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = dict(cfg.get("text_config") or {})
    text_type = str(tc.get("model_type", "llama"))
    vc_raw = cfg.get("vision_config") or {}
    vc, vparams = _clip_like(vc_raw, "clip")
    lm_hidden = int(_with_defaults(tc, _TEXT_DEFAULTS.get(text_type, {}))["hidden_size"])
    d = int(vc["hidden_size"])
    projector = d * lm_hidden + lm_hidden + lm_hidden * lm_hidden + lm_hidden
    family = "llava_next" if cfg.get("model_type") == "llava_next" else "llava"
    if family == "llava_next":
        projector += lm_hidden  # image_newline
    vision = _vision_tower("clip", vc, vparams, projector)
    return _profile(model_id, family, cfg, pre, tc, text_type=text_type, vision=vision)


def _build_internvl(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    lc = dict(cfg["llm_config"])
    arch = " ".join(lc.get("architectures") or [])
    text_type = "qwen2" if "Qwen2" in arch else ("llama" if "Llama" in arch else "internlm2")
    if "Qwen3" in arch:
        # InternVL3.5: a Qwen3 decoder (q_norm / k_norm in every layer), or Qwen3-MoE; vLLM builds
        # the llm_config's own architecture (vLLM 0.32.0 models/internvl.py:617-621).
        text_type = "qwen3_moe" if "Qwen3Moe" in arch else "qwen3"
    if text_type == "internlm2" and "tie_word_embeddings" not in lc:
        lc["tie_word_embeddings"] = False
    lm_hidden = int(lc["hidden_size"])
    image_size = int(cfg.get("force_image_size") or cfg["vision_config"]["image_size"])
    vision = _internvit(
        cfg["vision_config"], lm_hidden, float(cfg.get("downsample_ratio", 0.5)), image_size
    )
    merged = {**cfg, "torch_dtype": cfg.get("torch_dtype") or lc.get("torch_dtype")}
    return _profile(model_id, "internvl", merged, pre, lc, text_type=text_type, vision=vision)


def _build_gemma3(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = dict(cfg.get("text_config") or {})
    tc.setdefault("model_type", "gemma3_text")
    lm_hidden = int(_with_defaults(tc, _TEXT_DEFAULTS["gemma3_text"])["hidden_size"])
    vc, vparams = _clip_like(cfg.get("vision_config") or {}, "siglip")
    d = int(vc["hidden_size"])
    projector = d + d * lm_hidden  # soft-embedding norm + input projection
    vision = _vision_tower("siglip", vc, vparams, projector)
    return _profile(model_id, "gemma3", cfg, pre, tc, text_type="gemma3_text", vision=vision)


def _pixtral_vit(c: Json, lm_hidden: int, *, adapter: str) -> VisionTower:
    d, dff = int(c["hidden_size"]), int(c["intermediate_size"])
    layers, patch = int(c["num_hidden_layers"]), int(c["patch_size"])
    ch = int(c.get("num_channels", 3))
    params = layers * _vit_layer_params(d, dff, gated=True, bias=False, norm_bias=False)
    params += ch * patch * patch * d + d  # patch conv, ln_pre
    if adapter == "pixtral":
        projector = d * lm_hidden + lm_hidden + lm_hidden * lm_hidden + lm_hidden
        merge = 1
    else:  # mistral3: norm, 2x2 patch merger, two linear layers without bias
        merge = int(c.get("spatial_merge_size", 2))
        projector = d + d * merge * merge * d + d * lm_hidden + lm_hidden * lm_hidden
    cc = {**c, "num_attention_heads": _get(c, "num_attention_heads", default=16)}
    return _vision_tower("pixtral", cc, params, projector, merge=merge, gated=True)


def _build_pixtral(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    """Mistral-native params.json (Pixtral-12B-2409)."""
    ve = dict(cfg["vision_encoder"])
    tc = {
        "model_type": "mistral",
        "hidden_size": cfg["dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg.get("n_kv_heads", cfg["n_heads"]),
        "head_dim": cfg.get("head_dim"),
        "intermediate_size": cfg["hidden_dim"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg.get("max_position_embeddings")
        or cfg.get("max_seq_len")
        or 131072,
        "tie_word_embeddings": bool(cfg.get("tied_embeddings", False)),
        "sliding_window": cfg.get("sliding_window"),
    }
    vision = _pixtral_vit(ve, int(cfg["dim"]), adapter="pixtral")
    native = {
        **cfg,
        "architectures": ["PixtralForConditionalGeneration"],
        "torch_dtype": cfg.get("torch_dtype", "bfloat16"),
    }
    return _profile(model_id, "pixtral", native, pre, tc, text_type="mistral", vision=vision)


def _build_mistral_native(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = {
        "model_type": "mistral",
        "hidden_size": cfg["dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg.get("n_kv_heads", cfg["n_heads"]),
        "head_dim": cfg.get("head_dim"),
        "intermediate_size": cfg["hidden_dim"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg.get("max_seq_len") or 32768,
        "sliding_window": cfg.get("sliding_window"),
    }
    native = {**cfg, "architectures": ["MistralForCausalLM"]}
    return _profile(model_id, "text", native, pre, tc, text_type="mistral")


def _build_mistral3(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = dict(cfg["text_config"])
    text_type = str(tc.get("model_type", "mistral"))
    lm_hidden = int(_with_defaults(tc, _TEXT_DEFAULTS.get(text_type, {}))["hidden_size"])
    vc = {**cfg["vision_config"], "spatial_merge_size": cfg.get("spatial_merge_size", 2)}
    vision = _pixtral_vit(vc, lm_hidden, adapter="mistral3")
    return _profile(model_id, "mistral3", cfg, pre, tc, text_type=text_type, vision=vision)


def _build_phi3_v(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    # CLIP ViT-L/14 at 336 px (the checkpoint's img_processor), HD-transform projector.
    vc, vparams = _clip_like(
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
        },
        "clip",
    )
    lm_hidden = int(cfg["hidden_size"])
    dim_out = int((cfg.get("img_processor") or {}).get("image_dim_out", 1024))
    hd = dim_out * 4
    projector = hd * lm_hidden + lm_hidden + lm_hidden * lm_hidden + lm_hidden + 2 * hd
    vision = _vision_tower("clip", vc, vparams, projector)
    tc = {**cfg, "model_type": "llama"}
    return _profile(model_id, "phi3_v", cfg, pre, tc, text_type="llama", vision=vision)


def _build_minicpmv(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = {k: v for k, v in cfg.items() if k != "vision_config"}
    vc_raw = dict(cfg["vision_config"])
    image = int(vc_raw.get("image_size", 980))
    patch = int(vc_raw.get("patch_size", 14))
    vc, vparams = _clip_like(vc_raw, "siglip", pos_tokens=(image // patch) ** 2)
    d = int(vc["hidden_size"])
    lm = int(cfg["hidden_size"])
    query = int(cfg.get("query_num", 64))
    # Resampler: queries, kv projection, multi-head attention, three layernorms, output proj.
    projector = query * lm + d * lm + (3 * lm * lm + 3 * lm) + (lm * lm + lm) + 3 * 2 * lm
    projector += lm * lm
    vision = _vision_tower("siglip", vc, vparams, projector)
    version = str(cfg.get("version", "2.6"))
    text_type = _MINICPMV_DECODERS.get(version)
    if text_type is None:
        raise ModelError(
            f"{model_id}: MiniCPM-V version {version} is not one vLLM {PINNED_VLLM_VERSION} serves "
            f"(it serves {', '.join(sorted(_MINICPMV_DECODERS))})"
        )
    return _profile(model_id, "minicpmv", cfg, pre, tc, text_type=text_type, vision=vision)


# The decoder vLLM builds for each MiniCPM-V version (vLLM 0.32.0 models/minicpmv.py:2434-2440:
# 2.5 and 4.0 on LlamaForCausalLM, 2.6 on Qwen2ForCausalLM, 4.5 on Qwen3ForCausalLM; 2.0 is
# MiniCPM-2B, not sized here).
_MINICPMV_DECODERS = {"2.5": "llama", "2.6": "qwen2", "4.0": "llama", "4.5": "qwen3"}


def _build_idefics3(model_id: str, cfg: Json, pre: Json) -> ModelProfile:
    tc = dict(cfg["text_config"])
    text_type = str(tc.get("model_type", "llama"))
    tc.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", False))
    vc, vparams = _clip_like(cfg.get("vision_config") or {}, "siglip")
    scale = int(cfg.get("scale_factor", 2))
    lm_hidden = int(_with_defaults(tc, _TEXT_DEFAULTS.get(text_type, {}))["hidden_size"])
    projector = int(vc["hidden_size"]) * scale * scale * lm_hidden
    vision = _vision_tower("siglip", vc, vparams, projector, merge=scale)
    return _profile(model_id, "idefics3", cfg, pre, tc, text_type=text_type, vision=vision)


_BUILDERS = {
    "text": _build_text,
    "qwen2_vl": _build_qwen_vl,
    "qwen2_5_vl": _build_qwen_vl,
    "qwen3_vl": _build_qwen_vl,
    "qwen2_audio": _build_qwen2_audio,
    "qwen2_5_omni": _build_qwen2_5_omni,
    "qwen3_omni": _build_qwen3_omni,
    "glm4v": _build_glm4v,
    "llava": _build_llava,
    "llava_next": _build_llava,
    "internvl": _build_internvl,
    "gemma3": _build_gemma3,
    "pixtral": _build_pixtral,
    "mistral_native": _build_mistral_native,
    "mistral3": _build_mistral3,
    "phi3_v": _build_phi3_v,
    "minicpmv": _build_minicpmv,
    "idefics3": _build_idefics3,
    GENERIC_MM_FAMILY: _build_generic_mm,
}


# ----------------------------------------------------------------------------------------------
# Loading


def catalog_ids() -> list[str]:
    """Model ids shipped in the catalog, sorted."""
    ids = []
    for source in sorted(CATALOG_MODELS_DIR.glob("*/*/source.yaml")):
        ids.append(f"{source.parent.parent.name}/{source.parent.name}")
    return ids


def catalog_source(model_id: str) -> dict[str, Any]:
    """The catalog's source record for a model (URLs, provenance, published parameter count)."""
    path = CATALOG_MODELS_DIR / model_id / "source.yaml"
    if not path.is_file():
        raise ModelError(f"{model_id!r} is not in the model catalog")
    data = yaml.safe_load(path.read_text())
    return dict(data or {})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def profile_from_files(
    model_id: str,
    files: Mapping[str, Json],
    origin: ModelOrigin = "catalog",
    commit: str | None = None,
) -> ModelProfile:
    """A ModelProfile from a repository's parsed files (named as in MODEL_FILES; the others
    are ignored): config.json (or params.json), then the processor's configs."""
    cfg = next((files[n] for n in CONFIG_FILES if n in files), None)
    if cfg is None:
        raise ModelError(f"{model_id}: no config.json or params.json")
    pre: dict[str, Any] = {}
    for name in PROCESSOR_FILES:
        pre.update(files.get(name) or {})
    if VIDEO_PROCESSOR_FILE in files:
        pre["video"] = dict(files[VIDEO_PROCESSOR_FILE])
    if QUANT_CONFIG_FILE in files and not cfg.get("quantization_config"):
        cfg = {**cfg, "quantization_config": dict(files[QUANT_CONFIG_FILE])}
    profile = build_profile(model_id, cfg, pre)
    if origin == "catalog" and commit is None:
        return profile
    return profile.model_copy(update={"origin": origin, "commit": commit})


def parse_model_files(texts: Mapping[str, str], where: str) -> dict[str, dict[str, Any]]:
    """The MODEL_FILES among ``texts`` (file name → its text, as a ConfigMap holds them),
    parsed; the other names are ignored."""
    out: dict[str, dict[str, Any]] = {}
    for name in MODEL_FILES:
        if name not in texts:
            continue
        try:
            data = json.loads(texts[name])
        except json.JSONDecodeError as err:
            raise ModelError(
                f"{where}: {name} is not JSON ({err.msg} at line {err.lineno})"
            ) from None
        if not isinstance(data, dict):
            raise ModelError(f"{where}: {name} is not a JSON object")
        out[name] = data
    return out


def read_model_files(directory: Path) -> dict[str, dict[str, Any]]:
    """The MODEL_FILES a directory holds, parsed."""
    return {n: _read_json(directory / n) for n in MODEL_FILES if (directory / n).is_file()}


def load_profile_from_dir(
    directory: Path, model_id: str | None = None, origin: ModelOrigin = "directory"
) -> ModelProfile:
    """Read config.json (or Mistral's params.json) and the processor configs from a directory."""
    if not any((directory / n).is_file() for n in CONFIG_FILES):
        raise ModelError(f"{directory}: no config.json or params.json")
    return profile_from_files(model_id or str(directory), read_model_files(directory), origin)


@cache
def _catalog_profile(model: str) -> ModelProfile:
    """Catalog files ship with the package and never change while it runs: read each once."""
    return load_profile_from_dir(CATALOG_MODELS_DIR / model, model, origin="catalog")


def is_catalog_id(model: str) -> bool:
    """Whether `model` names a model the catalog ships."""
    parts = model.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        return False
    return (CATALOG_MODELS_DIR / model / "source.yaml").is_file()


def load_profile(model: str) -> ModelProfile:
    """Load a catalog model by id (`org/name`), or a local directory holding config.json."""
    if is_catalog_id(model):
        return _catalog_profile(model)
    path = Path(model).expanduser()
    if path.is_dir():
        return load_profile_from_dir(path, model)
    close = [m for m in catalog_ids() if model.lower().split("/")[-1] in m.lower()]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise ModelError(
        f"unknown model {model!r}: not a catalog id and not a directory with config.json{hint}"
    )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "AttentionKind",
    "AudioEncoder",
    "CheckpointQuantization",
    "Layer",
    "ModelError",
    "ModelProfile",
    "ParamCounts",
    "TextModel",
    "VisionTower",
    "catalog_ids",
    "catalog_source",
    "ceil_div",
    "is_catalog_id",
    "load_profile",
    "parse_model_files",
    "profile_from_files",
    "read_model_files",
]
