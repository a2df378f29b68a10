"""Families outside the catalog from their published configs (bench/families, verbatim copies):
MiniCPM-V 4 on the decoder vLLM builds for its version, GLM-4.1V through the generic path."""

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


def test_glm_4_1v_is_read_by_the_generic_path_and_marked_approximate() -> None:
    p = load_profile_from_dir(FAMILIES / "zai-org/GLM-4.1V-9B-Thinking")
    assert p.family == "generic_mm" and p.approximate
    assert len(p.text.layers) == 40 and p.text.num_kv_heads == 2
    # GLM-4.1V's processor: at most longest_edge pixels in 28x28 units (preprocessor_config)
    pre = json.loads(
        (FAMILIES / "zai-org/GLM-4.1V-9B-Thinking/preprocessor_config.json").read_text()
    )
    exact_max = pre["size"]["longest_edge"] // (28 * 28)
    assert mm.max_image_cost(p).tokens >= exact_max
