"""Tiny generated models for the engine tier, cached beside the engine venv.

``tiny_model("qwen2-vl")`` returns the directory of a ~0.5 MB randomly initialised Qwen2-VL
(``Qwen2VLForConditionalGeneration``); ``"llava"`` a LLaVA-1.5-shaped one. They are made by
scripts/tiny_model.py in the engine venv the first time and reused after (the key includes the
script's hash, so editing the script makes new ones). Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from e2e.engine.venv import EngineInstallError, EngineVenv, engine_venv

SCRIPT = Path(__file__).parent / "scripts" / "tiny_model.py"
FAMILIES = ("qwen2-vl", "llava")


def tiny_model(family: str, seed: int = 0, venv: EngineVenv | None = None) -> Path:
    """The tiny model's directory, generated on first use."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    venv = venv or engine_venv()
    if not venv.installed():
        raise EngineInstallError(
            f"the engine venv is not installed at {venv.venv}: run `python -m e2e.engine install`"
        )
    digest = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:12]
    target = venv.root / "models" / f"{family}-s{seed}-{digest}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
    try:
        proc = subprocess.run(
            [str(venv.python), str(SCRIPT), family, str(work / "model"), "--seed", str(seed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise EngineInstallError(
                f"generating the tiny {family} model failed:\n{proc.stderr[-3000:]}"
            )
        if target.exists():  # made meanwhile by another process
            return target
        (work / "model").rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
