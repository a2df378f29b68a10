"""Tokens per multimodal item from each catalog family's own processor (runs in the engine venv).

Reads a JSON object on stdin: {"catalog": <operator/mmop/catalog/models>, "requests": [...]};
prints {"results": [...]} on stdout, one result per request, in order: {"tokens": int, ...} or
{"error": "<processor's message>"} where the processor refuses the item. Everything is built from
the catalog's config dicts, offline; nothing loads weights or a tokenizer. Requests:

- {"op": "image", "model", "width", "height", "kwargs", "run": bool}
- {"op": "video", "model", "width", "height", "frames", "kwargs", "run": bool}
- {"op": "audio", "model", "seconds"}
- {"op": "sample", "model", "total_frames", "fps"}: frames vLLM's video loader keeps
- {"op": "timestamps", "model", "total_frames", "fps"}: Qwen3-VL's per-group timestamp text
- {"op": "hd_features", "model", "rows", "cols"}: Phi-3.5-V embeddings for an HD crop grid
- {"op": "glm4v_dummy", "model", "seq_len", "images", "kwargs", "overrides"}: the video vLLM
  profiles GLM-4V with
- {"op": "glm4v_clip", "model", "total_frames", "fps", "num_frames"}: GLM-4V frames and timestamp
  text of a clip (num_frames: the loader's, 32 by default)

"run": also process a blank item of that size with the processor and report the count its
outputs give ("ran"), to show the counting function used is the one the processing applies.

Where each count comes from (transformers, vLLM and mistral_common as installed):

- qwen2_vl, qwen2_5_vl, qwen2_5_omni, qwen3_vl images: ``Qwen2VLImageProcessor`` from the
  preprocessor config, transformers' ``qwen2_vl.image_processing_qwen2_vl.smart_resize`` with the
  size vLLM resolves (``Qwen2VLProcessingInfo._get_vision_size``); run: ``image_grid_thw``.
- Qwen2-VL-family video: ``Qwen2VLVideoProcessor`` from the image config (transformers' fallback
  when there is no video_preprocessor_config.json), ``video_processing_qwen2_vl.smart_resize``
  per frame, frames padded to the temporal patch; run: ``video_grid_thw``.
- Qwen3-VL video: ``Qwen3VLVideoProcessor`` from video_preprocessor_config.json,
  ``get_num_of_video_patches``; run: ``video_grid_thw``. Frame sampling: vLLM's
  ``Qwen3VLVideoBackend`` / ``Qwen2VLVideoBackend.compute_frames_index_to_sample``; timestamps:
  ``Qwen3VLProcessingInfo._calculate_timestamps`` and the ``"<{t:.1f} seconds>"`` text of
  ``Qwen3VLMultiModalProcessor.get_video_repl``.
- llava: ``CLIPImageProcessor`` (run) and ``LlavaProcessor``'s count (patches, CLS, "default"
  feature selection); llava_next: ``LlavaNextProcessor._get_number_of_features``
  (``select_best_resolution``, unpadding, newlines); run: the processor's patch count.
- internvl (remote code): vLLM's ``transformers_utils.processors.internvl``
  (``calculate_internvl_targets``, ``get_internvl_target_ratios``, ``resolve_internvl_min_max_num``,
  ``InternVLImageProcessor`` / ``InternVLVideoProcessor`` for run).
- gemma3: ``Gemma3ImageProcessor`` (``num_crops`` of a processed image) × ``mm_tokens_per_image``.
- pixtral (Mistral format): mistral_common's ``ImageEncoder._image_to_num_tokens``;
  mistral3: vLLM's ``Mistral3HFEncoderInfo.get_patch_grid_size`` (and transformers'
  ``pixtral.image_processing_pixtral.get_resize_output_image_size`` as ``hf``).
- idefics3: ``Idefics3ImageProcessor.get_number_of_image_patches`` × the connector's sequence
  (vLLM's ``Idefics3ProcessingInfo.get_num_image_tokens``); run: the processor's patch count.
- minicpmv (remote code): vLLM's ``MiniCPMVProcessingInfo.get_num_image_tokens`` with the slicing
  rule of transformers' ``MiniCPMV4_6ImageProcessor.get_sliced_grid`` (MiniCPM-V 2.6's own image
  processor is remote code, not installed).
- phi3_v (remote code): the embeddings of an HD grid from vLLM's
  ``Phi3HDImageEmbedding.hd_feature_transform``; the HD transform that picks the grid is the
  checkpoint's remote processor, which no installed package has.
- audio: ``WhisperFeatureExtractor`` (attention mask of a 30-s window) and the encoder's
  ``_get_feat_extract_output_lengths`` (vLLM's ``qwen2_audio``; transformers'
  ``Qwen2_5OmniAudioEncoder`` for Omni); Qwen3-Omni: the whole clip (its processor's
  ``truncation=False``) and ``processing_qwen3_omni_moe._get_feat_extract_output_lengths``.
  Qwen3-Omni images: ``Qwen2VLImageProcessor`` with its defaults and the vision tower's patch
  (no published preprocessor_config.json of it is kept here). Models outside the catalog are
  read from ``families`` (bench/families) by id.
- glm4v images: ``Glm4vImageProcessor.get_number_of_image_patches`` from the preprocessor config
  (its own ``smart_resize``, an image as two frames); run: ``image_grid_thw``.
- glm4v video: ``Glm4vVideoProcessor.get_num_of_video_patches`` from
  video_preprocessor_config.json; run: ``video_grid_thw``. Profiled dummy: vLLM's
  ``Glm4vDummyInputsBuilder.get_dummy_mm_data`` on ``Glm4vProcessingInfo`` (a stand-in context
  gives it the config files and kwargs). Clips: vLLM's uniform ``VideoBackend`` loader, then
  ``Glm4vVideoProcessor.sample_frames`` where the loader kept every frame; timestamps:
  ``Glm4vProcessingInfo._get_video_second_idx_glm4v``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import types
import warnings
from functools import cache
from pathlib import Path
from typing import Any

CATALOG = Path()
# Published configs of models outside the catalog (bench/families), asked about by id too.
FAMILIES = Path()


def _json(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data: dict[str, Any] = json.load(f)
    return data


@cache
def model_files(model: str) -> dict[str, dict[str, Any]]:
    base = CATALOG / model
    if not (base / "config.json").is_file() and not (base / "params.json").is_file():
        base = FAMILIES / model
    out: dict[str, dict[str, Any]] = {}
    for name in ("config", "params", "preprocessor_config", "video_preprocessor_config"):
        if (base / f"{name}.json").is_file():
            out[name] = _json(base / f"{name}.json")
    return out


def family(model: str) -> str:
    files = model_files(model)
    if "params" in files:
        return "pixtral"
    cfg = files["config"]
    mt = str(cfg.get("model_type", ""))
    archs = " ".join(cfg.get("architectures") or [])
    if mt == "qwen3_omni_moe":
        return "qwen3_omni"
    if mt in {"glm4v", "glm4v_moe"}:
        return "glm4v"
    if mt == "qwen2_5_omni" or "Omni" in archs:
        return "qwen2_5_omni"
    if mt in {"qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"}:
        return "qwen3_vl"
    if mt in {"qwen2_vl", "qwen2_5_vl", "qwen2_audio", "llava", "llava_next", "gemma3"}:
        return mt
    if mt == "internvl_chat":
        return "internvl"
    if mt == "mistral3":
        return "mistral3"
    if mt == "idefics3":
        return "idefics3"
    if mt == "phi3_v" or "Phi3V" in archs:
        return "phi3_v"
    if mt == "minicpmv" or "MiniCPMV" in archs:
        return "minicpmv"
    raise ValueError(f"no processor for {model} ({mt})")


def _module(name: str) -> Any:
    """A module of the engine venv that mmop's own venv may lack (numpy, PIL, mistral_common)."""
    return importlib.import_module(name)


