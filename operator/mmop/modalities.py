"""Tokens per image, video and audio item, per model family, as the family's processor counts them.

The counts are the placeholder embeddings the family's processor (transformers' image / video
processor, or vLLM's own processing code where the processor is remote code) inserts for one item:
the number the engine uses for its encoder budget and that lands in the KV cache. They are computed
from the item's size, the model's config, its preprocessor configs and ``--mm-processor-kwargs``,
with the same integer and floating-point steps as the processor, so they are equal to it, not an
approximation (``tests/engine/test_processor_tokens.py`` checks that against the installed
processors). Text the processor adds around an item that depends on the request (Qwen3-VL's
per-frame timestamps) is reported apart, as a documented upper bound (:attr:`ItemCost.text_tokens`).

A workload states bounds (``maxWidth × maxHeight``, ``maxFrames``), not sizes; tile-, crop-, slice-
and pinpoint-based processors can give a smaller image of another shape more tokens than the corner
of the bounds. :func:`worst_image_cost` and :func:`worst_video_cost` return the costliest item
within the bounds, found by an exact search over the shapes that can change the processor's
decision (see docs/planner.md, "Tokens per item").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from mmop.model import GENERIC_MM_FAMILY, QWEN_PUBLISHED_MAX_UNITS, ModelProfile

# vLLM caps the frame count of the Qwen2-VL-family video dummy it profiles with.
QWEN_VL_MAX_PROFILE_FRAMES = 14
# Seconds of audio in one Whisper window (Qwen2-Audio / Omni feature extractor chunk).
WHISPER_WINDOW_SECONDS = 30
# Qwen3-VL timestamps of a clip of unstated length: assumed shorter than 10**5 s (27 h).
QWEN3_VL_MAX_TIMESTAMP_DIGITS = 5
# vLLM's InternVL takes video only where the LM's vocabulary has a video context token.
INTERNVL_VIDEO_LMS = frozenset({"qwen2", "qwen3", "qwen3_moe", "gpt_oss"})
# Qwen-VL processors refuse images whose sides differ by more than this factor.
QWEN_MAX_ASPECT = 200
# vLLM's GLM-4V dummy video has at most this many frames (_MAX_FRAMES_PER_VIDEO, vLLM 0.32.0
# models/glm4_1v.py:135, searched by _get_max_video_frames, :1161-1183).
GLM4V_MAX_PROFILE_FRAMES = 600
# The minimum pixels vLLM's frame search resizes with (transformers' glm4v smart_resize default,
# which _get_vision_info does not override, glm4_1v.py:1059-1066).
GLM4V_SEARCH_MIN_PIXELS = 112 * 112
# The processor whose video rule mmop counts (GLM-4.1V's; also taken where no processor class is
# named); vLLM builds other GLM-V processors' prompts with other frame sampling and timestamps
# (glm4_1v.py:1413-1422).
GLM4V_PROCESSOR = "Glm4vProcessor"

_SCOPES = ("images_kwargs", "videos_kwargs", "audio_kwargs", "text_kwargs")


@dataclass(frozen=True)
class ItemCost:
    """One multimodal item: LM tokens and the work it gives the encoder."""

    tokens: int  # placeholder embeddings of the item, as the processor counts them
    encoder_patches: int  # encoder input positions (patches, tiles × patches, audio frames)
    encoder_sequence: int  # longest sequence one encoder attention call sees
    # Prompt tokens the processor adds around the embeddings that depend on the request (Qwen3-VL:
    # "<t seconds>" text and vision start/end per frame group): an upper bound, 0 where none.
    text_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Tokens the item occupies in the prompt (and the KV cache), text bound included."""
        return self.tokens + self.text_tokens


def supported_modalities(profile: ModelProfile) -> tuple[str, ...]:
    """Modalities vLLM enables for the model, in vLLM's names."""
    fam = profile.family
    out: list[str] = []
    if profile.vision is not None:
        out.append("image")
        if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni", "minicpmv"}:
            out.append("video")
        if fam == "internvl" and profile.text.model_type in INTERNVL_VIDEO_LMS:
            out.append("video")
        if fam == "glm4v":
            out.append("video")  # counted under Glm4vProcessor only (glm4v_video_rule)
    if profile.audio is not None:
        out.append("audio")
    return tuple(out)


