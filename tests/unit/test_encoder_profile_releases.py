"""vLLM 0.11.0-0.12.0's encoder profiling, as those releases ran it: each dummy encoder output
zero-padded (to the encoder budget in 0.11.x, to the modality's counted tokens per item in
0.12.0) and held through the text model's profiling run; Qwen3-VL's video counted at 12.5
tokens per embedding. 0.10.2 and 0.13.0 do neither."""

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
