"""Scraping: concurrent, bounded in time, and tolerant of engines that misbehave."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmop.metrics.scrape import FailureReason, Target, scrape

GOLDEN = Path(__file__).parent / "golden" / "llm-d-inference-sim-0.10.2-metrics.txt"


class Engine(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok/metrics":
            body = GOLDEN.read_bytes()
        elif self.path == "/slow/metrics":
            time.sleep(1.5)
            body = GOLDEN.read_bytes()
        elif self.path == "/garbage/metrics":
            body = b"<html>this is not prometheus</html>{{{"
        else:
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_good_engines_are_parsed_and_bad_ones_reported(engine: str) -> None:
    targets = [
        Target("a", f"{engine}/ok/metrics"),
        Target("b", f"{engine}/ok/metrics"),
        Target("slow", f"{engine}/slow/metrics"),
        Target("garbage", f"{engine}/garbage/metrics"),
        Target("broken", f"{engine}/broken/metrics"),
        Target("gone", "http://127.0.0.1:9/metrics"),
    ]
    result = asyncio.run(scrape(targets, timeout_seconds=0.5))
    assert sorted(s.pod for s in result.scrapes) == ["a", "b"]
    assert all("kv_cache_usage" in s.gauges for s in result.scrapes)
    assert result.failures["slow"] == "/metrics timed out after 0.5 s"
    assert result.failures["broken"] == "/metrics answered HTTP 500"
    assert "ClientConnectorError" in result.failures["gone"]
    assert set(result.failures) == {"slow", "garbage", "broken", "gone"}
    assert result.reasons == {
        "slow": FailureReason.TIMEOUT,
        "garbage": FailureReason.UNPARSABLE,
        "broken": FailureReason.HTTP_ERROR,
        "gone": FailureReason.UNREACHABLE,
    }
    assert [t.pod for t in result.targets] == [t.pod for t in targets]  # in the targets' order


def test_nothing_to_scrape() -> None:
    result = asyncio.run(scrape([]))
    assert result.scrapes == [] and result.failures == {}


def test_kv_cache_tokens_from_cache_config_info() -> None:
    from mmop.metrics.scrape import kv_cache_tokens

    sim = GOLDEN.read_text()
    assert kv_cache_tokens(sim) == 1024 * 16
    real = (Path(__file__).parent / "golden" / "vllm-0.32.0" / "metrics-idle.txt").read_text()
    assert kv_cache_tokens(real) == 4096
    assert kv_cache_tokens("# nothing here\n") is None
