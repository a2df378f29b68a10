"""The generic multimodal path: a family mmop has no processor rule for is read from standard
config keys, its encoder and image tokens bounded from above, and the estimate marked
approximate; where the bound cannot be taken, no verdict."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mmop import modalities
from mmop.catalog import resolve_gpu
from mmop.estimator import EngineArgs, estimate
from mmop.model import (
    CATALOG_MODELS_DIR,
    GENERIC_MM_FAMILY,
    AttentionKind,
    ModelError,
    build_profile,
    catalog_ids,
    load_profile,
    load_profile_from_dir,
    read_model_files,
)

FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"
MULTIMODAL = [m for m in catalog_ids() if load_profile(m).multimodal]
# Catalog configs whose towers state too little to be bounded without their family's rules
# (they rely on transformers' defaults for the tower's depth, or name an encoder by checkpoint).
UNBOUNDED = {"Qwen/Qwen2.5-VL-7B-Instruct-AWQ", "microsoft/Phi-3.5-vision-instruct"}


def _disguised(model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The catalog model's files with its family hidden: an unknown model type and class."""
    files = read_model_files(CATALOG_MODELS_DIR / model)
    cfg = copy.deepcopy(files.get("config.json") or files["params.json"])
    cfg["model_type"] = "unknown_" + str(cfg.get("model_type", ""))
    cfg["architectures"] = ["UnknownForConditionalGeneration"]
    if load_profile(model).text.model_type.startswith("qwen2"):
        # Qwen2's q/k/v biases are a family trait; an unknown family states them.
        text = cfg.get("text_config") if "hidden_size" in (cfg.get("text_config") or {}) else cfg
        text["attention_bias"] = True
    pre: dict[str, Any] = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        pre.update(files.get(name) or {})
    return cfg, pre


@pytest.mark.parametrize("model", MULTIMODAL)
def test_the_generic_bound_holds_for_every_family_mmop_knows(model: str) -> None:
    """Read through the generic path, each catalog model costs at least what its family's own
    rules (checked against the processors and vLLM in the processor and acceptance tiers) say:
    encoder weights, tokens of the largest image, and so never more KV memory."""
    family = load_profile(model)
    cfg, pre = _disguised(model)
    if model in UNBOUNDED:
        with pytest.raises(ModelError, match="no verdict"):
            build_profile(model, cfg, pre)
        return
    generic = build_profile(model, cfg, pre)
    if generic.family != GENERIC_MM_FAMILY:  # Mistral's native layout is recognised by shape
        assert generic.family == family.family
        return
    assert generic.approximate and not family.approximate
    assert generic.params.vision + generic.params.audio >= family.params.vision + (
        family.params.audio
    )
    assert generic.params.served >= family.params.served
    if family.vision is not None:
        assert generic.vision is not None
        assert modalities.max_image_cost(generic).tokens >= modalities.max_image_cost(family).tokens
    gpu = resolve_gpu("H100-80GB")
    tp = 1 if family.params.served * 2 < 60 * 10**9 else 4
    args = EngineArgs(
        max_model_len=min(8192, family.max_position_embeddings), tensor_parallel_size=tp
    )
    generic_kv = estimate(generic, gpu, args).kv_cache_gib
    assert generic_kv <= estimate(family, gpu, args).kv_cache_gib + 1e-9


@pytest.mark.parametrize(
    "model",
    [
        "google/gemma-4-26B-A4B",
        "meta-llama/Llama-4-Scout-17B-16E-Instruct",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
        "deepseek-ai/DeepSeek-OCR",
    ],
)
def test_families_released_after_the_catalog_get_an_approximate_answer(model: str) -> None:
    profile = load_profile_from_dir(FAMILIES / model, model)
    assert profile.family == GENERIC_MM_FAMILY and profile.approximate
    assert profile.vision is not None and modalities.max_image_cost(profile).tokens > 0
    est = estimate(profile, resolve_gpu("H200"), EngineArgs(max_model_len=8192))
    assert any("approximate" in w and "multimodal family" in w for w in est.warnings)


def test_llama4_chunked_attention_and_shared_expert_are_read() -> None:
    scout = load_profile_from_dir(FAMILIES / "meta-llama/Llama-4-Scout-17B-16E-Instruct")
    kinds = [layer.kind for layer in scout.text.layers]
    # RoPE layers attend within 8192-token chunks; every fourth (NoPE) layer attends globally.
    assert kinds.count(AttentionKind.FULL) == 12 and kinds.count(AttentionKind.SLIDING) == 36
    assert all(layer.window_tokens == 8192 for layer in scout.text.layers if layer.window_tokens)
    assert scout.text.moe is not None and scout.text.moe.shared_expert_intermediate_size == 8192
    # Meta's model cards: 109B parameters in total (Scout), 400B (Maverick).
    assert scout.params.served == pytest.approx(109e9, rel=0.02)
    maverick = load_profile_from_dir(FAMILIES / "meta-llama/Llama-4-Maverick-17B-128E-Instruct")
    assert maverick.params.served == pytest.approx(400e9, rel=0.02)


