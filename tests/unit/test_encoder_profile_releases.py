"""vLLM 0.11.0-0.12.0's encoder profiling, as those releases ran it: each dummy encoder output
zero-padded (to the encoder budget in 0.11.x, to the modality's counted tokens per item in
0.12.0) and held through the text model's profiling run; Qwen3-VL's video counted at 12.5
tokens per embedding. 0.10.2 and 0.13.0 do neither. And the Qwen ViTs' attention up to 0.11.0,
whose float32 rotation of copied q and k (and, with TP, the all-gathered qkv) outgrows the MLP."""

from __future__ import annotations

import pytest

from mmop import modalities
from mmop.catalog import resolve_gpu
from mmop.estimator import EngineArgs, estimate
from mmop.model import load_profile

QWEN3_VL_MOE = load_profile("Qwen/Qwen3-VL-30B-A3B-Instruct")
GEMMA3 = load_profile("google/gemma-3-27b-it")
RTX3090 = resolve_gpu("RTX-3090")
H100 = resolve_gpu("H100")
GIB = 1024**3


def test_qwen3_vl_video_count_of_0_11_matches_its_start_up_log() -> None:
    # "Encoder cache will be initialized with a budget of 153600 tokens, and profiled with 1 video
    # items of the maximum feature size." (vLLM 0.11.0, Qwen3-VL-30B-A3B, --max-model-len 65536;
    # bench/estimator/dataset.yaml row qwen3vl30b-a3b-4xrtx3090-tp4-sipeed-len65536)
    assert modalities.qwen3_vl_v011_counted_video_tokens(QWEN3_VL_MOE, 65536, {}) == 153600
    # Below the three-frame dummy's 16,200 embeddings the search keeps two frames: 12,100 x 12.5.
    assert modalities.qwen3_vl_v011_counted_video_tokens(QWEN3_VL_MOE, 8192, {}) == 151250


def _sipeed(version: str) -> EngineArgs:
    return EngineArgs(
        tensor_parallel_size=4,
        gpu_memory_utilization=0.9,
        max_model_len=65536,
        vllm_version=version,
    )


def test_qwen3_vl_at_0_11_profiles_a_video_whose_output_is_padded_to_the_budget() -> None:
    est = estimate(QWEN3_VL_MOE, RTX3090, _sipeed("0.11.0"))
    assert est.mm_profile.startswith(
        "encoder budget 153600 tokens, profiled with 1 video item(s) of 12288 tokens"
    )
    assert "padded to 153600 rows" in est.mm_profile
    assert est.max_tokens_per_video == 153600
    # The log: 2.31 GiB of KV cache, 100,752 tokens (mmop said 4.50 GiB before it padded).
    assert est.kv_cache_gib == pytest.approx(2.31, rel=0.06)
    assert est.kv_cache_tokens == pytest.approx(100752, rel=0.06)


def test_padding_costs_the_budget_times_the_deepstack_width() -> None:
    padded = estimate(QWEN3_VL_MOE, RTX3090, _sipeed("0.11.0"))
    unpadded = estimate(QWEN3_VL_MOE, RTX3090, _sipeed("0.13.0"))
    # 0.13.0 counts the embeddings: the image (16,384) outweighs the video (12,288).
    assert unpadded.mm_profile.startswith(
        "encoder budget 16384 tokens, profiled with 1 image item(s)"
    )
    assert "padded" not in unpadded.mm_profile
    # 153,600 rows x 2,048 x (1 + 3 deepstack levels) x 2 bytes, against one 16,384-token image.
    width = 2048 * 4
    extra = (153600 - 16384) * width * 2 / GIB
    assert padded.activation_gib - unpadded.activation_gib == pytest.approx(extra, rel=0.05)


def test_0_12_pads_to_the_counted_tokens_and_0_11_to_the_budget() -> None:
    # Gemma 3: 256 embeddings per image, an 8,192-token budget on an H100 (32 images at once).
    args = {"max_model_len": 4096, "gpu_memory_utilization": 0.9}
    e011 = estimate(GEMMA3, H100, EngineArgs(vllm_version="0.11.0", **args))
    e012 = estimate(GEMMA3, H100, EngineArgs(vllm_version="0.12.0", **args))
    e010 = estimate(GEMMA3, H100, EngineArgs(vllm_version="0.10.2", vllm_use_v1=True, **args))
    assert e011.mm_profile.startswith("encoder budget 8192 tokens, profiled with 32 image")
    assert "padded to 8192 rows" in e011.mm_profile
    assert "padded" not in e012.mm_profile and "padded" not in e010.mm_profile
    # 32 outputs of 8,192 rows instead of 256, 5,376 wide, in bf16.
    extra = 32 * (8192 - 256) * 5376 * 2 / GIB
    assert e012.kv_cache_gib - e011.kv_cache_gib == pytest.approx(extra, rel=0.02)


