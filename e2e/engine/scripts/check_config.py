"""Check planned vLLM argv with the pinned vLLM's own configuration code, as it would run on a CUDA
GPU of a given compute capability (runs in the engine venv: vLLM's CPU build). The argv is the one
mmop renders for a plan (``mmop.render.vllm_args``); the caller passes it in, as this script runs
where mmop is not installed.

Reads a JSON object ``{name: case}`` on stdin, where a case is
``{"argv": [...], "compute_capability": "8.9", "gpu": "L4"}`` and ``argv[0]`` is a model
directory (the catalog's: config.json and preprocessor configs, no tokenizer, no weights; run with
``HF_HUB_OFFLINE=1``). Prints ``{name: verdict}`` on stdout; what a verdict holds is listed in
:func:`check`. Nothing loads weights, builds a model or touches a GPU.

What vLLM's own code is made to run, in the order ``vllm serve`` runs it:

1. the ``vllm serve`` parser and pre-load checks (as check_args.py does);
2. ``EngineArgs.create_model_config()``: the HF config (remote code refused without
   ``--trust-remote-code``), architecture resolution, dtype resolution (``_get_and_verify_dtype``),
   max_model_len, quantization verification (``_verify_quantization``) and the multimodal config;
3. ``EngineArgs.create_engine_config()``: cache, scheduler and parallel configs, and
   ``VllmConfig._get_quantization_config`` (the quantization's minimum compute capability, its
   activation dtypes, and ``get_quant_config``: "Cannot find the config file for awq");
4. the GPU worker's dtype check (``current_platform.check_if_supports_dtype``,
   vllm/v1/worker/gpu_worker.py), which refuses bfloat16 below compute capability 8.0;
5. the attention-backend selection of the CUDA platform (``CudaPlatformBase.get_valid_backends``:
   every backend's ``validate_configuration`` in priority order) for the model's head size, dtype,
   KV-cache dtype, sliding window and multimodal prefix, and, when the Triton backend is the one
   selected, the constructor of ``TritonAttentionImpl`` (its FP8-KV and bfloat16-KV refusals);
6. the model's processing info (``get_supported_mm_limits``) for the modalities
   ``--limit-mm-per-prompt`` names, and the image/video processors' accepted kwargs
   (``valid_kwargs``, as ``BaseProcessingInfo.get_supported_mm_processor_kwargs`` collects them)
   for the keys of ``--mm-processor-kwargs``.

How a CUDA device of a given compute capability is emulated on the CPU build (the smallest change
that lets vLLM's own code answer; every rule that decides is vLLM's):

* vLLM binds one platform object (``vllm.platforms.current_platform``) into every module at import.
  The script imports what it needs under the native platform (CpuPlatform), so module-level
  constants that call compiled CUDA ops (e.g. ``w8a8_utils.CUTLASS_BLOCK_FP8_SUPPORTED``) are
  computed the CPU way and never call a missing op. Then, per case, it sets that object's class to
  a subclass of vLLM's ``CudaPlatformBase`` (vllm/platforms/cuda.py) that overrides only what NVML
  would answer: ``get_device_capability`` (the case's capability), ``get_device_name``,
  ``get_device_total_memory`` and ``is_fully_connected``. ``supported_dtypes``,
  ``check_if_supports_dtype``, ``supports_fp8``, ``verify_quantization`` and the attention-backend
  selection are vLLM's code, unchanged.
* ``vllm/platforms/cuda.py`` imports ``vllm._C_stable_libtorch`` (the CUDA build's custom-op
  library, imported for its op registrations); the CPU wheel has no such file, so an empty module
  stands in for it. No op of it is called by the configuration code.
* The CUDA wheel ships FlashAttention's extensions ``vllm/vllm_flash_attn/_vllm_fa2_C`` and
  ``_vllm_fa3_C``; empty modules stand in for them so that ``flash_attn_interface.FA2_AVAILABLE``
  and ``FA3_AVAILABLE`` are true as in that wheel and vLLM's own predicates
  (``_is_fa2_supported``: capability >= 8.0, ``_is_fa3_supported``: 9.x) decide. FA4 (the
  ``vllm_flash_attn/cute`` sources) is absent from the CPU wheel and stays unavailable.
* vLLM retries a failed config read after a pause (``repo_utils.with_retry``, for a Hub cache
  being refreshed); reading a local directory offline, the pause is set to 0.
* FlashInfer (``flashinfer-python``, a dependency of the CUDA build only) is not installed;
  placeholder ``flashinfer`` modules let vllm/v1/attention/backends/flashinfer.py import so that
  its class-level selection predicates (compute capability 8.0-12.1, dtypes, KV-cache dtypes, head
  sizes) run. Nothing in flashinfer is called.

What stays unchecked here (covered by mmop/capabilities.py's table, read from the same source):
kernel selection at model construction (e.g. FP8 Marlin vs CUTLASS), FA4, the CUDA-graph and
memory profile, the HF processor's text kwargs (the processor needs a tokenizer), and any remote
code (the catalog has no ``*.py``: with ``--trust-remote-code`` the config class cannot be loaded
offline, which is reported as ``remote_code`` with transformers' message).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import io
import json
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

STAND_INS = (
    "vllm._C_stable_libtorch",
    "vllm.vllm_flash_attn._vllm_fa2_C",
    "vllm.vllm_flash_attn._vllm_fa3_C",
)
FLASHINFER_MODULES = ("flashinfer", "flashinfer.decode", "flashinfer.prefill", "flashinfer.utils")
REMOTE_CODE_MARK = "trust_remote_code=True"
_REMOTE_FAILURES: dict[tuple[str, bool], Exception] = {}


class _Placeholder:
    """Any name imported from the placeholder flashinfer modules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("flashinfer is not installed in the CPU build")