@pytest.mark.parametrize(
    ("model", "experts", "moe_layers", "full", "published", "text_published"),
    [
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", 16, 48, 12, 108_641_793_536, 107_769_861_120),
        (
            "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
            128,
            24,
            12,
            401_583_781_376,
            400_711_848_960,
        ),
    ],
)
def test_llama4_is_read_as_vllm_builds_it_and_counts_the_published_checkpoint(
    model: str, experts: int, moe_layers: int, full: int, published: int, text_published: int
) -> None:
    """The Instruct checkpoints' safetensors totals (bench/families source.yaml): the decoder is
    counted as vLLM's Llama4 model builds it, the vision tower as an upper bound."""
    profile = load_profile_from_dir(FAMILIES / model)
    text = profile.text
    assert text.moe is not None
    assert (text.moe.num_experts, text.moe.experts_per_token) == (experts, 1)
    assert text.moe.moe_layers == moe_layers  # interleave_moe_layer_step 1 (Scout), 2 (Maverick)
    assert text.moe.shared_expert_intermediate_size == text.moe.expert_intermediate_size == 8192
    # Dense layers (Maverick's every other layer) use intermediate_size_mlp.
    assert text.dense_mlp_params == (48 - moe_layers) * 3 * 5120 * 16384
    kinds = [layer.kind for layer in text.layers]
    assert kinds.count(AttentionKind.FULL) == full and kinds[3] == AttentionKind.FULL
    assert {layer.window_tokens for layer in text.layers if layer.kind != AttentionKind.FULL} == {
        8192
    }
    decoder = profile.params.embedding + profile.params.language_model
    assert decoder == text_published  # exactly: no gate on the shared expert
    assert profile.params.vision >= published - text_published  # 871,932,416 published
    assert published <= profile.params.total <= published * 1.005


def test_a_dense_mlp_beside_the_moe_block_is_counted() -> None:
    """Gemma 4's layers run a dense MLP and, where the config has experts, an MoE block beside
    it (vLLM's Gemma4DecoderLayer): the experts add to the dense MLP, they do not replace it."""
    profile = load_profile_from_dir(FAMILIES / "google/gemma-4-26B-A4B")
    assert profile.text.moe is not None and profile.text.moe.experts_per_token == 8
    cfg = read_model_files(FAMILIES / "google/gemma-4-26B-A4B")["config.json"]
    dense_only = copy.deepcopy(cfg)
    dense_only["text_config"]["num_experts"] = None
    lm = build_profile("g", dense_only, {}).params.language_model
    experts_and_router = 30 * (128 * 3 * 2816 * 704 + 2816 * 128)
    assert profile.params.language_model - lm == experts_and_router


def test_deepseek_style_moe_keys_are_read() -> None:
    text = {
        "model_type": "teapot", "hidden_size": 1024, "num_hidden_layers": 12,
        "num_attention_heads": 8, "vocab_size": 1000, "intermediate_size": 4096,
        "n_routed_experts": 64, "n_shared_experts": 2, "moe_intermediate_size": 512,
        "first_k_dense_replace": 1, "num_experts_per_tok": 6,
        "kv_lora_rank": 512, "qk_rope_head_dim": 64,
    }  # fmt: skip
    moe = build_profile("t", text, {}).text
    assert moe.moe is not None
    assert moe.moe.moe_layers == 11 and moe.moe.shared_expert_intermediate_size == 1024
    assert moe.kv_lora_rank == 512 and moe.qk_rope_head_dim == 64


def _vl(vision: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "model_type": "teapot_vl",
        "text_config": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
                        "num_attention_heads": 16, "vocab_size": 32000},
        "vision_config": vision,
        **top,
    }  # fmt: skip


def test_the_image_bound_comes_from_the_processor_budget() -> None:
    tower = {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 14}
    # A pixel budget (dynamic resolution) with a 2×2 merge.
    pixels = build_profile("a", _vl({**tower, "spatial_merge_size": 2}), {"max_pixels": 1003520})
    assert modalities.max_image_cost(pixels).tokens >= 1003520 // (28 * 28)
    # Tiles of the native side, plus a thumbnail.
    tiled = build_profile("b", _vl({**tower, "image_size": 448}), {"max_dynamic_patch": 6})
    assert modalities.max_image_cost(tiled).tokens >= 7 * 32 * 32
    # A tower that states neither: no verdict, not a guess.
    with pytest.raises(ModelError, match="cannot be bounded"):
        build_profile("c", _vl(tower), {})


def test_a_tower_named_only_by_checkpoint_gets_no_verdict() -> None:
    cfg = _vl({"model_name": "openai/clip-vit-large-patch14-336"})
    with pytest.raises(ModelError, match="no verdict"):
        build_profile("d", cfg, {})


def test_an_encoder_without_a_sub_config_gets_no_verdict() -> None:
    """Phi-4-multimodal's layout: the encoders are described under embd_layer and
    audio_processor, not as sized sub-configs; the model is not read as text-only."""
    cfg = _vl({})
    del cfg["vision_config"]
    cfg["embd_layer"] = {"image_embd_layer": {"crop_size": 448}}
    with pytest.raises(ModelError, match="no verdict"):
        build_profile("e", cfg, {})


def test_an_omni_model_of_another_family_is_not_read_as_qwen2_5_omni() -> None:
    """Only Qwen2.5-Omni's own classes take its rules; another "…Omni…" class is read by the
    generic path (here: an image budget it can bound), not refused for lacking Qwen's keys."""
    cfg = _vl(
        {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 14, "spatial_merge_size": 2},
        model_type="teapot_omni",
        architectures=["TeapotOmniForConditionalGeneration"],
    )
    profile = build_profile("f", cfg, {"max_pixels": 1003520})
    assert profile.family == GENERIC_MM_FAMILY and profile.approximate


def test_a_key_a_family_needs_is_named_when_missing() -> None:
    cfg = {"model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniModel"]}
    with pytest.raises(
        ModelError, match=r"qwen2_5_omni family needs the key '\w+' and it is missing"
    ):
        build_profile("g", cfg, {})
