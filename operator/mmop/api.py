"""The MultimodalModel resource: pydantic models that are the single source of the CRD schema.

Python attributes are snake_case; the wire names (YAML, the CRD) are camelCase aliases. Every
field has a default, bounds and a one-line description (the description becomes `kubectl
explain` text); unknown fields are rejected.

The spec models read a document the way the API server does, so that `kubectl apply` and the
operator give the same verdict on every spec (tests/integration/test_spec_verdicts.py):

- types are strict: a string is not a number and `1` is not `true`; an integral float (`2.0`) is
  an integer, as the API server's schema validation takes it, except where the API server reads
  the field as an int64 and refuses a float: `replicas` (the scale subresource) and every integer
  a CEL rule reads (`minReplicas`, `maxReplicas`, `promptTokens`, `outputTokens`,
  `contextLength.min` and `.preferred`: "expected int, got float64");
- `null` in a field that is not nullable is dropped before validation (the API server prunes
  it and applies the default), and so is a `null` value in `placement.nodeSelector` and a
  `null` `replicas` (not nullable in the CRD: the scale subresource cannot read a null);
- what can never be applied is refused here, not at apply time: node selector keys and values
  that are not label syntax, Secret names and keys Kubernetes would refuse in a pod, model ids
  that are not Hugging Face repo ids;
- every string, list and map is bounded, so that the largest spec the schema admits stays well
  under the 256 KiB the API server allows for all annotations together (kopf keeps a copy of the
  spec in the `mmop.dev/last-handled-configuration` annotation; `kubectl apply` keeps another in
  `kubectl.kubernetes.io/last-applied-configuration`); tests/unit/test_crd.py computes the bound.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from mmop.vllm import PINNED_VLLM_VERSION

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
    "--allowed-local-media-path",
    "--media-io-kwargs",
)


REMOTE_CODE_FLAG = "--trust-remote-code"
REMOTE_CODE_FLAG_MESSAGE = (
    "engine.extraArgs: --trust-remote-code is set by spec.model.trustRemoteCode: true "
    "(mmop then plans it and says so)"
)
API_KEY_FLAG = "--api-key"
API_KEY_FLAG_MESSAGE = (
    "engine.extraArgs: --api-key is not allowed: a key in the arguments is plain text in the "
    "pod spec and in status.plan.args; put it in a Secret and name it in "
    "spec.engine.apiKeySecretRef"
)

# --- Kubernetes and Hugging Face name syntax (the API server's and huggingface_hub's rules) -----

# DNS-1123 label and subdomain (k8s.io/apimachinery/pkg/util/validation IsDNS1123Subdomain):
# a Secret's name, the prefix of a label key.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_PATTERN = rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$"
DNS1123_SUBDOMAIN_MAX = 253
# Label keys and values (IsQualifiedName, IsValidLabelValue): a key is an optional DNS-1123
# subdomain prefix (at most 253 characters) and "/", then a name of at most 63; a value is at
# most 63 characters and may be empty.
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_NAME_MAX = 63
LABEL_KEY_PATTERN = rf"^({_DNS1123_LABEL}(\.{_DNS1123_LABEL})*/)?{_LABEL_NAME}$"
LABEL_KEY_MAX = DNS1123_SUBDOMAIN_MAX + 1 + LABEL_NAME_MAX
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
LABEL_VALUE_MAX = 63
# A key of a Secret (IsConfigMapKey): [-._a-zA-Z0-9]+, at most 253, not "." or "..", not
# starting with "..". Written without look-ahead: the API server's patterns are Go RE2.
CONFIG_KEY_PATTERN = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
CONFIG_KEY_MAX = 253
# A Hugging Face repo id, as huggingface_hub's validate_repo_id checks it
# (huggingface_hub/utils/_validators.py, REPO_ID_REGEX with re.ASCII): "name" or "org/name",
# each part 1-96 of [A-Za-z0-9_.-] starting and ending with [A-Za-z0-9_]; no "--" or "..";
# not ending in ".git". The pattern holds the part syntax; the three substring rules are
# checked beside it. The CRD checks all of it in one CEL rule, whose message says the rule (an
# OpenAPI pattern would say only the regular expression). Catalog ids are repo ids.
_HF_PART = r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
MODEL_ID_PATTERN = rf"^{_HF_PART}(/{_HF_PART})?$"
MODEL_ID_MAX = 96 + 1 + 96
MODEL_ID_FORBIDDEN = ("--", "..")
MODEL_ID_FORBIDDEN_SUFFIX = ".git"
MODEL_ID_RULE = (
    "a Hugging Face repo id: name or org/name, each part 1-96 letters, digits, '_', '.' or '-', "
    "starting and ending with a letter, digit or '_', without '--' or '..', not ending in "
    "'.git'; the operator never reads a path"
)
# `mmop plan` reads a manifest whose spec.model.id may be a directory of the machine it runs on
# (planner.plan(allow_local=True)): validate it with context={ALLOW_LOCAL_MODEL: True}.
ALLOW_LOCAL_MODEL = "allowLocalModel"
# Placement.nodeSelector: at most this many labels (CEL iterates the keys; the bound keeps the
# rule's cost estimate under the API server's budget and the spec's size bounded).
NODE_SELECTOR_MAX = 16
# engine.extraArgs and engine.env: counts and lengths (see "every string, list and map is
# bounded" above; an inline chat template longer than this belongs in the image, by path).
EXTRA_ARGS_MAX_ITEMS = 24
EXTRA_ARG_MAX = 256
ENV_MAX_ITEMS = 16
ENV_VALUE_MAX = 192


def model_id_problem(value: str) -> str | None:
    """What is wrong with `value` as a Hugging Face repo id (None: nothing)."""
    if value.startswith(("/", "./", "../", "~")):
        return "a path"
    if not re.fullmatch(MODEL_ID_PATTERN[1:-1], value):
        return "not name or org/name of letters, digits, '_', '.' and '-'"
    for bad in MODEL_ID_FORBIDDEN:
        if bad in value:
            return f"contains {bad!r}"
    if value.endswith(MODEL_ID_FORBIDDEN_SUFFIX):
        return f"ends in {MODEL_ID_FORBIDDEN_SUFFIX!r}"
    return None


LABEL_KEYS_MESSAGE = (
    "placement.nodeSelector: every key must be a label key: an optional DNS subdomain prefix of "
    f"at most {DNS1123_SUBDOMAIN_MAX} characters and '/', then a name of at most {LABEL_NAME_MAX} "
    "letters, digits, '-', '_' or '.' that starts and ends with a letter or digit"
)


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key (None: it is one)."""
    prefix, _, name = key.rpartition("/")
    if not re.fullmatch(LABEL_KEY_PATTERN[1:-1], key):
        return "not the syntax of a label key"
    if len(prefix) > DNS1123_SUBDOMAIN_MAX:
        return f"its prefix is longer than {DNS1123_SUBDOMAIN_MAX} characters"
    if len(name) > LABEL_NAME_MAX:
        return f"its name (after any prefix/) is longer than {LABEL_NAME_MAX} characters"
    return None


class ApiModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=False,
    )


_MAX_JSON_INTEGER = 2**53 - 1  # the API server takes a float as an integer up to here


class SpecModel(ApiModel):
    """A part of the spec: validated as the API server validates it (see the module docstring)."""

    # hide_input_in_errors: an error never repeats what was written (an env value, an argument)
    model_config = ConfigDict(strict=True, hide_input_in_errors=True)

    # Integer fields whose integral floats the API server refuses (read by the scale subresource
    # or by a CEL rule, as int64).
    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset()
    # Optional fields whose null the API server prunes like an absent field (the CRD does not
    # declare them nullable: crd.NOT_NULLABLE).
    _NULL_PRUNED: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _as_the_api_server_reads(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = _wire_fields(cls)
        out: dict[Any, Any] = {}
        for key, value in data.items():
            found = fields.get(key) if isinstance(key, str) else None
            if found is None:
                out[key] = value  # unknown: extra="forbid" names it
                continue
            attr, field = found
            if value is None and (not _nullable(field) or attr in cls._NULL_PRUNED):
                continue  # pruned by the API server, which then applies the default
            if (
                isinstance(value, float)
                and field.annotation in (int, int | None)
                and attr not in cls._INTEGER_ONLY
                and value.is_integer()
                and abs(value) <= _MAX_JSON_INTEGER
            ):
                value = int(value)
            out[key] = value
        return out


def _nullable(field: FieldInfo) -> bool:
    return field.annotation is not None and type(None) in getattr(field.annotation, "__args__", ())


def _wire_fields(model: type[BaseModel]) -> dict[str, tuple[str, FieldInfo]]:
    out: dict[str, tuple[str, FieldInfo]] = {}
    for attr, field in model.model_fields.items():
        out[attr] = (attr, field)
        if field.alias:
            out[field.alias] = (attr, field)
    return out


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


class SecretKeyRef(SpecModel):
    name: str = Field(
        min_length=1,
        max_length=DNS1123_SUBDOMAIN_MAX,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Secret name (a DNS-1123 subdomain) in the model's namespace",
    )
    key: str = Field(
        default="token",
        min_length=1,
        max_length=CONFIG_KEY_MAX,
        pattern=CONFIG_KEY_PATTERN,
        description="Key in it (letters, digits, '-', '_', '.'; not '.', '..' or '..'-prefixed)",
    )


class ConfigMapRef(SpecModel):
    name: str = Field(
        min_length=1,
        max_length=DNS1123_SUBDOMAIN_MAX,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="ConfigMap name (a DNS-1123 subdomain) in the model's namespace",
    )


class ModelCache(SpecModel):
    """A shared volume the weights are downloaded into once and every replica reads."""

    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset({"size_gib"})  # a CEL rule reads it

    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=DNS1123_SUBDOMAIN_MAX,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="An existing ReadWriteMany PersistentVolumeClaim in the model's namespace "
        "(mmop neither creates nor deletes it); unset: mmop creates one for the model",
    )
    storage_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=DNS1123_SUBDOMAIN_MAX,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Storage class of the claim mmop creates (ReadWriteMany); unset: the "
        "operator's default (Helm modelCache.storageClassName), else the cluster's default",
    )
    size_gib: int | None = Field(
        default=None,
        alias="sizeGiB",
        ge=1,
        le=100_000,
        description="Size of the claim mmop creates, GiB (default: the checkpoint's size "
        "plus a fifth, at least 10 GiB)",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelCache:
        if self.claim_name is not None and (
            self.storage_class_name is not None or self.size_gib is not None
        ):
            raise ValueError(CACHE_CLAIM_MESSAGE)
        return self


CACHE_CLAIM_MESSAGE = (
    "model.cache: claimName names an existing claim; storageClassName and sizeGiB are for the "
    "claim mmop creates, not both"
)


def _model_id_field(description: str) -> Any:
    return Field(
        min_length=1,
        max_length=MODEL_ID_MAX,
        description=description,
    )


def _check_model_id(where: str, value: str) -> str:
    """The CRD's CEL rule says the same words before the parenthesis (crd._model_id_rule)."""
    problem = model_id_problem(value)
    if problem is not None:
        raise ValueError(f"{where} must be {MODEL_ID_RULE} ({value!r}: {problem})")
    return value


class ModelVariant(SpecModel):
    id: str = _model_id_field("Pre-quantized checkpoint id (a Hugging Face repo id)")
    quantization: Quantization = Field(strict=False, description="Its weight quantization method")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_model_id("model.variants[].id", value)


class ModelSource(SpecModel):
    id: str = _model_id_field("Model id: a Hugging Face repo id (org/name or name) or a catalog id")
    revision: str | None = Field(default=None, max_length=100, description="Model revision")
    variants: list[ModelVariant] = Field(
        default_factory=list, max_length=8, description="Pre-quantized checkpoints to consider"
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a Hugging Face token"
    )
    config_map_ref: ConfigMapRef | None = Field(
        default=None,
        description="ConfigMap holding the model's config.json and processor configs (keys "
        "named as the files), read instead of the Hub: for clusters that cannot reach it",
    )
    cache: ModelCache | None = Field(
        default=None,
        description="Download the weights once into a shared ReadWriteMany volume that every "
        "replica mounts read-only (replicas wait until it is filled: condition CacheReady); "
        "unset: each pod downloads them into its own ephemeral storage",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Let vLLM run the model repository's own Python code (--trust-remote-code); "
        "models whose config needs it (InternVL chat, Phi-3.5-vision, MiniCPM-V) are not "
        "planned without it",
    )

    @field_validator("id", mode="wrap")
    @classmethod
    def _id(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> str:
        if isinstance(value, str) and value and (info.context or {}).get(ALLOW_LOCAL_MODEL):
            return value  # `mmop plan`: the planner reads a local directory or a catalog id
        checked: str = handler(value)
        return _check_model_id("model.id", checked)


class ImageWorkload(SpecModel):
    per_request: int = Field(default=0, ge=0, le=64, description="Images per request, at most")
    max_width: int = Field(default=1024, ge=16, le=16384, description="Largest image width, px")
    max_height: int = Field(default=1024, ge=16, le=16384, description="Largest image height, px")
    min_pixels: int | None = Field(
        default=None,
        ge=1,
        le=16384 * 16384,
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


class VideoWorkload(SpecModel):
    enabled: bool = Field(default=False, description="Requests carry video")
    max_frames: int = Field(default=32, ge=1, le=1024, description="Sampled frames per video")
    max_width: int = Field(default=640, ge=16, le=8192, description="Frame width, px")
    max_height: int = Field(default=360, ge=16, le=8192, description="Frame height, px")


class AudioWorkload(SpecModel):
    enabled: bool = Field(default=False, description="Requests carry audio")
    max_seconds: float = Field(default=30, gt=0, le=3600, description="Audio length, seconds")


class ContextLength(SpecModel):
    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset({"min", "preferred"})

    min: int = Field(default=4096, ge=256, le=1_048_576, description="Context length needed")
    preferred: int | None = Field(
        default=None, ge=256, le=1_048_576, description="Longer context to use when it is free"
    )


class Slo(SpecModel):
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


class Workload(SpecModel):
    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset({"prompt_tokens", "output_tokens"})

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


GpuTypeName = Annotated[str, Field(min_length=1, max_length=64)]
LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX, pattern=LABEL_VALUE_PATTERN)]


class Placement(SpecModel):
    gpu_types: list[GpuTypeName] = Field(
        default_factory=list,
        max_length=16,
        description="Allowed GPU types (catalog names or GFD product labels); empty: any",
    )
    max_gpus_per_replica: int = Field(default=8, ge=1, le=16, description="Tensor-parallel cap")
    quantizations: list[Annotated[Quantization, Strict(False)]] = Field(
        default_factory=lambda: [Quantization.NONE, Quantization.FP8, Quantization.AWQ],
        min_length=1,
        max_length=len(Quantization),
        description="Weight quantizations allowed (none = the checkpoint's own precision)",
    )
    kv_cache_dtypes: list[Annotated[KvCacheDtype, Strict(False)]] = Field(
        default_factory=lambda: [KvCacheDtype.AUTO, KvCacheDtype.FP8],
        min_length=1,
        max_length=len(KvCacheDtype),
        description="KV-cache dtypes allowed",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=NODE_SELECTOR_MAX,
        description="Extra node labels the pods must match (label keys and values, at most "
        f"{NODE_SELECTOR_MAX})",
    )

    @field_validator("node_selector", mode="before")
    @classmethod
    def _prune_null_values(cls, value: Any) -> Any:
        # the API server drops a null map value (it is not nullable)
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None}
        return value

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            problem = label_key_problem(key)
            if problem is not None:
                raise ValueError(f"{LABEL_KEYS_MESSAGE} ({key!r}: {problem})")
        return value


