"""The README's main command: the demo on its own sandbox."""

from __future__ import annotations

import os
import subprocess
import sys

from e2e.sandbox import Sandbox


def test_demo_plans_and_readies_every_example() -> None:
    name = f"pytest-demo-{os.getpid()}"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "e2e.demo", "--name", name, "--timeout", "120"],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "timed out" not in proc.stderr, proc.stderr
        table = proc.stdout.split("$ kubectl get mmm -n demo", 1)[1].split("$ kubectl describe", 1)[
            0
        ]
        rows = [line.split() for line in table.strip().splitlines()[1:]]
        assert len(rows) == 7, table
        for row in rows:
            replicas, ready = row[-3], row[-2]
            assert replicas == ready and int(ready) >= 1, row
        assert "Planned" in proc.stdout or "PlanFound" in proc.stdout
    finally:
        Sandbox(name).down(quiet=True)
