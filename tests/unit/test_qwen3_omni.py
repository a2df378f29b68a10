"""Qwen3-Omni from its published config (bench/families, a verbatim copy): the thinker vLLM
serves, its Qwen3-MoE decoder, and tokens per item as its own processor counts them (the same
counts are asked of transformers' processor in tests/engine/test_processor_tokens.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmop import modalities as mm
from mmop.catalog import resolve_gpu
from mmop.estimator import EngineArgs, estimate
from mmop.model import load_profile_from_dir

OMNI = Path(__file__).resolve().parents[2] / "bench/families/Qwen/Qwen3-Omni-30B-A3B-Instruct"


@pytest.fixture(scope="module")
def profile():  # type: ignore[no-untyped-def]
    return load_profile_from_dir(OMNI)


def test_it_is_read_as_qwen3_omni_not_as_qwen2_5_omni(profile) -> None:  # type: ignore[no-untyped-def]
    assert profile.family == "qwen3_omni"
    # bench/families holds its config.json only: without the preprocessor config the image
    # bound is the published one, and the estimate says it is approximate
    assert profile.processor_config_missing and profile.approximate
    assert "preprocessor_config.json" in profile.approximate_what
    assert profile.architecture == "Qwen3OmniMoeForConditionalGeneration"
    assert set(mm.supported_modalities(profile)) == {"image", "video", "audio"}


def test_the_decoder_is_the_thinkers_qwen3_moe(profile) -> None:  # type: ignore[no-untyped-def]
    t = profile.text
    assert (t.model_type, t.num_layers, t.num_kv_heads, t.head_dim) == ("qwen3_moe", 48, 4, 128)
    assert t.moe is not None


def test_only_the_thinker_is_weighed(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile.params
    assert p.other == 0  # talker and code2wav: not loaded by vLLM's thinker class
    # 128 experts x 48 layers x 3 x 2048 x 768 alone are 29.0e9
    assert 29.5e9 < p.language_model + p.embedding < 31.0e9
    assert 0.5e9 < p.vision < 0.6e9 and 0.6e9 < p.audio < 0.7e9


@pytest.mark.parametrize(
    ("seconds", "tokens"),
    [(0.5, 7), (1, 13), (1.234, 16), (30, 390), (45, 585), (600, 7800)],
)
def test_audio_is_13_tokens_a_second_over_the_whole_clip(profile, seconds, tokens) -> None:  # type: ignore[no-untyped-def]
    # processing_qwen3_omni_moe._get_feat_extract_output_lengths on the clip's mel frames
    assert mm.audio_cost(profile, seconds).tokens == tokens


def test_vllm_profiles_30_seconds_of_audio(profile) -> None:  # type: ignore[no-untyped-def]
    assert mm.max_audio_cost(profile).tokens == 390


def test_images_are_cut_on_the_towers_32_pixel_unit(profile) -> None:  # type: ignore[no-untyped-def]
    assert mm.image_cost(profile, 960, 960).tokens == (960 // 32) ** 2
    # No preprocessor_config.json here: not the class default (28*28*1280 pixels, 980 units of
    # 32x32, what vLLM would never be given), but the largest published Qwen setting.
    assert mm.max_image_cost(profile).tokens == 16384
    with_config = profile.model_copy(update={"preprocessor": {"max_pixels": 12845056}})
    assert mm.max_image_cost(with_config).tokens == 12845056 // (32 * 32)


def test_video_frames_default_to_the_processors_768_units(profile) -> None:  # type: ignore[no-untyped-def]
    # a 4K frame pair is scaled to at most 768 units of 32x32 (Qwen3OmniMoeProcessorKwargs)
    assert mm.video_cost(profile, 3840, 2160, 2).tokens <= 768
    assert mm.video_cost(profile, 3840, 2160, 2).tokens > 700


def test_an_estimate_answers_with_a_verdict(profile) -> None:  # type: ignore[no-untyped-def]
    est = estimate(profile, resolve_gpu("H100-80GB-SXM"), EngineArgs(max_model_len=32768))
    assert est.fits
    assert est.weights_gib == pytest.approx(59.1, abs=0.2)
    # 48 layers x 4 KV heads x 128 x (K and V) x 2 bytes
    assert est.kv_bytes_per_token == 48 * 4 * 128 * 2 * 2
