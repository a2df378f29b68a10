"""Drill (c): the API server paused, and killed, under load; the operator must ride it out.

Usage (from the repository root):
    python -m bench.reliability.pause [--models 40] [--pause 20] [--down 80] [--seed 15]

On a sandbox of its own (``--name``, default ``reldrill-pause``; torn down at the end) with the
operator as a process (``mmop run --all-namespaces``): half the models are created and
converge; then the API server (the sandbox's ``kube-apiserver`` process) is stopped with SIGSTOP
for ``--pause`` seconds while a quarter of the models are being created (the requests wait in
the server's accept queue), and continued with SIGCONT; the models converge. With ``--down``,
the API server is then killed with SIGKILL, left down that many seconds, started again with the
same command line, and the last quarter is created. After each outage: the operator process is
the same one (it never exited), its health endpoint answers, and every model converges (one
Deployment, Service and PodDisruptionBudget each, nothing orphaned, Planned=True).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.reliability.drill import (
    Api,
    OperatorProcess,
    install_crd,
    log,
    manifest,
    sandbox_of,
    wait_converged,
    wait_until,
)
from e2e.sandbox import Sandbox, SandboxState


def apiserver_ready(state: SandboxState) -> bool:
    proc = subprocess.run(
        [state.bin_dir["kubectl"], f"--kubeconfig={state.kubeconfig}", "get", "--raw=/readyz",
         "--request-timeout=2s"],
        capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def restart_apiserver(box: Sandbox, down_seconds: float) -> float:
    """SIGKILL the sandbox's API server, leave it down ``down_seconds``, start it again with
    the same command line; returns the seconds from the start to /readyz."""
    state = box.state()
    assert state is not None
    pid = state.pids["apiserver"]
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    os.killpg(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # reaped when the sandbox is this process's
    except ChildProcessError:
        wait_until("the API server to exit", lambda: not _alive(pid), 30, 0.1)
    time.sleep(down_seconds)
    started = time.monotonic()
    box.start_component("apiserver", argv, lambda: apiserver_ready(state), timeout=120)
    return time.monotonic() - started


@dataclass
class PauseReport:
    models: int
    pause_seconds: float
    converge_after_pause_seconds: float
    created_during_pause: int
    down_seconds: float | None = None
    apiserver_restart_seconds: float | None = None
    converge_after_restart_seconds: float | None = None
    operator_starts: int = 1
    operator_same_process: bool = True
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"models: {self.models}; API server paused (SIGSTOP) {self.pause_seconds:.0f} s with "
            f"{self.created_during_pause} creates in flight; converged "
            f"{self.converge_after_pause_seconds:.0f} s after SIGCONT",
        ]
        if self.down_seconds is not None:
            out.append(
                f"API server killed (SIGKILL), down {self.down_seconds:.0f} s, back in "
                f"{self.apiserver_restart_seconds:.1f} s; converged "
                f"{self.converge_after_restart_seconds:.0f} s after it was back"
            )
        out.append(
            f"operator: {self.operator_starts} start(s), same process throughout: "
            f"{self.operator_same_process}"
        )
        return out


def pause_drill(
    state: SandboxState,
    namespaces: Sequence[str],
    models: int,
    pause_seconds: float = 20.0,
    down_seconds: float | None = None,
    converge_timeout: float = 180.0,
    op: OperatorProcess | None = None,
    seed: int = 15,
) -> PauseReport:
    """Run drill (c); the caller owns the namespaces (and the operator when it passes one)."""
    rng = random.Random(seed)
    api = Api(state, timeout=pause_seconds + 60)
    box = sandbox_of(state)
    own = op is None
    operator = op or OperatorProcess(box)
    if not operator.alive():
        operator.start()
    first_pid = operator.pid
    starts = operator.starts
    keys = [(namespaces[i % len(namespaces)], f"p{i:03d}", i) for i in range(models)]
    rng.shuffle(keys)
    before, during = keys[: models // 2], keys[models // 2 : models * 3 // 4]
    after = keys[models * 3 // 4 :] if down_seconds is not None else []
    if down_seconds is None:
        during = keys[models // 2 :]
    try:
        for ns, name, i in before:
            api.create_model(ns, manifest(name, i))
        wait_converged(api, namespaces, converge_timeout)
        apiserver = box.state().pids["apiserver"]  # type: ignore[union-attr]
        errors: list[str] = []

        def create_during() -> None:
            for ns, name, i in during:
                try:
                    api.create_model(ns, manifest(name, i))
                except Exception as err:  # recorded: the end state is what is judged
                    errors.append(f"{name}: {type(err).__name__}: {str(err)[:200]}")
                time.sleep(pause_seconds / max(1, len(during)) / 2)

        os.kill(apiserver, signal.SIGSTOP)
        try:
            creator = threading.Thread(target=create_during, daemon=True)
            creator.start()
            time.sleep(pause_seconds)
        finally:
            os.kill(apiserver, signal.SIGCONT)
        resumed = time.monotonic()
        creator.join(timeout=pause_seconds + 90)
        if errors:
            log(f"creates refused during the pause (retried after): {errors[:3]}")
            for ns, name, i in during:
                if api.model(ns, name) is None:
                    api.create_model(ns, manifest(name, i))
        wait_converged(api, namespaces, converge_timeout)
        report = PauseReport(
            models=len(before) + len(during),
            pause_seconds=pause_seconds,
            converge_after_pause_seconds=time.monotonic() - resumed,
            created_during_pause=len(during),
        )
        if down_seconds is not None:
            report.down_seconds = down_seconds
            report.apiserver_restart_seconds = restart_apiserver(box, down_seconds)
            back = time.monotonic()
            for ns, name, i in after:
                api.create_model(ns, manifest(name, i))
            wait_converged(api, namespaces, converge_timeout)
            report.converge_after_restart_seconds = time.monotonic() - back
            report.models += len(after)
        wait_until("the operator's health endpoint", operator.healthy, 30)
        report.operator_starts = operator.starts - starts + 1
        report.operator_same_process = operator.pid == first_pid and operator.alive()
        return report
    finally:
        if own:
            operator.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability.pause", description=__doc__)
    ap.add_argument("--models", type=int, default=40)
    ap.add_argument("--namespaces", type=int, default=4)
    ap.add_argument("--pause", type=float, default=20.0, help="seconds of SIGSTOP")
    ap.add_argument("--down", type=float, default=80.0, help="seconds the API server is killed "
                    "(0: no kill)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--name", default="reldrill-pause", help="sandbox name")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ns = ap.parse_args(argv)
    box = Sandbox(ns.name, prometheus=False)
    log(f"sandbox {ns.name} up")
    state = box.up(timeout=180)
    started = time.monotonic()
    try:
        install_crd(state)
        api = Api(state)
        names = [f"pause-{i}" for i in range(ns.namespaces)]
        for name in names:
            api.create_namespace(name)
        report = pause_drill(
            state, names, ns.models, ns.pause, ns.down or None, converge_timeout=600, seed=ns.seed
        )
    finally:
        box.down(quiet=True)
    for line in report.lines():
        print(line)
    print(f"wall time: {time.monotonic() - started:.0f} s")
    if ns.json:
        ns.json.write_text(json.dumps(asdict(report), indent=2))
    ok = report.operator_same_process and report.operator_starts == 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
