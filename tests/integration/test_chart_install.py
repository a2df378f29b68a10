"""The Helm chart against the sandbox: lint, render with several values files and validate every
object with the API server's server-side dry-run, install, and run the operator with the chart's
ServiceAccount token (TokenRequest) to show it can do what it needs and nothing more (scaling a
Deployment through its scale subresource included); the rendered RBAC never grants Secrets,
deletes, escalation, binding or impersonation; the policy values reach `mmop run`; peering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox import SandboxState
from e2e.sandbox.cluster import free_port
from e2e.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mmop"
VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
# The sandbox's nodes are all GPU nodes (tainted nvidia.com/gpu); kwok marks pods on them Running
# and Ready without running anything, so the installed Deployment's pods never reconcile (the
# tests run the operator themselves, as processes, with the ServiceAccount's token).
SANDBOX_VALUES = {
    "image": {"repository": "mmop-operator", "tag": "test"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
GROUP = "mmop.dev"


def run(sandbox: SandboxState, tool: str, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [sandbox.bin_dir[tool], f"--kubeconfig={sandbox.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def kubectl(sandbox: SandboxState, *args: str, stdin: str | None = None) -> str:
    return run(sandbox, "kubectl", *args, stdin=stdin)


def helm(sandbox: SandboxState, *args: str) -> str:
    return run(sandbox, "helm", *args)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


CREATED_NAMESPACES: list[str] = []


@pytest.fixture(autouse=True)
def delete_namespaces(sandbox: SandboxState) -> Iterator[None]:
    """Namespaces a test created go with it, fully: their models and GPU-holding pods would
    otherwise still be in the inventory of later tests' operators."""
    yield
    names = list(CREATED_NAMESPACES)
    CREATED_NAMESPACES.clear()
    for ns in names:
        # The operators are stopped by now: nothing would remove kopf's finalizers.
        for obj in kubectl(sandbox, "get", "mmm", "-n", ns, "-o", "name").split():
            kubectl(sandbox, "patch", obj, "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip
    if names:
        kubectl(sandbox, "delete", "namespace", *names, "--wait=true", "--timeout=180s")


def create_namespace(sandbox: SandboxState, name: str) -> None:
    kubectl(sandbox, "create", "namespace", name)
    CREATED_NAMESPACES.append(name)
    wait_for(
        lambda: "default" in kubectl(sandbox, "get", "serviceaccounts", "-n", name, "-o", "name"),
        f"the default ServiceAccount in {name}",
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def chart_crds(sandbox: SandboxState) -> None:
    kubectl(
        sandbox, "apply", "--server-side", "--field-manager=mmop-tests", "-f", str(CHART / "crds")
    )
    for crd in (
        "multimodalmodels.mmop.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        wait_for(lambda crd=crd: established(sandbox, crd), f"{crd} Established")


def established(sandbox: SandboxState, crd: str) -> bool:
    obj = json.loads(kubectl(sandbox, "get", "crd", crd, "-o", "json"))
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def test_helm_lint_passes_for_every_values_file(sandbox: SandboxState) -> None:
    for values in [None, *VALUES_FILES]:
        args = ["lint", "--strict", str(CHART)] + ([] if values is None else ["-f", str(values)])
        out = helm(sandbox, *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_values_outside_the_schema_are_refused(sandbox: SandboxState, tmp_path: Path) -> None:
    for bad in (
        {"watch": {"mode": "everywhere"}},
        {"replicaCount": 2, "peering": {"enabled": False}},
        {"prices": {"L4": -1}},
        {"metricsSource": {"type": "prometheus"}},
        {"logLevel": "chatty"},
        {"imageTag": "typo-at-the-top-level"},
    ):
        values = tmp_path / "bad.yaml"
        values.write_text(yaml.safe_dump(bad))
        proc = subprocess.run(
            [sandbox.bin_dir["helm"], "template", "x", str(CHART), "-f", str(values)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode != 0, bad
        assert "schema" in proc.stderr, proc.stderr


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_every_rendered_object_passes_server_side_validation(
    sandbox: SandboxState, chart_crds: None, values: Path
) -> None:
    release_ns = unique("chart")
    create_namespace(sandbox, release_ns)
    data = yaml.safe_load(values.read_text()) or {}
    for ns in (data.get("watch") or {}).get("namespaces") or []:
        if ns not in kubectl(sandbox, "get", "namespaces", "-o", "name"):
            create_namespace(sandbox, ns)
    rendered = docs(
        helm(sandbox, "template", "dry", str(CHART), "-n", release_ns, "-f", str(values))
    )
    assert rendered
    monitors = [d for d in rendered if d["kind"] == "ServiceMonitor"]
    builtin = [d for d in rendered if d["kind"] != "ServiceMonitor"]
    out = kubectl(
        sandbox, "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-",
        stdin=yaml.safe_dump_all(builtin),
    )  # fmt: skip
    assert len(out.split()) == len(builtin), out
    # The ServiceMonitor's CRD (prometheus-operator) is not in the sandbox: check that it selects
    # the metrics Service and names its port.
    if data.get("metrics", {}).get("serviceMonitor", {}).get("enabled"):
        (monitor,) = monitors
        (service,) = [d for d in rendered if d["kind"] == "Service"]
        wanted = monitor["spec"]["selector"]["matchLabels"]
        assert wanted.items() <= service["metadata"]["labels"].items()
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    else:
        assert not monitors


# ------------------------------------------------------------------------------------------------
# Install, RBAC with the ServiceAccount's token, peering


class OperatorProcess:
    """`mmop run` as a child process, with its log in a file."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.log_path = log
        self.health_port = free_port()
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "operator")}
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mmop.cli", "run", *args,
             f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
             f"--metrics-port={self.metrics_port}", "--metrics-address=127.0.0.1"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def operators(tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    started: list[OperatorProcess] = []
    try:
        yield started
    finally:
        for op in started:
            op.stop()


def install(sandbox: SandboxState, tmp_path: Path, release: str, **values: Any) -> str:
    """helm install (waiting for the Deployment) into a fresh namespace; returns it."""
    namespace = unique("mmop-system")
    file = tmp_path / f"{release}-values.yaml"
    file.write_text(yaml.safe_dump({**SANDBOX_VALUES, **values}))
    helm(
        sandbox, "install", release, str(CHART), "-n", namespace, "--create-namespace",
        "-f", str(file), "--wait", "--timeout=120s",
    )  # fmt: skip
    return namespace


def token_kubeconfig(
    sandbox: SandboxState, tmp_path: Path, namespace: str, service_account: str
) -> Path:
    """A kubeconfig that authenticates with a TokenRequest token of the ServiceAccount."""
    token = kubectl(
        sandbox, "create", "token", service_account, "-n", namespace, "--duration=1h"
    ).strip()
    admin = yaml.safe_load(Path(sandbox.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": cluster["name"], "user": service_account}}
        ],
        "current-context": "sa",
    }
    path = tmp_path / f"{service_account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def as_sa(sandbox: SandboxState, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def can_i(sandbox: SandboxState, sa: str, verb: str, resource: str, *where: str) -> bool:
    out = subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "auth", "can-i",
         verb, resource, f"--as={sa}", *where],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip() == "yes"


def model(name: str) -> str:
    doc = yaml.safe_load((ROOT / "examples" / "qwen2.5-vl-7b.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["metadata"].pop("namespace", None)
    return yaml.safe_dump(doc)


def planned(sandbox: SandboxState, namespace: str, name: str) -> dict[str, Any] | None:
    out = subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "get", "mmm", name,
         "-n", namespace, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return None
    mm = json.loads(out.stdout)
    for cond in (mm.get("status") or {}).get("conditions") or []:
        if cond["type"] == "Planned" and cond["status"] == "True":
            return dict(mm)
    return None


def children(sandbox: SandboxState, namespace: str, name: str) -> set[str]:
    out = kubectl(
        sandbox, "get", "deployments,services,poddisruptionbudgets", "-n", namespace,
        "-l", f"mmop.dev/model={name}", "-o", "name",
    )  # fmt: skip
    return {line.split("/")[0].split(".")[0] for line in out.split()}


DENIED_CLUSTER_MODE = [
    ("get", "secrets", "-n", "default"),
    ("list", "secrets", "--all-namespaces"),
    ("watch", "secrets", "--all-namespaces"),
    ("get", "configmaps", "-n", "default"),
    ("delete", "deployments", "-n", "default"),
    ("delete", "multimodalmodels.mmop.dev", "-n", "default"),
    ("create", "pods", "-n", "default"),
    ("patch", "nodes"),
    ("create", "namespaces"),
    ("create", "clusterrolebindings"),
    ("patch", "customresourcedefinitions"),
    ("create", "clusterkopfpeerings.kopf.dev"),
    ("patch", "clusterkopfpeerings.kopf.dev/someone-else"),
]


def test_cluster_mode_install_and_the_token_does_what_mmop_needs_and_no_more(
    sandbox: SandboxState, chart_crds: None, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    release = "mmop"
    ns = install(sandbox, tmp_path, release)
    status = json.loads(helm(sandbox, "status", release, "-n", ns, "-o", "json"))
    assert status["info"]["status"] == "deployed"
    dep = json.loads(kubectl(sandbox, "get", "deployment", release, "-n", ns, "-o", "json"))
    assert dep["status"].get("readyReplicas") == 2
    assert kubectl(sandbox, "get", "clusterkopfpeering", release, "-o", "name")
    sa = f"system:serviceaccount:{ns}:{release}"

    # The cheap matrix: what the ServiceAccount may and may not do.
    for verb, resource, *where in [
        ("watch", "multimodalmodels.mmop.dev", "--all-namespaces"),
        ("patch", "multimodalmodels.mmop.dev/status", "-n", "default"),
        ("list", "nodes"),
        ("watch", "pods", "--all-namespaces"),
        ("patch", "deployments.apps", "-n", "default"),
        ("patch", "deployments.apps", "--subresource=scale", "-n", "default"),
        ("create", "poddisruptionbudgets.policy", "-n", "default"),
        ("create", "events", "-n", "default"),
        ("patch", f"clusterkopfpeerings.kopf.dev/{release}"),
    ]:
        assert can_i(sandbox, sa, verb, resource, *where), (verb, resource, where)
    for verb, resource, *where in DENIED_CLUSTER_MODE:
        assert not can_i(sandbox, sa, verb, resource, *where), (verb, resource, where)

    # The operator itself, authenticated with a TokenRequest token of that ServiceAccount.
    kubeconfig = token_kubeconfig(sandbox, tmp_path, ns, release)
    op = OperatorProcess(kubeconfig, tmp_path / "op.log", "-A", f"--peering={release}")
    operators.append(op)
    wait_for(op.healthy, "the operator's health endpoint", timeout=60)
    work = unique("models")
    create_namespace(sandbox, work)
    kubectl(sandbox, "create", "secret", "generic", "hf-token", "-n", work,
            "--from-literal=token=not-for-mmop")  # fmt: skip
    kubectl(sandbox, "apply", "-n", work, "-f", "-", stdin=model("qwen-vl"))
    mm = wait_for(lambda: planned(sandbox, work, "qwen-vl"), "qwen-vl planned", timeout=90)
    assert mm["status"]["plan"]["templateHash"]
    wait_for(
        lambda: (
            children(sandbox, work, "qwen-vl") == {"deployment", "service", "poddisruptionbudget"}
        ),
        "the Deployment, Service and PDB of qwen-vl",
    )
    wait_for(
        lambda: (
            (m := json.loads(kubectl(sandbox, "get", "mmm", "qwen-vl", "-n", work, "-o", "json")))
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in m["status"].get("conditions", [])
            )
        ),
        "Ready=True from the Deployment watch",
        timeout=90,
    )
    events = kubectl(sandbox, "get", "events", "-n", work, "-o", "json")
    assert any(e["reason"] == "Applied" for e in json.loads(events)["items"])
    log = op.log()
    assert "orbidden" not in log, log[-3000:]  # kopf's APIForbiddenError, the API's "forbidden"
    assert "mmop_reconcile_duration_seconds_count" in op.metrics()

    # ... and is refused what it has no business with.
    for args in (
        ("get", "secret", "hf-token", "-n", work),
        ("get", "secrets", "--all-namespaces"),
        ("delete", "deployment", "qwen-vl", "-n", work),
        ("get", "configmaps", "-n", work),
        ("label", "node", "--all", "mmop.dev/touched=yes"),
        ("create", "namespace", unique("nope")),
    ):
        proc = as_sa(sandbox, kubeconfig, *args)
        assert proc.returncode != 0, args
        assert "Forbidden" in proc.stderr or "forbidden" in proc.stderr, (args, proc.stderr)
    helm(sandbox, "uninstall", release, "-n", ns, "--wait")


def test_namespaced_mode_serves_its_namespace_only(
    sandbox: SandboxState, chart_crds: None, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    served, other = unique("served"), unique("other")
    create_namespace(sandbox, served)
    create_namespace(sandbox, other)
    release = "mmop-ns"
    ns = install(sandbox, tmp_path, release, watch={"mode": "namespaced", "namespaces": [served]})
    assert kubectl(sandbox, "get", "kopfpeering", release, "-n", served, "-o", "name")
    sa = f"system:serviceaccount:{ns}:{release}"
    assert can_i(sandbox, sa, "watch", "multimodalmodels.mmop.dev", "-n", served)
    assert can_i(sandbox, sa, "list", "nodes")  # the one cluster-wide grant: read-only Nodes
    for verb, resource, *where in [
        ("watch", "multimodalmodels.mmop.dev", "-n", other),
        ("list", "multimodalmodels.mmop.dev", "--all-namespaces"),
        ("patch", "deployments.apps", "-n", other),
        ("list", "pods", "--all-namespaces"),
        ("get", "secrets", "-n", served),
        ("list", "customresourcedefinitions"),
        ("list", "namespaces"),
        ("patch", "nodes"),
    ]:
        assert not can_i(sandbox, sa, verb, resource, *where), (verb, resource, where)

    kubeconfig = token_kubeconfig(sandbox, tmp_path, ns, release)
    op = OperatorProcess(kubeconfig, tmp_path / "op.log", "-n", served, f"--peering={release}")
    operators.append(op)
    wait_for(op.healthy, "the operator's health endpoint", timeout=60)
    kubectl(sandbox, "apply", "-n", served, "-f", "-", stdin=model("inside"))
    kubectl(sandbox, "apply", "-n", other, "-f", "-", stdin=model("outside"))
    wait_for(lambda: planned(sandbox, served, "inside"), "inside planned", timeout=90)
    wait_for(
        lambda: "deployment" in children(sandbox, served, "inside"), "the Deployment of inside"
    )
    # The model in the other namespace is not the operator's: never touched.
    outside = json.loads(kubectl(sandbox, "get", "mmm", "outside", "-n", other, "-o", "json"))
    assert not outside.get("status") and not children(sandbox, other, "outside")
    assert not any(k.startswith("mmop.dev/") for k in outside["metadata"].get("annotations") or {})
    log = op.log()
    assert "orbidden" not in log, log[-3000:]
    for args in (
        ("get", "mmm", "-n", other),
        ("get", "deployments", "-n", other),
        ("patch", "mmm", "outside", "-n", other, "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'),
        ("get", "pods", "--all-namespaces"),
    ):  # fmt: skip
        proc = as_sa(sandbox, kubeconfig, *args)
        assert proc.returncode != 0 and "orbidden" in proc.stderr, (args, proc.stderr)
    helm(sandbox, "uninstall", release, "-n", ns, "--wait")


def test_peering_one_reconciles_and_the_other_takes_over(
    sandbox: SandboxState, chart_crds: None, tmp_path: Path, operators: list[OperatorProcess]
) -> None:
    release = "mmop-peer"
    ns = install(sandbox, tmp_path, release, replicaCount=2)
    kubeconfig = token_kubeconfig(sandbox, tmp_path, ns, release)
    peer_args = ("-A", f"--peering={release}", "--log-level=debug")
    first = OperatorProcess(kubeconfig, tmp_path / "first.log", *peer_args)
    operators.append(first)
    wait_for(first.healthy, "the first operator's health endpoint", timeout=60)
    wait_for(lambda: "Resuming operations after the pause" in first.log(), "the leader to start")
    second = OperatorProcess(kubeconfig, tmp_path / "second.log", *peer_args)
    operators.append(second)
    wait_for(second.healthy, "the second operator's health endpoint (a standby is healthy)")
    standby = (
        "Pausing the watch-stream for multimodalmodels.v1alpha1.mmop.dev cluster-wide (blockers: "
        f"{release}@None)"
    )
    wait_for(lambda: standby in second.log(), "the later operator to stand by")
    peers = json.loads(kubectl(sandbox, "get", "clusterkopfpeering", release, "-o", "json"))
    priorities = sorted(p["priority"] for p in peers["status"].values())
    assert len(priorities) == 2 and priorities[0] < priorities[1], peers["status"]

    work = unique("peer")
    create_namespace(sandbox, work)
    kubectl(sandbox, "apply", "-n", work, "-f", "-", stdin=model("before"))
    wait_for(lambda: planned(sandbox, work, "before"), "before planned by the leader", timeout=90)
    wait_for(
        lambda: f"[{work}/before] Handler 'reconcile' succeeded" in first.log(),
        "the leader's reconcile",
    )
    assert "Handler 'reconcile'" not in second.log()
    assert "Resuming operations" not in second.log()

    first.stop()  # a clean stop leaves the peering object: the standby takes over at once
    wait_for(
        lambda: "Resuming operations after the pause" in second.log(),
        "the standby to take over",
        timeout=90,
    )
    kubectl(sandbox, "apply", "-n", work, "-f", "-", stdin=model("after"))
    wait_for(lambda: planned(sandbox, work, "after"), "after planned by the new leader", timeout=90)
    # kopf logs the handler's success after its status write (and its own annotation patch) and
    # the Deployment's first events may be logged before it: wait for the line, do not race it.
    wait_for(
        lambda: f"[{work}/after] Handler 'reconcile' succeeded" in second.log(),
        "the new leader's log of the reconcile",
        timeout=30,
    )
    helm(sandbox, "uninstall", release, "-n", ns, "--wait")


# ------------------------------------------------------------------------------------------------
# Scaling through the chart's ServiceAccount (the autoscaler's write), the RBAC's limits, policy


def plain_deployment(name: str) -> str:
    """A Deployment no model owns: what the autoscaler's patch meets, without an operator that
    could write the replicas back."""
    labels = {"app": name}
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "registry.example.com/x:1"}]},
                },
            },
        }
    )


@pytest.mark.parametrize("mode", ["cluster", "namespaced"])
def test_the_service_account_can_scale_a_deployment_as_the_autoscaler_does(
    sandbox: SandboxState, chart_crds: None, tmp_path: Path, mode: str
) -> None:
    from kubernetes import client, config

    from mmop.controller.kube import Kube

    work = unique("scale")
    create_namespace(sandbox, work)
    release = f"mmop-scale-{mode[:2]}"
    values: dict[str, Any] = {"replicaCount": 1, "peering": {"enabled": False}}
    if mode == "namespaced":
        values["watch"] = {"mode": "namespaced", "namespaces": [work]}
    ns = install(sandbox, tmp_path, release, **values)
    sa = f"system:serviceaccount:{ns}:{release}"
    assert can_i(sandbox, sa, "patch", "deployments.apps", "--subresource=scale", "-n", work)
    # the grant is the scale subresource's patch, nothing more
    assert not can_i(sandbox, sa, "update", "deployments.apps", "--subresource=scale", "-n", work)
    assert not can_i(sandbox, sa, "delete", "deployments.apps", "-n", work)
    kubectl(sandbox, "apply", "-n", work, "-f", "-", stdin=plain_deployment("engine"))
    token = token_kubeconfig(sandbox, tmp_path, ns, release)
    # the operator's own call (controller/kube.py), authenticated as the chart's ServiceAccount
    Kube(config.new_client_from_config(str(token))).scale("Deployment", work, "engine", 3)
    admin = client.AppsV1Api(config.new_client_from_config(sandbox.kubeconfig))
    assert admin.read_namespaced_deployment("engine", work).spec.replicas == 3
    helm(sandbox, "uninstall", release, "-n", ns, "--wait")


FORBIDDEN_VERBS = {"delete", "deletecollection", "escalate", "bind", "impersonate", "*"}


def rendered_rules(sandbox: SandboxState, values: Path | None) -> list[tuple[str, dict[str, Any]]]:
    args = ["template", "rbac", str(CHART), "-n", "mmop-system"]
    if values is not None:
        args += ["-f", str(values)]
    out = []
    for doc in docs(helm(sandbox, *args)):
        if doc["kind"] in ("Role", "ClusterRole"):
            out += [(f"{doc['kind']}/{doc['metadata']['name']}", r) for r in doc["rules"]]
    return out


@pytest.mark.parametrize(
    "values", [None, *VALUES_FILES], ids=lambda p: "defaults" if p is None else p.stem
)
def test_rendered_rbac_grants_no_secrets_no_deletes_and_no_escalation(
    sandbox: SandboxState, values: Path | None
) -> None:
    rules = rendered_rules(sandbox, values)
    assert rules
    for where, rule in rules:
        verbs, resources = set(rule["verbs"]), set(rule["resources"])
        assert not verbs & FORBIDDEN_VERBS, (where, rule)
        assert "*" not in resources, (where, rule)
        if "secrets" in resources:  # only hub.tokenSecrets: get on exactly those names
            assert resources == {"secrets"} and verbs == {"get"}, (where, rule)
            assert rule.get("resourceNames"), (where, rule)
        assert not {r for r in resources if r.startswith(("secrets/", "serviceaccounts"))}, rule
        assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & resources
        assert "*" not in rule.get("apiGroups", []), (where, rule)
        assert not rule.get("nonResourceURLs"), (where, rule)
    scale = [r for _, r in rules if "deployments/scale" in r["resources"]]
    assert scale and all(set(r["verbs"]) == {"patch"} for r in scale), scale


def test_hub_and_calibration_values_become_flags_and_narrow_rules(
    sandbox: SandboxState, tmp_path: Path
) -> None:
    values = tmp_path / "hub.yaml"
    values.write_text(yaml.safe_dump({"hub": {"endpoint": "https://hub.example.com",
                                              "tokenSecrets": ["hf-token"]}}))  # fmt: skip
    rendered = docs(helm(sandbox, "template", "p", str(CHART), "-n", "mmop-system",
                         "-f", str(values)))  # fmt: skip
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--hub-token-secret=hf-token" in container["args"]
    assert "--hub-endpoint=https://hub.example.com" in container["args"]
    assert "--calibration-configmap=$(POD_NAMESPACE)/mmop-calibration" in container["args"]
    assert any(e["name"] == "POD_NAMESPACE" for e in container["env"])
    rules = rendered_rules(sandbox, values)
    secrets = [r for _, r in rules if "secrets" in r["resources"]]
    assert secrets and all(
        r["resourceNames"] == ["hf-token"] and r["verbs"] == ["get"] for r in secrets
    ), secrets
    calibration = [
        d for d in rendered if d["kind"] == "Role" and "calibration" in d["metadata"]["name"]
    ]
    (role,) = calibration
    assert role["metadata"]["namespace"] == "mmop-system"
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": [""], "resources": ["configmaps"],
                      "resourceNames": ["mmop-calibration"], "verbs": ["get", "patch"]}]  # fmt: skip
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"calibration": {"enabled": False}}))
    plain = docs(helm(sandbox, "template", "p", str(CHART), "-f", str(off)))
    (deployment,) = [d for d in plain if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--calibration", "--hub-token"))]
    assert not [d for d in plain if d["kind"] == "Role" and "calibration" in d["metadata"]["name"]]


def test_policy_values_become_run_flags(sandbox: SandboxState, tmp_path: Path) -> None:
    values = tmp_path / "policy.yaml"
    values.write_text(
        yaml.safe_dump(
            {"policy": {"allowedImages": ["registry.example.com/", "vllm/vllm-openai"],
                        "allowedSecrets": ["hf-token", "vllm-api-key"]}}
        )
    )  # fmt: skip
    rendered = docs(helm(sandbox, "template", "p", str(CHART), "-f", str(values)))
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--allowed-")] == [
        "--allowed-image=registry.example.com/",
        "--allowed-image=vllm/vllm-openai",
        "--allowed-secret=hf-token",
        "--allowed-secret=vllm-api-key",
    ]
    defaults = docs(helm(sandbox, "template", "p", str(CHART)))
    (deployment,) = [d for d in defaults if d["kind"] == "Deployment"]
    assert not [a for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith("--allowed-")]  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy": {"allowedSecrets": ["Not_A_Name"]}}))
    proc = subprocess.run(
        [sandbox.bin_dir["helm"], "template", "p", str(CHART), "-f", str(bad)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "allowedSecrets" in proc.stderr, proc.stderr


def admission_policy_example() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding, as docs/install.md shows them."""
    text = (ROOT / "docs" / "install.md").read_text()
    after = text.split("**An admission policy**", 1)[1]
    block = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    return docs(block)


def test_the_documented_admission_policy_refuses_what_the_operator_policy_refuses(
    sandbox: SandboxState, chart_crds: None
) -> None:
    policy, binding = admission_policy_example()
    assert (policy["kind"], binding["kind"]) == (
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    work = unique("vap")
    create_namespace(sandbox, work)
    kubectl(sandbox, "label", "namespace", work, f"mmop.dev/vap-test={work}")
    suffix = uuid.uuid4().hex[:6]
    policy["metadata"]["name"] += f"-{suffix}"
    binding["metadata"]["name"] += f"-{suffix}"
    binding["spec"]["policyName"] = policy["metadata"]["name"]
    # bound to the test namespace only: other tests share the API server
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"mmop.dev/vap-test": work}}
    }
    kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))
    try:

        def verdict(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
            doc = {"apiVersion": "mmop.dev/v1alpha1", "kind": "MultimodalModel",
                   "metadata": {"name": "v"}, "spec": {"model": {"id": "a/b"}, **spec}}  # fmt: skip
            return subprocess.run(
                [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "create",
                 "--dry-run=server", "-n", work, "-f", "-"],
                input=yaml.safe_dump(doc), capture_output=True, text=True, check=False,
            )  # fmt: skip

        refused = [
            ({"engine": {"image": "evil.example.com/x:1"}}, "spec.engine.image"),
            ({"model": {"id": "a/b", "tokenSecretRef": {"name": "db"}}}, "tokenSecretRef"),
            ({"engine": {"apiKeySecretRef": {"name": "db"}}}, "apiKeySecretRef"),
            ({"engine": {"env": [{"name": "LD_PRELOAD", "value": "/x.so"}]}}, "spec.engine.env"),
        ]
        # the binding takes a moment to reach the admission plugin
        wait_for(lambda: verdict(refused[0][0]).returncode != 0, "the policy in force")
        for spec, words in refused:
            proc = verdict(spec)
            assert proc.returncode != 0 and words in proc.stderr, (spec, proc.stderr)
            assert "ValidatingAdmissionPolicy" in proc.stderr
        for spec in (
            {},
            {"engine": {"image": "registry.example.com/vllm/vllm-openai:v0.32.0"}},
            {"engine": {"image": "vllm/vllm-openai:v0.32.0"}},
            {"model": {"id": "a/b", "tokenSecretRef": {"name": "hf-token"}},
             "engine": {"apiKeySecretRef": {"name": "vllm-api-key"},
                        "env": [{"name": "OMP_NUM_THREADS", "value": "4"}]}},
        ):  # fmt: skip
            proc = verdict(spec)
            assert proc.returncode == 0, (spec, proc.stderr)
    finally:
        kubectl(sandbox, "delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
        kubectl(sandbox, "delete", "validatingadmissionpolicy", policy["metadata"]["name"])
