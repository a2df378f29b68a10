"""`python -m e2e.demo` — the README's main job on the local sandbox.

Brings the sandbox up (or uses the running one), installs the MultimodalModel CRD, starts the
operator as a sandbox component (so `python -m e2e.sandbox down` stops it), applies every
manifest in examples/ to the `demo` namespace, waits until each is planned and its pods are
Ready, then shows `kubectl get mmm` and one `kubectl describe`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from e2e.sandbox import Sandbox, SandboxError
from e2e.waiting import WaitTimeout, wait_for

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__)
    parser.add_argument("--name", default="default", help="sandbox name")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait")
    ns = parser.parse_args(argv)
    box = Sandbox(ns.name)
    try:
        state = box.state() if box.running() else None
        if state is None:
            print(f"starting sandbox {ns.name!r} …", flush=True)
            state = box.up(timeout=180)
        kubectl_bin = state.bin_dir["kubectl"]

        def kubectl(*args: str, check: bool = True) -> str:
            proc = subprocess.run(
                [kubectl_bin, f"--kubeconfig={state.kubeconfig}", *args],
                capture_output=True,
                text=True,
                check=False,
            )
            if check and proc.returncode != 0:
                raise SandboxError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
            return proc.stdout

        kubectl("apply", "--server-side", "--field-manager=mmop", "-f", str(ROOT / "crds"))
        kubectl("wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev")
        wait_for(
            lambda: (
                subprocess.run(
                    [kubectl_bin, f"--kubeconfig={state.kubeconfig}", "get", "mmm", "-A"],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ),
            "the MultimodalModel API",
        )
        if "operator" not in state.pids or not box.status()["components"].get("operator"):
            box.start_operator(pod_annotations={"sandbox.mmop.dev/time-to-first-token": "100"})
            print(f"operator started (logs: {box.logs / 'operator.log'})", flush=True)
        kubectl("create", "namespace", NAMESPACE, check=False)
        examples = sorted((ROOT / "examples").glob("*.yaml"))
        for path in examples:
            kubectl("apply", "-n", NAMESPACE, "-f", str(path))
        print(f"applied {len(examples)} examples to namespace {NAMESPACE!r}; waiting …", flush=True)

        def settled() -> bool:
            items = json.loads(kubectl("get", "mmm", "-n", NAMESPACE, "-o", "json"))["items"]
            if len(items) < len(examples):
                return False
            for item in items:
                conds = {c["type"]: c for c in (item.get("status") or {}).get("conditions", [])}
                planned = conds.get("Planned")
                if planned is None:
                    return False
                if planned["status"] == "True" and conds.get("Ready", {}).get("status") != "True":
                    return False
            return True

        try:
            wait_for(settled, "every example planned and Ready", timeout=ns.timeout, interval=1)
        except WaitTimeout as err:
            print(f"note: {err}", file=sys.stderr)
        print()
        print(f"$ kubectl get mmm -n {NAMESPACE}")
        print(kubectl("get", "mmm", "-n", NAMESPACE))
        print(f"$ kubectl describe mmm qwen-vl -n {NAMESPACE}")
        print(kubectl("describe", "mmm", "qwen-vl", "-n", NAMESPACE))
        print(f"export KUBECONFIG={state.kubeconfig}   # to look around")
        print(f"python -m e2e.sandbox --name {ns.name} down   # to stop everything")
    except SandboxError as err:
        print(f"mmop demo: {err}", file=sys.stderr)
        return 1
    return 0


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
