"""Drill (b): the operator SIGKILLed at random points while models are created, edited and
deleted; it must converge and, once settled, a restart must write nothing.

Usage (from the repository root):
    python -m bench.reliability.kills [--kills 20] [--models 100] [--seed 15]

On a sandbox of its own (``--name``, default ``reldrill-kills``; torn down at the end) with GPU
pools large enough that every model is plannable, and the operator as a process (``mmop run --all-
namespaces``, kwok alone running the pods): ``--models`` models are created across ``--namespaces``
namespaces, half of them edited once (a longer context: a re-plan and a new pod template) and a
fifth deleted, one operation every ``--pace`` seconds, in a seeded random order. Meanwhile the
operator is killed with SIGKILL ``--kills`` times: half of the kills 0.05..0.6 s after a create or
an edit (while the operator writes that model's children), the others after a random 0.5..``--max-
uptime`` s of life; each time it is left down a random 0..2 s (the churn goes on) and started
again. After the last start: convergence (every live model Planned=True at its generation with
exactly one Deployment, Service and PodDisruptionBudget named as it and controlled by it, the
Deployment on the plan's template; no mmop-managed object without its model), then a settled
restart (SIGTERM, start, every model resumed, 10 s observed) whose writes are counted from outside:
resourceVersions of every model and child, the API server's write counters
(apiserver_request_total: multimodalmodels writes, applies to the children), Events about the
models.

``MMOP_DRILL_SRC=DIR`` runs the operator and CRD of another tree (e.g. ``git archive`` of a
commit) instead of this checkout's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml
from bench.reliability.drill import Api, install_crd, kill_drill, log
from e2e.sandbox import Sandbox

# Pools for --models models: one L4 per model and room to spare.
POOLS = {
    "pools": [
        {"name": "l4", "gpu": "L4", "nodes": 0, "gpusPerNode": 1, "cpu": "16", "memory": "64Gi"},
        {"name": "l40s", "gpu": "L40S", "nodes": 0, "gpusPerNode": 4, "cpu": "64",
         "memory": "512Gi"},
    ]
}  # fmt: skip


def pools_for(models: int) -> dict[str, object]:
    pools = json.loads(json.dumps(POOLS))
    pools["pools"][0]["nodes"] = models + 10
    pools["pools"][1]["nodes"] = max(2, models // 8)
    return dict(pools)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability.kills", description=__doc__)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--namespaces", type=int, default=4)
    ap.add_argument("--pace", type=float, default=0.3, help="seconds between operations")
    ap.add_argument("--max-uptime", type=float, default=8.0, help="longest life before a kill")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--name", default="reldrill-kills", help="sandbox name")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    ns = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pools = Path(tmp) / "pools.yaml"
        pools.write_text(yaml.safe_dump(pools_for(ns.models)))
        box = Sandbox(ns.name, pools_file=pools, prometheus=False)
        log(f"sandbox {ns.name} up")
        state = box.up(timeout=300)
    started = time.monotonic()
    try:
        install_crd(state)
        api = Api(state)
        names = [f"kills-{i}" for i in range(ns.namespaces)]
        for name in names:
            api.create_namespace(name)
        report = kill_drill(
            state, names, ns.models, ns.kills, seed=ns.seed, pace=ns.pace,
            max_uptime=ns.max_uptime, converge_timeout=600,
        )  # fmt: skip
    finally:
        box.down(quiet=True)
    for line in report.lines():
        print(line)
    print(f"wall time: {time.monotonic() - started:.0f} s")
    if ns.json:
        ns.json.write_text(json.dumps(asdict(report), indent=2))
    return 0 if not report.problems and report.restart.total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
