"""mmop against the pinned vLLM itself: the argv mmop renders for the Qwen2.5-VL example serves a
tiny Qwen2-VL on the CPU engine (shrunk to a 2,560-token KV cache); mmop reads its start-up log,
its /metrics and its image token counts, and sees KV-cache pressure when it comes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.engine.images import png_data_url
from e2e.engine.launcher import EngineServer
from e2e.engine.load import chat
from e2e.engine.scenario import (
    PRESSURE_FLAGS,
    PRESSURE_IMAGES,
    PRESSURE_KV_TOKENS,
    PRESSURE_MAX_TOKENS,
    PRESSURE_REQUESTS,
    example_argv,
    pressure,
)

from mmop.metrics import METRICS, family_names, parse_exposition, parse_startup_log, signals
from mmop.modalities import image_tokens
from mmop.model import load_profile_from_dir
from mmop.vllm import PINNED_VLLM_VERSION

EXAMPLE = "qwen2.5-vl-7b.yaml"
NAME = "qwen-vl"  # the example's served model name
GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden" / f"vllm-{PINNED_VLLM_VERSION}"


@pytest.fixture(scope="module")
def server(qwen_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    argv = [*example_argv(EXAMPLE), *PRESSURE_FLAGS]
    srv, _ = EngineServer.for_pod_argv(argv, qwen_model, tmp_path_factory.mktemp("vllm"))
    srv.start(timeout=300)
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.alive()


def test_start_up_log_reports_the_kv_cache(server: EngineServer) -> None:
    report = parse_startup_log(server.log_text())
    assert report.kv_cache_tokens == PRESSURE_KV_TOKENS
    assert report.kv_cache_device == "CPU"
    assert report.max_model_len_tokens == 2048
    assert report.max_concurrency == pytest.approx(PRESSURE_KV_TOKENS / 2048)
    assert report.engines == 1


def test_real_exposition_has_what_mmop_reads_and_matches_the_golden(server: EngineServer) -> None:
    real = {n for n in family_names(server.metrics_text()) if n.startswith("vllm:")}
    assert [m.name for m in METRICS if m.name not in real] == []
    golden = {
        n for n in family_names((GOLDEN / "metrics-idle.txt").read_text()) if n.startswith("vllm:")
    }
    # a refreshed golden is needed when the pinned vLLM's metric families change
    assert real == golden


def test_image_tokens_match_mmops_model(server: EngineServer, qwen_model: Path) -> None:
    """The prompt grows by mmop's image-token count (plus the vision start/end markers) per image,
    under the pixel cap the plan passes in --mm-processor-kwargs."""
    profile = load_profile_from_dir(qwen_model, "tiny/qwen2-vl")
    argv = example_argv(EXAMPLE)
    kwargs_arg = next(a for a in argv if a.startswith("--mm-processor-kwargs="))
    kwargs = json.loads(kwargs_arg.split("=", 1)[1])
    text_only = chat(server.url, NAME, [], max_tokens=1)
    assert text_only.status == 200, text_only.error
    for (w, h), n in (((640, 480), 1), ((320, 240), 2), ((1000, 300), 1)):
        result = chat(
            server.url, NAME, [png_data_url(w, h, seed=10_000 + k) for k in range(n)], max_tokens=1
        )
        assert result.status == 200, result.error
        expected = n * (image_tokens(profile, w, h, kwargs) + 2)
        assert result.prompt_tokens - text_only.prompt_tokens == expected, (w, h, n)


def test_pressure_shows_in_mmops_signals(server: EngineServer) -> None:
    run = pressure(server, NAME, scrape_interval=0.05)
    assert [r.status for r in run.results] == [200] * PRESSURE_REQUESTS, run.results
    assert all(r.completion_tokens == PRESSURE_MAX_TOKENS for r in run.results)
    t0, text0 = run.before
    start = parse_exposition(text0, "pod", t0)
    during = [parse_exposition(text, "pod", t) for t, text in run.during]
    t1, text1 = run.after
    end = parse_exposition(text1, "pod", t1)
    assert during, "no scrape while the requests ran"

    # While loaded: the fullest moment seen, as Signals over the window up to it.
    peak = max(during, key=lambda s: s.gauges["kv_cache_usage"])
    loaded = signals([start], [peak])
    assert loaded.kv_cache_usage_max is not None and loaded.kv_cache_usage_max > 0
    # Any two of the four requests outgrow the cache's 19 usable blocks, so vLLM preempts (it does
    # so only when no block is free). The sampled KV and queue gauges can miss the full moment;
    # the preemption counter cannot.
    preempted = end.counters["preemptions"] - start.counters["preemptions"]
    assert preempted >= 1, loaded
    assert max(s.gauges["requests_running"] for s in during) >= 1  # a scrape saw it serving

    # Over the whole run: preemptions, throughput, latencies, the multimodal cache.
    window = signals([start], [end])
    assert window.preemptions_per_second is not None and window.preemptions_per_second > 0
    assert window.requests_per_second == pytest.approx(PRESSURE_REQUESTS / (t1 - t0))
    generated = PRESSURE_REQUESTS * PRESSURE_MAX_TOKENS
    assert window.generation_tokens_per_second == pytest.approx(generated / (t1 - t0))
    assert window.mm_cache_hit_rate == 0.0  # every image distinct (no other test sends these)
    assert end.counters["mm_cache_queries"] - start.counters["mm_cache_queries"] == (
        PRESSURE_REQUESTS * PRESSURE_IMAGES
    )
    for name in ("ttft", "itl", "tpot", "e2e"):
        p50, p95 = getattr(window, f"{name}_p50_seconds"), getattr(window, f"{name}_p95_seconds")
        assert p50 is not None and p95 is not None and 0 < p50 <= p95, name
    longest = max(r.seconds for r in run.results)
    assert window.e2e_p95_seconds is not None and window.e2e_p95_seconds <= 2 * longest + 0.5
    assert window.kv_cache_usage_max == 0.0 and window.requests_waiting == 0  # drained


def test_repeated_image_hits_the_multimodal_cache(server: EngineServer) -> None:
    before = parse_exposition(server.metrics_text(), "pod", time.monotonic())
    image = png_data_url(320, 240, seed=4242)
    for _ in range(3):
        assert chat(server.url, NAME, [image], max_tokens=2).status == 200
    after = parse_exposition(server.metrics_text(), "pod", time.monotonic())
    s = signals([before], [after])
    assert s.mm_cache_hit_rate == pytest.approx(2 / 3)
