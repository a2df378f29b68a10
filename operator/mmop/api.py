"""The MultimodalModel resource: pydantic models that are the single source of the CRD schema.

Python attributes are snake_case; the wire names (YAML, the CRD) are camelCase aliases. Every
field has a default, bounds and a one-line description (the description becomes `kubectl
explain` text); unknown fields are rejected.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from mmop.estimator import PINNED_VLLM_VERSION

API_GROUP = "mmop.dev"
API_VERSION = "v1alpha1"
KIND = "MultimodalModel"
DEFAULT_VLLM_IMAGE = f"vllm/vllm-openai:v{PINNED_VLLM_VERSION}"

# vLLM flags a user may add through spec.engine.extraArgs: ones that do not change what mmop
# plans. Flags mmop sets itself (parallelism, memory, lengths, multimodal limits) are refused.
EXTRA_ARGS_ALLOWED = (
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enable-chunked-prefill",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-log-requests",
    "--chat-template",
    "--chat-template-content-format",
    "--tool-call-parser",
    "--enable-auto-tool-choice",
    "--reasoning-parser",
    "--generation-config",
    "--served-model-name",
    "--seed",
    "--uvicorn-log-level",
    "--api-key",
    "--allowed-local-media-path",
    "--media-io-kwargs",
)


REMOTE_CODE_FLAG = "--trust-remote-code"
REMOTE_CODE_FLAG_MESSAGE = (
    "engine.extraArgs: --trust-remote-code is set by spec.model.trustRemoteCode: true "
    "(mmop then plans it and says so)"
)


class ApiModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=False,
    )


class Quantization(StrEnum):
    NONE = "none"
    FP8 = "fp8"
    AWQ = "awq"
    GPTQ = "gptq"
    COMPRESSED_TENSORS = "compressed-tensors"


class KvCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"


class ScalingMode(StrEnum):
    AUTO = "Auto"
    EXTERNAL = "External"
    OFF = "Off"


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="Secret name")
    key: str = Field(default="token", min_length=1, max_length=253, description="Key in it")


class ModelVariant(ApiModel):
    id: str = Field(min_length=1, max_length=200, description="Pre-quantized checkpoint id")
    quantization: Quantization = Field(description="Its weight quantization method")


class ModelSource(ApiModel):
    id: str = Field(
        min_length=1, max_length=200, description="Model id (Hugging Face org/name or catalog id)"
    )
    revision: str | None = Field(default=None, max_length=100, description="Model revision")
    variants: list[ModelVariant] = Field(
        default_factory=list, max_length=8, description="Pre-quantized checkpoints to consider"
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a Hugging Face token"
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Let vLLM run the model repository's own Python code (--trust-remote-code); "
        "models whose config needs it (InternVL chat, Phi-3.5-vision, MiniCPM-V) are not "
        "planned without it",
    )


class ImageWorkload(ApiModel):
    per_request: int = Field(default=0, ge=0, le=64, description="Images per request, at most")
    max_width: int = Field(default=1024, ge=16, le=16384, description="Largest image width, px")
    max_height: int = Field(default=1024, ge=16, le=16384, description="Largest image height, px")
    min_pixels: int | None = Field(
        default=None,
        ge=1,
        description="Quality floor in pixels: images may be downscaled to this, never below "
        "(default: never downscaled)",
    )
    min_tokens_per_image: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Quality floor in image tokens: images may be downscaled to this many "
        "tokens, never below (default: never downscaled below the model's native count)",
    )


class VideoWorkload(ApiModel):
    enabled: bool = Field(default=False, description="Requests carry video")
    max_frames: int = Field(default=32, ge=1, le=1024, description="Sampled frames per video")
    max_width: int = Field(default=640, ge=16, le=8192, description="Frame width, px")
    max_height: int = Field(default=360, ge=16, le=8192, description="Frame height, px")


class AudioWorkload(ApiModel):
    enabled: bool = Field(default=False, description="Requests carry audio")
    max_seconds: float = Field(default=30, gt=0, le=3600, description="Audio length, seconds")


class ContextLength(ApiModel):
    min: int = Field(default=4096, ge=256, le=1_048_576, description="Context length needed")
    preferred: int | None = Field(
        default=None, ge=256, le=1_048_576, description="Longer context to use when it is free"
    )


class Slo(ApiModel):
    ttft_p95_seconds: float | None = Field(
        default=None, gt=0, le=600, description="Time-to-first-token p95 target"
    )
    tpot_p95_seconds: float | None = Field(
        default=None, gt=0, le=10, description="Time-per-output-token p95 target"
    )
    margin: float = Field(
        default=0.9,
        ge=0.5,
        le=1,
        description="Plan each replica for a p95 at this fraction of each target (headroom "
        "for bursts and model error)",
    )


class Workload(ApiModel):
    images: ImageWorkload = Field(default_factory=ImageWorkload, description="Images")
    video: VideoWorkload = Field(default_factory=VideoWorkload, description="Video")
    audio: AudioWorkload = Field(default_factory=AudioWorkload, description="Audio")
    context_length: ContextLength = Field(
        default_factory=ContextLength, description="Context length"
    )
    prompt_tokens: int = Field(
        default=512, ge=1, le=1_048_576, description="Expected text tokens per prompt"
    )
    output_tokens: int = Field(
        default=256, ge=1, le=262_144, description="Expected generated tokens per request"
    )
    concurrency: int | None = Field(
        default=None, ge=1, le=100_000, description="Peak requests in flight"
    )
    requests_per_second: float | None = Field(
        default=None, gt=0, le=100_000, description="Peak request rate"
    )
    slo: Slo = Field(default_factory=Slo, description="Latency targets")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.context_length.preferred is not None and (
            self.context_length.preferred < self.context_length.min
        ):
            raise ValueError("contextLength.preferred must be >= contextLength.min")
        if self.prompt_tokens + self.output_tokens > self.context_length.min:
            raise ValueError(
                f"contextLength.min ({self.context_length.min}) must hold promptTokens + "
                f"outputTokens ({self.prompt_tokens + self.output_tokens})"
            )
        return self


GpuTypeName = Annotated[str, Field(min_length=1, max_length=100)]


class Placement(ApiModel):
    gpu_types: list[GpuTypeName] = Field(
        default_factory=list,
        max_length=32,
        description="Allowed GPU types (catalog names or GFD product labels); empty: any",
    )
    max_gpus_per_replica: int = Field(default=8, ge=1, le=16, description="Tensor-parallel cap")
    quantizations: list[Quantization] = Field(
        default_factory=lambda: [Quantization.NONE, Quantization.FP8, Quantization.AWQ],
        min_length=1,
        description="Weight quantizations allowed (none = the checkpoint's own precision)",
    )
    kv_cache_dtypes: list[KvCacheDtype] = Field(
        default_factory=lambda: [KvCacheDtype.AUTO, KvCacheDtype.FP8],
        min_length=1,
        description="KV-cache dtypes allowed",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels the pods must match"
    )


class ScalingTargets(ApiModel):
    kv_cache_usage: float = Field(default=0.8, gt=0, le=1, description="Saturated at this KV use")
    queue_length: int = Field(default=5, ge=1, le=10_000, description="Saturated at this queue")
    kv_spare: float = Field(
        default=0.1, ge=0, lt=1, description="Scale up below this average spare KV fraction"
    )
    queue_spare: float = Field(
        default=3, ge=0, le=10_000, description="Scale up below this average spare queue"
    )


class ScalingBehavior(ApiModel):
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="Scale up on the lowest recommendation this long"
    )
    scale_down_stabilization_seconds: int = Field(
        default=120, ge=0, le=3600, description="Scale down on the highest recommendation this long"
    )
    scale_up_cooldown_seconds: int = Field(
        default=15, ge=0, le=3600, description="At least this long after a change before scaling up"
    )
    scale_down_cooldown_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="At least this long after a change before scaling down",
    )
    max_scale_up_step: int = Field(default=2, ge=1, le=100, description="Replicas added at most")
    max_scale_down_step: int = Field(
        default=1, ge=1, le=100, description="Replicas removed at most per decision"
    )
    window_seconds: int = Field(
        default=30, ge=5, le=600, description="Window for rates and latency quantiles"
    )


class Consolidation(ApiModel):
    """Moving an idle fleet onto a cheaper plan (mode Auto only)."""

    enabled: bool = Field(
        default=True, description="Re-plan an idle fleet onto a cheaper plan that still meets it"
    )
    idle_seconds: int = Field(
        default=600,
        ge=10,
        le=86_400,
        description="How long the replicas must stay below half their planned load first",
    )
    min_savings: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Fraction of the fleet's cost per hour a new plan must save to be taken",
    )


class Scaling(ApiModel):
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas")
    mode: ScalingMode = Field(default=ScalingMode.AUTO, description="Who scales: Auto|External|Off")
    targets: ScalingTargets = Field(
        default_factory=ScalingTargets, description="Saturation targets"
    )
    behavior: ScalingBehavior = Field(
        default_factory=ScalingBehavior, description="Stabilisation, cooldowns and step limits"
    )
    consolidation: Consolidation = Field(
        default_factory=Consolidation, description="Re-planning an idle fleet to cost less"
    )

    @model_validator(mode="after")
    def _check(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("scaling.minReplicas must be <= scaling.maxReplicas")
        return self


class EnvVar(ApiModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200, description="Name")
    value: str = Field(default="", max_length=4096, description="Value")


class Engine(ApiModel):
    image: str = Field(
        default=DEFAULT_VLLM_IMAGE,
        max_length=300,
        description="vLLM image (default: the vLLM release mmop pins and plans for)",
    )
    extra_args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=32, description="Extra vLLM flags (allow-listed)"
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=32, description="Extra env")

    @model_validator(mode="after")
    def _check(self) -> Engine:
        for arg in self.extra_args:
            if arg.startswith("-"):
                flag = arg.split("=", 1)[0]
                if flag == REMOTE_CODE_FLAG:
                    raise ValueError(REMOTE_CODE_FLAG_MESSAGE)
                if flag not in EXTRA_ARGS_ALLOWED:
                    raise ValueError(
                        f"engine.extraArgs: {flag} is not allowed (mmop sets memory, "
                        f"parallelism and length flags itself); allowed: "
                        f"{', '.join(EXTRA_ARGS_ALLOWED)}"
                    )
        return self


class MultimodalModelSpec(ApiModel):
    """What to serve, for which workload, where, and how it scales: mmop plans the rest."""

    model: ModelSource = Field(description="What to serve")
    workload: Workload = Field(default_factory=Workload, description="What it must serve")
    placement: Placement = Field(default_factory=Placement, description="Where it may run")
    scaling: Scaling = Field(default_factory=Scaling, description="How many replicas")
    engine: Engine = Field(default_factory=Engine, description="The vLLM container")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Desired replicas when scaling.mode is External (the scale subresource)",
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    type: str = Field(max_length=64, description="Planned, Ready or Degraded")
    status: ConditionStatus = Field(description="True, False or Unknown")
    reason: str = Field(max_length=128, description="CamelCase reason")
    message: str = Field(default="", max_length=4096, description="Human-readable detail")
    observed_generation: int | None = Field(
        default=None, ge=0, description="Spec generation the condition describes"
    )
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)"
    )


class PlanStatus(ApiModel):
    """The plan in force, as kubectl shows it."""

    model: str = Field(description="Checkpoint served")
    gpu: str = Field(description="Catalog GPU name")
    gpu_product: str = Field(description="nvidia.com/gpu.product of the nodes used")
    gpus_per_replica: int = Field(ge=0, description="Tensor-parallel size")
    replicas: int = Field(ge=0, description="Replicas the workload needs")
    quantization: str = Field(description="Weight quantization")
    kv_cache_dtype: str = Field(description="KV-cache dtype")
    max_model_len: int = Field(ge=0, description="--max-model-len")
    max_image_tokens: int | None = Field(default=None, description="Tokens per image at the cap")
    native_image_tokens: int | None = Field(
        default=None, description="Tokens per image at the model's own processing (no cap)"
    )
    native_cost_per_hour_usd: float | None = Field(
        default=None, description="$/h at native image size, when images are capped"
    )
    video_tokens: int | None = Field(default=None, description="Tokens per video planned")
    audio_tokens: int | None = Field(default=None, description="Tokens per audio clip planned")
    image_cap: str = Field(default="", description="Image cap (processor kwargs)")
    trust_remote_code: bool = Field(
        default=False, description="vLLM runs the model repository's own code"
    )
    notes: list[str] = Field(
        default_factory=list, description="What the plan changed or the user must know"
    )
    cost_per_hour_usd: float = Field(ge=0, description="All replicas, $/hour")
    args: list[str] = Field(default_factory=list, description="vLLM arguments")
    memory: dict[str, Any] = Field(default_factory=dict, description="Predicted memory per GPU")
    performance: dict[str, Any] = Field(
        default_factory=dict, description="Predicted per-replica capacity and latency"
    )
    alternatives: list[dict[str, Any]] = Field(
        default_factory=list, description="Rejected options and why"
    )
    explanation: str = Field(default="", description="Why this plan")
    template_hash: str = Field(default="", description="Hash of the rendered pod template")
    config: str = Field(default="", description="GPU/TP/weights/KV/image-cap key of the plan")


class Decision(ApiModel):
    time: str = Field(description="When (RFC 3339)")
    action: str = Field(description="Plan, Replan, ScaleUp, ScaleDown or Hold")
    replicas: int | None = Field(default=None, description="Replicas after the decision")
    reason: str = Field(description="CamelCase reason")
    message: str = Field(default="", description="Detail")


class AutoscalerStatus(ApiModel):
    """What the autoscaler remembers across operator restarts."""

    last_change_time: str | None = Field(default=None, description="Last replica change")
    last_direction: int = Field(default=0, ge=-1, le=1, description="+1 up, -1 down")
    reversals: list[str] = Field(
        default_factory=list, max_length=100, description="Direction reversals, last hour"
    )
    replans: list[str] = Field(
        default_factory=list, max_length=100, description="Re-plans requested, last hour"
    )
    avoid: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Configurations the engines proved wrong; the planner skips them",
    )
    min_kv_cache_tokens: int | None = Field(
        default=None, ge=0, description="KV tokens per replica the next plan must exceed"
    )
    last_oom_time: str | None = Field(default=None, description="Newest OOM kill handled")
    demand: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight the consolidated plan is sized for (unset: the plan is "
        "sized for spec.workload)",
    )
    demand_generation: int | None = Field(
        default=None, description="The generation the consolidated plan was made for"
    )
    peak_cost_per_hour_usd: float | None = Field(
        default=None,
        ge=0,
        description="$/h of the plan for spec.workload's peak when the fleet was consolidated",
    )


class MultimodalModelStatus(ApiModel):
    """The plan in force, conditions, replica counts and recent decisions (written by mmop)."""

    observed_generation: int | None = Field(default=None, description="Last generation handled")
    conditions: list[Condition] = Field(
        default_factory=list, description="Planned, Ready, Degraded"
    )
    plan: PlanStatus | None = Field(default=None, description="The plan in force")
    replicas: int = Field(default=0, ge=0, description="Pods of the current Deployment")
    ready_replicas: int = Field(default=0, ge=0, description="Ready pods")
    selector: str = Field(default="", description="Label selector of the pods (scale subresource)")
    decisions: list[Decision] = Field(
        default_factory=list, max_length=10, description="Last scaling and planning decisions"
    )
    autoscaler: AutoscalerStatus | None = Field(
        default=None, description="Autoscaler memory (cooldowns, re-plans, avoided plans)"
    )


NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # also a valid Service name


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1, max_length=63, pattern=NAME_RE.pattern)
    namespace: str | None = Field(default=None, max_length=63)


class MultimodalModel(BaseModel):
    """A whole manifest, as users write it for `kubectl apply`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["mmop.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["MultimodalModel"]
    metadata: ObjectMeta
    spec: MultimodalModelSpec
    status: MultimodalModelStatus | None = None