def blank_image(width: int, height: int) -> Any:
    return _module("PIL.Image").new("RGB", (width, height))


def blank_video(frames: int, width: int, height: int) -> Any:
    np = _module("numpy")
    return np.zeros((frames, height, width, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Qwen-VL


def qwen_size(kwargs: dict[str, Any], default: dict[str, int]) -> dict[str, int]:
    from vllm.model_executor.models.qwen2_vl import Qwen2VLProcessingInfo

    size: dict[str, int] = Qwen2VLProcessingInfo._get_vision_size(kwargs, default_size=default)
    return size


@cache
def qwen_image_processor(model: str) -> Any:
    from transformers import Qwen2VLImageProcessor

    files = model_files(model)
    if "preprocessor_config" not in files:
        # No published preprocessor_config.json is kept here (Qwen3-Omni, Qwen3.5): the
        # processor's defaults, with the patch the vision tower is built for (vLLM's own count
        # reads vision_config.patch_size; a processor on another patch would not fit the tower).
        vision = _vision_config(files["config"])
        return Qwen2VLImageProcessor(
            patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"]
        )
    return Qwen2VLImageProcessor.from_dict(files["preprocessor_config"])


def _vision_config(cfg: dict[str, Any]) -> dict[str, Any]:
    vision: dict[str, Any] = (cfg.get("thinker_config") or cfg)["vision_config"]
    return vision


@cache
def qwen2_video_processor(model: str) -> Any:
    from transformers import Qwen2VLVideoProcessor

    files = model_files(model)
    if family(model) == "qwen3_omni" and "preprocessor_config" not in files:
        # As for images; the size is Qwen3OmniMoeProcessor's own default for videos.
        from transformers.models.qwen3_omni_moe import processing_qwen3_omni_moe as omni3

        vision = files["config"]["thinker_config"]["vision_config"]
        size = omni3.Qwen3OmniMoeProcessorKwargs._defaults["videos_kwargs"]["size"]
        return Qwen2VLVideoProcessor(
            patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"], size=size
        )
    return Qwen2VLVideoProcessor.from_dict(files["preprocessor_config"])


@cache
def qwen3_video_processor(model: str) -> Any:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    files = model_files(model)
    if "video_preprocessor_config" not in files:  # as for images: the class's defaults
        vision = _vision_config(files["config"])
        return Qwen3VLVideoProcessor(
            patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"]
        )
    return Qwen3VLVideoProcessor.from_dict(files["video_preprocessor_config"])


def qwen_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    ip = qwen_image_processor(req["model"])
    size = qwen_size(req.get("kwargs") or {}, dict(ip.size))
    factor = ip.patch_size * ip.merge_size
    rh, rw = smart_resize(
        req["height"], req["width"], factor, size["shortest_edge"], size["longest_edge"]
    )
    out: dict[str, Any] = {
        "tokens": (rh // ip.patch_size) * (rw // ip.patch_size) // ip.merge_size**2
    }
    if req.get("run"):
        res = ip(images=[blank_image(req["width"], req["height"])], size=size, return_tensors="pt")
        out["ran"] = int(res["image_grid_thw"][0].prod()) // ip.merge_size**2
    return out


def glm4v_image(req: dict[str, Any]) -> dict[str, Any]:
    """transformers' Glm4vImageProcessor.get_number_of_image_patches (its own resize) with the
    size vLLM resolves; run: image_grid_thw of a processed blank image."""
    from transformers import Glm4vImageProcessor

    # a family copy without its preprocessor config: the processor's defaults, as mmop reads it
    ip = Glm4vImageProcessor.from_dict(model_files(req["model"]).get("preprocessor_config", {}))
    size = qwen_size(req.get("kwargs") or {}, dict(ip.size))
    patches = ip.get_number_of_image_patches(req["height"], req["width"], {"size": size})
    out: dict[str, Any] = {"tokens": patches // ip.merge_size**2}
    if req.get("run"):
        res = ip(images=[blank_image(req["width"], req["height"])], size=size, return_tensors="pt")
        out["ran"] = int(res["image_grid_thw"][0].prod()) // ip.merge_size**2
    return out


@cache
def glm4v_video_processor(model: str) -> Any:
    from transformers import Glm4vVideoProcessor

    return Glm4vVideoProcessor.from_dict(model_files(model)["video_preprocessor_config"])


def glm4v_video_size(model: str, kwargs: dict[str, Any]) -> dict[str, int]:
    """The size Glm4vVideoProcessor resizes with: its config's, updated by the kwargs' ``size``
    (vLLM passes --mm-processor-kwargs to the processor as they are)."""
    size = dict(glm4v_video_processor(model).size)
    size.update(kwargs.get("size") or {})
    return size


def glm4v_video(req: dict[str, Any]) -> dict[str, Any]:
    """transformers' Glm4vVideoProcessor.get_num_of_video_patches (its smart_resize of all frames
    together, frames padded to the temporal patch); run: video_grid_thw of a blank video processed
    unsampled (as vLLM's loader hands over a clip it sampled itself)."""
    vp = glm4v_video_processor(req["model"])
    w, h, t = req["width"], req["height"], req["frames"]
    size = glm4v_video_size(req["model"], req.get("kwargs") or {})
    patches = vp.get_num_of_video_patches(t, h, w, {"size": size})
    out: dict[str, Any] = {"tokens": patches // vp.merge_size**2}
    if req.get("run"):
        res = vp(
            videos=[blank_video(t, w, h)], size=size, do_sample_frames=False, return_tensors="pt"
        )
        out["ran"] = int(res["video_grid_thw"][0].prod()) // vp.merge_size**2
    return out


class _Shape:
    """A dummy video's shape without its pixels (vLLM's dummy of 600 frames of 2184x2184 would
    take gigabytes): what vLLM's dummy builders read of it."""

    def __init__(self, shape: tuple[int, ...], *_: Any, **__: Any) -> None:
        self.shape = shape

    def copy(self) -> _Shape:
        return self


def glm4v_info(model: str, kwargs: dict[str, Any]) -> Any:
    """vLLM's own Glm4vProcessingInfo, on a stand-in context that gives it the model's config,
    preprocessor configs (read by vLLM from the folder) and --mm-processor-kwargs."""
    from transformers import Glm4vConfig, Glm4vProcessor
    from vllm.model_executor.models.glm4_1v import Glm4vProcessingInfo

    base = CATALOG / model
    if not (base / "config.json").is_file():
        base = FAMILIES / model
    files = model_files(model)
    hf_config = Glm4vConfig(**files["config"])
    video_processor = glm4v_video_processor(model)

    class Info(Glm4vProcessingInfo):  # type: ignore[misc]
        def __init__(self) -> None:
            self.ctx = types.SimpleNamespace(
                model_config=types.SimpleNamespace(model=str(base), revision=None),
                get_merged_mm_kwargs=lambda _: dict(kwargs),
                get_hf_image_processor_config=lambda: files["preprocessor_config"],
            )

        def get_hf_config(self) -> Any:
            return hf_config

        def get_video_processor(self, **_: object) -> Any:
            return video_processor

        def get_hf_processor(self, **_: object) -> Any:
            return object.__new__(Glm4vProcessor)  # the processor class decides the rule

    return Info()


def glm4v_dummy(req: dict[str, Any]) -> dict[str, Any]:
    """The video vLLM 0.32.0 profiles GLM-4V with: Glm4vDummyInputsBuilder.get_dummy_mm_data
    (get_image_size_with_most_features, get_num_frames_with_most_features, the limit's video
    overrides), counted by Glm4vVideoProcessor.get_num_of_video_patches as the processor counts
    the unsampled dummy."""
    from vllm.config.multimodal import VideoDummyOptions
    from vllm.model_executor.models.glm4_1v import Glm4vDummyInputsBuilder
    from vllm.multimodal.processing import dummy_inputs

    kwargs = req.get("kwargs") or {}
    info = glm4v_info(req["model"], kwargs)
    counts = {"video": 1, "image": req["images"]}
    overrides = req.get("overrides")
    options = {"video": VideoDummyOptions(**overrides)} if overrides else {}
    np_real = dummy_inputs.np
    dummy_inputs.np = types.SimpleNamespace(full=_Shape, uint8=None)
    try:
        builder = Glm4vDummyInputsBuilder(info)
        data = builder.get_dummy_mm_data(req["seq_len"], counts, options)
    finally:
        dummy_inputs.np = np_real
    video, meta = data["video"][0]
    t, h, w, _ = video.shape
    vp = glm4v_video_processor(req["model"])
    size = glm4v_video_size(req["model"], kwargs)
    patches = vp.get_num_of_video_patches(t, h, w, {"size": size})
    return {
        "frames": t,
        "width": w,
        "height": h,
        "tokens": patches // vp.merge_size**2,
        "do_sample_frames": meta["do_sample_frames"],
        "profile_frames": info.get_num_frames_with_most_features(req["seq_len"], counts),
    }


def glm4v_clip(req: dict[str, Any]) -> dict[str, Any]:
    """A clip of total_frames at fps through vLLM's uniform loader (num_frames, 32 by default) and
    Glm4vVideoProcessor's own sampling where the loader kept every frame: the frames that reach
    the resize, and the text vLLM writes around them (Glm4vProcessingInfo's
    _get_video_second_idx_glm4v timestamps as ``"{}"``, a begin and end of image per group, a
    begin and end of video), in characters."""
    from transformers.video_utils import VideoMetadata
    from vllm.multimodal.video import VideoBackend
    from vllm.multimodal.video_decoders.base import VideoSourceMetadata, VideoTargetMetadata

    total, fps = req["total_frames"], req["fps"]
    source = VideoSourceMetadata(total, fps, total / fps)
    target = VideoTargetMetadata(num_frames=req.get("num_frames", 32), fps=-1, max_duration=300)
    idx = VideoBackend.compute_frames_index_to_sample(source, target)
    meta = VideoBackend.create_hf_metadata(source, idx, "opencv")
    vp = glm4v_video_processor(req["model"])
    if meta["do_sample_frames"]:
        hf_meta = VideoMetadata(
            total_num_frames=total, fps=fps, duration=total / fps, frames_indices=idx
        )
        frames = len(vp.sample_frames(hf_meta))
    else:
        frames = len(idx)
    stamps = glm4v_info(req["model"], {})._get_video_second_idx_glm4v(meta, len(idx))
    text = ["{}".format(t) for t in stamps]  # noqa: UP032 - vLLM's own format
    return {
        "frames": frames,
        "groups": len(text),
        "chars": 2 + sum(len(x.encode()) + 2 for x in text),
    }


def qwen_video(req: dict[str, Any]) -> dict[str, Any]:
    fam = family(req["model"])
    w, h, t = req["width"], req["height"], req["frames"]
    kwargs = req.get("kwargs") or {}
    out: dict[str, Any] = {}
    if fam == "qwen3_vl":
        vp = qwen3_video_processor(req["model"])
        size = qwen_size(kwargs, dict(vp.size))
        patches = vp.get_num_of_video_patches(t, h, w, {"size": size})
        out["tokens"] = patches // vp.merge_size**2
    else:
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

        vp = qwen2_video_processor(req["model"])
        size = qwen_size(kwargs, dict(vp.size))
        factor = vp.patch_size * vp.merge_size
        rh, rw = smart_resize(h, w, factor, size["shortest_edge"], size["longest_edge"])
        grid_t = -(-t // vp.temporal_patch_size)
        out["tokens"] = grid_t * (rh // vp.patch_size) * (rw // vp.patch_size) // vp.merge_size**2
    if req.get("run"):
        res = vp(
            videos=[blank_video(t, w, h)], size=size, do_sample_frames=False, return_tensors="pt"
        )
        out["ran"] = int(res["video_grid_thw"][0].prod()) // vp.merge_size**2
    return out


def sample(req: dict[str, Any]) -> dict[str, Any]:
    from vllm.multimodal.video import Qwen2VLVideoBackend, Qwen3VLVideoBackend
    from vllm.multimodal.video_decoders.base import VideoSourceMetadata, VideoTargetMetadata

    total, fps = req["total_frames"], req["fps"]
    source = VideoSourceMetadata(total, fps, total / fps)
    target = VideoTargetMetadata(num_frames=-1, fps=2, max_duration=300)
    if family(req["model"]) == "qwen3_vl":
        idx = Qwen3VLVideoBackend.compute_frames_index_to_sample(source, target)
    else:
        idx = Qwen2VLVideoBackend.compute_frames_index_to_sample(source, target)
    return {"frames": len(idx), "indices": list(idx)}


def timestamps(req: dict[str, Any]) -> dict[str, Any]:
    from vllm.model_executor.models.qwen3_vl import Qwen3VLProcessingInfo

    indices = sample(req)["indices"]
    stamps = Qwen3VLProcessingInfo._calculate_timestamps(None, indices, req["fps"], 2)
    text = [f"<{t:.1f} seconds>" for t in stamps]
    # per group: the timestamp text, a vision start and a vision end token
    return {
        "groups": len(text),
        "chars": sum(len(s.encode()) + 2 for s in text),
        "frames": len(indices),
    }


# ----------------------------------------------------------------------------------------------
# LLaVA, LLaVA-NeXT


def llava_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import CLIPImageProcessor
    from transformers.models.llava.processing_llava import LlavaProcessor

    files = model_files(req["model"])
    cfg = files["config"]
    vision = cfg.get("vision_config") or {}
    side = int(vision.get("image_size", 336))
    pre = files.get("preprocessor_config") or {
        "crop_size": {"height": side, "width": side},
        "size": {"shortest_edge": side},
    }
    ip = CLIPImageProcessor.from_dict(pre)
    res = ip(images=[blank_image(req["width"], req["height"])], return_tensors="pt")
    stub = types.SimpleNamespace(
        patch_size=int(vision.get("patch_size", 14)),
        num_additional_image_tokens=1,  # CLIP's class token
        vision_feature_select_strategy=cfg.get("vision_feature_select_strategy", "default"),
        image_token="<image>",
    )
    text = LlavaProcessor.replace_image_token(stub, {"pixel_values": res["pixel_values"]}, 0)
    return {"tokens": len(text) // len("<image>")}


def llava_next_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import LlavaNextImageProcessor
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    files = model_files(req["model"])
    cfg = files["config"]
    ip = LlavaNextImageProcessor.from_dict(files["preprocessor_config"])
    crop = ip.crop_size["height"]
    stub = types.SimpleNamespace(
        image_processor=ip,
        patch_size=int((cfg.get("vision_config") or {}).get("patch_size", 14)),
        num_additional_image_tokens=1,  # CLIP's class token
    )
    stub._get_unpadded_features = lambda *a: LlavaNextProcessor._get_unpadded_features(stub, *a)
    n = LlavaNextProcessor._get_number_of_features(stub, req["height"], req["width"], crop, crop)
    if cfg.get("vision_feature_select_strategy", "default") == "default":
        n -= 1
    out: dict[str, Any] = {"tokens": n}
    if req.get("run"):
        res = ip(images=[blank_image(req["width"], req["height"])], return_tensors="pt")
        out["patches"] = int(res["pixel_values"].shape[1])  # the grid's crops and the base image
    return out


# ----------------------------------------------------------------------------------------------
# InternVL (vLLM's own processor)


def internvl_params(model: str, kwargs: dict[str, Any]) -> tuple[int, int, int, bool, bool, int]:
    cfg = model_files(model)["config"]
    vision = cfg.get("vision_config") or {}
    image_size = int(cfg.get("force_image_size") or vision.get("image_size", 448))
    patch = int(vision.get("patch_size", 14))
    seq = int((image_size // patch) ** 2 * (cfg.get("downsample_ratio", 0.5) ** 2))
    merged = {
        "min_dynamic_patch": cfg.get("min_dynamic_patch", 1),
        "max_dynamic_patch": cfg.get("max_dynamic_patch", 12),
        "dynamic_image_size": cfg.get("dynamic_image_size", True),
        "use_thumbnail": cfg.get("use_thumbnail", True),
        **kwargs,
    }
    return (
        image_size,
        int(merged["min_dynamic_patch"]),
        int(merged["max_dynamic_patch"]),
        bool(merged["dynamic_image_size"]),
        bool(merged["use_thumbnail"]),
        seq,
    )


def internvl_image(req: dict[str, Any]) -> dict[str, Any]:
    from vllm.transformers_utils.processors.internvl import (
        InternVLImageProcessor,
        calculate_internvl_targets,
        get_internvl_target_ratios,
        resolve_internvl_min_max_num,
    )

    size, lo, hi, dynamic, thumb, seq = internvl_params(req["model"], req.get("kwargs") or {})
    # InternVLProcessor.get_num_image_tokens
    min_num, max_num = resolve_internvl_min_max_num(
        min_dynamic_patch=lo, max_dynamic_patch=hi, dynamic_image_size=dynamic, use_thumbnail=False
    )
    blocks, _, _ = calculate_internvl_targets(
        orig_width=req["width"],
        orig_height=req["height"],
        target_ratios=get_internvl_target_ratios(min_num, max_num),
        image_size=size,
        use_thumbnail=thumb,
    )
    out: dict[str, Any] = {"tokens": blocks * seq}
    if req.get("run"):
        ip = InternVLImageProcessor(size, lo, hi, dynamic, thumb)
        res = ip(images=[blank_image(req["width"], req["height"])], return_tensors="pt")
        out["ran"] = int(res["image_num_patches"][0]) * seq
    return out


def internvl_video(req: dict[str, Any]) -> dict[str, Any]:
    from vllm.transformers_utils.processors.internvl import InternVLVideoProcessor

    size, _, _, _, _, seq = internvl_params(req["model"], req.get("kwargs") or {})
    vp = InternVLVideoProcessor(size)
    res = vp(videos=[blank_video(req["frames"], req["width"], req["height"])], return_tensors="pt")
    return {"tokens": int(res["video_num_patches"][0]) * seq}


# ----------------------------------------------------------------------------------------------
# Gemma 3, Pixtral / Mistral 3, Idefics3


def gemma3_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import Gemma3ImageProcessor
    from transformers.models.gemma3.processing_gemma3 import Gemma3ProcessorKwargs

    files = model_files(req["model"])
    ip = Gemma3ImageProcessor.from_dict(files["preprocessor_config"])
    # Gemma3Processor's image defaults (pan and scan off, 4 crops of 256 px from a 1.2 ratio),
    # then the request's kwargs
    kwargs = {**Gemma3ProcessorKwargs._defaults["images_kwargs"], **(req.get("kwargs") or {})}
    res = ip(images=[blank_image(req["width"], req["height"])], **kwargs)
    per_image = int(files["config"].get("mm_tokens_per_image", 256))
    return {"tokens": (int(res["num_crops"][0]) + 1) * per_image}


def pixtral_image(req: dict[str, Any]) -> dict[str, Any]:
    image = _module("mistral_common.tokens.tokenizers.image")
    vision = model_files(req["model"])["params"]["vision_encoder"]
    encoder = image.ImageEncoder(
        image.ImageConfig(
            image_patch_size=int(vision["patch_size"]),
            max_image_size=int(vision["image_size"]),
            spatial_merge_size=int(vision.get("spatial_merge_size", 1)),
        ),
        image.SpecialImageIDs(img=int(vision.get("image_token_id", 10)), img_break=12, img_end=13),
    )
    w_tokens, h_tokens = encoder._image_to_num_tokens(blank_image(req["width"], req["height"]))
    return {"tokens": h_tokens * (w_tokens + 1)}  # one break (the last: end) per row


def mistral3_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import Mistral3Config
    from transformers.models.pixtral.image_processing_pixtral import get_resize_output_image_size
    from vllm.model_executor.models.mistral3 import Mistral3HFEncoderInfo

    cfg = model_files(req["model"])["config"]
    hf_config = Mistral3Config(**cfg)
    longest = int(cfg["vision_config"]["image_size"])
    ncols, nrows = Mistral3HFEncoderInfo(hf_config, longest).get_patch_grid_size(
        image_width=req["width"], image_height=req["height"]
    )
    # transformers' PixtralProcessor resizes to whole merged patches (patch × spatial merge)
    unit = int(cfg["vision_config"]["patch_size"]) * int(cfg.get("spatial_merge_size", 1))
    np = _module("numpy")
    shape = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (req["height"], req["width"], 3))
    h, w = get_resize_output_image_size(
        shape, (longest, longest), (unit, unit), input_data_format="channels_last"
    )
    return {"tokens": nrows * (ncols + 1), "hf": (h // unit) * (w // unit + 1)}


def idefics3_image(req: dict[str, Any]) -> dict[str, Any]:
    from transformers import Idefics3ImageProcessor

    files = model_files(req["model"])
    vision = files["config"]["vision_config"]
    ip = Idefics3ImageProcessor.from_dict(files["preprocessor_config"])
    kwargs = req.get("kwargs") or {}
    patches, _, _ = ip.get_number_of_image_patches(req["height"], req["width"], kwargs)
    scale = int(files["config"].get("scale_factor", 3))
    seq = int(((vision["image_size"] // vision["patch_size"]) ** 2) / (scale**2))
    out: dict[str, Any] = {"tokens": max(patches, 1) * seq}
    if req.get("run"):
        res = ip(images=[[blank_image(req["width"], req["height"])]], return_tensors="pt", **kwargs)
        out["ran"] = int(res["pixel_values"].shape[1]) * seq
    return out


# ----------------------------------------------------------------------------------------------
# MiniCPM-V, Phi-3.5-V (remote code: vLLM's side of the count)


def minicpmv_image(req: dict[str, Any], frames: int = 1) -> dict[str, Any]:
    from transformers.models.minicpmv4_6.image_processing_minicpmv4_6 import (
        MiniCPMV4_6ImageProcessor,
    )
    from vllm.model_executor.models.minicpmv import MiniCPMVProcessingInfo
    from vllm.multimodal.parse import ImageSize

    pre = model_files(req["model"])["preprocessor_config"]
    scale = int(pre.get("scale_resolution", 448))

    class SlicingRule:  # the checkpoint's image processor, as far as the count is concerned
        image_feature_size = int(pre.get("image_feature_size", 64))
        max_slice_nums = int(pre.get("max_slice_nums", 9))

        def get_sliced_grid(self, image_size: Any, max_slice_nums: int) -> Any:
            grid = MiniCPMV4_6ImageProcessor.get_sliced_grid(
                None,
                (image_size.height, image_size.width),
                max_slice_nums,
                scale,
            )
            return None if grid is None else (grid[1], grid[0])

    rule = SlicingRule()
    info = types.SimpleNamespace(get_image_processor=lambda: rule, get_model_version=lambda: (2, 6))
    info.get_sliced_grid = lambda size, max_slice_nums=None: MiniCPMVProcessingInfo.get_sliced_grid(
        info,
        size,
        max_slice_nums,
    )
    kwargs = req.get("kwargs") or {}
    slices = 1 if frames > 1 or req["op"] == "video" else kwargs.get("max_slice_nums")
    n = MiniCPMVProcessingInfo.get_num_image_tokens(
        info,
        ImageSize(width=req["width"], height=req["height"]),
        max_slice_nums=slices,
    )
    return {"tokens": n * frames}


def phi3v_features(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from vllm.model_executor.models.phi3v import Phi3HDImageEmbedding

    rows, cols = req["rows"], req["cols"]
    stub = types.SimpleNamespace(
        hd_transform_order="sub_glb",
        img_projection=torch.nn.Sequential(torch.nn.Linear(4096, 1)),
        glb_GN=torch.zeros(1, 1, 4096),
        sub_GN=torch.zeros(1, 1, 1, 4096),
    )
    stub.reshape_hd_patches_2x2merge = lambda *a: Phi3HDImageEmbedding.reshape_hd_patches_2x2merge(
        stub,
        *a,
    )
    stub.add_image_newline = lambda x: Phi3HDImageEmbedding.add_image_newline(stub, x)
    features = torch.zeros(1, 1 + rows * cols, 576, 1024)
    with torch.no_grad():
        out = Phi3HDImageEmbedding.hd_feature_transform(
            stub,
            features,
            torch.tensor([[rows * 336, cols * 336]]),
        )
    return {"tokens": int(out[0].shape[0])}


# ----------------------------------------------------------------------------------------------
# Audio


def _mel_frames(fe: Any, seconds: float, *, whole: bool) -> Any:
    """The feature extractor's attention mask over a silent clip: padded to its 30-s window and
    truncated (Qwen2-Audio, Qwen2.5-Omni), or the whole clip (``whole``: Qwen3-Omni)."""
    np = _module("numpy")
    samples = max(1, round(seconds * fe.sampling_rate))
    feats = fe(
        np.zeros(samples, dtype=np.float32),
        sampling_rate=fe.sampling_rate,
        return_attention_mask=True,
        padding=True if whole else "max_length",
        truncation=not whole,
        return_tensors="pt",
    )
    return feats["attention_mask"].sum(-1)


def audio(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import WhisperFeatureExtractor

    if family(req["model"]) == "qwen3_omni":
        # Qwen3OmniMoeProcessor's audio kwargs: the whole clip (padding, no truncation), then
        # transformers' own length rule of that processor.
        from transformers.models.qwen3_omni_moe import processing_qwen3_omni_moe as omni3

        files = model_files(req["model"])
        mels = files["config"]["thinker_config"]["audio_config"]["num_mel_bins"]
        pre = files.get("preprocessor_config") or {"feature_size": mels}
        mel = _mel_frames(WhisperFeatureExtractor.from_dict(pre), req["seconds"], whole=True)
        tokens = omni3._get_feat_extract_output_lengths(mel)
        return {"tokens": int(torch.as_tensor(tokens).reshape(-1)[0]), "mel": int(mel[0])}
    pre = model_files(req["model"])["preprocessor_config"]
    mel = _mel_frames(WhisperFeatureExtractor.from_dict(pre), req["seconds"], whole=False)
    if family(req["model"]) == "qwen2_5_omni":
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

        _, tokens = Qwen2_5OmniAudioEncoder._get_feat_extract_output_lengths(None, mel)
    else:
        from vllm.model_executor.models.qwen2_audio import _get_feat_extract_output_lengths

        _, tokens = _get_feat_extract_output_lengths(mel)
    return {"tokens": int(torch.as_tensor(tokens).reshape(-1)[0]), "mel": int(mel[0])}


# ----------------------------------------------------------------------------------------------


def handle(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "audio":
        return audio(req)
    if op == "sample":
        return sample(req)
    if op == "timestamps":
        return timestamps(req)
    if op == "hd_features":
        return phi3v_features(req)
    if op == "glm4v_dummy":
        return glm4v_dummy(req)
    if op == "glm4v_clip":
        return glm4v_clip(req)
    fam = family(req["model"])
    if op == "video":
        if fam == "glm4v":
            return glm4v_video(req)
        if fam in {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2_5_omni", "qwen3_omni"}:
            return qwen_video(req)
        if fam == "internvl":
            return internvl_video(req)
        if fam == "minicpmv":
            return minicpmv_image(req, frames=req["frames"])
        raise ValueError(f"{fam} takes no video")
    images = {
        "qwen2_vl": qwen_image,
        "qwen2_5_vl": qwen_image,
        "qwen2_5_omni": qwen_image,
        "qwen3_omni": qwen_image,
        "glm4v": glm4v_image,
        "qwen3_vl": qwen_image,
        "llava": llava_image,
        "llava_next": llava_next_image,
        "internvl": internvl_image,
        "gemma3": gemma3_image,
        "pixtral": pixtral_image,
        "mistral3": mistral3_image,
        "idefics3": idefics3_image,
        "minicpmv": minicpmv_image,
    }
    return images[fam](req)


def main() -> int:
    global CATALOG, FAMILIES
    payload = json.load(sys.stdin)
    CATALOG = Path(payload["catalog"])
    FAMILIES = Path(payload.get("families") or CATALOG)
    results: list[dict[str, Any]] = []
    noise = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
        warnings.simplefilter("ignore")
        for req in payload["requests"]:
            try:
                results.append(handle(req))
            except (ValueError, RuntimeError) as exc:  # the processor refuses the item
                results.append({"error": str(exc) or type(exc).__name__})
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
