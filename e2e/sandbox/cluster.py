"""A local Kubernetes sandbox: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok on 127.0.0.1 with free ports, fake GPU nodes, a pod server that puts a vLLM-compatible
server behind every served pod's address, (optionally) Prometheus scraping those servers, and
(optionally, ``lws=True``) the LeaderWorkerSet controller with its webhooks.

Everything a sandbox owns lives under one directory (default ~/.cache/mmop/sandboxes/<name>):
PKI, etcd data, logs/<component>.log, kubeconfig and state.json (pids and ports). `down` stops
every process group it started and removes the directory. Two sandboxes with different names run
side by side.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.sandbox import lws as lws_parts
from e2e.sandbox.pki import Pki, create_pki, issue_serving_cert
from e2e.sandbox.pools import DEFAULT_POOLS, load_pools, node_objects

HERE = Path(__file__).parent
REPO = HERE.parent.parent
BUILD_SCRIPT = HERE / "build.sh"
STAGES_FILE = HERE / "stages.yaml"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "helm",
    "llm-d-inference-sim",
)
SERVICE_CIDR = "10.96.0.0/16"  # allocated by the API server only; no traffic is ever sent there
SERVICE_IP = "10.96.0.1"
POD_OCTETS = range(100, 250)


class SandboxError(RuntimeError):
    """A step failed: the message names the step and the log to read."""


def default_root(name: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "mmop" / "sandboxes" / name


def _env_name(binary: str) -> str:
    return "MMOP_" + binary.upper().replace("-", "_")


def find_binaries(build: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Locate the sandbox binaries: per-binary variables (MMOP_KUBE_APISERVER, …), then
    MMOP_SANDBOX_BIN_DIR, then the versioned build cache (building it when allowed)."""
    found: dict[str, Path] = {}
    for name in BINARIES:
        value = os.environ.get(_env_name(name))
        if value:
            found[name] = Path(value)
    bin_dir_env = os.environ.get("MMOP_SANDBOX_BIN_DIR")
    if len(found) < len(BINARIES):
        if bin_dir_env:
            bin_dir = Path(bin_dir_env)
        else:
            bin_dir = Path(
                subprocess.run(
                    ["bash", str(BUILD_SCRIPT), "--print-dir"],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
            if not all((bin_dir / b).is_file() for b in BINARIES if b not in found):
                if not build:
                    raise SandboxError(
                        f"sandbox binaries are not built ({bin_dir}); run bash {BUILD_SCRIPT}"
                    )
                if log:
                    log(f"building sandbox binaries into {bin_dir} (first run: many minutes)")
                proc = subprocess.run(["bash", str(BUILD_SCRIPT)], check=False)
                if proc.returncode != 0:
                    raise SandboxError("step 'build binaries' failed; see the message above")
        for name in BINARIES:
            found.setdefault(name, bin_dir / name)
    missing = [f"{n} ({p})" for n, p in found.items() if not os.access(p, os.X_OK)]
    if missing:
        raise SandboxError("missing sandbox binaries: " + ", ".join(missing))
    return found


# Listening ports come from below the kernel's ephemeral range (32768-60999 by default), so an
# outgoing connection cannot take a port between the moment it is chosen and the moment the
# component binds it.
LISTEN_PORTS = range(20000, 32000)


def free_port() -> int:
    for _ in range(200):
        port = random.randrange(LISTEN_PORTS.start, LISTEN_PORTS.stop)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SandboxError("no free port on 127.0.0.1 in 20000-31999")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass
class Component:
    name: str
    argv: list[str]
    health: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class SandboxState:
    name: str
    root: str
    kubeconfig: str
    server: str
    pod_octet: int
    ports: dict[str, int]
    pids: dict[str, int]
    bin_dir: dict[str, str]
    prometheus_url: str | None = None
    started_seconds: float = 0.0

    @classmethod
    def read(cls, path: Path) -> SandboxState:
        return cls(**json.loads(path.read_text()))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))


