"""End-to-end on a kind cluster with the chart installed (run by e2e/kind/run.sh, `make e2e-kind`).

The operator runs in its own image, as the chart deploys it: two replicas, one leading through
kopf peering. The tests apply a MultimodalModel and watch the in-cluster operator plan it, then
delete the leading pod and watch the standby take over. KUBECONFIG points at the kind cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml
from e2e.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("MMOP_E2E_NAMESPACE", "mmop-system")
RELEASE = os.environ.get("MMOP_E2E_RELEASE", "mmop")
KUBECTL = os.environ.get("MMOP_E2E_KUBECTL", "kubectl")
LEADING = "Resuming operations after the pause"


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [KUBECTL, *args], input=stdin, capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def operator_pods() -> list[dict[str, Any]]:
    out = kubectl(
        "get", "pods", "-n", NAMESPACE, "-o", "json",
        "-l", f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
    )  # fmt: skip
    pods = json.loads(out)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def logs(pod: str) -> str:
    return kubectl("logs", "-n", NAMESPACE, pod, check=False)


def leaders() -> list[str]:
    names = [p["metadata"]["name"] for p in operator_pods()]
    return [n for n in names if LEADING in logs(n)]


def manifest(name: str) -> str:
    doc = yaml.safe_load((ROOT / "examples" / "qwen2.5-omni-7b.yaml").read_text())
    doc["metadata"] = {"name": name}
    return yaml.safe_dump(doc)


def planned_condition(namespace: str, name: str) -> dict[str, Any] | None:
    out = kubectl("get", "mmm", name, "-n", namespace, "-o", "json", check=False)
    if not out:
        return None
    for cond in (json.loads(out).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Planned":
            return dict(cond)
    return None


def new_namespace() -> str:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    return name


def test_two_ready_replicas_hardened_as_the_chart_says() -> None:
    pods = wait_for(
        lambda: (
            (p := operator_pods())
            and len(p) == 2
            and all(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in x["status"]["conditions"]
                )
                for x in p
            )
            and p
        ),
        "two Ready operator pods",
        timeout=180,
    )
    for pod in pods:
        spec = pod["spec"]
        (container,) = spec["containers"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["limits"] and container["resources"]["requests"]


def test_exactly_one_replica_leads() -> None:
    wait_for(lambda: len(leaders()) == 1, "exactly one leading operator", timeout=120)
    peering = json.loads(kubectl("get", "clusterkopfpeering", RELEASE, "-o", "json"))
    assert len(peering.get("status") or {}) == 2, peering


def test_the_leader_plans_a_model_and_the_standby_takes_over() -> None:
    ns = new_namespace()
    try:
        kubectl("apply", "-n", ns, "-f", "-", stdin=manifest("omni"))
        cond = wait_for(lambda: planned_condition(ns, "omni"), "a Planned condition", timeout=180)
        if cond["status"] == "True":
            wait_for(
                lambda: kubectl("get", "deployment", "omni", "-n", ns, check=False),
                "the vLLM Deployment",
            )
        else:  # a kind node too small for the plan's CPU/memory: an answer, with the reason
            assert cond["reason"] in ("InsufficientCapacity", "Infeasible"), cond
        (leader,) = leaders()
        kubectl("delete", "pod", leader, "-n", NAMESPACE, "--wait=false")
        wait_for(
            lambda: (now := leaders()) and leader not in now and now,
            "the standby to take over",
            timeout=120,
        )
        kubectl("apply", "-n", ns, "-f", "-", stdin=manifest("omni-after"))
        wait_for(
            lambda: planned_condition(ns, "omni-after"),
            "the new leader to plan a model",
            timeout=180,
        )
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
