"""What the reliability drills share: the operator as a process of the sandbox, the models they
create, edit and delete, and the external checks of convergence and of writes.

Everything here looks at the operator from outside, through the API server, so the drills hold
whatever the controller looks like inside: the operator runs as ``mmop run --all-namespaces``
(the sandbox's ``operator`` component, its log in ``logs/operator.log``), and what it wrote is
read from the objects' resourceVersions and the API server's request counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.sandbox import Sandbox, SandboxState

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "mmop.dev", "v1alpha1", "multimodalmodels"
MODEL_LABEL = "mmop.dev/model"
MANAGED = "app.kubernetes.io/managed-by=mmop"
TEMPLATE_HASH = "mmop.dev/template-hash"
CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget")
# Small models that one GPU of any sandbox pool serves: every drill model is plannable on a
# cluster with a free GPU.
DRILL_MODELS = (
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct",
    "HuggingFaceTB/SmolVLM-Instruct",
    "google/gemma-3-4b-it",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sandbox_of(state: SandboxState) -> Sandbox:
    """The Sandbox object of a running sandbox (its state file names everything)."""
    return Sandbox(state.name, root=Path(state.root), log=lambda _msg: None)


def kubectl(state: SandboxState, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [state.bin_dir["kubectl"], f"--kubeconfig={state.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout if proc.returncode == 0 else proc.stderr


def source_tree() -> Path:
    """The mmop tree whose operator and CRD the drills run: this checkout, or the tree named by
    MMOP_DRILL_SRC (e.g. an exported commit, to measure a given build)."""
    return Path(os.environ.get("MMOP_DRILL_SRC") or ROOT).resolve()


def install_crd(state: SandboxState) -> None:
    crds = source_tree() / "crds"
    kubectl(state, "apply", "--server-side", "--field-manager=mmop-tests", "-f", str(crds))
    kubectl(
        state, "wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev",
        "--timeout=60s",
    )  # fmt: skip


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """probe()'s first truthy value; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as err:  # an API call refused or timed out: try again
            last = f"{type(err).__name__}: {err}"
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the operator


