"""What the engines' own start-ups taught about KV-cache memory: the pure part of the
calibration loop.

Every vLLM engine reports the KV cache it allocated (``vllm:cache_config_info``: the number of
GPU blocks × the block size, or the token count). The operator compares each new engine's
figure with its plan's prediction and records the observation under a :class:`MemoryKey` — what
decides the memory of a replica: the checkpoint and the commit it was read at, the GPU, the
tensor-parallel size and pipeline stages, the weights' quantization, the KV-cache dtype, the
vLLM version and the user's extra flags. Later plans of that key scale the estimator's
available KV memory by the observed ratio (``estimator.Calibration.kv_memory_scale``), so they
use the observed figure, and say "calibrated from N start-ups".

The store is plain data, serialised into a ConfigMap by the shell (one key per record, JSON),
bounded to ``MAX_RECORDS``; no clock: records are ordered by a sequence number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Records the store keeps (the oldest observed are dropped first): about 250 bytes each, far
# below a ConfigMap's 1 MiB.
MAX_RECORDS = 512
# Engines a record remembers by name, so one engine's start-up is counted once.
MAX_PODS = 16
# A start-up whose KV cache is below this fraction of the prediction makes the model re-plan.
FAR_BELOW = 0.85
# Observed/predicted ratios outside these bounds are not believed (a scrape of another model's
# engine, a mislabelled metric): recorded nowhere.
MIN_RATIO, MAX_RATIO = 0.05, 4.0


@dataclass(frozen=True)
class MemoryKey:
    """What decides a replica's memory at start-up."""

    model: str
    commit: str | None
    gpu: str
    tensor_parallel_size: int
    weights: str
    kv_cache_dtype: str
    vllm_version: str
    extra_args: tuple[str, ...] = ()
    # Stages over nodes (a LeaderWorkerSet group): each rank holds a share of the layers and
    # their KV cache, so a replica over nodes is a key of its own.
    pipeline_parallel_size: int = 1

    @property
    def name(self) -> str:
        """A stable ConfigMap key (``[-._a-zA-Z0-9]``, 40 characters). Single-node keys read
        as before pipeline stages were part of the key."""
        fields: list[object] = [
            self.model, self.commit or "", self.gpu, self.tensor_parallel_size, self.weights,
            self.kv_cache_dtype, self.vllm_version, list(self.extra_args),
        ]  # fmt: skip
        if self.pipeline_parallel_size > 1:
            fields.append(self.pipeline_parallel_size)
        return "kv-" + hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:37]

    def describe(self) -> str:
        commit = f"@{self.commit[:12]}" if self.commit else ""
        stages = self.pipeline_parallel_size
        gpus = f"{self.tensor_parallel_size}× {self.gpu}" + (
            f" × {stages} stages" if stages > 1 else ""
        )
        return (
            f"{self.model}{commit} on {gpus}, weights "
            f"{self.weights}, KV {self.kv_cache_dtype}, vLLM {self.vllm_version}"
        )


class KvRecord(BaseModel):
    """The observations of one MemoryKey."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: str = Field(description="MemoryKey.describe(), for people reading the ConfigMap")
    predicted_tokens: int = Field(ge=1, description="The prediction the ratio is against")
    observed_tokens: int = Field(ge=0, description="The smallest KV cache an engine reported")
    startups: int = Field(ge=1, description="Engines observed")
    pods: list[str] = Field(default_factory=list, description="The last engines counted")
    seq: int = Field(default=0, ge=0, description="Order of the last observation")

    @property
    def ratio(self) -> float:
        return self.observed_tokens / self.predicted_tokens


@dataclass(frozen=True)
class Calibrated:
    """What later plans of a key use."""

    ratio: float  # observed / predicted KV tokens
    startups: int
    observed_tokens: int

    def note(self) -> str:
        return (
            f"KV cache calibrated from {self.startups} start-up(s) of this configuration: the "
            f"engines reported {self.observed_tokens:,} tokens, {self.ratio:.0%} of the "
            "estimate"
        )


@dataclass(frozen=True)
class Observed:
    """One new engine's start-up as recorded: whether it counted and whether it is far below."""

    record: KvRecord
    new: bool
    far_below: bool


