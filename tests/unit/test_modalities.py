"""Tokens per image / video / audio item: worked values per family.

Expected values are worked by hand from each processor's rule (see docs/estimator.md) and, where
marked, match figures vLLM or the model authors publish.
"""

from __future__ import annotations

import pytest

from mmop import modalities as mm
from mmop.model import load_profile

QWEN25 = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN2 = "Qwen/Qwen2-VL-7B-Instruct"
QWEN3 = "Qwen/Qwen3-VL-8B-Instruct"
NEXT = "llava-hf/llava-v1.6-mistral-7b-hf"


@pytest.mark.parametrize(
    ("model", "width", "height", "kwargs", "tokens"),
    [
        # Qwen2/2.5-VL: one token per 28×28 px after smart-resize
        (QWEN25, 1920, 1080, {}, 2691),  # 1932×1092 → 69×39
        (QWEN25, 3840, 2160, {}, 10549),
        (QWEN25, 1024, 1024, {}, 1369),  # 1036² → 37²
        (QWEN25, 448, 448, {}, 256),
        (QWEN25, 1920, 1080, {"max_pixels": 1280 * 28 * 28}, 1222),
        (QWEN25, 3840, 2160, {"max_pixels": 1280 * 28 * 28}, 1222),
        (QWEN25, 20, 20, {}, 4),  # scaled up to min_pixels 56²
        (QWEN2, 1920, 1080, {}, 2691),
        # Qwen3-VL: one token per 32×32 px
        (QWEN3, 1024, 1024, {}, 1024),
        (QWEN3, 1920, 1080, {}, 2040),  # 1920×1088 → 60×34
        # LLaVA-1.5: fixed 24×24
        ("llava-hf/llava-1.5-7b-hf", 640, 480, {}, 576),
        ("llava-hf/llava-1.5-7b-hf", 4000, 3000, {}, 576),
        # LLaVA-NeXT: base 576 + unpadded grid + one newline per row
        (NEXT, 672, 672, {}, 2928),
        (NEXT, 1008, 336, {}, 2328),
        (NEXT, 1920, 1080, {}, 1948),
        (NEXT, 640, 480, {}, 2340),
        (NEXT, 336, 336, {}, 1176),
        # Gemma 3: 256 per image; pan-and-scan adds crops of 256
        ("google/gemma-3-4b-it", 896, 896, {}, 256),
        ("google/gemma-3-4b-it", 1920, 1080, {}, 256),
        ("google/gemma-3-4b-it", 1920, 1080, {"do_pan_and_scan": True}, 768),
        ("google/gemma-3-4b-it", 1000, 1000, {"do_pan_and_scan": True}, 256),
        # Mistral 3: 28-px tokens plus one break per row, 1540 px max side
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 1540, 1540, {}, 3080),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 1024, 1024, {}, 1406),
    ],
)
def test_image_tokens(model: str, width: int, height: int, kwargs: dict, tokens: int) -> None:
    assert mm.image_tokens(load_profile(model), width, height, kwargs) == tokens


@pytest.mark.parametrize(
    ("model", "kwargs", "tokens"),
    [
        (QWEN25, {}, 16384),
        (QWEN25, {"max_pixels": 1280 * 28 * 28}, 1280),
        (QWEN3, {}, 16384),
        ("llava-hf/llava-1.5-7b-hf", {}, 576),
        (NEXT, {}, 2928),
        ("google/gemma-3-4b-it", {}, 256),
        ("google/gemma-3-4b-it", {"do_pan_and_scan": True}, 1280),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", {}, 3080),
    ],
)
def test_max_image_tokens(model: str, kwargs: dict, tokens: int) -> None:
    assert mm.max_image_cost(load_profile(model), kwargs).tokens == tokens


@pytest.mark.parametrize(
    ("max_model_len", "tokens"),
    [
        (2048, 16384),  # one frame pair, even if it exceeds the length
        (32768, 32768),  # two temporal patches of 16,384
        (128000, 114688),  # capped at 14 frames: 7 × 16,384 (seen in a vLLM log)
    ],
)
def test_qwen_video_dummy_is_bounded_by_max_model_len(max_model_len: int, tokens: int) -> None:
    assert mm.max_video_cost(load_profile(QWEN25), max_model_len).tokens == tokens


def test_qwen_video_tokens_use_temporal_patches() -> None:
    profile = load_profile(QWEN25)
    one = mm.image_tokens(profile, 448, 448)
    assert mm.video_cost(profile, 448, 448, 8).tokens == 4 * one
    assert mm.video_cost(profile, 448, 448, 7).tokens == 4 * one  # padded to even frames


@pytest.mark.parametrize(("seconds", "tokens"), [(30, 750), (10, 250), (60, 750), (1, 25)])
def test_whisper_audio_tokens(seconds: float, tokens: int) -> None:
    assert mm.audio_cost(load_profile("Qwen/Qwen2-Audio-7B-Instruct"), seconds).tokens == tokens


def test_smart_resize_refuses_extreme_aspect_ratios() -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        mm.qwen_smart_resize(10, 5000, 28, 3136, 12845056)


@pytest.mark.parametrize(
    ("w", "h", "max_num", "tiles"),
    [
        (448, 448, 12, 1),
        (896, 448, 12, 2),
        (1920, 1080, 12, 8),
        (4000, 1000, 12, 4),
        (800, 600, 6, 6),
    ],
)
def test_internvl_tiles(w: int, h: int, max_num: int, tiles: int) -> None:
    assert mm.internvl_tiles(w, h, 1, max_num, 448) == tiles


@pytest.mark.parametrize(
    ("w", "h", "crops"), [(1920, 1080, 2), (1000, 1000, 0), (4000, 500, 4), (300, 900, 3)]
)
def test_gemma3_pan_and_scan_crops(w: int, h: int, crops: int) -> None:
    assert mm.gemma3_crops(w, h, 4, 256, 1.2) == crops


@pytest.mark.parametrize(
    ("w", "h", "num_crops", "tokens"),
    [(1344, 1008, 16, 1921), (1344, 1008, 4, 757), (336, 336, 4, 757)],
)
def test_phi3v_hd_transform_tokens(w: int, h: int, num_crops: int, tokens: int) -> None:
    nw, nh = mm.phi3v_hd_size(w, h, num_crops)
    tiles = (nh // 336) * (nw // 336)
    assert (tiles + 1) * 144 + 1 + (nh // 336 + 1) * 12 == tokens


@pytest.mark.parametrize(
    ("w", "h", "grid"), [(448, 448, (0, 0)), (1344, 896, (3, 2)), (896, 896, (2, 2))]
)
def test_minicpmv_slice_grid(w: int, h: int, grid: tuple[int, int]) -> None:
    assert mm.minicpmv_grid(w, h, 9, 448) == grid


def test_modalities_per_family() -> None:
    assert mm.supported_modalities(load_profile(QWEN25)) == ("image", "video")
    assert mm.supported_modalities(load_profile("google/gemma-3-4b-it")) == ("image",)
    assert mm.supported_modalities(load_profile("Qwen/Qwen2-Audio-7B-Instruct")) == ("audio",)
    assert mm.supported_modalities(load_profile("Qwen/Qwen2.5-Omni-7B")) == (
        "image",
        "video",
        "audio",
    )
    assert mm.supported_modalities(load_profile("Qwen/Qwen3-0.6B")) == ()
