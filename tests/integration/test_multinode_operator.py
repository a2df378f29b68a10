"""Replicas over several nodes, operator side (docs/multinode.md), against the sandbox's real
API server and scheduler: with ``--multinode`` a model that no single node holds is planned over
two L40S nodes and applied as a LeaderWorkerSet; a cluster without the LWS API gets a condition
that says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import apply_manifest, condition, get_mm, in_process_operator

BIG = "Qwen/Qwen3-235B-A22B-FP8"  # ~220 GiB of weights: more than a node of 4x L40S


def big_model(name: str = "big") -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": {"model": {"id": BIG}, "placement": {"gpuTypes": ["L40S"]}},
    }


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState) -> Iterator[Any]:
    with in_process_operator(sandbox, multinode=True) as ctx:
        yield ctx


def test_without_the_lws_api_the_model_says_what_to_install(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    apply_manifest(sandbox, namespace, big_model())
    mm = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "big"))
            and (c := condition(m, "Ready"))
            and c["reason"] == "ApplyFailed"
            and m
        ),
        "Ready=False ApplyFailed on a model over two nodes in a cluster without LWS",
        timeout=60,
    )
    planned = condition(mm, "Planned") or {}
    assert planned.get("status") == "True", planned
    plan = mm["status"]["plan"]
    assert plan["nodesPerReplica"] == 2 and plan["pipelineParallelSize"] == 2
    assert plan["gpu"] == "L40S" and plan["gpusPerReplica"] == 8  # 4 per node, 2 nodes
    ready = condition(mm, "Ready") or {}
    assert (
        "LeaderWorkerSet" in ready["message"] and "not served by this cluster" in ready["message"]
    )
    assert "install the LeaderWorkerSet controller" in ready["message"]
