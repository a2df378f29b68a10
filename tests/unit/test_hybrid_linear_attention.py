"""Hybrid decoders (Gated DeltaNet + full attention: Qwen3-Next, Qwen3.5 / 3.6) from their
published configs (bench/families): their weights, and the KV cache vLLM builds for them, checked
against what vLLM 0.24.0 logged for Qwen3.6-35B-A3B on an RTX 5090
(https://github.com/noonghunna/club-3090/issues/612 and /652, bench/estimator/dataset_heldout.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmop import modalities as mm
from mmop.catalog import GIB, resolve_gpu
from mmop.estimator import EngineArgs, estimate
from mmop.model import AttentionKind, load_profile_from_dir

FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"


def kinds(model: str) -> tuple[int, int]:
    layers = load_profile_from_dir(FAMILIES / model).text.layers
    full = sum(1 for x in layers if x.kind == AttentionKind.FULL)
    linear = sum(1 for x in layers if x.kind == AttentionKind.LINEAR)
    return full, linear


def test_qwen3_next_layers_follow_full_attention_interval() -> None:
    assert kinds("Qwen/Qwen3-Next-80B-A3B-Instruct") == (12, 36)


@pytest.mark.parametrize(
    ("model", "billions"),
    [
        ("Qwen/Qwen3.5-27B", 27),
        ("Qwen/Qwen3.6-35B-A3B", 35),
        ("Qwen/Qwen3.5-122B-A10B", 122),
        ("Qwen/Qwen3.5-397B-A17B", 397),
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", 80),
    ],
)
def test_parameters_match_the_size_in_the_name(model: str, billions: int) -> None:
    p = load_profile_from_dir(FAMILIES / model).params
    total = p.embedding + p.language_model + p.vision
    assert total / 1e9 == pytest.approx(billions, rel=0.02)


def test_qwen3_5_is_qwen3_vl_processing_over_a_hybrid_decoder() -> None:
    p = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    assert p.family == "qwen3_vl"
    assert p.approximate and p.processor_config_missing  # config.json only in bench/families
    assert p.text.linear_attention is not None and p.text.moe is not None
    assert kinds("Qwen/Qwen3.6-35B-A3B") == (10, 30)
    # Qwen3-VL's tower: 32-pixel tokens
    assert mm.image_cost(p, 640, 640).tokens == 400


@pytest.mark.parametrize(
    ("available_gib", "tokens", "concurrency"),
    [(5.98, 567_978, 4.33), (6.01, 569_878, 4.35)],  # issues 612 and 652
)
def test_kv_tokens_and_concurrency_equal_vllms_log(
    available_gib: float, tokens: int, concurrency: float
) -> None:
    """Given the KV memory vLLM logged, the blocks it makes of it: attention blocks of 2,096
    tokens (one fp8 page holds a linear layer's state), 10 full-attention and 3 x 10 linear
    layers, two state blocks per request with prefix caching."""
    p = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    args = EngineArgs(
        kv_cache_dtype="fp8",
        max_model_len=131072,
        max_num_seqs=1,
        max_num_batched_tokens=8192,
        kv_cache_memory_bytes=int(available_gib * GIB),
        vllm_version="0.24.0",
    )
    est = estimate(p, resolve_gpu("RTX-5090"), args)
    assert est.block_size == 2096
    assert (est.kv_cache_tokens, est.max_concurrency) == (tokens, concurrency)


def test_without_prefix_caching_a_request_keeps_one_state_block() -> None:
    p = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    base = dict(kv_cache_dtype="fp8", max_model_len=131072, kv_cache_memory_bytes=6 * GIB)
    on = estimate(p, resolve_gpu("H100-80GB-SXM"), EngineArgs(**base))
    off = estimate(p, resolve_gpu("H100-80GB-SXM"), EngineArgs(**base, enable_prefix_caching=False))
    assert off.max_concurrency > on.max_concurrency


def test_modelopt_mixed_precision_is_sized_experts_in_nvfp4_attention_in_fp8() -> None:
    bf16 = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    nvfp4 = load_profile_from_dir(FAMILIES / "nvidia/Qwen3.6-35B-A3B-NVFP4")
    q = nvfp4.quantization
    assert q is not None and (q.method, q.expert_bits, q.weight_bits) == ("modelopt", 4, 8)
    assert not q.vision_quantized
    gpu = resolve_gpu("H100-80GB-SXM")
    full = estimate(bf16, gpu, EngineArgs(max_model_len=8192)).weights_gib
    mixed = estimate(nvfp4, gpu, EngineArgs(max_model_len=8192, quantization="modelopt"))
    # 32.3e9 expert parameters at 0.5625 B, the rest of the decoder at 1 B, towers at 2 B
    assert 0.25 * full < mixed.weights_gib < 0.35 * full


def test_a_mixed_precision_layer_in_an_unknown_algorithm_gets_no_verdict() -> None:
    import json

    from mmop.model import ModelError, build_profile

    cfg = json.loads((FAMILIES / "nvidia/Qwen3.6-35B-A3B-NVFP4/config.json").read_text())
    layers = dict(cfg["quantization_config"]["quantized_layers"])
    layers["model.language_model.layers.0.linear_attn.out_proj"] = {"quant_algo": "W4A8_AWQ"}
    cfg["quantization_config"] = {**cfg["quantization_config"], "quantized_layers": layers}
    with pytest.raises(ModelError, match="W4A8_AWQ"):
        build_profile("acme/qwen3.6-mixed", cfg)


def test_modelopt_flag_on_an_unquantized_checkpoint_is_vllms_refusal() -> None:
    from mmop.estimator import EstimateError

    p = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    with pytest.raises(EstimateError, match="Cannot find the config file for modelopt"):
        estimate(p, resolve_gpu("H100-80GB-SXM"), EngineArgs(quantization="modelopt"))


def test_short_requests_of_a_hybrid_model_are_counted_with_their_state_blocks() -> None:
    """vLLM's concurrency at 131,072 tokens (4.33x, matched above) comes from blocks per
    request; at 4,096 tokens a request still keeps 3 groups x 2 state blocks, so the cache holds
    299 // (2 + 6) = 37 requests, not the 138 that tokens / length would say."""
    from mmop.estimator import requests_fitting

    p = load_profile_from_dir(FAMILIES / "Qwen/Qwen3.6-35B-A3B")
    args = EngineArgs(
        kv_cache_dtype="fp8",
        max_model_len=131072,
        max_num_seqs=1,
        max_num_batched_tokens=8192,
        kv_cache_memory_bytes=int(5.98 * GIB),
        vllm_version="0.24.0",
    )
    est = estimate(p, resolve_gpu("RTX-5090"), args)
    assert est.kv_cache_blocks == 299 and est.state_blocks_per_request == 2
    assert requests_fitting(est, 131072) == 4  # int(4.33)
    assert requests_fitting(est, 4096) == 37
    assert est.kv_cache_tokens // 4096 == 138


def test_an_nvfp4_export_that_leaves_attention_and_dense_mlps_unquantized_weighs_them_in_bf16() -> (
    None
):
    """nvidia/Gemma-4-26B-A4B-NVFP4 ignores every layer's self_attn, mlp and router: vLLM loads
    those in bf16, only the routed experts in NVFP4 (0.5625 B/param). Counting every decoder
    layer as NVFP4 (mmop before) said 15.5 GiB."""
    import json

    from mmop.model import build_profile, profile_from_files

    d = FAMILIES / "nvidia/Gemma-4-26B-A4B-NVFP4"
    p = load_profile_from_dir(d)
    gpu = resolve_gpu("H200")
    w = estimate(p, gpu, EngineArgs(max_model_len=8192)).weights_gib
    t = p.text
    experts = t.routed_expert_params
    rest = p.params.embedding + p.params.language_model + p.params.vision - experts
    assert w == pytest.approx((experts * 0.5625 + rest * 2) / GIB, abs=0.2)
    # ModelOpt <= 0.29 kept the same config in hf_quant_config.json, which vLLM reads when
    # config.json has none
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("quantization_config")
    side = json.loads((d / "hf_quant_config.json").read_text())
    old = profile_from_files(
        "acme/gemma4-nvfp4", {"config.json": cfg, "hf_quant_config.json": side}
    )
    assert estimate(old, gpu, EngineArgs(max_model_len=8192)).weights_gib == pytest.approx(w)
    assert build_profile("acme/gemma4-bf16", cfg).quantization is None


def test_nvidia_qwen3_5_nvfp4_keeps_attention_and_shared_experts_in_bf16() -> None:
    p = load_profile_from_dir(FAMILIES / "nvidia/Qwen3.5-122B-A10B-NVFP4")
    t = p.text
    w = estimate(p, resolve_gpu("H200"), EngineArgs(max_model_len=8192)).weights_gib
    experts = t.routed_expert_params
    rest = p.params.embedding + p.params.language_model + p.params.vision - experts
    assert w == pytest.approx((experts * 0.5625 + rest * 2) / GIB, abs=0.3)
