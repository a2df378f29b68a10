"""The sandbox's vLLM stand-in departs from llm-d-inference-sim v0.10.2 as published where the
published simulator departs from vLLM; e2e/sandbox/build.sh builds it with two lines changed
(docs/autoscaling.md):

* time to first token counts from the request's arrival, queueing included, as vLLM's does
  (vllm/v1/metrics/stats.py l. 521 at 0.32.0), so an SLO guard on
  ``vllm:time_to_first_token_seconds`` sees a queue the way it would on a real engine (as
  published, it times only the simulated prefill);
* a request whose prompt does not fit the KV cache waits for blocks, as vLLM's scheduler leaves it
  waiting (as published, it fails with "the kv cache does not have sufficient capacity")."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e.sandbox.cluster import find_binaries, free_port
from e2e.sandbox.podserver import simulator_environment

TTFT_MS = 300
REQUESTS = 3  # one runs, the others queue behind it (--max-num-seqs=1)
KV_BLOCKS = 10  # of 16 tokens: one prompt of ~100 tokens takes 6 (two do not fit at once)
KV_REQUESTS = 4


@contextmanager
def _stand_in(log: Path, *flags: str) -> Iterator[str]:
    """The sandbox's llm-d-inference-sim on a loopback port, as a pod runs it; yields its URL."""
    binary: Path = find_binaries()["llm-d-inference-sim"]
    port = free_port()
    argv = [
        str(binary), f"--port={port}", "--model=mmop/stand-in", "--force-dummy-tokenizer",
        f"--time-to-first-token={TTFT_MS}ms", "--inter-token-latency=50ms", *flags,
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


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _stand_in(tmp_path_factory.mktemp("sim") / "sim.log", "--max-num-seqs=1") as url:
        yield url


@pytest.fixture(scope="module")
def small_kv_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("sim-kv") / "sim.log"
    flags = ("--max-num-seqs=2", "--enable-kvcache", f"--kv-cache-size={KV_BLOCKS}",
             "--block-size=16")  # fmt: skip
    with _stand_in(log, *flags) as url:
        yield url


def _chat(url: str, seen: list[float], content: str = "hello there",
          bodies: list[bytes] | None = None) -> None:  # fmt: skip
    body = json.dumps({
        "model": "mmop/stand-in", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": content}],
    }).encode()  # fmt: skip
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    start = time.monotonic()
    lines: list[bytes] = []
    with urllib.request.urlopen(request, timeout=60) as answer:
        for line in answer:
            lines.append(line)
            if line.startswith(b"data:") and b'"content"' in line:
                seen.append(time.monotonic() - start)  # the client's TTFT
                break
        lines.append(answer.read())
    if bodies is not None:
        bodies.append(b"".join(lines))


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


def test_a_full_kv_cache_makes_requests_wait_not_fail(small_kv_simulator: str) -> None:
    # Distinct prompts (no shared prefix blocks) of ~100 tokens: 6 of the 10 blocks each, so only
    # one fits at a time although two may run (--max-num-seqs=2).
    seen: list[float] = []
    bodies: list[bytes] = []
    prompts = [" ".join(f"w{i}x{j}" for j in range(100)) for i in range(KV_REQUESTS)]
    threads = [
        threading.Thread(target=_chat, args=(small_kv_simulator, seen, prompt, bodies))
        for prompt in prompts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    # As published, all but the first failed in the stream with "the kv cache does not have
    # sufficient capacity to store this request" (HTTP 500 inside a 200 stream).
    assert len(seen) == KV_REQUESTS, bodies
    assert not any(b"sufficient capacity" in body or b'"error"' in body for body in bodies)
    # They waited for blocks one after another: the last first token came after at least
    # KV_REQUESTS - 1 earlier requests had run their prefill.
    assert max(seen) >= (KV_REQUESTS - 1) * TTFT_MS / 1000 * 0.9, seen
    with urllib.request.urlopen(f"{small_kv_simulator}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    successes = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:request_success_total")
    )
    assert successes == KV_REQUESTS, metrics
