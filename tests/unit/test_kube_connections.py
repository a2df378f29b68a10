"""The operator's API calls reuse their connections (a new one costs a TLS handshake on both
ends). Against a real HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from mmop.controller.kube import Kube


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: ClassVar[set[tuple[str, int]]] = set()
    requests = 0

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).connections.add(self.client_address)
        type(self).requests += 1
        body = json.dumps(
            {"kind": "Status", "metadata": {"name": "x", "resourceVersion": "1"}, "spec": {}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PATCH = do_POST = do_GET = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections, _Handler.requests = set(), 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_writes_whose_answers_are_not_read_still_reuse_one_connection(server: str) -> None:
    from kubernetes import client

    cfg = client.Configuration(host=server)
    kube = Kube(client.ApiClient(cfg))
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {},
    }
    for _ in range(5):
        kube.apply(obj)
        kube.event(obj, "Normal", "Applied", "applied")
        kube.scale("Deployment", "ns", "m", 2)
        kube.update_status("ns", "m", lambda _: {"replicas": 1})
    assert _Handler.requests == 25  # 5 × (apply, event, scale, status read and patch)
    assert len(_Handler.connections) == 1
