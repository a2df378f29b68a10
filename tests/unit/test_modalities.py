"""Tokens per image / video / audio item: worked values per family.

Expected values are worked by hand from each processor's rule (see docs/estimator.md) and, where
marked, match figures vLLM or the model authors publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


# ----------------------------------------------------------------------------------------------
# Counts equal to each family's processor (the engine tier, tests/engine/test_processor_tokens.py,
# checks them against the installed processors; these pin the figures it found).


def test_qwen3_vl_video_budget_covers_all_frames() -> None:
    """Qwen3-VL's video processor holds frames × height × width within the video config's
    longest_edge (25,165,824 px): 64 frames of 1280×720 shrink to 448×832, 32 frame pairs of
    28×52 patches / 4 = 11,648 tokens (transformers' Qwen3VLVideoProcessor says the same)."""
    cost = mm.video_cost(load_profile(QWEN3), 1280, 720, 64)
    assert cost.tokens == 11648
    assert cost.encoder_patches == 46592


def test_qwen3_vl_video_smart_resize_matches_the_processor_rule() -> None:
    # 64 × 720 × 1280 exceeds the budget: β = √2.34375, sides floored to 32 px
    assert mm.qwen3_vl_video_smart_resize(64, 720, 1280, 2, 32, 4096, 25165824) == (448, 832)
    # within the budget the sides are rounded to 32 px, as for an image
    assert mm.qwen3_vl_video_smart_resize(8, 720, 1280, 2, 32, 4096, 25165824) == (704, 1280)
    # frames below the factor are scaled up first (10×1000 → 32×3200)
    assert mm.qwen3_vl_video_smart_resize(2, 10, 1000, 2, 32, 4096, 25165824) == (32, 3200)
    with pytest.raises(ValueError, match="temporal_factor"):
        mm.qwen3_vl_video_smart_resize(1, 720, 1280, 2, 32, 4096, 25165824)


def test_qwen3_vl_video_pads_odd_frames_but_budgets_rounded_frames() -> None:
    """The budget counts round(t/2)·2 frames, the encoder gets ⌈t/2⌉ frame pairs: 37 frames of
    1007×720 budget as 36 (682 units each) but encode 19 pairs, more than 64 frames get."""
    profile = load_profile(QWEN3)
    cost = mm.video_cost(profile, 64, 48, 5)  # 64×64, 3 pairs of 4×4 patches
    assert (cost.tokens, cost.encoder_patches) == (12, 48)
    assert mm.video_cost(profile, 1007, 720, 37).tokens == 19 * 682
    assert mm.video_cost(profile, 1007, 720, 36).tokens == 18 * 682
    with pytest.raises(ValueError, match="temporal_factor"):
        mm.video_cost(profile, 64, 48, 1)


def test_qwen3_vl_video_takes_the_flat_pixel_kwargs_too() -> None:
    """vLLM routes flat min/max_pixels to the video scope as well (folded into its size):
    8 frames of 1280×720 within 1,048,576 px for all frames."""
    profile = load_profile(QWEN3)
    assert mm.video_cost(profile, 1280, 720, 8, {"max_pixels": 1024 * 32 * 32}).tokens == 480
    scoped = {"max_pixels": 1024 * 32 * 32, "videos_kwargs": {"max_pixels": 25165824}}
    assert mm.video_cost(profile, 1280, 720, 8, scoped).tokens == 3520


def test_qwen3_vl_video_dummy_is_two_frames_of_the_budget() -> None:
    cost = mm.max_video_cost(load_profile(QWEN3), 32768)
    assert (cost.tokens, cost.encoder_patches) == (12288, 49152)


@pytest.mark.parametrize(
    ("frames", "seconds", "bound"),
    [
        (64, None, 32 * 19),  # unstated length: under 10**5 s, "<99999.9 seconds>" + 2
        (64, 12.0, 32 * 16),  # "<11.9 seconds>": 14 bytes + 2
        (8, 9.99, 4 * 16),  # t ≤ 9.99 can print as "10.0"
        (8, 4.0, 4 * 15),
        (768, None, 384 * 19),
        (2, 100000.0, 1 * 20),
    ],
)
def test_qwen3_vl_timestamp_text_bound(frames: int, seconds: float | None, bound: int) -> None:
    """Per frame pair vLLM adds "<t seconds>" text and a vision start and end token; a byte-level
    BPE token covers at least one byte, so the text costs at most its length."""
    cost = mm.video_cost(load_profile(QWEN3), 1280, 720, frames, seconds=seconds)
    assert cost.text_tokens == bound
    assert cost.prompt_tokens == cost.tokens + bound
    assert mm.video_cost(load_profile(QWEN25), 1280, 720, frames).text_tokens == 0


@pytest.mark.parametrize(
    ("model", "total", "fps", "frames"),
    [
        (QWEN3, 900, 30.0, 60),  # 30 s at 2 fps
        (QWEN3, 30, 30.0, 4),  # 1 s: at least min_frames
        (QWEN3, 3, 30.0, 3),  # never more than the clip has
        (QWEN3, 100000, 24.0, 768),  # max_frames
        (QWEN25, 901, 30.0, 60),  # floored to whole frame pairs
        (QWEN25, 931, 30.0, 62),
        (QWEN25, 5, 30.0, 4),
    ],
)
def test_sampled_frames_follow_vllms_video_loaders(
    model: str, total: int, fps: float, frames: int
) -> None:
    assert mm.sampled_frames(load_profile(model), total, fps) == frames


def test_qwen_images_round_sides_before_the_pixel_bounds() -> None:
    """transformers' smart_resize rounds a side below half the factor to 0 and then scales the
    image up to min_pixels (10×1000: 20 tokens, not the 36 of clamping the side to 28 px)."""
    assert mm.image_tokens(load_profile(QWEN25), 1000, 10) == 20


def test_pixtral_rounds_the_scaled_sides() -> None:
    """mistral_common's ImageEncoder rounds the sides of an image it scales down (2000×1001 →
    1024×513: 33 rows of 64 + a break); vLLM's Mistral 3 encoder info floors them."""
    assert mm.image_tokens(load_profile("mistralai/Pixtral-12B-2409"), 2000, 1001) == 2145
    mistral3 = load_profile("mistralai/Mistral-Small-3.1-24B-Instruct-2503")
    assert mm.image_tokens(mistral3, 990, 700) == 925


def test_idefics3_without_splitting_is_one_tile() -> None:
    smol = load_profile("HuggingFaceTB/SmolVLM-Instruct")
    assert mm.image_tokens(smol, 1920, 1080) == 1053
    assert mm.image_tokens(smol, 1920, 1080, {"do_image_splitting": False}) == 81


@pytest.mark.parametrize(
    ("model", "seconds", "tokens", "mel"),
    [
        ("Qwen/Qwen2-Audio-7B-Instruct", 10.005, 250, 1001),  # 160,080 samples: 1001 hops
        ("Qwen/Qwen2-Audio-7B-Instruct", 45, 750, 3000),  # one 30-s window
        ("Qwen/Qwen2.5-Omni-7B", 45, 1125, 4500),  # Omni's extractor keeps 300 s
        ("Qwen/Qwen2.5-Omni-7B", 600, 7500, 30000),
    ],
)
def test_audio_follows_the_feature_extractors_window(
    model: str, seconds: float, tokens: int, mel: int
) -> None:
    cost = mm.audio_cost(load_profile(model), seconds)
    assert (cost.tokens, cost.encoder_patches) == (tokens, mel)
    assert mm.max_audio_cost(load_profile(model)).tokens == 750  # vLLM's dummy: 30 s at most


def test_internvl_video_only_where_the_lm_has_a_video_token() -> None:
    assert "video" in mm.supported_modalities(load_profile("OpenGVLab/InternVL3-8B"))
    assert "video" not in mm.supported_modalities(load_profile("OpenGVLab/InternVL2_5-8B"))


# ----------------------------------------------------------------------------------------------
# The costliest item within the bounds


@pytest.mark.parametrize(
    ("model", "kwargs", "bounds", "tokens", "corner"),
    [
        # InternVL3: a 3:1 image of 2 × 6 tiles (+ thumbnail) beats the 3 × 3 of a square corner
        ("OpenGVLab/InternVL3-8B", {}, (2048, 2048), 3328, 2560),
        ("OpenGVLab/InternVL3-8B", {}, (1920, 640), 3328, 3328),
        # Phi-3.5-V, 8 crops: an 8:1 strip gets 8 crops, the square corner 4
        ("microsoft/Phi-3.5-vision-instruct", {"num_crops": 8}, (4096, 4096), 1405, 1333 - 576),
        ("microsoft/Phi-3.5-vision-instruct", {"num_crops": 8}, (1344, 672), 1405, 1333),
        # Gemma 3 pan and scan: a 1920×256 strip is cut into 4 crops
        ("google/gemma-3-4b-it", {"do_pan_and_scan": True}, (1920, 1080), 1280, 768),
        # LLaVA-NeXT: a near-square image fills the 2 × 2 grid
        (NEXT, {}, (1920, 1080), 2928, 1948),
        # MiniCPM-V: 7 slices for a near-4:3 image of 1.6 M px
        ("openbmb/MiniCPM-V-2_6", {}, (1920, 1080), 640, 576),
        # Idefics3: 4 × 3 tiles at 3:4
        ("HuggingFaceTB/SmolVLM-Instruct", {}, (1920, 1080), 1377, 1053),
        # Qwen2.5-VL under a 1280-token cap: a size whose grid fills the cap exactly
        (QWEN25, {"max_pixels": 1280 * 28 * 28}, (2048, 2048), 1280, 1225),
        # monotone families: the corner (clipped to the longest edge)
        (QWEN3, {}, (1920, 1080), 2040, 2040),
        ("mistralai/Pixtral-12B-2409", {}, (1920, 1080), 4160, 2340),
        ("llava-hf/llava-1.5-7b-hf", {}, (640, 480), 576, 576),
    ],
)
def test_worst_image_cost(
    model: str, kwargs: dict, bounds: tuple[int, int], tokens: int, corner: int
) -> None:
    profile = load_profile(model)
    worst = mm.worst_image_cost(profile, *bounds, kwargs)
    assert worst.tokens == tokens
    assert mm.image_tokens(profile, *bounds, kwargs) == corner
    w, h = mm.worst_image_size(profile, *bounds, kwargs)
    assert w <= bounds[0] and h <= bounds[1]
    assert mm.image_cost(profile, w, h, kwargs) == worst  # attained


@pytest.mark.parametrize(
    ("model", "bounds", "tokens", "size"),
    [
        # Qwen3-VL: 37 frames budget as 36 but encode as 19 pairs; 64 frames get 11,648
        (QWEN3, (1280, 720, 64), 12958, (1007, 720, 37)),
        (QWEN3, (3840, 2160, 32), 18432, (3088, 2064, 5)),
        (QWEN3, (640, 480, 16), 2400, (640, 480, 15)),
        # Qwen2.5-VL resizes each frame alone: the worst frame, all frames
        (QWEN25, (1280, 720, 64), 38272, (1280, 720, 64)),
        ("OpenGVLab/InternVL3-8B", (1920, 1080, 16), 16 * 256, (1920, 1080, 16)),
        ("openbmb/MiniCPM-V-2_6", (1920, 1080, 16), 16 * 64, (1920, 1080, 16)),
    ],
)
def test_worst_video_cost(
    model: str, bounds: tuple[int, int, int], tokens: int, size: tuple[int, int, int]
) -> None:
    profile = load_profile(model)
    worst = mm.worst_video_cost(profile, *bounds)
    assert worst.tokens == tokens
    assert mm.worst_video_size(profile, *bounds) == size
    cost = mm.video_cost(profile, *size)
    assert (cost.tokens, cost.encoder_patches) == (worst.tokens, worst.encoder_patches)


def test_worst_video_text_bound_is_that_of_the_longest_video() -> None:
    worst = mm.worst_video_cost(load_profile(QWEN3), 1280, 720, 64)
    assert worst.text_tokens == mm.video_cost(load_profile(QWEN3), 1280, 720, 64).text_tokens


# Brute force: the search is exact — equal to the best over every image of small bounds, and at
# least the best of a fine grid (and attained) for large ones.

SEARCH_CASES = [
    (QWEN25, {}),
    (QWEN25, {"max_pixels": 256 * 28 * 28}),
    (QWEN3, {}),
    (QWEN3, {"max_pixels": 1024 * 32 * 32}),
    ("llava-hf/llava-1.5-7b-hf", {}),
    (NEXT, {}),
    ("OpenGVLab/InternVL3-8B", {}),
    ("OpenGVLab/InternVL3-8B", {"max_dynamic_patch": 6}),
    ("google/gemma-3-4b-it", {"do_pan_and_scan": True}),
    ("mistralai/Pixtral-12B-2409", {}),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", {}),
    ("microsoft/Phi-3.5-vision-instruct", {}),
    ("microsoft/Phi-3.5-vision-instruct", {"num_crops": 16}),
    ("HuggingFaceTB/SmolVLM-Instruct", {}),
    ("HuggingFaceTB/SmolVLM-Instruct", {"size": {"longest_edge": 768}}),
    ("openbmb/MiniCPM-V-2_6", {}),
    ("openbmb/MiniCPM-V-2_6", {"max_slice_nums": 4}),
]


def _brute(
    cost: Callable[[int, int], mm.ItemCost], sizes: Iterable[tuple[int, int]]
) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for w, h in sizes:
        try:
            c = cost(w, h)
        except ValueError:
            continue
        key = (c.tokens, c.encoder_patches)
        best = key if best is None or key > best else best
    return best


@pytest.mark.parametrize(("model", "kwargs"), SEARCH_CASES)
def test_worst_image_equals_brute_force_on_small_bounds(model: str, kwargs: dict) -> None:
    profile = load_profile(model)

    def cost(w: int, h: int) -> mm.ItemCost:
        return mm.image_cost(profile, w, h, kwargs)

    for W, H in [(1, 1), (3, 40), (41, 7), (64, 64), (90, 37)]:
        sizes = [(w, h) for w in range(1, W + 1) for h in range(1, H + 1)]
        worst = mm.worst_image_cost(profile, W, H, kwargs)
        assert (worst.tokens, worst.encoder_patches) == _brute(cost, sizes), (W, H)


@pytest.mark.parametrize(("model", "kwargs"), SEARCH_CASES)
def test_worst_image_beats_a_fine_grid_on_large_bounds(model: str, kwargs: dict) -> None:
    profile = load_profile(model)

    def cost(w: int, h: int) -> mm.ItemCost:
        return mm.image_cost(profile, w, h, kwargs)

    for W, H, step in [(2048, 2048, 64), (1920, 640, 32), (700, 2100, 35)]:
        edges = [1, 2, 3, 5, 8, 13, W // 7, W // 3, W // 2, W]
        sizes = {(w, h) for w in range(step, W + 1, step) for h in range(step, H + 1, step)}
        sizes |= {(w, h) for w in edges for h in range(1, H + 1, 3)}
        sizes |= {(w, h) for h in edges if h <= H for w in range(1, W + 1, 3)}
        worst = mm.worst_image_cost(profile, W, H, kwargs)
        grid_best = _brute(cost, sizes)
        assert grid_best is not None
        assert (worst.tokens, worst.encoder_patches) >= grid_best, (W, H)
        assert mm.image_cost(profile, *mm.worst_image_size(profile, W, H, kwargs), kwargs) == worst


@pytest.mark.parametrize("kwargs", [{}, {"max_pixels": 1024 * 32 * 32}, {"min_pixels": 300000}])
def test_worst_qwen3_video_equals_brute_force_on_small_bounds(kwargs: dict) -> None:
    profile = load_profile(QWEN3)
    for W, H, T in [(40, 3, 7), (5, 33, 12), (70, 45, 9)]:
        best = None
        for t in range(1, T + 1):
            for w in range(1, W + 1):
                for h in range(1, H + 1):
                    try:
                        c = mm.video_cost(profile, w, h, t, kwargs)
                    except ValueError:
                        continue
                    key = (c.tokens, c.encoder_patches)
                    best = key if best is None or key > best else best
        worst = mm.worst_video_cost(profile, W, H, T, kwargs)
        assert (worst.tokens, worst.encoder_patches) == best, (W, H, T)


def test_worst_cost_search_is_fast_once_per_model() -> None:
    import time

    profile = load_profile("OpenGVLab/InternVL3-8B")
    mm.worst_image_cost(profile, 1000, 1000)  # builds the model's table
    start = time.perf_counter()
    for side in range(1100, 1200):
        mm.worst_image_cost(profile, side, side + 7)
    assert (time.perf_counter() - start) / 100 < 0.005