class ScalingTargets(SpecModel):
    kv_cache_usage: float = Field(default=0.8, gt=0, le=1, description="Saturated at this KV use")
    queue_length: int = Field(default=5, ge=1, le=10_000, description="Saturated at this queue")
    kv_spare: float = Field(
        default=0.1, ge=0, lt=1, description="Scale up below this average spare KV fraction"
    )
    queue_spare: float = Field(
        default=3, ge=0, le=10_000, description="Scale up below this average spare queue"
    )
    utilization: float = Field(
        default=0.7,
        ge=0.3,
        le=1,
        description="Load a replica is sized for, as a share of its capacity (requests/s); "
        "lower keeps more headroom for demand that outgrows the forecast while replicas start",
    )


class ScalingBehavior(SpecModel):
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="Scale up on the lowest recommendation this long"
    )
    scale_down_stabilization_seconds: int = Field(
        default=120, ge=0, le=3600, description="Scale down on the highest recommendation this long"
    )
    scale_up_cooldown_seconds: int = Field(
        default=15,
        ge=0,
        le=3600,
        description="At least this long after a scale-down before scaling up (scale-ups in a row "
        "are not spaced: the starting replicas count as capacity)",
    )
    scale_down_cooldown_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="At least this long after a change before scaling down",
    )
    max_scale_up_step: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Replicas added at most per decision (unset: as many as the demand needs)",
    )
    max_scale_down_step: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Replicas removed at most per decision (unset: down to what the demand needs)",
    )
    window_seconds: int = Field(
        default=30, ge=5, le=600, description="Window for rates and latency quantiles"
    )


