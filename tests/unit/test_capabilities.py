"""The capability table: each row's rule as the pinned vLLM applies it, by compute capability."""

from __future__ import annotations

import pytest

from mmop.capabilities import (
    ROWS,
    TABLE,
    VllmRefusal,
    attention,
    checkpoint_quantization,
    parse_capability,
    refusal,
    resolve_dtype,
    supported_dtypes,
)
from mmop.catalog import load_gpus

T4, A100, A10, L4, H100, B200, RTX5090 = 75, 80, 86, 89, 90, 100, 120


def test_every_row_cites_the_source_it_was_read_from() -> None:
    assert len({row.key for row in TABLE}) == len(TABLE) == len(ROWS)
    for row in TABLE:
        assert row.sources and row.runs_as and row.amd
        for source in row.sources:
            assert "vllm/" in source and "line" in source, (row.key, source)


def test_catalog_capabilities_parse_as_vllm_counts_them() -> None:
    assert parse_capability("7.5") == 75 and parse_capability("12.0") == 120
    assert parse_capability(None) is None
    caps = {gpu.name: parse_capability(gpu.compute_capability) for gpu in load_gpus()}
    assert caps["T4"] == T4 and caps["B200"] == B200 and caps["MI300X"] is None


@pytest.mark.parametrize(
    ("cap", "dtypes"),
    [
        (T4, ("float16", "float32")),
        (A100, ("bfloat16", "float16", "float32")),
        (H100, ("bfloat16", "float16", "float32")),
        (52, ("float32",)),
    ],
)
def test_platform_dtypes_follow_cuda_platform_supported_dtypes(
    cap: int, dtypes: tuple[str, ...]
) -> None:
    assert supported_dtypes(cap) == dtypes


# --- dtype resolution ---------------------------------------------------------------------------


def test_gemma3_on_t4_resolves_to_float32() -> None:
    # no bfloat16 below SM 8.0, and gemma3 refuses float16: float32 is what is left
    assert resolve_dtype("gemma3", "bfloat16", "auto", T4) == "float32"
    assert resolve_dtype("gemma3_text", "bfloat16", "auto", T4) == "float32"


def test_bf16_checkpoints_fall_back_to_float16_on_t4_and_stay_bf16_from_ampere() -> None:
    assert resolve_dtype("qwen2_5_vl", "bfloat16", "auto", T4) == "float16"
    for cap in (A100, A10, L4, H100, B200, RTX5090):
        assert resolve_dtype("qwen2_5_vl", "bfloat16", "auto", cap) == "bfloat16"


def test_float16_checkpoints_stay_float16_and_float32_configs_take_the_platform_default() -> None:
    assert resolve_dtype("llava", "float16", "auto", A100) == "float16"
    assert resolve_dtype("llama", "float32", "auto", A100) == "bfloat16"
    assert resolve_dtype("llama", "float32", "auto", T4) == "float16"
    assert resolve_dtype("gemma3", "float32", "auto", T4) == "float32"
    assert resolve_dtype("llama", None, "auto", H100) == "bfloat16"  # no dtype: float32


def test_explicit_float16_on_a_model_type_that_refuses_it_is_vllms_error() -> None:
    with pytest.raises(VllmRefusal, match="'gemma3' does not support float16"):
        resolve_dtype("gemma3", "bfloat16", "half", A100)
    assert resolve_dtype("qwen2", "bfloat16", "half", A100) == "float16"
    # explicit bfloat16 resolves; the worker refuses it below 8.0 (see refusal)
    assert resolve_dtype("qwen2", "bfloat16", "bfloat16", T4) == "bfloat16"


def test_amd_has_every_dtype() -> None:
    assert resolve_dtype("gemma3", "bfloat16", "auto", None, "amd") == "bfloat16"


# --- refusals -----------------------------------------------------------------------------------


def test_bf16_on_t4_is_the_workers_refusal_and_bf16_on_a100_runs() -> None:
    reason = refusal(compute_capability=T4, dtype="bfloat16", gpu_name="T4")
    assert reason is not None and reason.startswith("Bfloat16 is only supported on GPUs")
    assert "Your T4 GPU has compute capability 7.5" in reason
    assert refusal(compute_capability=A100, dtype="bfloat16") is None


def test_fp8_kv_cache_on_t4_is_refused_by_the_only_backend_it_has() -> None:
    verdict = attention(T4, "float16", "fp8", gpu_name="T4")
    assert verdict.backend == "TRITON_ATTN"
    assert verdict.refusal is not None and "requires SM89+" in verdict.refusal
    assert "--kv-cache-dtype float16" in verdict.refusal
    assert refusal(compute_capability=T4, dtype="float16", kv_cache_dtype="fp8") is not None


@pytest.mark.parametrize(
    ("cap", "backend"),
    [(A100, "FLASHINFER"), (A10, "FLASHINFER"), (L4, "FLASHINFER"), (H100, "FLASH_ATTN"),
     (B200, "FLASHINFER"), (RTX5090, "FLASHINFER")],
)  # fmt: skip
def test_fp8_kv_cache_from_ampere_on(cap: int, backend: str) -> None:
    assert attention(cap, "bfloat16", "fp8") == attention(cap, "bfloat16", "fp8_e4m3")
    verdict = attention(cap, "bfloat16", "fp8")
    assert verdict.backend == backend and verdict.refusal is None


