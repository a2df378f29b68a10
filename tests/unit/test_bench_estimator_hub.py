"""The estimator benchmark reads models outside the catalog through the Hub path (the path
`mmop estimate <hub id>` and the operator take), so held-out start-ups kept elsewhere can be
scored against a Hub; a row it cannot take is listed, never a crash of the run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from e2e.hub import HubStandIn, Repo

ROOT = Path(__file__).resolve().parents[2]
GPT_OSS = ROOT / "bench" / "families" / "openai" / "gpt-oss-20b"
MIRROR = "acme/oss-20b-mirror"  # a Hub id with no config kept in the repository


def _runner(name: str) -> ModuleType:
    """A fresh copy of bench/estimator/run.py (its list of rows left out starts empty)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "estimator" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _row(row_id: str, model: str, **flags: Any) -> dict[str, Any]:
    # the held-out gpt-oss-20b start-up (dataset_heldout.yaml, myoceane): 36.56 GiB of KV cache
    return {
        "id": row_id,
        "source_url": "https://myoceane.fr/index.php/ai-vllm-a100-gemma-4/",
        "model": model,
        "catalog": False,
        "gpu": "A100-80GB",
        "tensor_parallel_size": 1,
        "vllm_version": "0.19.0",
        "engine": "v1",
        "flags": {"max_model_len": 131072, "gpu_memory_utilization": 0.65, **flags},
        "observed": {"available_kv_gib": 36.56, "started": True},
    }


def test_models_outside_the_catalog_are_read_from_the_hub(hub: HubStandIn, tmp_path: Path) -> None:
    hub.add(Repo.from_dir(MIRROR, GPT_OSS))
    dataset = tmp_path / "heldout.yaml"
    dataset.write_text(
        yaml.safe_dump(
            [
                _row("from-the-hub", MIRROR),
                _row("not-on-the-hub", "acme/no-such-model"),
                _row("a-flag-mmop-does-not-take", MIRROR, kv_cache_dtype="int2_magic"),
            ]
        )
    )
    run = _runner("bench_estimator_run_hub")
    rows = run.evaluate(dataset, hub.url)
    assert [r.id for r in rows] == ["from-the-hub"]
    kv = rows[0].predictions["mmop"].kv_gib
    assert kv is not None and abs(kv - 36.56) / 36.56 < 0.05
    assert "acme/no-such-model" in run.SKIPPED["not-on-the-hub"]
    assert "int2_magic" in run.SKIPPED["a-flag-mmop-does-not-take"]

    # Without a Hub the same row has no config here and is listed, not scored.
    offline = _runner("bench_estimator_run_offline")
    assert offline.evaluate(dataset) == []
    assert offline.SKIPPED["from-the-hub"] == "no published config here"
