"""The operator's configuration and context: built once, from flags and the environment, and
carried to the handlers — nothing read at import, nothing rewritten in another module."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mmop import catalog
from mmop.cli import catalog_file
from mmop.controller.config import OperatorConfig, from_environment
from mmop.controller.context import OperatorContext


def test_settings_come_from_the_environment_and_flags_win() -> None:
    env = {
        "MMOP_AUTOSCALE_INTERVAL_SECONDS": "3",
        "MMOP_PROMETHEUS_URL": "http://127.0.0.1:9090",
        "MMOP_HANDLER_THREADS": "8",
        "MMOP_HEAP_TRIM_SECONDS": "0",
        "KUBECONFIG": "/tmp/kc",
    }
    config = from_environment(env, autoscale_interval_seconds=5.0, default_vllm_image=None)
    assert config.autoscale_interval_seconds == 5.0  # the flag
    assert config.prometheus_url == "http://127.0.0.1:9090"
    assert config.handler_threads == 8 and config.api_connections == 10
    assert config.heap_trim_seconds == 0 and config.kubeconfig == "/tmp/kc"
    assert from_environment({}) == OperatorConfig()


def test_a_bad_setting_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError, match="handler_threads"):
        from_environment({"MMOP_HANDLER_THREADS": "0"})


def test_two_contexts_in_one_process_share_nothing(tmp_path: Path) -> None:
    """--gpu-catalog reaches the operator's inventory as a value: a second context in the same
    process (the packaged catalog) is untouched, and so is the catalog module."""
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(yaml.safe_dump({"gpus": [{"name": "L4", "price_per_hour_usd": 50.0}]}))
    path = catalog_file(str(gpus), None)
    assert path is not None
    custom = OperatorContext(config=OperatorConfig(gpu_catalog=path))
    plain = OperatorContext()
    assert custom.inventory.catalog.resolve("L4").price_per_hour_usd == 50.0
    assert plain.inventory.catalog.resolve("L4").price_per_hour_usd != 50.0
    assert catalog.resolve_gpu("L4").price_per_hour_usd != 50.0
    assert custom.telemetry.registry is not plain.telemetry.registry
    assert custom.history is not plain.history and custom.models is not plain.models
