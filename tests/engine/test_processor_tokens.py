"""mmop's tokens per item equal each catalog family's own processor, and its worst item within
bounds is at least every item the processor is asked about inside them — and is reached.

One run of e2e/engine/scripts/processor_tokens.py in the engine venv answers every request below
(JSON on stdin, JSON on stdout): transformers' image / video processors and feature extractor
built from the catalog's config dicts, vLLM's own processing code for the families whose
processor is remote code, mistral_common for Pixtral (see the script's docstring for which
function answers for which family). Offline; fails, never skips, without the engine venv.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from e2e.engine.venv import EngineVenv

from mmop import modalities as mm
from mmop.model import CATALOG_MODELS_DIR, ModelProfile, load_profile, load_profile_from_dir

SCRIPT = Path(__file__).resolve().parents[2] / "e2e" / "engine" / "scripts" / "processor_tokens.py"
# Published configs of families outside the catalog (bench/families), checked by id as well.
FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"
QWEN3_OMNI = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
QWEN3_5 = "Qwen/Qwen3.6-35B-A3B"  # Qwen3.5 architecture: Qwen3-VL's processors
GLM4V = "zai-org/GLM-4.1V-9B-Thinking"  # bench/families
GLM4_5V = "zai-org/GLM-4.5V"  # bench/families: config only, the image processor's defaults
INTERNVL3_5 = "OpenGVLab/InternVL3_5-8B"  # bench/families: chat layout over Qwen3


def profile_of(model: str) -> ModelProfile:
    """A catalog model, or a published config kept in bench/families."""
    if (FAMILIES / model / "config.json").is_file():
        return load_profile_from_dir(FAMILIES / model)
    return load_profile(model)


# One model per family (two where their configs differ), with processor kwargs worth checking.
IMAGE_MODELS: dict[str, list[dict[str, Any]]] = {
    "Qwen/Qwen2-VL-7B-Instruct": [{}],
    "Qwen/Qwen2.5-VL-7B-Instruct": [{}, {"max_pixels": 256 * 28 * 28}, {"min_pixels": 200704}],
    "Qwen/Qwen2.5-Omni-7B": [{}],
    # bench/families holds these two without preprocessor_config.json: mmop then bounds images
    # at the published 16,384 units (model.QWEN_PUBLISHED_MAX_UNITS), not the class default the
    # processor falls back to, so the processor is given that bound.
    QWEN3_OMNI: [{"max_pixels": 16384 * 32 * 32}, {"max_pixels": 256 * 32 * 32}],
    QWEN3_5: [{"max_pixels": 16384 * 32 * 32}],
    "Qwen/Qwen3-VL-8B-Instruct": [{}, {"max_pixels": 1024 * 32 * 32}],
    "Qwen/Qwen3-VL-30B-A3B-Instruct": [{}],
    "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8": [{}],
    "llava-hf/llava-1.5-7b-hf": [{}],
    "llava-hf/bakLlava-v1-hf": [{}],
    "llava-hf/llava-v1.6-mistral-7b-hf": [{}],
    "OpenGVLab/InternVL3-8B": [{}, {"max_dynamic_patch": 6}],
    "OpenGVLab/InternVL3-78B": [{}],
    "OpenGVLab/InternVL2_5-8B": [{}],
    "google/gemma-3-4b-it": [{}, {"do_pan_and_scan": True}],
    "mistralai/Pixtral-12B-2409": [{}],
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": [{}],
    "HuggingFaceTB/SmolVLM-Instruct": [{}, {"size": {"longest_edge": 768}}],
    "openbmb/MiniCPM-V-2_6": [{}, {"max_slice_nums": 4}],
    "openbmb/MiniCPM-V-4": [{}],  # bench/families
    "zai-org/GLM-4.1V-9B-Thinking": [
        {},
        {"size": {"shortest_edge": 12544, "longest_edge": 1605632}},
    ],
    GLM4_5V: [{}],
    INTERNVL3_5: [{}, {"max_dynamic_patch": 6}],
}
PHI3V = "microsoft/Phi-3.5-vision-instruct"
AUDIO_MODELS = ["Qwen/Qwen2-Audio-7B-Instruct", "Qwen/Qwen2.5-Omni-7B", QWEN3_OMNI]

# (width, height): small, common, large, and extreme aspect ratios (up to 1:400)
IMAGE_SIZES = [
    (1, 1), (13, 13), (28, 28), (100, 10), (10, 1000), (1, 199), (200, 1), (400, 1),
    (336, 336), (448, 448), (640, 480), (480, 640), (1024, 1024), (1280, 720), (720, 1280),
    (1344, 672), (1920, 640), (1920, 1080), (1080, 1920), (2048, 512), (990, 700), (2000, 1001),
    (4000, 1000), (1000, 4000), (8000, 50), (3840, 2160),
]  # fmt: skip
RUN_SIZES = [(28, 28), (640, 480), (1344, 672), (100, 10)]  # also processed for real

VIDEO_MODELS: dict[str, list[dict[str, Any]]] = {
    "Qwen/Qwen3-VL-8B-Instruct": [{}, {"max_pixels": 1024 * 32 * 32}],
    "Qwen/Qwen2.5-VL-7B-Instruct": [{}],
    "Qwen/Qwen2.5-Omni-7B": [{}],
    QWEN3_OMNI: [{}],
    QWEN3_5: [{}],
    "OpenGVLab/InternVL3-8B": [{}],
    INTERNVL3_5: [{}],
    "openbmb/MiniCPM-V-2_6": [{}],
    GLM4V: [{}, {"size": {"shortest_edge": 12544, "longest_edge": 4816896}}],
}
VIDEO_SIZES = [
    (64, 48),
    (10, 1000),
    (640, 480),
    (1007, 720),
    (1280, 720),
    (1920, 1080),
    (3840, 2160),
]
VIDEO_FRAMES = [1, 2, 3, 4, 5, 8, 16, 37, 64, 768]
# processed for real
PROCESSED_VIDEO = {"OpenGVLab/InternVL3-8B", INTERNVL3_5, "openbmb/MiniCPM-V-2_6"}
CLIPS = [(30, 30.0), (3, 30.0), (900, 30.0), (901, 30.0), (931, 30.0), (451, 29.97), (2000, 25.0)]
CLIPS += [(100000, 24.0), (7, 0.5)]
AUDIO_SECONDS = [0.01, 0.5, 1, 1.234, 10.005, 29.99, 30, 30.01, 45, 299, 300, 600]

# bounds whose worst item the processor must confirm: (model, kwargs, width, height)
WORST_IMAGE = [
    ("OpenGVLab/InternVL3-8B", {}, 2048, 2048),
    ("OpenGVLab/InternVL3-8B", {"max_dynamic_patch": 6}, 1280, 720),
    ("llava-hf/llava-v1.6-mistral-7b-hf", {}, 1920, 1080),
    ("google/gemma-3-4b-it", {"do_pan_and_scan": True}, 1920, 1080),
    ("HuggingFaceTB/SmolVLM-Instruct", {}, 1920, 1080),
    ("openbmb/MiniCPM-V-2_6", {}, 1920, 1080),
    ("Qwen/Qwen2.5-VL-7B-Instruct", {"max_pixels": 256 * 28 * 28}, 2048, 2048),
    ("Qwen/Qwen3-VL-8B-Instruct", {}, 4000, 4000),
    ("zai-org/GLM-4.1V-9B-Thinking", {}, 4000, 4000),
    ("zai-org/GLM-4.1V-9B-Thinking", {}, 25, 3000),
    (GLM4_5V, {}, 4000, 4000),
    (INTERNVL3_5, {}, 1024, 1024),
    ("mistralai/Pixtral-12B-2409", {}, 4000, 1000),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", {}, 2048, 2048),
]
WORST_VIDEO = [
    ("Qwen/Qwen3-VL-8B-Instruct", {}, 1280, 720, 64),
    ("Qwen/Qwen3-VL-8B-Instruct", {}, 3840, 2160, 32),
    ("Qwen/Qwen3-VL-8B-Instruct", {"max_pixels": 1024 * 32 * 32}, 1920, 1080, 16),
    ("Qwen/Qwen2.5-VL-7B-Instruct", {}, 1280, 720, 64),
    (GLM4V, {}, 640, 360, 32),
    (GLM4V, {}, 3840, 2160, 37),
    (GLM4V, {"size": {"shortest_edge": 12544, "longest_edge": 4816896}}, 1920, 1080, 16),
]
# GLM-4V clips through vLLM's loader (default 32 frames, or every frame: -1) and the processor's
# own sampling: (total frames, fps, loader num_frames)
GLM4V_CLIPS = [(total, fps, 32) for total, fps in CLIPS]
GLM4V_CLIPS += [(1, 30.0, 32), (5, 2.0, 32), (32, 0.1, 32), (33, 30.0, 32), (20, 0.05, 32)]
GLM4V_CLIPS += [(31, 0.1, 32), (100000, 24.0, -1), (7201, 24.0, -1), (601, 2.0, -1)]
# vLLM's GLM-4V profiling dummy: (max_model_len, images on, kwargs, --limit-mm-per-prompt video)
GLM4V_DUMMIES: list[tuple[int, int, dict[str, Any], dict[str, int] | None]] = [
    (4096, 1, {}, None),
    (16384, 1, {}, None),
    (16384, 0, {}, None),
    (32768, 1, {}, None),
    (32768, 0, {}, None),
    (65536, 1, {}, None),
    (131072, 0, {}, None),
    (32768, 1, {"size": {"shortest_edge": 12544, "longest_edge": 4816896}}, None),
    (16384, 1, {}, {"num_frames": 1, "width": 640, "height": 360}),
    (65536, 0, {}, {"num_frames": 64}),
    (65536, 1, {}, {"num_frames": 7, "width": 1280, "height": 720}),
]


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True)


def _requests() -> dict[str, dict[str, Any]]:
    reqs: dict[str, dict[str, Any]] = {}

    def image(model: str, kw: dict[str, Any], w: int, h: int) -> None:
        run = (w, h) in RUN_SIZES
        reqs[_key("image", model, kw, w, h)] = {
            "op": "image", "model": model, "width": w, "height": h, "kwargs": kw, "run": run
        }  # fmt: skip

    def video(model: str, kw: dict[str, Any], w: int, h: int, t: int) -> None:
        reqs[_key("video", model, kw, w, h, t)] = {
            "op": "video", "model": model, "width": w, "height": h, "frames": t, "kwargs": kw,
            "run": model not in PROCESSED_VIDEO and w * h * t <= 64 * 48 * 5,
        }  # fmt: skip

    for model, variants in IMAGE_MODELS.items():
        for kw in variants:
            for w, h in IMAGE_SIZES:
                image(model, kw, w, h)
    for model, variants in VIDEO_MODELS.items():
        for kw in variants:
            for w, h in VIDEO_SIZES:
                for t in VIDEO_FRAMES:
                    if model in PROCESSED_VIDEO and (w * h > 640 * 480 or t > 8):
                        continue
                    video(model, kw, w, h, t)
    for model in ("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"):
        for total, fps in CLIPS:
            reqs[_key("sample", model, total, fps)] = {
                "op": "sample", "model": model, "total_frames": total, "fps": fps
            }  # fmt: skip
    for total, fps in CLIPS:
        reqs[_key("timestamps", total, fps)] = {
            "op": "timestamps", "model": "Qwen/Qwen3-VL-8B-Instruct", "total_frames": total,
            "fps": fps,
        }  # fmt: skip
    for total, fps, loader in GLM4V_CLIPS:
        reqs[_key("glm4v_clip", total, fps, loader)] = {
            "op": "glm4v_clip", "model": GLM4V, "total_frames": total, "fps": fps,
            "num_frames": loader,
        }  # fmt: skip
    for seq_len, images, kw, overrides in GLM4V_DUMMIES:
        reqs[_key("glm4v_dummy", seq_len, images, kw, overrides)] = {
            "op": "glm4v_dummy", "model": GLM4V, "seq_len": seq_len, "images": images,
            "kwargs": kw, "overrides": overrides,
        }  # fmt: skip
    for model in AUDIO_MODELS:
        for s in AUDIO_SECONDS:
            reqs[_key("audio", model, s)] = {"op": "audio", "model": model, "seconds": s}
    for rows in range(1, 17):
        for cols in range(1, 17 // rows + 1):
            reqs[_key("hd", rows, cols)] = {
                "op": "hd_features",
                "model": PHI3V,
                "rows": rows,
                "cols": cols,
            }
    # the worst items mmop finds within the bounds, asked of the processor
    for model, kw, W, H in WORST_IMAGE:
        image(model, kw, *mm.worst_image_size(profile_of(model), W, H, kw))
    for model, kw, W, H, T in WORST_VIDEO:
        video(model, kw, *mm.worst_video_size(profile_of(model), W, H, T, kw))
    return reqs


REQUESTS = _requests()


@pytest.fixture(scope="module")
def answers(engine: EngineVenv) -> dict[str, dict[str, Any]]:
    keys = list(REQUESTS)
    payload = {
        "catalog": str(CATALOG_MODELS_DIR),
        "families": str(FAMILIES),
        "requests": [REQUESTS[k] for k in keys],
    }
    results: list[dict[str, Any]] = engine.run_json(SCRIPT, payload)["results"]
    assert len(results) == len(keys)
    return dict(zip(keys, results, strict=True))


def _mmop(fn: Any, *args: Any, **kwargs: Any) -> int | str:
    """mmop's tokens, or "refused" where it raises as the processor does."""
    try:
        return int(fn(*args, **kwargs).tokens)
    except ValueError:
        return "refused"


