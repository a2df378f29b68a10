"""Tokens per image, video and audio item, per model family, as vLLM counts them.

The counts are the placeholder embeddings vLLM's processors insert for one item (the number the
engine uses for its encoder budget and that lands in the KV cache), computed from the item's size,
the model's config, its preprocessor config and ``--mm-processor-kwargs``. Each family follows the
resize/tiling rule of its Hugging Face processor and vLLM's ``get_num_image_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmop.model import ModelProfile

# vLLM caps the frame count of the Qwen2-VL-family video dummy it profiles with.
QWEN_VL_MAX_PROFILE_FRAMES = 14
# Seconds of audio in one Whisper window (Qwen2-Audio / Omni feature extractor chunk).
WHISPER_WINDOW_SECONDS = 30


@dataclass(frozen=True)
class ItemCost:
    """One multimodal item: LM tokens and the work it gives the encoder."""

    tokens: int
    encoder_patches: int  # encoder input positions (patches, tiles × patches, audio frames)
    encoder_sequence: int  # longest sequence one encoder attention call sees


def supported_modalities(profile: ModelProfile) -> tuple[str, ...]:
    """Modalities vLLM enables for the model, in vLLM's names."""
    fam = profile.family
    out: list[str] = []
    if profile.vision is not None:
        out.append("image")
        if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "minicpmv"}:
            out.append("video")
        if fam == "internvl" and profile.text.model_type in {"qwen2", "llama"}:
            out.append("video")
    if profile.audio is not None:
        out.append("audio")
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Qwen-VL family


def qwen_smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """The Qwen2-VL image processor's resize: multiples of `factor`, pixels within bounds."""
    if height <= 0 or width <= 0:
        raise ValueError("image width and height must be positive")
    if max(height, width) / min(height, width) > 200:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen_pixel_bounds(profile: ModelProfile, kwargs: Mapping[str, Any]) -> tuple[int, int]:
    pre = profile.preprocessor
    size = pre.get("size") or {}
    min_pixels = int(pre.get("min_pixels") or size.get("shortest_edge") or 56 * 56)
    max_pixels = int(pre.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 16384)
    ksize = kwargs.get("size") or {}
    min_pixels = int(kwargs.get("min_pixels") or ksize.get("shortest_edge") or min_pixels)
    max_pixels = int(kwargs.get("max_pixels") or ksize.get("longest_edge") or max_pixels)
    return min_pixels, max_pixels


def _qwen_unit(profile: ModelProfile) -> tuple[int, int, int]:
    v = profile.vision
    assert v is not None
    return v.patch_size, v.spatial_merge_size, v.temporal_patch_size


