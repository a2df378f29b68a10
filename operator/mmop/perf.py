"""Throughput and latency of one vLLM replica: a roofline model with calibrated efficiencies.

One engine step of vLLM's continuous batching runs the decode token of every running sequence
plus any prefill (chunk) scheduled with it. The model prices a step as

    step = overhead + bytes / (bandwidth × MBU × e_tp) + FLOPs / (peak × MFU × e_tp) + all-reduces

per GPU, where

- bytes = the weights read once per step (for MoE only the experts the step's tokens activate:
  E·(1 − (1 − k/E)^n) of E experts for n tokens, so one token reads the active parameters) plus
  the LM head plus the KV cache of every running sequence (sliding-window layers read at most
  their window); weights at their quantized width (AWQ/GPTQ about 0.52 byte, FP8 1 byte);
- FLOPs = 2 × active parameters × tokens + attention (prefill: 4 × width × causal pairs per
  layer, i.e. 2·L·d·T² for full attention; decode: 4 × width × context per token per layer) + the
  LM head for the sampled rows; FP8 W8A8 runs at ``fp8_tflops`` on GPUs that support FP8,
  everything else (weight-only int4, FP8 on Ampere via Marlin) at ``bf16_tflops``;
- tensor parallelism divides bytes and FLOPs by TP, multiplies both rates by
  ``tp_efficiency_per_doubling ** log2(TP)`` and adds two all-reduces per layer of
  tokens × hidden × 2 bytes (ring: 2(TP−1)/TP of that over half the bidirectional
  ``interconnect_bandwidth_gbps``) plus a fixed latency per all-reduce;
- pipeline parallelism (one stage per node, TP within it) runs the same work, split by layer
  over the stages, one after another: the step is the one above (each stage reads and computes its
  share of the model on its TP GPUs, so the sum over stages is the whole model on TP GPUs) plus,
  between consecutive stages, the activations the step carries across the node boundary —
  tokens × hidden size × 2 tensors (hidden states and residual, vLLM's intermediate tensors) × 2
  bytes over the inter-node link — and a fixed latency per hop. vLLM can keep up to PP batches in
  flight; the model credits none of that overlap (the pipeline bubble is taken whole), so a
  multi-node replica's throughput is a lower bound;
- memory and compute times add rather than overlap (a conservative choice that matched the
  mixed prefill/decode throughput figure below better than max()).

The vision/audio encoder runs serially before the step that prefills its request:
2 × encoder params × patches + 4 × width × sequence × patches per full-attention layer (windowed
layers attend over 64 patches) + the projector, at ``encoder_mfu`` of the bf16 peak, split by TP,
plus a fixed time per item.

Steady state under a concurrency of C requests, each with T prompt tokens (text plus multimodal
placeholders) and O output tokens: every running slot is refilled once per request lifetime, so
(C − 1)/O other prefills land per decode step of a request. With ``t_dec`` the pure decode step
and ``S`` the extra time one request's encoder + prefill adds to the step it rides in:

    TPOT      = t_dec + ((C − 1) / O) × S         (the other requests' prefills interleave)
    TTFT      = encoder + prefill step            (queue-free; the step also runs C − 1 decodes)
    lifetime  = TTFT + t_dec / 2 + Wq + (O − 1) × TPOT,  X = C / lifetime  (Little's law)
                (Wq: M/D/1 mean wait for the prefill, ρ = X·(C − 1)/C · S, Pollaczek–Khinchine)
    TTFT p95  = TTFT + t_dec + k95 × S   (k95: 95th percentile of the Poisson number of other
                prefills arriving while it waits and runs, mean X·(C − 1)/C·(t_dec + S))
    TPOT p95  = t_dec + n95 × S / (O − 1)  (n95: 95th percentile of the Poisson number of other
                prefills during its O − 1 decode steps, mean (C − 1)(O − 1)/O)

Arrivals are taken as Poisson (open-loop traffic, what an SLO is about). Closed-loop benchmarks
that start C requests at once (``vllm bench serve --max-concurrency C --request-rate inf``)
synchronise prefills into waves and report far higher TTFTs at large C; see docs/perf.md.

Calibration (figures cited in docs/perf.md, predictions compared there):

- ``mbu`` 0.76 and ``step_overhead_seconds`` 0.6 ms: fitted to single-stream decode of
  Llama-3.1-8B-Instruct BF16 on H100-80GB-HBM3 (vLLM 0.21.0, TPOT p50 6.48 ms,
  https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/) and on A100 40GB (vLLM 0.23.0,
  "about 75 tokens/sec" at concurrency 1, 1024 in / 128 out,
  https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on).
- ``mfu`` 0.65: from the single-request TTFT of Qwen2.5-72B-Instruct on 2×H100 at 4096 and 8192
  prompt tokens (505.1 ms, 1063.8 ms; https://github.com/tenstorrent/tt-inference-server/issues/143),
  checked against the mixed prefill/decode throughput of Mistral-7B-Instruct-v0.3 on an RTX 4090
  at concurrency 4-48 (https://mushfiqrahman.dev/?p=1668) and the 6.6× gain from concurrency 1 to
  8 in the A100 sweep above.
- ``allreduce_latency_*`` and ``tp_efficiency_per_doubling``: assumptions (no public figure
  isolates them), checked against the TP=2 TPOT of 30.9 ms in the same issue.
- ``encoder_mfu`` and ``encoder_item_overhead_seconds``: assumptions; no first-hand public figure
  of vLLM encoder time per image was found (docs/perf.md lists a secondary one).
- FP8 W8A8 assumes the same MFU at the FP8 peak: an assumption.
- the inter-node link (pipeline parallelism): 400 Gb/s (an InfiniBand NDR / 400 GbE class NIC per
  GPU, what NVLink/SXM-class GPU nodes are sold with) for GPUs whose catalog interconnect is
  ``nvlink`` or ``infinity-fabric``, 100 Gb/s Ethernet otherwise, and 20 µs / 50 µs per hop:
  assumptions, not measurements (:func:`inter_node_gbit_per_second`; a caller that knows the
  fabric passes its own figure). No node label is read for it.

Everything here is pure: plain data in, plain data out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mmop.catalog import GpuSpec
from mmop.estimator import (
    KV_DTYPE_BYTES,
    MXFP4_BYTES_PER_VALUE,
    QUANTIZATIONS,
    kv_bytes_per_token_per_layer,
)
from mmop.modalities import ItemCost
from mmop.model import AttentionKind, ModelProfile

# One-sided 95th percentile of a standard normal, for the Poisson tail approximations.
_Z95 = 1.645
# Patches one attention call sees in the windowed (non-full) layers of Qwen2.5-VL-style encoders:
# 112-pixel windows of 14-pixel patches.
WINDOWED_ENCODER_ATTENTION_PATCHES = 64
# Largest prefill-work utilisation the queueing term accepts (keeps the M/D/1 wait finite).
_MAX_PREFILL_UTILISATION = 0.95


@dataclass(frozen=True)
class PerfCalibration:
    """Efficiencies and fixed costs: what a roofline alone does not give (see module docstring)."""

    mfu: float = 0.65
    mbu: float = 0.76
    step_overhead_seconds: float = 0.0006
    encoder_mfu: float = 0.4
    encoder_item_overhead_seconds: float = 0.002
    allreduce_latency_nvlink_seconds: float = 0.00001
    allreduce_latency_pcie_seconds: float = 0.00003
    tp_efficiency_per_doubling: float = 0.97
    fallback_interconnect_bandwidth_gbps: float = 32.0
    # Between nodes (pipeline parallelism): assumptions, see the module docstring.
    inter_node_rdma_gbit_per_second: float = 400.0
    inter_node_ethernet_gbit_per_second: float = 100.0
    inter_node_rdma_latency_seconds: float = 0.00002
    inter_node_ethernet_latency_seconds: float = 0.00005


def _rdma_class(gpu: GpuSpec) -> bool:
    return gpu.interconnect in ("nvlink", "infinity-fabric")


def inter_node_gbit_per_second(gpu: GpuSpec, calibration: PerfCalibration | None = None) -> float:
    """The assumed link between two nodes of `gpu`, Gb/s: an RDMA fabric (400 Gb/s class) for
    NVLink/SXM-class GPU nodes, 100 Gb/s Ethernet for PCIe cards (an assumption, documented in
    docs/perf.md and docs/multinode.md)."""
    cal = calibration or DEFAULT_PERF_CALIBRATION
    if _rdma_class(gpu):
        return cal.inter_node_rdma_gbit_per_second
    return cal.inter_node_ethernet_gbit_per_second


DEFAULT_PERF_CALIBRATION = PerfCalibration()


class PerfWorkload(BaseModel):
    """One kind of request, as the performance model sees it: text prompt, multimodal items and
    output length (spec.workload, the user's description, is :class:`mmop.api.Workload`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(ge=0, le=16_777_216, description="Text prompt tokens per request")
    output_tokens: int = Field(ge=1, le=16_777_216, description="Generated tokens per request")
    mm_items: tuple[ItemCost, ...] = Field(
        default=(), description="Images and videos per request (vision encoder)"
    )
    audio_items: tuple[ItemCost, ...] = Field(
        default=(), description="Audio clips per request (audio encoder)"
    )

    @property
    def total_prompt_tokens(self) -> int:
        """Prompt tokens the language model prefills: text plus multimodal placeholders."""
        items = (*self.mm_items, *self.audio_items)
        return self.prompt_tokens + sum(item.tokens for item in items)


class ReplicaPerformance(BaseModel):
    """One replica's operating point at a given concurrency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(ge=0, description="Requests running at once")
    ttft_seconds: float = Field(
        ge=0, description="Time to first token without queueing: encoder plus prefill step"
    )
    ttft_p95_seconds: float = Field(ge=0, description="95th percentile time to first token")
    tpot_seconds: float = Field(ge=0, description="Mean time per output token after the first")
    tpot_p95_seconds: float = Field(ge=0, description="95th percentile of per-request TPOT")
    prefill_tokens_per_second: float = Field(
        ge=0, description="Prompt tokens of one request ÷ its queue-free prefill time"
    )
    decode_tokens_per_second: float = Field(ge=0, description="Output tokens/s, all requests")
    requests_per_second: float = Field(ge=0, description="Completed requests/s")
    encoder_seconds: float = Field(ge=0, description="Encoder time of one request's items")
    decode_step_seconds: float = Field(ge=0, description="One decode-only engine step")


# ----------------------------------------------------------------------------------------------
# The hardware/model pair, resolved once


@dataclass(frozen=True)
class _Engine:
    profile: ModelProfile
    tp: int
    dense_params: float  # LM linear params every token uses (attention, dense MLPs, shared)
    expert_params: float  # one routed expert of one MoE layer
    num_experts: int
    experts_per_token: int
    moe_layers: int
    head_params: float  # LM head (vocab × hidden)
    weight_bytes_per_param: float
    flops_per_second: float  # per GPU, effective, LM
    encoder_flops_per_second: float  # per GPU, effective
    bytes_per_second: float  # per GPU, effective
    allreduce_latency_seconds: float
    interconnect_bytes_per_second: float  # one direction
    kv_bytes_per_token_layer: float  # per GPU, one layer
    cal: PerfCalibration
    # (sliding window or None for full attention, number of such attention layers)
    windows: tuple[tuple[int | None, int], ...] = ()
    # Routed experts stored differently from the rest (MXFP4 quantizes only them); None: same.
    expert_bytes_per_param: float | None = None
    pp: int = 1  # pipeline stages, one per node
    inter_node_bytes_per_second: float = 0.0  # one direction, between consecutive stages
    inter_node_latency_seconds: float = 0.0


def _weight_bytes_per_param(profile: ModelProfile, method: str | None) -> float:
    quant = profile.quantization
    bits = quant.weight_bits if quant is not None and quant.method == method else None
    group = quant.group_size if quant is not None and quant.method == method else None
    if method is None or method == "mxfp4":  # MXFP4: only the experts (expert_bytes_per_param)
        return 2.0
    if method in ("fp8", "modelopt"):
        return 1.0
    if method == "modelopt_fp4":
        return 0.5 + 1 / (group or 16)
    if method == "bitsandbytes":
        return 0.5 + 2 / 64
    if method == "compressed-tensors" and (bits is None or bits >= 8):
        return 1.0
    b = bits or 4
    return b / 8 + (2 + b / 8) / (group or 128)


def _is_w8a8(profile: ModelProfile, method: str | None, gpu: GpuSpec) -> bool:
    if not (gpu.supports.fp8 and gpu.fp8_tflops):
        return False  # Ampere and older: FP8 is weight-only (Marlin), compute at bf16
    if method == "fp8":
        return True
    quant = profile.quantization
    return method == "compressed-tensors" and (
        quant is None or quant.method != method or quant.weight_bits >= 8
    )


def _engine(
    profile: ModelProfile,
    gpu: GpuSpec,
    tp: int,
    quantization: str | None,
    kv_cache_dtype: str,
    cal: PerfCalibration,
    pp: int = 1,
    inter_node_gbit: float | None = None,
) -> _Engine:
    if tp < 1:
        raise ValueError("tensor_parallel_size must be at least 1")
    if pp < 1:
        raise ValueError("pipeline_parallel_size must be at least 1")
    checkpoint = profile.quantization.method if profile.quantization else None
    if quantization is not None and quantization not in (*QUANTIZATIONS, checkpoint):
        raise ValueError(
            f"unsupported quantization {quantization!r}; one of {', '.join(QUANTIZATIONS)}"
        )
    if kv_cache_dtype not in KV_DTYPE_BYTES:
        raise ValueError(
            f"unsupported kv-cache-dtype {kv_cache_dtype!r}; one of {', '.join(KV_DTYPE_BYTES)}"
        )
    if gpu.bf16_tflops is None:
        raise ValueError(f"GPU {gpu.name} lists no 16-bit tensor throughput")
    method = quantization or (profile.quantization.method if profile.quantization else None)
    text = profile.text
    moe = text.moe
    expert = 3.0 * text.hidden_size * moe.expert_intermediate_size if moe else 0.0
    routed = moe.moe_layers * moe.num_experts * expert if moe else 0.0
    dense = max(float(profile.params.language_model) - routed, 0.0)
    head = float(text.vocab_size * text.hidden_size)
    tp_eff = cal.tp_efficiency_per_doubling ** math.log2(tp)
    peak_tflops = gpu.fp8_tflops if _is_w8a8(profile, method, gpu) else gpu.bf16_tflops
    assert peak_tflops is not None
    nvlink = gpu.interconnect in ("nvlink", "infinity-fabric")
    link_gbps = gpu.interconnect_bandwidth_gbps or cal.fallback_interconnect_bandwidth_gbps
    kv_bytes = KV_DTYPE_BYTES[kv_cache_dtype] or 2.0
    return _Engine(
        profile=profile,
        tp=tp,
        dense_params=dense,
        expert_params=expert,
        num_experts=moe.num_experts if moe else 0,
        experts_per_token=moe.experts_per_token if moe else 0,
        moe_layers=moe.moe_layers if moe else 0,
        head_params=head,
        weight_bytes_per_param=_weight_bytes_per_param(profile, method),
        expert_bytes_per_param=MXFP4_BYTES_PER_VALUE if method == "mxfp4" else None,
        flops_per_second=peak_tflops * 1e12 * cal.mfu * tp_eff,
        encoder_flops_per_second=gpu.bf16_tflops * 1e12 * cal.encoder_mfu * tp_eff,
        bytes_per_second=gpu.memory_bandwidth_gbps * 1e9 * cal.mbu * tp_eff,
        allreduce_latency_seconds=(
            cal.allreduce_latency_nvlink_seconds if nvlink else cal.allreduce_latency_pcie_seconds
        ),
        interconnect_bytes_per_second=link_gbps * 1e9 / 2,
        kv_bytes_per_token_layer=kv_bytes_per_token_per_layer(profile, tp, kv_bytes),
        cal=cal,
        windows=_window_counts(profile),
        pp=pp,
        inter_node_bytes_per_second=(inter_node_gbit or inter_node_gbit_per_second(gpu, cal))
        * 1e9
        / 8,
        inter_node_latency_seconds=(
            cal.inter_node_rdma_latency_seconds
            if _rdma_class(gpu)
            else cal.inter_node_ethernet_latency_seconds
        ),
    )


def _window_counts(profile: ModelProfile) -> tuple[tuple[int | None, int], ...]:
    counts: dict[int | None, int] = {}
    for layer in profile.text.layers:
        if layer.kind != AttentionKind.LINEAR:
            counts[layer.window_tokens] = counts.get(layer.window_tokens, 0) + 1
    return tuple(counts.items())


# ----------------------------------------------------------------------------------------------
# Work of one step


def _distinct_experts(e: _Engine, tokens: float) -> float:
    if e.num_experts == 0 or tokens <= 0:
        return 0.0
    miss = 1.0 - e.experts_per_token / e.num_experts
    return e.num_experts * (1.0 - math.pow(miss, tokens))


def _active_params(e: _Engine) -> float:
    return e.dense_params + e.moe_layers * e.experts_per_token * e.expert_params


def _weight_bytes(e: _Engine, tokens: float) -> float:
    """Weight bytes one GPU reads in a step that runs `tokens` tokens."""
    experts = e.moe_layers * _distinct_experts(e, tokens) * e.expert_params
    expert_bytes = e.expert_bytes_per_param or e.weight_bytes_per_param
    lm = e.dense_params * e.weight_bytes_per_param + experts * expert_bytes
    return (lm + e.head_params * 2.0) / e.tp


def _attended(layer_window: int | None, context: float) -> float:
    return min(context, float(layer_window)) if layer_window else context


def _kv_read_bytes(e: _Engine, sequences: float, context: float) -> float:
    total = sum(n * _attended(window, context) for window, n in e.windows)
    return sequences * e.kv_bytes_per_token_layer * total


def _attention_width(e: _Engine) -> float:
    t = e.profile.text
    return float(t.num_attention_heads * t.head_dim)


def _decode_attention_flops(e: _Engine, sequences: float, context: float) -> float:
    width = _attention_width(e)
    per_seq = sum(4.0 * width * n * _attended(window, context) for window, n in e.windows)
    return sequences * per_seq


def _causal_pairs(tokens: float, window: int | None) -> float:
    if window is None or tokens <= window:
        return tokens * tokens / 2.0
    return window * window / 2.0 + (tokens - window) * window


def _prefill_attention_flops(e: _Engine, tokens: float) -> float:
    width = _attention_width(e)
    return sum(4.0 * width * n * _causal_pairs(tokens, window) for window, n in e.windows)


def _allreduce_seconds(e: _Engine, tokens: float) -> float:
    if e.tp == 1:
        return 0.0
    payload = tokens * e.profile.text.hidden_size * 2.0
    transfer = 2.0 * (e.tp - 1) / e.tp * payload / e.interconnect_bytes_per_second
    return 2 * e.profile.text.num_layers * (e.allreduce_latency_seconds + transfer)


def _pipeline_seconds(e: _Engine, tokens: float) -> float:
    """The step's hops between pipeline stages: hidden states and residual of every token."""
    if e.pp == 1:
        return 0.0
    payload = tokens * e.profile.text.hidden_size * 2 * 2.0
    return (e.pp - 1) * (e.inter_node_latency_seconds + payload / e.inter_node_bytes_per_second)


def _step_seconds(
    e: _Engine, decode_seqs: float, context: float, prefill_tokens: float, prefill_reqs: float
) -> float:
    """One engine step: `decode_seqs` decodes at `context` plus a prefill of `prefill_tokens`."""
    tokens = decode_seqs + prefill_tokens
    bytes_ = _weight_bytes(e, tokens) + _kv_read_bytes(e, decode_seqs, context)
    flops = 2.0 * _active_params(e) * tokens
    flops += 2.0 * e.head_params * (decode_seqs + prefill_reqs)
    flops += _decode_attention_flops(e, decode_seqs, context)
    flops += prefill_reqs * _prefill_attention_flops(e, prefill_tokens / max(prefill_reqs, 1.0))
    return (
        e.cal.step_overhead_seconds
        + bytes_ / e.bytes_per_second
        + flops / e.tp / e.flops_per_second
        + _allreduce_seconds(e, tokens)
        + _pipeline_seconds(e, tokens)
    )


# ----------------------------------------------------------------------------------------------
# Encoders


def _item_encoder_flops(
    params: float,
    projector: float,
    hidden: int,
    full_layers: int,
    other_layers: int,
    item: ItemCost,
) -> float:
    patches = float(item.encoder_patches)
    seq = float(max(item.encoder_sequence, 1))
    flops = 2.0 * params * patches + 2.0 * projector * item.tokens
    flops += 4.0 * hidden * min(seq, patches) * patches * full_layers
    flops += 4.0 * hidden * min(seq, WINDOWED_ENCODER_ATTENTION_PATCHES) * patches * other_layers
    return flops


def encoder_seconds(
    profile: ModelProfile,
    gpu: GpuSpec,
    workload: PerfWorkload,
    *,
    tensor_parallel_size: int = 1,
    calibration: PerfCalibration = DEFAULT_PERF_CALIBRATION,
) -> float:
    """Encoder time (vision and audio) for one request's items; the encoder is split by TP."""
    e = _engine(profile, gpu, tensor_parallel_size, None, "auto", calibration)
    return _encoder_seconds(e, workload)


def _encoder_seconds(e: _Engine, workload: PerfWorkload) -> float:
    flops = 0.0
    items = 0
    v = e.profile.vision
    if workload.mm_items:
        if v is None:
            raise ValueError(f"{e.profile.id} has no vision encoder for image/video items")
        full = v.full_attention_layers
        for item in workload.mm_items:
            flops += _item_encoder_flops(
                v.params, v.projector_params, v.hidden_size, full, v.num_layers - full, item
            )
            items += 1
    a = e.profile.audio
    if workload.audio_items:
        if a is None:
            raise ValueError(f"{e.profile.id} has no audio encoder for audio items")
        for item in workload.audio_items:
            flops += _item_encoder_flops(
                a.params, a.projector_params, a.hidden_size, a.num_layers, 0, item
            )
            items += 1
    if items == 0:
        return 0.0
    compute = flops / e.tp / e.encoder_flops_per_second
    return compute + items * e.cal.encoder_item_overhead_seconds


# ----------------------------------------------------------------------------------------------
# Operating points


def _poisson_p95(mean: float) -> float:
    """95th percentile of a Poisson count, normal approximation (0 for a zero mean)."""
    if mean <= 0:
        return 0.0
    return mean + _Z95 * math.sqrt(mean)


def _performance(e: _Engine, workload: PerfWorkload, concurrency: int) -> ReplicaPerformance:
    c = float(concurrency)
    prompt = float(workload.total_prompt_tokens)
    out = float(workload.output_tokens)
    context = prompt + out / 2.0
    encoder = _encoder_seconds(e, workload)

    t_dec = _step_seconds(e, c, context, 0.0, 0.0)
    # The request's own prefill rides in a step with the other C − 1 decodes.
    prefill_step = _step_seconds(e, c - 1.0, context, max(prompt, 1.0), 1.0)
    extra = encoder + max(prefill_step - _step_seconds(e, c - 1.0, context, 0.0, 0.0), 0.0)

    others = c - 1.0  # the other running requests, whose prefills interleave with this one
    if workload.output_tokens > 1:
        decode_steps = out - 1.0
        tpot = t_dec + (others / out) * extra
        tpot_p95 = t_dec + _poisson_p95(others * decode_steps / out) * extra / decode_steps
    else:
        decode_steps = 0.0
        tpot = tpot_p95 = 0.0

    ttft = encoder + prefill_step  # queue-free: encoder, then the prefill step
    # Fixed point: throughput sets the M/D/1 wait for the prefill slot, the wait the lifetime.
    wait = 0.0
    for _ in range(50):
        lifetime = ttft + t_dec / 2.0 + wait + decode_steps * tpot
        others_rate = (c / lifetime) * others / c
        rho = min(others_rate * extra, _MAX_PREFILL_UTILISATION)
        new_wait = rho * extra / (2.0 * (1.0 - rho))
        converged = abs(new_wait - wait) < 1e-9
        wait = new_wait
        if converged:
            break
    rps = c / (ttft + t_dec / 2.0 + wait + decode_steps * tpot)
    others_rate = rps * others / c
    ttft_p95 = ttft + (t_dec if others else 0.0)
    ttft_p95 += _poisson_p95(others_rate * (t_dec + extra)) * extra

    return ReplicaPerformance(
        concurrency=concurrency,
        ttft_seconds=ttft,
        ttft_p95_seconds=max(ttft_p95, ttft),
        tpot_seconds=tpot,
        tpot_p95_seconds=max(tpot_p95, tpot),
        prefill_tokens_per_second=prompt / ttft,
        decode_tokens_per_second=rps * out,
        requests_per_second=rps,
        encoder_seconds=encoder,
        decode_step_seconds=t_dec,
    )


def estimate_performance(
    profile: ModelProfile,
    gpu: GpuSpec,
    workload: PerfWorkload,
    *,
    tensor_parallel_size: int = 1,
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    concurrency: int = 1,
    pipeline_parallel_size: int = 1,
    inter_node_gbit_per_second: float | None = None,
    calibration: PerfCalibration = DEFAULT_PERF_CALIBRATION,
) -> ReplicaPerformance:
    """Latency and throughput of one replica running `concurrency` requests of `workload`.

    `quantization` is vLLM's ``--quantization`` (None: the checkpoint's own, if any);
    `kv_cache_dtype` is ``--kv-cache-dtype``; `pipeline_parallel_size` stages (one per node)
    talk over `inter_node_gbit_per_second` (None: :func:`inter_node_gbit_per_second`).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    e = _engine(
        profile,
        gpu,
        tensor_parallel_size,
        quantization,
        kv_cache_dtype,
        calibration,
        pipeline_parallel_size,
        inter_node_gbit_per_second,
    )
    return _performance(e, workload, concurrency)


def _meets(
    p: ReplicaPerformance, ttft_p95_seconds: float | None, tpot_p95_seconds: float | None
) -> bool:
    if ttft_p95_seconds is not None and p.ttft_p95_seconds > ttft_p95_seconds:
        return False
    return tpot_p95_seconds is None or p.tpot_p95_seconds <= tpot_p95_seconds


def replica_capacity(
    profile: ModelProfile,
    gpu: GpuSpec,
    workload: PerfWorkload,
    *,
    tensor_parallel_size: int = 1,
    quantization: str | None = None,
    kv_cache_dtype: str = "auto",
    max_concurrency: int,
    ttft_p95_seconds: float | None = None,
    tpot_p95_seconds: float | None = None,
    pipeline_parallel_size: int = 1,
    inter_node_gbit_per_second: float | None = None,
    calibration: PerfCalibration = DEFAULT_PERF_CALIBRATION,
) -> ReplicaPerformance:
    """The highest-throughput operating point that meets the SLO, up to `max_concurrency`.

    `max_concurrency` is the cap the caller knows: ``min(max_num_seqs, KV-cache concurrency)``.
    Latencies grow with concurrency in this model, so the largest concurrency that meets the SLO
    is found by bisection. When even one request misses the SLO (or the cap is 0), the result has
    concurrency 0 and zero throughput, with the latencies of a single request to show why.
    """
    if max_concurrency < 0:
        raise ValueError("max_concurrency must not be negative")
    for name, slo in (
        ("ttft_p95_seconds", ttft_p95_seconds),
        ("tpot_p95_seconds", tpot_p95_seconds),
    ):
        if slo is not None and slo <= 0:
            raise ValueError(f"{name} must be positive")
    e = _engine(
        profile,
        gpu,
        tensor_parallel_size,
        quantization,
        kv_cache_dtype,
        calibration,
        pipeline_parallel_size,
        inter_node_gbit_per_second,
    )
    single = _performance(e, workload, 1)
    if max_concurrency == 0 or not _meets(single, ttft_p95_seconds, tpot_p95_seconds):
        return single.model_copy(
            update={
                "concurrency": 0,
                "requests_per_second": 0.0,
                "decode_tokens_per_second": 0.0,
            }
        )
    lo, hi = 1, max_concurrency
    best = single
    while lo < hi:
        mid = (lo + hi + 1) // 2
        p = _performance(e, workload, mid)
        if _meets(p, ttft_p95_seconds, tpot_p95_seconds):
            lo, best = mid, p
        else:
            hi = mid - 1
    return best if best.concurrency == lo else _performance(e, workload, lo)