def _scoped(kw: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """vLLM's kwarg routing: flat kwargs reach every processor scope; an ``images_kwargs`` /
    ``videos_kwargs`` entry wins over the flat value for its own scope."""
    out = {k: v for k, v in kw.items() if k not in _SCOPES}
    nested = kw.get(scope)
    if isinstance(nested, Mapping):
        out.update(nested)
    return out


# ----------------------------------------------------------------------------------------------
# Qwen-VL family


def _fit_to_budget(
    height: int,
    width: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
    frames: int = 1,
    temporal: int = 1,
) -> tuple[int, int]:
    """The resize Qwen-VL's and GLM-4V's processors share: sides rounded to ``factor``, then
    scaled down (up) into [min_pixels, max_pixels], which count ``frames`` rounded to the
    temporal patch (one frame for Qwen-VL)."""
    if max(height, width) / min(height, width) > QWEN_MAX_ASPECT:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """The Qwen2-VL image (and Qwen2-VL video, per frame) processor's resize
    (transformers ``qwen2_vl.image_processing_qwen2_vl.smart_resize``)."""
    if height <= 0 or width <= 0:
        raise ValueError("image width and height must be positive")
    return _fit_to_budget(height, width, factor, min_pixels, max_pixels)


def glm4v_smart_resize(
    height: int,
    width: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
    frames: int = 2,
    temporal: int = 2,
) -> tuple[int, int]:
    """GLM-4V's resize (transformers ``glm4v.image_processing_glm4v.smart_resize``, which vLLM
    0.32.0's own count calls, models/glm4_1v.py:1044-1083): a side below ``factor`` is scaled up
    first, and the pixel budget counts ``frames`` (an image is processed as
    ``temporal_patch_size`` frames, so it gets half of ``max_pixels``)."""
    if height <= 0 or width <= 0:
        raise ValueError("image width and height must be positive")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    return _fit_to_budget(height, width, factor, min_pixels, max_pixels, frames, temporal)


def _glm4v_bounds(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    # Glm4vImageProcessor's class default size, unless the preprocessor config states one
    default = _qwen_processor_size(profile.preprocessor, (112 * 112, 28 * 28 * 15000))
    return _qwen_size(default, _scoped(kw, "images_kwargs"))


def _glm4v_video_bounds(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    """(min_pixels, max_pixels) of Glm4vVideoProcessor: video_preprocessor_config.json's size, else
    the class default (transformers ``video_processing_glm4v.py:99``), then the kwargs' size. The
    budget holds all frames of a video together, not one frame."""
    video = profile.preprocessor.get("video") or {}
    default = _qwen_processor_size(video, (112 * 112, 28 * 28 * 2 * 30000))
    return _qwen_size(default, _scoped(kw, "videos_kwargs"))


def glm4v_video_rule(profile: ModelProfile) -> None:
    """Raise ValueError unless the model's processor is Glm4vProcessor, whose video rule mmop
    counts. vLLM 0.32.0 builds the prompt of another GLM-V processor (transformers' Glm46VProcessor,
    GLMGA) with its own frame sampling and ``"{t:.1f} seconds"`` timestamps (glm4_1v.py:1246-1422)
    and counts its maximum apart (get_mm_max_tokens_per_item, :994-1036), which mmop does not
    model."""
    pre = profile.preprocessor
    video = pre.get("video") or {}
    cls = video.get("processor_class") or pre.get("processor_class")
    if cls not in (None, GLM4V_PROCESSOR):
        raise ValueError(GLM4V_VIDEO.format(cls=cls))


def glm4v_timestamp_tokens_bound(groups: int, max_seconds: float | None) -> int:
    """Upper bound on the text around a GLM-4V video's embeddings, as Glm4vProcessor and vLLM
    write it: ``<|begin_of_video|>`` and ``<|end_of_video|>``, and per frame group
    ``<|begin_of_image|>``, ``<|end_of_image|>`` and the group's first frame time in whole seconds,
    ``str(int(t))`` (transformers ``processing_glm4v.py:67-96,188-189``; vLLM 0.32.0
    ``Glm4vProcessingInfo._construct_video_placeholder``, glm4_1v.py:1394-1439, with
    ``_get_video_second_idx_glm4v``'s ``int(idx / fps)``, :1195-1244). The digits need the
    tokenizer to be counted exactly; a BPE token covers at least one character, so the digits
    bound them. ``t`` is below the clip's length `max_seconds`; None: below
    10**QWEN3_VL_MAX_TIMESTAMP_DIGITS s."""
    if max_seconds is None:
        digits = QWEN3_VL_MAX_TIMESTAMP_DIGITS
    else:
        digits = len(str(int(max(max_seconds, 0.0))))
    return 2 + groups * (2 + digits)


def _glm4v_video(
    profile: ModelProfile,
    w: int,
    h: int,
    frames: int,
    kw: Mapping[str, Any],
    seconds: float | None = None,
) -> ItemCost:
    """Glm4vVideoProcessor: all `frames` resized against one pixel budget (its smart_resize with
    ``num_frames``, video_processing_glm4v.py:39-72,170-197; it refuses fewer frames than the
    temporal patch), padded to the temporal patch (``patchify``, :234-272); one embedding per
    merged patch (``get_num_of_video_patches``, :199-232; vLLM ``_get_vision_info``,
    glm4_1v.py:1044-1083)."""
    glm4v_video_rule(profile)
    v = profile.vision
    assert v is not None
    patch, merge, temporal = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    if frames < temporal:
        raise ValueError(f"t:{frames} must be larger than temporal_factor:{temporal}")
    lo, hi = _glm4v_video_bounds(profile, kw)
    rh, rw = glm4v_smart_resize(h, w, patch * merge, lo, hi, frames, temporal)
    grid_t = -(-frames // temporal)
    patches = grid_t * (rh // patch) * (rw // patch)
    text = glm4v_timestamp_tokens_bound(grid_t, seconds)
    return ItemCost(patches // (merge * merge), patches, patches, text)


def glm4v_profile_frames(
    profile: ModelProfile, seq_len: int, mm_kwargs: Mapping[str, Any] | None = None, images: int = 1
) -> int:
    """The frame count vLLM 0.32.0 gives its GLM-4V dummy video: of 1..600 frames of the
    largest-feature image size, the first with the most embeddings that fit in `seq_len` less
    `images` largest images (``get_num_frames_with_most_features`` / ``_get_max_video_frames``,
    glm4_1v.py:1161-1193; the count per frame count is ``_get_vision_info``, :1044-1083, which
    resizes at least ``temporal_patch_size`` frames with the video processor's max_pixels)."""
    kw = dict(mm_kwargs or {})
    v = profile.vision
    assert v is not None
    patch, merge, temporal = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
    w, h = max_image_size(profile, kw)
    budget = seq_len - max_image_cost(profile, kw).tokens * images
    _, hi = _glm4v_video_bounds(profile, kw)
    best_frames, best = 1, 0
    for n in range(1, GLM4V_MAX_PROFILE_FRAMES + 1):
        rh, rw = glm4v_smart_resize(
            h, w, patch * merge, GLM4V_SEARCH_MIN_PIXELS, hi, max(n, temporal), temporal
        )
        grid_t = max(-(-n // temporal), 1)
        tokens = grid_t * (rh // patch) * (rw // patch) // (merge * merge)
        if 0 < tokens <= budget and tokens > best:
            best_frames, best = n, tokens
    return best_frames


def glm4v_dummy_video(
    profile: ModelProfile,
    seq_len: int,
    mm_kwargs: Mapping[str, Any] | None = None,
    images: int = 1,
    *,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> tuple[int, int, int]:
    """(width, height, frames) of the video vLLM 0.32.0 profiles GLM-4V with: the
    largest-feature image size and :func:`glm4v_profile_frames`, at least two frames, each cut to
    the ``--limit-mm-per-prompt`` video overrides (an override of frames raised to two)
    (``Glm4vDummyInputsBuilder.get_dummy_mm_data`` / ``_get_dummy_videos``, glm4_1v.py:1460-1523;
    ``BaseDummyInputsBuilder._get_dummy_videos``, multimodal/processing/dummy_inputs.py:116-156).
    Its frames reach the processor unsampled (``do_sample_frames`` False, fps 2)."""
    kw = dict(mm_kwargs or {})
    w, h = max_image_size(profile, kw)
    frames = max(glm4v_profile_frames(profile, seq_len, kw, images), 2)
    if num_frames:
        frames = min(frames, max(num_frames, 2))
    if width:
        w = min(w, width)
    if height:
        h = min(h, height)
    return w, h, frames


def glm4v_dummy_video_cost(
    profile: ModelProfile,
    seq_len: int,
    mm_kwargs: Mapping[str, Any] | None = None,
    images: int = 1,
    *,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> ItemCost:
    """The cost of :func:`glm4v_dummy_video`. vLLM 0.32.0 takes no formula for Glm4vProcessor's
    maximum (get_mm_max_tokens_per_item returns None, glm4_1v.py:994-1006): its tokens per video
    item (encoder budget and cache) are this dummy's embeddings (``get_num_embeds`` of the
    placeholder, multimodal/encoder_budget.py:20-40; the timestamps are text, not embeddings).
    vLLM asks for it with one image where images are on (``mm_counts`` of every active modality,
    encoder_budget.py:90-94) and encodes it, for profiling, with none (``{modality: 1}``,
    :207-210): ``images`` reserves that many largest images of ``seq_len``."""
    kw = dict(mm_kwargs or {})
    w, h, frames = glm4v_dummy_video(
        profile, seq_len, kw, images, num_frames=num_frames, width=width, height=height
    )
    return _glm4v_video(profile, w, h, frames, kw, seconds=frames / 2)


def qwen3_vl_video_smart_resize(
    num_frames: int,
    height: int,
    width: int,
    temporal_factor: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """The Qwen3-VL video processor's resize: the pixels of all frames together (frames rounded to
    the temporal patch) are held within [min_pixels, max_pixels]
    (transformers ``qwen3_vl.video_processing_qwen3_vl.smart_resize``)."""
    if height <= 0 or width <= 0:
        raise ValueError("frame width and height must be positive")
    if num_frames < temporal_factor:
        raise ValueError(f"t:{num_frames} must be larger than temporal_factor:{temporal_factor}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height = int(height * scale)
        width = int(width * scale)
    if max(height, width) / min(height, width) > QWEN_MAX_ASPECT:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen_size(default: Mapping[str, Any], kw: Mapping[str, Any]) -> tuple[int, int]:
    """(min_pixels, max_pixels) as vLLM resolves them: the processor's size, then the kwargs'
    ``size``, then ``min_pixels`` / ``max_pixels`` (vLLM's ``_get_vision_size``)."""
    size = dict(default)
    override = kw.get("size")
    if isinstance(override, Mapping):
        size.update(override)
    if kw.get("min_pixels") is not None:
        size["shortest_edge"] = kw["min_pixels"]
    if kw.get("max_pixels") is not None:
        size["longest_edge"] = kw["max_pixels"]
    return int(size["shortest_edge"]), int(size["longest_edge"])


def _qwen_processor_size(pre: Mapping[str, Any], default: tuple[int, int]) -> dict[str, int]:
    """The size a Qwen2-VL image/video processor gets from its config dict: ``size``, else the class
    default, with ``min_pixels`` / ``max_pixels`` folded in."""
    raw = pre.get("size")
    size = dict(raw) if isinstance(raw, Mapping) else {}
    size.setdefault("shortest_edge", default[0])
    size.setdefault("longest_edge", default[1])
    if pre.get("min_pixels") is not None:
        size["shortest_edge"] = pre["min_pixels"]
    if pre.get("max_pixels") is not None:
        size["longest_edge"] = pre["max_pixels"]
    return {"shortest_edge": int(size["shortest_edge"]), "longest_edge": int(size["longest_edge"])}


def _qwen_image_bounds(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    longest = 28 * 28 * 1280  # Qwen2VLImageProcessor's class default
    if profile.processor_config_missing:
        patch, merge, _ = _qwen_unit(profile)
        longest = (patch * merge) ** 2 * QWEN_PUBLISHED_MAX_UNITS
    default = _qwen_processor_size(profile.preprocessor, (56 * 56, longest))
    return _qwen_size(default, _scoped(kw, "images_kwargs"))


def _qwen_video_bounds(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    if profile.family == "qwen3_vl":
        video = profile.preprocessor.get("video") or {}
        default = _qwen_processor_size(video, (128 * 32 * 32, 32 * 32 * 768))
    else:
        # Qwen2-VL's video processor, built from the image processor's config when the model
        # ships no video_preprocessor_config.json (transformers' fallback). Qwen3-Omni's
        # processor defaults its videos to 128..768 units of 32×32 pixels
        # (Qwen3OmniMoeProcessorKwargs), Qwen2.5-Omni's and Qwen2-VL's to units of 28×28.
        pre = profile.preprocessor.get("video") or profile.preprocessor
        unit = 32 if profile.family == "qwen3_omni" else 28
        default = _qwen_processor_size(pre, (128 * unit * unit, unit * unit * 768))
    return _qwen_size(default, _scoped(kw, "videos_kwargs"))


def _qwen_unit(profile: ModelProfile) -> tuple[int, int, int]:
    v = profile.vision
    assert v is not None
    return v.patch_size, v.spatial_merge_size, v.temporal_patch_size


def _qwen_max_image(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int]:
    """vLLM's largest-feature image size: the token budget factored into a near-square grid."""
    patch, merge, _ = _qwen_unit(profile)
    _, hi = _qwen_image_bounds(profile, kw)
    return _qwen_factor_grid(hi, patch * merge)


def _qwen_factor_grid(max_pixels: int, unit: int) -> tuple[int, int]:
    n = max_pixels // (unit * unit)
    for seq in range(n, 0, -1):
        d = math.isqrt(seq)
        while seq % d:
            d -= 1
        if (seq // d) / d <= QWEN_MAX_ASPECT:
            return unit * (seq // d), unit * d
    return unit, unit


def qwen3_vl_timestamp_tokens_bound(groups: int, max_seconds: float | None) -> int:
    """Upper bound on the text Qwen3-VL's processor adds to a video of `groups` frame pairs: per
    pair, ``"<{t:.1f} seconds>"`` and a vision start and end token. A byte-level BPE token covers
    at least one byte, so the text costs at most its length. ``t`` is below the clip's length,
    `max_seconds`; None: below 10**QWEN3_VL_MAX_TIMESTAMP_DIGITS s. (The frame count does not
    bound the length: vLLM's loader keeps every frame of a clip whose source fps is below the
    sampling fps.)"""
    if max_seconds is None:
        digits = QWEN3_VL_MAX_TIMESTAMP_DIGITS
    else:
        digits = len(f"{max(max_seconds, 0.0):.1f}") - 2
    per_group = len("<") + digits + len(".0") + len(" seconds>") + 2
    return groups * per_group


def _qwen_video(
    profile: ModelProfile,
    w: int,
    h: int,
    frames: int,
    kw: Mapping[str, Any],
    seconds: float | None = None,
) -> ItemCost:
    patch, merge, temporal = _qwen_unit(profile)
    lo, hi = _qwen_video_bounds(profile, kw)
    if profile.family == "qwen3_vl":
        rh, rw = qwen3_vl_video_smart_resize(frames, h, w, temporal, patch * merge, lo, hi)
    else:
        rh, rw = qwen_smart_resize(h, w, patch * merge, lo, hi)
    grid_t = (frames + (-frames % temporal)) // temporal
    patches = grid_t * (rh // patch) * (rw // patch)
    text = 0
    if profile.family == "qwen3_vl":
        text = qwen3_vl_timestamp_tokens_bound(grid_t, seconds)
    return ItemCost(patches // (merge * merge), patches, patches, text)


def _qwen_max_video(profile: ModelProfile, seq_len: int, kw: Mapping[str, Any]) -> ItemCost:
    if profile.family == "qwen3_vl":
        # vLLM's get_max_video_tokens: two frames of the budget's near-square grid.
        patch, merge, temporal = _qwen_unit(profile)
        _, hi = _qwen_video_bounds(profile, kw)
        w, h = _qwen_factor_grid(hi // temporal, patch * merge)
        return _qwen_video(profile, w, h, temporal, kw)
    w, h = _qwen_max_image(profile, kw)
    frames = 1
    while frames + 1 <= QWEN_VL_MAX_PROFILE_FRAMES:
        if _qwen_video(profile, w, h, frames + 1, kw).tokens > seq_len:
            break
        frames += 1
    return _qwen_video(profile, w, h, max(frames, 1), kw)


# vLLM 0.11.0-0.12.0 count a Qwen3-VL video at 12.5 tokens per video embedding (the timestamp
# text around it, by its estimate) and search the frames of the counted dummy up to this many
# (models/qwen3_vl.py at 0.11.0: _MAX_FRAMES_PER_VIDEO l. 91, get_max_video_tokens l. 658-675;
# at 0.12.0: l. 123, 690-709).
QWEN3_VL_V011_FORMATTED_PER_TOKEN = 12.5
QWEN3_VL_V011_MAX_FRAMES = 24576


def qwen3_vl_v011_counted_video_tokens(
    profile: ModelProfile, seq_len: int, kw: Mapping[str, Any]
) -> int:
    """The tokens vLLM 0.11.0-0.12.0 count for one Qwen3-VL video (``get_max_video_tokens``):
    ``int(12.5 x`` the video embeddings of the largest image's size at the most frames whose
    embeddings fit `seq_len` (searched from two frames up, ``_get_max_video_frames``, at most
    24,576 frames, ``get_num_frames_with_most_features``; qwen2_vl.py l. 974-1009 at 0.11.0)).
    vLLM sizes its encoder budget and its profiling from this count; 0.13.0 counts the embeddings
    only. The count is not capped by `seq_len`: a 65,536-token context counts 153,600."""
    w, h = _qwen_max_image(profile, kw)
    frames = 2
    while (
        frames < QWEN3_VL_V011_MAX_FRAMES
        and _qwen_video(profile, w, h, frames + 1, kw).tokens <= seq_len
    ):
        frames += 1
    soft = _qwen_video(profile, w, h, frames, kw).tokens
    return int(soft * QWEN3_VL_V011_FORMATTED_PER_TOKEN)


def sampled_frames(
    profile: ModelProfile,
    total_frames: int,
    source_fps: float,
    loader_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Frames vLLM's video loader keeps of a clip of `total_frames` at `source_fps` — the loader
    of the model's video processor: Qwen3-VL's (``Qwen3VLVideoBackend``) and Qwen2-VL's (for
    Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni, ``Qwen2VLVideoBackend``) sample at 2 fps, clamped to
    [min_frames, max_frames] (4, 768) and the clip, Qwen2-VL's then rounded down to whole frame
    pairs. `loader_kwargs`: the video entry of ``--media-io-kwargs`` (fps, min_frames,
    max_frames). GLM-4V: frames as they reach its video processor's resize
    (:func:`_glm4v_sampled_frames`). Other families keep the frames they are given."""
    kw = dict(loader_kwargs or {})
    if total_frames <= 0 or source_fps <= 0:
        raise ValueError("total_frames and source_fps must be positive")
    fam = profile.family
    fps = min(float(kw.get("fps") or 2), 30.0)
    min_frames = int(kw.get("min_frames") or 4)
    max_frames = min(int(kw.get("max_frames") or 768), 768)
    if fam == "qwen3_vl":
        n = int(total_frames / source_fps * fps)
        return min(max(n, min_frames), max_frames, total_frames)
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen2_5_omni", "qwen3_omni"}:
        temporal = _qwen_unit(profile)[2]
        cap = math.floor(min(max_frames, total_frames) / temporal) * temporal
        x = min(max(total_frames / source_fps * fps, min_frames), cap, total_frames)
        return math.floor(x / temporal) * temporal
    if fam == "glm4v":
        return _glm4v_sampled_frames(total_frames, source_fps, kw)
    return total_frames


def _glm4v_sampled_frames(total: int, source_fps: float, kw: Mapping[str, Any]) -> int:
    """GLM-4V: vLLM's uniform loader keeps ``num_frames`` (32) frames, fewer where the clip has
    fewer or an ``fps`` cap gives fewer (vLLM 0.32.0 multimodal/video.py:213-239); where it kept
    every frame it lets Glm4vVideoProcessor sample them (``do_sample_frames``, :181-194): 2 per
    second of the clip, at most 300 s of them spread over a longer one, repeated indices dropped,
    an odd count completed to a pair by repeating the last (transformers
    video_processing_glm4v.py:121-168)."""
    duration = total / source_fps
    keep = total
    num_frames = int(kw.get("num_frames") or 32)
    if num_frames > 0:
        keep = min(num_frames, total)
    fps_cap = float(kw.get("fps") or -1)
    if fps_cap > 0:
        keep = min(keep, math.floor(duration * fps_cap))
    keep = max(1, keep)
    if keep < total:
        return keep
    last = total - 1
    rate, max_duration = 2, 300  # Glm4vVideoProcessor's fps and max_duration
    if duration <= max_duration:
        n = max(math.floor(duration * rate), 1)
        picked = {min(last, math.ceil(i * source_fps / rate)) for i in range(n)}
    elif max_duration * rate >= total:
        picked = set(range(total))
    else:
        n = max_duration * rate
        step = duration / (n - 1)  # numpy's linspace: i·step, the last point the end itself
        seconds = [i * step for i in range(n - 1)] + [duration]
        picked = {min(last, math.ceil(t * source_fps)) for t in seconds}
    return len(picked) + len(picked) % 2


# ----------------------------------------------------------------------------------------------
# LLaVA and LLaVA-NeXT


def _clip_grid(profile: ModelProfile) -> tuple[int, int]:
    v = profile.vision
    assert v is not None and v.image_size
    return v.image_size, v.image_size // v.patch_size


_LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def _llava_next_pinpoints(profile: ModelProfile) -> list[tuple[int, int]]:
    pins = (
        profile.preprocessor.get("image_grid_pinpoints")
        or profile.config.get("image_grid_pinpoints")
        or _LLAVA_NEXT_PINPOINTS
    )
    return [(int(p[0]), int(p[1])) for p in pins]


def _llava_next_best_resolution(
    h: int, w: int, pinpoints: list[tuple[int, int]]
) -> tuple[int, int]:
    """transformers' ``select_best_resolution``: most effective pixels, then least waste."""
    best: tuple[int, int] | None = None
    max_eff, min_waste = 0, math.inf
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = pw * ph - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            max_eff, min_waste, best = eff, waste, (ph, pw)
    if best is None:
        raise ValueError(f"no grid pinpoint fits a {w}×{h} image")
    return best


def _llava_next_grid_tokens(w: int, h: int, rows: int, cols: int, npatch: int) -> int:
    """LLaVA-NeXT's unpadded grid features plus one newline per row, plus the base image."""
    cur_h, cur_w = npatch * rows, npatch * cols
    if w / h > cur_w / cur_h:
        new_h = int(round(h * (cur_w / w), 7))
        cur_h -= 2 * ((cur_h - new_h) // 2)
    else:
        new_w = int(round(w * (cur_h / h), 7))
        cur_w -= 2 * ((cur_w - new_w) // 2)
    return cur_h * cur_w + cur_h + npatch * npatch


def _llava_next_image(profile: ModelProfile, w: int, h: int) -> ItemCost:
    image_size, npatch = _clip_grid(profile)
    bh, bw = _llava_next_best_resolution(h, w, _llava_next_pinpoints(profile))
    rows, cols = bh // image_size, bw // image_size
    tokens = _llava_next_grid_tokens(w, h, rows, cols, npatch)
    patches = (1 + rows * cols) * (npatch * npatch + 1)
    return ItemCost(tokens, patches, npatch * npatch + 1)


# ----------------------------------------------------------------------------------------------
# InternVL


@functools.lru_cache(maxsize=256)
def _internvl_ratios(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """Target (columns, rows) grids in the processor's order: by tile count."""
    ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return tuple(sorted(ratios, key=lambda r: r[0] * r[1]))


def _internvl_closest(
    w: int, h: int, ratios: tuple[tuple[int, int], ...], image_size: int
) -> tuple[int, int]:
    aspect = w / h
    best, best_diff = (1, 1), math.inf
    area = w * h
    for rw, rh in ratios:
        diff = abs(aspect - rw / rh)
        if diff < best_diff:
            best_diff, best = diff, (rw, rh)
        elif diff == best_diff and area > 0.5 * image_size * image_size * rw * rh:
            best = (rw, rh)
    return best


def internvl_tiles(w: int, h: int, min_num: int, max_num: int, image_size: int) -> int:
    """Number of tiles InternVL's dynamic preprocessing cuts an image into (no thumbnail)."""
    best = _internvl_closest(w, h, _internvl_ratios(min_num, max_num), image_size)
    return best[0] * best[1]


def _internvl_params(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int, bool, int]:
    cfg = profile.config
    kw = _scoped(kw, "images_kwargs")
    max_num = int(kw.get("max_dynamic_patch") or cfg.get("max_dynamic_patch") or 12)
    min_num = int(kw.get("min_dynamic_patch") or cfg.get("min_dynamic_patch") or 1)
    if not kw.get("dynamic_image_size", cfg.get("dynamic_image_size", True)):
        min_num = max_num = 1
    thumb = bool(kw.get("use_thumbnail", cfg.get("use_thumbnail", True)))
    v = profile.vision
    assert v is not None and v.image_size
    per_tile = (v.image_size // v.patch_size) ** 2 // (v.spatial_merge_size**2)
    return min_num, max_num, thumb, per_tile


def _internvl_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    min_num, max_num, thumb, per_tile = _internvl_params(profile, kw)
    v = profile.vision
    assert v is not None and v.image_size
    tiles = internvl_tiles(w, h, min_num, max_num, v.image_size)
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
    kw = _scoped(kw, "images_kwargs")

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


def _pixtral_longest(profile: ModelProfile, kw: Mapping[str, Any]) -> int:
    v = profile.vision
    assert v is not None and v.image_size
    kw = _scoped(kw, "images_kwargs")
    size = kw.get("size")
    if isinstance(size, Mapping) and size.get("longest_edge"):
        return int(size["longest_edge"])
    return int(kw.get("longest_edge") or v.image_size)


def _pixtral_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    """Pixtral (Mistral-format checkpoint): mistral_common's ImageEncoder rounds the resized sides;
    Mistral 3 (Hugging Face checkpoint): vLLM's Mistral3 encoder info floors them. One token per
    merged patch, plus one break (the last: end) token per row."""
    v = profile.vision
    assert v is not None and v.image_size
    merge = v.spatial_merge_size
    longest = _pixtral_longest(profile, kw)
    ratio = max(h / longest, w / longest)
    if ratio > 1:
        if profile.family == "pixtral":
            w, h = max(round(w / ratio), 1), max(round(h / ratio), 1)
        else:
            w, h = math.floor(w / ratio), math.floor(h / ratio)
    unit = v.patch_size * merge
    rows, cols = (h - 1) // unit + 1, (w - 1) // unit + 1
    patches = rows * cols * merge * merge
    return ItemCost(rows * cols + rows, patches, patches)


# ----------------------------------------------------------------------------------------------
# Phi-3.5-vision


def phi3v_hd_size(width: int, height: int, hd_num: int) -> tuple[int, int]:
    """(width, height) after Phi-3.5-V's HD transform: whole 336-px crops, padded to 336."""
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


def _phi3v_crops(profile: ModelProfile, kw: Mapping[str, Any]) -> int:
    kw = _scoped(kw, "images_kwargs")
    return int(kw.get("num_crops") or profile.preprocessor.get("num_crops") or 4)


def _phi3v_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    nw, nh = phi3v_hd_size(w, h, _phi3v_crops(profile, kw))
    tiles = (nh // 336) * (nw // 336)
    tokens = (tiles + 1) * 144 + 1 + (nh // 336 + 1) * 12
    return ItemCost(tokens, (tiles + 1) * 577, 577)


# ----------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM


def _idefics3_params(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[bool, int, int]:
    pre = profile.preprocessor
    v = profile.vision
    assert v is not None and v.image_size
    kw = _scoped(kw, "images_kwargs")
    split = bool(kw.get("do_image_splitting", pre.get("do_image_splitting", True)))
    longest = int(
        (kw.get("size") or {}).get("longest_edge")
        or (pre.get("size") or {}).get("longest_edge")
        or 4 * v.image_size
    )
    tile = int(
        (kw.get("max_image_size") or {}).get("longest_edge")
        or (pre.get("max_image_size") or {}).get("longest_edge")
        or v.image_size
    )
    return split, longest, tile


# transformers' Idefics3 image processor keeps images below this side after the first resize.
IDEFICS3_MAX_IMAGE_SIZE = 4096


def _idefics3_grid(h: int, w: int, longest: int, tile: int) -> tuple[int, int]:
    """(rows, cols) of transformers' ``Idefics3ImageProcessor.get_number_of_image_patches``."""
    aspect = w / h
    if w >= h:
        w, h = longest, int(longest / aspect)
        h += h % 2
    else:
        h, w = longest, int(longest * aspect)
        w += w % 2
    h, w = max(h, 1), max(w, 1)
    aspect = w / h
    if w >= h and w > IDEFICS3_MAX_IMAGE_SIZE:
        w, h = IDEFICS3_MAX_IMAGE_SIZE, int(IDEFICS3_MAX_IMAGE_SIZE / aspect)
    elif h > w and h > IDEFICS3_MAX_IMAGE_SIZE:
        h, w = IDEFICS3_MAX_IMAGE_SIZE, int(IDEFICS3_MAX_IMAGE_SIZE * aspect)
    h, w = max(h, 1), max(w, 1)
    rh, rw = math.ceil(h / tile) * tile, math.ceil(w / tile) * tile
    if rh > tile or rw > tile:
        return math.ceil(rh / tile), math.ceil(rw / tile)
    return 0, 0


def _idefics3_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    v = profile.vision
    assert v is not None and v.image_size
    split, longest, tile = _idefics3_params(profile, kw)
    rows, cols = _idefics3_grid(h, w, longest, tile) if split else (0, 0)
    tiles = rows * cols + 1 if rows else 1
    per_tile = (v.image_size // v.patch_size) ** 2 // (v.spatial_merge_size**2)
    patches_per_tile = (v.image_size // v.patch_size) ** 2
    return ItemCost(tiles * per_tile, tiles * patches_per_tile, patches_per_tile)


# ----------------------------------------------------------------------------------------------
# MiniCPM-V 2.6


def _minicpmv_candidates(multiple: int, max_slices: int) -> list[tuple[int, int]]:
    grids: list[tuple[int, int]] = []
    for num in (multiple - 1, multiple, multiple + 1):
        if num == 1 or num > max_slices:
            continue
        grids.extend((m, num // m) for m in range(1, num + 1) if num % m == 0)
    return grids


def minicpmv_grid(w: int, h: int, max_slices: int, scale_resolution: int) -> tuple[int, int]:
    """(columns, rows) of MiniCPM-V 2.6's slicing; (0, 0): the image is not sliced."""
    log_ratio = math.log(w / h)
    ratio = w * h / (scale_resolution * scale_resolution)
    multiple = min(math.ceil(ratio), max_slices)
    if multiple <= 1:
        return (0, 0)
    best, best_err = (1, 1), math.inf
    for m, n in _minicpmv_candidates(multiple, max_slices):
        err = abs(log_ratio - math.log(m / n))
        if err < best_err:
            best_err, best = err, (m, n)
    return best


def _minicpmv_params(profile: ModelProfile, kw: Mapping[str, Any]) -> tuple[int, int, int]:
    cfg, pre = profile.config, profile.preprocessor
    kw = _scoped(kw, "images_kwargs")
    slice_cfg = cfg.get("slice_config") or {}
    max_slices = int(
        kw.get("max_slice_nums") or pre.get("max_slice_nums") or slice_cfg.get("max_slice_nums", 9)
    )
    scale = int(pre.get("scale_resolution") or slice_cfg.get("scale_resolution", 448))
    query = int(pre.get("image_feature_size") or cfg.get("query_num", 64))
    return max_slices, scale, query


def _minicpmv_image(profile: ModelProfile, w: int, h: int, kw: Mapping[str, Any]) -> ItemCost:
    max_slices, scale, query = _minicpmv_params(profile, kw)
    gw, gh = minicpmv_grid(w, h, max_slices, scale)
    slices = gw * gh
    patches = (scale // 14) ** 2
    return ItemCost((1 + slices) * query, (1 + slices) * patches, patches)


# ----------------------------------------------------------------------------------------------
# Audio


def _whisper_params(profile: ModelProfile) -> tuple[int, int, int]:
    pre = profile.preprocessor
    sr = int(pre.get("sampling_rate") or 16000)
    hop = int(pre.get("hop_length") or 160)
    n_samples = int(pre.get("n_samples") or WHISPER_WINDOW_SECONDS * sr)
    return sr, hop, n_samples


def _whisper_mel_frames(
    seconds: float, sr: int = 16000, hop: int = 160, n_samples: int = 480000
) -> int:
    """Mel frames the Whisper feature extractor's attention mask keeps for a clip: its samples
    (truncated to one window) every hop, rounded up."""
    samples = min(max(1, round(seconds * sr)), n_samples)
    return -(-samples // hop)


def whisper_audio_tokens(seconds: float) -> int:
    """Qwen2-Audio / Qwen2.5-Omni tokens for a clip: mel frames, conv stride 2, pooling 2."""
    conv = (_whisper_mel_frames(seconds) - 1) // 2 + 1
    return (conv - 2) // 2 + 1


# ----------------------------------------------------------------------------------------------
# Public functions


GLM4V_VIDEO = (
    "mmop counts GLM-4V video only under Glm4vProcessor (GLM-4.1V), not {cls}'s frame "
    "sampling and timestamps: turn video off (--limit-mm-per-prompt '{{\"video\": 0}}'; mmop's "
    "plans do when the workload has none)"
)

# Whisper feature extractor's FFT window (samples); its STFT pads n_fft/2 on each side.
WHISPER_N_FFT = 400


def qwen3_omni_audio_cost(seconds: float, sr: int = 16000, hop: int = 160) -> ItemCost:
    """Qwen3-Omni tokens for a clip: its processor extracts Whisper features of the whole clip
    (``truncation=False``, Qwen3OmniMoeProcessorKwargs), and the encoder turns each 100 mel
    frames into 13 tokens, a shorter tail through three stride-2 convolutions
    (``_get_feat_extract_output_lengths``, the same in transformers and vLLM 0.32.0
    models/qwen3_omni_moe_thinker.py:154-161)."""
    samples = max(1, round(seconds * sr))
    if samples <= WHISPER_N_FFT // 2:
        # the feature extractor's centred STFT reflects n_fft/2 samples on each side
        raise ValueError(f"a clip of {samples} samples is too short for Qwen3-Omni's processor")
    mel = samples // hop  # the attention mask of a batch padded to its longest clip
    tail = mel % 100
    feat = (tail - 1) // 2 + 1
    tokens = ((feat - 1) // 2 + 1 - 1) // 2 + 1 + (mel // 100) * 13
    return ItemCost(tokens, mel, -(-mel // 8))


def _image_fn(profile: ModelProfile, kw: Mapping[str, Any]) -> Callable[[int, int], ItemCost]:
    """The family's count as a function of (width, height), its settings resolved once."""
    fam = profile.family
    if profile.vision is None:
        raise ValueError(f"{profile.id} takes no images")
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
        patch, merge, _ = _qwen_unit(profile)
        lo, hi = _qwen_image_bounds(profile, kw)

        def qwen(w: int, h: int) -> ItemCost:
            rh, rw = qwen_smart_resize(h, w, patch * merge, lo, hi)
            patches = (rh // patch) * (rw // patch)
            return ItemCost(patches // (merge * merge), patches, patches)

        return qwen
    if fam == "glm4v":
        v = profile.vision
        patch, merge, temporal = v.patch_size, v.spatial_merge_size, v.temporal_patch_size
        lo, hi = _glm4v_bounds(profile, kw)

        def glm(w: int, h: int) -> ItemCost:
            rh, rw = glm4v_smart_resize(h, w, patch * merge, lo, hi, temporal, temporal)
            patches = (rh // patch) * (rw // patch)
            return ItemCost(patches // (merge * merge), patches, patches)

        return glm
    if fam == "llava":
        _, npatch = _clip_grid(profile)
        fixed = ItemCost(npatch * npatch, npatch * npatch + 1, npatch * npatch + 1)
        return lambda w, h: fixed
    if fam == "llava_next":
        return lambda w, h: _llava_next_image(profile, w, h)
    if fam == "internvl":
        return lambda w, h: _internvl_image(profile, w, h, kw)
    if fam == "gemma3":
        return lambda w, h: _gemma3_image(profile, w, h, kw)
    if fam in {"pixtral", "mistral3"}:
        return lambda w, h: _pixtral_image(profile, w, h, kw)
    if fam == "phi3_v":
        return lambda w, h: _phi3v_image(profile, w, h, kw)
    if fam == "idefics3":
        return lambda w, h: _idefics3_image(profile, w, h, kw)
    if fam == "minicpmv":
        return lambda w, h: _minicpmv_image(profile, w, h, kw)
    if fam == GENERIC_MM_FAMILY and profile.vision.item_tokens_bound:
        # The generic path knows no processor: every image costs the bound (model.py).
        v = profile.vision
        per_tile = v.item_tokens_bound or 0
        seq = per_tile * v.spatial_merge_size**2
        bound = ItemCost(per_tile * v.item_tiles_bound, seq * v.item_tiles_bound, seq)
        return lambda w, h: bound
    raise ValueError(f"no image token rule for family {fam!r}")


def image_cost(
    profile: ModelProfile, width: int, height: int, mm_kwargs: Mapping[str, Any] | None = None
) -> ItemCost:
    """Tokens and encoder work for one image of `width` × `height` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError("image width and height must be positive")
    return _image_fn(profile, dict(mm_kwargs or {}))(width, height)


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
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
        return _qwen_max_image(profile, kw)
    if fam == "glm4v":
        # vLLM's get_image_size_with_most_features: a huge square through the resize
        v2 = profile.vision
        assert v2 is not None
        _, hi = _glm4v_bounds(profile, kw)
        factor = v2.patch_size * v2.spatial_merge_size
        t = v2.temporal_patch_size
        rh, rw = glm4v_smart_resize(9999999, 9999999, factor, 1, hi, t, t)
        return rw, rh
    if fam == "llava_next":
        pins = _llava_next_pinpoints(profile)
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
        side = _pixtral_longest(profile, kw)
        return side, side
    if fam == "phi3_v":
        crops = _phi3v_crops(profile, kw)
        candidates = [(336 * a, 336 * b) for a in range(1, crops + 1) for b in range(1, crops + 1)]
        return max(candidates, key=lambda s: _phi3v_image(profile, s[0], s[1], kw).tokens)
    if fam == "idefics3":
        return 4096, 4096
    if fam == "minicpmv":
        _, scale, _ = _minicpmv_params(profile, kw)
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
    *,
    seconds: float | None = None,
) -> ItemCost:
    """Tokens and encoder work for one video of `frames` frames (as they reach the processor,
    after vLLM's loader sampled them; see :func:`sampled_frames`; GLM-4V: as they reach its video
    processor's resize, after its own sampling). `seconds`: the clip's length, which bounds
    Qwen3-VL's and GLM-4V's timestamp text (None: under 10**5 s)."""
    kw = dict(mm_kwargs or {})
    if frames <= 0:
        raise ValueError("frames must be positive")
    if width <= 0 or height <= 0:
        raise ValueError("frame width and height must be positive")
    fam = profile.family
    if "video" not in supported_modalities(profile):
        raise ValueError(f"{profile.id} takes no video")
    if fam == "glm4v":
        return _glm4v_video(profile, width, height, frames, kw, seconds)
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
        return _qwen_video(profile, width, height, frames, kw, seconds)
    if fam == "internvl":
        # vLLM's InternVL video processor: one tile per frame, no thumbnail.
        one = _internvl_image(profile, width, height, {**kw, "max_dynamic_patch": 1})
        return ItemCost(one.tokens * frames, one.encoder_patches * frames, one.encoder_sequence)
    # MiniCPM-V: each frame is one un-sliced image (vLLM's video max_slice_nums is 1).
    one = _minicpmv_image(profile, width, height, {**kw, "max_slice_nums": 1})
    return ItemCost(one.tokens * frames, one.encoder_patches * frames, one.encoder_sequence)


def max_video_cost(
    profile: ModelProfile,
    max_model_len: int,
    mm_kwargs: Mapping[str, Any] | None = None,
    image_limit: int = 1,
) -> ItemCost:
    """The video dummy vLLM profiles with, bounded by max_model_len as vLLM bounds it."""
    kw = dict(mm_kwargs or {})
    fam = profile.family
    if fam == "glm4v":
        return glm4v_dummy_video_cost(profile, max_model_len, kw, min(image_limit, 1))
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
        return _qwen_max_video(profile, max_model_len, kw)
    if fam == "internvl":
        v = profile.vision
        assert v is not None and v.image_size
        per_frame = _internvl_image(profile, v.image_size, v.image_size, kw)
        max_img = max_image_cost(profile, kw).tokens * min(image_limit, 1)
        frames = max(1, (max_model_len - max_img) // per_frame.tokens)
        return video_cost(profile, v.image_size, v.image_size, frames, kw)
    _, scale, query = _minicpmv_params(profile, kw)
    max_img = max_image_cost(profile, kw).tokens * min(image_limit, 1)
    frames = max(1, min(16, (max_model_len - max_img) // query))
    return video_cost(profile, scale, scale, frames, kw)


def audio_cost(profile: ModelProfile, seconds: float) -> ItemCost:
    """Tokens for a clip of `seconds` (Qwen2-Audio, Qwen2.5-Omni: Whisper features of the clip,
    truncated to the feature extractor's window — 30 s for Qwen2-Audio, 300 s for Qwen2.5-Omni —
    one per hop, conv stride 2, pooling 2)."""
    if profile.audio is None:
        raise ValueError(f"{profile.id} takes no audio")
    if seconds <= 0:
        raise ValueError("audio length must be positive")
    if profile.audio.kind == "qwen3_omni":
        return qwen3_omni_audio_cost(seconds, *_whisper_params(profile)[:2])
    mel = _whisper_mel_frames(seconds, *_whisper_params(profile))
    conv = (mel - 1) // 2 + 1
    return ItemCost((conv - 2) // 2 + 1, mel, conv)


def max_audio_cost(profile: ModelProfile) -> ItemCost:
    """The audio dummy vLLM profiles with: one feature-extractor window, at most 30 s."""
    sr, _, n_samples = _whisper_params(profile)
    return audio_cost(profile, min(n_samples / sr, WHISPER_WINDOW_SECONDS))


# ----------------------------------------------------------------------------------------------
# The costliest item within the bounds
#
# Every family's processor decides from a few quantities of the image: its aspect ratio (which
# tile grid, slice grid, crop count or pinpoint fits best), its area or its sides (whether it is
# scaled down or up, which pinpoint it fits in). Between consecutive values where the decision can
# change (the breakpoints below) the decision — and so the count — is constant, or can only grow
# with the image. The search visits one witness per such cell: its largest image within the bounds
# where the count grows with the image, any image of it where the aspect ratio alone decides, its
# smallest where the count grows as the image shrinks. Exact aspect ratios on a breakpoint are
# cells of their own (ties and float rounding decide there). The family's own count is evaluated
# at every witness, so a witness never claims more than an image gets. Cells are visited by the
# most their count can be (a table per model and kwargs, cached), and the search stops when no
# cell left can beat the best found. tests/unit/test_modalities.py checks each search against a
# brute force over every image of small bounds and fine grids of large ones.


@dataclass(frozen=True)
class _Hit:
    cost: ItemCost
    size: tuple[int, int]  # (width, height)

    @property
    def key(self) -> tuple[int, int]:
        return (self.cost.tokens, self.cost.encoder_patches)


def _best(hits: Iterable[_Hit | None]) -> _Hit | None:
    """The costliest hit: most tokens, then most encoder patches, then the first seen."""
    out: _Hit | None = None
    for h in hits:
        if h is not None and (out is None or h.key > out.key):
            out = h
    return out


def _safe(fn: Callable[[int, int], ItemCost], p: tuple[int, int] | None) -> _Hit | None:
    """Image `p` (width, height) and its cost; None where there is none or the processor
    refuses it."""
    if p is None:
        return None
    try:
        return _Hit(fn(*p), p)
    except ValueError:
        return None


# Aspect ratios (width / height) as integer pairs (n, d); an interval's upper end (c, 0) is ∞.


def _simplest(a: int, b: int, c: int, d: int) -> tuple[int, int]:
    """The fraction p/q with the smallest p and q strictly between a/b ≥ 0 and c/d (d = 0: no
    upper end): the Stern–Brocot ancestor of every fraction in the interval."""
    n = a // b
    if d == 0 or (n + 1) * d < c:
        return n + 1, 1
    p, q = _simplest(d, c - n * d, b, a - n * b)
    return n * p + q, p


def _ray_point(W: int, H: int, p: int, q: int) -> tuple[int, int] | None:
    """The largest image of aspect ratio exactly p/q within W × H."""
    g = math.gcd(p, q)
    p, q = p // g, q // g
    k = min(W // p, H // q)
    return (k * p, k * q) if k >= 1 else None


def _top_point(W: int, H: int, a: int, b: int, c: int, d: int) -> tuple[int, int] | None:
    """The image within W × H with aspect ratio strictly between a/b and c/d that is at least as
    wide and as tall as every other such image (one exists whenever any such image does)."""
    if d != 0 and a * d >= c * b:
        return None
    if a * H < W * b and (d == 0 or W * d < c * H):
        return (W, H)
    if d != 0 and W * d >= c * H:
        # every such image has w < (c/d)·h ≤ W: the tallest row holding one, its widest
        q = _simplest(a, b, c, d)[1]
        if q > H:
            return None
        for h in range(H, max(H - q, 0), -1):  # h = q·⌊H/q⌋ holds one
            w = (c * h - 1) // d
            if w >= 1 and w * b > a * h:
                return (w, h)
        return None  # pragma: no cover
    flipped = _top_point(H, W, d, c if d else 1, b, a)  # h/w ∈ (d/c, b/a); here a/b ≥ W/H > 0
    return (flipped[1], flipped[0]) if flipped else None


def _bottom_point(W: int, H: int, a: int, b: int, c: int, d: int) -> tuple[int, int] | None:
    """The image with aspect ratio strictly between a/b and c/d that is no wider and no taller
    than any other such image, if it fits in W × H."""
    if d != 0 and a * d >= c * b:
        return None
    q = _simplest(a, b, c, d)[1]
    for h in range(1, min(q, H) + 1):  # h = q holds one
        w = a * h // b + 1
        if w <= W and (d == 0 or w * d < c * h):
            return (w, h)
    return None


_Cell = tuple[int, int, int, int]  # (a, b, c, d): the open interval a/b < w/h < c/d; d = 0: ∞
_Ray = tuple[int, int]  # (p, q): w/h = p/q exactly


def _cells(breakpoints: Iterable[Fraction]) -> tuple[list[_Ray], list[_Cell]]:
    """The exact rays on the breakpoints and the open intervals between them."""
    bps = sorted({b for b in breakpoints if b > 0})
    rays: list[_Ray] = [(b.numerator, b.denominator) for b in bps]
    lows: list[_Ray] = [(0, 1), *rays]
    highs: list[_Ray] = [*rays, (1, 0)]
    cells: list[_Cell] = [(a, b, c, d) for (a, b), (c, d) in zip(lows, highs, strict=True)]
    return rays, cells


def _mirror(bps: Iterable[Fraction]) -> set[Fraction]:
    """Breakpoints of a rule that looks at max(w, h) / min(w, h): r and 1/r as w/h."""
    out: set[Fraction] = set()
    for b in bps:
        if b > 0:
            out.update((b, 1 / b))
    return out


def _huge(p: int, q: int) -> tuple[int, int]:
    """A very large image of aspect ratio p/q: the most any image of that ratio can cost."""
    k = 10**6 // min(p, q) + 1
    return k * p, k * q


_TABLES: dict[Any, Any] = {}


def _table(
    kind: str, profile: ModelProfile, kw: Mapping[str, Any], build: Callable[[], Any]
) -> Any:
    """A search table per model and kwargs (independent of the bounds), built once."""
    k = _Key(profile, (kind, _freeze(kw)))
    hit = _TABLES.get(k)
    if hit is None:
        if len(_TABLES) >= _CACHE_LIMIT:
            _TABLES.clear()
        hit = _TABLES[k] = build()
    return hit


def _aspect_only_table(
    fn: Callable[[int, int], ItemCost], breakpoints: Iterable[Fraction]
) -> list[tuple[tuple[int, int], int, int]]:
    """(cost key, p, q) per cell, costliest first; (p, q): the cell's smallest image."""
    rays, cells = _cells(breakpoints)
    pts = rays + [_simplest(*cell) for cell in cells]
    rows = []
    for p, q in pts:
        hit = _safe(fn, (p, q))
        if hit is not None:
            rows.append((hit.key, p, q))
    rows.sort(key=lambda r: r[0], reverse=True)
    return rows


def _search_aspect_only(
    fn: Callable[[int, int], ItemCost],
    W: int,
    H: int,
    table: list[tuple[tuple[int, int], int, int]],
) -> _Hit | None:
    """Worst image where the count depends on the aspect ratio alone: the costliest cell whose
    smallest image fits (every image of a cell is a multiple-or-more of its smallest)."""
    for _, p, q in table:
        if p <= W and q <= H:
            return _safe(fn, _ray_point(W, H, p, q))
    return None


def _growing_table(
    fn: Callable[[int, int], ItemCost], breakpoints: Iterable[Fraction]
) -> list[tuple[tuple[int, int], _Ray | _Cell]]:
    """(the most a cell can cost, the cell) for counts that grow with the image in a cell."""
    rays, cells = _cells(breakpoints)
    rows: list[tuple[tuple[int, int], _Ray | _Cell]] = []
    for ray in rays:
        hit = _safe(fn, _huge(*ray))
        if hit is not None:
            rows.append((hit.key, ray))
    for cell in cells:
        hit = _safe(fn, _huge(*_simplest(*cell)))
        if hit is not None:
            rows.append((hit.key, cell))
    rows.sort(key=lambda r: r[0], reverse=True)
    return rows


def _search_growing(
    fn: Callable[[int, int], ItemCost],
    W: int,
    H: int,
    table: list[tuple[tuple[int, int], _Ray | _Cell]],
    allowed: Callable[[tuple[int, int]], bool] = lambda p: True,
) -> _Hit | None:
    """Worst image where, within a cell, the count can only grow with the image: each cell's
    largest image within the bounds, cells by the most they can cost, until none can beat the
    best. `allowed`: a condition that holds for an image and every larger one."""
    best: _Hit | None = None
    for most, cell in table:
        if best is not None and best.key >= most:
            break
        if len(cell) == 2:
            p = _ray_point(W, H, cell[0], cell[1])
        else:
            p = _top_point(W, H, cell[0], cell[1], cell[2], cell[3])
        if p is not None and allowed(p):
            best = _best([best, _safe(fn, p)])
    return best


# --- Qwen-VL -------------------------------------------------------------------------------------


def _round_range(r: int, f: int) -> tuple[int, int]:
    """The sides x ≥ 1 with round(x / f) == r (Python's round: halves to even)."""
    lo = max(1, r * f - f // 2 - 1)
    while round(lo / f) < r:
        lo += 1
    hi = r * f + f // 2 + 1
    while round(hi / f) > r:
        hi -= 1
    return lo, hi


def _qwen_rescaled_bound(M: Fraction, factor: int, rho_max: int = QWEN_MAX_ASPECT) -> int:
    """Most units per frame group once a grid is rescaled to M pixels per frame:
    ⌊√(M/ρ)/f⌋·⌊√(Mρ)/f⌋ ≤ M/f², or with one side held at f by the clamp, ≤ √(M·ρ)/f, where
    ρ (or 1/ρ) is at most `rho_max`."""
    return max(int(M / (factor * factor)), math.isqrt(int(M * rho_max)) // factor + 1)


def _qwen_upscaled_bound(m: Fraction, factor: int) -> int:
    """Most units per frame group once a grid is scaled up to m pixels per frame:
    ⌈√(m/ρ)/f⌉·⌈√(mρ)/f⌉ ≤ m/f² + (√(m/200) + √(200·m))/f + 1 over 1/200 ≤ ρ ≤ 200."""
    root = math.isqrt(int(m * QWEN_MAX_ASPECT)) + 1
    return int(m / (factor * factor)) + (root // QWEN_MAX_ASPECT + root) // factor + 3


@functools.lru_cache(maxsize=1024)
def _qwen_upscaled_cells(
    min_pixels: int, frames: int, factor: int
) -> tuple[list[_Ray], list[_Cell]]:
    """Breakpoints of scaled-up grids (√(m/ρ)/f or √(mρ)/f an integer, m = min/t) within
    1/200 ≤ ρ ≤ 200, as rays and the cells between them."""
    m = Fraction(min_pixels, frames)
    bps: set[Fraction] = {Fraction(QWEN_MAX_ASPECT), Fraction(1, QWEN_MAX_ASPECT)}
    k = 1
    while (k * factor) ** 2 <= m * QWEN_MAX_ASPECT:
        bps.update((Fraction((k * factor) ** 2) / m, m / (k * factor) ** 2))
        k += 1
    rays, cells = _cells(bps)
    return rays, cells[1:-1]


def _qwen_worst(
    fn: Callable[[int, int], ItemCost],
    W: int,
    H: int,
    factor: int,
    min_pixels: int,
    max_pixels: int,
    frames: int = 1,
    t_bar: int = 1,
    grid_t: int = 1,
    upscale_small: bool = False,
) -> _Hit | None:
    """Worst image (or frame size, at a fixed frame count) of a Qwen-VL smart_resize.

    With rh = round(h / f), rw = round(w / f): (a) where t̄·rh·rw·f² lies in [min, max] the image
    keeps that grid, whose count grows with each side: per rh, the widest rw the budget and the
    bounds allow. (b) Above max and (c) below min the grid is rescaled and depends on the aspect
    ratio ρ alone (h/β = √(max·h/(t·w)) …), with breakpoints where a rescaled side crosses a
    multiple of f; (b) holds for an image and every larger one (its cell's largest image is its
    witness), (c) for an image and every smaller one (its smallest). `upscale_small`: frames with
    a side below f are first scaled up to f (Qwen3-VL video), searched along the short side.
    """
    f2 = factor * factor
    big = QWEN_MAX_ASPECT

    def valid(p: tuple[int, int] | None) -> bool:
        if p is None:
            return False
        w, h = p
        return 1 <= w <= W and 1 <= h <= H and max(w, h) <= big * min(w, h)

    def grid(p: tuple[int, int]) -> int:
        return t_bar * round(p[1] / factor) * round(p[0] / factor) * f2

    best: _Hit | None = None

    def consider(p: tuple[int, int] | None) -> None:
        nonlocal best
        if p is not None and valid(p):
            best = _best([best, _safe(fn, p)])

    def beats(tokens: int) -> bool:
        return best is None or tokens > best.cost.tokens

    # (a): for every row count, the widest grid within budget and bounds (its largest sides,
    # trimmed to the aspect limit).
    budget = max_pixels // (t_bar * f2)
    rw_top = round(W / factor)
    for rh in range(round(H / factor), 0, -1):
        if not beats(grid_t * rh * min(rw_top, budget // rh)):
            continue
        h_lo, h_hi = _round_range(rh, factor)
        h = min(h_hi, H)
        rw = min(rw_top, budget // rh)
        while rw >= 1 and beats(grid_t * rh * rw):
            w_lo, w_hi = _round_range(rw, factor)
            w = min(w_hi, W, big * h)
            hh = min(h, big * w)
            if w_lo <= w and h_lo <= hh and valid((w, hh)):
                consider((w, hh))
                break
            rw -= 1

    # (b): ⌊√(M/ρ)/f⌋·⌊√(Mρ)/f⌋·grid_t (each factor at least 1), M = max/t; a cell (a, b) is
    # visited only while a·b·grid_t can beat the best so far.
    M = Fraction(max_pixels, frames)
    tops = [_top_point(W, H, 1, big, big, 1), _ray_point(W, H, big, 1), _ray_point(W, H, 1, big)]
    reach_b = any(p is not None and valid(p) and grid(p) > max_pixels for p in tops)
    rho_max = min(big, max(W, H))
    if reach_b and beats(grid_t * _qwen_rescaled_bound(M, factor, rho_max)):
        Mn, Md = M.numerator, M.denominator
        for a in range(math.isqrt(int(M * big)) // factor + 1, 0, -1):
            # ρ where ⌊√(M/ρ)/f⌋ = a: M/((a+1)f)² < ρ ≤ M/(af)² (a = 1: every ρ above M/(2f)²)
            # the most ⌊√(Mρ)/f⌋ gets in that range (integer arithmetic: most a are skipped here)
            if a > 1:
                b_hi = max(1, math.isqrt(Mn * Mn // (Md * Md * a * a * f2)) // factor)
            else:
                b_hi = max(1, math.isqrt(int(M * big)) // factor)
            if not beats(a * b_hi * grid_t):
                continue
            rho_lo = M / ((a + 1) * factor) ** 2
            rho_hi = M / (a * factor) ** 2 if a > 1 else Fraction(big)
            b_lo = max(1, math.isqrt(int(M * rho_lo)) // factor)
            for b in range(b_hi, b_lo - 1, -1):
                if not beats(a * b * grid_t):
                    break
                lo = max(rho_lo, Fraction((b * factor) ** 2) / M if b > 1 else Fraction(0))
                hi = min(rho_hi, Fraction(((b + 1) * factor) ** 2) / M)
                lo, hi = max(lo, Fraction(1, big)), min(hi, Fraction(big))
                if hi < lo:
                    continue
                ends = (lo.numerator, lo.denominator, hi.numerator, hi.denominator)
                for p in (
                    _top_point(W, H, *ends),
                    _ray_point(W, H, lo.numerator, lo.denominator),
                    _ray_point(W, H, hi.numerator, hi.denominator),
                ):
                    if p is not None and valid(p) and grid(p) > max_pixels:
                        consider(p)

    # (c): ⌈√(m/ρ)/f⌉·⌈√(mρ)/f⌉·grid_t, m = min/t; each cell's smallest image.
    m = Fraction(min_pixels, frames)
    if beats(grid_t * _qwen_upscaled_bound(m, factor)):
        rays, cells = _qwen_upscaled_cells(min_pixels, frames, factor)
        pts = [*rays, *(_bottom_point(W, H, *cell) for cell in cells)]
        for p in pts:
            if p is not None and valid(p) and grid(p) < min_pixels:
                consider(p)

    # Frames with a side below f are scaled up first: along each short side the count grows with
    # the long side (kept, or rescaled against the budget): the longest valid long side, and the
    # ones around the budget's edge.
    if upscale_small and beats(grid_t * min(big, max(W, H))):
        for s in range(1, factor):
            for long_bound, short_bound, flip in ((W, H, False), (H, W, True)):
                if s > short_bound:
                    continue
                top = min(long_bound, big * s)
                edge = (max_pixels // (t_bar * factor)) * s // factor
                for x in {top, top - 1, edge - 1, edge, edge + 1, edge + 2}:
                    if s <= x <= long_bound:
                        consider((s, x) if flip else (x, s))
    return best


# --- tile / crop / slice / pinpoint families -----------------------------------------------------


def _internvl_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """The closest target ratio decides (its midpoints with its neighbours bound its cell); among
    targets of the same ratio (1:1, 2:2, 3:3) the area decides, more area more tiles."""
    fn = _image_fn(profile, kw)

    def build() -> list[tuple[tuple[int, int], _Ray | _Cell]]:
        min_num, max_num, _, _ = _internvl_params(profile, kw)
        targets = sorted({Fraction(i, j) for i, j in _internvl_ratios(min_num, max_num)})
        mids = [(targets[i] + targets[i + 1]) / 2 for i in range(len(targets) - 1)]
        return _growing_table(fn, [*targets, *mids])

    table = _table("internvl", profile, kw, build)
    return _search_growing(fn, W, H, table)


def _phi3v_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """The HD transform depends on r = max(w, h) / min(w, h) alone: the crop scale s changes where
    ⌈s/r⌉ = k does (r = s/k, s·k ≤ n), the padded rows where ⌊336·s/r⌋ passes a multiple of 336
    (r = 336·s/(336·k + 1))."""
    fn = _image_fn(profile, kw)

    def build() -> list[tuple[tuple[int, int], int, int]]:
        n = _phi3v_crops(profile, kw)
        bps: set[Fraction] = {Fraction(1)}
        for s in range(1, n + 2):
            for k in range(1, n // s + 3):
                bps.add(Fraction(s, k))
                bps.add(Fraction(336 * s, 336 * (k - 1) + 1))
        return _aspect_only_table(fn, _mirror(b for b in bps if b >= 1))

    return _search_aspect_only(fn, W, H, _table("phi3_v", profile, kw, build))


def _idefics3_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """Resized to the longest edge L first, the short side int(L/r) (made even) decides the tile
    rows: breakpoints r = L/n for n around every multiple of the tile side."""
    fn = _image_fn(profile, kw)
    split, longest, tile = _idefics3_params(profile, kw)
    if not split:
        return _safe(fn, (W, H))

    def build() -> list[tuple[tuple[int, int], int, int]]:
        bps: set[Fraction] = {Fraction(1)}
        for edge in {longest, min(longest, IDEFICS3_MAX_IMAGE_SIZE)}:
            for k in range(0, edge // tile + 2):
                bps.update(Fraction(edge, n) for n in range(k * tile - 3, k * tile + 4) if n >= 1)
        return _aspect_only_table(fn, _mirror(b for b in bps if b >= 1))

    return _search_aspect_only(fn, W, H, _table("idefics3", profile, kw, build))


def _gemma3_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """Pan-and-scan crops grow with the long side and, down to the minimum crop size (below which
    there are none), as the short side shrinks: per orientation, the long side at its bound and
    the short side at the minimum crop size (or its bound)."""
    fn = _image_fn(profile, kw)
    _, _, min_crop, _ = _gemma3_opts(profile, kw)
    pts = [(W, H), (W, min(H, min_crop)), (min(W, min_crop), H)]
    return _best(_safe(fn, p) for p in pts)


def _pixtral_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """The count grows with each side up to the longest edge; a larger image is scaled to fit,
    never beyond the bounds clipped to the longest edge."""
    longest = _pixtral_longest(profile, kw)
    return _safe(_image_fn(profile, kw), (min(W, longest), min(H, longest)))


def _isqrt_frac(x: Fraction) -> int:
    """⌊√x⌋ for a rational x ≥ 0."""
    return math.isqrt(x.numerator // x.denominator)


def _area_aspect_point(
    W: int,
    H: int,
    a_lo: int,
    a_hi: int | None,
    lo2: Fraction | None,
    hi2: Fraction | None,
    exact: bool,
) -> tuple[int, int] | None:
    """An image within W × H with a_lo < w·h ≤ a_hi (None: unbounded) and √lo2 < w/h < √hi2
    (None: unbounded; exact: w/h = √lo2), if any."""
    h_top, h_bottom = H, max(1, a_lo // W)
    if lo2 is not None:  # w > √lo2·h with w ≤ W and w·h ≤ a_hi: h² < W²/lo2, h⁴ < a_hi²/lo2
        h_top = min(h_top, math.isqrt(int(W * W / lo2)) + 1)
        if a_hi is not None:
            h_top = min(h_top, math.isqrt(math.isqrt(int(a_hi * a_hi / lo2))) + 1)
    if hi2 is not None:  # w < √hi2·h with w·h > a_lo: h⁴ > a_lo²/hi2
        h_bottom = max(h_bottom, math.isqrt(math.isqrt(int(a_lo * a_lo / hi2))))
    for h in range(h_top, h_bottom - 1, -1):
        w_lo, w_hi = a_lo // h + 1, W
        if a_hi is not None:
            w_hi = min(w_hi, a_hi // h)
        if exact:
            assert lo2 is not None
            x = lo2 * h * h
            w = _isqrt_frac(x)
            if w * w == x and w_lo <= w <= w_hi:
                return (w, h)
            continue
        if lo2 is not None:
            w_lo = max(w_lo, _isqrt_frac(lo2 * h * h) + 1)
        if hi2 is not None:
            x = hi2 * h * h
            t = _isqrt_frac(x)
            w_hi = min(w_hi, t - 1 if t * t == x else t)
        if w_lo <= w_hi:
            return (w_hi, h)
    return None


def _minicpmv_worst(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit | None:
    """The area sets the slice multiple m = min(⌈area/s²⌉, max); among the grids of m − 1, m,
    m + 1 slices the nearest in log aspect wins (cells bounded by the geometric means of
    neighbouring grid ratios). Cells are tried by their count, most first; the first holding an
    image within the bounds is the worst."""
    fn = _image_fn(profile, kw)
    max_slices, scale, query = _minicpmv_params(profile, kw)
    s2 = scale * scale
    # (slices, area above, area up to, lower ratio², upper ratio², exactly on the lower one)
    cells: list[tuple[int, int, int | None, Fraction | None, Fraction | None, bool]] = [
        (0, 0, s2 if max_slices > 1 else None, None, None, False)
    ]
    for m in range(2, max_slices + 1):
        a_lo, a_hi = (m - 1) * s2, (m * s2 if m < max_slices else None)
        ratios: list[tuple[Fraction, int]] = []
        for gm, gn in _minicpmv_candidates(m, max_slices):
            r = Fraction(gm, gn)
            if all(r != x for x, _ in ratios):
                ratios.append((r, gm * gn))
        ratios.sort()
        for i, (r, slices) in enumerate(ratios):
            lo2 = ratios[i - 1][0] * r if i > 0 else None
            hi2 = r * ratios[i + 1][0] if i + 1 < len(ratios) else None
            cells.append((slices, a_lo, a_hi, lo2, hi2, False))
            if hi2 is not None:  # equal errors on the boundary: the earlier candidate wins
                cells.append((max(slices, ratios[i + 1][1]), a_lo, a_hi, hi2, hi2, True))
    cells.sort(key=lambda c: -c[0])
    best: _Hit | None = None
    for slices, a_lo, a_hi, lo2, hi2, exact in cells:
        if best is not None and best.cost.tokens >= (1 + slices) * query:
            break
        best = _best([best, _safe(fn, _area_aspect_point(W, H, a_lo, a_hi, lo2, hi2, exact))])
    return best


def _llava_next_worst(profile: ModelProfile, W: int, H: int) -> _Hit | None:
    """An image that fits in a pinpoint (w ≤ its width, h ≤ its height) gets the smallest such
    pinpoint: the pinpoint sides cut the bounds into rectangles of one grid each, whose count
    falls as the aspect ratio leaves the grid's own — the nearest aspect ratio on each side is
    the worst. An image that fits in none gets the pinpoint keeping most of its pixels, which
    depends on the aspect ratio alone (breakpoints where a fitted side or a grid's unpadded side
    steps, and around every crossing of a wide and a tall fit); that holds for an image and every
    larger one, so each cell's largest image is its witness."""
    fn = _image_fn(profile, {})
    image_size, npatch = _clip_grid(profile)
    pins = _llava_next_pinpoints(profile)

    def outside(p: tuple[int, int]) -> bool:
        return all(p[0] > pw or p[1] > ph for ph, pw in pins)

    def build() -> list[tuple[tuple[int, int], _Ray | _Cell]]:
        bps: set[Fraction] = set()
        for rows, cols in {(ph // image_size, pw // image_size) for ph, pw in pins}:
            cur_h, cur_w = npatch * rows, npatch * cols
            bps.update(Fraction(cur_w, n) for n in range(1, cur_h + 1))
            bps.update(Fraction(n, cur_h) for n in range(1, cur_w + 1))
        for ph, pw in pins:
            bps.update((Fraction(pw, ph), Fraction(pw), Fraction(1, ph)))
            for ph2, pw2 in pins:  # a wide fit of one pinpoint crosses a tall fit of another
                for d in range(-4, 5):
                    if ph2 + d >= 1:
                        bps.add(Fraction(pw, ph2 + d))
                    if pw2 + d >= 1:
                        bps.add(Fraction(pw2 + d, ph))
        return _growing_table(fn, bps)

    table = _table("llava_next", profile, {}, build)
    # rectangles of the pinpoint sides: (the grid's full count, rectangle, grid's pinpoint)
    xs = sorted({pw for _, pw in pins})
    ys = sorted({ph for ph, _ in pins})
    rects: list[tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]] = []
    for ai, xa in enumerate(xs):
        w1, w2 = (xs[ai - 1] + 1 if ai else 1), min(xa, W)
        for bi, yb in enumerate(ys):
            h1, h2 = (ys[bi - 1] + 1 if bi else 1), min(yb, H)
            fits = [(ph * pw, i) for i, (ph, pw) in enumerate(pins) if pw >= xa and ph >= yb]
            if w1 > w2 or h1 > h2 or not fits:
                continue
            g_ph, g_pw = pins[min(fits)[1]]
            full = _safe(fn, (g_pw, g_ph))
            most = full.key if full else (0, 0)
            rects.append((most, (w1, w2, h1, h2), (g_ph, g_pw)))
    rects.sort(key=lambda r: r[0], reverse=True)
    best = _search_growing(fn, W, H, table, outside)
    for most, (w1, w2, h1, h2), (g_ph, g_pw) in rects:
        if best is not None and best.key >= most:
            break
        above: tuple[int, int] | None = None  # least w/h ≥ the grid's
        below: tuple[int, int] | None = None  # greatest w/h ≤ the grid's
        for h in range(h1, h2 + 1):
            wa = max(w1, -(-g_pw * h // g_ph))
            if wa <= w2 and (above is None or wa * above[1] < above[0] * h):
                above = (wa, h)
            wb = min(w2, g_pw * h // g_ph)
            if wb >= w1 and (below is None or wb * below[1] > below[0] * h):
                below = (wb, h)
            if above is not None and above == below:
                break  # the grid's own ratio: its full count
        best = _best([best, _safe(fn, above), _safe(fn, below)])
    return best


# --- public ------------------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


class _Key:
    """A cache key: the profile (by identity, else by value) and hashable arguments."""

    __slots__ = ("args", "hash", "profile")

    def __init__(self, profile: ModelProfile, args: tuple[Any, ...]) -> None:
        self.profile = profile
        self.args = args
        self.hash = hash((profile.id, args))

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Key)
            and self.args == other.args
            and (self.profile is other.profile or self.profile == other.profile)
        )


_CACHE_LIMIT = 4096
_IMAGE_CACHE: dict[_Key, _Hit] = {}
_VIDEO_CACHE: dict[_Key, tuple[_Hit, int]] = {}


def _worst_image_hit(
    profile: ModelProfile, W: int, H: int, mm_kwargs: Mapping[str, Any] | None
) -> _Hit:
    if W <= 0 or H <= 0:
        raise ValueError("image bounds must be positive")
    kw = dict(mm_kwargs or {})
    key = _Key(profile, (W, H, _freeze(kw)))
    hit = _IMAGE_CACHE.get(key)
    if hit is None:
        hit = _worst_image(profile, W, H, kw)
        if len(_IMAGE_CACHE) >= _CACHE_LIMIT:
            _IMAGE_CACHE.clear()
        _IMAGE_CACHE[key] = hit
    return hit


def _glm4v_worst(
    profile: ModelProfile,
    fn: Callable[[int, int], ItemCost],
    W: int,
    H: int,
    kw: Mapping[str, Any],
) -> _Hit | None:
    """GLM-4V: where both sides reach the factor, its resize is Qwen-VL's with the pixel
    bounds halved (an image is two frames), so Qwen-VL's cells locate the worst; below the
    factor the short side is scaled up first, so each short side's longest image (within the
    aspect limit) is a witness too. Every witness is counted by GLM-4V's own rule."""
    v = profile.vision
    assert v is not None
    factor = v.patch_size * v.spatial_merge_size
    lo, hi = _glm4v_bounds(profile, kw)
    hits = [_qwen_worst(fn, W, H, factor, -(-lo // 2), hi // 2)]
    for short in range(1, factor):
        for long_bound, portrait in ((W, False), (H, True)):
            top = min(long_bound, short * QWEN_MAX_ASPECT)
            for long in range(max(1, top - 2), top + 1):
                size = (short, long) if portrait else (long, short)
                if size[0] <= W and size[1] <= H:
                    hits.append(_safe(fn, size))
    return _best(hits)


def _worst_image(profile: ModelProfile, W: int, H: int, kw: Mapping[str, Any]) -> _Hit:
    fam = profile.family
    fn = _image_fn(profile, kw)
    hit: _Hit | None
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
        patch, merge, _ = _qwen_unit(profile)
        lo, hi = _qwen_image_bounds(profile, kw)
        hit = _qwen_worst(fn, W, H, patch * merge, lo, hi)
    elif fam == "glm4v":
        hit = _glm4v_worst(profile, fn, W, H, kw)
    elif fam == "llava_next":
        hit = _llava_next_worst(profile, W, H)
    elif fam == "internvl":
        hit = _internvl_worst(profile, W, H, kw)
    elif fam == "gemma3":
        hit = _gemma3_worst(profile, W, H, kw)
    elif fam in {"pixtral", "mistral3"}:
        hit = _pixtral_worst(profile, W, H, kw)
    elif fam == "phi3_v":
        hit = _phi3v_worst(profile, W, H, kw)
    elif fam == "idefics3":
        hit = _idefics3_worst(profile, W, H, kw)
    elif fam == "minicpmv":
        hit = _minicpmv_worst(profile, W, H, kw)
    else:  # llava: one size fits all
        hit = _safe(fn, (W, H))
    if hit is None:
        raise ValueError(f"{profile.id}'s processor takes no image within {W}×{H}")
    return hit


def worst_image_cost(
    profile: ModelProfile,
    max_width: int,
    max_height: int,
    mm_kwargs: Mapping[str, Any] | None = None,
) -> ItemCost:
    """The costliest image (most tokens, then most encoder patches) of any width ≤ `max_width`
    and height ≤ `max_height` that the processor accepts, with these processor kwargs."""
    return _worst_image_hit(profile, max_width, max_height, mm_kwargs).cost


def worst_image_size(
    profile: ModelProfile,
    max_width: int,
    max_height: int,
    mm_kwargs: Mapping[str, Any] | None = None,
) -> tuple[int, int]:
    """An image (width, height) within the bounds that costs :func:`worst_image_cost`."""
    return _worst_image_hit(profile, max_width, max_height, mm_kwargs).size


def _worst_video_hit(
    profile: ModelProfile, W: int, H: int, T: int, mm_kwargs: Mapping[str, Any] | None
) -> tuple[_Hit, int]:
    if W <= 0 or H <= 0 or T <= 0:
        raise ValueError("video bounds must be positive")
    if "video" not in supported_modalities(profile):
        raise ValueError(f"{profile.id} takes no video")
    kw = dict(mm_kwargs or {})
    key = _Key(profile, (W, H, T, _freeze(kw)))
    hit = _VIDEO_CACHE.get(key)
    if hit is None:
        hit = _worst_video(profile, W, H, T, kw)
        if len(_VIDEO_CACHE) >= _CACHE_LIMIT:
            _VIDEO_CACHE.clear()
        _VIDEO_CACHE[key] = hit
    return hit


def _worst_video(
    profile: ModelProfile, W: int, H: int, T: int, kw: Mapping[str, Any]
) -> tuple[_Hit, int]:
    fam = profile.family
    if fam in {"qwen3_vl", "glm4v"}:
        return _qwen3_worst_video(profile, W, H, T, kw)
    if fam in {"qwen2_vl", "qwen2_5_vl", "qwen2_5_omni", "qwen3_omni"}:
        # each frame is resized on its own: the worst frame, as many frames as allowed
        patch, merge, _ = _qwen_unit(profile)
        lo, hi = _qwen_video_bounds(profile, kw)

        def frame(w: int, h: int) -> ItemCost:
            rh, rw = qwen_smart_resize(h, w, patch * merge, lo, hi)
            patches = (rh // patch) * (rw // patch)
            return ItemCost(patches // (merge * merge), patches, patches)

        one = _qwen_worst(frame, W, H, patch * merge, lo, hi)
        if one is None:
            raise ValueError(f"{profile.id}'s processor takes no frame within {W}×{H}")
        return _Hit(video_cost(profile, *one.size, T, kw), one.size), T
    # InternVL (one tile per frame), MiniCPM-V (one slice per frame): any frame size, all frames
    return _Hit(video_cost(profile, W, H, T, kw), (W, H)), T


def _qwen3_worst_video(
    profile: ModelProfile, W: int, H: int, T: int, kw: Mapping[str, Any]
) -> tuple[_Hit, int]:
    """Qwen3-VL resizes all frames against one pixel budget: t frames get a grid of at most
    max/(t̄·f²) units (kept) or about max/(t·f²) (rescaled) over ⌈t/2⌉ frame groups, so an odd t,
    whose padding frame the budget does not count, or a t where the budget starts to bind, can
    beat max_frames. Frame counts are visited by an upper bound, most first, until none can beat
    the best; each is a frame-size search like an image's.

    GLM-4V's video processor resizes the same way (its smart_resize is Qwen3-VL's, transformers
    video_processing_glm4v.py:39-72), with its own pixel budget and timestamp text; a clip of
    odd T frames that the processor samples itself reaches the resize as T + 1 (sample_frames pads
    to whole frame pairs, :159-168), so its frame counts go up to T rounded up to the temporal
    patch."""
    patch, merge, temporal = _qwen_unit(profile)
    factor = patch * merge
    glm = profile.family == "glm4v"
    if glm:
        glm4v_video_rule(profile)
        lo, hi = _glm4v_video_bounds(profile, kw)
        T = max(-(-T // temporal) * temporal, temporal)
    else:
        lo, hi = _qwen_video_bounds(profile, kw)
    f2 = factor * factor
    box = max(1, round(H / factor)) * max(1, round(W / factor))
    rho_max = min(QWEN_MAX_ASPECT, max(W, H))  # the most lopsided frame within the bounds

    def upper(t: int) -> int:
        """The most t frames can cost: kept grids within the bounds and budget, rescaled grids,
        scaled-up grids, and frames below f scaled up (≤ 200 units on the long side)."""
        t_bar = max(round(t / temporal) * temporal, 1)
        kept = max(hi // (t_bar * f2), _qwen_rescaled_bound(Fraction(hi, t), factor, rho_max))
        upscaled = _qwen_upscaled_bound(Fraction(lo, t), factor)
        small = min(rho_max + 1, kept)
        return -(-t // temporal) * max(min(box, kept), upscaled, small)

    best: tuple[_Hit, int] | None = None
    for t in sorted(range(temporal, T + 1), key=upper, reverse=True):
        if best is not None and upper(t) < best[0].cost.tokens:
            break
        t_bar = round(t / temporal) * temporal
        grid_t = -(-t // temporal)

        def fn(w: int, h: int, t: int = t, grid_t: int = grid_t) -> ItemCost:
            rh, rw = qwen3_vl_video_smart_resize(t, h, w, temporal, factor, lo, hi)
            patches = grid_t * (rh // patch) * (rw // patch)
            return ItemCost(patches // (merge * merge), patches, patches)

        hit = _qwen_worst(fn, W, H, factor, lo, hi, t, t_bar, grid_t, upscale_small=True)
        if hit is not None and (best is None or hit.key > best[0].key):
            best = (hit, t)
    if best is None:
        raise ValueError(f"{profile.id}'s processor takes no video within {W}×{H}, {T} frames")
    # the text bound of the longest video within the bounds, whichever has the most embeddings
    hit, t = best
    groups = -(-T // temporal)
    if glm:
        text = glm4v_timestamp_tokens_bound(groups, None)
    else:
        text = qwen3_vl_timestamp_tokens_bound(groups, None)
    c = hit.cost
    return _Hit(ItemCost(c.tokens, c.encoder_patches, c.encoder_sequence, text), hit.size), t


def worst_video_cost(
    profile: ModelProfile,
    max_width: int,
    max_height: int,
    max_frames: int,
    mm_kwargs: Mapping[str, Any] | None = None,
) -> ItemCost:
    """The costliest video of at most `max_frames` frames (as they reach the processor) of any
    frame size within `max_width` × `max_height` (most tokens, then most encoder patches). Its
    `text_tokens` is the Qwen3-VL / GLM-4V timestamp bound of the video with the most frame
    pairs. GLM-4V: an odd `max_frames` counts one frame more, the pair its processor completes
    when it samples the clip itself."""
    return _worst_video_hit(profile, max_width, max_height, max_frames, mm_kwargs)[0].cost


def worst_video_size(
    profile: ModelProfile,
    max_width: int,
    max_height: int,
    max_frames: int,
    mm_kwargs: Mapping[str, Any] | None = None,
) -> tuple[int, int, int]:
    """A video (width, height, frames) within the bounds that costs :func:`worst_video_cost`."""
    hit, frames = _worst_video_hit(profile, max_width, max_height, max_frames, mm_kwargs)
    return hit.size[0], hit.size[1], frames
