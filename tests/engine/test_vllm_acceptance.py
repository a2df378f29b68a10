"""Plans the pinned vLLM's own configuration code accepts, on the GPU they are planned for.

Every catalog model × one workload per modality it takes (text for text models) × one GPU per
generation is planned on a one-pool inventory of that GPU. A plan's argv (the catalog id replaced
by the catalog directory) goes through vLLM's parser, ``create_model_config``,
``create_engine_config``, the GPU worker's dtype check and the CUDA attention-backend selection,
all on an emulated CUDA device of the GPU's compute capability (e2e/engine/scripts/check_config.py,
which says how). vLLM must accept it, resolve the plan's dtype and max_model_len, and agree with
mmop.capabilities on the attention backend. One subprocess runs the whole matrix (about a minute
and a half warm; vLLM caches model inspection under ~/.cache/vllm on the first run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.engine.venv import EngineVenv
from tests.engine.test_argv_drift import multinode_argv

from mmop import capabilities, modalities
from mmop.api import ModelSource, MultimodalModel
from mmop.catalog import GpuSpec, resolve_gpu
from mmop.inventory import load_inventory
from mmop.model import CATALOG_MODELS_DIR, ModelProfile, catalog_ids, load_profile
from mmop.planner import Plan, PlanningError, plan
from mmop.render import ROLE_LEADER, ROLE_WORKER, vllm_args

CHECK = Path(__file__).resolve().parents[2] / "e2e" / "engine" / "scripts" / "check_config.py"
# One GPU per generation in the catalog (Turing, Ampere, Ada, Hopper, Blackwell).
GPUS = ("T4", "A100-80GB", "A10", "L40S", "L4", "H100-80GB", "B200")
WORKLOADS: dict[str, dict[str, Any]] = {
    "text": {"concurrency": 4},
    "image": {"images": {"perRequest": 1, "maxWidth": 1024, "maxHeight": 1024}, "concurrency": 4},
    "video": {"video": {"enabled": True, "maxFrames": 16}, "concurrency": 2},
    "audio": {"audio": {"enabled": True, "maxSeconds": 30}, "concurrency": 4},
}


def needs_remote_code(profile: ModelProfile) -> bool:
    flag = getattr(profile, "needs_remote_code", None)
    return bool(flag) if flag is not None else "auto_map" in profile.config


def spec_for(model_id: str, workload: str) -> MultimodalModel:
    source: dict[str, Any] = {"id": model_id}
    if "trust_remote_code" in ModelSource.model_fields and needs_remote_code(
        load_profile(model_id)
    ):
        source["trustRemoteCode"] = True
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "m"},
            "spec": {"model": source, "workload": WORKLOADS[workload]},
        }
    )


@dataclass
class Case:
    name: str
    model: str
    workload: str
    gpu: GpuSpec
    plan: Plan | None = None
    planning_error: str = ""
    verdict: dict[str, Any] | None = None

    @property
    def capability(self) -> int | None:
        return capabilities.parse_capability(self.gpu.compute_capability)


def catalog_argv(args: list[str]) -> list[str]:
    """The plan's argv with the catalog id (argv[0]) replaced by the catalog directory."""
    directory = CATALOG_MODELS_DIR / args[0]
    assert any((directory / name).is_file() for name in ("config.json", "params.json")), (
        f"{args[0]} has no catalog directory"
    )
    return [str(directory), *args[1:]]


CONTROLS: dict[str, dict[str, Any]] = {
    "control:gemma3-t4": {
        "argv": ["google/gemma-3-4b-it", "--max-model-len=8192"],
        "compute_capability": "7.5",
        "gpu": "T4",
    },
    "control:fp8-kv-t4": {
        "argv": ["Qwen/Qwen2.5-VL-7B-Instruct", "--max-model-len=8192", "--kv-cache-dtype=fp8"],
        "compute_capability": "7.5",
        "gpu": "T4",
    },
    "control:awq-on-bf16": {
        "argv": ["Qwen/Qwen2.5-VL-7B-Instruct", "--max-model-len=8192", "--quantization=awq"],
        "compute_capability": "8.9",
        "gpu": "L4",
    },
    "control:remote-code": {
        "argv": ["OpenGVLab/InternVL3-8B", "--max-model-len=8192"],
        "compute_capability": "8.9",
        "gpu": "L4",
    },
    "control:bf16-t4": {
        "argv": ["Qwen/Qwen2.5-7B-Instruct", "--max-model-len=8192", "--dtype=bfloat16"],
        "compute_capability": "7.5",
        "gpu": "T4",
    },
}


