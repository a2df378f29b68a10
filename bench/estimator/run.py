"""Replay public vLLM start-up logs against mmop's estimator and two baselines.

Usage:
    python bench/estimator/run.py                 # table on stdout
    python bench/estimator/run.py --markdown OUT  # also write a markdown report

Two splits, reported apart: dataset.yaml (rows the estimator's constants were set from) and
dataset_heldout.yaml (rows never looked at while tuning); ``--dataset FILE`` scores one file of
the same format (rows kept elsewhere). Models outside the catalog are read from a Hub when one
is given (``--hub URL``, default ``$HF_ENDPOINT``; the token ``$HF_TOKEN``; a row's ``revision``)
through the path ``mmop estimate <hub id>`` and the operator take, else from
bench/families/<id> or bench/estimator/configs/<id> (published configs with their provenance);
a row whose model has no config there, one mmop cannot read, or flags or a GPU it does not take,
is listed with the reason and left out of the metrics. Each row is one observed vLLM start-up
(model, GPU, TP, version, flags) with what vLLM logged ("Available KV cache memory", "GPU KV
cache size", or a refusal), and its source URL.
For every row we predict available KV memory per GPU, KV tokens and fit/no-fit with:

- mmop: ``mmop.estimator.estimate`` with the row's flags and vLLM version;
- naive: weights = parameters × bytes per parameter, KV = utilization × memory − weights,
  all layers full attention;
- llm-d: the llm-d capacity planner's approach (bench/estimator/llmd_capacity_planner.md):
  nominal GPU size, constant activation per architecture, 0.15/0.6 GiB non-torch, no graphs.

The dataset's GPU memory is the runtime total the log prints where it prints one, else the
catalog's. Metrics: median and p90 of |predicted − observed| / observed, per quantity; fit
accuracy; false "fits" (predicted to fit, vLLM refused); rows where mmop gives no verdict (a
vLLM whose V0 engine runs: ``estimator.NoVerdict``) count in neither.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmop.catalog import GIB, GpuError, GpuSpec, resolve_gpu
from mmop.estimator import EngineArgs, EstimateError, NoVerdict, estimate
from mmop.model import ModelError, ModelProfile, catalog_ids, load_profile, load_profile_from_dir

HERE = Path(__file__).parent
HELD_OUT = HERE / "dataset_heldout.yaml"
CONFIG_DIRS = (HERE.parent / "families", HERE / "configs")
DATASET = HERE / "dataset.yaml"

# Flags that put something else in GPU memory (a KV connector's buffers, a draft model) that
# mmop neither models nor renders: such rows are listed, not scored.
UNMODELLED_FLAGS = {"kv_transfer_config"}

ENGINE_FLAGS = {
    "max_model_len",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_num_batched_tokens",
    "enforce_eager",
    "kv_cache_dtype",
    "dtype",
    "quantization",
    "limit_mm_per_prompt",
    "mm_processor_kwargs",
    "block_size",
    "enable_prefix_caching",
}

# llm-d's nominal GPU sizes (used as GiB) and per-architecture activation constants.
LLMD_GPU_GIB = {
    "H100-80GB-SXM": 80,
    "H100-80GB-PCIe": 80,
    "A100-40GB-SXM": 40,
    "A100-40GB-PCIe": 40,
    "A100-80GB-SXM": 80,
    "A100-80GB-PCIe": 80,
    "L4": 24,
    "A10G": 24,
    "A10": 24,
    "L40": 48,
    "L40S": 48,
    "H200": 141,
    "B200": 192,
    "MI300X": 192,
    "RTX-4090": 24,
    "RTX-3090": 24,
    "RTX-5090": 32,
    "T4": 16,
}
LLMD_ACTIVATION_GIB = {
    "LlamaForCausalLM": 4.8,
    "Qwen2ForCausalLM": 5.6,
    "Qwen3ForCausalLM": 5.6,
    "PixtralForConditionalGeneration": 2.5,
    "Mistral3ForConditionalGeneration": 2.5,
}
LLMD_MULTIMODAL = {
    "PixtralForConditionalGeneration",
    "Mistral3ForConditionalGeneration",
    "LlavaForConditionalGeneration",
    "LlavaNextForConditionalGeneration",
}


@dataclass
class Prediction:
    kv_gib: float | None
    tokens: int | None
    fits: bool | None


@dataclass
class Row:
    id: str
    model: str
    gpu: str
    tp: int
    version: str
    engine: str
    observed_kv_gib: float | None
    observed_tokens: int | None
    started: bool
    source: str
    predictions: dict[str, Prediction]


def _gpu(row: dict[str, Any]) -> GpuSpec:
    gpu = resolve_gpu("H100" if row["gpu"] == "OTHER" else row["gpu"])
    total = row.get("gpu_total_gib")
    return gpu.with_memory(float(total)) if total else gpu


def _engine_args(row: dict[str, Any]) -> EngineArgs:
    flags = {k: v for k, v in (row.get("flags") or {}).items() if k in ENGINE_FLAGS}
    if flags.get("dtype") in ("float16", "bfloat16", "half", "auto", "float32"):
        pass
    elif "dtype" in flags:
        flags.pop("dtype")
    if flags.get("kv_cache_dtype") == "auto":
        flags.pop("kv_cache_dtype")
    version = str(row.get("vllm_version") or "0.11.0")
    spec = (row.get("flags") or {}).get("speculative_config") or {}
    if spec:  # as `mmop estimate --speculative-config` reads it (a named model: a draft model)
        flags["speculative_method"] = spec.get("method") or "draft_model"
        flags["num_speculative_tokens"] = spec.get("num_speculative_tokens")
    return EngineArgs(
        tensor_parallel_size=int(row.get("tensor_parallel_size") or 1),
        vllm_version=version,
        # what the row's log shows ran; a user of vLLM 0.8-0.10 forces it with VLLM_USE_V1=1
        vllm_use_v1=str(row.get("engine", "v1")) == "v1",
        **flags,
    )


def predict_mmop(profile: ModelProfile, gpu: GpuSpec, args: EngineArgs) -> Prediction:
    try:
        est = estimate(profile, gpu, args)
    except NoVerdict:
        return Prediction(None, None, None)
    except EstimateError:
        return Prediction(None, None, False)
    return Prediction(est.kv_cache_gib, est.kv_cache_tokens, est.fits)


def _weights_bytes(profile: ModelProfile) -> float:
    quant = profile.quantization
    per = quant.weight_bits / 8 if quant else 2.0
    if quant:
        # quantized linear layers at their width, embeddings and towers at 16 bits
        return (
            profile.params.language_model * per
            + (profile.params.embedding + profile.params.vision + profile.params.audio) * 2
        )
    return profile.params.served * per


def _full_attention_bytes_per_token(profile: ModelProfile, tp: int, clamp: bool) -> float:
    t = profile.text
    heads = max(1, t.num_kv_heads // tp) if clamp else t.num_kv_heads / tp
    return t.num_layers * 2 * heads * t.head_dim * 2


def _fits(kv_bytes: float, per_token: float, max_len: int) -> bool:
    return kv_bytes > 0 and kv_bytes >= per_token * max_len


def predict_naive(profile: ModelProfile, gpu: GpuSpec, args: EngineArgs) -> Prediction:
    tp = args.tensor_parallel_size
    util = args.gpu_memory_utilization or 0.9
    kv = gpu.memory_gib * GIB * util - _weights_bytes(profile) / tp
    per_token = _full_attention_bytes_per_token(profile, tp, clamp=True)
    max_len = args.max_model_len or profile.max_position_embeddings
    tokens = int(max(0.0, kv) // per_token)
    return Prediction(kv / GIB, tokens, _fits(kv, per_token, max_len))


def predict_llmd(profile: ModelProfile, gpu: GpuSpec, args: EngineArgs) -> Prediction:
    tp = args.tensor_parallel_size
    util = args.gpu_memory_utilization or 0.9
    if gpu.memory_gib != resolve_gpu(gpu.name).memory_gib:
        nominal = gpu.memory_gib  # a card outside llm-d's table, sized from the log
    else:
        nominal = LLMD_GPU_GIB.get(gpu.name, round(gpu.marketing_memory_gb or gpu.memory_gib))
    arch = profile.architecture
    if arch in LLMD_ACTIVATION_GIB:
        activation = LLMD_ACTIVATION_GIB[arch]
    elif profile.text.moe is not None:
        activation = 8.0
    elif arch in LLMD_MULTIMODAL:
        activation = 2.5
    else:
        activation = 5.5
    non_torch = 0.15 if tp == 1 else 0.6
    total_gib = nominal * util * tp - _weights_bytes(profile) / GIB - activation - non_torch * tp
    total_gib = max(0.0, total_gib)
    per_gpu_gib = total_gib / tp
    per_token = _full_attention_bytes_per_token(profile, tp, clamp=False)
    max_len = args.max_model_len or profile.max_position_embeddings
    tokens = int(per_gpu_gib * GIB // per_token)
    return Prediction(per_gpu_gib, tokens, _fits(per_gpu_gib * GIB, per_token, max_len))


PREDICTORS: dict[str, Callable[[ModelProfile, GpuSpec, EngineArgs], Prediction]] = {
    "mmop": predict_mmop,
    "naive": predict_naive,
    "llm-d": predict_llmd,
}


def _hub_profile(
    model: str, revision: str | None, endpoint: str
) -> tuple[ModelProfile | None, str]:
    """The model read from a Hub as `mmop estimate <hub id>` and the operator read it (the token
    from $HF_TOKEN), or why it could not be."""
    from mmop.hub import HubError, HubResolver

    resolver = HUB_RESOLVERS.setdefault(endpoint, HubResolver(endpoint=endpoint))
    try:
        return resolver.resolve(model, revision, os.environ.get("HF_TOKEN") or None).profile(), ""
    except HubError as err:
        return None, f"the Hub at {endpoint}: {err}"


HUB_RESOLVERS: dict[str, Any] = {}


def _profile(raw: dict[str, Any], hub: str | None = None) -> tuple[ModelProfile | None, str]:
    """The row's model, or why there is none: the catalog's; else, with a Hub endpoint, the
    Hub's (the path `mmop estimate <hub id>` takes); else a published config kept here."""
    model = str(raw["model"])
    why = "no published config here"
    try:
        if raw.get("catalog", True) or model in CATALOG_IDS:
            return load_profile(model), ""
        if hub:
            revision = raw.get("revision")
            profile, why = _hub_profile(model, str(revision) if revision else None, hub)
            if profile is not None:
                return profile, ""
        for base in CONFIG_DIRS:
            if (base / model / "config.json").is_file():
                return load_profile_from_dir(base / model, model), ""
    except ModelError as err:
        return None, f"mmop cannot read it (no verdict): {err}"
    return None, why