class Sandbox:
    """One named sandbox. `up()` is idempotent only in the sense that a second call on a running
    sandbox raises SandboxError saying so."""

    def __init__(
        self,
        name: str = "default",
        root: Path | None = None,
        pools_file: Path = DEFAULT_POOLS,
        prometheus: bool | None = None,
        log: Callable[[str], None] | None = None,
        startup_scale: float = 0.0,
        lws: bool = False,
    ) -> None:
        self.name = name
        # Run the LeaderWorkerSet controller too (e2e/sandbox/lws.py).
        self.lws = lws
        # Pods turn Ready no sooner than this × their plan's predicted start-up (podserver.py).
        self.startup_scale = startup_scale
        self.root = root or default_root(name)
        self.pools_file = pools_file
        self.prometheus = prometheus
        self.log = log or (lambda msg: print(f"mmop sandbox: {msg}", file=sys.stderr))
        self.state_file = self.root / "state.json"
        self.logs = self.root / "logs"

    # ------------------------------------------------------------------ status
    def state(self) -> SandboxState | None:
        if not self.state_file.is_file():
            return None
        return SandboxState.read(self.state_file)

    def running(self) -> bool:
        state = self.state()
        return state is not None and any(_pid_alive(p) for p in state.pids.values())

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"name": self.name, "running": False}
        return {
            "name": self.name,
            "running": self.running(),
            "kubeconfig": state.kubeconfig,
            "server": state.server,
            "prometheus": state.prometheus_url,
            "components": {n: _pid_alive(p) for n, p in state.pids.items()},
            "logs": str(self.logs),
        }

    def env(self) -> dict[str, str]:
        state = self.state()
        if state is None:
            raise SandboxError(f"sandbox {self.name!r} is not running")
        out = {"KUBECONFIG": state.kubeconfig, "MMOP_SANDBOX_NAME": self.name}
        if state.prometheus_url:
            out["MMOP_PROMETHEUS_URL"] = state.prometheus_url
        bins = {Path(p).parent for p in state.bin_dir.values()}
        out["PATH"] = os.pathsep.join([*sorted(str(b) for b in bins), os.environ.get("PATH", "")])
        return out

    # ------------------------------------------------------------------ up
    def up(self, timeout: float = 90.0, attempts: int = 3) -> SandboxState:
        """Start the sandbox; a start that lost a port race is retried with new ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._up(timeout)
            except SandboxError as err:
                log = Path(str(err).rsplit("log: ", 1)[-1])
                raced = log.is_file() and "address already in use" in log.read_text(
                    errors="replace"
                )
                if not raced or attempt == attempts:
                    raise
                self.log(f"a port was taken while starting ({err}); retrying with new ports")
        raise AssertionError("unreachable")

    def _up(self, timeout: float) -> SandboxState:
        if self.running():
            raise SandboxError(
                f"sandbox {self.name!r} is already running (kubeconfig "
                f"{self.root / 'kubeconfig'}); run `down` first"
            )
        if self.root.exists():
            shutil.rmtree(self.root)
        started = time.monotonic()
        bins = find_binaries(log=self.log)
        lws_assets = None
        if self.lws:
            try:
                lws_assets = lws_parts.find_lws(log=self.log)
            except lws_parts.LwsError as err:
                raise SandboxError(str(err)) from err
        pools = load_pools(self.pools_file)
        self.logs.mkdir(parents=True)
        octet = self._pick_octet()
        pki = create_pki(self.root / "pki", SERVICE_IP)
        ports = {
            "etcd": free_port(),
            "etcd-peer": free_port(),
            "apiserver": free_port(),
            "controller-manager": free_port(),
            "scheduler": free_port(),
            "kwok": free_port(),
        }
        server = f"https://127.0.0.1:{ports['apiserver']}"
        kubeconfig = self._write_kubeconfig(pki, server)
        state = SandboxState(
            name=self.name,
            root=str(self.root),
            kubeconfig=str(kubeconfig),
            server=server,
            pod_octet=octet,
            ports=ports,
            pids={},
            bin_dir={k: str(v) for k, v in bins.items()},
        )
        state.write(self.state_file)
        deadline = time.monotonic() + timeout
        try:
            for component in self._control_plane(bins, pki, ports, kubeconfig):
                self._start(component, state, deadline)
            self._create_nodes(kubeconfig, pools, octet, deadline)
            if lws_assets is not None:
                self._start_lws(lws_assets, pki, state, kubeconfig, deadline)
            self._start(self._pod_server(bins, kubeconfig), state, deadline)
            want_prometheus = self.prometheus
            if want_prometheus is None:
                want_prometheus = shutil.which("prometheus") is not None
            if want_prometheus:
                port = free_port()
                state.ports["prometheus"] = port
                self._start(self._prometheus(pki, server, port), state, deadline)
                state.prometheus_url = f"http://127.0.0.1:{port}"
        except BaseException:
            self.down(quiet=True, keep_logs=True)
            raise
        state.started_seconds = round(time.monotonic() - started, 2)
        state.write(self.state_file)
        return state

    def _pick_octet(self) -> int:
        used = set()
        parent = self.root.parent
        if parent.is_dir():
            for other in parent.glob("*/state.json"):
                try:
                    s = SandboxState.read(other)
                except (OSError, ValueError, TypeError):
                    continue
                if s.name != self.name and any(_pid_alive(p) for p in s.pids.values()):
                    used.add(s.pod_octet)
        for octet in POD_OCTETS:
            if octet not in used:
                return octet
        raise SandboxError("no free pod address range left in 127.0.0.0/8")

    def _write_kubeconfig(self, pki: Pki, server: str) -> Path:
        path = self.root / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": f"mmop-{self.name}",
                    "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki.admin_cert),
                        "client-key": str(pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": f"mmop-{self.name}",
                    "context": {"cluster": f"mmop-{self.name}", "user": "admin"},
                }
            ],
            "current-context": f"mmop-{self.name}",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _control_plane(
        self, bins: Mapping[str, Path], pki: Pki, ports: Mapping[str, int], kubeconfig: Path
    ) -> Iterable[Component]:
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        yield Component(
            "etcd",
            [
                str(bins["etcd"]),
                f"--name={self.name}",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster={self.name}={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            lambda: _http_ok(f"{etcd_url}/health"),
        )
        yield Component(
            "apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-account-issuer=https://127.0.0.1:{ports['apiserver']}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                f"--cert-dir={self.root / 'pki'}",
                "--endpoint-reconciler-type=none",
            ],
            lambda: _https_ok(f"https://127.0.0.1:{ports['apiserver']}/readyz", pki),
        )
        yield Component(
            "controller-manager",
            [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
            ],
            lambda: _https_ok(f"https://127.0.0.1:{ports['controller-manager']}/healthz", None),
        )
        yield Component(
            "scheduler",
            [
                str(bins["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--leader-elect=false",
            ],
            lambda: _https_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", None),
        )
        yield Component(
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"),
        )

    def _start_lws(
        self,
        assets: lws_parts.LwsAssets,
        pki: Pki,
        state: SandboxState,
        kubeconfig: Path,
        deadline: float,
    ) -> None:
        """CRDs, then the controller (webhooks on 127.0.0.1 with a certificate from the sandbox
        CA), then its webhook configurations; returns once a dry run shows them in force."""
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        for key in ("lws-webhook", "lws-metrics", "lws-health"):
            state.ports[key] = free_port()
        ports = state.ports
        work = self.root / "lws"
        cert_dir = work / "certs"
        issue_serving_cert(pki, cert_dir / "tls.crt", cert_dir / "tls.key", "lws-webhook")
        config_file = work / "config.yaml"
        config_file.write_text(
            yaml.safe_dump(
                lws_parts.controller_config(
                    webhook_port=ports["lws-webhook"],
                    cert_dir=cert_dir,
                    metrics_port=ports["lws-metrics"],
                    health_port=ports["lws-health"],
                ),
                sort_keys=False,
            )
        )
        api_client = config.new_client_from_config(str(kubeconfig))
        ext: Any = client.ApiextensionsV1Api(api_client)
        crds = assets.crds()
        for crd in crds:
            ext.create_custom_resource_definition(crd)
        log_path = self.logs / "lws.log"

        def established() -> bool:
            for crd in crds:
                got = ext.read_custom_resource_definition(crd["metadata"]["name"])
                conditions = got.status.conditions or []
                if not any(c.type == "Established" and c.status == "True" for c in conditions):
                    return False
            return True

        self._wait(established, "LWS CRDs established", deadline, log_path)
        health = f"http://127.0.0.1:{ports['lws-health']}/readyz"
        self._start(
            Component(
                "lws",
                [str(assets.controller), f"--config={config_file}"],
                lambda: _http_ok(health) and _tls_ok(ports["lws-webhook"], pki.ca_cert),
                env={"KUBECONFIG": str(kubeconfig), "ENABLE_WEBHOOKS": "true"},
            ),
            state,
            deadline,
        )
        admission: Any = client.AdmissionregistrationV1Api(api_client)
        documents, patches = assets.webhook_documents()
        for obj in lws_parts.webhook_configurations(
            documents,
            patches,
            f"https://127.0.0.1:{ports['lws-webhook']}",
            pki.ca_cert.read_bytes(),
        ):
            if obj["kind"] == "MutatingWebhookConfiguration":
                admission.create_mutating_webhook_configuration(obj)
            else:
                admission.create_validating_webhook_configuration(obj)
        custom: Any = client.CustomObjectsApi(api_client)

        def in_force() -> bool:
            try:
                answer = custom.create_namespaced_custom_object(
                    lws_parts.GROUP,
                    lws_parts.VERSION,
                    "default",
                    lws_parts.PLURAL,
                    lws_parts.probe_object(),
                    dry_run="All",
                )
            except ApiException:
                return False
            return lws_parts.webhooks_applied(answer)

        self._wait(in_force, "LWS webhooks in force", deadline, log_path)

    def _wait(self, probe: Callable[[], bool], step: str, deadline: float, log_path: Path) -> None:
        while time.monotonic() < deadline:
            if probe():
                return
            time.sleep(0.2)
        raise SandboxError(f"step '{step}' timed out; log: {log_path}")

    def _pod_server(self, bins: Mapping[str, Path], kubeconfig: Path) -> Component:
        ready = self.root / "podserver.ready"
        return Component(
            "podserver",
            [
                sys.executable,
                "-m",
                "e2e.sandbox.podserver",
                f"--kubeconfig={kubeconfig}",
                f"--simulator={bins['llm-d-inference-sim']}",
                f"--work-dir={self.root / 'pods'}",
                f"--ready-file={ready}",
                f"--targets-file={self.root / 'prometheus-targets.json'}",
                f"--startup-scale={self.startup_scale}",
            ],
            ready.is_file,
            env={"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        )

    def _prometheus(self, pki: Pki, server: str, port: int) -> Component:
        # Debian's Prometheus is built without kubernetes_sd, so discovery goes through a file:
        # the pod server writes every Ready pod annotated prometheus.io/scrape into it, from the
        # API server's view of pods (podIP, prometheus.io/port, namespace, pod and pod labels).
        del pki, server
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "scrape_configs": [
                {
                    "job_name": "pods",
                    "file_sd_configs": [
                        {
                            "files": [str(self.root / "prometheus-targets.json")],
                            "refresh_interval": "5s",
                        }
                    ],
                }
            ],
        }
        path = self.root / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return Component(
            "prometheus",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={path}",
                f"--storage.tsdb.path={self.root / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            lambda: _http_ok(f"http://127.0.0.1:{port}/-/ready"),
        )

    def start_component(
        self,
        name: str,
        argv: list[str],
        health: Callable[[], bool],
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Start another process as part of the running sandbox (`down` stops it too)."""
        state = self.state()
        if state is None or not self.running():
            raise SandboxError(f"sandbox {self.name!r} is not running")
        if name in state.pids and _pid_alive(state.pids[name]):
            raise SandboxError(f"{name} is already running in sandbox {self.name!r}")
        self._start(Component(name, argv, health, env or {}), state, time.monotonic() + timeout)

    def start_operator(
        self,
        serve: str | None = "sim",
        pod_annotations: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> int:
        """Start ``mmop run --all-namespaces`` against the sandbox as its ``operator`` component,
        its pods labelled for the pod server (``serve``: sim, vllm, or None for kwok alone) and
        annotated; returns the port of its health endpoint."""
        state = self.state()
        if state is None:
            raise SandboxError(f"sandbox {self.name!r} is not running")
        port = free_port()
        argv = [
            sys.executable, "-m", "mmop.cli", "run", "--all-namespaces",
            "--liveness", f"http://127.0.0.1:{port}/healthz",
        ]  # fmt: skip
        if serve is not None:
            argv += ["--pod-label", f"sandbox.mmop.dev/serve={serve}"]
        for key, value in (pod_annotations or {}).items():
            argv += ["--pod-annotation", f"{key}={value}"]
        self.start_component(
            "operator",
            argv,
            lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"),
            {"KUBECONFIG": state.kubeconfig, **(env or {})},
            timeout=timeout,
        )
        return port

    def _start(self, component: Component, state: SandboxState, deadline: float) -> None:
        log_path = self.logs / f"{component.name}.log"
        with log_path.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    component.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **component.env},
                )
            except OSError as err:
                raise SandboxError(
                    f"step 'start {component.name}' failed: {err}; log: {log_path}"
                ) from err
        state.pids[component.name] = proc.pid
        state.write(self.state_file)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(
                    f"step 'start {component.name}' failed: it exited with code "
                    f"{proc.returncode}; log: {log_path}"
                )
            if component.health():
                return
            time.sleep(0.1)
        raise SandboxError(f"step 'start {component.name}' timed out; log: {log_path}")

    def _create_nodes(self, kubeconfig: Path, pools: Any, octet: int, deadline: float) -> None:
        from kubernetes import client, config

        api: Any = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        nodes = node_objects(pools, octet)
        for node in nodes:
            api.create_node(node)
        names = {n["metadata"]["name"] for n in nodes}
        while time.monotonic() < deadline:
            ready = {
                n.metadata.name
                for n in api.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            }
            if names <= ready:
                return
            time.sleep(0.2)
        raise SandboxError(
            f"step 'GPU nodes Ready' timed out ({len(names)} nodes); log: {self.logs / 'kwok.log'}"
        )

    # ------------------------------------------------------------------ down
    def down(self, quiet: bool = False, timeout: float = 15.0, keep_logs: bool = False) -> bool:
        """Stop every process the sandbox started (in reverse order) and remove its directory
        (all but logs/ with keep_logs, so a failed start can be read)."""
        state = self.state()
        if state is None:
            if self.root.exists() and not keep_logs:
                shutil.rmtree(self.root, ignore_errors=True)
            return False
        for name, pid in reversed(list(state.pids.items())):
            _stop_group(pid, timeout)
            if not quiet:
                self.log(f"stopped {name}")
        if keep_logs:
            for entry in self.root.iterdir():
                if entry.name != "logs":
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return True


def _stop_group(pid: int, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
        while time.monotonic() < end:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited = 0
            if waited == pid or not _group_alive(pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tls_ok(port: int, ca_cert: Path) -> bool:
    """Whether a TLS server on 127.0.0.1:port answers with a certificate the CA vouches for."""
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
            ctx.wrap_socket(sock, server_hostname="127.0.0.1"),
        ):
            return True
    except OSError:
        return False


def _https_ok(url: str, pki: Pki | None) -> bool:
    if pki is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    try:
        with urllib.request.urlopen(url, timeout=1, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
