"""Checkpoint quantization as the pinned vLLM loads it: weights sized by what vLLM keeps in
memory, and no verdict on a method mmop cannot size (each rule cites vLLM 0.32.0's source in
model.py, estimator.py and capabilities.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mmop.catalog import resolve_gpu
from mmop.estimator import (
    GIB,
    MXFP4_BYTES_PER_VALUE,
    EngineArgs,
    estimate,
    hardware_refusal,
    weights_bytes_per_gpu,
)
from mmop.model import ModelError, build_profile, load_profile

# A synthetic MoE shaped like the open MXFP4 releases: sliding and full attention alternating,
# 64 experts of 2880 (not a multiple of vLLM's kernel tiles), untied embeddings, bf16.
MOE: dict[str, Any] = {
    "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"], "torch_dtype": "bfloat16",
    "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 12,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 64, "num_experts_per_tok": 4, "vocab_size": 201088,
    "tie_word_embeddings": False, "max_position_embeddings": 131072, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 6,
}  # fmt: skip


def with_quant(cfg: dict[str, Any], quant: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "quantization_config": quant}


@pytest.mark.parametrize(
    ("method", "words"),
    [
        ("weird", "not a quantization method of vLLM 0.32.0"),
        ("quark", "mmop does not size this method's weights, so no verdict"),
        ("torchao", "mmop does not size this method's weights, so no verdict"),
    ],
)
def test_a_method_mmop_cannot_size_gets_no_verdict(method: str, words: str) -> None:
    with pytest.raises(ModelError) as err:
        build_profile("acme/q", with_quant(MOE, {"quant_method": method, "bits": 3}), {})
    assert words in str(err.value)


def test_modelopt_fp8_is_eight_bit_and_nvfp4_is_vllms_modelopt_fp4() -> None:
    fp8 = build_profile("a/fp8", with_quant(MOE, {"quant_method": "modelopt", "quant_algo": "FP8"}))
    assert fp8.quantization is not None
    assert (fp8.quantization.method, fp8.quantization.weight_bits) == ("modelopt", 8)
    nv = build_profile(
        "a/nv",
        with_quant(MOE, {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}),
    )
    assert nv.quantization is not None
    assert (nv.quantization.method, nv.quantization.weight_bits) == ("modelopt_fp4", 4)
    with pytest.raises(ModelError, match="quant_algo 'W4A8_AWQ'"):
        build_profile(
            "a/x", with_quant(MOE, {"quant_method": "modelopt", "quant_algo": "W4A8_AWQ"})
        )


def test_mxfp4_quantizes_only_the_routed_experts_padded_to_the_kernel_tiles() -> None:
    profile = build_profile(
        "acme/moe-mxfp4",
        with_quant(MOE, {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}),
    )
    bf16 = build_profile("acme/moe", MOE)
    args = EngineArgs()
    got = weights_bytes_per_gpu(profile, args, "bfloat16")
    # By hand: experts at 4.25 bits after padding (hidden 2880 -> 3072, intermediate 2880 ->
    # 2944), plus their bf16 biases; everything else bf16.
    experts = 12 * 64 * 3 * 3072 * 2944 * MXFP4_BYTES_PER_VALUE + 12 * 64 * (2 * 2944 + 3072) * 2
    dense = (bf16.params.language_model - bf16.text.routed_expert_params) * 2
    embed = bf16.params.embedding * 2
    assert got == int(experts + dense + embed + 0.05 * GIB)
    # Sizing every decoder weight at 4 bits (what a nominal-bits reading does) is far below:
    nominal = bf16.params.language_model * 0.5 + embed
    assert got > nominal + 0.9 * dense
    # Two GPUs split the experts' intermediate size (1440 -> 1536 per GPU after padding).
    two = weights_bytes_per_gpu(profile, EngineArgs(tensor_parallel_size=2), "bfloat16")
    assert two == int(
        12 * 64 * 3 * 3072 * 1536 * MXFP4_BYTES_PER_VALUE + 12 * 64 * (2 * 1536 + 3072) * 2
        + (dense + embed) / 2 + 0.05 * GIB
    )  # fmt: skip


def test_mxfp4_needs_ampere_as_vllm_says() -> None:
    profile = build_profile("acme/moe-mxfp4", with_quant(MOE, {"quant_method": "mxfp4"}))
    refusal = hardware_refusal(profile, EngineArgs(dtype="float16"), resolve_gpu("T4"))
    assert refusal is not None and "Minimum capability: 80" in refusal
    assert hardware_refusal(profile, EngineArgs(), resolve_gpu("A100-80GB")) is None


FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"


def test_gpt_oss_120b_is_not_a_false_fit_on_one_80gb_gpu() -> None:
    """Issue finding: a large MXFP4 MoE predicted to fit one 80 GB GPU with ~7 GiB of KV cache
    where vLLM reported negative available memory and refused to start. With the published
    config (bench/families/openai/gpt-oss-120b, a verbatim copy), the experts alone are MXFP4
    and the rest bf16: no KV memory left, the verdict vLLM gave."""
    profile = load_profile(str(FAMILIES / "openai" / "gpt-oss-120b"))
    # The V1 model runner's dummy sampler (fp32 copies of 1,024 rows x 201,088 logits) is what the
    # report's vLLM profiled: no KV memory left.
    est = estimate(profile, resolve_gpu("H100-80GB"), EngineArgs(vllm_version="0.31.0"))
    assert not est.fits and est.kv_cache_gib < 0
    # vLLM 0.32.0's Model Runner V2 holds the logits and 0.8 GiB of per-request vocabulary state
    # instead: KV memory is left, still too little for one 131,072-token request.
    now = estimate(profile, resolve_gpu("H100-80GB"), EngineArgs())
    assert not now.fits and now.failure == "MaxSeqLen"
    assert 0 < now.kv_cache_gib < 6 and now.sampler_state_gib == pytest.approx(0.815, abs=0.01)
    assert est.weights_gib > 60  # all-4-bit reading: 58 GiB, and a confident 7.5 GiB KV cache
    two = estimate(profile, resolve_gpu("H100-80GB"), EngineArgs(tensor_parallel_size=2))
    assert two.fits and two.kv_cache_gib > 30


def test_an_mxfp4_model_from_the_hub_is_planned_not_a_crash() -> None:
    """The performance model read only online --quantization values and raised on a checkpoint
    quantized with MXFP4: planning gpt-oss crashed the reconcile."""
    import yaml

    from mmop.api import MultimodalModel
    from mmop.inventory import default_inventory
    from mmop.model import load_profile_from_dir
    from mmop.planner import plan

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "examples" / "qwen2.5-vl-7b.yaml").read_text())
    doc["spec"]["model"] = {"id": "openai/gpt-oss-20b"}
    doc["spec"]["workload"] = {"promptTokens": 2048, "outputTokens": 512, "concurrency": 8}
    profile = load_profile_from_dir(FAMILIES / "openai" / "gpt-oss-20b", "openai/gpt-oss-20b")
    got = plan(
        MultimodalModel.model_validate(doc), default_inventory(),
        resolved={"openai/gpt-oss-20b": profile},
    )  # fmt: skip
    assert got.quantization == "mxfp4" and got.memory.weights_gib > 13
    assert got.performance.tpot_p95_seconds > 0
    # Read by the generic path: approximate, planned with 80 % of the estimated KV memory.
    assert got.approximate and got.kv_memory_scale == 0.8
    assert any(n.startswith("approximate: model_type 'gpt_oss'") for n in got.notes)
    full = estimate(profile, resolve_gpu(got.gpu), EngineArgs(
        max_model_len=got.max_model_len, max_num_seqs=got.max_num_seqs,
        gpu_memory_utilization=got.gpu_memory_utilization,
        max_num_batched_tokens=got.max_num_batched_tokens))  # fmt: skip
    assert full.approximate and any("generic path" in w for w in full.warnings)
    assert got.memory.kv_cache_tokens < 0.85 * full.kv_cache_tokens


# ------------------------------------------------------------------------------- AutoRound
CATALOG = Path(__file__).resolve().parents[2] / "operator/mmop/catalog/models"


def _qwen3_vl(quant: dict[str, Any]) -> dict[str, Any]:
    import json

    cfg = json.loads((CATALOG / "Qwen/Qwen3-VL-8B-Instruct/config.json").read_text())
    return with_quant(cfg, quant)


AUTOROUND = {
    "quant_method": "auto-round", "bits": 4, "group_size": 128, "sym": True, "data_type": "int",
    "packing_format": "auto_round:auto_gptq",
    "block_name_to_quantize": "model.language_model.layers",
}  # fmt: skip


def test_an_autoround_checkpoint_is_vllms_inc_sized_as_its_gptq_tensors() -> None:
    # vLLM 0.32.0 overrides quant_method auto-round to its INC config (inc/inc.py l. 361-368);
    # before, mmop called it "not a quantization method of vLLM" and gave no verdict.
    profile = build_profile("acme/vl-int4-autoround", _qwen3_vl(AUTOROUND))
    assert profile.quantization is not None
    assert profile.quantization.method == "inc"
    assert profile.quantization.vision_quantized is False  # only the decoder blocks are named
    gptq = build_profile(
        "acme/vl-gptq",
        _qwen3_vl({"quant_method": "gptq", "bits": 4, "group_size": 128,
                   "modules_to_not_convert": ["visual"]}),
    )  # fmt: skip
    args = EngineArgs()
    got = weights_bytes_per_gpu(profile, args, "bfloat16")
    assert got == weights_bytes_per_gpu(gptq, args, "bfloat16")
    bf16 = weights_bytes_per_gpu(build_profile("acme/vl", _qwen3_vl({})), args, "bfloat16")
    # 4-bit decoder: well under half of the bf16 weights, the 16-bit tower and embeddings kept
    assert 0.3 * bf16 < got < 0.5 * bf16
    est = estimate(profile, resolve_gpu("L4"), EngineArgs(max_model_len=16384))
    assert est.fits


def test_autoround_16_bit_layers_count_only_where_they_are_large() -> None:
    small = {  # routers and linear attention's in_proj_ba: left out of the count
        "model.language_model.layers.0.mlp.gate": {"bits": 16},
        "model.language_model.layers.0.linear_attn.in_proj_ba": {"bits": 16},
    }
    large = {"model.language_model.layers.0.self_attn.q_proj": {"bits": 16}}
    plain = build_profile("a/p", _qwen3_vl(AUTOROUND))
    with_small = build_profile("a/s", _qwen3_vl({**AUTOROUND, "extra_config": small}))
    with_large = build_profile("a/l", _qwen3_vl({**AUTOROUND, "extra_config": large}))
    assert with_small.quantization is not None and with_large.quantization is not None
    assert with_small.quantization.unquantized_modules == ()
    assert with_large.quantization.unquantized_modules == tuple(large)
    args = EngineArgs()
    w = {p.id: weights_bytes_per_gpu(p, args, "bfloat16") for p in (plain, with_small, with_large)}
    assert w["a/s"] == w["a/p"]
    assert w["a/l"] > w["a/p"]  # attention counted in 16 bits: the larger, safe side


def test_autoround_vision_is_quantized_only_where_its_blocks_are_named() -> None:
    args = EngineArgs()
    text_only = build_profile("a/t", _qwen3_vl(AUTOROUND))
    both = build_profile(
        "a/b",
        _qwen3_vl({**AUTOROUND,
                   "block_name_to_quantize": ["model.language_model.layers", "model.visual.blocks"]}),
    )  # fmt: skip
    assert both.quantization is not None and both.quantization.vision_quantized is True
    assert weights_bytes_per_gpu(both, args, "bfloat16") < weights_bytes_per_gpu(
        text_only, args, "bfloat16"
    )


@pytest.mark.parametrize(
    "quant",
    [
        {"data_type": "fp", "bits": 8, "group_size": [128, 128], "packing_format": "auto_round:fp8"},
        {"data_type": "mx_fp", "bits": 4, "group_size": 32,
         "packing_format": "auto_round:llm_compressor"},
    ],
)  # fmt: skip
def test_autoround_float_formats_get_no_verdict(quant: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match="only AutoRound's integer"):
        build_profile("a/f", _qwen3_vl({**AUTOROUND, **quant}))


def test_inc_runs_from_pascal_in_half_or_bfloat16() -> None:
    profile = build_profile("acme/vl-int4-autoround", _qwen3_vl(AUTOROUND))
    # INCConfig.get_min_capability = 60 (inc/inc.py l. 266-267): a T4 (7.5) runs it in fp16
    assert hardware_refusal(profile, EngineArgs(), resolve_gpu("T4")) is None


def _ct_fp4(group: int) -> dict[str, Any]:
    """compressed-tensors FP4 as llm-compressor writes it (nvfp4-pack-quantized: group 16;
    MXFP4: group 32), the vision tower and lm_head ignored."""
    scheme = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": group,
              "symmetric": True, "dynamic": False}  # fmt: skip
    return {
        "quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": scheme,
                                      "input_activations": {**scheme, "dynamic": "local"}}},
        "ignore": ["lm_head", "re:.*visual.*"],
    }  # fmt: skip


def test_compressed_tensors_fp4_weights_are_sized_with_one_8_bit_scale_per_group() -> None:
    # vLLM allocates FP4 weights as two values per byte plus one 8-bit scale per group of 16
    # (NVFP4) or 32 (MXFP4); mmop counted them as integer weights with a 16-bit scale and a
    # zero point per group (0.656 bytes per weight instead of 0.5625 for NVFP4).
    args = EngineArgs()
    ct = build_profile("acme/vl-nvfp4", _qwen3_vl(_ct_fp4(16)))
    assert ct.quantization is not None and ct.quantization.float_weights
    modelopt = build_profile(
        "nvidia/vl-nvfp4",
        _qwen3_vl({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                   "exclude_modules": ["lm_head", "model.visual*"]}),
    )  # fmt: skip
    assert weights_bytes_per_gpu(ct, args, "bfloat16") == weights_bytes_per_gpu(
        modelopt, args, "bfloat16"
    )
    mx = build_profile("acme/vl-mxfp4", _qwen3_vl(_ct_fp4(32)))
    bf16 = build_profile("acme/vl", _qwen3_vl({}))
    decoder = bf16.params.language_model
    assert weights_bytes_per_gpu(ct, args, "bfloat16") - weights_bytes_per_gpu(
        mx, args, "bfloat16"
    ) == pytest.approx(decoder * (1 / 16 - 1 / 32), rel=1e-6, abs=2)