# Models the catalog holds now, whatever the row's `catalog` flag said when it was collected.
CATALOG_IDS = frozenset(catalog_ids())

SKIPPED: dict[str, str] = {}


def evaluate(dataset: Path = DATASET, hub: str | None = None) -> list[Row]:
    rows = []
    for raw in yaml.safe_load(dataset.read_text()):
        profile, why = _profile(raw, hub)
        unmodelled = sorted(UNMODELLED_FLAGS & set(raw.get("flags") or {}))
        if unmodelled:
            profile, why = None, f"flags mmop does not model: {', '.join(unmodelled)}"
        if profile is None:
            SKIPPED[str(raw["id"])] = why
            continue
        try:
            gpu = _gpu(raw)
            args = _engine_args(raw)
        except (GpuError, ValidationError) as err:
            first = str(err).strip().splitlines()
            SKIPPED[str(raw["id"])] = f"flags or GPU mmop does not take: {' '.join(first[:3])}"
            continue
        observed = raw.get("observed") or {}
        rows.append(
            Row(
                id=raw["id"],
                model=raw["model"],
                gpu=raw["gpu"],
                tp=args.tensor_parallel_size,
                version=args.vllm_version,
                engine=str(raw.get("engine", "v1")),
                observed_kv_gib=observed.get("available_kv_gib"),
                observed_tokens=observed.get("kv_cache_tokens"),
                started=bool(observed.get("started", True)),
                source=raw["source_url"],
                predictions={name: fn(profile, gpu, args) for name, fn in PREDICTORS.items()},
            )
        )
    return rows


