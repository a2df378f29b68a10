"""The `mmop estimate` and `mmop plan` contract: output fields, exit codes, one-line errors and
the JSON error object."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e.hub import HubStandIn
from pydantic import ValidationError

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
        (["estimate", "./no/such/dir", "--gpu", "L4"], "unknown model './no/such/dir'"),
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


# ------------------------------------------------------------------ one contract for plan/estimate

INFEASIBLE_INVENTORY = "pools:\n  - {name: l4, gpu: L4, nodes: 1, gpusPerNode: 1}\n"
MANIFEST = (
    "apiVersion: mmop.dev/v1alpha1\nkind: MultimodalModel\nmetadata: {name: x}\n"
    "spec:\n  model: {id: MODEL}\n  placement: {quantizations: [none]}\n"
)
ERROR_KEYS = {"error", "reason", "exit_code", "nearest_miss"}


def _manifest(tmp_path: Path, model: str) -> str:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.replace("MODEL", model))
    return str(path)


def _inventory(tmp_path: Path, text: str) -> str:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    return str(path)


def _json_error(out: str, err: str, code: int) -> dict[str, Any]:
    data = json.loads(out)  # exactly one JSON object on stdout
    assert isinstance(data, dict) and data.keys() == ERROR_KEYS, data
    assert data["exit_code"] == code
    assert data["error"] and "\n" not in data["error"]
    assert data["reason"] and data["reason"][0].isupper() and " " not in data["reason"]
    assert len(err.strip().splitlines()) == 1, err  # the one line for people stays on stderr
    return data


def test_plan_unknown_model_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, hub: HubStandIn
) -> None:
    code, out, err = run(capsys, "plan", _manifest(tmp_path, "nobody/NoSuchModel"))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "nobody/NoSuchModel was not found" in err
    code, out, err = run(capsys, "plan", "--json", _manifest(tmp_path, "nobody/NoSuchModel"))
    assert code == 2 and _json_error(out, err, 2)["reason"] == "ModelNotFound"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("UnknownModel", 2),
        ("UnsupportedModality", 2),
        ("ContextTooLong", 2),
        ("RemoteCodeRequired", 2),
        ("InvalidSpec", 2),
        ("Infeasible", 3),
        ("InsufficientCapacity", 3),
    ],
)
def test_plan_exit_code_follows_the_planning_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    reason: str,
    expected: int,
) -> None:
    from mmop import planner

    def refuse(*_: Any, **__: Any) -> Any:
        raise planner.PlanningError(f"refused: {reason}", reason=reason)

    monkeypatch.setattr(planner, "plan", refuse)
    code, out, err = run(capsys, "plan", "examples/gemma-3-27b.yaml", "--json")
    assert code == expected, err
    data = _json_error(out, err, expected)
    assert data == {
        "error": f"refused: {reason}",
        "reason": reason,
        "exit_code": expected,
        "nearest_miss": None,
    }


def test_plan_json_prints_the_error_object_when_nothing_fits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inv = _inventory(tmp_path, INFEASIBLE_INVENTORY)
    manifest = _manifest(tmp_path, "Qwen/Qwen2.5-VL-72B-Instruct")
    code, out, err = run(capsys, "plan", manifest, "--inventory", inv, "--json")
    assert code == 3
    data = _json_error(out, err, 3)
    assert data["reason"] == "Infeasible"
    assert data["error"].startswith("nothing fits; nearest miss: ")
    assert data["nearest_miss"] == data["error"].split("nearest miss: ", 1)[1]
    assert "L4" in data["nearest_miss"]


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["plan", "MANIFEST:./no/such/dir"], "UnknownModel"),
        (["plan", "/nonexistent.yaml"], "InvalidManifest"),
        (["plan", "examples/gemma-3-27b.yaml", "--inventory", "/nonexistent.yaml"], "InvalidInventory"),
        (["plan", "examples/gemma-3-27b.yaml", "--no-such-flag"], "InvalidArgument"),
        (["plan"], "InvalidArgument"),
        (["plan", "examples/gemma-3-27b.yaml", "--vllm-version", "banana"], "InvalidArgument"),
        (["estimate", "./no/such/dir", "--gpu", "L4"], "UnknownModel"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "H300"], "UnknownGpu"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--max-model-len", "-5"], "InvalidArgument"),
        (["estimate", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--quantization", "magic"], "InvalidArgument"),
        (["estimate", "Qwen/Qwen3-0.6B"], "InvalidArgument"),
    ],
)  # fmt: skip
def test_json_bad_input_prints_one_error_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], reason: str
) -> None:
    argv = [
        _manifest(tmp_path, a.removeprefix("MANIFEST:")) if a.startswith("MANIFEST:") else a
        for a in argv
    ]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 2, err
    data = _json_error(out, err, 2)
    assert data["reason"] == reason and data["nearest_miss"] is None
    assert data["error"] in err


@pytest.mark.parametrize(
    ("pools", "where"),
    [
        ("pools:\n  - {name: l4, gpu: L4, nodes: 1, gpusPerNode: lots}\n", r"pools(\.0|\[0\])\.gpusPerNode: \S"),
        ("pools:\n  - {name: l4, gpu: L4, nodes: 1, gpusPerNode: 1, color: red}\n", r"pools(\.0|\[0\])\.color: \S"),
        ("pools: []\n", r"pools: \S"),
        ("pools:\n  - {name: l4, gpu: L4\n", r".*YAML"),
    ],
)  # fmt: skip
def test_inventory_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pools: str, where: str
) -> None:
    inv = _inventory(tmp_path, pools)
    code, out, err = run(capsys, "plan", "examples/gemma-3-27b.yaml", "--inventory", inv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert re.match(re.escape(f"mmop: error: --inventory {inv}: ") + where, err), err
    assert "validation error" not in err and "[type=" not in err and "errors.pydantic" not in err


def test_a_validation_dump_collapses_to_its_first_error() -> None:
    from pydantic import BaseModel

    from mmop.cli import _error_line

    class Pool(BaseModel):
        nodes: int
        gpus: int

    with pytest.raises(ValidationError) as caught:
        Pool.model_validate({"nodes": "x", "gpus": "y"})
    assert _error_line(caught.value) == "nodes: Input should be a valid integer, unable to parse string as an integer"  # fmt: skip
    # The dump as text, its ValidationError gone (``raise ValueError(f"{path}: {err}") from None``
    # outside the except block), behind a prefix.
    dump = ValueError(f"inv.yaml: {caught.value}")
    assert _error_line(dump) == "inv.yaml: nodes: Input should be a valid integer, unable to parse string as an integer"  # fmt: skip
    assert _error_line(ValueError("inv.yaml: pool 'a': unknown GPU 'X'")) == "inv.yaml: pool 'a': unknown GPU 'X'"  # fmt: skip


def _serve_command(out: str) -> list[str]:
    """The printed `vllm serve` command, joined back as a shell would read it."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("vllm serve "))
    command = []
    for line in lines[start:]:
        command.append(line.removesuffix(" \\"))
        if not line.endswith(" \\"):
            break
    return shlex.split(" ".join(command))