def _theirs(answer: dict[str, Any]) -> int | str:
    return "refused" if "error" in answer else int(answer["tokens"])


def _mismatches(pairs: Iterable[tuple[Any, int | str, int | str]]) -> list[str]:
    return [
        f"{what}: mmop {ours}, processor {theirs}" for what, ours, theirs in pairs if ours != theirs
    ]


@pytest.mark.parametrize(
    ("model", "kwargs"), [(m, kw) for m, variants in IMAGE_MODELS.items() for kw in variants]
)
def test_image_tokens_equal_the_processor(
    answers: dict[str, dict[str, Any]], model: str, kwargs: dict[str, Any]
) -> None:
    profile = profile_of(model)
    pairs = []
    for w, h in IMAGE_SIZES:
        answer = answers[_key("image", model, kwargs, w, h)]
        pairs.append(((w, h), _mmop(mm.image_cost, profile, w, h, kwargs), _theirs(answer)))
        if "ran" in answer:  # the processor's own outputs give the same count
            assert answer["ran"] == answer["tokens"], (w, h)
        if "hf" in answer:  # transformers' Pixtral resize agrees with vLLM's Mistral 3 grid
            assert answer["hf"] == answer["tokens"], (w, h)
        if "patches" in answer:  # LLaVA-NeXT: the processor cut the grid mmop counts
            assert answer["patches"] * 577 == mm.image_cost(profile, w, h).encoder_patches
    assert not _mismatches(pairs)


