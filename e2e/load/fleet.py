"""Watch a model's fleet while load runs: replicas wanted and Ready, and each Ready pod's load.

``FleetRecorder`` samples, every ``interval`` seconds on its own thread, the model's Deployment
(spec.replicas: pods wanted, Pending ones included; status.readyReplicas) and every Ready pod's
``/metrics`` at its pod address (vllm:num_requests_waiting / _running, vllm:kv_cache_usage_perc,
read with mmop's own exposition parser). The samples answer: when was every replica saturated,
when did the replica count first rise, how many replica-seconds were paid for.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmop.metrics import parse_exposition


@dataclass(frozen=True)
class PodLoad:
    pod: str
    waiting: float
    running: float
    kv_cache_usage: float


@dataclass(frozen=True)
class Sample:
    """One look at the fleet; ``time`` is time.time()."""

    time: float
    desired: int
    ready: int
    loads: tuple[PodLoad, ...] = ()

    def saturated(self, queue_length: float = 5, kv_cache_usage: float = 0.8) -> bool:
        """Every Ready pod that reported is saturated (and at least one reported)."""
        return bool(self.loads) and all(
            p.waiting >= queue_length or p.kv_cache_usage >= kv_cache_usage for p in self.loads
        )

    def waiting(self) -> float:
        return sum(p.waiting for p in self.loads)


@dataclass
class FleetRecorder:
    api_client: Any
    namespace: str
    model: str
    interval: float = 0.5
    scrape_pods: bool = True
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> FleetRecorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> FleetRecorder:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            # An API hiccup loses one sample, not the recording.
            with contextlib.suppress(Exception):
                self.samples.append(self.sample())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def sample(self) -> Sample:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.api_client)
        core: Any = client.CoreV1Api(self.api_client)
        now = time.time()
        try:
            dep = apps.read_namespaced_deployment(self.model, self.namespace)
            desired = int(dep.spec.replicas or 0)
            ready = int((dep.status and dep.status.ready_replicas) or 0)
        except client.exceptions.ApiException:
            desired = ready = 0
        loads: list[PodLoad] = []
        if self.scrape_pods:
            pods = core.list_namespaced_pod(
                self.namespace, label_selector=f"mmop.dev/model={self.model}"
            ).items
            for pod in pods:
                if pod.metadata.deletion_timestamp or not pod.status or not pod.status.pod_ip:
                    continue
                if not any(
                    c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
                ):
                    continue
                got = pod_load(pod.metadata.name, f"http://{pod.status.pod_ip}:8000/metrics")
                if got is not None:
                    loads.append(got)
        return Sample(now, desired, ready, tuple(loads))

    # ---------------------------------------------------------------- questions
    def first(self, predicate: Callable[[Sample], bool], after: float = 0.0) -> Sample | None:
        return next((s for s in list(self.samples) if s.time >= after and predicate(s)), None)

    def max_desired(self) -> int:
        return max((s.desired for s in self.samples), default=0)

    def replica_seconds(self, start: float, end: float) -> float:
        """∫ spec.replicas dt over [start, end], each sample holding until the next."""
        samples = list(self.samples)
        total = 0.0
        for i, s in enumerate(samples):
            nxt = samples[i + 1].time if i + 1 < len(samples) else end
            lo, hi = max(s.time, start), min(nxt, end)
            if hi > lo:
                total += s.desired * (hi - lo)
        return total

    def changes(self) -> list[tuple[float, int, int]]:
        """(time, before, after) of every change of spec.replicas seen."""
        out: list[tuple[float, int, int]] = []
        samples = list(self.samples)
        for prev, cur in itertools.pairwise(samples):
            if cur.desired != prev.desired:
                out.append((cur.time, prev.desired, cur.desired))
        return out


def pod_load(pod: str, url: str, timeout: float = 1.0) -> PodLoad | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    try:
        scrape = parse_exposition(text, pod, time.time())
    except ValueError:
        return None
    g = scrape.gauges
    return PodLoad(
        pod=pod,
        waiting=float(g.get("requests_waiting") or 0.0),
        running=float(g.get("requests_running") or 0.0),
        kv_cache_usage=float(g.get("kv_cache_usage") or 0.0),
    )


def reversals(changes: list[tuple[float, int, int]]) -> int:
    """Direction reversals in a sequence of replica changes."""
    count, last = 0, 0
    for _, before, after in changes:
        direction = 1 if after > before else -1
        if last and direction != last:
            count += 1
        last = direction
    return count
