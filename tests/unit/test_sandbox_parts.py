"""Pure parts of the sandbox: node pools, simulator arguments, kwok stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox.podserver import container_port, simulator_args, simulator_environment
from e2e.sandbox.pools import DEFAULT_POOLS, load_pools, node_objects
from pydantic import ValidationError


def test_default_pools_describe_gpu_nodes_like_gfd_does() -> None:
    nodes = node_objects(load_pools(), pod_cidr_octet=120)
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert len(nodes) == 16
    h100 = by_name["h100-0"]
    labels = h100["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.family"] == "hopper"
    assert int(labels["nvidia.com/gpu.memory"]) > 80000
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert h100["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert by_name["l4-7"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    cidrs = [n["spec"]["podCIDR"] for n in nodes]
    assert len(set(cidrs)) == 16 and all(c.startswith("127.120.") for c in cidrs)


def test_pools_reject_unknown_gpus_and_fields(tmp_path: Path) -> None:
    bad = tmp_path / "pools.yaml"
    bad.write_text(
        yaml.safe_dump({"pools": [{"name": "x", "gpu": "H300", "nodes": 1, "gpusPerNode": 8}]})
    )
    with pytest.raises(ValueError, match="unknown GPU 'H300'"):
        load_pools(bad)
    bad.write_text(
        yaml.safe_dump(
            {"pools": [{"name": "x", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "color": "red"}]}
        )
    )
    with pytest.raises(ValidationError):
        load_pools(bad)


def pod(args: list[str], annotations: dict[str, str] | None = None) -> dict:
    return {
        "metadata": {"annotations": annotations or {}},
        "spec": {
            "containers": [{"args": args, "ports": [{"name": "http", "containerPort": 8000}]}]
        },
    }


def test_simulator_takes_the_pods_vllm_arguments() -> None:
    args = simulator_args(
        pod(
            ["--model", "Qwen/Qwen2.5-VL-7B-Instruct", "--served-model-name", "qwen-vl", "--max-num-seqs=16",
             "--max-model-len=8192", "--gpu-memory-utilization=0.9", "--limit-mm-per-prompt", '{"image": 2}'],
            {"sandbox.mmop.dev/time-to-first-token": "200", "sandbox.mmop.dev/kv-cache-blocks": "512"},
        ),
        port=41000,
    )  # fmt: skip
    assert args[:3] == [
        "--port=41000",
        "--model=Qwen/Qwen2.5-VL-7B-Instruct",
        "--force-dummy-tokenizer",
    ]
    assert "--served-model-name" in args and "qwen-vl" in args
    assert "--max-num-seqs=16" in args and "--max-model-len=8192" in args
    assert "--time-to-first-token=200ms" in args and "--kv-cache-size=512" in args
    # A KV size turns the simulator's KV accounting on (once, even when sim-args asks too).
    assert args.count("--enable-kvcache") == 1
    assert not any("gpu-memory-utilization" in a or "limit-mm" in a for a in args)
    assert simulator_environment()["POD_IP"] == "127.0.0.1"


def test_simulator_accepts_vllm_serve_form() -> None:
    args = simulator_args(
        pod(["vllm", "serve", "google/gemma-3-4b-it", "--max-model-len", "4096"]), 9
    )
    assert "--model=google/gemma-3-4b-it" in args and "--max-model-len=4096" in args
    assert container_port(pod([])) == 8000


def test_stages_file_is_valid_yaml_with_the_expected_stages() -> None:
    docs = list(yaml.safe_load_all((DEFAULT_POOLS.parent / "stages.yaml").read_text()))
    names = {d["metadata"]["name"] for d in docs}
    assert names == {"mmop-node-ready", "mmop-pod-delete", "mmop-pod-running", "mmop-pod-serving"}
    assert all(d["kind"] == "Stage" for d in docs)


def test_a_served_pod_starts_as_slowly_as_its_plan_says_scaled_or_as_annotated() -> None:
    from e2e.sandbox.podserver import STARTUP_ANNOTATION, startup_delay

    plain: dict[str, Any] = {"metadata": {}}
    assert startup_delay(plain, 420.0, 0.0) == 0.0  # off by default
    assert startup_delay(plain, 420.0, 0.1) == 42.0  # a tenth of the predicted start-up
    assert startup_delay(plain, None, 0.1) == 0.0  # no plan, no delay
    annotated = {"metadata": {"annotations": {STARTUP_ANNOTATION: "60"}}}
    assert startup_delay(annotated, 420.0, 0.1) == 60.0  # the annotation, unscaled
    bad = {"metadata": {"annotations": {STARTUP_ANNOTATION: "soon"}}}
    assert startup_delay(bad, 420.0, 0.1) == 42.0
