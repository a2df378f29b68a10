"""The Prometheus source: the queries mmop sends and how it reads the answers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mmop.metrics.promql import PromQLError, queries, query_model


def test_queries_select_the_models_pods_and_use_the_pinned_names() -> None:
    q = queries("team-a", "qwen-vl", 30)
    sel = '{namespace="team-a",pod=~"qwen-vl-[a-z0-9]+-[a-z0-9]+"}'
    assert q["kv_cache_usage"] == f"avg by (pod) (vllm:kv_cache_usage_perc{sel})"
    assert q["requests_waiting"] == f"sum by (pod) (vllm:num_requests_waiting{sel})"
    assert "rate(vllm:time_to_first_token_seconds_bucket" in q["ttft_p95"]
    assert q["preemptions"] == f"sum(rate(vllm:num_preemptions_total{sel}[30s]))"
    with pytest.raises(ValueError):
        queries("team-a", 'x"} or vector(1) #', 30)


ANSWERS: dict[str, Any] = {}


class Prometheus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        for prefix, answer in ANSWERS.items():
            if query.startswith(prefix):
                body = json.dumps(answer).encode()
                break
        else:
            body = json.dumps({"status": "success", "data": {"result": []}}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        ANSWERS.clear()


def vector(*samples: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [1.0, v]} for m, v in samples],
        },
    }


def test_answers_become_per_pod_loads_and_model_signals(prometheus: str) -> None:
    ANSWERS["avg by (pod) (vllm:kv_cache_usage_perc"] = vector(
        ({"pod": "m-1-a"}, "0.9"), ({"pod": "m-1-b"}, "0.2")
    )
    ANSWERS["sum by (pod) (vllm:num_requests_waiting"] = vector(({"pod": "m-1-a"}, "7"))
    ANSWERS["histogram_quantile"] = vector(({}, "NaN"))
    ANSWERS["sum(rate(vllm:num_preemptions_total"] = vector(({}, "0.5"))
    got = asyncio.run(query_model(prometheus, "ns", "m", 30))
    assert got.pods["m-1-a"].kv_cache_usage == 0.9 and got.pods["m-1-a"].requests_waiting == 7
    assert got.pods["m-1-b"].requests_waiting is None
    assert got.ttft_p95_seconds is None  # no observations in the window: NaN, not a number
    assert got.preemptions_per_second == 0.5


def test_a_failing_prometheus_is_an_error_the_caller_can_report(prometheus: str) -> None:
    ANSWERS["avg by (pod)"] = {"status": "error", "error": "parse error"}
    with pytest.raises(PromQLError, match="parse error"):
        asyncio.run(query_model(prometheus, "ns", "m", 30))
    with pytest.raises(PromQLError):
        asyncio.run(query_model("http://127.0.0.1:9", "ns", "m", 30, timeout_seconds=0.5))
