"""Replica performance model: behaviour, and agreement with cited public figures."""

from __future__ import annotations

import itertools

import pytest

from mmop import modalities
from mmop.catalog import resolve_gpu
from mmop.model import load_profile
from mmop.perf import (
    PerfWorkload,
    ReplicaPerformance,
    estimate_performance,
    replica_capacity,
)

H100 = resolve_gpu("H100")
A100 = resolve_gpu("A100-40GB")
A100_80 = resolve_gpu("A100-80GB")
RTX4090 = resolve_gpu("RTX-4090")
LLAMA8B = load_profile("meta-llama/Llama-3.1-8B-Instruct")
QWEN_VL_7B = load_profile("Qwen/Qwen2.5-VL-7B-Instruct")
QWEN_VL_72B = load_profile("Qwen/Qwen2.5-VL-72B-Instruct")
QWEN3_MOE = load_profile("Qwen/Qwen3-VL-30B-A3B-Instruct")
QWEN3_8B = load_profile("Qwen/Qwen3-VL-8B-Instruct")
MISTRAL = load_profile("mistralai/Mistral-7B-Instruct-v0.3")

CHAT = PerfWorkload(prompt_tokens=1024, output_tokens=256)


def _fields(p: ReplicaPerformance) -> list[float]:
    return [float(v) for v in p.model_dump().values()]


def test_more_concurrency_raises_throughput_and_tpot() -> None:
    points = [estimate_performance(LLAMA8B, H100, CHAT, concurrency=c) for c in (1, 4, 16, 64, 256)]
    for low, high in itertools.pairwise(points):
        assert high.decode_tokens_per_second > low.decode_tokens_per_second
        assert high.requests_per_second > low.requests_per_second
        assert high.tpot_seconds > low.tpot_seconds
        assert high.ttft_p95_seconds >= low.ttft_p95_seconds


def test_tensor_parallel_lowers_tpot_of_a_big_model() -> None:
    w = PerfWorkload(prompt_tokens=512, output_tokens=256)
    one = estimate_performance(QWEN_VL_72B, H100, w, quantization="fp8")
    two = estimate_performance(QWEN_VL_72B, H100, w, tensor_parallel_size=2, quantization="fp8")
    assert two.tpot_seconds < 0.7 * one.tpot_seconds
    assert two.ttft_seconds < one.ttft_seconds


def test_tensor_parallel_is_less_than_linear() -> None:
    w = PerfWorkload(prompt_tokens=512, output_tokens=256)
    one = estimate_performance(QWEN_VL_72B, H100, w, tensor_parallel_size=2)
    two = estimate_performance(QWEN_VL_72B, H100, w, tensor_parallel_size=4)
    assert two.tpot_seconds > one.tpot_seconds / 2


def test_pcie_pays_more_for_tensor_parallel_than_nvlink() -> None:
    w = PerfWorkload(prompt_tokens=512, output_tokens=256)
    pcie = resolve_gpu("H100-PCIe")
    nv = estimate_performance(LLAMA8B, H100, w, tensor_parallel_size=2, concurrency=64)
    pc = estimate_performance(LLAMA8B, pcie, w, tensor_parallel_size=2, concurrency=64)
    nv1 = estimate_performance(LLAMA8B, H100, w, concurrency=64)
    pc1 = estimate_performance(LLAMA8B, pcie, w, concurrency=64)
    assert pc.tpot_seconds / pc1.tpot_seconds > nv.tpot_seconds / nv1.tpot_seconds


def test_fp8_on_h100_decodes_and_prefills_faster_than_bf16() -> None:
    bf16 = estimate_performance(LLAMA8B, H100, CHAT, concurrency=32)
    fp8 = estimate_performance(LLAMA8B, H100, CHAT, concurrency=32, quantization="fp8")
    assert fp8.tpot_seconds < bf16.tpot_seconds
    assert fp8.decode_tokens_per_second > bf16.decode_tokens_per_second
    assert fp8.ttft_seconds < bf16.ttft_seconds  # W8A8 on the FP8 tensor cores


def test_fp8_on_ampere_is_weight_only() -> None:
    long_prompt = PerfWorkload(prompt_tokens=8192, output_tokens=64)
    bf16 = estimate_performance(LLAMA8B, A100_80, long_prompt)
    fp8 = estimate_performance(LLAMA8B, A100_80, long_prompt, quantization="fp8")
    assert fp8.tpot_seconds < bf16.tpot_seconds  # fewer bytes per step
    # Prefill is compute-bound at the bf16 rate either way: no FP8 speed-up.
    assert fp8.ttft_seconds == pytest.approx(bf16.ttft_seconds, rel=0.05)


