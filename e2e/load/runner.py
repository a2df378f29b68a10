"""Run the load generator (AIPerf, from the load venv) over a timestamped trace against one URL,
and read back what happened to every request.

``LoadRun(...).start()`` launches ``aiperf profile`` with a fixed schedule (each request at its
trace timestamp, as one streaming chat request with a text part and an image part) and returns at
once, so the caller can watch the cluster while it runs; ``wait()`` returns a ``LoadResult`` with
one ``RequestRecord`` per request from AIPerf's per-request export (``profile_export.jsonl``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.load.venv import LoadVenv, require


@dataclass(frozen=True)
class RequestRecord:
    """One request as the generator saw it; times are time.time() seconds."""

    start: float
    end: float | None
    ttft_seconds: float | None
    latency_seconds: float | None
    error: str | None = None


@dataclass
class LoadResult:
    returncode: int
    records: list[RequestRecord]
    artifact_dir: Path
    schedule_start: float  # time.time() of the trace's t = 0
    summary: dict[str, Any] = field(default_factory=dict)

    def failed(self) -> list[RequestRecord]:
        return [r for r in self.records if r.error is not None]

    def ttft_p95_between(self, start: float, end: float) -> float | None:
        """TTFT p95 of the requests that started in [start, end) (time.time() seconds)."""
        values = [
            r.ttft_seconds
            for r in self.records
            if r.ttft_seconds is not None and start <= r.start < end
        ]
        return quantile(values, 0.95) if values else None

    def log_tail(self, lines: int = 40) -> str:
        log = self.artifact_dir / "aiperf.out"
        if not log.is_file():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))
    return ordered[k]


def aiperf_argv(
    venv: LoadVenv,
    url: str,
    model: str,
    trace: Path,
    artifact_dir: Path,
    output_tokens: int,
    request_timeout_seconds: float,
) -> list[str]:
    return [
        str(venv.aiperf),
        "profile",
        "--model",
        model,
        "--url",
        url,
        "--endpoint-type",
        "chat",
        "--streaming",
        "--tokenizer",
        str(venv.tokenizer),
        "--input-file",
        str(trace),
        "--custom-dataset-type",
        "single_turn",
        "--fixed-schedule",
        "--osl",
        str(output_tokens),
        "--extra-inputs",
        "ignore_eos:true",
        "--use-server-token-count",
        "--request-timeout-seconds",
        str(request_timeout_seconds),
        "--random-seed",
        "0",
        "--ui",
        "none",
        "--no-server-metrics",
        "--no-gpu-telemetry",
        "--artifact-dir",
        str(artifact_dir),
    ]


class LoadRun:
    """One AIPerf run over a trace; start() returns at once, wait() collects the results."""

    def __init__(
        self,
        url: str,
        model: str,
        trace: Path,
        artifact_dir: Path,
        first_arrival_seconds: float = 0.0,
        output_tokens: int = 10,
        request_timeout_seconds: float = 120.0,
        venv: LoadVenv | None = None,
    ) -> None:
        self.venv = venv or require()
        self.artifact_dir = artifact_dir
        self.first_arrival = first_arrival_seconds
        self.argv = aiperf_argv(
            self.venv, url, model, trace, artifact_dir, output_tokens, request_timeout_seconds
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0

    def start(self) -> LoadRun:
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # A local tokenizer directory loads without the hub; HF_HUB_OFFLINE would make AIPerf
        # look for it in the hub cache instead.
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        env.update(
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        out = (self.artifact_dir / "aiperf.out").open("wb")
        self.launched_at = time.time()
        self.process = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.artifact_dir,
            start_new_session=True,
        )
        out.close()
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """End the run early (its process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def wait(self, timeout: float) -> LoadResult:
        assert self.process is not None, "start() first"
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = -1
        return read_results(self.artifact_dir, code, self.first_arrival, self.launched_at)


def read_results(
    artifact_dir: Path, returncode: int, first_arrival: float = 0.0, fallback_start: float = 0.0
) -> LoadResult:
    records: list[RequestRecord] = []
    issued: list[float] = []
    export = artifact_dir / "profile_export.jsonl"
    if export.is_file():
        for line in export.read_text().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            meta = item.get("metadata") or {}
            metrics = item.get("metrics") or {}
            start_ns = meta.get("request_start_ns") or meta.get("credit_issued_ns")
            if start_ns is None:
                continue
            if meta.get("credit_issued_ns"):
                issued.append(meta["credit_issued_ns"] / 1e9)
            end_ns = meta.get("request_end_ns")
            error = item.get("error")
            records.append(
                RequestRecord(
                    start=start_ns / 1e9,
                    end=end_ns / 1e9 if end_ns else None,
                    ttft_seconds=_ms(metrics.get("time_to_first_token")),
                    latency_seconds=_ms(metrics.get("request_latency")),
                    error=None if not error else json.dumps(error)[:500],
                )
            )
    records.sort(key=lambda r: r.start)
    start = (min(issued) - first_arrival) if issued else fallback_start
    summary: dict[str, Any] = {}
    summary_file = artifact_dir / "profile_export_aiperf.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    return LoadResult(returncode, records, artifact_dir, start, summary)


def _ms(metric: Any) -> float | None:
    if not isinstance(metric, dict) or metric.get("value") is None:
        return None
    value = float(metric["value"])
    unit = metric.get("unit", "ms")
    return value / 1000.0 if unit == "ms" else value