def test_the_pinned_release_is_unchanged() -> None:
    est = estimate(QWEN3_VL_MOE, H100, EngineArgs(max_model_len=65536))
    assert "padded" not in est.mm_profile
    assert est.max_tokens_per_video is not None and est.max_tokens_per_video < 20000


# ---------------------------------------------------------------------------- Qwen ViT attention
QWEN25_3B = load_profile("Qwen/Qwen2.5-VL-3B-Instruct")
QWEN25_7B = load_profile("Qwen/Qwen2.5-VL-7B-Instruct")
L4 = resolve_gpu("L4")


def _encoder_gib(profile: object, version: str, tp: int = 1) -> float:
    args = EngineArgs(
        max_model_len=8192,
        max_num_batched_tokens=2048,
        tensor_parallel_size=tp,
        vllm_version=version,
        vllm_use_v1=True,
        limit_mm_per_prompt={"video": 0},
    )
    est = estimate(profile, L4 if tp == 1 else H100, args)  # type: ignore[arg-type]
    return est.activation_encoder_gib


def test_qwen25_vl_at_0_11_0_matches_its_start_up_log() -> None:
    # Ray Data's vision example (bench/estimator/dataset.yaml qwen25vl3b-l4-ray-data-vision-len8192):
    # vLLM 0.11.0, L4, --max-model-len 8192 --max-num-batched-tokens 2048: 9.26 GiB of KV cache.
    args = EngineArgs(max_model_len=8192, max_num_batched_tokens=2048, vllm_version="0.11.0")
    est = estimate(QWEN25_3B, L4, args)
    assert est.kv_cache_gib == pytest.approx(9.26, rel=0.03)  # 10.45 (+12.9 %) before


def test_qwen25_vl_at_0_9_matches_its_start_up_log() -> None:
    # bench/estimator/dataset.yaml qwen25vl7b-l4-tsailiming-len2048: vLLM 0.9.0.1, 1.81 GiB.
    args = EngineArgs(max_model_len=2048, vllm_version="0.9.0.1", vllm_use_v1=True)  # V1 logged
    est = estimate(QWEN25_7B, L4, args)
    assert est.kv_cache_gib == pytest.approx(1.81, rel=0.03)  # 1.95 (+7.7 %) before


def test_the_attention_peak_per_release() -> None:
    # One 16,384-token image: 65,536 patches of a ViT 1,280 wide with a 3,420-wide gated MLP, whose
    # peak (3 x 3,420 + 4 x 1,280 = 15,380 elements a patch) the attention exceeds up to 0.11.0:
    # 2H + 6H + 5H = 13H (q, k rotated one at a time) before, 2H + 6H + 12H = 20H in 0.11.0.
    h, patches = 1280, 65536
    mlp_phase = 3 * 3420 + 4 * h
    base = _encoder_gib(QWEN25_3B, "0.11.1")
    assert base == _encoder_gib(QWEN25_3B, "0.32.0")
    for version, elements in (("0.10.2", 13 * h), ("0.11.0", 20 * h)):
        extra = patches * (elements - mlp_phase) * 2 / GIB
        assert _encoder_gib(QWEN25_3B, version) - base == pytest.approx(extra, abs=2e-4), version


def test_tensor_parallel_attention_holds_the_gathered_qkv() -> None:
    # TP 2 before 0.11.1: split_qkv holds the all-gathered qkv and its interleaved copy (6H) beside
    # the block's input, its normed copy and the local projection: 2H + 1.5H + 6H = 9.5H, more
    # than the MLP's 3 x 3,420 / 2 + 4H a patch.
    h, patches = 1280, 65536
    gathered = 2 * h + 3 * h // 2 + 6 * h
    mlp_phase = 3 * 3420 // 2 + 4 * h
    extra = patches * (gathered - mlp_phase) * 2 / GIB
    delta = _encoder_gib(QWEN25_7B, "0.10.2", tp=2) - _encoder_gib(QWEN25_7B, "0.11.1", tp=2)
    assert delta == pytest.approx(extra, abs=2e-4)