def test_int4_weights_decode_faster_but_prefill_at_bf16() -> None:
    long_prompt = PerfWorkload(prompt_tokens=8192, output_tokens=64)
    bf16 = estimate_performance(LLAMA8B, H100, long_prompt)
    awq = estimate_performance(LLAMA8B, H100, long_prompt, quantization="awq_marlin")
    assert awq.tpot_seconds < 0.6 * bf16.tpot_seconds
    assert awq.ttft_seconds == pytest.approx(bf16.ttft_seconds, rel=0.05)


def test_fp8_kv_cache_helps_long_context_decode() -> None:
    w = PerfWorkload(prompt_tokens=32768, output_tokens=256)
    auto = estimate_performance(LLAMA8B, H100, w, concurrency=16)
    fp8 = estimate_performance(LLAMA8B, H100, w, concurrency=16, kv_cache_dtype="fp8")
    assert fp8.decode_step_seconds < auto.decode_step_seconds


def test_more_image_tokens_raise_ttft_and_encoder_time() -> None:
    small = modalities.image_cost(QWEN_VL_7B, 448, 448)
    large = modalities.image_cost(QWEN_VL_7B, 1920, 1080)
    assert large.tokens > small.tokens
    runs = [
        estimate_performance(
            QWEN_VL_7B, H100, PerfWorkload(prompt_tokens=64, output_tokens=128, mm_items=items)
        )
        for items in ((), (small,), (large,), (large, large))
    ]
    ttfts = [r.ttft_seconds for r in runs]
    assert ttfts == sorted(ttfts) and len(set(ttfts)) == 4
    assert runs[0].encoder_seconds == 0
    assert 0 < runs[1].encoder_seconds < runs[2].encoder_seconds < runs[3].encoder_seconds


def test_items_need_the_matching_encoder() -> None:
    image = modalities.image_cost(QWEN_VL_7B, 448, 448)
    with pytest.raises(ValueError, match="no vision encoder"):
        estimate_performance(
            MISTRAL, H100, PerfWorkload(prompt_tokens=8, output_tokens=8, mm_items=(image,))
        )
    with pytest.raises(ValueError, match="no audio encoder"):
        estimate_performance(
            QWEN_VL_7B, H100, PerfWorkload(prompt_tokens=8, output_tokens=8, audio_items=(image,))
        )


def test_moe_decode_reads_active_parameters() -> None:
    w = PerfWorkload(prompt_tokens=512, output_tokens=256)
    moe = estimate_performance(QWEN3_MOE, H100, w)  # 30B total, 3B active
    dense = estimate_performance(QWEN3_8B, H100, w)
    assert QWEN3_MOE.params.language_model > 3 * QWEN3_8B.params.language_model
    assert moe.tpot_seconds < dense.tpot_seconds
    # At large batches the tokens touch every expert and the step reads all of them.
    big_moe = estimate_performance(QWEN3_MOE, H100, w, concurrency=256)
    assert big_moe.decode_step_seconds > 3 * moe.decode_step_seconds


@pytest.mark.parametrize("concurrency", [1, 7, 64, 512])
@pytest.mark.parametrize("output_tokens", [1, 2, 300])
def test_nothing_is_negative_or_nan(concurrency: int, output_tokens: int) -> None:
    w = PerfWorkload(
        prompt_tokens=0,
        output_tokens=output_tokens,
        mm_items=(modalities.image_cost(QWEN_VL_7B, 640, 480),),
    )
    p = estimate_performance(QWEN_VL_7B, RTX4090, w, concurrency=concurrency)
    assert all(v >= 0 and v == v for v in _fields(p))
    assert p.ttft_p95_seconds >= p.ttft_seconds
    assert p.tpot_p95_seconds >= p.tpot_seconds


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        estimate_performance(LLAMA8B, H100, CHAT, concurrency=0)
    with pytest.raises(ValueError, match="quantization"):
        estimate_performance(LLAMA8B, H100, CHAT, quantization="int3")
    with pytest.raises(ValueError, match="kv-cache-dtype"):
        estimate_performance(LLAMA8B, H100, CHAT, kv_cache_dtype="int4")
    with pytest.raises(ValueError):
        PerfWorkload(prompt_tokens=-1, output_tokens=1)
    with pytest.raises(ValueError):
        PerfWorkload(prompt_tokens=1, output_tokens=1, images=3)  # type: ignore[call-arg]