def _placeholder_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []

    def getattr_(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder

    module.__getattr__ = getattr_  # type: ignore[method-assign]
    return module


class Emulator:
    """The platform object every vLLM module holds, and the classes it is switched between."""

    def __init__(self) -> None:
        for name in STAND_INS:
            sys.modules.setdefault(name, types.ModuleType(name))
        for name in FLASHINFER_MODULES:
            sys.modules.setdefault(name, _placeholder_module(name))
        import vllm.platforms

        self.platform = vllm.platforms.current_platform
        self.native = type(self.platform)
        # Modules whose import runs compiled CUDA ops when the platform is CUDA: import natively.
        import vllm.model_executor.layers.quantization as quant
        import vllm.model_executor.model_loader.weight_utils
        import vllm.v1.attention.backends.flash_attn
        import vllm.v1.attention.backends.flashinfer
        import vllm.v1.attention.backends.flex_attention
        import vllm.v1.attention.backends.triton_attn
        from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: F401
        from vllm.multimodal import MULTIMODAL_REGISTRY  # noqa: F401

        for method in ("awq", "awq_marlin", "gptq", "gptq_marlin", "fp8", "compressed-tensors"):
            quant.get_quantization_config(method)
        # Config reads are retried after a 2 s pause (for a Hub cache being refreshed); over a
        # local directory offline a retry gives the same answer: no pause.
        from vllm.transformers_utils import repo_utils

        retries, _, fatal = repo_utils.with_retry.__defaults__ or (2, 2, ())
        repo_utils.with_retry.__defaults__ = (retries, 0, fatal)
        from vllm.platforms.cuda import CudaPlatformBase

        self.cuda_base = CudaPlatformBase
        self.classes: dict[tuple[int, int, str, int], type] = {}

    def cuda(self, major: int, minor: int, name: str, count: int = 8) -> None:
        """Make vLLM see `count` CUDA GPUs of capability major.minor on this node."""
        key = (major, minor, name, count)
        if key not in self.classes:
            from vllm.platforms.interface import DeviceCapability

            capability = DeviceCapability(major=major, minor=minor)

            class EmulatedCudaPlatform(self.cuda_base):  # type: ignore[name-defined,misc]
                @classmethod
                def get_device_capability(cls, device_id: int = 0) -> Any:
                    return capability

                @classmethod
                def get_device_name(cls, device_id: int = 0) -> str:
                    return name

                @classmethod
                def get_device_total_memory(cls, device_id: int = 0) -> int:
                    return 80 * 1024**3

                @classmethod
                def is_fully_connected(cls, physical_device_ids: list[int]) -> bool:
                    return True

                @classmethod
                def device_count(cls) -> int:
                    return count

            self.classes[key] = EmulatedCudaPlatform
        self.platform.__class__ = self.classes[key]

    def restore(self) -> None:
        self.platform.__class__ = self.native


def _error(exc: BaseException) -> str:
    text = str(exc)
    if "validation error" in text and "Value error, " in text:
        text = text.split("Value error, ", 1)[1].split(" [type=value_error", 1)[0]
    return f"{type(exc).__name__}: {' '.join(text.split())}"


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


_PARSER: list[Any] = []


def _parse(argv: list[str]) -> Any:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if not _PARSER:
        _PARSER.append(make_arg_parser(FlexibleArgumentParser(prog="vllm serve")))
    parser = _PARSER[0]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise ValueError(lines[-1] if lines else "the parser exited") from None
    validate_parsed_serve_args(ns)
    if ns.model_tag:
        ns.model = ns.model_tag
    return AsyncEngineArgs.from_cli_args(ns)


def _model_class(emulator: Emulator, model_config: Any) -> Any:
    """The model class vLLM registers for the config's architecture, imported natively."""
    from vllm.model_executor.models.registry import ModelRegistry

    emulator.restore()  # model modules run CUDA-only code at import under a CUDA platform
    for arch in model_config.architectures or []:
        registered = ModelRegistry.models.get(arch)
        if registered is not None:
            return registered.load_model_cls()
    return None


def _processor_kwargs(model_dir: str, modalities: list[str]) -> tuple[set[str] | None, str]:
    """Keys the image/video processors accept (their valid_kwargs), or None with why not."""
    from transformers import AutoImageProcessor

    accepted: set[str] = set()
    notes: list[str] = []
    if "image" in modalities:
        try:
            proc = AutoImageProcessor.from_pretrained(model_dir)
            accepted |= set(proc.valid_kwargs.__annotations__)
        except Exception as exc:
            return None, f"image processor not loadable offline: {_error(exc)}"
    if "video" in modalities:
        try:
            from transformers import AutoVideoProcessor

            vproc = AutoVideoProcessor.from_pretrained(model_dir)
            accepted |= set(vproc.valid_kwargs.__annotations__)
        except Exception as exc:
            notes.append(f"video processor not loadable offline: {_error(exc)}")
    return accepted, "; ".join(notes)


def _multimodal(
    emulator: Emulator, engine_args: Any, model_config: Any, model_dir: str
) -> dict[str, Any]:
    from vllm.multimodal.processing.context import InputProcessingContext

    out: dict[str, Any] = {"supported": None, "unsupported_limits": [], "over_limits": {}}
    limits = dict(engine_args.limit_mm_per_prompt or {})
    kwargs = dict(engine_args.mm_processor_kwargs or {})
    model_cls = _model_class(emulator, model_config)
    factory = getattr(model_cls, "_processor_factory", None)
    if factory is None:
        out["note"] = "no multimodal processor registered"
        return out
    info = factory.info(InputProcessingContext(model_config, None))
    supported = dict(info.get_supported_mm_limits())
    out["supported"] = sorted(supported)
    for modality, limit in limits.items():
        count = limit if isinstance(limit, int) else int(dict(limit).get("count", 0))
        if modality not in supported and count:
            out["unsupported_limits"].append(modality)
        cap = supported.get(modality)
        if cap is not None and count > cap:
            out["over_limits"][modality] = {"planned": count, "supported": cap}
    used = [m for m in supported if m in ("image", "video")]
    if kwargs:
        # The image/video scopes of BaseProcessingInfo.get_supported_mm_processor_kwargs; its
        # text scope and model overrides (e.g. Qwen3-VL's video min/max_pixels) need the HF
        # processor, hence a tokenizer: they could only widen what is accepted.
        accepted, note = _processor_kwargs(model_dir, used)
        out["processor_kwargs_checked"] = accepted is not None
        out["processor_kwargs_unaccepted"] = (
            sorted(k for k in kwargs if k not in accepted) if accepted is not None else []
        )
        if note:
            out["note"] = note
    return out


def _attention(emulator: Emulator, vllm_config: Any, capability: Any) -> dict[str, Any]:
    """vLLM's attention-backend choice for the model's decoder layers, and its refusal if any."""
    from vllm.config import set_current_vllm_config
    from vllm.v1.attention.backends.registry import AttentionBackendEnum
    from vllm.v1.attention.selector import AttentionSelectorConfig

    mc = vllm_config.model_config
    cache_dtype = vllm_config.cache_config.cache_dtype
    windows = [False] + ([True] if mc.get_sliding_window() else [])
    result: dict[str, Any] = {"selected": [], "error": None, "reasons": {}}
    with set_current_vllm_config(vllm_config):
        for window in windows:
            cfg = AttentionSelectorConfig(
                head_size=mc.get_head_size(),
                dtype=mc.dtype,
                kv_cache_dtype=cache_dtype,
                block_size=None,
                use_mm_prefix=bool(getattr(mc, "is_mm_prefix_lm", False)),
                has_sliding_window=window,
            )
            valid, invalid = emulator.platform.get_valid_backends(
                device_capability=capability, attn_selector_config=cfg
            )
            for backend, (_, reasons) in invalid.items():
                result["reasons"][backend.name] = reasons
            if not valid:
                result["error"] = (
                    f"No valid attention backend found for cuda with {cfg!r}. Reasons: "
                    + json.dumps({b.name: r for b, (_, r) in invalid.items()})
                )
                return result
            chosen = min(valid, key=lambda c: c.priority)
            result["selected"].append(chosen.backend.name)
            if chosen.backend == AttentionBackendEnum.TRITON_ATTN:
                parallel = vllm_config.parallel_config
                try:
                    chosen.backend_class.get_impl_cls()(
                        num_heads=mc.get_num_attention_heads(parallel),
                        head_size=mc.get_head_size(),
                        scale=mc.get_head_size() ** -0.5,
                        num_kv_heads=mc.get_num_kv_heads(parallel),
                        alibi_slopes=None,
                        sliding_window=mc.get_sliding_window() if window else None,
                        kv_cache_dtype=cache_dtype,
                    )
                except Exception as exc:
                    result["error"] = _error(exc)
                    return result
    result["selected"] = sorted(set(result["selected"]))
    return result


def check(emulator: Emulator, case: dict[str, Any]) -> dict[str, Any]:
    """One case. The verdict: ok, stage (where vLLM refused: parse, model_config, engine_config,
    worker, attention, multimodal), error (vLLM's message), dtype, max_model_len, quantization,
    kv_cache_dtype, trust_remote_code_required, remote_code (offline failure with the flag),
    attention (backends), multimodal (limits and processor kwargs)."""
    argv = list(case["argv"])
    model_dir = argv[0]
    config_file = Path(model_dir) / "config.json"  # Mistral-format checkpoints: params.json
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    out: dict[str, Any] = {
        "ok": False,
        "stage": "parse",
        "error": "",
        "dtype": None,
        "max_model_len": None,
        "quantization": None,
        "kv_cache_dtype": None,
        "trust_remote_code_required": "auto_map" in config,
        "remote_code": None,
        "attention": None,
        "multimodal": None,
    }
    cc = case.get("compute_capability")
    if cc is None:
        out["error"] = "no CUDA compute capability (AMD): not emulated"
        out["stage"] = "unchecked"
        return out
    major, minor = (int(x) for x in str(cc).split("."))
    if (
        not config_file.is_file()
        and (Path(model_dir) / "params.json").is_file()
        and not any(a.startswith("--config-format") for a in argv)
    ):
        # vLLM's 'auto' picks the Mistral format when the repository has params.json and
        # consolidated*.safetensors (is_mistral_model_repo); the catalog has no weights.
        argv.append("--config-format=mistral")
        out["assumed"] = "--config-format=mistral (the repository's consolidated*.safetensors)"
    try:
        engine_args = _parse(argv)
    except Exception as exc:
        out["error"] = _error(exc)
        return out
    emulator.cuda(major, minor, case.get("gpu", "GPU"), int(case.get("gpus_per_node", 8)))
    out["stage"] = "model_config"
    # A config vLLM cannot load (remote code) fails the same way whatever the flags and GPU, and
    # vLLM retries it with a pause: keep the first failure per (directory, --trust-remote-code).
    remote_key = (model_dir, bool(engine_args.trust_remote_code))
    try:
        if remote_key in _REMOTE_FAILURES:
            raise _REMOTE_FAILURES[remote_key]
        model_config = engine_args.create_model_config()
    except Exception as exc:
        out["error"] = _error(exc)
        if REMOTE_CODE_MARK in str(exc):
            out["trust_remote_code_required"] = True
            _REMOTE_FAILURES[remote_key] = exc
        elif engine_args.trust_remote_code and out["trust_remote_code_required"]:
            out["remote_code"] = out["error"]
            _REMOTE_FAILURES[remote_key] = exc
        return out
    out["dtype"] = _dtype_name(model_config.dtype)
    out["max_model_len"] = model_config.max_model_len
    out["quantization"] = model_config.quantization
    out["stage"] = "engine_config"
    try:
        # create_engine_config builds the model config again; hand it the one just built
        engine_args.create_model_config = lambda: model_config
        vllm_config = engine_args.create_engine_config()
    except Exception as exc:
        out["error"] = _error(exc)
        return out
    out["quantization"] = vllm_config.model_config.quantization
    out["kv_cache_dtype"] = vllm_config.cache_config.cache_dtype
    out["stage"] = "worker"
    try:
        emulator.platform.check_if_supports_dtype(vllm_config.model_config.dtype)
    except Exception as exc:
        out["error"] = _error(exc)
        return out
    out["stage"] = "attention"
    try:
        out["attention"] = _attention(
            emulator, vllm_config, emulator.platform.get_device_capability()
        )
    except Exception as exc:
        out["error"] = _error(exc)
        return out
    if out["attention"]["error"]:
        out["error"] = out["attention"]["error"]
        return out
    if model_config.multimodal_config is not None:
        out["stage"] = "multimodal"
        try:
            out["multimodal"] = _multimodal(emulator, engine_args, model_config, model_dir)
        except Exception as exc:
            out["error"] = _error(exc)
            return out
        mm = out["multimodal"]
        problems = []
        if mm["unsupported_limits"]:
            problems.append(f"limits for modalities the model lacks: {mm['unsupported_limits']}")
        if mm["over_limits"]:
            problems.append(f"limits above the model's: {mm['over_limits']}")
        if mm.get("processor_kwargs_unaccepted"):
            problems.append(
                f"--mm-processor-kwargs keys no processor accepts: "
                f"{mm['processor_kwargs_unaccepted']}"
            )
        if problems:
            out["error"] = "; ".join(problems)
            return out
    out["ok"], out["stage"] = True, ""
    return out


def main() -> int:
    cases: dict[str, dict[str, Any]] = json.load(sys.stdin)
    logging.disable(logging.WARNING)
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        emulator = Emulator()
        verdicts = {}
        for name, case in cases.items():
            try:
                verdicts[name] = check(emulator, case)
            except Exception as exc:  # a crash of the check itself, never a pass
                verdicts[name] = {"ok": False, "stage": "check", "error": _error(exc)}
            finally:
                emulator.restore()
    print(json.dumps(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
