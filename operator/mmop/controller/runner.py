"""Running the operator: in the foreground (``mmop run``) or in a background thread (tests and
benchmarks), always with one ``OperatorContext`` in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Iterator, Sequence

import kopf

from mmop.controller.context import OperatorContext

HANDLERS_MODULE = "mmop.controller.handlers"
# The watches of LeaderWorkerSets, loaded only when the operator serves replicas over several
# nodes (``--multinode``): without it mmop neither needs the LWS CRD nor the rights to read it.
MULTINODE_HANDLERS_MODULE = "mmop.controller.handlers_multinode"


def load_handlers(ctx: OperatorContext) -> None:
    """Register the handlers with kopf's default registry (the modules are loaded, as ``kopf
    run -m`` would; nothing imports them)."""
    importlib.import_module(HANDLERS_MODULE)
    if ctx.config.multinode:
        importlib.import_module(MULTINODE_HANDLERS_MODULE)


def run(
    ctx: OperatorContext,
    namespaces: Sequence[str] = (),
    peering: str | None = None,
    priority: int | None = None,
    liveness: str | None = None,
    settings: kopf.OperatorSettings | None = None,
) -> None:
    """Run the operator in this thread until it is stopped (SIGINT/SIGTERM)."""
    load_handlers(ctx)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
        settings=settings,
        memo=kopf.Memo(context=ctx),
    )


@contextlib.contextmanager
def background(ctx: OperatorContext, ready_timeout: float = 60.0) -> Iterator[OperatorContext]:
    """The operator running cluster-wide in a thread of this process, for as long as the
    ``with`` block lasts; yields its context."""
    load_handlers(ctx)
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(
                kopf.operator(
                    clusterwide=True,
                    standalone=True,
                    memo=kopf.Memo(context=ctx),
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as err:  # reported to the caller on exit
            failure.append(err)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="mmop-operator", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout):
        stop.set()
        raise RuntimeError(f"the operator did not start within {ready_timeout} s: {failure}")
    try:
        yield ctx
    finally:
        stop.set()
        thread.join(timeout=30)
    if failure and not isinstance(failure[0], asyncio.CancelledError):
        raise RuntimeError(f"the operator failed: {failure[0]!r}") from failure[0]
