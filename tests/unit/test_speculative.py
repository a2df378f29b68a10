"""Speculative decoding with the model's own multi-token-prediction (MTP) layers, as vLLM 0.32.0
runs ``--speculative-config '{"method": "mtp", ...}'``: the drafter's layers load beside the
model, get a full-attention KV cache of their own and CUDA graphs; other drafters get no verdict.
Configs: bench/families (verbatim copies of the published files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmop.catalog import resolve_gpu
from mmop.cli import main
from mmop.estimator import (
    EngineArgs,
    NoVerdict,
    estimate,
    kv_groups,
    weights_bytes_per_gpu,
)
from mmop.model import build_profile, load_profile_from_dir

FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"
DENSE = "nvidia/Qwen3.6-27B-NVFP4"  # 64 layers, full attention every 4th, 1 MTP layer
MOE = "Qwen/Qwen3.5-35B-A3B"  # 40 layers, 256 experts, 1 MTP layer
MTP = {"speculative_method": "mtp", "num_speculative_tokens": 2}


def profile(name: str):  # type: ignore[no-untyped-def]
    return load_profile_from_dir(FAMILIES / name, name)


def test_the_mtp_module_is_read_from_the_config() -> None:
    dense, moe = profile(DENSE), profile(MOE)
    assert dense.text.mtp_layers == moe.text.mtp_layers == 1
    h = dense.text.hidden_size
    # one full-attention decoder layer (gated q, 4 KV heads of 256), its dense MLP, fc and norms
    attn = h * 24 * 256 * 2 + 2 * h * 4 * 256 + 24 * 256 * h + 2 * 256
    assert dense.text.mtp_params == attn + 2 * h + 3 * h * 17408 + 2 * h * h + 3 * h
    # in the MoE model the MTP layer carries the whole expert block: far more than the dense one
    assert moe.text.mtp_params > 256 * 3 * moe.text.hidden_size * 512


def test_mtp_adds_its_layers_weights_kv_layer_and_graphs_and_is_approximate() -> None:
    p, gpu = profile(DENSE), resolve_gpu("H100")
    plain_args = EngineArgs(max_model_len=65536)
    mtp_args = EngineArgs(max_model_len=65536, **MTP)
    plain, mtp = estimate(p, gpu, plain_args), estimate(p, gpu, mtp_args)
    # weights: the MTP layer in bf16 (NVIDIA's export leaves mtp.* unquantized)
    extra = weights_bytes_per_gpu(p, mtp_args, "bfloat16") - weights_bytes_per_gpu(
        p, plain_args, "bfloat16"
    )
    assert extra == pytest.approx(p.text.mtp_params * 2, abs=2)
    # KV: 16 full-attention layers + the MTP layer -> groups of 17; the 48 Gated DeltaNet layers
    # fill three groups of 17 (3 padding slots), as vLLM groups them
    groups = mtp.kv_groups
    assert [g.kind for g in groups].count("full") == 1
    assert all(g.layers == 17 for g in groups) and len(groups) == 4
    assert [g.layers for g in kv_groups(p)] == [16] * 4
    assert mtp.kv_cache_tokens < plain.kv_cache_tokens
    assert mtp.cudagraph_gib > plain.cudagraph_gib
    assert mtp.kv_cache_gib < plain.kv_cache_gib
    assert any("speculative decoding (mtp" in w for w in mtp.warnings)


def test_an_mtp_estimate_is_approximate_so_a_plan_keeps_its_margin() -> None:
    # the same model as if its preprocessor config had been read (exact without speculation)
    p = profile(DENSE).model_copy(update={"preprocessor": {"max_pixels": 16384 * 32 * 32}})
    gpu, plain_args = resolve_gpu("H100"), EngineArgs(max_model_len=65536)
    assert not estimate(p, gpu, plain_args).approximate
    assert estimate(p, gpu, EngineArgs(max_model_len=65536, **MTP)).approximate


@pytest.mark.parametrize("method", ["eagle3", "dflash", "ngram", "draft_model"])
def test_other_drafters_get_no_verdict(method: str) -> None:
    with pytest.raises(NoVerdict, match="only the model's own multi-token-prediction"):
        estimate(profile(DENSE), resolve_gpu("H100"), EngineArgs(speculative_method=method))


def test_mtp_on_a_model_without_mtp_layers_gets_no_verdict() -> None:
    cfg = json.loads((FAMILIES / MOE / "config.json").read_text())
    cfg["text_config"].pop("mtp_num_hidden_layers")
    p = build_profile("acme/no-mtp", cfg)
    with pytest.raises(NoVerdict, match="names no MTP layers"):
        estimate(p, resolve_gpu("H100"), EngineArgs(**MTP))


def test_the_cli_reads_vllms_speculative_config(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["estimate", str(FAMILIES / DENSE), "--gpu", "H100", "--max-model-len", "65536"]
    assert main([*base, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    spec = '{"method": "mtp", "num_speculative_tokens": 2}'
    assert main([*base, "--speculative-config", spec, "--json"]) == 0
    mtp = json.loads(capsys.readouterr().out)
    assert mtp["kv_cache_tokens"] < plain["kv_cache_tokens"]
    assert mtp["approximate"] is True
    # a draft model: one line saying why there is no verdict, exit 2
    assert main([*base, "--speculative-config", '{"model": "acme/drafter"}']) == 2
    assert "draft_model" in capsys.readouterr().err
