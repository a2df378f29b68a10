"""A tiny gateway on 127.0.0.1 in front of a model's Ready pods: round robin, or least requests.

The sandbox has no kube-proxy and no Service VIPs: clients reach pods at their pod IPs. A load
generator takes one base URL, so this gateway stands where a cluster's gateway would (an
Inference Gateway, an Envoy in front of the Service): it forwards each HTTP request, whole, to the
next backend in turn and streams the answer back. The backends are the model's Ready pods that are
not being deleted, refreshed every ``refresh_seconds`` from the API server (what an EndpointSlice
controller gives a real gateway), so new replicas take traffic as soon as they are Ready and a pod
being removed stops getting new requests.

Routing (``routing``): ``round-robin`` (what a Service's kube-proxy rules or a plain Envoy
cluster do) sends each request to the next backend in turn; ``least-requests`` sends it to the
backend with the fewest requests in flight from this gateway (ties in turn), the way Envoy's
LEAST_REQUEST balancer or an inference-aware endpoint picker (llm-d's EPP, the Gateway API
inference extension) keeps new requests off replicas that are already queueing — so a replica
that has just turned Ready takes the new requests while the busy ones drain.

Like a gateway with ``retry_on: connect-failure,reset``, a request whose backend refused the
connection or closed it before answering is sent to another backend (those requests never reached
an engine, or reached one that was gone); these are counted as ``retried``. A request that fails
after the answer started cannot be replayed and is counted as ``failed``.

Per-backend counters (answered, in flight, failed) are what the tests use to show that new
replicas take traffic and that no request in flight is dropped when a replica is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the gateway sets itself.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
ROUTING = ("round-robin", "least-requests")
NO_BACKEND_WAIT_SECONDS = 30.0
SHUTDOWN_SECONDS = 5.0
ATTEMPTS = 4


@dataclass
class BackendStats:
    answered: int = 0
    in_flight: int = 0
    failed: int = 0
    first_answer: float | None = None  # time.time() of the first answered request


@dataclass
class GatewayStats:
    """What the gateway saw; times are time.time()."""

    backends: dict[str, BackendStats] = field(default_factory=dict)
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    no_backend: int = 0
    removed_while_busy: list[tuple[float, str, int]] = field(default_factory=list)

    def answered(self) -> int:
        return sum(b.answered for b in self.backends.values())

    def failed(self) -> int:
        return sum(b.failed for b in self.backends.values()) + self.no_backend


class Gateway:
    """HTTP gateway (round robin or least requests); ``start()`` runs it on its own thread and
    event loop."""

    def __init__(
        self,
        discover: Callable[[], Sequence[str]],
        refresh_seconds: float = 0.5,
        host: str = "127.0.0.1",
        port: int = 0,
        request_timeout_seconds: float = 300.0,
        routing: str = "round-robin",
    ) -> None:
        if routing not in ROUTING:
            raise ValueError(f"routing must be one of {', '.join(ROUTING)}, not {routing!r}")
        self.routing = routing
        self.discover = discover
        self.refresh_seconds = refresh_seconds
        self.host, self.port = host, port
        self.timeout = aiohttp.ClientTimeout(total=request_timeout_seconds, sock_connect=5)
        self.stats = GatewayStats()
        self.backends: list[str] = []
        self.backend_history: list[tuple[float, tuple[str, ...]]] = []
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._stop = threading.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Gateway:
        self.set_backends(self.discover())
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        self._refresher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._refresher.is_alive():
            self._refresher.join(timeout=10)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # On stop, requests still waiting on a backend (their clients may have given up) are
        # cancelled after a few seconds rather than holding the teardown.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets: Any = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ backends
    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                found = self.discover()
            except Exception:  # the API server hiccupped: keep the last known set
                continue
            self.set_backends(found)

    def set_backends(self, found: Sequence[str]) -> None:
        new = sorted(set(found))
        if new == self.backends:
            return
        now = time.time()
        for gone in set(self.backends) - set(new):
            busy = self.stats.backends.get(gone, BackendStats()).in_flight
            if busy:
                self.stats.removed_while_busy.append((now, gone, busy))
        for url in new:
            self.stats.backends.setdefault(url, BackendStats())
        self.backends = new
        self.backend_history.append((now, tuple(new)))
        if new and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._changed.set)

    def _pick(self, exclude: set[str]) -> str | None:
        choices = [b for b in self.backends if b not in exclude] or list(self.backends)
        if not choices:
            return None
        self._next += 1
        if self.routing == "least-requests":
            # the fewest in flight; among those, the next in turn
            fewest = min(self.stats.backends[b].in_flight for b in choices)
            choices = [b for b in choices if self.stats.backends[b].in_flight == fewest]
        return choices[self._next % len(choices)]

    async def _backend(self, exclude: set[str]) -> str | None:
        deadline = time.monotonic() + NO_BACKEND_WAIT_SECONDS
        while True:
            backend = self._pick(exclude)
            if backend is not None or time.monotonic() > deadline:
                return backend
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=1.0)

    # ------------------------------------------------------------------ forwarding
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        tried: set[str] = set()
        for attempt in range(ATTEMPTS):
            backend = await self._backend(tried)
            if backend is None:
                self.stats.no_backend += 1
                return web.Response(status=503, text="no Ready backend")
            tried.add(backend)
            stats = self.stats.backends.setdefault(backend, BackendStats())
            stats.in_flight += 1
            try:
                try:
                    upstream = await self._session.request(
                        request.method, backend + request.path_qs, data=body, headers=headers
                    )
                except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as err:
                    # Nothing was answered: the request can go elsewhere.
                    if attempt + 1 < ATTEMPTS:
                        self.stats.retried += 1
                        continue
                    stats.failed += 1
                    self.stats.failures.append(f"{backend}: {err!r}")
                    return web.Response(status=502, text=f"upstream {backend}: {err}")
                async with upstream:
                    out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                    for key, value in upstream.headers.items():
                        if key.lower() not in HOP_HEADERS:
                            out.headers.add(key, value)
                    await out.prepare(request)
                    try:
                        async for chunk in upstream.content.iter_any():
                            await out.write(chunk)
                        await out.write_eof()
                    except (aiohttp.ClientError, ConnectionError, TimeoutError) as err:
                        stats.failed += 1
                        self.stats.failures.append(f"{backend}: mid-answer {err!r}")
                        raise
                    if upstream.status < 500:
                        stats.answered += 1
                        stats.first_answer = stats.first_answer or time.time()
                    else:
                        stats.failed += 1
                        self.stats.failures.append(f"{backend}: HTTP {upstream.status}")
                    return out
            finally:
                stats.in_flight -= 1
        return web.Response(status=502, text="no backend answered")  # not reached


def ready_pod_urls(api_client: Any, namespace: str, model: str, port: int = 8000) -> list[str]:
    """``http://podIP:port`` of the model's Ready pods that are not being deleted."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)
    pods = core.list_namespaced_pod(namespace, label_selector=f"mmop.dev/model={model}").items
    out = []
    for pod in pods:
        if pod.metadata.deletion_timestamp or not pod.status or not pod.status.pod_ip:
            continue
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready:
            out.append(f"http://{pod.status.pod_ip}:{port}")
    return out
