"""The tiny model generator: offline, deterministic, and shaped like the published checkpoints
(architecture, tokenizer specials, chat template, a small pixel cap) so mmop and vLLM read them
as they read the real ones."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from e2e.engine.models import SCRIPT
from e2e.engine.venv import EngineVenv

from mmop.model import load_profile_from_dir


def digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.mark.parametrize("family", ["qwen2-vl", "llava"])
def test_generation_is_deterministic(
    engine: EngineVenv, family: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cached: Path = request.getfixturevalue("qwen_model" if family == "qwen2-vl" else "llava_model")
    out = tmp_path / family
    proc = subprocess.run(
        [str(engine.python), str(SCRIPT), family, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert digests(out) == digests(cached)


def test_qwen2_vl_is_read_like_the_published_model(qwen_model: Path) -> None:
    config = json.loads((qwen_model / "config.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"]
    tokenizer = json.loads((qwen_model / "tokenizer.json").read_text())
    specials = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert specials["<|image_pad|>"] == config["image_token_id"]
    assert specials["<|vision_start|>"] == config["vision_start_token_id"]
    assert "<|im_start|>" in (qwen_model / "chat_template.jinja").read_text()
    assert sum(p.stat().st_size for p in qwen_model.iterdir()) < 1_000_000
    profile = load_profile_from_dir(qwen_model, "tiny/qwen2-vl")
    assert profile.family == "qwen2_vl"
    assert profile.vision is not None


def test_llava_is_read_like_the_published_model(llava_model: Path) -> None:
    config = json.loads((llava_model / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    tokenizer = json.loads((llava_model / "tokenizer.json").read_text())
    specials = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert specials["<image>"] == config["image_token_index"]
    assert config["image_seq_length"] == 64  # (112 px / 14 px patches)²
    profile = load_profile_from_dir(llava_model, "tiny/llava")
    assert profile.family == "llava"
