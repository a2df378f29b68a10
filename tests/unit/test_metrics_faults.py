"""Engines that misbehave: values vLLM cannot report, redirects, hangs, garbage and floods.

Every test serves /metrics from local aiohttp servers on 127.0.0.1 and reads it with the
functions the operator's autoscaler tick uses (``scrape`` → ``signals`` → ``loads_from`` →
``decide``, as ``controller/autoscaling.tick`` calls them). Timeouts are short and every wait is
bounded, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mmop import autoscaler
from mmop.api import Scaling, Slo
from mmop.metrics import Scrape, Signals, parse_exposition, signals
from mmop.metrics.promql import PromQLError, query_model
from mmop.metrics.scrape import (
    MAX_BODY_BYTES,
    PARSE_INLINE_BYTES,
    FailureReason,
    ScrapeFailure,
    ScrapeResult,
    Target,
    TargetResult,
    kv_cache_tokens,
    scrape,
    unusable_message,
)
from mmop.vllm import PINNED_VLLM_VERSION

PINNED = Path(__file__).parent / "golden" / f"vllm-{PINNED_VLLM_VERSION}"
IDLE = (PINNED / "metrics-idle.txt").read_text()
LOADED = (PINNED / "metrics-loaded.txt").read_text()
TIMEOUT_SECONDS = 1.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 with ``routes`` (path → handler); yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.wait_for(runner.cleanup(), 5)


def text(body: str) -> Handler:
    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type="text/plain")

    return handler


def in_pieces(body: str, pause: float = 0.05) -> Handler:
    """The body in two writes with a pause between: it reaches the client in two reads."""

    async def handler(request: web.Request) -> web.StreamResponse:
        data = body.encode()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        await asyncio.sleep(pause)
        await response.write(data[len(data) // 2 :])
        return response

    return handler


def with_value(exposition: str, sample: str, value: str) -> str:
    """``exposition`` with the value of the first line of ``sample`` (name and label text
    up to the closing brace, e.g. ``vllm:num_requests_waiting{``) replaced by ``value``."""
    pattern = re.compile(rf"^({re.escape(sample)}[^\n]*?\}}) \S+$", re.M)
    changed, n = pattern.subn(rf"\g<1> {value}", exposition, count=1)
    assert n == 1, sample
    return changed


def controller_tick(
    before: ScrapeResult, after: ScrapeResult
) -> tuple[Signals, autoscaler.Decision]:
    """What ``controller/autoscaling.tick`` does with two scrapes of a model (Auto mode)."""
    sig = signals(before.scrapes, after.scrapes, unusable=len(after.failures))
    loaded = [
        (
            s.pod,
            s.gauges.get("kv_cache_usage"),
            s.gauges.get("requests_waiting"),
            s.gauges.get("requests_running"),
        )
        for s in after.scrapes
    ]
    replicas = len(after.targets)
    obs = autoscaler.Observation(
        now_seconds=1000.0,
        desired_replicas=replicas,
        ready_replicas=replicas,
        loads=autoscaler.loads_from(loaded),
        ttft_p95_seconds=sig.ttft_p95_seconds,
        preemptions_per_second=sig.preemptions_per_second,
        planned_concurrency=8,
    )
    decision, _ = autoscaler.decide(Scaling(max_replicas=8), Slo(), obs, autoscaler.State())
    return sig, decision


def assert_finite(sig: Signals) -> None:
    for name, value in sig.model_dump(exclude={"finished_per_pod"}).items():
        assert value is None or math.isfinite(value), (name, value)
    for pod, rate in sig.finished_per_pod.items():
        assert math.isfinite(rate) and rate >= 0, (pod, rate)


async def two_scrapes(
    before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[ScrapeResult, ScrapeResult]:
    """Scrape pods (name → body) at the start and at the end of a window."""
    routes = {f"/before/{p}": text(b) for p, b in before.items()}
    routes |= {f"/after/{p}": text(b) for p, b in after.items()}
    async with serve(routes) as url:
        first = await scrape(
            [Target(p, f"{url}/before/{p}") for p in before], timeout_seconds=TIMEOUT_SECONDS
        )
        await asyncio.sleep(0.01)
        second = await scrape(
            [Target(p, f"{url}/after/{p}") for p in after], timeout_seconds=TIMEOUT_SECONDS
        )
    return first, second


# --------------------------------------------------------------------------- R7a: invalid values

INVALID = [
    ("vllm:num_requests_waiting{", "NaN", "vllm:num_requests_waiting is NaN"),
    ("vllm:num_requests_waiting{", "+Inf", "vllm:num_requests_waiting is +Inf"),
    ("vllm:num_requests_waiting{", "-3", "vllm:num_requests_waiting is negative"),
    ("vllm:num_requests_running{", "-Inf", "vllm:num_requests_running is -Inf"),
    ("vllm:num_requests_running{", "-1", "vllm:num_requests_running is negative"),
    ("vllm:kv_cache_usage_perc{", "NaN", "vllm:kv_cache_usage_perc is NaN"),
    ("vllm:kv_cache_usage_perc{", "1.5", "vllm:kv_cache_usage_perc is above 1"),
    ("vllm:kv_cache_usage_perc{", "-0.5", "vllm:kv_cache_usage_perc is negative"),
    ("vllm:num_preemptions_total{", "+Inf", "vllm:num_preemptions is +Inf"),
    ("vllm:num_preemptions_total{", "NaN", "vllm:num_preemptions is NaN"),
    ("vllm:num_preemptions_total{", "-5", "vllm:num_preemptions is negative"),
    ("vllm:prompt_tokens_total{", "1e300", "vllm:prompt_tokens is above 2^53"),
    (
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1"',
        "NaN",
        "vllm:time_to_first_token_seconds_bucket is NaN",
    ),
    (
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1"',
        "5",  # more observations at or below 0.1 s than at or below 0.25 s
        "vllm:time_to_first_token_seconds_bucket counts fall as the bound grows",
    ),
    (
        "vllm:time_to_first_token_seconds_count{",
        "-Inf",
        "vllm:time_to_first_token_seconds_count is -Inf",
    ),
    (
        "vllm:e2e_request_latency_seconds_sum{",
        "NaN",
        "vllm:e2e_request_latency_seconds_sum is NaN",
    ),
]


@pytest.mark.parametrize(("sample", "value", "message"), INVALID)
def test_a_value_vllm_cannot_report_makes_that_pod_unusable_not_the_tick(
    sample: str, value: str, message: str
) -> None:
    bad = with_value(LOADED, sample, value)
    before, after = asyncio.run(
        two_scrapes({"good": IDLE, "bad": IDLE}, {"good": LOADED, "bad": bad})
    )
    assert after.reasons == {"bad": FailureReason.INVALID}
    assert after.failures == {"bad": message}
    sig, decision = controller_tick(before, after)  # no exception
    assert_finite(sig)
    assert sig.pods == 1 and sig.unusable_pods == 1
    # the good pod's signals are exactly what it alone gives
    alone = signals(before.scrapes[:1], after.scrapes)
    assert sig.model_dump(exclude={"unusable_pods"}) == alone.model_dump(exclude={"unusable_pods"})
    assert decision.action in tuple(autoscaler.Action)
    assert unusable_message(after.targets) == f"metrics of 1/2 replicas unusable: bad: {message}"


def test_an_invalid_scrape_at_the_start_of_the_window_does_not_poison_the_window() -> None:
    bad = with_value(IDLE, "vllm:num_preemptions_total{", "NaN")
    before, after = asyncio.run(
        two_scrapes({"good": IDLE, "odd": bad}, {"good": LOADED, "odd": LOADED})
    )
    assert before.reasons == {"odd": FailureReason.INVALID}
    sig, _ = controller_tick(before, after)
    assert_finite(sig)
    assert sig.pods == 2 and sig.unusable_pods == 0
    # rates come from the pod with a valid window only ("odd" counts for gauges only)
    only_good = signals(before.scrapes, after.scrapes[:1])
    assert sig.preemptions_per_second == only_good.preemptions_per_second
    assert sig.requests_waiting == 2 * only_good.requests_waiting  # type: ignore[operator]


def test_when_no_pod_is_usable_the_signals_say_so_and_the_policy_holds() -> None:
    bad = with_value(LOADED, "vllm:num_requests_waiting{", "NaN")
    before, after = asyncio.run(two_scrapes({"a": IDLE, "b": IDLE}, {"a": bad, "b": bad}))
    sig, decision = controller_tick(before, after)
    assert sig.pods == 0 and sig.unusable_pods == 2
    assert decision.action == autoscaler.Action.HOLD and decision.reason == "NoSignals"


def test_signals_leave_out_scrapes_they_are_handed_with_invalid_values() -> None:
    """Scrapes not made by parse_exposition (built by hand, or kept from an older release)."""
    good = Scrape("a", 10.0, gauges={"kv_cache_usage": 0.5, "requests_waiting": 1.0})
    nan = Scrape("b", 10.0, gauges={"kv_cache_usage": math.nan, "requests_waiting": 1.0})
    inf = Scrape("c", 10.0, counters={"preemptions": math.inf})
    earlier = Scrape("c", 0.0, counters={"preemptions": 0.0})
    sig = signals([earlier], [good, nan, inf])
    assert sig.pods == 1 and sig.unusable_pods == 2
    assert sig.kv_cache_usage_max == 0.5 and sig.preemptions_per_second is None


def test_a_non_numeric_bucket_bound_is_unparsable_not_a_crash() -> None:
    bad = LOADED.replace('le="0.1",', 'le="fast",', 1)
    _, after = asyncio.run(two_scrapes({}, {"good": LOADED, "bad": bad}))
    assert after.reasons == {"bad": FailureReason.UNPARSABLE}
    assert [s.pod for s in after.scrapes] == ["good"]


def test_the_kv_cache_size_label_is_read_only_when_it_is_a_count() -> None:
    line = 'vllm:cache_config_info{block_size="16",kv_cache_size_tokens="%s"} 1.0\n'
    assert kv_cache_tokens(line % "4096") == 4096
    for junk in ("nan", "inf", "-4096"):
        assert kv_cache_tokens(line % junk) is None


# --------------------------------------------------------------------------- bodies in pieces


def test_a_body_that_arrives_in_pieces_is_read_whole() -> None:
    async def run() -> ScrapeResult:
        async with serve({"/metrics": in_pieces(LOADED)}) as url:
            return await scrape([Target("p", f"{url}/metrics")], TIMEOUT_SECONDS)

    result = asyncio.run(run())
    assert result.failures == {}
    expected = parse_exposition(LOADED, "p", 0.0)
    (got,) = result.scrapes
    assert (got.gauges.keys() - {"kv_cache_tokens"}, got.counters, got.histograms) == (
        expected.gauges.keys(),
        expected.counters,
        expected.histograms,
    )


def test_a_large_exposition_within_the_cap_is_read_whole_off_the_event_loop() -> None:
    filler = "".join(f'python_info{{n="{i}"}} 1.0\n' for i in range(20_000))  # about 500 KiB
    body = LOADED + "# TYPE python_info gauge\n" + filler
    assert PARSE_INLINE_BYTES < len(body.encode()) < MAX_BODY_BYTES

    async def run() -> ScrapeResult:
        async with serve({"/metrics": text(body)}) as url:
            return await scrape([Target("p", f"{url}/metrics")], TIMEOUT_SECONDS)

    result = asyncio.run(run())
    assert result.failures == {}
    assert result.scrapes[0].counters == parse_exposition(LOADED, "p", 0.0).counters


# --------------------------------------------------------------------------- R7b: redirects


class Counter:
    def __init__(self) -> None:
        self.hits = 0

    async def handler(self, _: web.Request) -> web.StreamResponse:
        self.hits += 1
        return web.Response(text=LOADED, content_type="text/plain")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_from_a_pod_is_refused_and_never_followed(status: int) -> None:
    elsewhere = Counter()

    async def run() -> ScrapeResult:
        async with serve({"/internal": elsewhere.handler}) as inside:

            async def redirect(_: web.Request) -> web.StreamResponse:
                return web.Response(status=status, headers={"Location": f"{inside}/internal"})

            async with serve({"/metrics": redirect}) as pod:
                return await scrape([Target("p", f"{pod}/metrics")], TIMEOUT_SECONDS)

    result = asyncio.run(run())
    assert result.reasons == {"p": FailureReason.REDIRECT_REFUSED}
    assert result.failures == {"p": f"/metrics answered HTTP {status}: redirect refused"}
    assert elsewhere.hits == 0


def test_a_redirect_from_prometheus_is_refused_and_never_followed() -> None:
    elsewhere = Counter()

    async def run() -> None:
        async with serve({"/api/v1/query": elsewhere.handler}) as inside:

            async def redirect(_: web.Request) -> web.StreamResponse:
                return web.Response(status=302, headers={"Location": f"{inside}/api/v1/query"})

            async with serve({"/api/v1/query": redirect}) as prometheus:
                with pytest.raises(PromQLError, match="redirect refused"):
                    await query_model(prometheus, "ns", "m", 30, timeout_seconds=TIMEOUT_SECONDS)
                async with aiohttp.ClientSession() as session:  # a caller's session too
                    with pytest.raises(PromQLError, match="redirect refused"):
                        await query_model(prometheus, "ns", "m", 30, TIMEOUT_SECONDS, session)

    asyncio.run(run())
    assert elsewhere.hits == 0


def test_prometheus_values_vllm_cannot_report_read_as_no_value() -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        value = "-2" if "num_requests_waiting" in request.query["query"] else "+Inf"
        result = [{"metric": {"pod": "m-1-a"}, "value": [1.0, value]}]
        return web.json_response({"status": "success", "data": {"result": result}})

    async def run() -> None:
        async with serve({"/api/v1/query": answer}) as prometheus:
            got = await query_model(prometheus, "ns", "m", 30, TIMEOUT_SECONDS)
        load = got.pods["m-1-a"]
        assert load.requests_waiting is None and load.kv_cache_usage is None
        assert got.ttft_p95_seconds is None and got.preemptions_per_second is None

    asyncio.run(run())


# --------------------------------------------------------------------------- drill (d)

TEN_MB = (b"# TYPE vllm:num_requests_waiting gauge\n" + b"vllm:num_requests_waiting 0\n" * 400_000)[
    : 10 * 1024 * 1024
]


async def _hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)  # cancelled when the server stops
    return web.Response(text="late")


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for _ in range(300):  # a byte every 50 ms: never done within the timeout
        await response.write(b"#")
        await asyncio.sleep(0.05)
    return response


async def _garbage(_: web.Request) -> web.StreamResponse:
    return web.Response(body=bytes(range(256)) * 64, content_type="application/octet-stream")


async def _ten_mb_streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    for start in range(0, len(TEN_MB), 256 * 1024):
        await response.write(TEN_MB[start : start + 256 * 1024])
    return response


async def _ten_mb_declared(_: web.Request) -> web.StreamResponse:
    return web.Response(body=TEN_MB, content_type="text/plain")


async def _ten_mb_gzipped(_: web.Request) -> web.StreamResponse:
    return web.Response(
        body=gzip.compress(TEN_MB, 1),
        content_type="text/plain",
        headers={"Content-Encoding": "gzip"},
    )


FAULTS: dict[str, tuple[Handler, FailureReason]] = {
    "hang": (_hang, FailureReason.TIMEOUT),
    "trickle": (_trickle, FailureReason.TIMEOUT),
    "garbage": (_garbage, FailureReason.UNPARSABLE),
    "html": (text("<html><body>502 Bad Gateway</body></html>"), FailureReason.UNPARSABLE),
    "ten-mb-streamed": (_ten_mb_streamed, FailureReason.TOO_LARGE),
    "ten-mb-declared": (_ten_mb_declared, FailureReason.TOO_LARGE),
    "ten-mb-gzipped": (_ten_mb_gzipped, FailureReason.TOO_LARGE),
    "nan": (text(with_value(LOADED, "vllm:num_requests_running{", "NaN")), FailureReason.INVALID),
}


def test_drill_faulty_engines_next_to_healthy_ones() -> None:
    """Two models scraped at once, as the loop does: model "sick" has two healthy engines and
    one of each fault; model "well" has healthy engines only. "well"'s results arrive long
    before the timeout and equal what its engines said; "sick"'s healthy engines are read
    the same; each fault has its reason; nothing takes longer than the timeout."""
    healthy = {f"ok-{i}": in_pieces(LOADED) for i in range(2)}
    routes = {f"/{name}/metrics": handler for name, handler in healthy.items()}
    routes |= {f"/{name}/metrics": handler for name, (handler, _) in FAULTS.items()}
    expected = parse_exposition(LOADED, "x", 0.0)

    async def run() -> tuple[ScrapeResult, ScrapeResult, float, float, float]:
        async with serve(routes) as url, aiohttp.ClientSession() as session:
            sick = [Target(n, f"{url}/{n}/metrics") for n in [*FAULTS, *healthy]]
            well = [Target(f"well-{n}", f"{url}/{n}/metrics") for n in healthy]
            started = time.monotonic()
            done: dict[str, float] = {}

            async def timed(name: str, targets: list[Target]) -> ScrapeResult:
                result = await scrape(targets, TIMEOUT_SECONDS, session=session)
                done[name] = time.monotonic() - started
                return result

            sick_result, well_result = await asyncio.gather(
                timed("sick", sick), timed("well", well)
            )
            return sick_result, well_result, done["sick"], done["well"], started

    wall_started = time.time()
    sick, well, sick_seconds, well_seconds, _ = asyncio.run(run())

    assert well.failures == {}
    assert well_seconds < 0.75 * TIMEOUT_SECONDS, well_seconds  # before the faults end
    assert sick_seconds < TIMEOUT_SECONDS + 0.5, sick_seconds  # every fault cut at the deadline
    assert sick.reasons == {name: reason for name, (_, reason) in FAULTS.items()}
    assert sick.failures["hang"] == f"/metrics timed out after {TIMEOUT_SECONDS:g} s"
    assert sick.failures["ten-mb-declared"] == f"/metrics is larger than {MAX_BODY_BYTES} bytes"
    assert sick.failures["nan"] == "vllm:num_requests_running is NaN"
    for result in (sick, well):
        assert len(result.scrapes) == 2
        for s in result.scrapes:
            # read within the timeout, and exactly what a direct parse of the text gives
            assert s.time_seconds - wall_started < TIMEOUT_SECONDS
            assert s.counters == expected.counters and s.histograms == expected.histograms
            assert {k: v for k, v in s.gauges.items() if k != "kv_cache_tokens"} == expected.gauges
    message = unusable_message(sick.targets)
    assert message is not None
    assert message.startswith(f"metrics of {len(FAULTS)}/{len(FAULTS) + 2} replicas unusable: ")
    assert unusable_message(well.targets) is None


# --------------------------------------------------------------------------- the status text


def test_unusable_message_names_each_failed_pod_in_order_briefly() -> None:
    def failed(pod: str, reason: FailureReason, message: str) -> TargetResult:
        return TargetResult(pod, failure=ScrapeFailure(reason, message))

    ok = TargetResult("pod-a", scrape=Scrape("pod-a", 1.0))
    results = [
        failed("pod-y", FailureReason.INVALID, "vllm:num_requests_running is NaN"),
        ok,
        failed("pod-x", FailureReason.TIMEOUT, "/metrics timed out after 2 s"),
    ]
    assert unusable_message(results) == (
        "metrics of 2/3 replicas unusable: pod-x: /metrics timed out after 2 s; "
        "pod-y: vllm:num_requests_running is NaN"
    )
    assert unusable_message([ok]) is None and unusable_message([]) is None
    many = [
        failed(f"pod-{i:02d}", FailureReason.HTTP_ERROR, "/metrics answered HTTP 500")
        for i in range(9)
    ]
    text_ = unusable_message(many, listed=3)
    assert text_ is not None and text_.endswith("pod-02: /metrics answered HTTP 500; and 6 more")
    assert text_.startswith("metrics of 9/9 replicas unusable: pod-00: ")