class Consolidation(SpecModel):
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


class Scaling(SpecModel):
    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset({"min_replicas", "max_replicas"})

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas")
    mode: ScalingMode = Field(
        default=ScalingMode.AUTO, strict=False, description="Who scales: Auto|External|Off"
    )
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


class EnvVar(SpecModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128, description="Name")
    value: str = Field(default="", max_length=ENV_VALUE_MAX, description="Value")


class Engine(SpecModel):
    image: str = Field(
        default=DEFAULT_VLLM_IMAGE,
        min_length=1,  # a Deployment refuses an empty image
        max_length=300,
        description="vLLM image (default: the vLLM release mmop pins and plans for)",
    )
    extra_args: list[Annotated[str, Field(max_length=EXTRA_ARG_MAX)]] = Field(
        default_factory=list,
        max_length=EXTRA_ARGS_MAX_ITEMS,
        description="Extra vLLM flags (allow-listed)",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=ENV_MAX_ITEMS, description="Extra env"
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the key clients must send to the vLLM server "
        "(VLLM_API_KEY); never in extraArgs",
    )

    @model_validator(mode="after")
    def _check(self) -> Engine:
        for arg in self.extra_args:
            if arg.startswith("-"):
                flag = arg.split("=", 1)[0]
                if flag == REMOTE_CODE_FLAG:
                    raise ValueError(REMOTE_CODE_FLAG_MESSAGE)
                if flag == API_KEY_FLAG:
                    raise ValueError(API_KEY_FLAG_MESSAGE)
                if flag not in EXTRA_ARGS_ALLOWED:
                    raise ValueError(
                        f"engine.extraArgs: {flag} is not allowed (mmop sets memory, "
                        f"parallelism and length flags itself); allowed: "
                        f"{', '.join(EXTRA_ARGS_ALLOWED)}"
                    )
        return self


