"""The `mmop estimate` contract: output fields, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmop.catalog import gpu_names
from mmop.cli import main
from mmop.model import catalog_ids

REQUIRED_KEYS = {
    "weights_gib",
    "non_torch_gib",
    "activation_gib",
    "cudagraph_gib",
    "kv_cache_gib",
    "kv_cache_tokens",
    "max_concurrency",
    "max_model_len",
    "max_model_len_fit",
    "max_tokens_per_image",
    "fits",
    "reason",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_has_the_contract_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "estimate",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "--gpu",
        "L4",
        "--max-model-len",
        "8192",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data.keys() >= REQUIRED_KEYS
    assert isinstance(data["fits"], bool) and isinstance(data["kv_cache_tokens"], int)
    assert data["max_tokens_per_image"] == 16384


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "estimate", "google/gemma-3-4b-it", "--gpu", "NVIDIA-L4")
    assert code == 0
    assert "available KV cache" in out and "FITS" in out


def test_not_fitting_is_an_answer_not_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "estimate", "Qwen/Qwen2.5-VL-72B-Instruct", "--gpu", "L4", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["fits"] is False and data["reason"]


def test_limit_mm_per_prompt_accepts_both_json_forms(capsys: pytest.CaptureFixture[str]) -> None:
    for limit in (
        '{"image": 2, "video": 0}',
        '{"image": {"count": 2, "width": 1024, "height": 1024}}',
    ):
        code, _, err = run(
            capsys, "estimate", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100",
            "--limit-mm-per-prompt", limit, "--json",
        )  # fmt: skip
        assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["estimate", "nobody/NoSuchModel", "--gpu", "L4"], "unknown model 'nobody/NoSuchModel'"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "H300"], "unknown GPU 'H300'"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--limit-mm-per-prompt", "{image: 2"], "malformed JSON"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--mm-processor-kwargs", "[1]"], "expected a JSON object"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--max-model-len", "-5"], "--max-model-len"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--gpu-memory-gib", "0"], "--gpu-memory-gib"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--tensor-parallel-size", "3"], "divisible"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--vllm-version", "banana"], "--vllm-version"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--quantization", "magic"], "invalid choice"),
        (["estimate", "Qwen/Qwen3-0.6B"], "--gpu"),
        (["estimate", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "L4", "--limit-mm-per-prompt", '{"smell": 1}'], "unknown modality"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err


def test_unlisted_card_by_memory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--gpu-memory-gib", "40", "--json"
    )
    assert code == 0 and json.loads(out)["gpu_total_gib"] == 40


def test_model_from_a_local_directory(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16",
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out, _ = run(capsys, "estimate", str(tmp_path), "--gpu", "L4", "--json")
    assert code == 0
    assert json.loads(out)["max_model_len"] == 4096


def test_every_catalog_model_on_every_catalog_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    for model in catalog_ids():
        for gpu in gpu_names():
            code, out, err = run(capsys, "estimate", model, "--gpu", gpu, "--json")
            assert code == 0, (model, gpu, err)
            data = json.loads(out)
            assert isinstance(data["fits"], bool) and data["reason"]


def test_console_script_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmop.cli", "estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fits"] is True


def test_plan_prints_json_for_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["replicas"] >= 1 and data["args"][0] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert data["memory"]["fits"] is True


def test_plan_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "examples/gemma-3-27b.yaml")
    assert code == 0 and "vllm serve google/gemma-3-27b-it" in out.replace("\n", " ")


def test_invalid_manifest_exits_2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: mmop.dev/v1alpha1\nkind: MultimodalModel\nmetadata: {name: x}\nspec:\n  model: {id: a/b}\n  workload: {images: {perRequest: 99}}\n"
    )
    code, out, err = run(capsys, "plan", str(bad))
    assert code == 2 and out == ""
    assert "spec.workload.images.perRequest" in err and len(err.strip().splitlines()) == 1


def test_infeasible_manifest_exits_3(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    inv = tmp_path / "inv.yaml"
    inv.write_text("pools:\n  - {name: l4, gpu: L4, nodes: 1, gpusPerNode: 1}\n")
    m = tmp_path / "m.yaml"
    m.write_text(
        "apiVersion: mmop.dev/v1alpha1\nkind: MultimodalModel\nmetadata: {name: x}\nspec:\n  model: {id: Qwen/Qwen2.5-VL-72B-Instruct}\n  placement: {quantizations: [none]}\n"
    )
    code, out, err = run(capsys, "plan", str(m), "--inventory", str(inv))
    assert code == 3 and out == ""
    assert "Infeasible" in err and "nearest miss" in err


def test_plan_unknown_inventory_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "plan", "examples/gemma-3-27b.yaml", "--inventory", "/nonexistent.yaml"
    )
    assert code == 2 and "--inventory" in err
