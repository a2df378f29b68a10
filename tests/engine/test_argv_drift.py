"""Every argv mmop renders for the examples (mmop.render.vllm_args) is accepted by the pinned
vLLM's own serve parser and pre-load checks; a renamed or dropped flag fails here first, and so
does a flag name in mmop.vllm that the pinned vLLM does not know."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.engine.launcher import ADDED_FLAGS, CPU_INCOMPATIBLE_FLAGS, engine_argv
from e2e.engine.scenario import EXAMPLES, PRESSURE_FLAGS, example_files
from e2e.engine.venv import EngineVenv

from mmop import vllm
from mmop.api import MultimodalModel
from mmop.inventory import default_inventory
from mmop.planner import plan
from mmop.render import (
    LWS_LEADER_ADDRESS_ENV,
    LWS_WORKER_INDEX_ENV,
    ROLE_LEADER,
    ROLE_WORKER,
    vllm_args,
)

CHECK = Path(__file__).resolve().parents[2] / "e2e" / "engine" / "scripts" / "check_args.py"


@functools.cache
def example_argv(example: str) -> list[str]:
    """The argv mmop renders for ``examples/<example>`` on the default inventory."""
    manifest = MultimodalModel.model_validate(yaml.safe_load((EXAMPLES / example).read_text()))
    return vllm_args(plan(manifest, default_inventory()))


def flag_samples() -> list[str]:
    """One argument per flag name of mmop.vllm, with a value vLLM's parser accepts."""
    values = {
        vllm.FLAG_SERVED_MODEL_NAME: "m",
        vllm.FLAG_PORT: str(vllm.OPENAI_PORT),
        vllm.FLAG_TENSOR_PARALLEL_SIZE: "1",
        vllm.FLAG_MAX_MODEL_LEN: "4096",
        vllm.FLAG_MAX_NUM_SEQS: "8",
        vllm.FLAG_MAX_NUM_BATCHED_TOKENS: "4096",
        vllm.FLAG_GPU_MEMORY_UTILIZATION: "0.9",
        vllm.FLAG_QUANTIZATION: "fp8",
        vllm.FLAG_KV_CACHE_DTYPE: "fp8",
        vllm.FLAG_LIMIT_MM_PER_PROMPT: '{"image":1}',
        vllm.FLAG_MM_PROCESSOR_KWARGS: '{"max_pixels":1003520}',
        vllm.FLAG_MM_PROCESSOR_CACHE_GB: str(vllm.DEFAULT_MM_PROCESSOR_CACHE_GB),
        vllm.FLAG_REVISION: "main",
        vllm.FLAG_PIPELINE_PARALLEL_SIZE: "2",
        vllm.FLAG_DISTRIBUTED_EXECUTOR_BACKEND: vllm.EXECUTOR_BACKEND_MP,
        vllm.FLAG_NNODES: "2",
        vllm.FLAG_NODE_RANK: "1",
        vllm.FLAG_MASTER_ADDR: "127.0.0.1",
        vllm.FLAG_MASTER_PORT: str(vllm.DEFAULT_MASTER_PORT),
    }
    switches = [vllm.FLAG_TRUST_REMOTE_CODE, vllm.FLAG_HEADLESS]
    names = {v for k, v in vars(vllm).items() if k.startswith("FLAG_")}
    assert names == {*values, *switches}
    return [*(f"{k}={v}" for k, v in values.items()), *switches]


# What the kubelet makes of LeaderWorkerSet's variables in a multi-node replica's argv.
KUBELET_EXPANSION = {
    f"$({LWS_LEADER_ADDRESS_ENV})": "127.0.0.1",
    f"$({LWS_WORKER_INDEX_ENV})": "1",
}


def multinode_argv(role: str) -> list[str]:
    """The argv of one pod of a replica planned over two L40S nodes, as the kubelet runs it."""
    manifest = MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "big"},
            "spec": {
                "model": {"id": "Qwen/Qwen3-235B-A22B-FP8"},
                "placement": {"gpuTypes": ["L40S"]},
            },
        }
    )
    p = plan(manifest, default_inventory(), multinode=True)
    assert p.nodes_per_replica == 2
    argv = vllm_args(p, role)
    for var, value in KUBELET_EXPANSION.items():
        argv = [a.replace(var, value) for a in argv]
    return argv