@pytest.mark.parametrize("columns", ["40", "200"])
@pytest.mark.parametrize("example", ["examples/qwen2.5-vl-7b.yaml", "examples/gemma-3-27b.yaml"])
def test_vllm_serve_line_copy_pastes_at_any_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: str, example: str
) -> None:
    code, out, err = run(capsys, "plan", example, "--json")
    assert code == 0, err
    args = json.loads(out)["args"]
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = run(capsys, "plan", example)
    assert code == 0, err
    assert _serve_command(out) == ["vllm", "serve", *args]
    serve = out[out.index("vllm serve ") :]
    flags = [line for line in serve.splitlines() if line.lstrip().startswith(("--", "'--"))]
    assert len(flags) == len(args) - 1  # one flag per line


def _alternative_rows(out: str) -> list[list[str]]:
    section = out[out.index("alternatives") :]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│|┃]", line)[1:-1]]
        if len(cells) == 6 and cells[0] not in ("", "replicas"):
            rows.append(cells)
    return rows


def test_alternatives_show_replicas_gpus_image_cap_and_cost(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml", "--json")
    alternatives = json.loads(out)["alternatives"]
    assert any(a["replicas"] for a in alternatives)
    assert len({a["image_cap"] for a in alternatives}) > 1  # image-cap variants are shown
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml")
    assert code == 0
    expected = [
        [
            "—" if a["replicas"] is None else str(a["replicas"]),
            f"{a['tensor_parallel_size']}× {a['gpu']}",
            f"{a['quantization']} / {a['kv_cache_dtype']}",
            a["image_cap"],
            "—" if a["cost_per_hour_usd"] is None else f"${a['cost_per_hour_usd']:.2f}",
            a["reason"],
        ]
        for a in alternatives
    ]
    assert _alternative_rows(out) == expected


NEW_PLAN_FIELDS = (
    "tokens_per_image",
    "tokens_per_video",
    "tokens_per_audio",
    "native_tokens_per_image",
    "native_cost_per_hour_usd",
    "notes",
)


class _PlanWith:
    """A plan with the given fields set (or, in ``hidden``, absent), whatever planner.Plan has."""

    def __init__(self, plan: Any, hidden: tuple[str, ...] = (), **fields: Any) -> None:
        self._plan = plan
        self._hidden = hidden
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        if name in self._hidden:
            raise AttributeError(name)
        if name in self._fields:
            return self._fields[name]
        return getattr(self._plan, name)


def test_plan_table_shows_tokens_native_cost_remote_code_and_notes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmop import planner

    real = planner.plan
    notes = [
        "remote code from the model repository will run",
        "images are capped [not native]",
    ]

    def plan_with_fields(*args: Any, **kwargs: Any) -> Any:
        return _PlanWith(
            real(*args, **kwargs),
            tokens_per_image=1222,
            native_tokens_per_image=2646,
            tokens_per_video=4096,
            tokens_per_audio=None,
            native_cost_per_hour_usd=1.58,
            trust_remote_code=True,
            notes=notes,
        )

    code, out, err = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml", "--json")
    assert code == 0, err
    image_cap = json.loads(out)["image_cap"]
    monkeypatch.setattr(planner, "plan", plan_with_fields)
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml")
    assert code == 0, err
    rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if len(cells := [c.strip() for c in re.split(r"[│|]", line)[1:-1]]) == 2
    }
    assert rows["tokens per item"] == "image 1,222 (native 2,646), video 4,096"
    assert "native would cost $1.58/h" in rows["image cap"]
    assert rows["image cap"].startswith(image_cap)
    assert "remote code" in rows
    lines = out.splitlines()
    table_end = next(i for i, line in enumerate(lines) if line.startswith(("└", "+")))
    for note in notes:  # lines of their own after the table
        assert any(line.startswith("note: ") and note in line for line in lines[table_end + 1 :])


