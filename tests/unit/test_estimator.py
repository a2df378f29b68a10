"""vLLM start-up accounting: behaviour of each term and of the verdict."""

from __future__ import annotations

import pytest

from mmop.catalog import resolve_gpu
from mmop.estimator import (
    EngineArgs,
    EstimateError,
    batch_defaults,
    estimate,
    kv_groups,
)
from mmop.model import load_profile

QWEN25 = load_profile("Qwen/Qwen2.5-VL-7B-Instruct")
H100 = resolve_gpu("H100")
L4 = resolve_gpu("L4")


def test_budget_is_a_fraction_of_total_memory() -> None:
    est = estimate(QWEN25, H100, EngineArgs(gpu_memory_utilization=0.5))
    assert est.requested_gib == pytest.approx(H100.memory_gib * 0.5, abs=1e-3)


def test_available_kv_is_budget_minus_every_other_term() -> None:
    est = estimate(QWEN25, H100, EngineArgs(max_model_len=32768))
    rest = est.weights_gib + est.non_torch_gib + est.activation_gib + est.cudagraph_gib
    rest += est.sampler_state_gib
    assert est.kv_cache_gib == pytest.approx(est.requested_gib - rest, abs=1e-3)


def test_full_attention_tokens_follow_bytes_per_token() -> None:
    est = estimate(QWEN25, H100, EngineArgs(max_model_len=32768))
    assert est.kv_bytes_per_token == 57344
    expected_blocks = int(est.kv_cache_gib * 1024**3 // (57344 * 16))
    assert abs(est.kv_cache_blocks - expected_blocks) <= 1
    assert est.kv_cache_tokens == pytest.approx(est.kv_cache_blocks * 16, rel=1e-3)
    assert est.max_concurrency == pytest.approx(est.kv_cache_tokens / 32768, abs=0.01)


def test_fp8_kv_cache_halves_bytes_and_doubles_tokens() -> None:
    base = estimate(QWEN25, H100, EngineArgs(max_model_len=32768))
    fp8 = estimate(QWEN25, H100, EngineArgs(max_model_len=32768, kv_cache_dtype="fp8"))
    assert fp8.kv_bytes_per_token * 2 == base.kv_bytes_per_token
    assert fp8.kv_cache_tokens == pytest.approx(2 * base.kv_cache_tokens, rel=0.01)


def test_tensor_parallel_splits_weights_and_kv_heads() -> None:
    one = estimate(QWEN25, H100, EngineArgs(max_model_len=32768))
    two = estimate(QWEN25, H100, EngineArgs(max_model_len=32768, tensor_parallel_size=2))
    assert two.weights_gib < 0.55 * one.weights_gib
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token
    assert two.non_torch_gib > one.non_torch_gib


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    profile = load_profile("Qwen/Qwen2-VL-2B-Instruct")  # 12 heads, 2 KV heads
    four = estimate(profile, H100, EngineArgs(tensor_parallel_size=4))
    two = estimate(profile, H100, EngineArgs(tensor_parallel_size=2))
    assert four.kv_bytes_per_token == two.kv_bytes_per_token


def test_data_mode_keeps_a_whole_vision_tower_per_gpu() -> None:
    weights = estimate(QWEN25, H100, EngineArgs(tensor_parallel_size=2))
    data = estimate(QWEN25, H100, EngineArgs(tensor_parallel_size=2, mm_encoder_tp_mode="data"))
    assert data.weights_gib > weights.weights_gib


def test_tp_must_divide_attention_heads() -> None:
    with pytest.raises(EstimateError, match=r"attention heads \(28\) must be divisible"):
        estimate(QWEN25, H100, EngineArgs(tensor_parallel_size=8))


def test_enforce_eager_has_no_graph_memory() -> None:
    eager = estimate(QWEN25, H100, EngineArgs(enforce_eager=True))
    graphs = estimate(QWEN25, H100, EngineArgs())
    assert eager.cudagraph_gib == 0
    assert eager.kv_cache_gib == pytest.approx(graphs.kv_cache_gib + graphs.cudagraph_gib, abs=1e-3)


def test_graphs_come_out_of_kv_only_from_vllm_0_20() -> None:
    new = estimate(QWEN25, H100, EngineArgs(gpu_memory_utilization=0.9, vllm_version="0.20.0"))
    old = estimate(QWEN25, H100, EngineArgs(gpu_memory_utilization=0.9, vllm_version="0.19.1"))
    assert new.cudagraph_subtracted_before_kv and not old.cudagraph_subtracted_before_kv
    assert old.kv_cache_gib == pytest.approx(new.kv_cache_gib + new.cudagraph_gib, abs=1e-3)


def test_hardware_dependent_batch_defaults() -> None:
    assert batch_defaults(resolve_gpu("L4")) == (2048, 256)
    assert batch_defaults(resolve_gpu("A100-80GB")) == (2048, 256)
    assert batch_defaults(resolve_gpu("H100")) == (8192, 1024)
    assert batch_defaults(resolve_gpu("B200")) == (16384, 1024)
    assert batch_defaults(resolve_gpu("B200"), (0, 27, 0)) == (8192, 1024)
    est = estimate(QWEN25, L4, EngineArgs(max_model_len=4096))
    assert (est.max_num_batched_tokens, est.max_num_seqs) == (2048, 256)


def test_video_off_shrinks_the_encoder_profile() -> None:
    both = estimate(QWEN25, H100, EngineArgs(max_model_len=128000))
    image_only = estimate(
        QWEN25, H100, EngineArgs(max_model_len=128000, limit_mm_per_prompt={"video": 0})
    )
    assert "video" in both.mm_profile and "image" in image_only.mm_profile
    assert image_only.activation_encoder_gib < both.activation_encoder_gib
    assert image_only.kv_cache_gib > both.kv_cache_gib


def test_max_pixels_shrinks_image_tokens_and_profile() -> None:
    small = EngineArgs(
        max_model_len=32768,
        limit_mm_per_prompt={"video": 0},
        mm_processor_kwargs={"max_pixels": 1280 * 28 * 28},
    )
    est = estimate(QWEN25, H100, small)
    full = estimate(QWEN25, H100, EngineArgs(max_model_len=32768, limit_mm_per_prompt={"video": 0}))
    assert est.max_tokens_per_image == 1280 and full.max_tokens_per_image == 16384
    assert est.activation_encoder_gib < full.activation_encoder_gib


def test_dummy_size_in_limit_shrinks_the_profile() -> None:
    sized = EngineArgs(
        max_model_len=32768,
        limit_mm_per_prompt={"image": {"count": 2, "width": 512, "height": 512}, "video": 0},
    )
    plain = EngineArgs(max_model_len=32768, limit_mm_per_prompt={"image": 2, "video": 0})
    assert (
        estimate(QWEN25, H100, sized).activation_encoder_gib
        < estimate(QWEN25, H100, plain).activation_encoder_gib
    )


def test_text_model_has_no_encoder_term() -> None:
    est = estimate(load_profile("Qwen/Qwen3-32B"), H100, EngineArgs(max_model_len=16000))
    assert est.activation_encoder_gib == 0 and est.max_tokens_per_image is None


def test_weights_that_exceed_the_budget_do_not_fit() -> None:
    est = estimate(load_profile("Qwen/Qwen2.5-VL-72B-Instruct"), H100, EngineArgs())
    assert not est.fits and "Model weights take" in est.reason


def test_a_max_length_request_that_does_not_fit_gets_vllms_reason() -> None:
    est = estimate(load_profile("Qwen/Qwen3-32B"), H100, EngineArgs(max_model_len=40960))
    assert not est.fits
    assert "To serve at least one request with the models's max seq len (40960)" in est.reason
    assert f"estimated maximum model length is {est.max_model_len_fit}" in est.reason
    assert 0 < est.max_model_len_fit < 40960
    ok = estimate(
        load_profile("Qwen/Qwen3-32B"), H100, EngineArgs(max_model_len=est.max_model_len_fit)
    )
    assert ok.fits


def test_max_model_len_beyond_the_model_is_refused() -> None:
    with pytest.raises(EstimateError, match="greater than the derived max_model_len"):
        estimate(load_profile("llava-hf/llava-1.5-7b-hf"), H100, EngineArgs(max_model_len=8192))


def test_bf16_on_t4_is_refused_and_auto_falls_back_to_fp16() -> None:
    t4 = resolve_gpu("T4")
    profile = load_profile("Qwen/Qwen2.5-0.5B-Instruct")
    refused = estimate(profile, t4, EngineArgs(dtype="bfloat16"))
    assert not refused.fits and "Bfloat16" in refused.reason
    assert estimate(profile, t4, EngineArgs()).dtype == "float16"


def test_fp8_weights_follow_the_pinned_vllm_fp8_marlin_from_turing() -> None:
    # vLLM 0.32.0: Fp8Config / online fp8 need capability 75; below 8.9 FP8 Marlin runs them
    # weight-only, with 16-bit activations (see mmop.capabilities)
    est = estimate(
        load_profile("Qwen/Qwen2.5-0.5B-Instruct"),
        resolve_gpu("T4"),
        EngineArgs(quantization="fp8"),
    )
    assert est.fits and est.dtype == "float16"


def test_quantized_weights_are_smaller_and_vision_stays_16_bit() -> None:
    awq = estimate(
        load_profile("Qwen/Qwen2.5-VL-7B-Instruct-AWQ"), L4, EngineArgs(max_model_len=8192)
    )
    bf16 = estimate(QWEN25, L4, EngineArgs(max_model_len=8192))
    assert awq.weights_gib < 0.5 * bf16.weights_gib
    profile = load_profile("Qwen/Qwen2.5-VL-7B-Instruct-AWQ")
    vision_gib = profile.params.vision * 2 / 1024**3
    assert awq.weights_gib > vision_gib


def test_online_fp8_roughly_halves_language_model_weights() -> None:
    fp8 = estimate(load_profile("Qwen/Qwen3-32B"), H100, EngineArgs(quantization="fp8"))
    bf16 = estimate(load_profile("Qwen/Qwen3-32B"), H100, EngineArgs())
    assert 0.45 < fp8.weights_gib / bf16.weights_gib < 0.6


def test_gemma3_hybrid_groups_pad_sliding_layers() -> None:
    groups = kv_groups(load_profile("google/gemma-3-27b-it"))
    assert [g.kind for g in groups].count("full") == 1
    assert [g.kind for g in groups].count("sliding") == 6  # 52 sliding layers in groups of 10
    assert {g.layers for g in groups} == {10}


def test_gemma3_sliding_layers_hold_more_requests_than_all_full_would() -> None:
    profile = load_profile("google/gemma-3-27b-it")
    est = estimate(profile, H100, EngineArgs(max_model_len=32768))
    full_only_tokens = est.kv_cache_gib * 1024**3 / est.kv_bytes_per_token
    assert est.kv_cache_tokens > 2 * full_only_tokens


def test_default_utilization_follows_the_version() -> None:
    assert estimate(QWEN25, H100, EngineArgs(vllm_version="0.19.1")).gpu_memory_utilization == 0.9
    assert estimate(QWEN25, H100, EngineArgs()).gpu_memory_utilization == 0.92


def test_older_versions_report_blocks_over_groups() -> None:
    profile = load_profile("google/gemma-3-4b-it")
    old = estimate(
        profile, H100, EngineArgs(max_model_len=8192, vllm_version="0.10.0", vllm_use_v1=True)
    )
    assert old.kv_cache_tokens == old.kv_cache_blocks // len(old.kv_groups) * old.block_size


@pytest.mark.parametrize(
    ("version", "use_v1", "words"),
    [("0.6.4", False, "runs its V0 engine by default"), ("0.6.4", True, "runs its V0 engine"),
     ("0.8.4", False, "falls back to its V0 engine"), ("0.10.2", False, "VLLM_USE_V1=1")],
)  # fmt: skip
def test_a_release_whose_v0_engine_may_run_gets_no_verdict(
    version: str, use_v1: bool, words: str
) -> None:
    """Issue finding: start-ups of vLLM's V0 engine got a confident wrong verdict (a fit where
    V0 refused). mmop models V1 only: releases that may run V0 get none."""
    from mmop.estimator import NoVerdict

    with pytest.raises(NoVerdict, match=words):
        estimate(QWEN25, H100, EngineArgs(vllm_version=version, vllm_use_v1=use_v1))
    forced = estimate(QWEN25, H100, EngineArgs(vllm_version="0.10.2", vllm_use_v1=True))
    assert forced.fits
    assert estimate(QWEN25, H100, EngineArgs(vllm_version="0.11.0")).fits  # V0 gone


def test_kv_cache_memory_flag_overrides_the_budget() -> None:
    est = estimate(QWEN25, H100, EngineArgs(kv_cache_memory_bytes=4 * 1024**3))
    assert est.kv_cache_gib == pytest.approx(4.0)


@pytest.mark.parametrize("bad", [{"image": -1}, {"smell": 1}])
def test_bad_mm_limits_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        EngineArgs(limit_mm_per_prompt=bad)


# --- what the GPU and the pinned vLLM accept (mmop.capabilities) ---------------------------------

T4 = resolve_gpu("T4")
GEMMA3 = load_profile("google/gemma-3-4b-it")


def test_gemma3_on_t4_runs_in_float32_with_twice_the_weights() -> None:
    t4 = estimate(GEMMA3, T4, EngineArgs(max_model_len=8192))
    l4 = estimate(GEMMA3, L4, EngineArgs(max_model_len=8192))
    assert t4.dtype == "float32" and l4.dtype == "bfloat16"
    overhead = 0.05  # Calibration.weights_overhead_gib
    assert t4.weights_gib - overhead == pytest.approx(2 * (l4.weights_gib - overhead), rel=1e-3)
    assert t4.kv_bytes_per_token == 2 * l4.kv_bytes_per_token


def test_explicit_float16_for_gemma3_is_refused_as_vllm_does() -> None:
    with pytest.raises(EstimateError, match="'gemma3' does not support float16"):
        estimate(GEMMA3, L4, EngineArgs(dtype="half", max_model_len=8192))


def test_fp8_kv_cache_on_t4_is_refused_with_the_reason() -> None:
    est = estimate(QWEN25, T4, EngineArgs(max_model_len=8192, kv_cache_dtype="fp8"))
    assert not est.fits
    assert "FP8 KV cache is not supported by the Triton attention backend on T4" in est.reason
    assert "requires SM89+" in est.reason


def test_fp8_kv_cache_runs_from_ampere_except_gemma3_below_ada() -> None:
    a100 = resolve_gpu("A100-80GB")
    assert estimate(QWEN25, a100, EngineArgs(max_model_len=8192, kv_cache_dtype="fp8")).fits
    gemma = estimate(GEMMA3, a100, EngineArgs(max_model_len=8192, kv_cache_dtype="fp8"))
    assert not gemma.fits and "requires SM89+" in gemma.reason
    assert estimate(GEMMA3, L4, EngineArgs(max_model_len=8192, kv_cache_dtype="fp8")).fits


def test_fp8_weights_with_float32_activations_are_refused() -> None:
    est = estimate(GEMMA3, T4, EngineArgs(max_model_len=8192, quantization="fp8"))
    assert not est.fits
    assert "torch.float32 is not supported for quantization method fp8" in est.reason


@pytest.mark.parametrize("method", ["awq", "awq_marlin", "gptq", "gptq_marlin"])
def test_awq_or_gptq_on_a_checkpoint_without_that_quantization_config_is_an_error(
    method: str,
) -> None:
    with pytest.raises(EstimateError) as info:
        estimate(QWEN25, L4, EngineArgs(quantization=method))
    message = str(info.value)
    assert "\n" not in message
    assert f"--quantization {method} needs a checkpoint quantized with {method}" in message
    assert "Qwen/Qwen2.5-VL-7B-Instruct has no quantization_config" in message


def test_online_fp8_of_a_bf16_checkpoint_and_the_checkpoints_own_awq_are_legal() -> None:
    assert estimate(QWEN25, L4, EngineArgs(quantization="fp8", max_model_len=8192)).fits
    awq = load_profile("Qwen/Qwen2.5-VL-7B-Instruct-AWQ")
    assert estimate(awq, L4, EngineArgs(max_model_len=8192)).quantization == "awq"
    assert estimate(awq, L4, EngineArgs(quantization="awq", max_model_len=8192)).fits
    with pytest.raises(EstimateError, match=r"model config \(awq\) does not match"):
        estimate(awq, L4, EngineArgs(quantization="fp8", max_model_len=8192))


def test_bitsandbytes_is_not_in_the_pinned_vllm() -> None:
    with pytest.raises(EstimateError, match="Unknown quantization method: bitsandbytes") as info:
        estimate(QWEN25, L4, EngineArgs(quantization="bitsandbytes"))
    assert "needs a checkpoint" not in str(info.value)


def test_sampler_sorts_the_vocabulary_before_vllm_0_17() -> None:
    """Before 0.17.0 the dummy sampler's top-k/top-p sorts rows × vocabulary in PyTorch (38
    bytes per element at its peak); from 0.17.0 a Triton kernel does it (calibrated 32)."""
    qwen3_32b = load_profile("Qwen/Qwen3-32B")
    args = {"max_model_len": 16000, "gpu_memory_utilization": 0.9}
    old = estimate(qwen3_32b, H100, EngineArgs(vllm_version="0.11.0", **args))
    new = estimate(qwen3_32b, H100, EngineArgs(vllm_version="0.17.0", **args))
    rows, vocab = 1024, qwen3_32b.text.vocab_size
    hidden = 8192 * qwen3_32b.text.hidden_size * 2
    assert old.activation_text_gib == pytest.approx(
        (rows * vocab * 38 + hidden) / 1024**3, abs=1e-3
    )
    assert new.activation_text_gib == pytest.approx(
        (rows * vocab * 32 + hidden) / 1024**3, abs=1e-3
    )
    # llm-d's vLLM 0.11.0 H100 measurement of this start-up: activation 5.64 GiB, KV 4.45 GiB
    assert old.activation_gib == pytest.approx(5.64, abs=0.1)
    assert old.kv_cache_gib == pytest.approx(4.45, rel=0.05)


def test_model_runner_v2_samples_the_dummy_batch_without_fp32_copies() -> None:
    """vLLM 0.32.0 profiles with Model Runner V2, whose dummy sampler run holds the logits only
    (no sampling parameters: v1/worker/gpu/sample/sampler.py l. 237-238); 0.31.0 is counted
    with the V1 runner's fp32 copies (32 bytes per row x vocabulary entry)."""
    args = EngineArgs(max_model_len=8192)
    old = estimate(QWEN25, H100, args.model_copy(update={"vllm_version": "0.31.0"}))
    new = estimate(QWEN25, H100, args)
    rows, vocab = 1024, QWEN25.text.vocab_size
    assert old.activation_text_gib == pytest.approx(
        (rows * vocab * 32 + 8192 * QWEN25.text.hidden_size * 2) / 2**30, abs=1e-3
    )
    assert new.activation_text_gib < old.activation_text_gib / 3
    # ... and keeps per-request vocabulary state for the engine's life, counted against the KV
    # cache: int32 output counts plus two bit masks (penalties.py l. 40-47, structured_outputs.py
    # l. 85-90).
    words = -(-vocab // 32)
    assert new.sampler_state_gib == pytest.approx(rows * 4 * (vocab + 2 * words) / 2**30, abs=1e-3)
    assert old.sampler_state_gib == 0
    assert new.kv_cache_gib > old.kv_cache_gib


def test_model_runner_v2_state_is_sized_by_max_num_seqs() -> None:
    small = estimate(QWEN25, L4, EngineArgs(max_model_len=8192, max_num_seqs=16))
    large = estimate(QWEN25, L4, EngineArgs(max_model_len=8192, max_num_seqs=256))
    assert large.sampler_state_gib == pytest.approx(16 * small.sampler_state_gib, abs=2e-3)
    assert small.sampler_state_gib > 0
