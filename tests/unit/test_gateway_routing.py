"""The load gateway's routing (e2e/load/gateway.py): round robin spreads requests in turn
whatever the backends hold; least requests sends each to a backend with the fewest in flight, so
a replica that has just turned Ready takes the new requests while the busy ones drain."""

from __future__ import annotations

import pytest
from e2e.load.gateway import Gateway

A, B, C = "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"


def gateway(routing: str, busy: dict[str, int]) -> Gateway:
    gw = Gateway(lambda: [A, B, C], routing=routing)
    gw.set_backends([A, B, C])  # not started: no thread, no socket
    for url, n in busy.items():
        gw.stats.backends[url].in_flight = n
    return gw


def test_round_robin_takes_each_backend_in_turn_however_busy() -> None:
    gw = gateway("round-robin", {A: 5, B: 5, C: 0})
    picks = [gw._pick(set()) for _ in range(6)]
    assert sorted(picks) == sorted([A, B, C] * 2)


def test_least_requests_keeps_new_requests_off_busy_backends() -> None:
    gw = gateway("least-requests", {A: 5, B: 5, C: 0})
    assert {gw._pick(set()) for _ in range(4)} == {C}
    gw.stats.backends[C].in_flight = 5
    picks = [gw._pick(set()) for _ in range(6)]
    assert sorted(picks) == sorted([A, B, C] * 2)  # equal: in turn
    assert gw._pick({C}) in (A, B)  # a backend that failed this request is not asked again


def test_an_unknown_routing_is_refused() -> None:
    with pytest.raises(ValueError, match="least-requests"):
        Gateway(lambda: [A], routing="random")