@dataclass(frozen=True)
class CalibrationStore:
    records: Mapping[str, KvRecord]

    @classmethod
    def empty(cls) -> CalibrationStore:
        return cls({})

    def lookup(self, key: MemoryKey) -> Calibrated | None:
        record = self.records.get(key.name)
        if record is None:
            return None
        return Calibrated(record.ratio, record.startups, record.observed_tokens)

    def observe(
        self, key: MemoryKey, pod: str, predicted_tokens: int, observed_tokens: int
    ) -> tuple[CalibrationStore, Observed | None]:
        """The store with one engine's KV cache recorded (None: nothing recorded — already
        counted, or not believable)."""
        if predicted_tokens <= 0 or observed_tokens < 0:
            return self, None
        ratio = observed_tokens / predicted_tokens
        if not MIN_RATIO <= ratio <= MAX_RATIO:
            return self, None
        old = self.records.get(key.name)
        if old is not None and pod in old.pods:
            return self, None
        seq = 1 + max((r.seq for r in self.records.values()), default=0)
        if old is None:
            record = KvRecord(
                key=key.describe(),
                predicted_tokens=predicted_tokens,
                observed_tokens=observed_tokens,
                startups=1,
                pods=[pod],
                seq=seq,
            )
        else:
            # The ratio stays against the prediction of the first record; a new prediction for
            # the same key (a re-plan that already used the ratio) is scaled to it.
            observed = round(observed_tokens * old.predicted_tokens / predicted_tokens)
            record = old.model_copy(
                update={
                    "observed_tokens": min(old.observed_tokens, observed),
                    "startups": old.startups + 1,
                    "pods": [*old.pods, pod][-MAX_PODS:],
                    "seq": seq,
                }
            )
        records = {**self.records, key.name: record}
        if len(records) > MAX_RECORDS:
            drop = sorted(records, key=lambda k: records[k].seq)[: len(records) - MAX_RECORDS]
            records = {k: v for k, v in records.items() if k not in drop}
        far = observed_tokens < FAR_BELOW * predicted_tokens
        return CalibrationStore(records), Observed(record, True, far)

    def to_data(self) -> dict[str, str]:
        """ConfigMap data: one key per record."""
        return {k: r.model_dump_json() for k, r in sorted(self.records.items())}

    @classmethod
    def from_data(cls, data: Mapping[str, str] | None) -> CalibrationStore:
        """The store from ConfigMap data; entries that do not read are left out."""
        records: dict[str, KvRecord] = {}
        for name, text in (data or {}).items():
            if not name.startswith("kv-"):
                continue
            try:
                records[name] = KvRecord.model_validate_json(text)
            except (ValidationError, ValueError):
                continue
        return cls(records)


def key_of_plan(
    plan: Mapping[str, object], extra_args: Sequence[str], vllm_version: str
) -> MemoryKey | None:
    """The MemoryKey of a plan in force (``status.plan``, camelCase; ``gpusPerReplica`` is
    tensor parallel × pipeline stages)."""
    try:
        stages = int(str(plan.get("pipelineParallelSize") or 1))
        gpus = int(str(plan["gpusPerReplica"]))
        if stages < 1 or gpus % stages:
            return None
        return MemoryKey(
            model=str(plan["model"]),
            commit=str(plan["modelCommit"]) if plan.get("modelCommit") else None,
            gpu=str(plan["gpu"]),
            tensor_parallel_size=gpus // stages,
            pipeline_parallel_size=stages,
            weights=str(plan["quantization"]),
            kv_cache_dtype=str(plan["kvCacheDtype"]),
            vllm_version=vllm_version,
            extra_args=tuple(extra_args),
        )
    except (KeyError, ValueError):
        return None


__all__ = [
    "FAR_BELOW",
    "MAX_RECORDS",
    "Calibrated",
    "CalibrationStore",
    "KvRecord",
    "MemoryKey",
    "Observed",
    "key_of_plan",
]
