"""`python -m e2e.load install|status|run` — the load generator tier."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from e2e.load.gateway import Gateway
from e2e.load.patterns import Pattern, burst, generated_trace, sinusoid, step, write_trace
from e2e.load.runner import LoadRun, quantile
from e2e.load.venv import LoadInstallError, install, load_venv, require

PATTERNS = {
    "step": lambda: step(2, 8, at=10, hold=40, after=20),
    "burst": lambda: burst(2, 12, at=10, length=10, duration=60),
    "sinusoid": lambda: sinusoid(5, 20, period=150, duration=150),
    "trace": lambda: generated_trace(duration=120),
}


def _run(ns: argparse.Namespace) -> int:
    venv = require()
    pattern: Pattern = PATTERNS[ns.pattern]()
    work = Path(ns.out or tempfile.mkdtemp(prefix="mmop-load-"))
    arrivals = pattern.arrivals(ns.seed)
    trace = write_trace(work / "trace.jsonl", arrivals, venv.image_files(), seed=ns.seed)
    print(f"{pattern.description}: {len(arrivals)} requests; trace {trace}")
    with Gateway(lambda: list(ns.url)) as gateway:
        run = LoadRun(
            gateway.url,
            ns.model,
            trace,
            work / "aiperf",
            first_arrival_seconds=arrivals[0] if arrivals else 0.0,
            output_tokens=ns.output_tokens,
        ).start()
        result = run.wait(timeout=pattern.duration_seconds + 300)
    ttfts = [r.ttft_seconds for r in result.records if r.ttft_seconds is not None]
    report = {
        "returncode": result.returncode,
        "requests": len(result.records),
        "failed": len(result.failed()),
        "ttft_p95_seconds": quantile(ttfts, 0.95) if ttfts else None,
        "by_backend": {u: b.answered for u, b in gateway.stats.backends.items()},
        "gateway_retried": gateway.stats.retried,
        "artifacts": str(result.artifact_dir),
    }
    print(json.dumps(report, indent=2))
    return 0 if result.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.load", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="create the load venv (no-op when cached)")
    p_install.add_argument("--force", action="store_true")
    sub.add_parser("status", help="where the load venv is and what it holds")
    p_run = sub.add_parser("run", help="replay a pattern against servers, through the gateway")
    p_run.add_argument("--url", action="append", required=True, help="a backend; repeatable")
    p_run.add_argument("--model", required=True, help="the served model name")
    p_run.add_argument("--pattern", choices=sorted(PATTERNS), default="step")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--output-tokens", type=int, default=10)
    p_run.add_argument("--out", help="working directory (default: a new temporary one)")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "install":
            install(force=ns.force)
            return 0
        if ns.command == "status":
            venv = load_venv()
            print(json.dumps({"venv": str(venv.venv), "installed": venv.installed(),
                              **venv.record()}, indent=2))  # fmt: skip
            return 0 if venv.installed() else 1
        return _run(ns)
    except LoadInstallError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
