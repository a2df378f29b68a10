"""The GPU catalog (gpus.yaml): memory as the runtime reports it, bandwidth, compute, prices.

Names accepted anywhere mmop takes a GPU: a catalog name (``H100-80GB-SXM``), an alias
(``H100-80GB``, ``A100-40GB``), or a GPU-feature-discovery ``nvidia.com/gpu.product`` label value
(``NVIDIA-H100-80GB-HBM3``). Matching ignores case.

A catalog is a value, :class:`GpuCatalog`: :func:`load_catalog` reads one from a file (the
packaged gpus.yaml without a path, :func:`default_catalog`), and whoever plans passes it on (an
inventory carries the catalog it was built with; the planner resolves GPU names through it).
Nothing replaces the catalog of a running process: ``mmop run --gpu-catalog/--prices`` writes
the merged document to a file of its own and the operator loads that. :func:`resolve_gpu`,
:func:`load_gpus` and :func:`gpu_names` are the packaged catalog's, for callers that name GPUs
outside a plan (the estimate command, benchmarks, tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

GPUS_FILE = Path(__file__).parent / "gpus.yaml"
"""The packaged catalog file. Only :func:`default_catalog` reads it: changing this name at run
time changes nothing (pass a :class:`GpuCatalog` instead)."""

GIB = 1024**3


class GpuError(ValueError):
    """A GPU name that the catalog does not know."""


class CatalogError(ValueError):
    """A catalog file that cannot be read or whose entries are invalid (one line, naming it)."""


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


class GpuCatalog:
    """An immutable GPU catalog: the specs in file order, looked up by name, alias or GFD
    product label (case ignored; a key claimed twice goes to the later entry).

    Two catalogs are equal when they hold equal specs. Pydantic models may hold one as a field
    (it is checked to be a GpuCatalog, never copied)."""

    __slots__ = ("_hash", "_index", "gpus", "source")

    gpus: tuple[GpuSpec, ...]
    source: str
    _index: dict[str, GpuSpec]
    _hash: int | None

    def __init__(self, gpus: Iterable[GpuSpec], source: str = "") -> None:
        specs = tuple(gpus)
        index: dict[str, GpuSpec] = {}
        for gpu in specs:
            for key in (gpu.name, *gpu.aliases, *gpu.gfd_products):
                index[key.lower()] = gpu
        object.__setattr__(self, "gpus", specs)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_hash", None)

    @classmethod
    def from_document(cls, data: Mapping[str, Any], source: str = "") -> GpuCatalog:
        """A catalog from a document shaped as gpus.yaml (``{"gpus": [entry, ...]}``); raises
        :class:`CatalogError` naming ``source`` and the entry for an invalid one."""
        where = source or "GPU catalog"
        entries = data.get("gpus") if isinstance(data, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise CatalogError(f"{where}: expected `gpus:` with a list of GPU entries")
        specs: list[GpuSpec] = []
        for i, entry in enumerate(entries):
            try:
                specs.append(GpuSpec.model_validate(entry))
            except ValidationError as err:
                first = err.errors(include_url=False)[0]
                loc = ".".join(str(part) for part in first["loc"]) or "entry"
                name = entry.get("name") if isinstance(entry, Mapping) else None
                raise CatalogError(
                    f"{where}: gpus[{i}] ({name!r}): {loc}: {first['msg']}"
                ) from None
        return cls(specs, source)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"GpuCatalog is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"GpuCatalog is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, GpuCatalog):
            return NotImplemented
        return self.gpus == other.gpus

    def __hash__(self) -> int:
        cached: int | None = self._hash
        if cached is None:
            cached = hash(self.gpus)
            object.__setattr__(self, "_hash", cached)
        return cached

    def __repr__(self) -> str:
        return f"GpuCatalog({len(self.gpus)} GPUs from {self.source or 'memory'})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (GpuCatalog, (self.gpus, self.source))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)

    def find(self, name: str) -> GpuSpec | None:
        """The GPU of a catalog name, alias or GFD product label; None when unknown."""
        return self._index.get(name.strip().lower())

    def resolve(self, name: str) -> GpuSpec:
        """The GPU of a catalog name, alias or GFD product label; raises :class:`GpuError`."""
        gpu = self._index.get(name.strip().lower())
        if gpu is None:
            raise GpuError(
                f"unknown GPU {name!r}: use a catalog name ({', '.join(self.names())}) or an "
                "nvidia.com/gpu.product label value; for an unlisted card, name the listed one of "
                "its architecture and give its memory with --gpu-memory-gib"
            )
        return gpu

    def names(self) -> list[str]:
        """Catalog names, in catalog order."""
        return [gpu.name for gpu in self.gpus]


def load_catalog(path: Path | None = None) -> GpuCatalog:
    """The catalog in ``path`` (None: the packaged gpus.yaml). Read once per path: the file is
    expected not to change while the process runs. Raises :class:`CatalogError`."""
    return _read_catalog(GPUS_FILE if path is None else Path(path))


@cache
def _read_catalog(file: Path) -> GpuCatalog:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise CatalogError(f"{file}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise CatalogError(f"{file}: invalid YAML ({str(err).splitlines()[0]})") from None
    return GpuCatalog.from_document(data, str(file))


def default_catalog() -> GpuCatalog:
    """The packaged catalog (gpus.yaml)."""
    return load_catalog(None)


def load_gpus() -> tuple[GpuSpec, ...]:
    """The packaged catalog's GPUs."""
    return default_catalog().gpus


def gpu_names() -> list[str]:
    """The packaged catalog's GPU names."""
    return default_catalog().names()


def resolve_gpu(name: str) -> GpuSpec:
    """Look a GPU up in the packaged catalog by catalog name, alias or GFD product label."""
    return default_catalog().resolve(name)
