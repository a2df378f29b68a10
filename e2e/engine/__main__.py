"""`python -m e2e.engine install|path|status` — the real-engine tier's virtualenv."""

from __future__ import annotations

import argparse
import json
import sys

from e2e.engine.venv import EngineInstallError, engine_venv, install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the engine venv (a no-op when cached)")
    inst.add_argument("--force", action="store_true", help="reinstall even when cached")
    sub.add_parser("python", help="print the engine venv's python (installed or not)")
    sub.add_parser("status", help="print the install record as JSON")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "install":
            install(force=ns.force)
        elif ns.command == "python":
            print(engine_venv().python)
        elif ns.command == "status":
            venv = engine_venv()
            print(
                json.dumps(
                    {"venv": str(venv.venv), "installed": venv.installed(), **venv.record()},
                    indent=2,
                )
            )
    except EngineInstallError as err:
        print(f"mmop engine: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
