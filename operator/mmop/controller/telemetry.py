"""mmop's own Prometheus metrics: reconciles, errors, decisions, desired against actual replicas.

`mmop run --metrics-port PORT` serves them at ``/metrics`` (with the process collectors: CPU,
memory, open files). The controller calls the ``record_*`` / ``set_*`` methods of the
operator's ``Telemetry`` (one per operator context, with its own registry); each is cheap and
never raises into a handler. Series are labelled by ``namespace`` and ``model`` (the
MultimodalModel's name, which is also vLLM's ``--served-model-name``, so its ``model_name`` label
joins with these in dashboards); ``forget_model`` drops a deleted model's series.

Only the peer that is reconciling (kopf peering) changes these; a standby serves the process
collectors and ``mmop_build_info`` only.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from mmop.vllm import PINNED_VLLM_VERSION

REPLICA_STATES = ("desired", "current", "ready")


class Telemetry:
    """The operator's metrics and the label sets it must remove when a model goes."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self._operator_metrics(registry)
        self._model_metrics(registry)
        self._plans: dict[tuple[str, str], tuple[str, ...]] = {}
        self._decisions: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def _operator_metrics(self, registry: CollectorRegistry) -> None:
        self.build_info = Gauge(
            "mmop_build_info",
            "mmop version and the vLLM release it plans for (always 1)",
            ["version", "vllm_version"],
            registry=registry,
        )
        self.reconciles = Counter(
            "mmop_reconciles",
            "MultimodalModel reconciles by result (created, updated, repaired, unchanged, waiting, "
            "unplaced, error)",
            ["result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "mmop_reconcile_errors",
            "Reconciles that raised, by exception type (kopf retries them)",
            ["error"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "mmop_reconcile_duration_seconds",
            "Time to plan, render, apply and write status for one MultimodalModel",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )

    def _model_metrics(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "mmop_decisions",
            "Decisions taken for a model (Applied, Replanned, ScaleUp, ScaleDown, Hold, …) by "
            "reason",
            ["namespace", "model", "decision", "reason"],
            registry=registry,
        )
        self.replicas = Gauge(
            "mmop_model_replicas",
            "Replicas of a model's vLLM Deployment: desired (what mmop set), current, ready",
            ["namespace", "model", "state"],
            registry=registry,
        )
        self.plan_info = Gauge(
            "mmop_model_plan_info",
            "The plan in force for a model (always 1; the plan is in the labels)",
            ["namespace", "model", "gpu", "gpus_per_replica", "quantization", "kv_cache_dtype"],
            registry=registry,
        )
        self.cost = Gauge(
            "mmop_model_cost_per_hour_usd",
            "Planned $/hour of a model at its desired replicas",
            ["namespace", "model"],
            registry=registry,
        )
        self.kv_tokens = Gauge(
            "mmop_model_kv_cache_tokens",
            "KV-cache tokens per replica: predicted by the plan, observed from the engines "
            "(mean over Ready pods, from vllm:cache_config_info)",
            ["namespace", "model", "source"],
            registry=registry,
        )

    def start(self, port: int, address: str = "0.0.0.0") -> Any:
        """Serve ``/metrics`` on ``address:port`` from a background thread; returns the
        server."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            mmop_version = version("mmop")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            mmop_version = "unknown"
        self.build_info.labels(mmop_version, PINNED_VLLM_VERSION).set(1)
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return server

    def record_reconcile(self, result: str, seconds: float) -> None:
        """One reconcile finished with ``result`` (what the reconcile returned, or "error")."""
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)

    def record_error(self, error: BaseException | str) -> None:
        """A reconcile raised; labelled by the exception's type name."""
        name = error if isinstance(error, str) else type(error).__name__
        self.reconcile_errors.labels(name).inc()
        self.reconciles.labels("error").inc()

    def record_decision(self, namespace: str, model: str, decision: str, reason: str) -> None:
        """A decision for a model (the reason of the event mmop posts with it)."""
        self.decisions.labels(namespace, model, decision, reason).inc()
        self._decisions.setdefault((namespace, model), set()).add((decision, reason))

    def set_replicas(
        self,
        namespace: str,
        model: str,
        desired: int,
        current: int | None = None,
        ready: int | None = None,
    ) -> None:
        """Desired replicas (what mmop applied) and, when known, current and ready ones."""
        self.replicas.labels(namespace, model, "desired").set(desired)
        if current is not None:
            self.replicas.labels(namespace, model, "current").set(current)
        if ready is not None:
            self.replicas.labels(namespace, model, "ready").set(ready)

    def set_plan(
        self,
        namespace: str,
        model: str,
        gpu: str,
        gpus_per_replica: int,
        quantization: str,
        kv_cache_dtype: str,
        cost_per_hour_usd: float,
    ) -> None:
        """The plan in force: replaces the model's previous plan series."""
        key = (namespace, model)
        labels = (namespace, model, gpu, str(gpus_per_replica), quantization, kv_cache_dtype)
        previous = self._plans.get(key)
        if previous is not None and previous != labels:
            self.plan_info.remove(*previous)
        self.plan_info.labels(*labels).set(1)
        self._plans[key] = labels
        self.cost.labels(namespace, model).set(cost_per_hour_usd)

    def set_kv_tokens(
        self, namespace: str, model: str, predicted: int | None, observed: float | None
    ) -> None:
        """KV-cache tokens per replica the plan predicted and the engines report."""
        for source, value in (("predicted", predicted), ("observed", observed)):
            if value is not None:
                self.kv_tokens.labels(namespace, model, source).set(value)

    def forget_model(self, namespace: str, model: str) -> None:
        """Drop every series of a deleted model."""
        key = (namespace, model)
        for state in REPLICA_STATES:
            with contextlib.suppress(KeyError):
                self.replicas.remove(namespace, model, state)
        for source in ("predicted", "observed"):
            with contextlib.suppress(KeyError):
                self.kv_tokens.remove(namespace, model, source)
        previous = self._plans.pop(key, None)
        if previous is not None:
            self.plan_info.remove(*previous)
        with contextlib.suppress(KeyError):
            self.cost.remove(namespace, model)
        for decision, reason in self._decisions.pop(key, set()):
            self.decisions.remove(namespace, model, decision, reason)
