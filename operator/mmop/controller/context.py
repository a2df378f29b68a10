"""The operator's state: one ``OperatorContext``, made at start-up and handed to every handler
through kopf's memo (``memo.context``). Nothing in the package keeps operator state in module
globals: two operators in one process (tests) each have their own.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mmop.autoscaler import State
from mmop.catalog import load_catalog
from mmop.controller.calibration import CalibrationState
from mmop.controller.config import OperatorConfig
from mmop.controller.kube import Kube
from mmop.controller.telemetry import Telemetry
from mmop.hub import HubResolver
from mmop.inventory_cache import InventoryCache
from mmop.metrics import Scrape, Signals
from mmop.planner import AssessmentCache

ModelKey = tuple[str, str]  # (namespace, name)

# The kopf indexes the handlers declare, by name (kopf passes them to handlers by these names).
INDEX_NAMES = (
    "gpu_nodes",
    "gpu_pods",
    "mmop_deployments",
    "mmop_services",
    "mmop_pdbs",
    "model_pods",
    "mmop_jobs",
    "mmop_claims",
)
# Indexes only some operators declare (``--multinode``: handlers_multinode.py).
OPTIONAL_INDEX_NAMES = ("mmop_groups",)


@dataclass(frozen=True)
class Indexes:
    """The watch indexes a reconcile or a tick reads (kopf's, handed in by name)."""

    gpu_nodes: Mapping[Any, Any]
    gpu_pods: Mapping[Any, Any]
    mmop_deployments: Mapping[Any, Any]
    mmop_services: Mapping[Any, Any]
    mmop_pdbs: Mapping[Any, Any]
    model_pods: Mapping[Any, Any]
    # The weight cache's download Jobs and claims (spec.model.cache), per model.
    mmop_jobs: Mapping[Any, Any] = field(default_factory=dict)
    mmop_claims: Mapping[Any, Any] = field(default_factory=dict)
    # The LeaderWorkerSets of replicas over several nodes, per model (``--multinode``).
    mmop_groups: Mapping[Any, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Indexes:
        optional = {name: kwargs[name] for name in OPTIONAL_INDEX_NAMES if name in kwargs}
        return cls(**{name: kwargs[name] for name in INDEX_NAMES}, **optional)

    def workloads(self) -> Mapping[Any, Any]:
        """The Deployments' and LeaderWorkerSets' records together, by model."""
        if not self.mmop_groups:
            return self.mmop_deployments
        merged: dict[Any, list[Any]] = {}
        for index in (self.mmop_deployments, self.mmop_groups):
            for key, store in list(index.items()):
                merged.setdefault(key, []).extend(list(store))
        return merged


@dataclass
class ModelHistory:
    """What the autoscaler keeps in memory per model between ticks (a restart starts it again
    from status.autoscaler)."""

    state: State
    scrapes: deque[tuple[float, list[Scrape]]] = field(default_factory=lambda: deque(maxlen=64))
    last_oom: str = ""
    signals: Signals | None = None
    failures: dict[str, str] = field(default_factory=dict)


@dataclass
class OperatorContext:
    """Operator-wide state: configuration, API client, watch-fed caches, loop state."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    kube_client: Kube | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    inventory: InventoryCache = field(default_factory=InventoryCache)
    # What candidate configurations are worth per spec, shared by every plan (planner.py).
    assessments: AssessmentCache = field(default_factory=AssessmentCache)
    # Configs of models outside the catalog, read from the Hub (hub.py), per (id, revision).
    hub: HubResolver = field(default_factory=HubResolver)
    # The KV caches engines reported at start-up, per configuration (calibration.py).
    calibration: CalibrationState = field(default_factory=CalibrationState)
    # The models as their last watch event showed them (slimmed), for the periodic loop.
    models: dict[ModelKey, dict[str, Any]] = field(default_factory=dict)
    indexes: Indexes | None = None
    history: dict[ModelKey, ModelHistory] = field(default_factory=dict)
    last_ready: dict[ModelKey, tuple[int, int, str]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # The GPU catalog the operator plans with: the packaged one, or --gpu-catalog/--prices.
        self.inventory.catalog = load_catalog(self.config.gpu_catalog)
        self.hub = HubResolver(
            endpoint=self.config.hub_endpoint,
            cache_dir=self.config.hub_cache_dir,
            timeout=self.config.hub_timeout_seconds,
        )

    def kube(self) -> Kube:
        """The API client, made on first use from the in-cluster account or the kubeconfig."""
        with self.lock:
            if self.kube_client is None:
                self.kube_client = Kube(api_client(self.config))
            return self.kube_client

    async def session(self) -> aiohttp.ClientSession:
        """The HTTP session every scrape uses (kept-alive connections), made on first use."""
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession()
        return self.http

    def forget(self, key: ModelKey) -> None:
        """Drop what is kept about a deleted model."""
        self.models.pop(key, None)
        self.history.pop(key, None)
        self.last_ready.pop(key, None)
        self.telemetry.forget_model(*key)


def api_client(config: OperatorConfig) -> Any:
    """A kubernetes ApiClient from the in-cluster service account, else the kubeconfig."""
    from kubernetes import client
    from kubernetes import config as kubeconfig

    cfg = client.Configuration()
    try:
        kubeconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except kubeconfig.ConfigException:
        kubeconfig.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config.kubeconfig, client_configuration=cfg
        )
    # One kept-alive connection per handler thread: with fewer, urllib3 drops the extras and
    # every request beyond them pays a new TLS handshake (on both ends).
    cfg.connection_pool_maxsize = config.api_connections
    return client.ApiClient(cfg)


def context_of(memo: Any) -> OperatorContext:
    """The operator context in kopf's memo (kopf copies the memo per object, shallowly: every
    copy holds the same context)."""
    ctx = getattr(memo, "context", None)
    if not isinstance(ctx, OperatorContext):
        raise RuntimeError("the operator context is missing from kopf's memo")
    return ctx