def test_capacity_respects_tpot_slo_and_is_the_largest_such_concurrency() -> None:
    cap = replica_capacity(LLAMA8B, H100, CHAT, max_concurrency=1024, tpot_p95_seconds=0.03)
    assert 1 < cap.concurrency < 1024
    assert cap.tpot_p95_seconds <= 0.03
    beyond = estimate_performance(LLAMA8B, H100, CHAT, concurrency=cap.concurrency + 1)
    assert beyond.tpot_p95_seconds > 0.03
    assert cap.requests_per_second > 0


def test_capacity_respects_ttft_slo() -> None:
    w = PerfWorkload(prompt_tokens=4096, output_tokens=128)
    cap = replica_capacity(LLAMA8B, H100, w, max_concurrency=512, ttft_p95_seconds=1.0)
    assert cap.concurrency >= 1
    assert cap.ttft_p95_seconds <= 1.0
    loose = replica_capacity(LLAMA8B, H100, w, max_concurrency=512, ttft_p95_seconds=5.0)
    assert loose.concurrency >= cap.concurrency


def test_capacity_respects_the_concurrency_cap() -> None:
    cap = replica_capacity(LLAMA8B, H100, CHAT, max_concurrency=12)
    assert cap.concurrency == 12
    assert cap == estimate_performance(LLAMA8B, H100, CHAT, concurrency=12)


def test_capacity_is_zero_when_one_request_misses() -> None:
    cap = replica_capacity(LLAMA8B, RTX4090, CHAT, max_concurrency=64, tpot_p95_seconds=0.001)
    assert cap.concurrency == 0
    assert cap.requests_per_second == 0
    assert cap.decode_tokens_per_second == 0
    assert cap.tpot_p95_seconds > 0.001  # the single-request latency shows why
    none = replica_capacity(LLAMA8B, H100, CHAT, max_concurrency=0)
    assert none.concurrency == 0 and none.requests_per_second == 0


# ----------------------------------------------------------------------------------------------
# Cited public figures (docs/perf.md): the calibrated model stays within a tolerance of them.


def test_llama8b_single_stream_decode_on_h100() -> None:
    # yobitelcomm.github.io/bench/recipes/concurrency-sweep: vLLM 0.21.0, TPOT p50 6.48 ms.
    p = estimate_performance(LLAMA8B, H100, PerfWorkload(prompt_tokens=128, output_tokens=128))
    assert p.tpot_seconds == pytest.approx(0.00648, rel=0.10)


def test_llama8b_concurrency_sweep_on_a100() -> None:
    # johnmusgrave.com/p/vllm-throughput-latency-sweep-on: ~75 tok/s at C=1, 6.6x at C=8.
    w = PerfWorkload(prompt_tokens=1024, output_tokens=128)
    one = estimate_performance(LLAMA8B, A100, w)
    eight = estimate_performance(LLAMA8B, A100, w, concurrency=8)
    assert 1 / one.tpot_seconds == pytest.approx(75, rel=0.10)
    ratio = eight.decode_tokens_per_second / one.decode_tokens_per_second
    assert ratio == pytest.approx(6.6, rel=0.20)


@pytest.mark.parametrize(("prompt", "ttft_ms"), [(4096, 505.1), (8192, 1063.8)])
def test_qwen72b_tp2_prefill_on_h100(prompt: int, ttft_ms: float) -> None:
    # tenstorrent/tt-inference-server#143 (GPU reference, 2xH100), concurrency 1.
    w = PerfWorkload(prompt_tokens=prompt, output_tokens=128)
    p = estimate_performance(QWEN_VL_72B, H100, w, tensor_parallel_size=2)
    assert p.ttft_seconds == pytest.approx(ttft_ms / 1000, rel=0.15)
    assert p.tpot_seconds == pytest.approx(0.0309, rel=0.10)


@pytest.mark.parametrize(("concurrency", "tokens_per_s"), [(4, 210), (16, 644), (48, 1190)])
def test_mistral7b_throughput_on_rtx4090(concurrency: int, tokens_per_s: float) -> None:
    # mushfiqrahman.dev/?p=1668: 256 prompt tokens, ~100 output tokens (tok/s ÷ req/s).
    w = PerfWorkload(prompt_tokens=256, output_tokens=100)
    p = estimate_performance(MISTRAL, RTX4090, w, concurrency=concurrency)
    assert p.decode_tokens_per_second == pytest.approx(tokens_per_s, rel=0.20)
