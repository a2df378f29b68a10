"""Check vLLM argv lists (``mmop.render.vllm_args`` of plans, passed in by the caller) with the
installed vLLM's own serve parser (runs in the engine venv).

Reads a JSON object {name: [arg, ...]} on stdin; for each, parses the argv as ``vllm serve``
would (``make_arg_parser`` on a ``FlexibleArgumentParser``), runs vLLM's pre-load validation
(``validate_parsed_serve_args``) and builds the engine arguments (``AsyncEngineArgs
.from_cli_args``). Nothing loads a model. Prints a JSON object {name: {"ok": bool, "error": str,
"model": str}} on stdout.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


def check(argv: list[str]) -> dict[str, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv)
        validate_parsed_serve_args(ns)
        if ns.model_tag:
            ns.model = ns.model_tag  # what `vllm serve MODEL` does
        engine_args = AsyncEngineArgs.from_cli_args(ns)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        return {"ok": False, "error": lines[-1] if lines else "the parser exited"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "error": "", "model": str(engine_args.model)}


def main() -> int:
    argvs: dict[str, list[str]] = json.load(sys.stdin)
    print(json.dumps({name: check(argv) for name, argv in argvs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
