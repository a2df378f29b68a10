"""vLLM's start-up lines about the KV cache, read from the pinned vLLM's real log and from the
format strings of its GPU path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmop.metrics import parse_startup_log
from mmop.vllm import PINNED_VLLM_VERSION

GOLDEN_LOG = Path(__file__).parent / "golden" / f"vllm-{PINNED_VLLM_VERSION}" / "startup.log"


def test_the_pinned_cpu_engine_start_up() -> None:
    report = parse_startup_log(GOLDEN_LOG.read_text())
    assert report.kv_cache_tokens == 4096  # 32 blocks × 128 tokens
    assert report.kv_cache_device == "CPU"
    assert report.max_model_len_tokens == 2048
    assert report.max_concurrency == pytest.approx(2.0)
    assert report.kv_cache_memory_gib == pytest.approx(1.0)  # VLLM_CPU_KVCACHE_SPACE=1
    assert report.engines == 1


def test_gpu_lines_with_process_prefixes() -> None:
    log = "\n".join(
        [
            "(Worker_TP0 pid=88) INFO 11-22 10:00:01 [gpu_model_runner.py:5150] "
            "Model loading took 15.62 GiB memory and 12.345678 seconds",
            "(Worker_TP0 pid=88) INFO 11-22 10:00:30 [gpu_worker.py:760] "
            "Available KV cache memory: 52.31 GiB",
            "(EngineCore pid=80) INFO 11-22 10:00:31 [kv_cache_utils.py:2327] "
            "GPU KV cache size: 979,632 tokens, "
            "Maximum concurrency for 16,384 tokens per request: 59.79x",
        ]
    )
    report = parse_startup_log(log)
    assert report.kv_cache_tokens == 979_632
    assert report.kv_cache_device == "GPU"
    assert report.max_model_len_tokens == 16_384
    assert report.max_concurrency == pytest.approx(59.79)
    assert report.kv_cache_memory_gib == pytest.approx(52.31)
    assert report.model_weights_gib == pytest.approx(15.62)
    assert report.model_load_seconds == pytest.approx(12.345678)


def test_older_two_line_form_and_several_engines() -> None:
    log = "\n".join(
        [
            "INFO 05-01 [kv_cache_utils.py:716] GPU KV cache size: 100,000 tokens",
            "INFO 05-01 [kv_cache_utils.py:720] Maximum concurrency for 8,192 tokens per "
            "request: 12.21x",
            "INFO 05-01 [kv_cache_utils.py:716] GPU KV cache size: 100,016 tokens",
        ]
    )
    report = parse_startup_log(log)
    assert (report.kv_cache_tokens, report.max_concurrency) == (100_000, pytest.approx(12.21))
    assert report.engines == 2


def test_a_log_without_those_lines() -> None:
    report = parse_startup_log("INFO starting\nERROR something else\n")
    assert report.kv_cache_tokens is None and report.max_concurrency is None
    assert report.engines == 0