def test_fp8_kv_cache_below_ada_needs_flashinfer() -> None:
    # a multimodal-prefix model (Gemma 3) or a head size FlashInfer lacks falls to Triton
    assert attention(A100, "bfloat16", "fp8", mm_prefix=True).refusal is not None
    assert attention(A10, "bfloat16", "fp8", head_size=96).refusal is not None
    assert attention(L4, "bfloat16", "fp8", mm_prefix=True).refusal is None
    assert attention(H100, "bfloat16", "fp8", mm_prefix=True).refusal is None


def test_auto_kv_cache_backends() -> None:
    assert attention(T4, "float16").backend == "TRITON_ATTN"
    assert attention(T4, "float32").backend == "TRITON_ATTN"
    assert attention(A100, "bfloat16").backend == "FLASH_ATTN"
    assert attention(B200, "bfloat16").backend == "FLASHINFER"
    assert attention(A100, "float32").backend == "TRITON_ATTN"


def test_fp8_weights_run_from_turing_in_16_bit_activations_only() -> None:
    row = ROWS["fp8-weights"]
    assert row.min_capability == 75 and "Marlin" in row.runs_as
    assert refusal(compute_capability=T4, dtype="float16", quantization="fp8") is None
    assert refusal(compute_capability=A100, dtype="bfloat16", quantization="fp8") is None
    reason = refusal(compute_capability=T4, dtype="float32", quantization="fp8")
    assert reason == (
        "torch.float32 is not supported for quantization method fp8. "
        "Supported dtypes: [torch.bfloat16, torch.float16]"
    )
    below = refusal(compute_capability=70, dtype="float16", quantization="fp8")
    assert below == (
        "The quantization method fp8 is not supported for the current GPU. "
        "Minimum capability: 75. Current capability: 70."
    )


@pytest.mark.parametrize(
    ("method", "minimum"),
    [("awq", 75), ("awq_marlin", 75), ("auto_awq", 75), ("gptq", 60), ("gptq_marlin", 60),
     ("compressed-tensors", 70), ("fp8", 75)],
)  # fmt: skip
def test_quantization_minimum_capabilities(method: str, minimum: int) -> None:
    assert refusal(compute_capability=minimum, dtype="float16", quantization=method) is None
    below = refusal(compute_capability=minimum - 1, dtype="float16", quantization=method)
    assert below is not None and f"Minimum capability: {minimum}." in below


def test_rows_state_the_minimums_the_functions_apply() -> None:
    assert ROWS["bfloat16"].min_capability == 80
    assert ROWS["fp8-kv-cache"].min_capability == 80
    assert ROWS["awq"].min_capability == 75 and ROWS["gptq"].min_capability == 60
    assert ROWS["compressed-tensors"].min_capability == 70
    assert ROWS["bitsandbytes"].min_capability is None


def test_amd_applies_rocms_list_and_leaves_the_rest_unchecked() -> None:
    assert (
        refusal(compute_capability=None, vendor="amd", dtype="bfloat16", quantization="fp8") is None
    )
    assert refusal(
        compute_capability=None, vendor="amd", dtype="bfloat16", kv_cache_dtype="fp8"
    ) is None  # fmt: skip
    reason = refusal(
        compute_capability=None, vendor="amd", dtype="float16", quantization="gptq_marlin"
    )
    assert reason == "gptq_marlin quantization is currently not supported in rocm."


# --- quantization and the checkpoint ------------------------------------------------------------


def test_awq_and_gptq_need_a_checkpoint_that_has_them() -> None:
    with pytest.raises(VllmRefusal, match="Cannot find the config file for awq"):
        checkpoint_quantization("awq", None)
    with pytest.raises(VllmRefusal, match="Cannot find the config file for gptq_marlin"):
        checkpoint_quantization("gptq_marlin", None)
    with pytest.raises(VllmRefusal, match="Cannot find the config file for compressed-tensors"):
        checkpoint_quantization("compressed-tensors", None)


def test_online_fp8_of_a_16_bit_checkpoint_is_legal() -> None:
    assert checkpoint_quantization("fp8", None) == "fp8"
    assert checkpoint_quantization(None, None) is None


def test_a_checkpoints_method_wins_and_a_conflicting_flag_is_refused() -> None:
    assert checkpoint_quantization(None, "awq") == "auto_awq"
    assert checkpoint_quantization("awq_marlin", "awq") == "auto_awq"
    assert checkpoint_quantization(None, "gptq") == "auto_gptq"
    assert checkpoint_quantization(None, "fp8") == "fp8"
    assert checkpoint_quantization("fp8", "fp8") == "fp8"
    assert checkpoint_quantization(None, "compressed-tensors") == "compressed-tensors"
    with pytest.raises(VllmRefusal, match=r"model config \(awq\) does not match .* \(fp8\)"):
        checkpoint_quantization("fp8", "awq")


def test_bitsandbytes_is_not_a_method_of_the_pinned_release() -> None:
    with pytest.raises(VllmRefusal, match="Unknown quantization method: bitsandbytes"):
        checkpoint_quantization("bitsandbytes", None)


def test_an_mxfp4_gpt_oss_checkpoint_is_served_as_gpt_oss_mxfp4_whatever_the_flag() -> None:
    """GptOssMxfp4Config.override_quantization_method (quantization/mxfp4.py at 0.32.0)."""
    for flag in (None, "mxfp4", "gpt_oss_mxfp4", "fp8"):
        assert checkpoint_quantization(flag, "mxfp4", "gpt_oss") == "gpt_oss_mxfp4"
    # Another model type's MXFP4 checkpoint is not claimed: the flag must agree with it.
    assert checkpoint_quantization("mxfp4", "mxfp4", "teapot_moe") == "mxfp4"
    with pytest.raises(VllmRefusal, match="does not match"):
        checkpoint_quantization("fp8", "mxfp4", "teapot_moe")