def _rel(pred: float | None, obs: float | None) -> float | None:
    if pred is None or obs is None or obs <= 0:
        return None
    return abs(pred - obs) / obs


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(rows: list[Row], engine: str | None = "v1") -> list[dict[str, Any]]:
    chosen = [r for r in rows if engine is None or r.engine == engine]
    out = []
    for name in PREDICTORS:
        kv = [
            e
            for r in chosen
            if r.started and (e := _rel(r.predictions[name].kv_gib, r.observed_kv_gib)) is not None
        ]
        tok = [
            e
            for r in chosen
            if r.started and (e := _rel(r.predictions[name].tokens, r.observed_tokens)) is not None
        ]
        verdicts = [
            (r.predictions[name].fits, r.started)
            for r in chosen
            if r.predictions[name].fits is not None
        ]
        correct = sum(1 for p, o in verdicts if p == o)
        false_fits = sum(1 for p, o in verdicts if p and not o)
        out.append(
            {
                "estimator": name,
                "rows": len(chosen),
                "kv_n": len(kv),
                "kv_median": statistics.median(kv) if kv else float("nan"),
                "kv_p90": _quantile(kv, 0.9),
                "tok_n": len(tok),
                "tok_median": statistics.median(tok) if tok else float("nan"),
                "tok_p90": _quantile(tok, 0.9),
                "fit_accuracy": correct / len(verdicts) if verdicts else float("nan"),
                "false_fits": false_fits,
                "no_verdict": len(chosen) - len(verdicts),
            }
        )
    return out


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def markdown(rows: list[Row], heading: str = "") -> str:
    lines = [heading] if heading else []
    for engine, title in (("v1", "V1-engine rows"), (None, "All rows (V0 included)")):
        summary = summarize(rows, engine)
        lines.append(f"### {title}\n")
        lines.append(
            "| estimator | rows | KV memory n | median err | p90 err | KV tokens n | median err "
            "| p90 err | fit accuracy | false fits | no verdict |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in summary:
            lines.append(
                f"| {s['estimator']} | {s['rows']} | {s['kv_n']} | {_pct(s['kv_median'])} | "
                f"{_pct(s['kv_p90'])} | {s['tok_n']} | {_pct(s['tok_median'])} | "
                f"{_pct(s['tok_p90'])} | {_pct(s['fit_accuracy'])} | {s['false_fits']} | "
                f"{s['no_verdict']} |"
            )
        lines.append("")
    lines.append("### Per row (available KV GiB / KV tokens / fits)\n")
    lines.append("| row | vLLM | observed | mmop | naive | llm-d |")
    lines.append("|---|---|---|---|---|---|")
    for r in rows:

        def cell(p: Prediction) -> str:
            kv = "–" if p.kv_gib is None else f"{p.kv_gib:.2f}"
            tokens = "–" if p.tokens is None else f"{p.tokens:,}"
            if p.fits is None:
                return "no verdict"
            return f"{kv} / {tokens} / {'fit' if p.fits else 'no'}"

        obs_kv = "–" if r.observed_kv_gib is None else f"{r.observed_kv_gib:.2f}"
        obs_tok = "–" if r.observed_tokens is None else f"{r.observed_tokens:,}"
        obs = f"{obs_kv} / {obs_tok} / {'started' if r.started else 'refused'}"
        lines.append(
            f"| [{r.id}]({r.source}) | {r.version} {r.engine} | {obs} | "
            f"{cell(r.predictions['mmop'])} | {cell(r.predictions['naive'])} | "
            f"{cell(r.predictions['llm-d'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="write the report to this file")
    parser.add_argument("--dataset", type=Path, help="one dataset only (default: both splits)")
    parser.add_argument(
        "--hub",
        default=os.environ.get("HF_ENDPOINT") or None,
        metavar="URL",
        help="read models outside the catalog from this Hub first, as `mmop estimate <hub id>` "
        "does (default: $HF_ENDPOINT; unset: bench/families and bench/estimator/configs only)",
    )
    ns = parser.parse_args(argv)
    if ns.dataset:
        report = markdown(evaluate(ns.dataset, ns.hub))
    else:
        report = (
            markdown(
                evaluate(DATASET, ns.hub),
                "## Tuning split (dataset.yaml: the constants were set from it)\n",
            )
            + "\n"
            + markdown(
                evaluate(HELD_OUT, ns.hub),
                "## Held-out split (dataset_heldout.yaml: never looked at while tuning)\n",
            )
        )
    if SKIPPED:
        report += "\n### Rows left out\n\n" + "".join(
            f"- {row}: {why}\n" for row, why in SKIPPED.items()
        )
    print(report)
    if ns.markdown:
        ns.markdown.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
