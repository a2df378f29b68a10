"""`python -m e2e.sandbox up|down|status|env|build` — the local sandbox cluster."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from e2e.sandbox.cluster import Sandbox, SandboxError, find_binaries
from e2e.sandbox.pools import DEFAULT_POOLS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.sandbox", description=__doc__)
    parser.add_argument("--name", default="default", help="sandbox name (several can run)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a sandbox with fake GPU node pools")
    up.add_argument("--pools", type=Path, default=DEFAULT_POOLS, help="node pools YAML")
    up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    up.add_argument(
        "--lws",
        action="store_true",
        help="also run the LeaderWorkerSet controller and its webhooks (builds it the first time)",
    )
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    sub.add_parser("down", help="stop the sandbox and remove its files")
    sub.add_parser("status", help="print the sandbox's state as JSON")
    sub.add_parser("env", help="print export lines for KUBECONFIG and PATH")
    sub.add_parser("build", help="build (or find) the sandbox binaries and print where")
    ns = parser.parse_args(argv)
    sandbox = Sandbox(
        ns.name,
        pools_file=getattr(ns, "pools", DEFAULT_POOLS),
        prometheus=False if getattr(ns, "no_prometheus", False) else None,
        lws=getattr(ns, "lws", False),
    )
    try:
        if ns.command == "up":
            state = sandbox.up(timeout=ns.timeout)
            nodes = sum(1 for _ in _nodes(state.kubeconfig))
            print(f"sandbox {ns.name!r} is up in {state.started_seconds:.1f} s: {nodes} GPU nodes")
            print(f"  export KUBECONFIG={state.kubeconfig}")
            print("  kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count")
            if state.prometheus_url:
                print(f"  Prometheus: {state.prometheus_url}")
            if "lws" in state.pids:
                webhook = state.ports["lws-webhook"]
                print(f"  LeaderWorkerSet controller: webhooks on 127.0.0.1:{webhook}")
            print(f"  logs: {sandbox.logs}")
            print(f"  stop it with: python -m e2e.sandbox --name {ns.name} down")
        elif ns.command == "down":
            if sandbox.down():
                print(f"sandbox {ns.name!r} stopped")
            else:
                print(f"sandbox {ns.name!r} was not running")
        elif ns.command == "status":
            print(json.dumps(sandbox.status(), indent=2))
        elif ns.command == "env":
            for key, value in sandbox.env().items():
                print(f"export {key}={shlex.quote(value)}")
        elif ns.command == "build":
            for name, path in find_binaries().items():
                print(f"{name}={path}")
    except SandboxError as err:
        print(f"mmop sandbox: {err}", file=sys.stderr)
        return 1
    return 0


def _nodes(kubeconfig: str) -> list[str]:
    from kubernetes import client, config

    api: Any = client.CoreV1Api(config.new_client_from_config(kubeconfig))
    return [n.metadata.name for n in api.list_node().items]


if __name__ == "__main__":
    sys.exit(main())
