"""Read what vLLM reports about its memory when it starts, from its log text.

The pinned vLLM logs, once per engine, after sizing the KV cache:

    CPU KV cache size: 4,096 tokens, Maximum concurrency for 2,048 tokens per request: 2.00x
    GPU KV cache size: 1,234,560 tokens, Maximum concurrency for 16,384 tokens per request: 75.35x

(older releases wrote the two halves on separate lines; both forms are read), and before that the
memory the KV cache may use, ``Available KV cache memory: 17.5 GiB`` on GPUs or ``Explicitly set
(1.0/23.47) GiB for KV cache`` / ``Auto set (...)`` on CPUs, and ``Model loading took 15.6 GiB
memory and 12.3 seconds``. These are the observed counterparts of the estimator's KV tokens and
weights, the basis for calibrating it. Pure: text in, a StartupReport out; lines may carry any
prefix (process tag, level, time, source file). With several engines (data parallel), each logs
its own line; the first of each kind is reported and ``engines`` counts the KV-size lines.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_NUM = r"([\d,]+)"
_KV_SIZE = re.compile(r"\b([A-Za-z+ ]*?)KV cache size: " + _NUM + r" tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for " + _NUM + r" tokens per request: ([\d.]+)x")
_AVAILABLE_GPU = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_AVAILABLE_CPU = re.compile(r"(?:Explicitly|Auto) set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_LOADING = re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


class StartupReport(BaseModel):
    """What one vLLM start-up said about its memory; None where the log has no such line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_cache_tokens: int | None = Field(default=None, ge=0, description="KV cache capacity")
    kv_cache_device: str | None = Field(
        default=None, description="where the KV cache lives as vLLM names it: GPU, CPU, …"
    )
    max_model_len_tokens: int | None = Field(
        default=None, ge=0, description="request length the concurrency figure is for"
    )
    max_concurrency: float | None = Field(
        default=None, ge=0, description="full-length requests the KV cache holds at once"
    )
    kv_cache_memory_gib: float | None = Field(
        default=None, ge=0, description="memory given to the KV cache"
    )
    model_weights_gib: float | None = Field(default=None, ge=0, description="memory of weights")
    model_load_seconds: float | None = Field(default=None, ge=0)
    engines: int = Field(default=0, ge=0, description="engines that logged their KV cache size")


def parse_startup_log(text: str) -> StartupReport:
    """The first KV-cache size, concurrency, KV memory and model-loading lines in ``text``."""
    values: dict[str, object] = {}
    engines = 0
    for line in text.splitlines():
        if m := _KV_SIZE.search(line):
            engines += 1
            if "kv_cache_tokens" not in values:
                values["kv_cache_tokens"] = _int(m.group(2))
                device = m.group(1).strip()
                values["kv_cache_device"] = device or None
        if (m := _CONCURRENCY.search(line)) and "max_concurrency" not in values:
            values["max_model_len_tokens"] = _int(m.group(1))
            values["max_concurrency"] = float(m.group(2))
        m = _AVAILABLE_GPU.search(line) or _AVAILABLE_CPU.search(line)
        if m and "kv_cache_memory_gib" not in values:
            values["kv_cache_memory_gib"] = float(m.group(1))
        if (m := _LOADING.search(line)) and "model_weights_gib" not in values:
            values["model_weights_gib"] = float(m.group(1))
            values["model_load_seconds"] = float(m.group(2))
    return StartupReport.model_validate({**values, "engines": engines})
