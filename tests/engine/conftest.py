"""Tests against the real engine: vLLM's CPU build at mmop's pinned release, serving tiny
generated models on 127.0.0.1 (see docs/engine.md). They fail, never skip, when the engine venv
is missing: `python -m e2e.engine install` makes it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.engine.models import tiny_model
from e2e.engine.venv import EngineVenv, engine_venv


@pytest.fixture(scope="session", autouse=True)
def engine() -> EngineVenv:
    venv = engine_venv()
    if not venv.installed():
        pytest.fail(
            f"the engine venv is not installed at {venv.venv}; "
            "run `python -m e2e.engine install` (about 3 minutes, 6 GiB)",
            pytrace=False,
        )
    return venv


@pytest.fixture(scope="session")
def qwen_model(engine: EngineVenv) -> Path:
    return tiny_model("qwen2-vl", venv=engine)


@pytest.fixture(scope="session")
def llava_model(engine: EngineVenv) -> Path:
    return tiny_model("llava", venv=engine)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / f"vllm-{os.getpid()}"
    path.mkdir()
    yield path
