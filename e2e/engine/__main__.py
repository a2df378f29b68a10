"""`python -m e2e.engine install|status|python|model|serve|golden` — the real-engine tier."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from e2e.engine.launcher import EngineServer, EngineStartError
from e2e.engine.models import FAMILIES, tiny_model
from e2e.engine.venv import EngineInstallError, engine_venv, install


def _serve(ns: argparse.Namespace) -> int:
    from e2e.engine.scenario import example_argv

    pod_argv = example_argv(ns.example) if ns.example else ["--served-model-name=tiny"]
    run_dir = Path(ns.run_dir or tempfile.mkdtemp(prefix="mmop-engine-"))
    server, built = EngineServer.for_pod_argv(
        [*pod_argv, *ns.extra], tiny_model(ns.family), run_dir
    )
    for arg, reason in built.dropped:
        print(f"dropped {arg}: {reason}")
    print("vllm " + " ".join(built.argv))
    server.start(timeout=ns.timeout)
    print(f"serving at {server.url} (up in {server.started_seconds:.0f} s); log {server.log_file}")
    print("Ctrl-C stops it")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while server.alive():
            time.sleep(1)
        print(f"vLLM exited; log {server.log_file}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _golden(ns: argparse.Namespace) -> int:
    """Capture the pinned vLLM's /metrics under the pressure scenario, and its start-up log."""
    from e2e.engine.scenario import PRESSURE_FLAGS, example_argv, pressure
    from mmop.metrics import parse_exposition

    out: Path = ns.out
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="mmop-engine-golden-"))
    argv = [*example_argv("qwen2.5-vl-7b.yaml"), *PRESSURE_FLAGS]
    server, _ = EngineServer.for_pod_argv(argv, tiny_model("qwen2-vl"), run_dir)
    try:
        server.start()
        run = pressure(server, "qwen-vl")
    finally:
        server.stop()

    # The fullest KV cache with requests queued (else the fullest) stands for "loaded".
    def load(item: tuple[float, str]) -> tuple[bool, float]:
        s = parse_exposition(item[1], "golden", item[0])
        return s.gauges.get("requests_waiting", 0.0) > 0, s.gauges.get("kv_cache_usage", 0.0)

    peak = max(run.during, key=load)
    t0 = run.before[0]
    files = {"idle": run.before, "loaded": peak, "after": run.after}
    for name, (_when, text) in files.items():
        (out / f"metrics-{name}.txt").write_text(text)
    (out / "times.json").write_text(
        json.dumps({name: round(when - t0, 3) for name, (when, _) in files.items()}, indent=2)
        + "\n"
    )
    log_text = server.log_text()
    startup = [
        ln
        for ln in log_text.splitlines()
        if "KV cache" in ln or "Model loading took" in ln or "Loading weights took" in ln
    ]
    (out / "startup.log").write_text("\n".join(startup) + "\n")
    version = re.search(r"LLM engine \(v([\w.+-]+)\)", log_text)
    source = {
        "vllm": version.group(1) if version else None,
        "command": "python -m e2e.engine golden " + str(ns.out),
        "argv": server.argv,
    }
    (out / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the engine venv (a no-op when cached)")
    inst.add_argument("--force", action="store_true", help="reinstall even when cached")
    sub.add_parser("python", help="print the engine venv's python (installed or not)")
    sub.add_parser("status", help="print the install record as JSON")
    model = sub.add_parser("model", help="generate (or find) a tiny model, print its directory")
    model.add_argument("family", choices=FAMILIES)
    serve = sub.add_parser("serve", help="serve a tiny model on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--family", choices=FAMILIES, default="qwen2-vl")
    serve.add_argument("--example", help="use the argv mmop renders for examples/EXAMPLE")
    serve.add_argument("--run-dir", help="caches and log (default: a new temporary directory)")
    serve.add_argument("--timeout", type=float, default=240.0)
    serve.add_argument("extra", nargs=argparse.REMAINDER, help="more vLLM flags, after --")
    golden = sub.add_parser("golden", help="capture /metrics and start-up lines under load")
    golden.add_argument("out", type=Path)
    ns = parser.parse_args(argv)
    if getattr(ns, "extra", None) and ns.extra[0] == "--":
        ns.extra = ns.extra[1:]
    try:
        if ns.command == "install":
            install(force=ns.force)
        elif ns.command == "python":
            print(engine_venv().python)
        elif ns.command == "status":
            venv = engine_venv()
            record = {"venv": str(venv.venv), "installed": venv.installed(), **venv.record()}
            print(json.dumps(record, indent=2))
        elif ns.command == "model":
            print(tiny_model(ns.family))
        elif ns.command == "serve":
            return _serve(ns)
        elif ns.command == "golden":
            return _golden(ns)
    except (EngineInstallError, EngineStartError) as err:
        print(f"mmop engine: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