# A value mmop could render for each flag the launcher drops on a CPU.
DROPPED_SAMPLES = {
    "--quantization": "fp8",
    "--kv-cache-dtype": "fp8",
    "--gpu-memory-utilization": "0.9",
    "--tensor-parallel-size": "1",
}


def check(engine: EngineVenv, argvs: dict[str, list[str]]) -> dict[str, Any]:
    result: dict[str, Any] = engine.run_json(CHECK, argvs, timeout=300)
    return result


@pytest.fixture(scope="module")
def verdicts(engine: EngineVenv) -> dict[str, Any]:
    argvs = {name: example_argv(name) for name in example_files()}
    # controls: the check must reject what vLLM does not know
    argvs["control:unknown-flag"] = ["org/model", "--max-model-len=4096", "--no-such-flag=1"]
    argvs["control:bad-json"] = ["org/model", '--limit-mm-per-prompt={"image":']
    # the launcher's own flags: what it adds and what the pressure scenario appends
    argvs["launcher"] = engine_argv(["org/model", *PRESSURE_FLAGS], "/models/x", 8000).argv
    # the flags it drops must still be vLLM flags (else the list is stale)
    argvs["dropped"] = ["org/model", *(f"{f}={v}" for f, v in DROPPED_SAMPLES.items())]
    # every flag name mmop.vllm holds, at once
    argvs["mmop.vllm"] = ["org/model", *flag_samples()]
    # the pods of a multi-node replica (LeaderWorkerSet): leader and headless worker
    argvs["multinode:leader"] = multinode_argv(ROLE_LEADER)
    argvs["multinode:worker"] = multinode_argv(ROLE_WORKER)
    return check(engine, argvs)


@pytest.mark.parametrize("example", example_files())
def test_rendered_argv_is_accepted_by_vllm(verdicts: dict[str, Any], example: str) -> None:
    verdict = verdicts[example]
    assert verdict["ok"], f"vLLM rejects mmop's argv for {example}: {verdict['error']}"
    assert verdict["model"] == example_argv(example)[0]  # the positional model is the model


def test_the_check_rejects_unknown_flags_and_bad_values(verdicts: dict[str, Any]) -> None:
    assert not verdicts["control:unknown-flag"]["ok"]
    assert "--no-such-flag" in verdicts["control:unknown-flag"]["error"]
    assert not verdicts["control:bad-json"]["ok"]
    assert "--limit-mm-per-prompt" in verdicts["control:bad-json"]["error"]


def test_every_flag_name_mmop_renders_is_a_pinned_vllm_flag(verdicts: dict[str, Any]) -> None:
    assert verdicts["mmop.vllm"]["ok"], verdicts["mmop.vllm"]["error"]


@pytest.mark.parametrize("role", [ROLE_LEADER, ROLE_WORKER])
def test_a_multinode_replicas_argv_is_accepted_by_vllm(verdicts: dict[str, Any], role: str) -> None:
    verdict = verdicts[f"multinode:{role}"]
    assert verdict["ok"], f"vLLM rejects the {role}'s argv: {verdict['error']}"


def test_the_launchers_flag_lists_are_vllm_flags(verdicts: dict[str, Any]) -> None:
    assert set(DROPPED_SAMPLES) == set(CPU_INCOMPATIBLE_FLAGS)
    assert verdicts["dropped"]["ok"], verdicts["dropped"]["error"]
    assert verdicts["launcher"]["ok"], verdicts["launcher"]["error"]


def test_the_launcher_keeps_mmops_argv_but_for_cpu_flags() -> None:
    rendered = example_argv("qwen2.5-vl-7b.yaml")
    built = engine_argv(["vllm", "serve", *rendered], "/models/tiny", 9000)
    kept = [a for a in rendered[1:] if a.split("=")[0] not in CPU_INCOMPATIBLE_FLAGS]
    kept = [a for a in kept if not a.startswith("--port")]
    assert built.argv == [
        "--model",
        "/models/tiny",
        *kept,
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
        *ADDED_FLAGS,
    ]
    reasons = dict(built.dropped)
    assert reasons[rendered[0]] == "the local tiny model's directory"
    for arg in rendered:
        flag = arg.split("=")[0]
        if flag in CPU_INCOMPATIBLE_FLAGS:
            assert reasons[arg] == CPU_INCOMPATIBLE_FLAGS[flag]