@pytest.mark.parametrize(
    ("model", "kwargs"), [(m, kw) for m, variants in VIDEO_MODELS.items() for kw in variants]
)
def test_video_tokens_equal_the_processor(
    answers: dict[str, dict[str, Any]], model: str, kwargs: dict[str, Any]
) -> None:
    profile = profile_of(model)
    pairs = []
    for w, h in VIDEO_SIZES:
        for t in VIDEO_FRAMES:
            answer = answers.get(_key("video", model, kwargs, w, h, t))
            if answer is None:
                continue
            pairs.append(
                ((w, h, t), _mmop(mm.video_cost, profile, w, h, t, kwargs), _theirs(answer))
            )
            if "ran" in answer:
                assert answer["ran"] == answer["tokens"], (w, h, t)
    assert pairs and not _mismatches(pairs)


def test_qwen3_vl_64_frames_of_720p_as_the_processor_counts(
    answers: dict[str, dict[str, Any]],
) -> None:
    answer = answers[_key("video", "Qwen/Qwen3-VL-8B-Instruct", {}, 1280, 720, 64)]
    assert answer["tokens"] == 11648
    assert mm.video_cost(load_profile("Qwen/Qwen3-VL-8B-Instruct"), 1280, 720, 64).tokens == 11648


@pytest.mark.parametrize("model", ["Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"])
def test_sampled_frames_equal_vllms_video_loader(
    answers: dict[str, dict[str, Any]], model: str
) -> None:
    profile = load_profile(model)
    pairs = [
        ((total, fps), mm.sampled_frames(profile, total, fps), answers[_key("sample", model, total, fps)]["frames"])
        for total, fps in CLIPS
    ]  # fmt: skip
    assert not _mismatches(pairs)