def test_plan_table_without_the_new_fields(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmop import planner

    real = planner.plan
    code, out, err = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml", "--json")
    assert code == 0, err
    data = json.loads(out)
    monkeypatch.setattr(
        planner, "plan", lambda *a, **k: _PlanWith(real(*a, **k), hidden=NEW_PLAN_FIELDS)
    )
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, "plan", "examples/qwen2.5-vl-7b.yaml")
    assert code == 0, err
    assert f"image {data['max_tokens_per_image']:,}" in out and "tokens per item" in out
    assert "native would cost" not in out and "note:" not in out


def test_plan_reads_a_local_directory_named_as_the_model_id(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The operator refuses a path as spec.model.id (the schema allows Hugging Face ids only),
    but `mmop plan` still plans a directory of this machine (a fine-tune's config)."""
    model_dir = tmp_path / "my-finetune"
    model_dir.mkdir()
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
    (model_dir / "config.json").write_text(json.dumps(config))
    path = tmp_path / "m.yaml"
    path.write_text(
        MANIFEST.replace("MODEL", str(model_dir)).replace(
            "placement:", "workload: {images: {perRequest: 0}}\n  placement:"
        )
    )
    code, out, err = run(capsys, "plan", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["max_model_len"] > 0


GPT_OSS_DIR = Path(__file__).resolve().parents[2] / "bench" / "families" / "openai" / "gpt-oss-20b"


def test_every_quantization_value_of_vllm_is_taken_and_the_checkpoints_own_is_sized(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--quantization mxfp4` pasted from a gpt-oss command line is vLLM's own value for that
    checkpoint: the same answer as without the flag, not a refusal of the flag."""
    base = ["estimate", str(GPT_OSS_DIR), "--gpu", "H100", "--json"]
    code, out, _ = run(capsys, *base)
    assert code == 0
    code_flag, out_flag, err = run(capsys, *base, "--quantization", "mxfp4")
    assert code_flag == 0, err
    assert json.loads(out_flag)["kv_cache_gib"] == json.loads(out)["kv_cache_gib"]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--quantization", "fp8_per_block"], "--quantization fp8_per_block"),
        (["--quantization", "experts_int8"], "--quantization experts_int8"),
        (["--kv-cache-dtype", "fp8_ds_mla"], "--kv-cache-dtype fp8_ds_mla"),
        (["--kv-cache-dtype", "nvfp4"], "--kv-cache-dtype nvfp4"),
    ],
)
def test_a_vllm_value_mmop_does_not_size_gets_no_verdict_not_a_guess(
    capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    argv = ["estimate", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100", *flags, "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 2
    data = _json_error(out, err, 2)
    assert data["reason"] == "NoVerdict"
    assert says in data["error"] and "no verdict" in data["error"]


def test_a_quantization_vllm_does_not_have_is_still_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "estimate", "Qwen/Qwen2.5-VL-7B-Instruct", "--gpu", "H100", "-q", "int3_magic"
    )
    assert code == 2 and out == ""
    assert "int3_magic" in err and len(err.strip().splitlines()) == 1


def test_a_flag_vllm_overrides_on_gpt_oss_is_sized_as_the_checkpoint_and_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["estimate", str(GPT_OSS_DIR), "--gpu", "H100", "--json"]
    _, out, _ = run(capsys, *base)
    for flag in ("gpt_oss_mxfp4", "fp8"):
        code, out_flag, err = run(capsys, *base, "--quantization", flag)
        assert code == 0, err
        data = json.loads(out_flag)
        assert data["kv_cache_gib"] == json.loads(out)["kv_cache_gib"]
        said = [w for w in data["warnings"] if "is overridden" in w]
        assert bool(said) == (flag == "fp8"), data["warnings"]
