"""Families outside the catalog from their published configs (bench/families, verbatim copies):
MiniCPM-V 4 on the decoder vLLM builds for its version, GLM-4.1V with its own image rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


# GLM-4.1V: images as its processor counts them (the processor tier asks transformers'
# Glm4vImageProcessor the same sizes); video is not counted, so it is turned off or no verdict.
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


def test_glm4v_video_gets_no_verdict_unless_it_is_off() -> None:
    from mmop.catalog import resolve_gpu
    from mmop.estimator import EngineArgs, NoVerdict, estimate

    p = glm_profile()
    gpu = resolve_gpu("H100-80GB-SXM")
    with pytest.raises(NoVerdict, match="GLM-4V video"):
        estimate(p, gpu, EngineArgs(max_model_len=16384))
    off = EngineArgs(max_model_len=16384, limit_mm_per_prompt={"video": {"count": 0}})
    assert estimate(p, gpu, off).fits


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


def test_internvl_hf_layout_is_read_by_the_generic_path_not_the_chat_rule() -> None:
    """transformers' InternVL layout (vision sides as [h, w], no llm_config) used to fail with
    "cannot read config.json ('llm_config')"; it is now bounded like any family without a
    processor rule: at least 12 tiles + a thumbnail of 256 tokens."""
    data = Path(__file__).parent / "data" / "internvl-hf-layout"
    p = load_profile_from_dir(data, "acme/internvl3-hf")
    assert p.family == "generic_mm" and p.approximate
    assert p.vision is not None and p.vision.patch_size == 14
    assert mm.max_image_cost(p).tokens >= 13 * 256
