"""The operator against the sandbox, driven with kubectl as a user would."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVE_LABEL = {"sandbox.mmop.dev/serve": "sim"}


def kubectl(sandbox: SandboxState, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@contextlib.contextmanager
def in_process_operator(
    sandbox: SandboxState, pod_annotations: dict[str, str] | None = None, serve: str = "sim"
) -> Iterator[Any]:
    """The operator running in-process (kopf's KopfRunner) against the sandbox, its pods
    labelled for the sandbox's pod server (``serve``: the stand-in ``sim`` or the real engine
    ``vllm``) and annotated to shape them; yields its state."""
    from kopf.testing import KopfRunner

    from mmop.controller import handlers
    from mmop.controller.kube import Kube
    from mmop.render import RenderOptions

    kubectl(
        sandbox, "apply", "--server-side", "--field-manager=mmop-tests", "-f", str(ROOT / "crds")
    )
    kubectl(
        sandbox, "wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev",
        "--timeout=60s",
    )  # fmt: skip
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = sandbox.kubeconfig
    from kubernetes import config

    handlers.STATE.kube = Kube(config.new_client_from_config(sandbox.kubeconfig))
    handlers.STATE.render_options = RenderOptions(
        extra_pod_labels={"sandbox.mmop.dev/serve": serve},
        extra_pod_annotations=dict(pod_annotations or {}),
    )
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", "-m", "mmop.controller.handlers"]
    )
    runner.__enter__()
    try:
        yield handlers.STATE
    finally:
        runner.__exit__(None, None, None)
        handlers.STATE.render_options = RenderOptions()
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState) -> Iterator[Any]:
    with in_process_operator(sandbox) as state:
        yield state


def get_mm(sandbox: SandboxState, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl(sandbox, "get", "mmm", name, "-n", namespace, "-o", "json"))


def condition(mm: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for cond in (mm.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def deployment(sandbox: SandboxState, namespace: str, name: str) -> dict[str, Any] | None:
    out = subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "get", "deployment", name,
         "-n", namespace, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return json.loads(out.stdout) if out.returncode == 0 else None


def apply_manifest(sandbox: SandboxState, namespace: str, doc: dict[str, Any]) -> None:
    kubectl(sandbox, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc))


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "examples" / name).read_text()))


def test_example_becomes_ready_on_the_planned_gpus(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    apply_manifest(sandbox, namespace, example("qwen2.5-vl-7b.yaml"))
    mm = wait_for(
        lambda: (m := get_mm(sandbox, namespace, "qwen-vl")) and condition(m, "Planned") and m,
        "Planned on qwen-vl",
    )
    planned = condition(mm, "Planned")
    assert planned and planned["status"] == "True", planned
    plan = mm["status"]["plan"]
    dep = wait_for(lambda: deployment(sandbox, namespace, "qwen-vl"), "the Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert plan["model"] in container["args"] + container.get("command", [])
    for arg in plan["args"][1:]:
        assert arg in container["args"], arg
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (
        plan["gpusPerReplica"],
        str(plan["gpusPerReplica"]),
    )
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "MultimodalModel"

    mm = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "qwen-vl"))
            and (c := condition(m, "Ready"))
            and c["status"] == "True"
            and m
        ),
        "Ready=True on qwen-vl",
        timeout=120,
    )
    assert mm["status"]["readyReplicas"] == dep["spec"]["replicas"]
    # Nothing holds the model back from deletion when the operator is gone.
    assert not mm["metadata"].get("finalizers")
    pods = json.loads(
        kubectl(
            sandbox, "get", "pods", "-n", namespace, "-l", "mmop.dev/model=qwen-vl", "-o", "json"
        )
    )["items"]
    nodes = json.loads(kubectl(sandbox, "get", "nodes", "-o", "json"))["items"]
    product = {
        n["metadata"]["name"]: n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes
    }
    assert pods and all(product[p["spec"]["nodeName"]] == plan["gpuProduct"] for p in pods)
    printed = kubectl(sandbox, "get", "mmm", "-n", namespace)
    assert "qwen-vl" in printed and plan["gpu"] in printed


def test_spec_edit_replans_and_rolls(sandbox: SandboxState, operator: Any, namespace: str) -> None:
    doc = example("gemma-3-27b.yaml")
    apply_manifest(sandbox, namespace, doc)
    first = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "gemma3"))
            and (m.get("status") or {}).get("plan")
            and m
        ),
        "a plan for gemma3",
    )["status"]["plan"]
    doc["spec"]["workload"]["contextLength"]["min"] = 65536
    apply_manifest(sandbox, namespace, doc)
    second = wait_for(
        lambda: (
            (p := (get_mm(sandbox, namespace, "gemma3").get("status") or {}).get("plan"))
            and p["maxModelLen"] >= 65536
            and p
        ),
        "a re-plan with the longer context",
    )
    assert second["templateHash"] != first["templateHash"]
    wait_for(
        lambda: (
            (d := deployment(sandbox, namespace, "gemma3"))
            and "--max-model-len=65536" in d["spec"]["template"]["spec"]["containers"][0]["args"]
        ),
        "the Deployment to carry the new --max-model-len",
    )


def test_impossible_spec_is_not_planned_and_creates_nothing(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    doc = example("qwen2.5-vl-7b.yaml")
    doc["metadata"]["name"] = "too-big"
    doc["spec"]["model"] = {"id": "Qwen/Qwen2.5-VL-72B-Instruct"}
    doc["spec"]["placement"] = {
        "gpuTypes": ["L4"],
        "maxGpusPerReplica": 1,
        "quantizations": ["none"],
    }
    apply_manifest(sandbox, namespace, doc)
    mm = wait_for(
        lambda: (m := get_mm(sandbox, namespace, "too-big")) and condition(m, "Planned") and m,
        "a Planned condition on too-big",
    )
    planned = condition(mm, "Planned")
    assert planned and planned["status"] == "False" and planned["reason"] == "Infeasible"
    assert "nearest miss" in planned["message"]
    assert deployment(sandbox, namespace, "too-big") is None
    events = kubectl(
        sandbox, "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=too-big"
    )
    assert "Infeasible" in events


def test_delete_cascades(sandbox: SandboxState, operator: Any, namespace: str) -> None:
    doc = example("llava-next-mistral-7b.yaml")
    apply_manifest(sandbox, namespace, doc)
    wait_for(lambda: deployment(sandbox, namespace, "llava-next"), "the Deployment")
    kubectl(sandbox, "delete", "mmm", "llava-next", "-n", namespace, "--wait=true")
    wait_for(
        lambda: deployment(sandbox, namespace, "llava-next") is None,
        "the Deployment to go",
        timeout=60,
    )


def test_unchanged_models_cause_no_writes_on_resume(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    doc = example("qwen2-audio-7b.yaml")
    apply_manifest(sandbox, namespace, doc)
    wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "qwen-audio"))
            and (c := condition(m, "Ready"))
            and c["status"] == "True"
        ),
        "Ready=True on qwen-audio",
        timeout=120,
    )
    from mmop.controller import handlers

    def versions() -> dict[str, str]:
        out = {"mm": get_mm(sandbox, namespace, "qwen-audio")["metadata"]["resourceVersion"]}
        for kind in ("deployment", "service", "poddisruptionbudget"):
            obj = json.loads(
                kubectl(sandbox, "get", kind, "qwen-audio", "-n", namespace, "-o", "json")
            )
            out[kind] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    body = get_mm(sandbox, namespace, "qwen-audio")
    patch = kopf.Patch()
    action = handlers.reconcile_model(body, patch, logging.getLogger("test"))
    assert action == "unchanged"
    assert not patch, dict(patch)
    # Nothing was written to the model or its children (every write bumps a resourceVersion;
    # the operator running beside this test writes for other models, so its counter is no use).
    assert versions() == before


def test_later_models_plan_around_gpus_earlier_ones_took(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    first = {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "takes-all-l4"},
        "spec": {
            "model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"},
            "workload": {"images": {"perRequest": 1}},
            "placement": {"gpuTypes": ["L4"]},
            "scaling": {"minReplicas": 8, "maxReplicas": 8},
        },
    }
    apply_manifest(sandbox, namespace, first)
    wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "takes-all-l4"))
            and (m.get("status") or {}).get("readyReplicas") == 8
        ),
        "8 Ready L4 replicas",
        timeout=120,
    )
    second = {
        **first,
        "metadata": {"name": "wants-l4"},
        "spec": {**first["spec"], "scaling": {"minReplicas": 1, "maxReplicas": 2}},
    }
    apply_manifest(sandbox, namespace, second)
    mm = wait_for(
        lambda: (m := get_mm(sandbox, namespace, "wants-l4")) and condition(m, "Planned") and m,
        "a Planned condition on wants-l4",
    )
    planned = condition(mm, "Planned")
    assert planned and planned["status"] == "False" and planned["reason"] == "InsufficientCapacity"
    assert deployment(sandbox, namespace, "wants-l4") is None
    # Capacity comes back: the unplaced model is planned again without any edit.
    kubectl(sandbox, "delete", "mmm", "takes-all-l4", "-n", namespace, "--wait=true")
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "wants-l4"), "Planned"))
            and c["status"] == "True"
        ),
        "wants-l4 to be planned once the GPUs are free",
        timeout=90,
    )


def test_operator_restart_converges_without_duplicate_writes(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    from kopf.testing import KopfRunner

    apply_manifest(sandbox, namespace, example("internvl2.5-8b.yaml"))
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "internvl"), "Ready"))
            and c["status"] == "True"
        ),
        "Ready=True on internvl",
        timeout=120,
    )

    def versions() -> dict[str, str]:
        out = {"mm": get_mm(sandbox, namespace, "internvl")["metadata"]["resourceVersion"]}
        for kind in ("deployment", "service", "poddisruptionbudget"):
            obj = json.loads(
                kubectl(sandbox, "get", kind, "internvl", "-n", namespace, "-o", "json")
            )
            out[kind] = obj["metadata"]["resourceVersion"]
        return out

    before = versions()
    # A second operator process resuming the same objects must find everything in place and
    # write nothing to them (every write would bump a resourceVersion).
    with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "mmop.controller.handlers"]):
        import time

        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # observe for a while; nothing may change
            assert versions() == before
            time.sleep(0.5)
    assert versions() == before


def test_refused_writes_are_retried_with_backoff_and_converge_without_duplicates(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    """Fault injection: an admission policy refuses mmop's Deployments for a while."""
    from mmop.controller import telemetry

    policy = f"deny-deployments-{namespace}"
    docs = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [{"expression": "false", "message": "injected fault"}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]
    kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def refused() -> bool:
        probe = subprocess.run(
            [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "create",
             "deployment", "probe", "--image=x", "--dry-run=server", "-n", namespace],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return probe.returncode != 0 and "injected fault" in probe.stderr

    wait_for(refused, "the admission policy in force")

    def errors() -> float:
        return sum(
            m.value
            for family in telemetry.REGISTRY.collect()
            if family.name == "mmop_reconcile_errors"
            for m in family.samples
            if m.name.endswith("_total")
        )

    errors_before = errors()
    apply_manifest(sandbox, namespace, example("qwen2.5-vl-7b.yaml"))
    wait_for(lambda: errors() >= errors_before + 2, "two refused reconciles (a retry)", 30)
    assert deployment(sandbox, namespace, "qwen-vl") is None
    kubectl(sandbox, "delete", "validatingadmissionpolicybinding", policy)
    kubectl(sandbox, "delete", "validatingadmissionpolicy", policy)
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "qwen-vl"), "Ready"))
            and c["status"] == "True"
        ),
        "Ready=True once writes are accepted again",
        timeout=120,
    )
    for kind in ("deployments", "replicasets", "services", "poddisruptionbudgets"):
        items = json.loads(
            kubectl(sandbox, "get", kind, "-n", namespace, "-l", "mmop.dev/model=qwen-vl",
                    "-o", "json")
        )["items"]  # fmt: skip
        assert len(items) == 1, (kind, [i["metadata"]["name"] for i in items])