# The table against vLLM directly: checkpoints of each kind × flags × GPUs.
TABLE_MODELS = (
    "Qwen/Qwen2.5-VL-7B-Instruct",  # bf16, head 128
    "google/gemma-3-4b-it",  # refuses float16, multimodal-prefix LM, head 256
    "llava-hf/llava-1.5-7b-hf",  # float16 checkpoint
    "Qwen/Qwen2.5-VL-7B-Instruct-AWQ",  # AWQ checkpoint
    "Qwen/Qwen3-VL-4B-Instruct-FP8",  # fp8 block-quantized checkpoint
    "Qwen/Qwen2.5-7B-Instruct",  # text
)
TABLE_FLAGS: tuple[tuple[str, ...], ...] = (
    (),
    ("--kv-cache-dtype=fp8",),
    ("--quantization=fp8",),
    ("--quantization=awq",),
    ("--dtype=bfloat16",),
    ("--dtype=half",),
)
TABLE_GPUS = (*GPUS, "RTX-5090")


def table_cases() -> dict[str, dict[str, Any]]:
    out = {}
    for gpu_name in TABLE_GPUS:
        gpu = resolve_gpu(gpu_name)
        for model in TABLE_MODELS:
            for flags in TABLE_FLAGS:
                out[f"table:{model}|{' '.join(flags)}|{gpu.name}"] = {
                    "argv": [model, "--max-model-len=4096", *flags],
                    "compute_capability": gpu.compute_capability,
                    "gpu": gpu.name,
                }
    return out


