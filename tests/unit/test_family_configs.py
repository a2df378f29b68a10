"""Families outside the catalog from their published configs (bench/families, verbatim copies):
MiniCPM-V 4 on the decoder vLLM builds for its version, GLM-4.1V with its own image and video
rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmop import estimator as est
from mmop import modalities as mm
from mmop.model import ModelError, build_profile, load_profile_from_dir

FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"


def test_minicpm_v4_is_a_llama_decoder_under_the_2_6_image_rule() -> None:
    p = load_profile_from_dir(FAMILIES / "openbmb/MiniCPM-V-4")
    assert (p.family, p.text.model_type, p.approximate) == ("minicpmv", "llama", False)
    # the model card's 4.1B parameters
    total = p.params.embedding + p.params.language_model + p.params.vision
    assert total == pytest.approx(4.1e9, rel=0.02)
    assert mm.max_image_cost(p).tokens == (1 + 9) * 64


def test_a_minicpm_v_version_vllm_does_not_serve_gets_no_answer() -> None:
    cfg = json.loads((FAMILIES / "openbmb/MiniCPM-V-4/config.json").read_text())
    with pytest.raises(ModelError, match=r"version 9\.9 is not one vLLM"):
        build_profile("acme/minicpm-v-9", {**cfg, "version": 9.9})


# GLM-4.1V: images and video as its processors count them (the processor tier asks transformers'
# Glm4vImageProcessor / Glm4vVideoProcessor and vLLM the same items).
GLM = "zai-org/GLM-4.1V-9B-Thinking"


def glm_profile():  # type: ignore[no-untyped-def]
    return load_profile_from_dir(FAMILIES / GLM, GLM)


def test_glm4v_has_its_own_image_rule_and_is_exact() -> None:
    p = glm_profile()
    assert p.family == "glm4v" and not p.approximate
    pc = p.params
    assert (pc.embedding + pc.language_model + pc.vision) / 1e9 == pytest.approx(10.3, abs=0.1)
    # an image is two frames: half of longest_edge (9,633,792 px) in 28x28 units, max 6,084
    assert mm.max_image_cost(p).tokens == 6084
    assert mm.image_cost(p, 1024, 1024).tokens == 37 * 37
    # a side below 28 px is scaled up first; two frames of 84x84 reach the 112x112 minimum
    assert mm.image_cost(p, 13, 13).tokens == 9


def _brute(p, kw, sizes):  # type: ignore[no-untyped-def]
    best = None
    for w, h in sizes:
        try:
            c = mm.image_cost(p, w, h, kw)
        except ValueError:
            continue
        key = (c.tokens, c.encoder_patches)
        best = key if best is None or key > best else best
    return best


@pytest.mark.parametrize("kw", [{}, {"size": {"shortest_edge": 12544, "longest_edge": 1605632}}])
def test_glm4v_worst_image_equals_brute_force(kw) -> None:  # type: ignore[no-untyped-def]
    p = glm_profile()
    for W, H in [(1, 1), (3, 40), (41, 7), (64, 64), (90, 37), (27, 900)]:
        sizes = [(w, h) for w in range(1, W + 1) for h in range(1, H + 1)]
        worst = mm.worst_image_cost(p, W, H, kw)
        assert (worst.tokens, worst.encoder_patches) == _brute(p, kw, sizes), (W, H)
    for W, H, step in [(2048, 2048, 64), (1920, 640, 32), (25, 3000, 1)]:
        sizes = {(w, h) for w in range(step, W + 1, step) for h in range(step, H + 1, step)}
        sizes |= {(w, h) for w in range(1, min(W, 28) + 1) for h in range(1, H + 1, 7)}
        worst = mm.worst_image_cost(p, W, H, kw)
        assert (worst.tokens, worst.encoder_patches) >= _brute(p, kw, sizes), (W, H)


# GLM-4.1V video figures below are the processor tier's answers (tests/engine/
# test_processor_tokens.py asks transformers' Glm4vVideoProcessor, vLLM's loader and vLLM's own
# Glm4vProcessingInfo / Glm4vDummyInputsBuilder the same videos).


def test_glm4v_video_is_one_pixel_budget_for_all_frames() -> None:
    p = glm_profile()
    # 32 frames of 640x360 fit video_preprocessor_config's 47,040,000 px: 16 pairs of 644x364
    assert mm.video_cost(p, 640, 360, 32).tokens == 4784
    assert mm.video_cost(p, 64, 48, 3).tokens == 8  # odd frames padded to a pair
    with pytest.raises(ValueError, match="temporal_factor"):
        mm.video_cost(p, 64, 48, 1)  # the processor refuses one unsampled frame
    # a workload's worst video: 31 frames (the budget does not count the padding frame) or a
    # clip of 31 sampled by the processor to 32 cost no more than the 32 asked about
    worst = mm.worst_video_cost(p, 640, 360, 32)
    assert worst.tokens == 4784
    assert worst.text_tokens == mm.glm4v_timestamp_tokens_bound(16, None)


@pytest.mark.parametrize("kw", [{}, {"size": {"shortest_edge": 300000, "longest_edge": 600000}}])
def test_glm4v_worst_video_equals_brute_force(kw) -> None:  # type: ignore[no-untyped-def]
    """Every video within small bounds; an odd frame bound also admits the pair the processor
    completes when it samples the clip itself."""
    p = glm_profile()
    for W, H, T in [(40, 3, 7), (5, 33, 12), (70, 45, 9), (30, 30, 1)]:
        best = None
        for t in range(1, T + T % 2 + 1):
            for w in range(1, W + 1):
                for h in range(1, H + 1):
                    try:
                        c = mm.video_cost(p, w, h, t, kw)
                    except ValueError:
                        continue
                    key = (c.tokens, c.encoder_patches)
                    best = key if best is None or key > best else best
        worst = mm.worst_video_cost(p, W, H, T, kw)
        assert (worst.tokens, worst.encoder_patches) == best, (W, H, T)
        assert mm.video_cost(p, *mm.worst_video_size(p, W, H, T, kw), kw).tokens == worst.tokens


def test_glm4v_timestamp_text_bound() -> None:
    # begin / end of video, then per pair begin / end of image and int seconds as digits
    assert mm.glm4v_timestamp_tokens_bound(16, 4166.7) == 2 + 16 * (2 + 4)
    assert mm.glm4v_timestamp_tokens_bound(1, 0.1) == 2 + 1 * (2 + 1)
    assert mm.glm4v_timestamp_tokens_bound(3, None) == 2 + 3 * (2 + 5)
    # vLLM writes 92 characters around 32 frames of a 100,000-frame clip at 24 fps
    assert mm.video_cost(glm_profile(), 640, 480, 32, seconds=100000 / 24).text_tokens >= 92


@pytest.mark.parametrize(
    ("total", "fps", "frames"), [(30, 30.0, 2), (3, 30.0, 2), (7, 0.5, 8), (100000, 24.0, 32)]
)
def test_glm4v_frames_reaching_the_processor(total: int, fps: float, frames: int) -> None:
    """vLLM's loader keeps 32 frames; a clip it keeps whole is sampled by the processor at 2 fps
    and completed to a pair."""
    assert mm.sampled_frames(glm_profile(), total, fps) == frames


def test_glm4v_video_profile_is_vllms_dummy() -> None:
    from mmop.catalog import resolve_gpu
    from mmop.estimator import EngineArgs, estimate

    p = glm_profile()
    gpu = resolve_gpu("H100-80GB-SXM")
    # 271 frames of 2184x2184 fill 32,768 tokens less one largest image
    assert mm.glm4v_dummy_video(p, 32768) == (2184, 2184, 271)
    est = estimate(p, gpu, EngineArgs(max_model_len=32768))
    assert est.fits and est.max_tokens_per_video == 26656
    # the encoder is profiled with the dummy of a video-only prompt: more frames fit
    encoded = mm.glm4v_dummy_video_cost(p, 32768, images=0)
    assert encoded.tokens > 26656
    assert f"video item(s) of {encoded.tokens} tokens" in est.mm_profile
    # without images, 11 frames of the largest size
    no_images = EngineArgs(max_model_len=65536, limit_mm_per_prompt={"image": {"count": 0}})
    assert estimate(p, gpu, no_images).max_tokens_per_video == 31974
    # the limit's dummy size cuts vLLM's tokens per video item too (its count is the dummy's)
    small = {"video": {"count": 1, "num_frames": 1, "width": 640, "height": 360}}
    est = estimate(p, gpu, EngineArgs(max_model_len=16384, limit_mm_per_prompt=small))
    assert est.max_tokens_per_video == 299
    off = EngineArgs(max_model_len=16384, limit_mm_per_prompt={"video": {"count": 0}})
    assert estimate(p, gpu, off).max_tokens_per_video is None


def test_glm_v_processors_other_than_glm4v_get_no_video_verdict() -> None:
    from mmop.catalog import resolve_gpu
    from mmop.estimator import EngineArgs, NoVerdict, estimate

    p = glm_profile()
    pre = {**p.preprocessor, "processor_class": "Glm46VProcessor"}
    pre["video"] = {**pre["video"], "processor_class": "Glm46VProcessor"}
    p46 = p.model_copy(update={"preprocessor": pre})
    with pytest.raises(ValueError, match="Glm46VProcessor"):
        mm.video_cost(p46, 640, 360, 32)
    gpu = resolve_gpu("H100-80GB-SXM")
    with pytest.raises(NoVerdict, match="only under Glm4vProcessor"):
        estimate(p46, gpu, EngineArgs(max_model_len=16384))
    off = EngineArgs(max_model_len=16384, limit_mm_per_prompt={"video": {"count": 0}})
    assert estimate(p46, gpu, off).fits


def test_a_glm4v_plan_turns_video_off() -> None:
    from mmop.api import MultimodalModel
    from mmop.inventory import default_inventory
    from mmop.planner import plan

    m = MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "glm"},
            "spec": {"model": {"id": GLM}, "workload": {"images": {"perRequest": 1}}},
        }
    )
    p = plan(m, default_inventory(), resolved={GLM: glm_profile()})
    assert p.limit_mm_per_prompt["video"] == 0


def test_a_glm4v_plan_with_video_counts_it() -> None:
    from mmop.api import MultimodalModel
    from mmop.inventory import default_inventory
    from mmop.planner import plan

    video = {"enabled": True, "maxFrames": 32, "maxWidth": 640, "maxHeight": 360}
    m = MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "glm"},
            "spec": {"model": {"id": GLM}, "workload": {"video": video}},
        }
    )
    p = plan(m, default_inventory(), resolved={GLM: glm_profile()})
    assert p.limit_mm_per_prompt["video"] == {
        "count": 1,
        "num_frames": 32,
        "width": 640,
        "height": 360,
    }
    assert p.tokens_per_video == 4784


def test_internvl_hf_layout_is_read_by_the_generic_path_not_the_chat_rule() -> None:
    """transformers' InternVL layout (vision sides as [h, w], no llm_config) used to fail with
    "cannot read config.json ('llm_config')"; it is now bounded like any family without a
    processor rule: at least 12 tiles + a thumbnail of 256 tokens."""
    data = Path(__file__).parent / "data" / "internvl-hf-layout"
    p = load_profile_from_dir(data, "acme/internvl3-hf")
    assert p.family == "generic_mm" and p.approximate
    assert p.vision is not None and p.vision.patch_size == 14
    assert mm.max_image_cost(p).tokens >= 13 * 256


def test_internvl3_5_reads_its_qwen3_decoder() -> None:
    """InternVL3.5-8B's llm_config is Qwen3ForCausalLM: a Qwen3 decoder with q_norm / k_norm in
    each of its 36 layers, which the chat rule read as InternLM2 (9,216 parameters short). The
    count is the checkpoint's: model.safetensors.index.json's total_size 17,056,636,928 bytes of
    bf16."""
    p = load_profile_from_dir(FAMILIES / "OpenGVLab/InternVL3_5-8B", "OpenGVLab/InternVL3_5-8B")
    assert (p.family, p.text.model_type, p.approximate) == ("internvl", "qwen3", False)
    assert p.params.total == 17_056_636_928 // 2
    assert (p.text.num_layers, p.text.num_kv_heads, p.text.head_dim) == (36, 8, 128)
    assert mm.max_image_cost(p).tokens == (12 + 1) * 256
    # vLLM's chat processor gives video to Qwen-family decoders (models/internvl.py:347-355)
    assert "video" in mm.supported_modalities(p)


def test_glm4_5v_counts_its_checkpoint_and_reads_the_glm4_5_air_decoder() -> None:
    """GLM-4.5V (glm4v_moe): one dense layer then 45 MoE layers of 128 routed experts and one
    shared expert. Its router has a per-expert score-correction bias and no shared-expert gate,
    which mmop counted as Qwen-MoE's (hidden-wide) gate: 178,560 parameters over the checkpoint's
    107,710,933,120 (the tensor list published with the config)."""
    p = load_profile_from_dir(FAMILIES / "zai-org/GLM-4.5V", "zai-org/GLM-4.5V")
    assert (p.family, p.text.model_type, p.approximate) == ("glm4v", "glm4_moe", False)
    assert p.params.total == 107_710_933_120
    moe = p.text.moe
    assert moe is not None
    assert (moe.num_experts, moe.experts_per_token, moe.moe_layers) == (128, 8, 45)
    assert (moe.expert_intermediate_size, moe.shared_expert_intermediate_size) == (1408, 1408)
    # 46 layers × 8 KV heads × head_dim 128 × K and V × bf16 (partial rotary leaves it whole)
    assert (p.text.num_layers, p.text.num_kv_heads, p.text.head_dim) == (46, 8, 128)
    assert est.kv_bytes_per_token_per_layer(p, 1, 2) * p.text.num_layers == 188_416
    assert p.vision is not None and p.vision.params + p.vision.projector_params == 858_681_856
