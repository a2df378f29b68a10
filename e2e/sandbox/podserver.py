"""The sandbox's pod server: puts a real vLLM-compatible server behind every served pod's address.

A pod is served when it carries the label ``sandbox.mmop.dev/serve`` (the value names the engine;
``sim`` = llm-d-inference-sim, the default). When kwok reports it Running with a pod IP (a
loopback address from its node's podCIDR), the pod server

1. starts llm-d-inference-sim on a free loopback port, configured from the pod's vLLM arguments
   (``--served-model-name``, ``--model``, ``--max-num-seqs``, ``--max-model-len``, ``--block-size``)
   and the annotations below;
2. listens on ``podIP:containerPort`` and forwards every connection to that server, so a client
   reaches the pod exactly as in a real cluster, at ``podIP:port``;
3. marks the pod Ready (status conditions and container status) once ``/health`` answers, and
   stops everything when the pod is deleted or stops Running.

Start-ups as slow as real ones: a real replica takes minutes to turn Ready (image pull, weights,
loading, compilation, graph capture). With ``--startup-scale F`` (the sandbox's ``startup_scale``)
a served pod turns Ready no sooner than F × the start-up its model's plan predicts
(``status.plan.startupSeconds`` of the MultimodalModel named by the pod's ``mmop.dev/model``
label); the annotation ``sandbox.mmop.dev/startup-seconds`` sets the delay outright (seconds,
not scaled). F = 0 (the default) keeps start-ups as fast as the stand-in.

Annotations (all optional): ``sandbox.mmop.dev/kv-cache-blocks`` (simulated KV blocks),
``sandbox.mmop.dev/time-to-first-token`` and ``sandbox.mmop.dev/inter-token-latency``
(milliseconds), ``sandbox.mmop.dev/sim-args`` (extra simulator flags, space separated).

With the label value ``vllm`` the pod gets the real engine instead: vLLM's CPU build from the
engine venv (``python -m e2e.engine install``; see docs/engine.md), serving a tiny generated model
with the pod's own argv, unchanged except for the flags a CPU cannot take (the list and reasons
are in e2e/engine/launcher.py). Its annotations: ``sandbox.mmop.dev/engine-model`` (a tiny
model family, ``qwen2-vl`` or ``llava``, or a model directory; default: ``llava`` when the pod's
model id names LLaVA, else ``qwen2-vl``) and ``sandbox.mmop.dev/engine-args`` (vLLM flags
appended to the argv, space separated; a later flag wins). It starts in 40-80 s on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVE_LABEL = "sandbox.mmop.dev/serve"
REAL_ENGINE = "vllm"  # the SERVE_LABEL value that asks for the real engine
ANNOTATION_PREFIX = "sandbox.mmop.dev/"
FORWARDED_FLAGS = ("--served-model-name", "--model", "--max-num-seqs", "--max-model-len")
DEFAULT_MODEL = "mmop/sandbox-model"
STARTUP_ANNOTATION = ANNOTATION_PREFIX + "startup-seconds"
MODEL_LABEL = "mmop.dev/model"

log = logging.getLogger("mmop.sandbox.podserver")


def simulator_args(pod: dict[str, Any], port: int) -> list[str]:
    """llm-d-inference-sim flags for a pod: its vLLM arguments plus sandbox annotations."""
    container = pod["spec"]["containers"][0]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag in FORWARDED_FLAGS:
            if eq:
                values.setdefault(flag, []).append(value)
            else:
                j = i + 1
                while j < len(argv) and not argv[j].startswith("--"):
                    values.setdefault(flag, []).append(argv[j])
                    j += 1
                i = j - 1
        elif arg in ("serve", "vllm") or (i == 0 and not arg.startswith("-")):
            pass
        i += 1
    model: str | None = values["--model"][0] if values.get("--model") else None
    if model is None:
        # `vllm serve MODEL` form
        for k, arg in enumerate(argv[:-1]):
            if arg == "serve" and not argv[k + 1].startswith("-"):
                model = argv[k + 1]
    model = model or DEFAULT_MODEL
    out = [f"--port={port}", f"--model={model}", "--force-dummy-tokenizer"]
    if "--served-model-name" in values:
        out += ["--served-model-name", *values["--served-model-name"]]
    for flag in ("--max-num-seqs", "--max-model-len"):
        if flag in values:
            out.append(f"{flag}={values[flag][0]}")
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    mapping = {
        "kv-cache-blocks": "--kv-cache-size",
        "time-to-first-token": "--time-to-first-token",
        "inter-token-latency": "--inter-token-latency",
    }
    for key, flag in mapping.items():
        value = notes.get(ANNOTATION_PREFIX + key)
        if value:
            if key != "kv-cache-blocks" and value.replace(".", "", 1).isdigit():
                value = f"{value}ms"  # a bare number is milliseconds; the simulator wants a unit
            out.append(f"{flag}={value}")
    extra = shlex.split(notes.get(ANNOTATION_PREFIX + "sim-args") or "")
    if notes.get(ANNOTATION_PREFIX + "kv-cache-blocks") and "--enable-kvcache" not in extra:
        out.append("--enable-kvcache")  # without it the simulator keeps no KV accounting
    return out + extra


def simulator_environment() -> dict[str, str]:
    """The simulator's environment. Its KV-cache accounting refuses to start without POD_IP
    (it names the pod in KV events); the loopback address keeps anything it might send on this
    machine."""
    return {**os.environ, "POD_IP": "127.0.0.1"}


def container_port(pod: dict[str, Any]) -> int:
    container = pod["spec"]["containers"][0]
    for port in container.get("ports") or []:
        if port.get("name") in ("http", "openai", "metrics"):
            return int(port["containerPort"])
    ports = container.get("ports") or []
    return int(ports[0]["containerPort"]) if ports else 8000


def engine_command(
    pod: dict[str, Any], port: int, run_dir: Path
) -> tuple[list[str], dict[str, str], list[tuple[str, str]]]:
    """(command, environment, dropped arguments with reasons) of the real engine for a pod."""
    from e2e.engine.launcher import EngineServer, engine_argv
    from e2e.engine.models import tiny_model

    container = pod["spec"]["containers"][0]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    model = notes.get(ANNOTATION_PREFIX + "engine-model") or (
        "llava" if "llava" in " ".join(argv).lower() else "qwen2-vl"
    )
    model_dir = Path(model) if "/" in model else tiny_model(model)
    extra = shlex.split(notes.get(ANNOTATION_PREFIX + "engine-args") or "")
    built = engine_argv([*argv, *extra], model_dir, port)
    server = EngineServer(built.argv, run_dir, port)
    return server.command(), server.environment(), built.dropped


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found, grandchildren after), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def free_port() -> int:
    """A free port below the ephemeral range (see cluster.LISTEN_PORTS; simulators use
    10000-19999), so outgoing connections cannot take it before the simulator binds it."""
    for _ in range(200):
        port = random.randrange(10000, 20000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-19999")


@dataclass
class Served:
    uid: str
    namespace: str
    name: str
    pod_ip: str
    port: int
    backend_port: int
    process: subprocess.Popen[bytes]
    engine: str = "sim"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    server: asyncio.base_events.Server | None = None
    ready: bool = False
    failed: bool = False
    started: float = field(default_factory=time.monotonic)
    startup_seconds: float = 0.0  # not Ready before this long after it started
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def startup_delay(pod: dict[str, Any], planned: float | None, scale: float) -> float:
    """Seconds a served pod stays un-Ready after it starts: the annotation when set, else
    ``scale`` × the start-up its plan predicts (0 without a plan)."""
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    explicit = notes.get(STARTUP_ANNOTATION)
    if explicit:
        try:
            return max(0.0, float(explicit))
        except ValueError:
            log.warning("ignoring %s=%r: not a number of seconds", STARTUP_ANNOTATION, explicit)
    return max(0.0, scale * planned) if planned else 0.0


class PodServer:
    def __init__(
        self,
        kubeconfig: str,
        simulator: str,
        work_dir: Path,
        targets_file: Path | None = None,
        startup_scale: float = 0.0,
    ) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(kubeconfig)
        self.api: Any = client.CoreV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.startup_scale = startup_scale
        self.simulator = simulator
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.served: dict[str, Served] = {}
        self.targets_file = targets_file
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.stopping = threading.Event()

    # -------------------------------------------------------------- pod events
    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        status = pod.get("status") or {}
        running = (
            event_type != "DELETED"
            and not meta.get("deletionTimestamp")
            and status.get("phase") == "Running"
            and bool(status.get("podIP"))
        )
        if running and uid not in self.served:
            self.start(pod)
        elif not running and uid in self.served:
            self.stop(uid)

    def start(self, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod["status"]
        port = container_port(pod)
        backend = free_port()
        engine = (meta.get("labels") or {}).get(SERVE_LABEL) or "sim"
        log_path = self.work_dir / f"{meta['namespace']}_{meta['name']}.log"
        env: dict[str, str] | None = None
        if engine == REAL_ENGINE:
            run_dir = self.work_dir / f"{meta['namespace']}_{meta['name']}.vllm"
            try:
                command, env, dropped = engine_command(pod, backend, run_dir)
            except RuntimeError as err:  # engine venv missing, tiny model failed
                log.error("cannot serve %s/%s with vLLM: %s", meta["namespace"], meta["name"], err)
                return
            for arg, reason in dropped:
                log.info("%s/%s: dropped %s (%s)", meta["namespace"], meta["name"], arg, reason)
            args = command[1:]
        else:
            command = [self.simulator, *simulator_args(pod, backend)]
            env = simulator_environment()
            args = command[1:]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )  # same process group: stopping the pod server's group stops every server
        served = Served(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            pod_ip=status["podIP"],
            port=port,
            backend_port=backend,
            process=proc,
            engine=engine,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )
        served.startup_seconds = startup_delay(pod, self._planned_startup(pod), self.startup_scale)
        self.served[served.uid] = served
        log.info(
            "serving %s/%s at %s:%d (%s on 127.0.0.1:%d, pid %d, Ready after %.0f s): %s",
            served.namespace,
            served.name,
            served.pod_ip,
            port,
            engine,
            backend,
            proc.pid,
            served.startup_seconds,
            " ".join(args),
        )
        future = asyncio.run_coroutine_threadsafe(self._listen(served), self.loop)
        future.result(timeout=10)

    def _planned_startup(self, pod: dict[str, Any]) -> float | None:
        """status.plan.startupSeconds of the pod's MultimodalModel (None: no scale, no model, or
        no such figure)."""
        from kubernetes.client.exceptions import ApiException

        meta = pod["metadata"]
        model = (meta.get("labels") or {}).get(MODEL_LABEL)
        if not self.startup_scale or not model:
            return None
        try:
            mm = self.custom.get_namespaced_custom_object(
                "mmop.dev", "v1alpha1", meta["namespace"], "multimodalmodels", model
            )
        except ApiException:
            return None
        seconds = ((mm.get("status") or {}).get("plan") or {}).get("startupSeconds")
        return float(seconds) if seconds is not None else None

    def stop(self, uid: str) -> None:
        served = self.served.pop(uid)
        self.write_targets()
        log.info("stopping %s/%s", served.namespace, served.name)
        if served.server is not None:
            asyncio.run_coroutine_threadsafe(_close(served.server), self.loop).result(timeout=10)
        children = descendants(served.process.pid) if served.engine == REAL_ENGINE else []
        served.process.terminate()
        try:
            served.process.wait(timeout=30 if children else 10)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()
        for pid in children:  # vLLM's engine core and workers, should any outlive the server
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -------------------------------------------------------------- forwarding
    async def _listen(self, served: Served) -> None:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", served.backend_port
                )
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        served.server = await asyncio.start_server(
            forward, host=served.pod_ip, port=served.port, reuse_address=True
        )

    # -------------------------------------------------------------- readiness
    def check_readiness(self) -> None:
        for served in list(self.served.values()):
            if served.ready:
                continue
            if time.monotonic() - served.started < served.startup_seconds:
                continue  # still "starting": the emulated image pull, load and warm-up
            if served.process.poll() is not None:
                if not served.failed:
                    served.failed = True
                    log.warning(
                        "%s for %s/%s exited with code %s; see %s",
                        served.engine,
                        served.namespace,
                        served.name,
                        served.process.returncode,
                        self.work_dir,
                    )
                continue
            url = f"http://{served.pod_ip}:{served.port}/health"
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    healthy = resp.status == 200
            except (urllib.error.URLError, OSError):
                healthy = False
            if healthy and self._mark_ready(served):
                served.ready = True
                self.write_targets()

    def write_targets(self) -> None:
        """Prometheus file_sd targets: every Ready served pod annotated prometheus.io/scrape."""
        if self.targets_file is None:
            return
        groups = []
        for served in list(self.served.values()):
            if not served.ready or served.annotations.get("prometheus.io/scrape") != "true":
                continue
            port = served.annotations.get("prometheus.io/port") or str(served.port)
            labels = {"namespace": served.namespace, "pod": served.name}
            for key, value in served.labels.items():
                labels[re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
            groups.append({"targets": [f"{served.pod_ip}:{port}"], "labels": labels})
        with self._lock:
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups, indent=2))
            tmp.replace(self.targets_file)

    def _mark_ready(self, served: Served) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self.api.read_namespaced_pod_status(served.name, served.namespace)
        except ApiException:
            return False
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = []
        for cond in pod.status.conditions or []:
            entry = {"type": cond.type, "status": cond.status}
            if cond.type in ("Ready", "ContainersReady"):
                entry = {"type": cond.type, "status": "True", "lastTransitionTime": now}
            conditions.append(entry)
        statuses = [
            {
                "name": cs.name,
                "image": cs.image,
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": cs.restart_count,
                "state": {"running": {"startedAt": now}},
            }
            for cs in pod.status.container_statuses or []
        ]
        try:
            self.api.patch_namespaced_pod_status(
                served.name,
                served.namespace,
                {"status": {"conditions": conditions, "containerStatuses": statuses}},
            )
        except ApiException as err:
            log.warning("could not mark %s/%s Ready: %s", served.namespace, served.name, err)
            return False
        log.info("%s/%s is Ready", served.namespace, served.name)
        return True

    # -------------------------------------------------------------- main loop
    def run(self, ready_file: Path | None) -> None:
        from kubernetes import watch

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        checker = threading.Thread(target=self._readiness_loop, daemon=True)
        checker.start()
        if ready_file is not None:
            ready_file.write_text(str(os.getpid()))
        while not self.stopping.is_set():
            w: Any = watch.Watch()
            try:
                listing = self.api.list_pod_for_all_namespaces(label_selector=SERVE_LABEL)
                seen = set()
                for pod in listing.items:
                    obj = self.api.api_client.sanitize_for_serialization(pod)
                    seen.add(obj["metadata"]["uid"])
                    self.handle("ADDED", obj)
                for uid in set(self.served) - seen:
                    self.stop(uid)
                for event in w.stream(
                    self.api.list_pod_for_all_namespaces,
                    label_selector=SERVE_LABEL,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    if self.stopping.is_set():
                        break
                    obj = self.api.api_client.sanitize_for_serialization(event["object"])
                    self.handle(event["type"], obj)
            except Exception as err:  # the watch restarts; the pod server never dies of it
                if self.stopping.is_set():
                    break
                log.warning("watch failed (%s); restarting", err)
                time.sleep(1)
            finally:
                w.stop()
        for uid in list(self.served):
            self.stop(uid)

    def _readiness_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.check_readiness()
            except Exception as err:
                log.warning("readiness check failed: %s", err)
            self.stopping.wait(0.2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _close(server: asyncio.base_events.Server) -> None:
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve sandbox pods at their addresses.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--simulator", required=True)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--targets-file", type=Path, help="Prometheus file_sd output")
    parser.add_argument(
        "--startup-scale",
        type=float,
        default=0.0,
        help="Pods turn Ready no sooner than this × their plan's predicted start-up (0: off)",
    )
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout
    )
    server = PodServer(ns.kubeconfig, ns.simulator, ns.work_dir, ns.targets_file, ns.startup_scale)
    server.write_targets()

    def stop(*_: object) -> None:
        server.stopping.set()
        for served in list(server.served.values()):
            served.process.terminate()
        for served in list(server.served.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                served.process.wait(timeout=5)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run(ns.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