@dataclass
class OperatorProcess:
    """``mmop run --all-namespaces`` as the sandbox's ``operator`` component (kwok alone runs
    the pods: no pod server label), killed and started again by the drills."""

    box: Sandbox
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    pid: int | None = None
    port: int | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.box.logs / "operator.log"

    def start(self, timeout: float = 120.0) -> float:
        """Start it and wait for its health endpoint; returns the seconds that took."""
        from e2e.sandbox.cluster import _http_ok, free_port

        state = self.box.state()
        assert state is not None
        started = time.monotonic()
        port = free_port()
        argv = [
            sys.executable, "-m", "mmop.cli", "run", "--all-namespaces",
            "--liveness", f"http://127.0.0.1:{port}/healthz", *self.extra_args,
        ]  # fmt: skip
        env = {"KUBECONFIG": state.kubeconfig, "MALLOC_ARENA_MAX": "2", **self.extra_env}
        if source_tree() != ROOT:
            env["PYTHONPATH"] = os.pathsep.join([str(source_tree() / "operator"), str(ROOT)])
        self.box.start_component(
            "operator", argv, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), env, timeout
        )
        state = self.box.state()
        assert state is not None
        self.pid = state.pids["operator"]
        self.port = port
        self.starts += 1
        return time.monotonic() - started

    def alive(self) -> bool:
        if self.pid is None:
            return False
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done == self.pid:
                return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{self.pid}/stat")
        with contextlib.suppress(OSError, IndexError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return False

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Signal its process group and wait until it is gone (reaped: it is our child)."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            wait_until("the operator to exit", lambda: not self.alive(), 10, 0.05)
        self.pid = None

    def healthy(self) -> bool:
        from e2e.sandbox.cluster import _http_ok

        return self.port is not None and _http_ok(f"http://127.0.0.1:{self.port}/healthz")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.is_file() else 0

    def log_text(self, offset: int = 0) -> str:
        if not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")


@contextlib.contextmanager
def running_operator(state: SandboxState, **kwargs: Any) -> Iterator[OperatorProcess]:
    op = OperatorProcess(sandbox_of(state), **kwargs)
    op.start()
    try:
        yield op
    finally:
        op.kill()


# ---------------------------------------------------------------------------- the API


class Api:
    """The few API calls the drills make, with a timeout on each."""

    def __init__(self, state: SandboxState, timeout: float = 30.0) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(state.kubeconfig)  # type: ignore[no-untyped-call]
        self.core: Any = client.CoreV1Api(self.client)
        self.apps: Any = client.AppsV1Api(self.client)
        self.policy: Any = client.PolicyV1Api(self.client)
        self.custom: Any = client.CustomObjectsApi(self.client)
        self.timeout = timeout

    def _json(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        resp = call(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        return json.loads(resp.data)

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.core.create_namespace(
            {"metadata": {"name": name, "labels": labels or {}}}, _request_timeout=self.timeout
        )
        wait_until(
            f"the default ServiceAccount in {name}",
            lambda: any(
                sa.metadata.name == "default"
                for sa in self.core.list_namespaced_service_account(
                    name, _request_timeout=self.timeout
                ).items
            ),
            60,
            0.2,
        )

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.core.delete_namespace(name, _request_timeout=self.timeout)

    def models(self, namespace: str) -> list[dict[str, Any]]:
        items = self._json(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
        )["items"]
        return list(items)

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            get = self.custom.get_namespaced_custom_object
            return dict(self._json(get, GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create_model(self, namespace: str, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=self.timeout
        )

    def patch_model_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}, _request_timeout=self.timeout
        )

    def delete_model(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self.timeout
        )

    def children(self, namespace: str, kind: str) -> list[dict[str, Any]]:
        """mmop-managed objects of ``kind`` in ``namespace``."""
        call = {
            "Deployment": self.apps.list_namespaced_deployment,
            "Service": self.core.list_namespaced_service,
            "PodDisruptionBudget": self.policy.list_namespaced_pod_disruption_budget,
        }[kind]
        return list(self._json(call, namespace, label_selector=MANAGED)["items"])

    def child(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        call = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }[kind]
        try:
            return dict(self._json(call, name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete_child(self, namespace: str, kind: str, name: str) -> None:
        call = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "Service": self.core.delete_namespaced_service,
            "PodDisruptionBudget": self.policy.delete_namespaced_pod_disruption_budget,
        }[kind]
        call(name, namespace, _request_timeout=self.timeout)

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._json(self.core.list_namespaced_event, namespace)["items"])

    def write_counters(self) -> dict[str, float]:
        """The API server's own count of writes (apiserver_request_total): every write to
        multimodalmodels (the object and its status) and every server-side apply to
        Deployments, Services and PodDisruptionBudgets (only mmop applies those; the
        controller-manager writes Deployment status with UPDATE)."""
        method, url, headers, _, _ = self.client.param_serialize(
            "GET", "/metrics", auth_settings=["BearerToken"]
        )
        resp = self.client.call_api(
            method, url, header_params=headers, _request_timeout=self.timeout
        )
        resp.read()
        out = {"models": 0.0, "applies": 0.0}
        for line in resp.data.decode().splitlines():
            m = _METRIC.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group(1)))
            verb, resource = labels.get("verb", ""), labels.get("resource", "")
            if verb not in _WRITE_VERBS or labels.get("dry_run"):
                continue
            value = float(m.group(2))
            if resource == PLURAL:
                out["models"] += value
            elif verb == "APPLY" and resource in _CHILD_RESOURCES:
                out["applies"] += value
        return out


_RESUMED = re.compile(r"\[([^\]\s]+/[^\]\s]+)\] Resuming is processed")
_CHILD_RESOURCES = ("deployments", "services", "poddisruptionbudgets")
_WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "UPDATE", "CREATE"}
_METRIC = re.compile(r"^apiserver_request_total\{(.*)\}\s+([0-9.e+]+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


# ---------------------------------------------------------------------------- models


def manifest(name: str, i: int, edits: int = 0) -> dict[str, Any]:
    """A small drill model; each edit asks for a longer context (a re-plan and a roll)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": spec(i, edits),
    }


def spec(i: int, edits: int = 0) -> dict[str, Any]:
    return {
        "model": {"id": DRILL_MODELS[i % len(DRILL_MODELS)]},
        "workload": {
            "images": {"perRequest": 1, "maxWidth": 1024, "maxHeight": 1024},
            "contextLength": {"min": 4096 + 1024 * edits},
            "concurrency": 2,
        },
        "scaling": {"minReplicas": 1, "maxReplicas": 1},
    }


def condition(mm: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in ((mm or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def _controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def convergence_problems(
    api: Api, namespaces: Iterable[str], require_planned: bool = True
) -> list[str]:
    """What keeps the models of ``namespaces`` from being converged (empty: converged).

    Converged: every live model is handled at its generation (status.observedGeneration and a
    Planned condition; Planned=True with ``require_planned``); every planned model has exactly
    one Deployment, Service and PodDisruptionBudget, each named as the model, labelled with it
    and controlled by it, the Deployment carrying the plan's template hash; no mmop-managed
    object is left without its model (no orphans)."""
    problems: list[str] = []
    for ns in namespaces:
        models = {m["metadata"]["name"]: m for m in api.models(ns)}
        live = {n: m for n, m in models.items() if not m["metadata"].get("deletionTimestamp")}
        uids = {m["metadata"]["uid"] for m in models.values()}
        kids = {kind: api.children(ns, kind) for kind in CHILD_KINDS}
        for kind, objs in kids.items():
            for obj in objs:
                uid = _controller_uid(obj)
                if uid not in uids:
                    problems.append(f"orphan {kind} {ns}/{obj['metadata']['name']} (owner {uid})")
        for name, mm in sorted(live.items()):
            gen = mm["metadata"].get("generation")
            status = mm.get("status") or {}
            planned = condition(mm, "Planned")
            where = f"{ns}/{name}"
            if status.get("observedGeneration") != gen or planned is None:
                problems.append(
                    f"{where}: not handled at generation {gen} "
                    f"(observed {status.get('observedGeneration')}, Planned {planned})"
                )
                continue
            if planned.get("status") != "True":
                if require_planned:
                    problems.append(f"{where}: Planned={planned.get('status')} {planned}")
                continue
            for kind, objs in kids.items():
                mine = [o for o in objs if o["metadata"].get("labels", {}).get(MODEL_LABEL) == name]
                names = sorted(o["metadata"]["name"] for o in mine)
                if names != [name]:
                    problems.append(f"{where}: {kind} objects {names}, want exactly [{name!r}]")
                    continue
                if _controller_uid(mine[0]) != mm["metadata"]["uid"]:
                    problems.append(f"{where}: {kind} not controlled by the model")
                if kind == "Deployment":
                    want = (status.get("plan") or {}).get("templateHash")
                    got = mine[0]["spec"]["template"]["metadata"].get("annotations", {})
                    if got.get(TEMPLATE_HASH) != want:
                        problems.append(
                            f"{where}: Deployment template {got.get(TEMPLATE_HASH)}, plan {want}"
                        )
    return problems


def wait_converged(
    api: Api, namespaces: Sequence[str], timeout: float, require_planned: bool = True
) -> float:
    """Seconds until convergence_problems is empty (AssertionError with the problems left)."""
    started = time.monotonic()
    last: list[str] = []
    while True:
        try:
            last = convergence_problems(api, namespaces, require_planned)
        except Exception as err:  # the API server busy or away: look again
            last = [f"{type(err).__name__}: {err}"]
        if not last:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"not converged after {timeout:.0f} s ({len(last)} problems): "
                + "; ".join(last[:20])
            )
        time.sleep(1.0)


def versions(api: Api, namespaces: Iterable[str]) -> dict[str, str]:
    """resourceVersion of every model and mmop-managed child: any write bumps one."""
    out: dict[str, str] = {}
    for ns in namespaces:
        for mm in api.models(ns):
            out[f"MultimodalModel {ns}/{mm['metadata']['name']}"] = mm["metadata"][
                "resourceVersion"
            ]
        for kind in CHILD_KINDS:
            for obj in api.children(ns, kind):
                out[f"{kind} {ns}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out


def unsettled(api: Api, namespaces: Iterable[str]) -> list[str]:
    """Planned models whose Ready condition does not yet say what their Deployment says."""
    out = []
    for ns in namespaces:
        deployments = {d["metadata"]["name"]: d for d in api.children(ns, "Deployment")}
        for mm in api.models(ns):
            name = mm["metadata"]["name"]
            planned, ready = condition(mm, "Planned"), condition(mm, "Ready")
            if not planned or planned.get("status") != "True":
                continue
            dep = deployments.get(name) or {}
            want = int((dep.get("spec") or {}).get("replicas") or 0)
            have = int((dep.get("status") or {}).get("readyReplicas") or 0)
            is_ready = bool(ready and ready.get("status") == "True")
            status = mm.get("status") or {}
            shown = (int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0))
            if is_ready != (want > 0 and have >= want) or shown != (want, have):
                out.append(
                    f"{ns}/{name}: Ready={is_ready} replicas/ready {shown}, "
                    f"Deployment {want}/{have}"
                )
    return out


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Which annotations, status fields and conditions differ between two reads of a model."""
    out = []
    a0 = (before.get("metadata") or {}).get("annotations") or {}
    a1 = (after.get("metadata") or {}).get("annotations") or {}
    out += [f"annotation {k}" for k in sorted(set(a0) | set(a1)) if a0.get(k) != a1.get(k)]
    s0, s1 = before.get("status") or {}, after.get("status") or {}
    for key in sorted(set(s0) | set(s1)):
        if key == "conditions":
            c0 = {c["type"]: c for c in s0.get(key) or []}
            c1 = {c["type"]: c for c in s1.get(key) or []}
            for t in sorted(set(c0) | set(c1)):
                r0, r1 = (c0.get(t) or {}).get("reason"), (c1.get(t) or {}).get("reason")
                if c0.get(t) != c1.get(t):
                    out.append(f"condition {t}: {r0} -> {r1}")
        elif s0.get(key) != s1.get(key):
            out.append(f"status.{key}")
    return out


def model_events(api: Api, namespaces: Iterable[str]) -> dict[str, int]:
    """Events about MultimodalModels (the operator's decisions and kopf's log lines), by uid
    and count: a new Event or a repeat of one is a write."""
    out: dict[str, int] = {}
    for ns in namespaces:
        for ev in api.events(ns):
            if (ev.get("involvedObject") or {}).get("kind") == "MultimodalModel":
                out[ev["metadata"]["uid"]] = int(ev.get("count") or 1)
    return out


@dataclass
class RestartWrites:
    """What a restart of a settled operator wrote, seen from outside."""

    changed: list[str]  # objects whose resourceVersion moved
    what_changed: dict[str, list[str]]  # for changed models: the status fields that moved
    stale: list[str]  # models whose status did not match their Deployment before the restart
    model_writes: float  # writes to multimodalmodels on the API server (all namespaces)
    applies: float  # server-side applies to Deployments, Services, PodDisruptionBudgets
    events: int  # Events about the drill's models posted or repeated
    resumed: int  # the drill's models whose resume kopf logged as processed
    models: int  # the drill's models
    resume_seconds: float  # start → every model's resume handled (kopf's log line)

    @property
    def total(self) -> float:
        return len(self.changed) + self.model_writes + self.applies + self.events


def settled_restart(
    api: Api, op: OperatorProcess, namespaces: Sequence[str], observe: float = 10.0
) -> RestartWrites:
    """Wait (at most 60 s) until every planned model's Ready condition agrees with its
    Deployment (kwok's pods turn Ready on their own time: that write is the cluster's, not
    the restart's) and then until nothing has been written for 15 s (at most 120 s), stop
    the operator (SIGTERM), start it again on the settled cluster, wait (at most 90 s) for
    kopf to have resumed every model of ``namespaces``, observe ``observe`` s more, and
    count what it wrote: resourceVersions of the models and their children, the API
    server's write counters, Events about the models."""
    with contextlib.suppress(AssertionError):
        wait_until("every model's readiness settled", lambda: not unsettled(api, namespaces), 60)
    stale = unsettled(api, namespaces)
    # Settled also means quiet: the periodic loop's first ticks (MetricsUsable on pods that
    # serve no metrics here) are the running operator's work, not the restart's.
    quiet_for = 15.0  # longer than an autoscaler tick (10 s)
    with contextlib.suppress(AssertionError):
        last: dict[str, str] = {}
        since = [time.monotonic()]

        def quiet() -> bool:
            nonlocal last
            now = versions(api, namespaces)
            if now != last:
                last, since[0] = now, time.monotonic()
            return time.monotonic() - since[0] >= quiet_for

        wait_until("no writes for 15 s", quiet, 120, interval=1.0)
    op.kill(signal.SIGTERM)
    before = versions(api, namespaces)
    models_before = {f"{ns}/{m['metadata']['name']}": m for ns in namespaces
                     for m in api.models(ns)}  # fmt: skip
    events = model_events(api, namespaces)
    counters = api.write_counters()
    offset = op.log_size()
    keys = {f"{ns}/{m['metadata']['name']}" for ns in namespaces for m in api.models(ns)}
    started = time.monotonic()
    op.start()

    def resumed() -> set[str]:
        # kopf logs "[namespace/name] Resuming is processed: …" when an object's resume
        # handlers are done.
        found = set(_RESUMED.findall(op.log_text(offset)))
        return found & keys

    with contextlib.suppress(AssertionError):
        wait_until("every model resumed", lambda: resumed() >= keys, 90)
    resume_seconds = time.monotonic() - started
    time.sleep(observe)
    after = versions(api, namespaces)
    now = api.write_counters()
    events_after = model_events(api, namespaces)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    what: dict[str, list[str]] = {}
    for key in changed:
        if key.startswith("MultimodalModel "):
            ns, name = key.split(" ", 1)[1].split("/")
            what[key] = _diff(models_before.get(f"{ns}/{name}") or {}, api.model(ns, name) or {})
    return RestartWrites(
        changed=changed,
        what_changed=what,
        stale=stale,
        model_writes=now["models"] - counters["models"],
        applies=now["applies"] - counters["applies"],
        events=sum(c - events.get(uid, 0) for uid, c in events_after.items()),
        resumed=len(resumed()),
        models=len(keys),
        resume_seconds=resume_seconds,
    )


# ---------------------------------------------------------------------------- drill (b)


@dataclass(frozen=True)
class Op:
    verb: str  # create | edit | delete
    namespace: str
    name: str
    index: int
    edits: int = 0


def churn(namespaces: Sequence[str], models: int, rng: random.Random) -> list[Op]:
    """``models`` creates, about half as many edits and a fifth as many deletes, interleaved:
    every edit and delete comes after its model's create (a deleted model is not edited)."""
    keys = [(namespaces[i % len(namespaces)], f"r{i:03d}", i) for i in range(models)]
    ops = [Op("create", ns, name, i) for ns, name, i in keys]
    for i in rng.sample(range(models), models // 2):
        ns, name, idx = keys[i]
        ops.insert(rng.randrange(ops.index(Op("create", ns, name, idx)) + 1, len(ops) + 1),
                   Op("edit", ns, name, idx, 1))  # fmt: skip
    for i in rng.sample(range(models), models // 5):
        ns, name, idx = keys[i]
        last = max(j for j, o in enumerate(ops) if o.name == name)
        ops.insert(rng.randrange(last + 1, len(ops) + 1), Op("delete", ns, name, idx))
    return ops


def apply_op(api: Api, op: Op) -> None:
    if op.verb == "create":
        api.create_model(op.namespace, manifest(op.name, op.index))
    elif op.verb == "edit":
        api.patch_model_spec(op.namespace, op.name, spec(op.index, op.edits))
    else:
        api.delete_model(op.namespace, op.name)


@dataclass
class KillReport:
    models: int
    namespaces: int
    ops: int
    kills: int
    restarts_seconds: list[float]
    churn_seconds: float
    converge_seconds: float
    restart: RestartWrites
    problems: list[str]
    seed: int

    def lines(self) -> list[str]:
        r = self.restart
        starts = sorted(self.restarts_seconds)
        median = starts[len(starts) // 2] if starts else float("nan")
        return [
            f"models: {self.models} in {self.namespaces} namespaces; operations: {self.ops} "
            f"(creates, edits, deletes); seed {self.seed}",
            f"SIGKILLs of the operator: {self.kills}; restart to healthy: median {median:.1f} s, "
            f"max {max(starts, default=float('nan')):.1f} s",
            f"churn under kills: {self.churn_seconds:.0f} s; converged "
            f"{self.converge_seconds:.0f} s after the last restart",
            f"problems left: {len(self.problems)} {self.problems[:5] if self.problems else ''}",
            f"settled restart: {len(r.changed)} objects changed, {r.model_writes:.0f} model "
            f"writes, {r.applies:.0f} applies, {r.events} Events; {r.resumed}/{r.models} "
            f"models resumed in {r.resume_seconds:.1f} s",
            *([f"what changed: {r.what_changed}"] if r.what_changed else []),
            *([f"status behind its Deployment before the restart: {r.stale}"] if r.stale else []),
        ]


def kill_drill(
    state: SandboxState,
    namespaces: Sequence[str],
    models: int,
    kills: int,
    seed: int = 15,
    pace: float = 0.3,
    max_uptime: float = 8.0,
    converge_timeout: float = 180.0,
    op: OperatorProcess | None = None,
) -> KillReport:
    """Drill (b): create, edit and delete ``models`` models at one operation per ``pace``
    seconds while the operator is SIGKILLed ``kills`` times at random points (half of them
    0.05..0.6 s after a create or edit, while the operator writes its children; the others after
    a random 0.5..``max_uptime`` s of life; down for a random 0..2 s each time), then let the
    last one run and check convergence and a settled restart. The caller owns the
    namespaces."""
    rng = random.Random(seed)
    api = Api(state)
    ops = churn(namespaces, models, rng)
    own = op is None
    operator = op or OperatorProcess(sandbox_of(state))
    if not operator.alive():
        operator.start()
    restarts: list[float] = []
    done = 0
    started = time.monotonic()
    killed = 0
    errors: list[str] = []

    def schedule(spread: float) -> tuple[float, bool]:
        """When to kill next: half the kills chase a write (0.05..0.6 s after the next create
        or edit, while the operator acts on it), half fall after a random uptime."""
        if rng.random() < 0.5:
            return float("inf"), True
        return time.monotonic() + rng.uniform(0.5, spread), False

    next_kill, chase = schedule(max_uptime)
    try:
        # Operations go on while the operator is up or down; kills fall between and during them
        # (a kill interrupts whatever reconcile is in flight).
        while done < len(ops) or killed < kills:
            now = time.monotonic()
            if killed < kills and now >= next_kill:
                operator.kill(signal.SIGKILL)
                killed += 1
                down = rng.uniform(0.0, 2.0)
                # The churn continues while the operator is down.
                end = time.monotonic() + down
                while time.monotonic() < end:
                    if done < len(ops):
                        _do(api, ops[done], errors)
                        done += 1
                    time.sleep(pace)
                restarts.append(operator.start())
                remaining = max(1, kills - killed)
                left = max(0, len(ops) - done) * pace
                spread = max(0.5, min(max_uptime, left / remaining if left else max_uptime))
                next_kill, chase = schedule(spread)
                continue
            if done < len(ops):
                _do(api, ops[done], errors)
                if chase and ops[done].verb != "delete":
                    next_kill, chase = time.monotonic() + rng.uniform(0.05, 0.6), False
                done += 1
                time.sleep(pace)
            else:
                if chase:
                    next_kill, chase = time.monotonic() + rng.uniform(0.5, max_uptime), False
                time.sleep(0.05)
        churned = time.monotonic() - started
        try:
            converge = wait_converged(api, namespaces, converge_timeout)
        except AssertionError:
            converge = float("nan")
        problems = convergence_problems(api, namespaces)
        restart = settled_restart(api, operator, namespaces)
    finally:
        if own:
            operator.kill()
    if errors:
        log(f"{len(errors)} operations refused (kept going): {errors[:3]}")
    return KillReport(
        models=models,
        namespaces=len(namespaces),
        ops=len(ops),
        kills=killed,
        restarts_seconds=restarts,
        churn_seconds=churned,
        converge_seconds=converge,
        restart=restart,
        problems=problems,
        seed=seed,
    )


def _do(api: Api, op: Op, errors: list[str]) -> None:
    try:
        apply_op(api, op)
    except Exception as err:  # recorded; the drill's checks judge the end state
        errors.append(f"{op.verb} {op.name}: {type(err).__name__}: {str(err)[:200]}")
