"""The GPU catalog (gpus.yaml): memory as the runtime reports it, bandwidth, compute, prices.

Names accepted anywhere mmop takes a GPU: a catalog name (``H100-80GB-SXM``), an alias
(``H100-80GB``, ``A100-40GB``), or a GPU-feature-discovery ``nvidia.com/gpu.product`` label value
(``NVIDIA-H100-80GB-HBM3``). Matching ignores case.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

GPUS_FILE = Path(__file__).parent / "gpus.yaml"

GIB = 1024**3


class GpuError(ValueError):
    """A GPU name that the catalog does not know."""


class GpuSupport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bf16: bool
    fp8: bool
    fp4: bool


class GpuSpec(BaseModel):
    """One GPU model as the planner and estimator see it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(description="Catalog name")
    aliases: tuple[str, ...] = Field(default=(), description="Other accepted names")
    vendor: str = Field(description="nvidia or amd")
    architecture: str = Field(description="GFD nvidia.com/gpu.family value")
    compute_capability: str | None = Field(default=None, description="CUDA compute capability")
    memory_gib: float = Field(gt=0, description="Total device memory the runtime reports, GiB")
    marketing_memory_gb: float | None = None
    memory_bandwidth_gbps: float = Field(gt=0, description="Memory bandwidth, GB/s")
    bf16_tflops: float | None = Field(default=None, description="Dense BF16 tensor TFLOPs")
    fp8_tflops: float | None = Field(default=None, description="Dense FP8 tensor TFLOPs")
    fp4_tflops: float | None = Field(default=None, description="Dense FP4 tensor TFLOPs")
    supports: GpuSupport
    interconnect: str = Field(default="pcie")
    interconnect_bandwidth_gbps: float | None = None
    gfd_products: tuple[str, ...] = Field(default=())
    mig_profiles: tuple[str, ...] = Field(default=())
    price_per_hour_usd: float = Field(ge=0, description="Default on-demand $/GPU-hour")
    price_source: str = ""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)

    @property
    def compute_major(self) -> int:
        if not self.compute_capability:
            return 9  # AMD MI300X: treated as an fp8-capable, bf16-capable device
        return int(self.compute_capability.split(".")[0])

    @property
    def compute_minor(self) -> int:
        if not self.compute_capability:
            return 4
        return int(self.compute_capability.split(".")[1])

    def with_memory(self, memory_gib: float) -> GpuSpec:
        """The same card with a different memory size (an unlisted variant, a MIG slice)."""
        return self.model_copy(update={"memory_gib": memory_gib})


@cache
def load_gpus() -> tuple[GpuSpec, ...]:
    data: dict[str, Any] = yaml.safe_load(GPUS_FILE.read_text())
    return tuple(GpuSpec.model_validate(entry) for entry in data["gpus"])


@cache
def _index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for gpu in load_gpus():
        for key in (gpu.name, *gpu.aliases, *gpu.gfd_products):
            index[key.lower()] = gpu
    return index


def gpu_names() -> list[str]:
    return [gpu.name for gpu in load_gpus()]


def resolve_gpu(name: str) -> GpuSpec:
    """Look a GPU up by catalog name, alias or GFD product label."""
    gpu = _index().get(name.strip().lower())
    if gpu is None:
        raise GpuError(
            f"unknown GPU {name!r}: use a catalog name ({', '.join(gpu_names())}) or an "
            "nvidia.com/gpu.product label value, or pass --gpu-memory-gib for an unlisted card"
        )
    return gpu
