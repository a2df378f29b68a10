"""The operator against the sandbox, driven with kubectl as a user would."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    sandbox: SandboxState,
    pod_annotations: dict[str, str] | None = None,
    serve: str = "sim",
    **config: Any,
) -> Iterator[Any]:
    """The operator running in a thread of this process against the sandbox, its pods
    labelled for the sandbox's pod server (``serve``: the stand-in ``sim`` or the real engine
    ``vllm``) and annotated to shape them; ``config``: OperatorConfig fields. Yields its
    OperatorContext."""
    from mmop.controller import runner
    from mmop.controller.config import from_environment
    from mmop.controller.context import OperatorContext
    from mmop.render import RenderOptions

    kubectl(
        sandbox, "apply", "--server-side", "--field-manager=mmop-tests", "-f", str(ROOT / "crds")
    )
    kubectl(
        sandbox, "wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev",
        "--timeout=60s",
    )  # fmt: skip
    render = RenderOptions(
        extra_pod_labels={"sandbox.mmop.dev/serve": serve},
        extra_pod_annotations=dict(pod_annotations or {}),
    )
    ctx = OperatorContext(
        config=from_environment(kubeconfig=sandbox.kubeconfig, render=render, **config)
    )
    with runner.background(ctx):
        yield ctx


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
    from mmop.controller.reconcile import reconcile_model

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
    assert operator.indexes is not None
    action = reconcile_model(operator, body, operator.indexes, logging.getLogger("test"))
    assert action == "unchanged"
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
    from mmop.controller import runner
    from mmop.controller.config import from_environment
    from mmop.controller.context import OperatorContext

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
    second = OperatorContext(config=from_environment(kubeconfig=sandbox.kubeconfig))
    with runner.background(second):
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
            for family in operator.telemetry.registry.collect()
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


def test_characters_outside_the_basic_plane_reach_the_pods(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    """R4: an emoji in a user value (here an env value) used to make every apply a 400 (the
    client escaped it as a surrogate pair, which the API server's apply-YAML reader refuses)
    and the model got no status at all."""
    doc = example("qwen2.5-vl-7b.yaml")
    doc["spec"].setdefault("engine", {})["env"] = [{"name": "GREETING", "value": "hi 🙂 𝄞"}]
    apply_manifest(sandbox, namespace, doc)
    dep = wait_for(lambda: deployment(sandbox, namespace, "qwen-vl"), "the Deployment", 60)
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GREETING"] == "hi 🙂 𝄞"
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "qwen-vl"), "Planned"))
            and c["status"] == "True"
        ),
        "Planned=True",
    )


def test_pods_the_replicaset_cannot_create_say_why_on_the_model(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    """R6: a model whose pods are refused at creation (here a ResourceQuota allowing no pods)
    showed only "0/1 ready"; the reason stayed on the ReplicaSet."""
    kubectl(
        sandbox, "create", "quota", "no-pods", "--hard=pods=0", "-n", namespace,
    )  # fmt: skip
    apply_manifest(sandbox, namespace, example("qwen2.5-vl-7b.yaml"))

    def refused() -> dict[str, Any] | None:
        ready = condition(get_mm(sandbox, namespace, "qwen-vl"), "Ready")
        return ready if ready and ready["reason"] == "PodCreationFailed" else None

    ready = wait_for(refused, "Ready=False, PodCreationFailed", 90)
    assert ready is not None and ready["status"] == "False"
    assert "exceeded quota" in ready["message"], ready
    kubectl(sandbox, "delete", "quota", "no-pods", "-n", namespace)
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "qwen-vl"), "Ready"))
            and c["status"] == "True"
        ),
        "Ready=True once pods may be created",
        180,
    )


def test_the_operators_policy_refuses_images_secrets_and_env_it_does_not_allow(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    """R5: a user who may only create MultimodalModels could run any image with any
    environment and point the Hub token at any Secret of the namespace. With the operator's
    policy (the chart's policy.* values → mmop run --allowed-image / --allowed-secret) such a
    model is not planned: Planned=False, PolicyDenied, naming each field; nothing is created."""
    from mmop.policy import Policy

    before = operator.config
    operator.config = before.model_copy(
        update={"policy": Policy(allowed_images=("registry.example/",), allowed_secrets=("hf",))}
    )
    try:
        doc = example("qwen2.5-vl-7b.yaml")
        doc["metadata"]["name"] = "deputy"
        doc["spec"]["engine"] = {
            "image": "evil.example/vllm:latest",
            "env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}],
        }
        doc["spec"]["model"]["tokenSecretRef"] = {"name": "someone-elses", "key": "token"}
        apply_manifest(sandbox, namespace, doc)

        def denied() -> dict[str, Any] | None:
            c = condition(get_mm(sandbox, namespace, "deputy"), "Planned")
            return c if c and c["reason"] == "PolicyDenied" else None

        planned = wait_for(denied, "Planned=False, PolicyDenied", 60)
        assert planned is not None and planned["status"] == "False"
        for field in ("spec.engine.image", "spec.model.tokenSecretRef.name", "env[0].name"):
            assert field in planned["message"], planned["message"]
        assert deployment(sandbox, namespace, "deputy") is None
    finally:
        operator.config = before
