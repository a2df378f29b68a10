"""The sandbox's vLLM stand-in counts time to first token as vLLM does: from the request's
arrival, queueing included (vllm/v1/metrics/stats.py l. 521 at 0.32.0), so an SLO guard on
``vllm:time_to_first_token_seconds`` sees a queue the way it would on a real engine.
llm-d-inference-sim v0.10.2 as published times only the simulated prefill; e2e/sandbox/build.sh
builds it with that one line changed (docs/autoscaling.md)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.sandbox.cluster import find_binaries, free_port
from e2e.sandbox.podserver import simulator_environment

TTFT_MS = 300
REQUESTS = 3  # one runs, the others queue behind it (--max-num-seqs=1)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary: Path = find_binaries()["llm-d-inference-sim"]
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    argv = [
        str(binary), f"--port={port}", "--model=mmop/stand-in", "--force-dummy-tokenizer",
        "--max-num-seqs=1", f"--time-to-first-token={TTFT_MS}ms", "--inter-token-latency=50ms",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env=simulator_environment())  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the stand-in did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _chat(url: str, seen: list[float]) -> None:
    body = json.dumps({
        "model": "mmop/stand-in", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
    }).encode()  # fmt: skip
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    start = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as answer:
        for line in answer:
            if line.startswith(b"data:") and b'"content"' in line:
                seen.append(time.monotonic() - start)  # the client's TTFT
                break
        answer.read()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_ttft_counts_the_queue_as_vllm_does(simulator: str) -> None:
    seen: list[float] = []
    threads = [threading.Thread(target=_chat, args=(simulator, seen)) for _ in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(seen) == REQUESTS, seen
    with urllib.request.urlopen(f"{simulator}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    ttft_sum = _metric(metrics, "vllm:time_to_first_token_seconds_sum")
    ttft_count = _metric(metrics, "vllm:time_to_first_token_seconds_count")
    queue_sum = _metric(metrics, "vllm:request_queue_time_seconds_sum")
    assert ttft_count == REQUESTS
    # Two requests waited for the one running (10 tokens: about 0.75 s each).
    assert queue_sum > 0.5, metrics
    # From arrival: the queue plus the prefill delay of each request (as published, the
    # histogram would hold only REQUESTS x 0.3 s).
    assert ttft_sum >= queue_sum + REQUESTS * TTFT_MS / 1000 * 0.95
    # And what the clients saw, within scheduling noise.
    assert ttft_sum == pytest.approx(sum(seen), rel=0.15, abs=0.3)
