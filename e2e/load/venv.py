"""The load generator's virtualenv: NVIDIA's AIPerf from PyPI at a pinned release, with a local
tokenizer and a folder of small PNG images, so a run needs nothing from the network.

It lives outside the repository, under ``~/.cache/mmop/load/<key>/`` (``MMOP_LOAD_CACHE_DIR``
moves the root), where the key is derived from the pinned version, the Python version and this
recipe's revision: a pin change installs a fresh one, an unchanged pin reuses the cache.
``install()`` is idempotent: a complete install (``installed.json`` written last) is a no-op.

Why AIPerf and not kubernetes-sigs' inference-perf: inference-perf 0.7.0 declares
``Requires-Python >=3.12`` and mmop's tests run on 3.11; AIPerf 0.13.0 installs and runs on 3.11,
replays timestamped traces (``--fixed-schedule``) whose turns carry a local image file each, takes
a local tokenizer directory, and writes one JSON record per request (start time, TTFT, latency,
error), which is what the autoscaler checks need.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e2e.venvs import dir_bytes, run_step

AIPERF_VERSION = "0.13.0"
# Bump when the recipe changes in a way that makes old installs unfit: it is part of the key.
RECIPE_REVISION = 2
MARKER = "installed.json"
TOKENIZER_SCRIPT = Path(__file__).parent / "scripts" / "tokenizer.py"
# Four images of one small size: request bodies stay small and alike (the stand-in engine counts
# an image's base64 text as prompt tokens, so alike images make alike KV-cache use); vision
# encoders scale images up to their minimum size anyway.
IMAGE_SIZES = ((32, 32), (32, 32), (32, 32), (32, 32))


class LoadInstallError(RuntimeError):
    """A step of the install failed, or the venv is missing; the message says what to run."""


@dataclass(frozen=True)
class LoadVenv:
    root: Path

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def aiperf(self) -> Path:
        return self.venv / "bin" / "aiperf"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def installed(self) -> bool:
        return self.marker.is_file() and self.aiperf.exists()

    def image_files(self) -> list[Path]:
        return sorted(self.images.glob("*.png"))

    def record(self) -> dict[str, object]:
        """What installed.json says (versions, install seconds, size); empty if not installed."""
        if not self.marker.is_file():
            return {}
        data: dict[str, object] = json.loads(self.marker.read_text())
        return data


def cache_key(python_version: str | None = None) -> str:
    """Hash of everything that decides what the venv holds."""
    py = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    text = "|".join([AIPERF_VERSION, py, str(RECIPE_REVISION)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    explicit = os.environ.get("MMOP_LOAD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mmop" / "load"


def load_venv() -> LoadVenv:
    """The load venv for the current pin (installed or not)."""
    return LoadVenv(cache_root() / cache_key())


def require() -> LoadVenv:
    """The installed load venv; LoadInstallError (naming the install command) when missing."""
    venv = load_venv()
    if not venv.installed():
        raise LoadInstallError(
            f"the load generator venv is not installed at {venv.venv}: "
            "run `python -m e2e.load install`"
        )
    return venv


def png(width: int, height: int, seed: int) -> bytes:
    """A small RGB PNG (a smooth colour gradient that depends on ``seed``), with the standard
    library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(
                (
                    (x * 255 // max(1, width - 1) + seed * 40) % 256,
                    (y * 255 // max(1, height - 1) + seed * 90) % 256,
                    (seed * 60 + (x + y) * 2) % 256,
                )
            )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        path = folder / f"image-{i}-{w}x{h}.png"
        path.write_bytes(png(w, h, i))
        out.append(path)
    return out


def _run(step: str, argv: list[str], log_dir: Path, say: Callable[[str], None]) -> None:
    run_step(step, argv, log_dir, say, LoadInstallError)


CORPUS = (
    "import pathlib, aiperf; "
    "print(pathlib.Path(aiperf.__file__).parent / 'dataset/generator/assets/shakespeare.txt')"
)


def install(say: Callable[[str], None] | None = None, force: bool = False) -> LoadVenv:
    """Create the load venv if it is not there (a no-op when cached); return it."""
    say = say or (lambda msg: print(f"mmop load: {msg}", file=sys.stderr, flush=True))
    venv = load_venv()
    if venv.installed() and not force:
        say(f"cached: {venv.venv} (aiperf {AIPERF_VERSION}); nothing to do")
        return venv
    say(f"installing aiperf {AIPERF_VERSION} into {venv.venv}")
    started = time.monotonic()
    if venv.root.exists():
        shutil.rmtree(venv.root)
    venv.root.mkdir(parents=True)
    py = str(venv.python)
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    _run("venv", [sys.executable, "-m", "venv", str(venv.venv)], venv.logs, say)
    _run("aiperf", [*pip, f"aiperf=={AIPERF_VERSION}"], venv.logs, say)
    corpus = subprocess.run(
        [py, "-c", CORPUS], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not corpus or not Path(corpus).is_file():
        raise LoadInstallError(f"aiperf's bundled corpus was not found in {venv.venv}")
    _run(
        "tokenizer",
        [py, str(TOKENIZER_SCRIPT), corpus, str(venv.tokenizer)],
        venv.logs,
        say,
    )
    images = write_images(venv.images)
    _run("smoke", [str(venv.aiperf), "--version"], venv.logs, say)
    seconds = time.monotonic() - started
    size = dir_bytes(venv.venv)
    record = {
        "aiperf": AIPERF_VERSION,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "recipe_revision": RECIPE_REVISION,
        "install_seconds": round(seconds, 1),
        "venv_bytes": size,
        "images": [p.name for p in images],
    }
    venv.marker.write_text(json.dumps(record, indent=2) + "\n")
    say(f"installed in {seconds:.0f} s; venv size {size / 2**30:.2f} GiB")
    return venv
