"""The operator's configuration: one object, built once by ``mmop run`` from its flags and the
environment, then handed to the handlers inside the operator context. Nothing reads the
environment anywhere else, and nothing reads it at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mmop.hub import DEFAULT_ENDPOINT
from mmop.policy import Policy
from mmop.render import RenderOptions

# The environment variables the operator reads (at start-up, in ``from_environment``).
ENV_AUTOSCALE_INTERVAL = "MMOP_AUTOSCALE_INTERVAL_SECONDS"
ENV_PROMETHEUS_URL = "MMOP_PROMETHEUS_URL"
ENV_HANDLER_THREADS = "MMOP_HANDLER_THREADS"
ENV_HEAP_TRIM = "MMOP_HEAP_TRIM_SECONDS"
# The Hub (or a mirror) models outside the catalog are read from: huggingface_hub's own name.
ENV_HUB_ENDPOINT = "HF_ENDPOINT"


class OperatorConfig(BaseModel):
    """Everything the operator is told at start-up."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    kubeconfig: str | None = Field(
        default=None,
        description="kubeconfig to use outside a cluster (None: in-cluster, else $KUBECONFIG)",
    )
    handler_threads: int = Field(
        default=256,
        ge=1,
        le=4096,
        description="Threads kopf runs the reconciles in: a reconcile mostly waits for the API "
        "server, so this bounds how many models are reconciled per second",
    )
    autoscale_interval_seconds: float = Field(
        default=10.0, ge=0, description="Seconds between autoscaler ticks of a model (0: off)"
    )
    unplaced_retry_seconds: float = Field(
        default=15.0, gt=0, description="Seconds between placement retries of an unplaced model"
    )
    children_check_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between checks that a placed model's Deployment, Service and "
        "PodDisruptionBudget exist as rendered (a missing one is re-applied)",
    )
    scrape_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Timeout of one engine /metrics scrape"
    )
    prometheus_url: str | None = Field(
        default=None, description="Query the engines' signals from this Prometheus instead"
    )
    heap_trim_seconds: float = Field(
        default=30.0, ge=0, description="Seconds between returns of freed heap to the OS (0: off)"
    )
    render: RenderOptions = Field(
        default_factory=RenderOptions, description="How pods are rendered (labels, annotations)"
    )
    policy: Policy = Field(
        default_factory=Policy, description="Images, Secrets and env the models may use"
    )
    default_vllm_image: str | None = Field(
        default=None, description="spec.engine.image when a model names none (None: the pin's)"
    )
    gpu_catalog: Path | None = Field(
        default=None, description="The GPU catalog file to plan with (None: the packaged one)"
    )
    hub_endpoint: str = Field(
        default=DEFAULT_ENDPOINT,
        description="The Hugging Face Hub (or a mirror) configs of models outside the catalog "
        "are read from ($HF_ENDPOINT)",
    )
    hub_cache_dir: Path | None = Field(
        default=None,
        description="Where Hub configs are cached on disk (None: huggingface_hub's default)",
    )
    hub_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of one Hub request"
    )
    calibration_configmap: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="NAMESPACE/NAME of the ConfigMap the KV caches engines reported are kept "
        "in, cluster-wide, across restarts (None: kept in memory only)",
    )
    multinode: bool = Field(
        default=False,
        description="Plan a replica over several nodes (tensor x pipeline parallel) when no "
        "single node holds it, and serve it as a LeaderWorkerSet (the LWS controller must be "
        "installed; docs/multinode.md). Off: such models are Infeasible, as before",
    )
    hub_token_secrets: frozenset[str] = Field(
        default=frozenset(),
        description="Secret names the operator may read a model's Hub token from "
        "(spec.model.tokenSecretRef) to read a gated or private model's config; empty: it reads "
        "no Secret and resolves every model anonymously",
    )

    @property
    def api_connections(self) -> int:
        """Kept-alive connections to the API server: one per handler thread, and the loop's."""
        return self.handler_threads + 2


def from_environment(
    environ: Mapping[str, str] | None = None, **overrides: object
) -> OperatorConfig:
    """The configuration from the environment (``MMOP_*``), with ``overrides`` (the flags of
    ``mmop run``) taking precedence."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    if env.get(ENV_AUTOSCALE_INTERVAL):
        values["autoscale_interval_seconds"] = float(env[ENV_AUTOSCALE_INTERVAL])
    if env.get(ENV_PROMETHEUS_URL):
        values["prometheus_url"] = env[ENV_PROMETHEUS_URL]
    if env.get(ENV_HANDLER_THREADS):
        values["handler_threads"] = int(env[ENV_HANDLER_THREADS])
    if env.get(ENV_HEAP_TRIM):
        values["heap_trim_seconds"] = float(env[ENV_HEAP_TRIM])
    if env.get(ENV_HUB_ENDPOINT):
        values["hub_endpoint"] = env[ENV_HUB_ENDPOINT]
    if env.get("KUBECONFIG"):
        values["kubeconfig"] = env["KUBECONFIG"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return OperatorConfig.model_validate(values)