def test_qwen3_vl_timestamp_text_stays_within_the_bound(
    answers: dict[str, dict[str, Any]],
) -> None:
    """vLLM's timestamps for the frames its loader keeps, as "<t seconds>" text plus a vision
    start and end per frame pair, in bytes (a byte-level BPE token covers at least one byte): at
    most mmop's bound, whether given the clip's length or not."""
    profile = load_profile("Qwen/Qwen3-VL-8B-Instruct")
    for total, fps in CLIPS:
        answer = answers[_key("timestamps", total, fps)]
        frames = answer["frames"]
        if frames < 2:
            continue
        assert mm.sampled_frames(profile, total, fps) == frames
        bound = mm.video_cost(profile, 640, 480, frames).text_tokens
        given = mm.video_cost(profile, 640, 480, frames, seconds=total / fps).text_tokens
        assert answer["chars"] <= min(bound, given), (total, fps, answer, bound, given)
        assert answer["groups"] == -(-frames // 2)


def test_glm4v_frames_and_timestamp_text_of_clips(answers: dict[str, dict[str, Any]]) -> None:
    """The frames of a clip that reach GLM-4V's resize (vLLM's loader, then the processor's own
    sampling where the loader kept every frame) are mmop's; the text vLLM writes around them
    (timestamps, begin / end of image per group, begin / end of video), in bytes, stays within
    mmop's bound, whether given the clip's length or not, over one group per frame pair."""
    profile = profile_of(GLM4V)
    pairs = []
    for total, fps, loader in GLM4V_CLIPS:
        answer = answers[_key("glm4v_clip", total, fps, loader)]
        frames = mm.sampled_frames(profile, total, fps, {"num_frames": loader})
        pairs.append(((total, fps, loader), frames, answer["frames"]))
        if total / fps >= 0.5:
            assert answer["groups"] == -(-answer["frames"] // 2), (total, fps, answer)
        else:  # vLLM's own sampling of the timestamps lacks the processor's "at least one frame"
            assert (answer["frames"], answer["groups"]) == (2, 0), (total, fps, answer)
        bound = mm.video_cost(profile, 640, 480, answer["frames"]).text_tokens
        given = mm.video_cost(profile, 640, 480, answer["frames"], seconds=total / fps)
        assert answer["chars"] <= min(bound, given.text_tokens), (total, fps, answer)
    assert not _mismatches(pairs)


@pytest.mark.parametrize(("seq_len", "images", "kwargs", "overrides"), GLM4V_DUMMIES)
def test_glm4v_profiled_video_is_vllms_dummy(
    answers: dict[str, dict[str, Any]],
    seq_len: int,
    images: int,
    kwargs: dict[str, Any],
    overrides: dict[str, int] | None,
) -> None:
    """The video vLLM profiles GLM-4V with (its tokens per video item): its frame search, size,
    the limit's overrides, and the processor's count of it."""
    profile = profile_of(GLM4V)
    answer = answers[_key("glm4v_dummy", seq_len, images, kwargs, overrides)]
    o = overrides or {}
    assert not answer["do_sample_frames"]
    assert mm.glm4v_profile_frames(profile, seq_len, kwargs, images) == answer["profile_frames"]
    size = mm.glm4v_dummy_video(profile, seq_len, kwargs, images, **o)
    assert size == (answer["width"], answer["height"], answer["frames"])
    cost = mm.glm4v_dummy_video_cost(profile, seq_len, kwargs, images, **o)
    assert cost.tokens == answer["tokens"]
    if not o:
        assert mm.max_video_cost(profile, seq_len, kwargs, images).tokens == answer["tokens"]


@pytest.mark.parametrize("model", AUDIO_MODELS)
def test_audio_tokens_equal_the_processor(answers: dict[str, dict[str, Any]], model: str) -> None:
    profile = profile_of(model)
    pairs = []
    for s in AUDIO_SECONDS:
        answer = answers[_key("audio", model, s)]
        pairs.append((s, _mmop(mm.audio_cost, profile, s), _theirs(answer)))
        if "mel" in answer:
            pairs.append(
                (f"{s} s mel frames", mm.audio_cost(profile, s).encoder_patches, answer["mel"])
            )
    assert not _mismatches(pairs)


def test_phi3v_tokens_equal_vllms_embeddings_of_the_hd_grid(
    answers: dict[str, dict[str, Any]],
) -> None:
    """The HD transform that picks the crop grid is Phi-3.5-V's remote processor (not installed;
    tests/unit pins it); the embeddings of every grid of ≤ 16 crops are vLLM's."""
    profile = load_profile(PHI3V)
    pairs = []
    for rows in range(1, 17):
        for cols in range(1, 17 // rows + 1):
            crops = rows * cols
            cost = mm.image_cost(profile, cols * 336, rows * 336, {"num_crops": crops})
            w, h = mm.phi3v_hd_size(cols * 336, rows * 336, crops)
            assert (w, h) == (cols * 336, rows * 336)
            pairs.append(((rows, cols), cost.tokens, answers[_key("hd", rows, cols)]["tokens"]))
    assert not _mismatches(pairs)


@pytest.mark.parametrize(("model", "kwargs", "W", "H"), WORST_IMAGE)
def test_worst_image_covers_every_asked_size_and_is_reached(
    answers: dict[str, dict[str, Any]], model: str, kwargs: dict[str, Any], W: int, H: int
) -> None:
    profile = profile_of(model)
    worst = mm.worst_image_cost(profile, W, H, kwargs)
    w, h = mm.worst_image_size(profile, W, H, kwargs)
    assert answers[_key("image", model, kwargs, w, h)]["tokens"] == worst.tokens  # reached
    inside = [
        _theirs(answers[k])
        for k, req in REQUESTS.items()
        if req["op"] == "image" and req["model"] == model and req["kwargs"] == kwargs
        and req["width"] <= W and req["height"] <= H
    ]  # fmt: skip
    assert max(t for t in inside if isinstance(t, int)) <= worst.tokens


@pytest.mark.parametrize(("model", "kwargs", "W", "H", "T"), WORST_VIDEO)
def test_worst_video_covers_every_asked_video_and_is_reached(
    answers: dict[str, dict[str, Any]], model: str, kwargs: dict[str, Any], W: int, H: int, T: int
) -> None:
    profile = profile_of(model)
    worst = mm.worst_video_cost(profile, W, H, T, kwargs)
    w, h, t = mm.worst_video_size(profile, W, H, T, kwargs)
    assert answers[_key("video", model, kwargs, w, h, t)]["tokens"] == worst.tokens  # reached
    inside = [
        _theirs(answers[k])
        for k, req in REQUESTS.items()
        if req["op"] == "video" and req["model"] == model and req["kwargs"] == kwargs
        and req["width"] <= W and req["height"] <= H and req["frames"] <= T
    ]  # fmt: skip
    assert max(t for t in inside if isinstance(t, int)) <= worst.tokens


def test_every_catalog_family_is_checked() -> None:
    checked = {profile_of(m).family for m in [*IMAGE_MODELS, *AUDIO_MODELS, PHI3V]}
    catalog = set()
    for config in CATALOG_MODELS_DIR.glob("*/*/source.yaml"):
        profile = load_profile(f"{config.parent.parent.name}/{config.parent.name}")
        if profile.multimodal:
            catalog.add(profile.family)
    assert catalog <= checked, catalog - checked
