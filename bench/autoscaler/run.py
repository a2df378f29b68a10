"""Autoscaler benchmark: the same arrival patterns against three scaling policies.

Usage (from the repository root, after `pip install -e '.[dev]'` and `python -m e2e.load install`):
    python bench/autoscaler/run.py [--patterns step,burst,sinusoid,trace]
                                   [--policies static,hpa,keda,mmop]
                                   [--startup SECONDS] [--stretch F] [--lead-in SECONDS]
                                   [--markdown bench/autoscaler/results.md]
                                   [--docs docs/benchmarks.md]

On a sandbox of its own (`--name`, default `asbench`; torn down at the end), with the operator as a
sandbox component (`mmop run`, autoscaler tick MMOP_AUTOSCALE_INTERVAL_SECONDS=5) and every pod of
the model served by an llm-d-inference-sim stand-in at its pod address (2 requests at once, 200 ms
to the first token, 40 ms a token, a KV cache of --kv-blocks blocks, 40 by default, that two
running requests fill to 0.2):

* patterns (e2e/load/patterns.py; the same seeded arrivals for every policy): step, burst,
  sinusoid 5→20 req/s with a 150 s period, and a generated trace (no public trace ships inside a
  PyPI package we could find: see results.md); every request is a streaming chat request with a
  text part and one image, 10 output tokens, replayed by AIPerf through the gateway (--gateway:
  round-robin, as a Service's kube-proxy rules; or least-requests, as Envoy's LEAST_REQUEST or an
  inference-aware endpoint picker);
* policies, each on a fresh MultimodalModel in a namespace of its own:
  - static: spec.scaling.mode Off, minReplicas = maxReplicas = the peak fleet (--peak);
  - hpa: mode External; this script's controller plays the HorizontalPodAutoscaler on
    vllm:num_requests_waiting read from the Ready pods, target --hpa-target waiting requests per
    pod: every 15 s, desired = ceil(ready × mean(waiting) / target) (skipped within the 10 %
    tolerance), scale-up at most max(×2, +4) per period, scale-down on the highest
    recommendation of the last 300 s; it writes the MultimodalModel's spec.replicas (its scale
    subresource), which the operator renders into the Deployment;
  - keda: mode External; a KEDA-style queue-metric scaler (KEDA's Prometheus scaler feeding the
    HPA it creates): requests in flight (running + waiting) summed over the Ready pods, target
    --keda-target per replica, polled every 30 s, the HPA's default behaviour;
  - mmop: mode Auto, minReplicas 1, maxReplicas --max.

--startup S holds every new replica un-Ready for S seconds after it starts (the sandbox's
emulated start-up, sandbox.mmop.dev/startup-seconds); --stretch F scales the patterns' times so
that a step or a swell lasts longer than a start-up; --lead-in S sends the pattern's opening rate
for S seconds before it (not measured), so every fleet has sized itself for that load when the
pattern begins, as a service in production has.

Figures per (pattern, policy): SLO attainment (share of requests with TTFT ≤ the SLO, a failed
request counting as a miss), GPU-hours (∫ Deployment spec.replicas × GPUs per replica dt over the
pattern, so Pending pods count), reaction time (from the pattern's first load increase to the first
replica increase), direction reversals per hour, failed requests, TTFT p95 and the largest fleet.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from e2e.load.fleet import FleetRecorder, pod_load, reversals  # noqa: E402
from e2e.load.gateway import ROUTING, Gateway, ready_pod_urls  # noqa: E402
from e2e.load.patterns import (  # noqa: E402
    Pattern,
    burst,
    generated_trace,
    lead_in,
    sinusoid,
    step,
    write_trace,
)
from e2e.load.runner import LoadResult, LoadRun, quantile  # noqa: E402
from e2e.load.venv import AIPERF_VERSION, require  # noqa: E402
from e2e.markdown import replace_section  # noqa: E402
from e2e.sandbox import Sandbox  # noqa: E402

GROUP, VERSION, PLURAL = "mmop.dev", "v1alpha1", "multimodalmodels"
SLO_TTFT_SECONDS = 1.0
OUTPUT_TOKENS = 10
TICK_SECONDS = 5
SIM_ANNOTATIONS = {
    "sandbox.mmop.dev/time-to-first-token": "200",
    "sandbox.mmop.dev/inter-token-latency": "40",
    "sandbox.mmop.dev/sim-args": "--max-num-seqs=2",
}
POOLS = {
    "pools": [
        {"name": "l4", "gpu": "L4", "nodes": 14, "gpusPerNode": 1, "cpu": "16", "memory": "64Gi"}
    ]
}

# A request sent this soon before the measured window opens still counts in it (its record's start
# is the send time, a few ms after its scheduled arrival).
LEAD_IN_EDGE_SECONDS = 0.02

# Each pattern at time scale f (--stretch): f = 1 is the 2–2.5-minute version; slower start-ups
# need longer patterns, or a step is over before a new replica can arrive.
PATTERNS: dict[str, Callable[[float], Pattern]] = {
    "step": lambda f: step(3, 15, at=20 * f, hold=60 * f, after=40 * f),
    "burst": lambda f: burst(4, 18, at=20 * f, length=10, duration=120 * f, bursts=2),
    "sinusoid": lambda f: sinusoid(5, 20, period=150 * f, duration=150 * f),
    "trace": lambda f: generated_trace(duration=150 * f),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the HPA
@dataclass
class HpaController:
    """The HorizontalPodAutoscaler's algorithm (autoscaling/v2 defaults) on one pods metric,
    vllm:num_requests_waiting, driving spec.replicas of a MultimodalModel in External mode."""

    api_client: Any
    namespace: str
    name: str
    target: float
    min_replicas: int
    max_replicas: int
    period_seconds: float = 15.0
    tolerance: float = 0.1
    down_window_seconds: float = 300.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    changes: list[tuple[float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HpaController:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.period_seconds):
            try:
                self.tick()
            except Exception as err:
                log(f"hpa tick failed: {err}")

    def metric(self, load: Any) -> float:
        """The pods metric of one Ready pod."""
        return float(load.waiting)

    def desired(self, current: int, waiting: list[float]) -> int:
        """One recommendation (before stabilisation and rate limits)."""
        if not waiting:
            return current
        ratio = (sum(waiting) / len(waiting)) / self.target
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(len(waiting) * ratio)

    def tick(self) -> None:
        from kubernetes import client

        custom: Any = client.CustomObjectsApi(self.api_client)
        core: Any = client.CoreV1Api(self.api_client)
        mm = custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)
        current = int((mm.get("spec") or {}).get("replicas") or self.min_replicas)
        pods = core.list_namespaced_pod(
            self.namespace, label_selector=f"mmop.dev/model={self.name}"
        ).items
        waiting = []
        for pod in pods:
            if pod.metadata.deletion_timestamp or not pod.status or not pod.status.pod_ip:
                continue
            if not any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            ):
                continue
            got = pod_load(pod.metadata.name, f"http://{pod.status.pod_ip}:8000/metrics")
            if got is not None:
                waiting.append(self.metric(got))
        now = time.time()
        raw = min(max(self.desired(current, waiting), self.min_replicas), self.max_replicas)
        self.recommendations = [
            (t, r) for t, r in self.recommendations if now - t < self.down_window_seconds
        ]
        self.recommendations.append((now, raw))
        if raw > current:  # scale-up: no stabilisation, at most max(100 %, 4 pods) per period
            target = min(raw, max(2 * current, current + 4))
        else:  # scale-down: the highest recommendation of the window
            target = min(current, max(r for _, r in self.recommendations))
        target = min(max(target, self.min_replicas), self.max_replicas)
        if target != current:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"spec": {"replicas": target}}
            )
            self.changes.append((now, current, target))


@dataclass
class KedaController(HpaController):
    """A KEDA-style queue-metric scaler: KEDA's Prometheus scaler on the model's requests in
    flight (sum of vllm:num_requests_running + vllm:num_requests_waiting over its pods) with a
    target per replica, fed to the HPA it creates (AverageValue: desired = ceil(total /
    target)), polled every 30 s (KEDA's default pollingInterval), the HPA's default behaviour."""

    period_seconds: float = 30.0

    def desired(self, current: int, waiting: list[float]) -> int:
        if not waiting:
            return current
        ratio = sum(waiting) / (self.target * max(1, current))
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return max(1, math.ceil(sum(waiting) / self.target))

    def metric(self, load: Any) -> float:
        return float(load.waiting + load.running)


# ---------------------------------------------------------------------------- one run
def manifest(
    name: str,
    policy: str,
    peak: int,
    max_replicas: int,
    start: int = 1,
    utilization: float | None = None,
) -> dict[str, Any]:
    """The policy's MultimodalModel. An autoscaled fleet starts at ``start`` replicas: mode
    External with spec.replicas (mmop's mode Auto is switched on once they are Ready, and keeps
    the count it finds)."""
    scaling: dict[str, Any] = {"minReplicas": 1, "maxReplicas": max_replicas}
    spec: dict[str, Any] = {
        "model": {"id": "Qwen/Qwen2-VL-2B-Instruct"},
        "workload": {
            "images": {"perRequest": 1, "maxWidth": 640, "maxHeight": 480},
            "slo": {"ttftP95Seconds": SLO_TTFT_SECONDS},
        },
        "scaling": scaling,
    }
    if policy == "static":
        scaling.update(mode="Off", minReplicas=peak, maxReplicas=peak)
    elif policy in ("hpa", "keda") or start > 1:
        scaling["mode"] = "External"
        spec["replicas"] = start
    else:
        scaling["mode"] = "Auto"
    if policy == "mmop" and utilization is not None:
        scaling["targets"] = {"utilization": utilization}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(interval)
    log(f"timed out waiting for {what}")
    return False


def run_one(
    api_client: Any,
    kc: Callable[..., str],
    pattern: Pattern,
    policy: str,
    ns: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)
    custom: Any = client.CustomObjectsApi(api_client)
    namespace, name = f"{pattern.name}-{policy}", "vlm"
    core.create_namespace({"metadata": {"name": namespace}})
    wait_until(
        "the default ServiceAccount",
        lambda: bool(
            [
                sa
                for sa in core.list_namespaced_service_account(namespace).items
                if sa.metadata.name == "default"
            ]
        ),
        30,
        0.2,
    )
    start_replicas = ns.peak if policy == "static" else ns.start_replicas
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        manifest(name, policy, ns.peak, ns.max, start=start_replicas, utilization=ns.utilization),
    )
    wait_until(
        f"{start_replicas} Ready replica(s)",
        lambda: len(ready_pod_urls(api_client, namespace, name)) >= start_replicas,
        180 + ns.startup,
    )
    if policy == "mmop" and start_replicas > 1:  # from the starting fleet to mmop's autoscaler
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": {"replicas": None, "scaling": {"mode": "Auto"}}},
        )
    mm = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    gpus = int(((mm.get("status") or {}).get("plan") or {}).get("gpus_per_replica") or 1)
    venv = require()
    sent_pattern = lead_in(pattern, ns.lead_in)
    arrivals = sent_pattern.arrivals(seed=ns.seed)
    trace = write_trace(work / f"{namespace}.jsonl", arrivals, venv.image_files()[:1], seed=ns.seed)
    recorder = FleetRecorder(api_client, namespace, name, interval=1.0, scrape_pods=False)
    hpa: HpaController | None = None
    if policy == "hpa":
        hpa = HpaController(api_client, namespace, name, ns.hpa_target, 1, ns.max)
    elif policy == "keda":
        hpa = KedaController(api_client, namespace, name, ns.keda_target, 1, ns.max)
    log(f"{namespace}: {len(arrivals)} requests over {sent_pattern.duration_seconds:.0f} s")
    with (
        recorder,
        Gateway(lambda: ready_pod_urls(api_client, namespace, name), routing=ns.gateway) as gateway,
    ):
        if hpa is not None:
            hpa.start()
        try:
            run = LoadRun(
                gateway.url,
                name,
                trace,
                work / f"{namespace}-aiperf",
                first_arrival_seconds=arrivals[0],
                output_tokens=OUTPUT_TOKENS,
                venv=venv,
            ).start()
            try:
                result = run.wait(timeout=sent_pattern.duration_seconds + 300)
            finally:
                run.stop()
        finally:
            if hpa is not None:
                hpa.stop()
    measured = sum(1 for a in arrivals if a >= ns.lead_in)
    figures = measure(pattern, policy, result, recorder, gpus, measured, ns.lead_in)
    figures["gateway_retried"] = gateway.stats.retried
    figures["gateway_failed"] = gateway.stats.failed()
    mm = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    figures["decisions"] = (mm.get("status") or {}).get("decisions") or []
    log(f"{namespace}: {json.dumps({k: v for k, v in figures.items() if k != 'decisions'})}")
    core.delete_namespace(namespace)
    wait_until(
        "the pods gone",
        lambda: not core.list_namespaced_pod(namespace).items,
        120,
    )
    return figures


def measure(
    pattern: Pattern,
    policy: str,
    result: LoadResult,
    recorder: FleetRecorder,
    gpus: int,
    sent: int,
    lead: float = 0.0,
) -> dict[str, Any]:
    """Figures over the pattern itself: the `lead` seconds before it (the lead-in at the opening
    rate) are sent but not measured."""
    t0 = result.schedule_start + lead
    end = t0 + pattern.duration_seconds
    records = result.records
    if lead > 0:  # a request belongs to the window it was sent in (a few ms after its schedule)
        records = [r for r in records if r.start >= t0 - LEAD_IN_EDGE_SECONDS]
    met = sum(
        1
        for r in records
        if r.error is None and r.ttft_seconds is not None and r.ttft_seconds <= SLO_TTFT_SECONDS
    )
    failed = sum(1 for r in records if r.error is not None) + max(0, sent - len(records))
    ttfts = [r.ttft_seconds for r in records if r.ttft_seconds is not None]
    changes = [c for c in recorder.changes() if t0 <= c[0] <= end]
    increase = t0 + (pattern.increase_at_seconds or 0.0)
    first_up = next((t for t, a, b in recorder.changes() if t >= increase and b > a), None)
    hours = pattern.duration_seconds / 3600
    samples = [s for s in recorder.samples if t0 <= s.time <= end]
    return {
        "pattern": pattern.name,
        "policy": policy,
        "requests": sent,
        "slo_attainment": met / sent if sent else float("nan"),
        "gpu_hours": recorder.replica_seconds(t0, end) * gpus / 3600,
        "reaction_s": None if first_up is None else round(first_up - increase, 1),
        "reversals": reversals(changes),
        "reversals_per_hour": reversals(changes) / hours,
        "failed": failed,
        "ttft_p95_s": quantile(ttfts, 0.95) if ttfts else None,
        "max_replicas": max((s.desired for s in samples), default=0),
        "mean_replicas": (
            recorder.replica_seconds(t0, end) / pattern.duration_seconds if samples else 0.0
        ),
        "generator_rc": result.returncode,
    }


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patterns", default="step,burst,sinusoid,trace")
    ap.add_argument("--policies", default="static,hpa,keda,mmop")
    ap.add_argument(
        "--startup", type=float, default=0.0, help="seconds a new replica takes to turn Ready"
    )
    ap.add_argument("--stretch", type=float, default=1.0, help="time scale of the patterns")
    ap.add_argument(
        "--start-replicas",
        type=int,
        default=1,
        help="replicas an autoscaled fleet has Ready when the load starts",
    )
    ap.add_argument(
        "--lead-in",
        type=float,
        default=0.0,
        help="seconds of the opening rate sent before each pattern and not measured",
    )
    ap.add_argument("--keda-target", type=float, default=3.0, help="requests in flight per pod")
    ap.add_argument("--peak", type=int, default=7, help="static fleet (sized for the peak)")
    ap.add_argument("--max", type=int, default=10, help="maxReplicas of hpa and mmop")
    ap.add_argument("--hpa-target", type=float, default=2.0, help="waiting requests per pod")
    ap.add_argument(
        "--gateway",
        choices=ROUTING,
        default="round-robin",
        help="how the gateway picks a Ready pod (e2e/load/gateway.py)",
    )
    ap.add_argument(
        "--kv-blocks",
        type=int,
        default=40,
        help="the stand-ins' KV cache in blocks (each running request holds 4: 40 reads 0.2 at "
        "the 2 requests an engine runs; the results files that state 10 blocks read 0.8 there, "
        "the KV target itself, where a planned engine at its --max-num-seqs holds far less)",
    )
    ap.add_argument(
        "--utilization",
        type=float,
        help="mmop's spec.scaling.targets.utilization (unset: its default, 0.7)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="asbench", help="sandbox name")
    ap.add_argument("--markdown", help="write the results here")
    ap.add_argument("--docs", help="append the '## Autoscaler' section to this file")
    ns = ap.parse_args(argv)
    command = "python bench/autoscaler/run.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    require()  # fail early without the load venv

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # so that the sandbox and the generator are torn down

    signal.signal(signal.SIGTERM, interrupted)
    from kubernetes import config

    tmp = Path(tempfile.mkdtemp(prefix="mmop-asbench-"))
    pools_file = tmp / "pools.yaml"
    pools_file.write_text(yaml.safe_dump(POOLS, sort_keys=False))
    box = Sandbox(ns.name, pools_file=pools_file, prometheus=False, log=log)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        state = box.up(timeout=240)
        kubectl = state.bin_dir["kubectl"]

        def kc(*args: str) -> str:
            return subprocess.run(
                [kubectl, f"--kubeconfig={state.kubeconfig}", *args],
                check=True,
                capture_output=True,
                text=True,
            ).stdout

        kc("apply", "--server-side", "--field-manager=mmop", "-f", str(ROOT / "crds"))
        kc("wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev")
        api_client = config.new_client_from_config(config_file=state.kubeconfig)
        annotations = dict(SIM_ANNOTATIONS)
        annotations["sandbox.mmop.dev/kv-cache-blocks"] = str(ns.kv_blocks)
        if ns.startup:
            annotations["sandbox.mmop.dev/startup-seconds"] = f"{ns.startup:g}"
        box.start_operator(
            pod_annotations=annotations,
            env={"MMOP_AUTOSCALE_INTERVAL_SECONDS": str(TICK_SECONDS)},
        )
        for pname in ns.patterns.split(","):
            pattern = PATTERNS[pname](ns.stretch)
            for policy in ns.policies.split(","):
                rows.append(run_one(api_client, kc, pattern, policy, ns, tmp))
                (tmp / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    finally:
        box.down(quiet=True)
        log("sandbox down")
    wall = time.monotonic() - started
    table = render(rows, ns, command, wall)
    print(table)
    if ns.markdown:
        Path(ns.markdown).write_text(table)
    if ns.docs:
        append_docs(Path(ns.docs), rows, ns, command, wall)
    log(f"raw results: {tmp / 'rows.json'}")
    return 0


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pattern | policy | requests | SLO attainment (TTFT ≤ 1 s) | TTFT p95 | GPU-hours | "
        "mean / max replicas | reaction | reversals (per hour) | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pattern']} | {r['policy']} | {r['requests']} | "
            f"{fmt(100 * r['slo_attainment'], '.1f')} % | {fmt(r['ttft_p95_s'], '.2f')} s | "
            f"{fmt(r['gpu_hours'], '.3f')} | {fmt(r['mean_replicas'], '.1f')} / "
            f"{r['max_replicas']} | "
            f"{fmt(r['reaction_s'], '.1f') + ' s' if r['reaction_s'] is not None else '–'} | "
            f"{r['reversals']} ({fmt(r['reversals_per_hour'], '.0f')}) | {r['failed']} |"
        )
    return "\n".join(lines) + "\n"


def lead_in_text(seconds: float) -> str:
    if seconds <= 0:
        return "none: each policy's fleet starts at its start replicas when the pattern begins"
    return (
        f"{seconds:g} s at the pattern's opening rate before it, sent and not measured, so each "
        "fleet has sized itself for that load when the pattern begins"
    )


def setup(ns: argparse.Namespace, wall: float) -> str:
    pats = "\n".join(
        f"  - {p}: {PATTERNS[p](ns.stretch).description}" for p in ns.patterns.split(",")
    )
    return (
        f"- load: AIPerf {AIPERF_VERSION} (load venv), fixed-schedule replay of seeded arrivals "
        f"(seed {ns.seed}), streaming chat requests with one 32×32 PNG each, {OUTPUT_TOKENS} "
        f"output tokens, through the gateway (e2e/load/gateway.py), routing {ns.gateway}\n"
        f"- patterns:\n{pats}\n"
        "- engines: llm-d-inference-sim stand-ins at pod addresses, 2 requests at once, 200 ms "
        "to the first token, 40 ms per token (≈3.3 req/s per replica), "
        f"{ns.kv_blocks} KV blocks (two running requests: {8 / ns.kv_blocks:.1f})\n"
        f"- policies: static = mode Off, {ns.peak} replicas; hpa = mode External driven by the "
        f"bench's HPA (vllm:num_requests_waiting, target {ns.hpa_target:g} per pod, 15 s period, "
        f"300 s scale-down stabilisation), 1–{ns.max} replicas; keda = mode External driven "
        "by the bench's KEDA-style scaler (requests in flight, running + waiting, summed over "
        f"the pods, target {ns.keda_target:g} per replica, 30 s polling, the HPA's default "
        f"behaviour), 1–{ns.max} replicas; mmop = mode Auto, 1–{ns.max} "
        f"replicas, default behaviour"
        + (f", targets.utilization {ns.utilization:g}" if ns.utilization is not None else "")
        + f", autoscaler tick {TICK_SECONDS} s\n"
        f"- lead-in: {lead_in_text(ns.lead_in)}; autoscaled fleets start at "
        f"{ns.start_replicas} Ready replica(s)\n"
        f"- cold start: every new replica turns Ready {ns.startup:g} s after it starts "
        "(sandbox.mmop.dev/startup-seconds; 0: as fast as the stand-in, about 1 s)\n"
        "- GPU-hours: ∫ Deployment spec.replicas (Pending pods included) × GPUs per replica "
        "(1 × L4 here) over the pattern; reaction: pattern's first load increase → first replica "
        "increase; reversals: direction changes of spec.replicas during the pattern\n"
        f"- wall time of the whole benchmark: {wall / 60:.0f} min\n"
    )


def render(rows: list[dict[str, Any]], ns: argparse.Namespace, command: str, wall: float) -> str:
    return (
        "# Autoscaler benchmark\n\n"
        f"Command: `{command}`\n\n"
        "Machine: 2 CPU cores, 24 GiB, shared by the sandbox's control plane, kwok, the pod "
        "server and its stand-ins, the operator, AIPerf, the gateway and this script.\n\n"
        f"{setup(ns, wall)}\n{table(rows)}\n"
        "Public trace: none of the wheels checked (aiperf 0.13.0, inference-perf 0.7.0, aibrix "
        "0.8.0) ships a recorded request trace (their loaders download them at run time, which "
        "this machine cannot), so the `trace` row replays a GENERATED trace from the stated "
        "distribution above, not a recorded one.\n"
    )


def append_docs(
    path: Path, rows: list[dict[str, Any]], ns: argparse.Namespace, command: str, wall: float
) -> None:
    section = (
        "## Autoscaler\n\n"
        f"Command: `{command}` (details and reading: bench/autoscaler/results.md, "
        "docs/autoscaling.md)\n\n"
        f"{setup(ns, wall)}\n{table(rows)}"
    )
    path.write_text(replace_section(path.read_text(), "Autoscaler", section))


if __name__ == "__main__":
    sys.exit(main())