class MultimodalModelSpec(SpecModel):
    """What to serve, for which workload, where, and how it scales: mmop plans the rest."""

    _INTEGER_ONLY: ClassVar[frozenset[str]] = frozenset({"replicas"})
    _NULL_PRUNED: ClassVar[frozenset[str]] = frozenset({"replicas"})

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
    model_source: str | None = Field(
        default=None, description="Where its config was read: catalog, hub, directory or configmap"
    )
    model_commit: str | None = Field(
        default=None, description="The Hub commit its config was read at"
    )
    kv_memory_scale: float | None = Field(
        default=None,
        description="Observed / predicted KV cache of this configuration on earlier engines' "
        "start-ups, applied to memory (absent: not calibrated)",
    )
    approximate: bool | None = Field(
        default=None,
        description="The model was read by the generic path: planned with a KV margin until an "
        "engine reports its own",
    )
    gpu: str = Field(description="Catalog GPU name")
    gpu_product: str = Field(description="nvidia.com/gpu.product of the nodes used")
    gpus_per_replica: int = Field(
        ge=0,
        description="GPUs one replica uses: the tensor-parallel size times the pipeline stages",
    )
    pipeline_parallel_size: int | None = Field(
        default=None,
        ge=1,
        description="Pipeline stages of a replica, one node each (absent: 1, one node)",
    )
    nodes_per_replica: int | None = Field(
        default=None,
        ge=1,
        description="Nodes (pods: a LeaderWorkerSet group) one replica spans (absent: 1)",
    )
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
    startup_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Predicted seconds for a new replica to turn Ready (download, load, warm-up)",
    )
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
    observed_startup_seconds: float | None = Field(
        default=None,
        ge=0,
        description="A replica's start-up as observed (median of the Ready replicas' "
        "creation-to-Ready times); the demand forecast looks this far ahead instead of "
        "status.plan.startupSeconds",
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

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )

    api_version: Literal["mmop.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["MultimodalModel"]
    metadata: ObjectMeta
    spec: MultimodalModelSpec
    status: MultimodalModelStatus | None = None
