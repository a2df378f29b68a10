"""Planner benchmark: cost against the exhaustive optimum and two baselines, and planning time.

Usage:
    python bench/planner/run.py [--markdown bench/planner/results.md] [--repeat 5]

Cases: every model in MODELS × every workload in WORKLOADS, each on one inventory (cycling
through default, small, big and mixed10), plus every case again on mixed10 for timing.

- planner: mmop.planner.plan (pruned search).
- exhaustive: the same search with pruning off; the ratio planner/exhaustive must be 1.00.
- naive: bf16, the largest GPU in the inventory, the model's default context, vLLM's defaults
  (no --limit-mm-per-prompt, default max_num_seqs / max_num_batched_tokens / utilization), the
  fewest GPUs (a power of two) that hold the weights; replicas from the performance model.
- fixed profile: one hand-picked GPU per model size, as a model catalog would ship it
  (≤ 9 B params: 1× L4; ≤ 15 B: 1× L40S; ≤ 40 B: 1× H100; larger: 4× H100), bf16, the workload's
  context as --max-model-len, vLLM's other defaults.
A baseline configuration "OOMs" when mmop's estimator says vLLM would not start with it (no KV
room, or one max-length request does not fit) — the same model judges every row.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmop import perf
from mmop.api import MultimodalModel
from mmop.catalog import GpuSpec, resolve_gpu
from mmop.estimator import EngineArgs, EstimateError, estimate
from mmop.inventory import Inventory, default_inventory, load_inventory
from mmop.model import load_profile
from mmop.planner import PlanningError, plan, request_items

HERE = Path(__file__).parent
INVENTORIES = {
    "default": default_inventory,
    "small": lambda: load_inventory(HERE / "inventories" / "small.yaml"),
    "big": lambda: load_inventory(HERE / "inventories" / "big.yaml"),
    "mixed10": lambda: load_inventory(HERE / "inventories" / "mixed10.yaml"),
}
MODELS = [
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2.5-VL-72B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "OpenGVLab/InternVL2_5-8B",
    "google/gemma-3-12b-it",
    "google/gemma-3-27b-it",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    "microsoft/Phi-3.5-vision-instruct",
    "openbmb/MiniCPM-V-2_6",
    "HuggingFaceTB/SmolVLM-Instruct",
]
WORKLOADS: dict[str, dict[str, Any]] = {
    "chat": {
        "images": {"perRequest": 1, "maxWidth": 1024, "maxHeight": 1024},
        "contextLength": {"min": 8192},
        "promptTokens": 500,
        "outputTokens": 300,
        "concurrency": 8,
    },
    "documents": {
        "images": {"perRequest": 4, "maxWidth": 1920, "maxHeight": 1080},
        "contextLength": {"min": 16384},
        "promptTokens": 1000,
        "outputTokens": 500,
        "concurrency": 32,
        "slo": {"ttftP95Seconds": 4, "tpotP95Seconds": 0.08},
    },
    "batch": {
        "images": {"perRequest": 2, "maxWidth": 1280, "maxHeight": 720},
        "contextLength": {"min": 4096},
        "promptTokens": 300,
        "outputTokens": 200,
        "requestsPerSecond": 2,
    },
}


@dataclass
class Row:
    case: str
    inventory: str
    planner: float | None
    exhaustive: float | None
    naive: float | None
    naive_oom: bool
    fixed: float | None
    fixed_oom: bool
    fixed_missing: bool
    seconds: float
    note: str = ""


def manifest(model: str, workload: dict[str, Any]) -> MultimodalModel:
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "bench"},
            "spec": {
                # models whose config needs the repository's code are served with consent
                "model": {"id": model, "trustRemoteCode": load_profile(model).needs_remote_code},
                "workload": workload,
                "scaling": {"maxReplicas": 64},
            },
        }
    )


def _replicas_cost(
    m: MultimodalModel, gpu: GpuSpec, tp: int, args: EngineArgs, price: float
) -> tuple[float | None, bool]:
    """Cost of a fixed configuration that meets the workload, and whether it would OOM."""
    profile = load_profile(m.spec.model.id)
    try:
        est = estimate(profile, gpu, args)
    except EstimateError:
        return None, True
    if not est.fits:
        return None, True
    w = m.spec.workload
    items, audio, mm_tokens = request_items(m.spec, profile)
    need = w.prompt_tokens + w.output_tokens + mm_tokens
    kv_conc = est.kv_cache_tokens // max(1, need)
    if kv_conc < 1:
        return None, True
    cap = perf.replica_capacity(
        profile,
        gpu,
        perf.PerfWorkload(
            prompt_tokens=w.prompt_tokens,
            output_tokens=w.output_tokens,
            mm_items=tuple(items),
            audio_items=tuple(audio),
        ),
        tensor_parallel_size=tp,
        max_concurrency=min(est.max_num_seqs, kv_conc),
        ttft_p95_seconds=w.slo.ttft_p95_seconds,
        tpot_p95_seconds=w.slo.tpot_p95_seconds,
    )
    if cap.concurrency < 1:
        return None, False
    replicas = 1
    if w.concurrency:
        replicas = max(replicas, math.ceil(w.concurrency / cap.concurrency))
    if w.requests_per_second:
        replicas = max(replicas, math.ceil(w.requests_per_second / cap.requests_per_second))
    return replicas * tp * price, False


def naive(m: MultimodalModel, inv: Inventory) -> tuple[float | None, bool]:
    profile = load_profile(m.spec.model.id)
    pool = max(inv.pools, key=lambda p: (p.gpu_spec().memory_gib, -p.price_per_hour_usd))
    gpu = pool.gpu_spec()
    weights_gib = profile.params.served * 2 / 1024**3
    tp = 1
    while tp < pool.gpus_per_node and (
        weights_gib / tp > gpu.memory_gib * 0.9 or profile.text.num_attention_heads % tp
    ):
        tp *= 2
    args = EngineArgs(tensor_parallel_size=tp)
    return _replicas_cost(m, gpu, tp, args, pool.price_per_hour_usd)


def fixed(m: MultimodalModel, inv: Inventory) -> tuple[float | None, bool, bool]:
    profile = load_profile(m.spec.model.id)
    billions = profile.params.served / 1e9
    if billions <= 9:
        name, tp = "L4", 1
    elif billions <= 15:
        name, tp = "L40S", 1
    elif billions <= 40:
        name, tp = "H100-80GB", 1
    else:
        name, tp = "H100-80GB", 4
    pool = inv.pool(name)
    if pool is None or pool.gpus_per_node < tp:
        return None, False, True
    gpu = resolve_gpu(name)
    args = EngineArgs(tensor_parallel_size=tp, max_model_len=m.spec.workload.context_length.min)
    cost, oom = _replicas_cost(m, gpu, tp, args, pool.price_per_hour_usd)
    return cost, oom, False


def run_case(model: str, wname: str, inv_name: str) -> Row:
    m = manifest(model, WORKLOADS[wname])
    inv = INVENTORIES[inv_name]()
    start = time.perf_counter()
    try:
        best: float | None = plan(m, inv).cost_per_hour_usd
        note = ""
    except PlanningError as err:
        best, note = None, err.reason
    seconds = time.perf_counter() - start
    try:
        ref: float | None = plan(m, inv, exhaustive=True).cost_per_hour_usd
    except PlanningError:
        ref = None
    n_cost, n_oom = naive(m, inv)
    f_cost, f_oom, f_missing = fixed(m, inv)
    return Row(
        f"{model.split('/')[-1]} / {wname}", inv_name, best, ref, n_cost, n_oom, f_cost, f_oom,
        f_missing, seconds, note,
    )  # fmt: skip


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs per case on mixed10")
    ns = parser.parse_args(argv)
    names = list(INVENTORIES)
    rows = []
    for i, (model, wname) in enumerate((m, w) for m in MODELS for w in WORKLOADS):
        rows.append(run_case(model, wname, names[i % len(names)]))
    timings = []
    inv = INVENTORIES["mixed10"]()
    for model in MODELS:
        for wname in WORKLOADS:
            m = manifest(model, WORKLOADS[wname])
            for _ in range(ns.repeat):
                start = time.perf_counter()
                with contextlib.suppress(PlanningError):
                    plan(m, inv)
                timings.append(time.perf_counter() - start)
    timings.sort()
    p50 = statistics.median(timings) * 1000
    p99 = timings[min(len(timings) - 1, math.ceil(0.99 * len(timings)) - 1)] * 1000

    planned = [r for r in rows if r.planner is not None]
    ratios = [r.planner / r.exhaustive for r in planned if r.exhaustive]
    naive_ok = [r for r in planned if r.naive is not None]
    fixed_ok = [r for r in planned if r.fixed is not None]
    lines = [
        f"Cases: {len(rows)} ({len(MODELS)} models × {len(WORKLOADS)} workloads, inventories "
        f"cycled over {', '.join(names)}); planned: {len(planned)}; "
        f"infeasible: {len(rows) - len(planned)}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| planner cost / exhaustive optimum | min {min(ratios):.3f}, max {max(ratios):.3f} "
        f"over {len(ratios)} cases |",
        f"| naive baseline: predicted OOM at start-up | {sum(r.naive_oom for r in rows)} of "
        f"{len(rows)} |",
        f"| naive baseline: cost / planner cost (median, where it starts) | "
        f"{statistics.median([r.naive / r.planner for r in naive_ok if r.planner]):.2f}× over "
        f"{len(naive_ok)} cases |",
        f"| fixed profile: predicted OOM at start-up | {sum(r.fixed_oom for r in rows)} of "
        f"{len(rows)} ({sum(r.fixed_missing for r in rows)} more: its GPU is not in the "
        f"inventory) |",
        "| fixed profile: cost / planner cost (median, where it starts) | "
        + (
            f"{statistics.median([r.fixed / r.planner for r in fixed_ok if r.planner]):.2f}× "
            f"over {len(fixed_ok)} cases |"
            if fixed_ok
            else "n/a |"
        ),
        f"| planning time on the 10-pool inventory | p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"({len(timings)} runs) |",
        "",
        "| case | inventory | planner $/h | exhaustive $/h | naive $/h | fixed $/h |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        naive_cell = "OOM" if r.naive_oom else _fmt(r.naive)
        fixed_cell = "no GPU" if r.fixed_missing else ("OOM" if r.fixed_oom else _fmt(r.fixed))
        planner_cell = _fmt(r.planner) if r.planner is not None else f"– ({r.note})"
        lines.append(
            f"| {r.case} | {r.inventory} | {planner_cell} | {_fmt(r.exhaustive)} | "
            f"{naive_cell} | {fixed_cell} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if ns.markdown:
        ns.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