def _qwen_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    patch, merge, _ = _qwen_unit(profile)
    lo, hi = _qwen_pixel_bounds(profile, kw)
    rh, rw = qwen_smart_resize(h, w, patch * merge, lo, hi)
    patches = (rh // patch) * (rw // patch)
    return ItemCost(patches // (merge * merge), patches, patches)


def _qwen_max_image(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    """vLLM's largest-feature image size: the token budget factored into a near-square grid."""
    patch, merge, _ = _qwen_unit(profile)
    _, hi = _qwen_pixel_bounds(profile, kw)
    unit = patch * merge
    n = hi // (unit * unit)
    for seq in range(n, 0, -1):
        d = math.isqrt(seq)
        while seq % d:
            d -= 1
        if (seq // d) / d <= 200:
            return unit * (seq // d), unit * d
    return unit, unit


def _qwen_video(
    profile: ModelProfile, w: int, h: int, frames: int, kw: Mapping[str, Any]
) -> ItemCost:
    patch, merge, temporal = _qwen_unit(profile)
    lo, hi = _qwen_pixel_bounds(profile, kw)
    rh, rw = qwen_smart_resize(h, w, patch * merge, lo, hi)
    grid_t = max((frames + (-frames % temporal)) // temporal, 1)
    per_frame = (rh // patch) * (rw // patch)
    patches = grid_t * per_frame
    return ItemCost(patches // (merge * merge), patches * temporal // temporal, patches)


def _qwen_max_video(profile: ModelProfile, seq_len: int, kw: Mapping[str, Any]) -> ItemCost:
    if profile.family == "qwen3_vl":
        video = profile.preprocessor.get("video") or {}
        vsize = (kw.get("size") or {}).get("longest_edge") or (video.get("size") or {}).get(
            "longest_edge", 25165824
        )
        temporal = int(video.get("temporal_patch_size", 2))
        patch, merge, _ = _qwen_unit(profile)
        unit = patch * merge
        tokens_per_frame_pair = int(vsize) // temporal // (unit * unit)
        return ItemCost(tokens_per_frame_pair, tokens_per_frame_pair * 4, tokens_per_frame_pair * 4)
    w, h = _qwen_max_image(profile, kw)
    frames = 1
    while frames + 1 <= QWEN_VL_MAX_PROFILE_FRAMES:
        if _qwen_video(profile, w, h, frames + 1, kw).tokens > seq_len:
            break
        frames += 1
    return _qwen_video(profile, w, h, max(frames, 1), kw)


# ----------------------------------------------------------------------------------------------
# LLaVA and LLaVA-NeXT


def _clip_grid(profile: ModelProfile) -> tuple[int, int]:
    v = profile.vision
    assert v is not None and v.image_size
    return v.image_size, v.image_size // v.patch_size


def _llava_next_best_resolution(h: int, w: int, pinpoints: list[list[int]]) -> tuple[int, int]:
    best: tuple[int, int] = (pinpoints[0][0], pinpoints[0][1])
    max_eff, min_waste = -1, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = pw * ph - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            max_eff, min_waste, best = eff, waste, (ph, pw)
    return best


def _llava_next_image(profile: ModelProfile, w: int, h: int) -> ItemCost:
    image_size, npatch = _clip_grid(profile)
    pinpoints = profile.config.get("image_grid_pinpoints") or [
        [336, 672],
        [672, 336],
        [672, 672],
        [1008, 336],
        [336, 1008],
    ]
    bh, bw = _llava_next_best_resolution(h, w, pinpoints)
    rows, cols = bh // image_size, bw // image_size
    cur_h, cur_w = npatch * rows, npatch * cols
    if w / h > cur_w / cur_h:
        new_h = int(round(h * (cur_w / w), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(w * (cur_h / h), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    tokens = cur_h * cur_w + cur_h + npatch * npatch
    patches = (1 + rows * cols) * (npatch * npatch + 1)
    return ItemCost(tokens, patches, npatch * npatch + 1)


# ----------------------------------------------------------------------------------------------
# InternVL


def internvl_tiles(w: int, h: int, min_num: int, max_num: int, image_size: int) -> int:
    """Number of 448-px tiles InternVL's dynamic preprocessing cuts an image into."""
    ratios = sorted(
        {
            (i, j)
            for n in range(min_num, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if min_num <= i * j <= max_num
        },
        key=lambda r: r[0] * r[1],
    )
    aspect = w / h
    best, best_diff = (1, 1), float("inf")
    area = w * h
    for rw, rh in ratios:
        diff = abs(aspect - rw / rh)
        if diff < best_diff:
            best_diff, best = diff, (rw, rh)
        elif diff == best_diff and area > 0.5 * image_size * image_size * rw * rh:
            best = (rw, rh)
    return best[0] * best[1]


def _internvl_params(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int, bool, int]:
    cfg = profile.config
    max_num = int(kw.get("max_dynamic_patch") or cfg.get("max_dynamic_patch") or 12)
    min_num = int(kw.get("min_dynamic_patch") or cfg.get("min_dynamic_patch") or 1)
    thumb = bool(kw.get("use_thumbnail", cfg.get("use_thumbnail", True)))
    v = profile.vision
    assert v is not None and v.image_size
    per_tile = (v.image_size // v.patch_size) ** 2 // (v.spatial_merge_size**2)
    return min_num, max_num, thumb, per_tile


def _internvl_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    min_num, max_num, thumb, per_tile = _internvl_params(profile, kw)
    v = profile.vision
    assert v is not None and v.image_size
    if kw.get("dynamic_image_size", profile.config.get("dynamic_image_size", True)):
        tiles = internvl_tiles(w, h, min_num, max_num, v.image_size)
    else:
        tiles = 1
    if thumb and tiles != 1:
        tiles += 1
    patches_per_tile = (v.image_size // v.patch_size) ** 2 + 1
    return ItemCost(tiles * per_tile, tiles * patches_per_tile, patches_per_tile)


# ----------------------------------------------------------------------------------------------
# Gemma 3


def gemma3_crops(w: int, h: int, max_crops: int, min_crop: int, min_ratio: float) -> int:
    """Pan-and-scan crop count of the Gemma 3 image processor."""
    if w >= h:
        if w / h < min_ratio:
            return 0
        cw = max(2, min(math.floor(w / min_crop), math.floor(w / h + 0.5)))
        cw, ch = min(max_crops, cw), 1
    else:
        if h / w < min_ratio:
            return 0
        ch = max(2, min(math.floor(h / min_crop), math.floor(h / w + 0.5)))
        ch, cw = min(max_crops, ch), 1
    if min(math.ceil(w / cw), math.ceil(h / ch)) < min_crop:
        return 0
    return cw * ch


def _gemma3_opts(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[bool, int, int, float]:
    pre = profile.preprocessor

    def pick(key: str, default: float) -> float:
        value = kw.get(key)
        if value is None:
            value = pre.get(key)
        return float(default if value is None else value)

    pas = bool(kw.get("do_pan_and_scan", pre.get("do_pan_and_scan") or False))
    max_crops = int(pick("pan_and_scan_max_num_crops", 4))
    min_crop = int(pick("pan_and_scan_min_crop_size", 256))
    ratio = pick("pan_and_scan_min_ratio_to_activate", 1.2)
    return pas, max_crops, min_crop, ratio


def _gemma3_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    per_image = int(profile.config.get("mm_tokens_per_image", 256))
    pas, max_crops, min_crop, ratio = _gemma3_opts(profile, kw)
    crops = gemma3_crops(w, h, max_crops, min_crop, ratio) if pas else 0
    v = profile.vision
    assert v is not None and v.image_size
    patches = (v.image_size // v.patch_size) ** 2
    return ItemCost((crops + 1) * per_image, (crops + 1) * patches, patches)


# ----------------------------------------------------------------------------------------------
# Pixtral and Mistral 3


def _pixtral_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    v = profile.vision
    assert v is not None and v.image_size
    merge = v.spatial_merge_size
    longest = int(kw.get("longest_edge") or v.image_size)
    ratio = max(h / longest, w / longest)
    if ratio > 1:
        h, w = math.floor(h / ratio), math.floor(w / ratio)
    unit = v.patch_size * merge
    rows, cols = math.ceil(h / unit), math.ceil(w / unit)
    patches = rows * cols * merge * merge
    return ItemCost(rows * cols + rows, patches, patches)


# ----------------------------------------------------------------------------------------------
# Phi-3.5-vision


def phi3v_hd_size(width: int, height: int, hd_num: int) -> tuple[int, int]:
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * 336)
    new_h = int(new_w / ratio)
    pad_h = math.ceil(new_h / 336) * 336
    return (pad_h, new_w) if transposed else (new_w, pad_h)


def _phi3v_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    crops = int(kw.get("num_crops") or profile.preprocessor.get("num_crops") or 4)
    nw, nh = phi3v_hd_size(w, h, crops)
    tiles = (nh // 336) * (nw // 336)
    tokens = (tiles + 1) * 144 + 1 + (nh // 336 + 1) * 12
    return ItemCost(tokens, (tiles + 1) * 577, 577)


# ----------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM


def _idefics3_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    pre = profile.preprocessor
    v = profile.vision
    assert v is not None and v.image_size
    longest = int(
        (kw.get("size") or {}).get("longest_edge")
        or (pre.get("size") or {}).get("longest_edge")
        or 4 * v.image_size
    )
    tile = int((pre.get("max_image_size") or {}).get("longest_edge") or v.image_size)
    aspect = w / h
    if w >= h:
        nw, nh = longest, int(longest / aspect)
        nh += nh % 2
    else:
        nh, nw = longest, int(longest * aspect)
        nw += nw % 2
    nh, nw = max(nh, 1), max(nw, 1)
    tiles = math.ceil(nh / tile) * math.ceil(nw / tile) + 1 if nh > tile or nw > tile else 1
    per_tile = (v.image_size // v.patch_size) ** 2 // (v.spatial_merge_size**2)
    patches_per_tile = (v.image_size // v.patch_size) ** 2
    return ItemCost(tiles * per_tile, tiles * patches_per_tile, patches_per_tile)


# ----------------------------------------------------------------------------------------------
# MiniCPM-V 2.6


def minicpmv_grid(w: int, h: int, max_slices: int, scale_resolution: int) -> tuple[int, int]:
    log_ratio = math.log(w / h)
    ratio = w * h / (scale_resolution * scale_resolution)
    multiple = min(math.ceil(ratio), max_slices)
    if multiple <= 1:
        return (0, 0)
    candidates = [i for i in (multiple - 1, multiple, multiple + 1) if 1 < i <= max_slices]
    best, best_err = (1, 1), float("inf")
    for num in candidates:
        for m in range(1, num + 1):
            if num % m == 0:
                err = abs(log_ratio - math.log(m / (num // m)))
                if err < best_err:
                    best_err, best = err, (m, num // m)
    return best


def _minicpmv_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    cfg, pre = profile.config, profile.preprocessor
    slice_cfg = cfg.get("slice_config") or {}
    max_slices = int(
        kw.get("max_slice_nums") or pre.get("max_slice_nums") or slice_cfg.get("max_slice_nums", 9)
    )
    scale = int(pre.get("scale_resolution") or slice_cfg.get("scale_resolution", 448))
    query = int(cfg.get("query_num", 64))
    gw, gh = minicpmv_grid(w, h, max_slices, scale)
    slices = gw * gh
    patches = (scale // 14) ** 2
    return ItemCost((1 + slices) * query, (1 + slices) * patches, patches)


# ----------------------------------------------------------------------------------------------
# Audio


def whisper_audio_tokens(seconds: float) -> int:
    """Qwen2-Audio / Qwen2.5-Omni tokens for a clip: mel frames, conv stride 2, pooling 2."""
    mel = max(1, round(min(seconds, WHISPER_WINDOW_SECONDS) * 100))
    conv = (mel - 1) // 2 + 1
    return max(1, (conv - 2) // 2 + 1)


# ----------------------------------------------------------------------------------------------
# Public functions


def image_cost(
    profile: ModelProfile, width: int, height: int, mm_kwargs: Mapping[str, Any] | None = None
) -> ItemCost:
    """Tokens and encoder work for one image of `width` × `height` pixels."""
    kw = dict(mm_kwargs or {})
    if width <= 0 or height <= 0:
        raise ValueError("image width and height must be positive")
    fam = profile.family
    if profile.vision is None:
        raise ValueError(f"{profile.id} takes no images")
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"}:
        return _qwen_image(profile, width, height, kw)
    if fam == "llava":
        _, npatch = _clip_grid(profile)
        return ItemCost(npatch * npatch, npatch * npatch + 1, npatch * npatch + 1)
    if fam == "llava_next":
        return _llava_next_image(profile, width, height)
    if fam == "internvl":
        return _internvl_image(profile, width, height, kw)
    if fam == "gemma3":
        return _gemma3_image(profile, width, height, kw)
    if fam in {"pixtral", "mistral3"}:
        return _pixtral_image(profile, width, height, kw)
    if fam == "phi3_v":
        return _phi3v_image(profile, width, height, kw)
    if fam == "idefics3":
        return _idefics3_image(profile, width, height, kw)
    if fam == "minicpmv":
        return _minicpmv_image(profile, width, height, kw)
    raise ValueError(f"no image token rule for family {fam!r}")


def image_tokens(
    profile: ModelProfile, width: int, height: int, mm_kwargs: Mapping[str, Any] | None = None
) -> int:
    return image_cost(profile, width, height, mm_kwargs).tokens


def max_image_size(
    profile: ModelProfile, mm_kwargs: Mapping[str, Any] | None = None
) -> tuple[int, int]:
    """The (width, height) vLLM uses as its largest-feature dummy image."""
    kw = dict(mm_kwargs or {})
    fam = profile.family
    v = profile.vision
    assert v is not None
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"}:
        return _qwen_max_image(profile, kw)
    if fam == "llava_next":
        pins = profile.config.get("image_grid_pinpoints") or [[672, 672]]
        best = max(pins, key=lambda p: _llava_next_image(profile, p[1], p[0]).tokens)
        return best[1], best[0]
    if fam == "internvl":
        _, max_num, _, _ = _internvl_params(profile, kw)
        assert v.image_size
        return v.image_size * max_num, v.image_size
    if fam == "gemma3":
        _, max_crops, _, _ = _gemma3_opts(profile, kw)
        assert v.image_size
        return v.image_size, v.image_size * max_crops
    if fam in {"pixtral", "mistral3"}:
        side = int(kw.get("longest_edge") or v.image_size or 1024)
        return side, side
    if fam == "phi3_v":
        crops = int(kw.get("num_crops") or profile.preprocessor.get("num_crops") or 4)
        candidates = [(336 * a, 336 * b) for a in range(1, crops + 1) for b in range(1, crops + 1)]
        return max(candidates, key=lambda s: _phi3v_image(profile, s[0], s[1], kw).tokens)
    if fam == "idefics3":
        return 4096, 4096
    if fam == "minicpmv":
        scale = int(profile.preprocessor.get("scale_resolution") or 448)
        candidates = [(scale * a, scale * b) for a in range(1, 10) for b in range(1, 10)]
        return max(candidates, key=lambda s: _minicpmv_image(profile, s[0], s[1], kw).tokens)
    side = v.image_size or 336
    return side, side


def max_image_cost(profile: ModelProfile, mm_kwargs: Mapping[str, Any] | None = None) -> ItemCost:
    w, h = max_image_size(profile, mm_kwargs)
    return image_cost(profile, w, h, mm_kwargs)


def video_cost(
    profile: ModelProfile,
    width: int,
    height: int,
    frames: int,
    mm_kwargs: Mapping[str, Any] | None = None,
) -> ItemCost:
    """Tokens and encoder work for one video of `frames` sampled frames."""
    kw = dict(mm_kwargs or {})
    if frames <= 0:
        raise ValueError("frames must be positive")
    fam = profile.family
    if "video" not in supported_modalities(profile):
        raise ValueError(f"{profile.id} takes no video")
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"}:
        return _qwen_video(profile, width, height, frames, kw)
    if fam == "internvl":
        one = _internvl_image(profile, width, height, {**kw, "max_dynamic_patch": 1})
        return ItemCost(one.tokens * frames, one.encoder_patches * frames, one.encoder_sequence)
    # MiniCPM-V: each frame is one un-sliced image.
    query = int(profile.config.get("query_num", 64))
    per = (448 // 14) ** 2
    return ItemCost(query * frames, per * frames, per)


def max_video_cost(
    profile: ModelProfile,
    max_model_len: int,
    mm_kwargs: Mapping[str, Any] | None = None,
    image_limit: int = 1,
) -> ItemCost:
    """The video dummy vLLM profiles with, bounded by max_model_len as vLLM bounds it."""
    kw = dict(mm_kwargs or {})
    fam = profile.family
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni"}:
        return _qwen_max_video(profile, max_model_len, kw)
    if fam == "internvl":
        v = profile.vision
        assert v is not None and v.image_size
        per_frame = _internvl_image(profile, v.image_size, v.image_size, kw)
        max_img = max_image_cost(profile, kw).tokens * min(image_limit, 1)
        frames = max(1, (max_model_len - max_img) // per_frame.tokens)
        return video_cost(profile, v.image_size, v.image_size, frames, kw)
    query = int(profile.config.get("query_num", 64))
    max_img = max_image_cost(profile, kw).tokens * min(image_limit, 1)
    frames = max(1, min(16, (max_model_len - max_img) // query))
    return video_cost(profile, 448, 448, frames, kw)


def audio_cost(profile: ModelProfile, seconds: float) -> ItemCost:
    if profile.audio is None:
        raise ValueError(f"{profile.id} takes no audio")
    if seconds <= 0:
        raise ValueError("audio length must be positive")
    tokens = whisper_audio_tokens(seconds)
    mel = round(min(seconds, WHISPER_WINDOW_SECONDS) * 100)
    return ItemCost(tokens, mel, (mel - 1) // 2 + 1)


def max_audio_cost(profile: ModelProfile) -> ItemCost:
    return audio_cost(profile, WHISPER_WINDOW_SECONDS)