def table_prediction(case: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(refusal, dtype, quantization) as mmop.capabilities predicts them for a table case."""
    model, *flags = case["argv"]
    options = dict(f.removeprefix("--").split("=", 1) for f in flags)
    profile = load_profile(model)
    cap = capabilities.parse_capability(case["compute_capability"])
    model_type = str(profile.config.get("model_type") or "")
    try:
        dtype = capabilities.resolve_dtype(
            model_type, profile.dtype, options.get("dtype", "auto"), cap
        )
        method = capabilities.checkpoint_quantization(
            options.get("quantization"),
            profile.quantization.method if profile.quantization else None,
        )
    except capabilities.VllmRefusal as err:
        return str(err), None, None
    reason = capabilities.refusal(
        compute_capability=cap,
        dtype=dtype,
        quantization=method,
        kv_cache_dtype=options.get("kv-cache-dtype", "auto"),
        gpu_name=case["gpu"],
        head_size=profile.text.head_dim,
        mm_prefix=profile.multimodal and model_type in capabilities.MM_PREFIX_LM,
    )
    return reason, dtype, method


@pytest.fixture(scope="module")
def matrix(engine: EngineVenv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cases: list[Case] = []
    root = tmp_path_factory.mktemp("inventories")
    for gpu_name in GPUS:
        gpu = resolve_gpu(gpu_name)
        path = root / f"{gpu.name}.yaml"
        pool = {"name": "pool", "gpu": gpu.name, "nodes": 1, "gpusPerNode": 8}
        path.write_text(yaml.safe_dump({"pools": [pool]}))
        inventory = load_inventory(path)
        for model in catalog_ids():
            for workload in modalities.supported_modalities(load_profile(model)) or ("text",):
                case = Case(f"{model}|{workload}|{gpu.name}", model, workload, gpu)
                try:
                    case.plan = plan(spec_for(model, workload), inventory)
                except PlanningError as err:
                    case.planning_error = str(err)
                cases.append(case)
    table = table_cases()
    requests: dict[str, dict[str, Any]] = {
        name: {**c, "argv": catalog_argv(c["argv"])} for name, c in {**CONTROLS, **table}.items()
    }
    # The pods of a replica over two 4x L40S nodes (TP 4 x PP 2), as the kubelet runs them.
    multinode = {f"multinode:{role}": role for role in (ROLE_LEADER, ROLE_WORKER)}
    for name, role in multinode.items():
        requests[name] = {
            "argv": catalog_argv(multinode_argv(role)),
            "compute_capability": resolve_gpu("L40S").compute_capability,
            "gpu": "L40S",
            "gpus_per_node": 4,
        }
    # control: three nodes cannot hold TP 4 x PP 2 (vLLM checks that --nnodes divides them)
    bad = [
        a if not a.startswith("--nnodes=") else "--nnodes=3" for a in multinode_argv(ROLE_LEADER)
    ]
    requests["multinode:control-nnodes"] = {
        **requests["multinode:leader"],
        "argv": catalog_argv(bad),
    }
    for case in cases:
        if case.plan is not None:
            requests[case.name] = {
                "argv": catalog_argv(vllm_args(case.plan)),
                "compute_capability": case.gpu.compute_capability,
                "gpu": case.gpu.name,
            }
    verdicts: dict[str, Any] = engine.run_json(CHECK, requests, offline=True)
    for case in cases:
        case.verdict = verdicts.get(case.name)
    return {
        "cases": cases,
        "controls": {k: verdicts[k] for k in CONTROLS},
        "table": {k: (table[k], verdicts[k]) for k in table},
        "multinode": {k: verdicts[k] for k in multinode},
        "multinode_control": verdicts["multinode:control-nnodes"],
    }


def planned(matrix: dict[str, Any]) -> list[Case]:
    return [c for c in matrix["cases"] if c.plan is not None]


def offline_remote_code(case: Case) -> bool:
    """vLLM needs the checkpoint's remote config class, which the catalog does not ship."""
    return bool(case.verdict and case.verdict.get("remote_code"))


def test_the_matrix_covers_every_model_modality_and_generation(matrix: dict[str, Any]) -> None:
    cases: list[Case] = matrix["cases"]
    assert {c.model for c in cases} == set(catalog_ids())
    assert {c.gpu.architecture for c in cases} == {
        "turing", "ampere", "ada-lovelace", "hopper", "blackwell"
    }  # fmt: skip
    assert {"image", "video", "audio", "text"} <= {c.workload for c in cases}
    assert len(planned(matrix)) > len(cases) // 2, [c.planning_error for c in cases][:5]


def test_the_check_refuses_what_vllm_refuses(matrix: dict[str, Any]) -> None:
    controls = matrix["controls"]
    gemma = controls["control:gemma3-t4"]
    assert gemma["ok"] and gemma["dtype"] == "float32", gemma
    assert not controls["control:fp8-kv-t4"]["ok"]
    assert "requires SM89+" in controls["control:fp8-kv-t4"]["error"]
    assert "Cannot find the config file for awq" in controls["control:awq-on-bf16"]["error"]
    remote = controls["control:remote-code"]
    assert not remote["ok"] and remote["trust_remote_code_required"], remote
    assert "trust_remote_code=True" in remote["error"]
    assert controls["control:bf16-t4"]["stage"] == "worker"
    assert "Bfloat16 is only supported" in controls["control:bf16-t4"]["error"]


def test_plans_are_accepted_by_vllm_on_their_gpu(matrix: dict[str, Any]) -> None:
    refused = [
        f"{c.name}: [{c.verdict['stage']}] {c.verdict['error']}"
        for c in planned(matrix)
        if c.verdict is not None and not c.verdict["ok"] and not offline_remote_code(c)
    ]
    assert not refused, f"{len(refused)} plan(s) vLLM refuses:\n" + "\n".join(refused)


def test_a_replica_over_two_nodes_is_accepted_by_vllms_configuration(
    matrix: dict[str, Any],
) -> None:
    """Leader and headless worker of a TP 4 x PP 2 plan: vLLM 0.32.0's parser, model and
    engine configs (ParallelConfig: --nnodes divides TP x PP, the rank within the nodes, the
    multiprocessing executor across nodes), the worker's dtype and the attention backend."""
    for name, verdict in matrix["multinode"].items():
        assert verdict["ok"], f"{name}: [{verdict['stage']}] {verdict['error']}"
        assert verdict["quantization"] == "fp8", verdict
    control = matrix["multinode_control"]
    assert not control["ok"] and control["stage"] == "engine_config", control
    assert "must evenly divide the total world size (8)" in control["error"], control


def test_models_that_need_remote_code_are_planned_with_it(matrix: dict[str, Any]) -> None:
    for case in planned(matrix):
        assert case.verdict is not None
        if case.verdict["trust_remote_code_required"]:
            assert case.plan is not None and "--trust-remote-code" in vllm_args(case.plan), (
                case.name
            )
            # the catalog has config.json only: vLLM stops at the remote config class
            assert offline_remote_code(case), case.verdict


def test_vllm_resolves_the_planned_dtype_and_length(matrix: dict[str, Any]) -> None:
    wrong = []
    for case in planned(matrix):
        v, p = case.verdict, case.plan
        assert v is not None and p is not None
        if v["dtype"] is None:
            continue  # refused before dtype resolution (reported by the acceptance test)
        if v["dtype"] != p.memory.dtype or v["max_model_len"] != p.max_model_len:
            wrong.append(
                f"{case.name}: vLLM {v['dtype']} / {v['max_model_len']}, "
                f"plan {p.memory.dtype} / {p.max_model_len}"
            )
    assert not wrong, "\n".join(wrong)


def planned_model(case: Case) -> tuple[ModelProfile, str | None, bool]:
    """The served checkpoint's profile, the quantization vLLM resolves for the plan, and whether
    vLLM runs the model as a multimodal-prefix LM."""
    assert case.plan is not None
    profile = load_profile(vllm_args(case.plan)[0])
    flag = next(
        (a.split("=", 1)[1] for a in vllm_args(case.plan) if a.startswith("--quantization=")), None
    )
    checkpoint = profile.quantization.method if profile.quantization else None
    method = capabilities.checkpoint_quantization(flag, checkpoint)
    mm_prefix = profile.multimodal and profile.config.get("model_type") in capabilities.MM_PREFIX_LM
    return profile, method, mm_prefix


def test_planned_quantization_and_kv_dtype_are_allowed_by_the_table(
    matrix: dict[str, Any],
) -> None:
    wrong = []
    for case in planned(matrix):
        assert case.plan is not None
        profile, method, mm_prefix = planned_model(case)
        reason = capabilities.refusal(
            compute_capability=case.capability,
            vendor=case.gpu.vendor,
            gpu_name=case.gpu.name,
            dtype=case.plan.memory.dtype,
            quantization=method,
            kv_cache_dtype=case.plan.kv_cache_dtype,
            head_size=profile.text.head_dim,
            mm_prefix=mm_prefix,
        )
        if reason:
            wrong.append(f"{case.name}: {reason}")
    assert not wrong, "\n".join(wrong)


def test_the_table_agrees_with_vllm_on_quantization_and_attention(
    matrix: dict[str, Any],
) -> None:
    disagree = []
    for case in planned(matrix):
        v = case.verdict
        assert v is not None and case.capability is not None
        profile, method, mm_prefix = planned_model(case)
        if v["stage"] not in ("parse", "model_config") and v["quantization"] != method:
            disagree.append(f"{case.name}: vLLM quantization {v['quantization']}, table {method}")
        if v["attention"] is None or not v["dtype"]:
            continue
        table = capabilities.attention(
            case.capability,
            v["dtype"],
            v["kv_cache_dtype"] or "auto",
            head_size=profile.text.head_dim,
            mm_prefix=mm_prefix,
            gpu_name=case.gpu.name,
        )
        engine_refused = v["stage"] == "attention"
        if (table.refusal is not None) != engine_refused:
            disagree.append(f"{case.name}: table {table}, vLLM {v['attention']}")
        elif not engine_refused and not mm_prefix and v["attention"]["selected"] != [table.backend]:
            disagree.append(f"{case.name}: table {table.backend}, vLLM {v['attention']}")
    assert not disagree, "\n".join(disagree)


def test_the_table_predicts_what_vllm_does_for_each_kind_of_checkpoint_flag_and_gpu(
    matrix: dict[str, Any],
) -> None:
    disagree = []
    for name, (case, verdict) in matrix["table"].items():
        reason, dtype, method = table_prediction(case)
        if reason is None:
            if not verdict["ok"]:
                disagree.append(
                    f"{name}: table accepts, vLLM: [{verdict['stage']}] {verdict['error']}"
                )
            elif (verdict["dtype"], verdict["quantization"]) != (dtype, method):
                disagree.append(
                    f"{name}: table {dtype}/{method}, "
                    f"vLLM {verdict['dtype']}/{verdict['quantization']}"
                )
        elif verdict["ok"] or reason not in verdict["error"]:
            disagree.append(f"{name}: table refuses ({reason}), vLLM: {verdict['error'] or 'ok'}")
    assert not disagree, f"{len(disagree)} disagreement(s):\n" + "\n".join(disagree)


def test_the_table_grid_exercises_every_gate(matrix: dict[str, Any]) -> None:
    errors = " ".join(v["error"] for _, v in matrix["table"].values())
    for gate in (
        "Bfloat16 is only supported",
        "does not support float16",
        "FP8 KV cache is not supported by the Triton attention backend",
        "Cannot find the config file for awq",
        "is not supported for quantization method fp8",
        "does not match the quantization method",
    ):
        assert gate in errors, gate


FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"


def test_a_hub_model_outside_the_catalog_is_judged_as_vllm_judges_it(
    engine: EngineVenv, tmp_path: Path
) -> None:
    """gpt-oss-20b (its published config, bench/families; MXFP4 experts) planned as the operator
    plans a Hub model: where mmop plans it vLLM's configuration code accepts the argv with the
    dtype mmop planned for; where mmop refuses it (Turing), vLLM refuses it for the same
    reason."""
    from mmop.model import load_profile_from_dir

    directory = FAMILIES / "openai" / "gpt-oss-20b"
    profile = load_profile_from_dir(directory, "openai/gpt-oss-20b")
    requests: dict[str, dict[str, Any]] = {}
    planned_gpus, refused = set(), {}
    for gpu_name in ("T4", "A100-80GB", "L4", "H100-80GB"):
        gpu = resolve_gpu(gpu_name)
        pool = {"name": "pool", "gpu": gpu.name, "nodes": 1, "gpusPerNode": 8}
        path = tmp_path / f"inventory-{gpu.name}.yaml"
        path.write_text(yaml.safe_dump({"pools": [pool]}))
        spec = MultimodalModel.model_validate(
            {"apiVersion": "mmop.dev/v1alpha1", "kind": "MultimodalModel",
             "metadata": {"name": "gpt-oss"},
             "spec": {"model": {"id": "openai/gpt-oss-20b"},
                      "workload": {"promptTokens": 2048, "outputTokens": 512, "concurrency": 8}}}
        )  # fmt: skip
        try:
            got = plan(spec, load_inventory(path), resolved={"openai/gpt-oss-20b": profile})
            argv = [str(directory), *vllm_args(got)[1:]]
            planned_gpus.add(gpu.name)
        except PlanningError as err:
            refused[gpu.name] = str(err)
            argv = [str(directory), "--max-model-len=4096"]
        requests[gpu.name] = {
            "argv": argv,
            "compute_capability": gpu.compute_capability,
            "gpu": gpu.name,
        }
    verdicts = engine.run_json(CHECK, requests, offline=True)
    assert planned_gpus == {resolve_gpu(g).name for g in ("A100-80GB", "L4", "H100-80GB")}
    for name in planned_gpus:
        assert verdicts[name]["error"] == "", (name, verdicts[name])
        assert verdicts[name]["dtype"] == "bfloat16"
        assert verdicts[name]["quantization"] in ("mxfp4", "gpt_oss_mxfp4")
    (turing,) = refused
    assert "Minimum capability: 80. Current capability: 75." in refused[turing]
    assert "Minimum capability: 80. Current capability: 75." in verdicts[turing]["error"]
