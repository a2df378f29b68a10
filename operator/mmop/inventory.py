"""GPU pools of a cluster, from Node and Pod objects or from an offline inventory file.

Pure: :func:`inventory_from_objects` takes nodes and pods as plain dicts in the shape the
Kubernetes API returns them (camelCase JSON) and gives an :class:`Inventory`; :func:`load_inventory`
reads a small YAML file the caller names. No Kubernetes API, no clock.

How a node's GPU is found, in order:

1. the GPU-feature-discovery label ``nvidia.com/gpu.product`` (``NVIDIA-H100-80GB-HBM3``), looked
   up in the GPU catalog; a MIG single-strategy product (``NVIDIA-A100-SXM4-40GB-MIG-1g.5gb``)
   resolves to its parent GPU with the slice's memory (``nvidia.com/gpu.memory``, MiB);
2. ``cloud.google.com/gke-accelerator`` (``nvidia-l4``, ``nvidia-h100-80gb``; with
   ``cloud.google.com/gke-gpu-partition-size`` for a MIG slice);
3. ``karpenter.k8s.aws/instance-gpu-name`` or ``eks.amazonaws.com/instance-gpu-name`` (``l4``,
   ``a10g``, ``h100``; ``a100`` is told apart by ``karpenter.k8s.aws/instance-gpu-memory``).

Nodes with no allocatable ``nvidia.com/gpu`` are left out. Nodes whose GPU the catalog does not
know are reported in :attr:`Inventory.unknown`, not dropped silently. Cordoned and NotReady
nodes stay visible with ``schedulable=False`` and add nothing to free capacity.

The catalog is a parameter (:class:`~mmop.catalog.GpuCatalog`; the packaged one when none is
given): an inventory carries the catalog it was built with (:attr:`Inventory.catalog`, left out
of dumps), and every GPU name it resolves — a pool's spec, prices, type lookups, pool order —
goes through that catalog, never through a process-wide one.

A replica is placed as a whole pod, as the scheduler's NodeResourcesFit filter places it: its
GPUs, CPU, memory and ephemeral storage must all fit on one node, counted against the node's
``status.allocatable`` minus the requests of the non-terminated pods bound to it (GPU pods or
not). A pod's requests are max(app containers + sidecars, each init container + the sidecars
started before it), pod-level ``spec.resources`` where set, plus ``spec.overhead``; see
:func:`pod_spec_requests`. A resource a node does not report (the sandbox's nodes have no
``ephemeral-storage``; an inventory file may leave ``cpu``/``memory`` out) does not constrain it.
"""

from __future__ import annotations

import heapq
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmop.catalog import GPUS_FILE, GpuCatalog, GpuError, GpuSpec, default_catalog

DEFAULT_INVENTORY_FILE = GPUS_FILE.parent / "inventory.yaml"
"""The offline inventory: the same pools as the local sandbox (e2e/sandbox/pools.yaml)."""

GPU_RESOURCE = "nvidia.com/gpu"
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"
# The network between a node and the other GPU nodes of its pool, in Gb/s (per GPU's NIC, one
# direction: "400" for InfiniBand NDR, "100" for 100 GbE), set by the cluster's administrators:
# no standard label carries it. Read for replicas over several nodes (docs/multinode.md).
INTER_NODE_LABEL = "mmop.dev/inter-node-gbps"
# Largest figure believed (1.6 Tb/s per NIC is the fastest class sold in 2026).
MAX_INTER_NODE_GBPS = 1600.0
GFD_MEMORY_LABEL = "nvidia.com/gpu.memory"
GFD_FAMILY_LABEL = "nvidia.com/gpu.family"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GKE_PARTITION_LABEL = "cloud.google.com/gke-gpu-partition-size"
KARPENTER_GPU_NAME_LABEL = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL = "karpenter.k8s.aws/instance-gpu-memory"
EKS_GPU_NAME_LABEL = "eks.amazonaws.com/instance-gpu-name"

HOSTNAME_LABEL = "kubernetes.io/hostname"
GPU_TAINT_KEY = "nvidia.com/gpu"
"""The taint GPU nodes carry (NoSchedule); file pools get it as the sandbox's nodes do."""

PLACEMENT_LABELS: tuple[str, ...] = (
    GFD_PRODUCT_LABEL,
    GFD_FAMILY_LABEL,
    "nvidia.com/mig.strategy",
    "nvidia.com/gpu.sharing-strategy",
    GKE_ACCELERATOR_LABEL,
    GKE_PARTITION_LABEL,
    "cloud.google.com/gke-nodepool",
    "cloud.google.com/gke-spot",
    KARPENTER_GPU_NAME_LABEL,
    EKS_GPU_NAME_LABEL,
    "karpenter.sh/capacity-type",
    "karpenter.sh/nodepool",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
)
"""Node labels a pool's :attr:`GpuPool.node_selector` reports: the ones a node selector or
affinity commonly uses (GPU product, cloud node pool, capacity type, instance type, zone)."""

# GKE accelerator values whose catalog name is not just the value without "nvidia-"/"tesla-".
_GKE_ACCELERATORS: dict[str, str] = {
    "nvidia-tesla-a100": "A100-40GB-SXM",  # A2 machines: A100 40GB SXM4
    "nvidia-a100-80gb": "A100-80GB-SXM",
    "nvidia-h100-80gb": "H100-80GB-SXM",
    "nvidia-h100-mega-80gb": "H100-80GB-SXM",
    "nvidia-h200-141gb": "H200",
    "nvidia-rtx-pro-6000": "RTX-PRO-6000",
}
# Karpenter / EKS instance-gpu-name values (lower case), where the bare value is ambiguous.
_AWS_GPU_NAMES: dict[str, str] = {
    "a100": "A100-40GB-SXM",  # p4d; p4de (80 GB) is told apart by the memory label
    "h100": "H100-80GB-SXM",  # p5
    "h200": "H200",  # p5e / p5en
}
_MIG_SUFFIX = re.compile(r"^(?P<parent>.+?)-MIG-(?P<profile>.+)$", re.IGNORECASE)
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>[eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_SUFFIX_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})
CPU_RESOURCE = "cpu"
MEMORY_RESOURCE = "memory"
EPHEMERAL_RESOURCE = "ephemeral-storage"


class InventoryError(ValueError):
    """An inventory file that cannot be read; the message is one line naming the file."""


class Requests(NamedTuple):
    """Resources pods request of a node (one pod's, or the sum over a node's pods)."""

    gpus: int = 0
    cpu_millicores: int = 0
    memory_bytes: int = 0
    ephemeral_bytes: int = 0

    def plus(self, other: Requests) -> Requests:
        return Requests(
            self.gpus + other.gpus,
            self.cpu_millicores + other.cpu_millicores,
            self.memory_bytes + other.memory_bytes,
            self.ephemeral_bytes + other.ephemeral_bytes,
        )

    def minus(self, other: Requests) -> Requests:
        """This less ``other``, never below 0."""
        return Requests(
            max(0, self.gpus - other.gpus),
            max(0, self.cpu_millicores - other.cpu_millicores),
            max(0, self.memory_bytes - other.memory_bytes),
            max(0, self.ephemeral_bytes - other.ephemeral_bytes),
        )


NO_REQUESTS = Requests()


# --------------------------------------------------------------------------------------- models


class Taint(BaseModel):
    """One node taint, as in ``spec.taints``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="Taint key")
    value: str = Field(default="", description="Taint value, empty when the taint has none")
    effect: str = Field(description="NoSchedule, PreferNoSchedule or NoExecute")


class NodeGpus(BaseModel):
    """One GPU node: what it has, what running pods already hold, and whether it takes new pods."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Node name")
    gpu: str = Field(description="GPU catalog name (the parent GPU for a MIG slice)")
    product_label: str = Field(description="Label value the GPU was recognised by")
    product_label_key: str = Field(description="Label key the product value was read from")
    mig_profile: str | None = Field(
        default=None, description="MIG profile (1g.5gb) when each allocatable GPU is a MIG slice"
    )
    memory_gib_override: float | None = Field(
        default=None, gt=0, description="Per-GPU memory when it differs from the catalog, GiB"
    )
    gpus_allocatable: int = Field(ge=0, description="Allocatable nvidia.com/gpu")
    gpus_requested: int = Field(
        default=0, ge=0, description="nvidia.com/gpu requested by non-terminated pods on the node"
    )
    cpu_allocatable_millicores: int | None = Field(
        default=None, ge=0, description="Allocatable CPU, millicores; None: not a constraint"
    )
    cpu_requested_millicores: int = Field(
        default=0, ge=0, description="CPU requested by non-terminated pods on the node, millicores"
    )
    memory_allocatable_bytes: int | None = Field(
        default=None, ge=0, description="Allocatable memory, bytes; None: not a constraint"
    )
    memory_requested_bytes: int = Field(
        default=0, ge=0, description="Memory requested by non-terminated pods on the node, bytes"
    )
    ephemeral_storage_allocatable_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Allocatable ephemeral-storage, bytes; None (not reported): not a constraint",
    )
    ephemeral_storage_requested_bytes: int = Field(
        default=0, ge=0, description="Ephemeral storage requested by non-terminated pods, bytes"
    )
    taints: tuple[Taint, ...] = Field(default=(), description="Node taints")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="The node's labels (interned: nodes share one copy of each key and value), "
        "matched against spec.placement.nodeSelector",
    )
    schedulable: bool = Field(default=True, description="Ready and not cordoned")
    unschedulable_reason: str = Field(
        default="", description="Why the node takes no new pods (cordoned, NotReady)"
    )

    @property
    def gpus_free(self) -> int:
        """Allocatable minus requested GPUs (never negative), whether or not schedulable."""
        return max(0, self.gpus_allocatable - self.gpus_requested)

    @property
    def gpus_available(self) -> int:
        """GPUs a new pod can get here: free GPUs on a schedulable node, else 0."""
        return self.gpus_free if self.schedulable else 0

    @property
    def cpu_free_millicores(self) -> int | None:
        """Allocatable minus requested CPU (never negative); None when not a constraint."""
        return _free(self.cpu_allocatable_millicores, self.cpu_requested_millicores)

    @property
    def memory_free_bytes(self) -> int | None:
        """Allocatable minus requested memory (never negative); None when not a constraint."""
        return _free(self.memory_allocatable_bytes, self.memory_requested_bytes)

    @property
    def ephemeral_storage_free_bytes(self) -> int | None:
        """Allocatable minus requested ephemeral storage; None when the node reports none."""
        return _free(
            self.ephemeral_storage_allocatable_bytes, self.ephemeral_storage_requested_bytes
        )

    @property
    def requested(self) -> Requests:
        """What the non-terminated pods bound to the node request."""
        return Requests(
            self.gpus_requested,
            self.cpu_requested_millicores,
            self.memory_requested_bytes,
            self.ephemeral_storage_requested_bytes,
        )

    def pods_that_fit(
        self,
        gpus_per_pod: int,
        *,
        cpu_millicores: int = 0,
        memory_bytes: int = 0,
        ephemeral_bytes: int = 0,
    ) -> int:
        """How many pods of this size the node takes now, each whole (0 if unschedulable)."""
        _check_replica_size(gpus_per_pod)
        if not self.schedulable:
            return 0
        fit = self.gpus_free // gpus_per_pod
        for free, ask in (
            (self.cpu_free_millicores, cpu_millicores),
            (self.memory_free_bytes, memory_bytes),
            (self.ephemeral_storage_free_bytes, ephemeral_bytes),
        ):
            if ask > 0 and free is not None:
                fit = min(fit, free // ask)
        return fit


class GpuPool(BaseModel):
    """All nodes of one GPU type (one MIG profile of a type counts as its own type)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: str = Field(description="GPU catalog name (the parent GPU for a MIG slice)")
    product_label: str = Field(description="Product label value most nodes of the pool carry")
    mig_profile: str | None = Field(
        default=None, description="MIG profile when the pool's GPUs are MIG slices"
    )
    memory_gib_override: float | None = Field(
        default=None, gt=0, description="Per-GPU memory when it differs from the catalog, GiB"
    )
    price_per_hour_usd: float = Field(
        ge=0, description="$/GPU-hour: the catalog's (pro rata for a MIG slice) unless overridden"
    )
    nodes: tuple[NodeGpus, ...] = Field(min_length=1, description="Nodes of the pool")
    catalog: GpuCatalog = Field(
        default_factory=default_catalog,
        exclude=True,
        repr=False,
        description="The GPU catalog the pool's GPU is resolved in (default: the packaged one)",
    )

    @model_validator(mode="before")
    @classmethod
    def _catalog_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "gpu" in data:
            data = dict(data)
            catalog = data.get("catalog")
            if not isinstance(catalog, GpuCatalog):
                catalog = data["catalog"] = default_catalog()
            spec = catalog.resolve(str(data["gpu"]))
            data["gpu"] = spec.name
            if data.get("price_per_hour_usd") is None:
                data["price_per_hour_usd"] = _catalog_price(spec, data.get("mig_profile"))
        return data

    @model_validator(mode="after")
    def _nodes_match(self) -> Self:
        for node in self.nodes:
            if (node.gpu, node.mig_profile) != (self.gpu, self.mig_profile):
                raise ValueError(
                    f"node {node.name!r} has {_type_name(node.gpu, node.mig_profile)}, "
                    f"not the pool's {self.name}"
                )
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"pool {self.name}: node names must be unique")
        return self

    @property
    def name(self) -> str:
        """The GPU type: the catalog name, with ``-MIG-<profile>`` for a MIG slice."""
        return _type_name(self.gpu, self.mig_profile)

    def gpu_spec(self) -> GpuSpec:
        """The catalog entry (in the pool's catalog), with the slice's memory for a MIG pool."""
        spec = self.catalog.resolve(self.gpu)
        if self.memory_gib_override is not None:
            return spec.with_memory(self.memory_gib_override)
        return spec

    @property
    def node_count(self) -> int:
        return len(self.nodes)

    @property
    def gpus_per_node(self) -> int:
        """Allocatable GPUs of the largest node."""
        return max(node.gpus_allocatable for node in self.nodes)

    @property
    def free_gpus_per_node(self) -> tuple[int, ...]:
        """GPUs a new pod can get on each node, in the order of ``nodes`` (0 if unschedulable)."""
        return tuple(node.gpus_available for node in self.nodes)

    @property
    def total_gpus(self) -> int:
        """Allocatable GPUs over all nodes, schedulable or not."""
        return sum(node.gpus_allocatable for node in self.nodes)

    @property
    def free_gpus(self) -> int:
        """GPUs new pods can get, over schedulable nodes."""
        return sum(self.free_gpus_per_node)

    @property
    def largest_free_block(self) -> int:
        """Most GPUs a new pod can get on one node."""
        return max(self.free_gpus_per_node)

    @property
    def schedulable_nodes(self) -> int:
        return sum(1 for node in self.nodes if node.schedulable)

    @property
    def taints(self) -> tuple[Taint, ...]:
        """Taints every node of the pool carries (a replica must tolerate these)."""
        common = set(self.nodes[0].taints)
        for node in self.nodes[1:]:
            common &= set(node.taints)
        return tuple(t for t in self.nodes[0].taints if t in common)

    @property
    def inter_node_link(self) -> tuple[float | None, bool]:
        """(the slowest figure the pool's nodes give in :data:`INTER_NODE_LABEL`, Gb/s — None
        when none gives one — and whether every node gives one). A group may land on any nodes
        of the pool, so its slowest node bounds it; a value that is not a number in
        (0, :data:`MAX_INTER_NODE_GBPS`] counts as absent."""
        figures = [inter_node_gbps(node.labels.get(INTER_NODE_LABEL)) for node in self.nodes]
        given = [f for f in figures if f is not None]
        return (min(given) if given else None), len(given) == len(figures)

    @property
    def node_selector(self) -> dict[str, str]:
        """Placement labels (:data:`PLACEMENT_LABELS`) every node of the pool carries with the
        same value."""
        first = self.nodes[0].labels
        common = {k: first[k] for k in PLACEMENT_LABELS if k in first}
        for node in self.nodes[1:]:
            common = {k: v for k, v in common.items() if node.labels.get(k) == v}
        return common

    def replicas_that_fit(
        self,
        gpus_per_replica: int,
        *,
        cpu_millicores: int = 0,
        memory_bytes: int = 0,
        ephemeral_bytes: int = 0,
    ) -> int:
        """Replicas of ``gpus_per_replica`` GPUs (and the CPU, memory and ephemeral storage
        given) that fit, each whole pod on one node; a node may take several."""
        _check_replica_size(gpus_per_replica)
        _check_pod_size(cpu_millicores, memory_bytes, ephemeral_bytes)
        need = Requests(gpus_per_replica, cpu_millicores, memory_bytes, ephemeral_bytes)
        return _replicas_that_fit(self.nodes, need, limit=None)


def _replicas_that_fit(nodes: Iterable[NodeGpus], need: Requests, limit: int | None) -> int:
    """Pods of ``need`` the nodes take, each whole on one node; stops counting at ``limit``.

    The planner asks this for every candidate configuration: plain attribute reads, no
    properties, and an early stop once ``limit`` pods fit."""
    gpus, cpu, memory, ephemeral = need
    total = 0
    for node in nodes:
        if not node.schedulable:
            continue
        fit = (node.gpus_allocatable - node.gpus_requested) // gpus
        if fit <= 0:
            continue
        if cpu and node.cpu_allocatable_millicores is not None:
            fit = min(fit, (node.cpu_allocatable_millicores - node.cpu_requested_millicores) // cpu)
        if memory and node.memory_allocatable_bytes is not None:
            fit = min(fit, (node.memory_allocatable_bytes - node.memory_requested_bytes) // memory)
        if ephemeral and node.ephemeral_storage_allocatable_bytes is not None:
            free = node.ephemeral_storage_allocatable_bytes - node.ephemeral_storage_requested_bytes
            fit = min(fit, free // ephemeral)
        if fit > 0:
            total += fit
            if limit is not None and total >= limit:
                return total
    return total


class UnknownGpuNodes(BaseModel):
    """Nodes with allocatable GPUs whose product the catalog does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    product_label: str = Field(description="Product label value; empty when the node carries none")
    product_label_key: str = Field(description="Label key of the value; empty when none")
    nodes: tuple[str, ...] = Field(min_length=1, description="Node names, sorted")
    gpus_allocatable: int = Field(ge=0, description="Allocatable nvidia.com/gpu over these nodes")


class Inventory(BaseModel):
    """The GPU pools a planner can place replicas on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[GpuPool, ...] = Field(default=(), description="One pool per GPU type")
    unknown: tuple[UnknownGpuNodes, ...] = Field(
        default=(), description="GPU nodes whose product the catalog does not know"
    )
    catalog: GpuCatalog = Field(
        default_factory=default_catalog,
        exclude=True,
        repr=False,
        description="The GPU catalog every GPU name of this inventory is resolved in (default: "
        "its pools' catalog, else the packaged one)",
    )

    @model_validator(mode="before")
    @classmethod
    def _pools_catalog(cls, data: Any) -> Any:
        """Without a catalog, the inventory takes its pools' (they were built with one)."""
        if isinstance(data, Mapping) and data.get("catalog") is None:
            pools = data.get("pools") or ()
            first = next(iter(pools), None) if isinstance(pools, Sequence) else None
            if isinstance(first, GpuPool):
                data = {**data, "catalog": first.catalog}
        return data

    @model_validator(mode="after")
    def _one_pool_per_type(self) -> Self:
        names = [pool.name for pool in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"one pool per GPU type; got {', '.join(names)}")
        for pool in self.pools:
            if pool.catalog != self.catalog:
                raise ValueError(f"pool {pool.name} was built with another GPU catalog")
        return self

    @property
    def unknown_products(self) -> tuple[str, ...]:
        """Product label values the catalog does not know ('' for GPU nodes with no label)."""
        return tuple(sorted({entry.product_label for entry in self.unknown}))

    def gpu_types(self) -> tuple[str, ...]:
        """Pool names: catalog GPU names, plus ``<gpu>-MIG-<profile>`` for MIG slices."""
        return tuple(pool.name for pool in self.pools)

    def pool(self, gpu_name: str) -> GpuPool | None:
        """The pool of a GPU type, or None if the cluster has none.

        ``gpu_name`` is anything the catalog resolves (name, alias, GFD product label), or a pool
        name / MIG product label with a ``-MIG-<profile>`` suffix. Raises GpuError for a name the
        catalog does not know.
        """
        key = _type_key(gpu_name, self.catalog)
        for pool in self.pools:
            if (pool.gpu, (pool.mig_profile or "").lower()) == key:
                return pool
        return None

    def matching(self, node_selector: Mapping[str, str]) -> Inventory:
        """The inventory of the nodes whose labels match ``node_selector`` (every key present
        with that value, as the scheduler matches a pod's nodeSelector); a pool none of whose
        nodes match is left out. An empty selector matches every node."""
        if not node_selector:
            return self
        wanted = tuple(node_selector.items())
        pools: list[GpuPool] = []
        for pool in self.pools:
            nodes = tuple(n for n in pool.nodes if all(n.labels.get(k) == v for k, v in wanted))
            if len(nodes) == len(pool.nodes):
                pools.append(pool)
            elif nodes:
                # as the pool of a cluster with only these nodes (the rules of _pools)
                products = Counter(n.product_label for n in nodes)
                overrides = [n.memory_gib_override for n in nodes if n.memory_gib_override]
                update = {
                    "nodes": nodes,
                    "product_label": min(products, key=lambda p: (-products[p], p)),
                    "memory_gib_override": min(overrides) if overrides else None,
                }
                pools.append(pool.model_copy(update=update))
        return self.model_copy(update={"pools": tuple(pools)})

    def price(self, gpu_name: str) -> float:
        """$/GPU-hour of a GPU type: the pool's, or the catalog's when the cluster has none."""
        pool = self.pool(gpu_name)
        if pool is not None:
            return pool.price_per_hour_usd
        gpu, profile = _type_key(gpu_name, self.catalog)
        return _catalog_price(self.catalog.resolve(gpu), profile)

    def can_place(
        self,
        gpu_name: str,
        gpus_per_replica: int,
        replicas: int,
        *,
        cpu_millicores: int = 0,
        memory_bytes: int = 0,
        ephemeral_bytes: int = 0,
    ) -> int:
        """How many of ``replicas`` replicas fit, each pod whole on one node: its
        ``gpus_per_replica`` GPUs and the CPU (millicores), memory and ephemeral storage (bytes)
        it requests. A node takes as many as all four allow; 0 for a type the cluster lacks."""
        _check_replica_size(gpus_per_replica)
        _check_pod_size(cpu_millicores, memory_bytes, ephemeral_bytes)
        if replicas < 0:
            raise ValueError(f"replicas must be ≥ 0, got {replicas}")
        pool = self.pool(gpu_name)
        if pool is None or replicas == 0:
            return 0
        need = Requests(gpus_per_replica, cpu_millicores, memory_bytes, ephemeral_bytes)
        return min(replicas, _replicas_that_fit(pool.nodes, need, limit=replicas))

    def can_place_groups(
        self,
        gpu_name: str,
        gpus_per_pod: int,
        pods_per_replica: int,
        replicas: int,
        *,
        cpu_millicores: int = 0,
        memory_bytes: int = 0,
        ephemeral_bytes: int = 0,
    ) -> int:
        """How many of ``replicas`` multi-node replicas fit, each ``pods_per_replica`` pods of
        ``gpus_per_pod`` GPUs (and the CPU, memory and ephemeral storage given), every pod whole
        on one node (a replica spread over nodes: one pipeline stage per node). A pod of a whole
        node's GPUs takes a node whose GPUs are all free; pods of one replica go to different
        nodes only when a node cannot take two, which a whole-node pod guarantees."""
        if pods_per_replica < 1:
            raise ValueError(f"pods_per_replica must be ≥ 1, got {pods_per_replica}")
        pods = self.can_place(
            gpu_name,
            gpus_per_pod,
            replicas * pods_per_replica,
            cpu_millicores=cpu_millicores,
            memory_bytes=memory_bytes,
            ephemeral_bytes=ephemeral_bytes,
        )
        return pods // pods_per_replica

    def pod_shortfall(
        self,
        gpu_name: str,
        gpus_per_replica: int,
        *,
        cpu_millicores: int,
        memory_bytes: int,
        ephemeral_bytes: int = 0,
    ) -> str | None:
        """None when a node of the pool can take one such pod now; else one line naming what
        no node has, e.g. ``no L4 node can hold the pod: it requests 6 CPU and 19Gi memory; the
        most any node has free is 4 CPU and 16Gi memory (ephemeral storage: ok)``."""
        _check_replica_size(gpus_per_replica)
        _check_pod_size(cpu_millicores, memory_bytes, ephemeral_bytes)
        pool = self.pool(gpu_name)
        if pool is None:
            gpu, profile = _type_key(gpu_name, self.catalog)
            return f"the cluster has no {_type_name(gpu, profile or None)} nodes"
        return _shortfall(
            pool, Requests(gpus_per_replica, cpu_millicores, memory_bytes, ephemeral_bytes)
        )


# ------------------------------------------------------------------------- from cluster objects


def inventory_from_objects(
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    catalog: GpuCatalog | None = None,
) -> Inventory:
    """Inventory from Node and Pod objects as the Kubernetes API returns them (camelCase dicts),
    GPUs recognised in ``catalog`` (None: the packaged one).

    Every non-terminated pod bound to a node takes its requests (GPUs, CPU, memory, ephemeral
    storage) off that node, whether it asks for GPUs or not."""
    catalog = catalog or default_catalog()
    records = [r for r in (node_record(obj, catalog) for obj in nodes) if r is not None]
    return inventory_from_records(records, _requested_by_node(pods), catalog=catalog)


@dataclass(frozen=True)
class UnrecognisedNode:
    """A node with allocatable GPUs whose product the catalog does not know."""

    name: str
    product_label: str
    product_label_key: str
    gpus_allocatable: int


def inter_node_gbps(value: str | None) -> float | None:
    """A node's :data:`INTER_NODE_LABEL` value in Gb/s, or None when absent or not a number in
    (0, :data:`MAX_INTER_NODE_GBPS`]."""
    if value is None:
        return None
    try:
        figure = float(value)
    except ValueError:
        return None
    return figure if 0 < figure <= MAX_INTER_NODE_GBPS else None


def node_record(
    obj: Mapping[str, Any], catalog: GpuCatalog | None = None
) -> NodeGpus | UnrecognisedNode | None:
    """One Node object, parsed: its GPUs (none requested yet), or None without GPUs. The GPU is
    recognised in ``catalog`` (None: the packaged one); the record names it as that catalog does,
    so an inventory assembled from records takes the same catalog.

    CPU, memory and ephemeral storage come from ``status.allocatable``; one the node does not
    report is None (not a constraint). Raises ValueError on a malformed quantity. A watch can
    keep these per node and assemble an inventory with ``inventory_from_records`` without
    parsing the objects again.
    """
    metadata = _mapping(obj.get("metadata"))
    name = str(metadata.get("name", ""))
    status = _mapping(obj.get("status"))
    allocatable = _mapping(status.get("allocatable"))
    gpus = _count(allocatable.get(GPU_RESOURCE, 0), f"node {name!r}: {GPU_RESOURCE}")
    if gpus == 0:
        return None
    labels = {str(k): str(v) for k, v in _mapping(metadata.get("labels")).items()}
    found = _gpu_of(labels, catalog or default_catalog())
    if isinstance(found, _Unrecognised):
        return UnrecognisedNode(name, found.product, found.key, gpus)
    spec = _mapping(obj.get("spec"))
    schedulable, reason = _schedulability(spec, status)
    cpu, memory, ephemeral = (
        allocatable.get(CPU_RESOURCE),
        allocatable.get(MEMORY_RESOURCE),
        allocatable.get(EPHEMERAL_RESOURCE),
    )
    return NodeGpus(
        name=name,
        gpu=found.gpu.name,
        product_label=found.product,
        product_label_key=found.key,
        mig_profile=found.mig_profile,
        memory_gib_override=found.memory_gib,
        gpus_allocatable=gpus,
        cpu_allocatable_millicores=None
        if cpu is None
        else _millicores(cpu, f"node {name!r}: {CPU_RESOURCE}"),
        memory_allocatable_bytes=None
        if memory is None
        else _whole(memory, f"node {name!r}: {MEMORY_RESOURCE}"),
        ephemeral_storage_allocatable_bytes=None
        if ephemeral is None
        else _whole(ephemeral, f"node {name!r}: {EPHEMERAL_RESOURCE}"),
        taints=tuple(_taint(t) for t in spec.get("taints") or ()),
        labels={sys.intern(k): sys.intern(v) for k, v in labels.items()},
        schedulable=schedulable,
        unschedulable_reason=reason,
    )


def pod_requests(obj: Mapping[str, Any]) -> tuple[str, Requests] | None:
    """(node name, requests the scheduler counts) of a pod bound to a node and not terminated
    that requests anything (GPUs, CPU, memory or ephemeral storage); None otherwise.
    Raises ValueError on a malformed quantity."""
    spec = _mapping(obj.get("spec"))
    node = spec.get("nodeName")
    phase = _mapping(obj.get("status")).get("phase")
    if not node or phase in _TERMINATED_PHASES:
        return None
    requests = pod_spec_requests(spec, _mapping(obj.get("metadata")).get("name", ""))
    return (str(node), requests) if requests != NO_REQUESTS else None


def pod_gpu_request(obj: Mapping[str, Any]) -> tuple[str, int] | None:
    """(node name, GPUs the scheduler counts) of a scheduled, non-terminated pod that requests
    GPUs; None otherwise. Raises ValueError on a malformed quantity."""
    found = pod_requests(obj)
    if found is None or not found[1].gpus:
        return None
    return found[0], found[1].gpus


def pod_spec_requests(spec: Mapping[str, Any], pod_name: object = "") -> Requests:
    """A pod's requests as the scheduler's NodeResourcesFit counts them.

    Per resource: max(app containers + sidecars, each init container + the sidecars started
    before it) — sidecars are init containers with ``restartPolicy: Always`` — then pod-level
    ``spec.resources.requests`` (CPU and memory) where set, plus ``spec.overhead``. A container's
    request defaults to its limit (as the API server defaults it); without either it counts 0.
    Raises ValueError on a malformed or negative quantity.
    """
    gpus = cpu = memory = ephemeral = 0
    for container in spec.get("containers") or ():
        asked = _container_requests(container, pod_name)
        if asked is not None:
            gpus += asked[0]
            cpu += asked[1]
            memory += asked[2]
            ephemeral += asked[3]
    total = [gpus, cpu, memory, ephemeral]
    init_containers = spec.get("initContainers")
    if init_containers:
        sidecars = [0, 0, 0, 0]
        init_peak = [0, 0, 0, 0]
        for container in init_containers:
            asked = _container_requests(container, pod_name) or (0, 0, 0, 0)
            if _mapping(container).get("restartPolicy") == "Always":
                for i in range(4):
                    sidecars[i] += asked[i]
                    init_peak[i] = max(init_peak[i], sidecars[i])
            else:
                for i in range(4):
                    init_peak[i] = max(init_peak[i], sidecars[i] + asked[i])
        total = [max(total[i] + sidecars[i], init_peak[i]) for i in range(4)]
    pod_level = _mapping(_mapping(spec.get("resources")).get("requests"))
    overhead = _mapping(spec.get("overhead"))
    if pod_level or overhead:
        where = f"pod {pod_name!r}"
        for i, resource in ((1, CPU_RESOURCE), (2, MEMORY_RESOURCE)):
            if pod_level.get(resource) is not None:
                total[i] = _quantity_of(i, pod_level[resource], f"{where}: {resource}")
        for i, resource in ((1, CPU_RESOURCE), (2, MEMORY_RESOURCE), (3, EPHEMERAL_RESOURCE)):
            if overhead.get(resource) is not None:
                total[i] += _quantity_of(i, overhead[resource], f"{where}: overhead {resource}")
    return Requests(total[0], total[1], total[2], total[3])


_RESOURCE_ORDER = (GPU_RESOURCE, CPU_RESOURCE, MEMORY_RESOURCE, EPHEMERAL_RESOURCE)


def _container_requests(container: Any, pod_name: object) -> tuple[int, int, int, int] | None:
    """(GPUs, CPU millicores, memory bytes, ephemeral bytes) a container requests; None when it
    states no resources. Called for every pod event: no work for what is not there."""
    resources = _mapping(_mapping(container).get("resources"))
    if not resources:
        return None
    requests = _mapping(resources.get("requests"))
    limits = _mapping(resources.get("limits"))
    out = [0, 0, 0, 0]
    for i, resource in enumerate(_RESOURCE_ORDER):
        value = requests.get(resource)
        if value is None:
            value = limits.get(resource)  # the API server defaults a missing request to the limit
        if value is not None:
            try:
                out[i] = _cached_quantity(i, value)
            except (ValueError, TypeError):
                out[i] = _quantity_of(i, value, f"pod {pod_name!r}: {resource}")  # the message
    return out[0], out[1], out[2], out[3]


@lru_cache(maxsize=1024, typed=True)
def _cached_quantity(index: int, value: str | int | float) -> int:
    """:func:`_quantity_of` for the few distinct quantities pods use (``100m``, ``16Gi``)."""
    return _quantity_of(index, value, "")


def _quantity_of(index: int, value: Any, where: str) -> int:
    """GPUs (index 0) in whole numbers, CPU (1) in millicores, bytes otherwise (rounded up)."""
    if index == 0:
        return _count(value, where)
    if index == 1:
        return _millicores(value, where)
    return _whole(value, where)


def inventory_from_records(
    nodes: Iterable[NodeGpus | UnrecognisedNode],
    requested: Mapping[str, int | Requests],
    copies: dict[tuple[str, Requests], tuple[NodeGpus, NodeGpus]] | None = None,
    catalog: GpuCatalog | None = None,
) -> Inventory:
    """Inventory from parsed nodes and what pods request on each node (by node name): a
    :class:`Requests`, or a bare number of GPUs. ``catalog`` (None: the packaged one) is the one
    the records were made with (:func:`node_record`); the inventory carries it.

    ``copies``, kept by a caller that builds inventories again and again from the same records,
    remembers each node's copy with given requests so that it is made once."""
    known: list[NodeGpus] = []
    unknown: dict[tuple[str, str], list[UnrecognisedNode]] = {}
    for node in nodes:
        if isinstance(node, UnrecognisedNode):
            unknown.setdefault((node.product_label, node.product_label_key), []).append(node)
            continue
        taken = _as_requests(requested.get(node.name, NO_REQUESTS))
        if taken != node.requested:
            key = (node.name, taken)
            memo = copies.get(key) if copies is not None else None
            if memo is not None and memo[0] is node:
                node = memo[1]
            else:
                copy = node.model_copy(
                    update={
                        "gpus_requested": taken.gpus,
                        "cpu_requested_millicores": taken.cpu_millicores,
                        "memory_requested_bytes": taken.memory_bytes,
                        "ephemeral_storage_requested_bytes": taken.ephemeral_bytes,
                    }
                )
                if copies is not None:
                    copies[key] = (node, copy)
                node = copy
        known.append(node)
    catalog = catalog or default_catalog()
    return Inventory(
        pools=_pools(known, {}, catalog),
        catalog=catalog,
        unknown=tuple(
            UnknownGpuNodes(
                product_label=product,
                product_label_key=key,
                nodes=tuple(sorted(n.name for n in entries)),
                gpus_allocatable=sum(n.gpus_allocatable for n in entries),
            )
            for (product, key), entries in sorted(unknown.items())
        ),
    )


def place_pending(
    nodes: Iterable[NodeGpus | UnrecognisedNode],
    requested: Mapping[str, int | Requests],
    pending: Iterable[tuple[str, int] | tuple[str, Requests]],
) -> dict[str, Requests]:
    """What pods request per node once pods that exist but are not bound yet are placed.

    ``requested`` is what bound pods request per node (a :class:`Requests` or a number of
    GPUs). ``pending`` holds (GPU product label, GPUs per pod) or (product, :class:`Requests`
    of one pod), one entry per pod a Deployment wants and the scheduler has not placed yet. Each
    goes to the schedulable node of that product with the most free GPUs that can hold the whole
    pod (GPUs, CPU, memory, ephemeral storage; ties to the node listed first), as the
    scheduler's least-allocated scoring would roughly put it; a pod that fits nowhere takes
    nothing. Without this, models planned in quick succession would all count the same free
    GPUs.
    """
    out = {name: _as_requests(value) for name, value in requested.items()}
    by_product: dict[str, list[NodeGpus]] = {}
    for node in nodes:
        if isinstance(node, NodeGpus) and node.schedulable:
            by_product.setdefault(node.product_label, []).append(node)
    # One max-heap of free GPUs per product, built when the product is first asked for. The top
    # node is the candidate; when CPU, memory or storage keep it from taking the pod, the next
    # ones are tried (and put back), so a pod goes where a scan over every node would put it.
    heaps: dict[str, list[tuple[int, int, NodeGpus]]] = {}
    for product, ask in pending:
        need = _as_requests(ask)
        if need.gpus <= 0:
            continue
        heap = heaps.get(product)
        if heap is None:
            heap = [
                (-(n.gpus_allocatable - out.get(n.name, NO_REQUESTS).gpus), i, n)
                for i, n in enumerate(by_product.get(product, ()))
            ]
            heapq.heapify(heap)
            heaps[product] = heap
        passed: list[tuple[int, int, NodeGpus]] = []
        while heap and -heap[0][0] >= need.gpus:
            _, i, node = heap[0]
            taken = out.get(node.name, NO_REQUESTS)
            if _rest_fits(node, taken, need):
                taken = taken.plus(need)
                out[node.name] = taken
                heapq.heapreplace(heap, (-(node.gpus_allocatable - taken.gpus), i, node))
                break
            passed.append(heapq.heappop(heap))
        for entry in passed:
            heapq.heappush(heap, entry)
    return out


def _rest_fits(node: NodeGpus, taken: Requests, need: Requests) -> bool:
    """Whether the node has the pod's CPU, memory and ephemeral storage free (GPUs aside)."""
    for allocatable, used, ask in (
        (node.cpu_allocatable_millicores, taken.cpu_millicores, need.cpu_millicores),
        (node.memory_allocatable_bytes, taken.memory_bytes, need.memory_bytes),
        (node.ephemeral_storage_allocatable_bytes, taken.ephemeral_bytes, need.ephemeral_bytes),
    ):
        if ask > 0 and allocatable is not None and allocatable - used < ask:
            return False
    return True


def _as_requests(value: int | Requests) -> Requests:
    return value if isinstance(value, Requests) else Requests(gpus=value)


@dataclass(frozen=True)
class _Recognised:
    gpu: GpuSpec
    product: str
    key: str
    mig_profile: str | None = None
    memory_gib: float | None = None


@dataclass(frozen=True)
class _Unrecognised:
    product: str
    key: str


def _gpu_of(labels: Mapping[str, str], catalog: GpuCatalog) -> _Recognised | _Unrecognised:
    """The node's GPU from its labels: GFD product first, then cloud labels."""
    product = labels.get(GFD_PRODUCT_LABEL, "").strip()
    if product:
        return _from_gfd(product, labels, catalog)
    gke = labels.get(GKE_ACCELERATOR_LABEL, "").strip()
    if gke:
        return _from_gke(gke, labels, catalog)
    for key in (KARPENTER_GPU_NAME_LABEL, EKS_GPU_NAME_LABEL):
        value = labels.get(key, "").strip()
        if value:
            return _from_aws(value, key, labels, catalog)
    return _Unrecognised(product="", key="")


def _from_gfd(
    product: str, labels: Mapping[str, str], catalog: GpuCatalog
) -> _Recognised | _Unrecognised:
    key = GFD_PRODUCT_LABEL
    mig = _MIG_SUFFIX.match(product)
    parent, profile = (mig["parent"], mig["profile"]) if mig else (product, None)
    gpu = catalog.find(parent)
    if gpu is None:
        return _Unrecognised(product=product, key=key)
    if profile is None:
        return _Recognised(gpu=gpu, product=product, key=key)
    memory_gib = _mib_label_gib(labels.get(GFD_MEMORY_LABEL)) or _profile_memory_gib(profile)
    return _Recognised(
        gpu=gpu, product=product, key=key, mig_profile=profile, memory_gib=memory_gib
    )


def _from_gke(
    value: str, labels: Mapping[str, str], catalog: GpuCatalog
) -> _Recognised | _Unrecognised:
    key = GKE_ACCELERATOR_LABEL
    name = _GKE_ACCELERATORS.get(value.lower())
    gpu = catalog.find(name) if name else None
    if gpu is None:
        bare = re.sub(r"^(nvidia-)?(tesla-)?", "", value.lower())
        gpu = catalog.find(bare)
    if gpu is None:
        return _Unrecognised(product=value, key=key)
    profile = labels.get(GKE_PARTITION_LABEL, "").strip() or None
    if profile is None:
        return _Recognised(gpu=gpu, product=value, key=key)
    return _Recognised(
        gpu=gpu,
        product=value,
        key=key,
        mig_profile=profile,
        memory_gib=_profile_memory_gib(profile),
    )


def _from_aws(
    value: str, key: str, labels: Mapping[str, str], catalog: GpuCatalog
) -> _Recognised | _Unrecognised:
    lowered = value.lower()
    name = _AWS_GPU_NAMES.get(lowered, lowered)
    memory_gib = _mib_label_gib(labels.get(KARPENTER_GPU_MEMORY_LABEL))
    if lowered == "a100" and memory_gib is not None and memory_gib > 60:
        name = "A100-80GB-SXM"  # p4de
    gpu = catalog.find(name)
    if gpu is None:
        return _Unrecognised(product=value, key=key)
    return _Recognised(gpu=gpu, product=value, key=key)


def _mib_label_gib(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit() or int(value) == 0:
        return None
    return int(value) / 1024


def _profile_memory_gib(profile: str) -> float | None:
    """A MIG profile's memory from its name (``3g.40gb`` → 40 GB), when no label gives it."""
    match = re.search(r"(\d+)gb", profile, re.IGNORECASE)
    return int(match[1]) * 10**9 / 2**30 if match else None


def _schedulability(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[bool, str]:
    """(schedulable, reason). A node with no Ready condition yet counts as ready."""
    reasons: list[str] = []
    if spec.get("unschedulable"):
        reasons.append("cordoned")
    for condition in status.get("conditions") or ():
        condition = _mapping(condition)
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            reasons.append("NotReady")
    return (not reasons, ", ".join(reasons))


def _taint(obj: Any) -> Taint:
    taint = _mapping(obj)
    return Taint(
        key=str(taint.get("key", "")),
        value=str(taint.get("value") or ""),
        effect=str(taint.get("effect", "")),
    )


def _requested_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, Requests]:
    requested: dict[str, Requests] = {}
    for pod in pods:
        found = pod_requests(pod)
        if found is not None:
            node, asked = found
            requested[node] = requested.get(node, NO_REQUESTS).plus(asked)
    return requested


def _mapping(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:  # the usual case, without the slower ABC check
        return value
    return value if isinstance(value, Mapping) else {}


# --------------------------------------------------------------------------------- quantities


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``64Gi``, ``1e9``, ``8``) as a number."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
        if suffix[:1] in ("e", "E") and suffix[1:]:
            return number.scaleb(int(suffix[1:]))
    except (InvalidOperation, ValueError) as err:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from err
    return number * _SUFFIX_FACTORS[suffix]


def _checked(value: Any, where: str) -> Decimal:
    try:
        quantity = parse_quantity(value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    if quantity < 0:
        raise ValueError(f"{where}: negative quantity {value!r}")
    return quantity


def _count(value: Any, where: str) -> int:
    quantity = _checked(value, where)
    if quantity != quantity.to_integral_value():
        raise ValueError(f"{where}: GPUs come in whole numbers, got {value!r}")
    return int(quantity)


def _millicores(value: Any, where: str) -> int:
    return math.ceil(_checked(value, where) * 1000)


def _whole(value: Any, where: str) -> int:
    return math.ceil(_checked(value, where))


# ------------------------------------------------------------------------------- pools


def _check_replica_size(gpus_per_replica: int) -> None:
    if gpus_per_replica < 1:
        raise ValueError(f"a replica needs at least 1 GPU, got {gpus_per_replica}")


def _check_pod_size(cpu_millicores: int, memory_bytes: int, ephemeral_bytes: int) -> None:
    for what, value in (
        ("cpu_millicores", cpu_millicores),
        ("memory_bytes", memory_bytes),
        ("ephemeral_bytes", ephemeral_bytes),
    ):
        if value < 0:
            raise ValueError(f"{what} must be ≥ 0, got {value}")


def _free(allocatable: int | None, requested: int) -> int | None:
    return None if allocatable is None else max(0, allocatable - requested)


_SHORTFALL_NAMES = ("GPUs", "CPU", "memory", "ephemeral storage")


def _shortfall(pool: GpuPool, need: Requests) -> str | None:
    """Why no node of the pool takes a pod of ``need`` now (one line), or None when one does."""
    nodes = [n for n in pool.nodes if n.schedulable]
    if not nodes:
        return f"no {pool.name} node takes new pods: all {pool.node_count} are cordoned or NotReady"
    frees = [
        (n.gpus_free, n.cpu_free_millicores, n.memory_free_bytes, n.ephemeral_storage_free_bytes)
        for n in nodes
    ]
    asks = tuple(need)

    def fits(free: int | None, ask: int) -> bool:
        return ask <= 0 or free is None or free >= ask

    if any(all(fits(f[i], asks[i]) for i in range(4)) for f in frees):
        return None
    most: list[int | None] = []
    for i in range(4):
        values = [f[i] for f in frees]
        most.append(None if any(v is None for v in values) else max(v or 0 for v in values))
    short = [i for i in range(4) if not fits(most[i], asks[i])]
    asked = [i for i in range(4) if asks[i] > 0]
    head = f"no {pool.name} node can hold the pod: it requests "
    if short:
        ok = [_SHORTFALL_NAMES[i] for i in range(1, 4) if i not in short]
        tail = f" ({_and(ok)}: ok)" if ok else ""
        return (
            head
            + _and([_amount(i, asks[i], up=True) for i in short])
            + "; the most any node has free is "
            + _and([_amount(i, most[i] or 0, up=False) for i in short])
            + tail
        )
    closest = max(
        range(len(nodes)), key=lambda k: (sum(fits(frees[k][i], asks[i]) for i in asked), -k)
    )
    has = [
        _amount(i, frees[closest][i] or 0, up=False) for i in asked if frees[closest][i] is not None
    ]
    return (
        head
        + _and([_amount(i, asks[i], up=True) for i in asked])
        + f"; no node has all of it free at once (the closest, {nodes[closest].name}, has "
        + _and(has)
        + ")"
    )


def _amount(index: int, value: int, *, up: bool) -> str:
    """A readable amount of GPUs (0), CPU millicores (1), memory (2) or storage (3) bytes;
    rounded up for what a pod asks, down for what a node has."""
    if index == 0:
        return f"{value} GPU" + ("" if value == 1 else "s")
    if index == 1:
        text = f"{Decimal(value) / 1000:f}"
        return (text.rstrip("0").rstrip(".") if "." in text else text) + " CPU"
    noun = _SHORTFALL_NAMES[index]
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value >= size:
            tenths = value * 10 / size
            tenths = math.ceil(tenths) if up else math.floor(tenths)
            number = f"{tenths // 10}" if tenths % 10 == 0 else f"{tenths / 10:.1f}"
            return f"{number}{unit} {noun}"
    return f"{value} bytes {noun}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _type_name(gpu: str, mig_profile: str | None) -> str:
    return f"{gpu}-MIG-{mig_profile}" if mig_profile else gpu


def _type_key(name: str, catalog: GpuCatalog) -> tuple[str, str]:
    """(catalog name, lower-case MIG profile or '') for a GPU type name; raises GpuError for a
    GPU ``catalog`` does not know."""
    mig = _MIG_SUFFIX.match(name.strip())
    if mig:
        return catalog.resolve(mig["parent"]).name, mig["profile"].lower()
    return catalog.resolve(name).name, ""


def _catalog_price(spec: GpuSpec, mig_profile: object) -> float:
    """The catalog's $/GPU-hour; a MIG slice pays its share of compute slices (1g of 7g: 1/7)."""
    if not isinstance(mig_profile, str) or not mig_profile:
        return spec.price_per_hour_usd
    slices = _leading_int(mig_profile)
    full = max((_leading_int(p) for p in spec.mig_profiles), default=7) or 7
    if not slices:
        return spec.price_per_hour_usd
    return spec.price_per_hour_usd * min(slices, full) / full


def _leading_int(profile: str) -> int:
    match = re.match(r"(\d+)g", profile)
    return int(match[1]) if match else 0


def _pools(
    nodes: Iterable[NodeGpus], prices: Mapping[str, float], catalog: GpuCatalog
) -> tuple[GpuPool, ...]:
    """Group nodes by GPU type; pools in ``catalog``'s order, nodes by name."""
    groups: dict[tuple[str, str], list[NodeGpus]] = {}
    for node in nodes:
        groups.setdefault((node.gpu, node.mig_profile or ""), []).append(node)
    order = {gpu.name: i for i, gpu in enumerate(catalog.gpus)}
    pools: list[GpuPool] = []
    for gpu, profile in sorted(groups, key=lambda k: (order.get(k[0], len(order)), k)):
        members = sorted(groups[gpu, profile], key=lambda n: n.name)
        products = Counter(n.product_label for n in members)
        product = min(products, key=lambda p: (-products[p], p))
        overrides = [n.memory_gib_override for n in members if n.memory_gib_override]
        pools.append(
            GpuPool(
                gpu=gpu,
                product_label=product,
                mig_profile=profile or None,
                memory_gib_override=min(overrides) if overrides else None,
                price_per_hour_usd=prices.get(_type_name(gpu, profile or None)),
                nodes=tuple(members),
                catalog=catalog,
            )
        )
    return tuple(pools)


# -------------------------------------------------------------------------------- offline file


class _FilePool(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40, description="Pool name"
    )
    gpu: str = Field(description="GPU catalog name, alias or GFD product label")
    nodes: int = Field(ge=1, le=10_000, description="Number of nodes")
    gpus_per_node: int = Field(alias="gpusPerNode", ge=0, le=64, description="GPUs per node")
    free_gpus_per_node: tuple[int, ...] | None = Field(
        default=None, alias="freeGpusPerNode", description="Free GPUs on each node; default all"
    )
    price_per_hour_usd: float | None = Field(
        default=None, alias="pricePerHourUsd", ge=0, description="$/GPU-hour; default catalog"
    )
    cpu: str | int | float | None = Field(
        default=None, description="Allocatable CPU per node; left out: not a constraint"
    )
    memory: str | int | None = Field(
        default=None, description="Allocatable memory per node; left out: not a constraint"
    )
    ephemeral_storage: str | int | None = Field(
        default=None,
        alias="ephemeralStorage",
        description="Allocatable ephemeral-storage per node; left out: not a constraint",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of every node of the pool (with the GPU feature discovery product "
        "and family labels and kubernetes.io/hostname, which mmop sets)",
    )


class _InventoryFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pools: tuple[_FilePool, ...] = Field(min_length=1, description="Node pools")


def load_inventory(path: Path | str, catalog: GpuCatalog | None = None) -> Inventory:
    """Read an inventory file: ``pools: [{name, gpu, nodes, gpusPerNode, ...}]``, its GPUs
    named as ``catalog`` (None: the packaged one) knows them; the inventory carries it.

    The keys are those of the sandbox's pools.yaml (``cpu`` and ``memory`` allocatable per node,
    Kubernetes quantities), plus ``ephemeralStorage`` (allocatable per node), ``freeGpusPerNode``
    (one number per node), ``pricePerHourUsd`` ($/GPU-hour) and ``labels`` (every node's; what
    ``spec.placement.nodeSelector`` matches). A pool that leaves ``cpu``, ``memory`` or
    ``ephemeralStorage`` out is not limited by it. Nodes are named ``<pool>-<i>``, labelled with
    their name (``kubernetes.io/hostname``) and the GPU feature discovery product and family, and
    carry the ``nvidia.com/gpu`` NoSchedule taint, as the sandbox's nodes do. Raises
    :class:`InventoryError` (a ValueError) with one line naming the file and the entry
    (``inventory.yaml: pools[2].gpusPerNode: must be ≥ 1 (got 0)``) for an unreadable file,
    malformed YAML, unknown keys, unknown GPUs and inconsistent counts.
    """
    path = Path(path)
    catalog = catalog or default_catalog()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InventoryError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise InventoryError(f"{path}: malformed YAML{_yaml_problem(err)}") from None
    if not isinstance(data, Mapping):
        raise InventoryError(f"{path}: expected a mapping with a 'pools' list")
    try:
        parsed = _InventoryFile.model_validate(data)
    except ValidationError as err:
        raise InventoryError(f"{path}: {_validation_problem(err)}") from None
    nodes: list[NodeGpus] = []
    prices: dict[str, float] = {}
    names: set[str] = set()
    for entry in parsed.pools:
        where = f"{path}: pool {entry.name!r}"
        if entry.name in names:
            raise InventoryError(f"{where}: pool names must be unique")
        names.add(entry.name)
        try:
            gpu = catalog.resolve(entry.gpu)
        except GpuError as err:
            raise InventoryError(f"{where}: {_one_line(str(err))}") from None
        price = entry.price_per_hour_usd
        if price is not None and prices.setdefault(gpu.name, price) != price:
            raise InventoryError(f"{where}: another pool of {gpu.name} has a different price")
        free = entry.free_gpus_per_node
        if free is None:
            free = (entry.gpus_per_node,) * entry.nodes
        if len(free) != entry.nodes or any(not 0 <= f <= entry.gpus_per_node for f in free):
            raise InventoryError(
                f"{where}: freeGpusPerNode needs {entry.nodes} numbers from 0 to "
                f"{entry.gpus_per_node}, got {list(free)}"
            )
        try:
            cpu = None if entry.cpu is None else _millicores(entry.cpu, "cpu")
            memory = None if entry.memory is None else _whole(entry.memory, "memory")
            ephemeral = (
                None
                if entry.ephemeral_storage is None
                else _whole(entry.ephemeral_storage, "ephemeralStorage")
            )
        except ValueError as err:
            raise InventoryError(f"{where}: {err}") from None
        if entry.gpus_per_node == 0:
            continue  # a pool without GPUs, as the sandbox allows; not a GPU pool
        product = gpu.gfd_products[0] if gpu.gfd_products else gpu.name
        nodes.extend(
            NodeGpus(
                name=f"{entry.name}-{i}",
                gpu=gpu.name,
                product_label=product,
                product_label_key=GFD_PRODUCT_LABEL,
                gpus_allocatable=entry.gpus_per_node,
                gpus_requested=entry.gpus_per_node - free[i],
                cpu_allocatable_millicores=cpu,
                memory_allocatable_bytes=memory,
                ephemeral_storage_allocatable_bytes=ephemeral,
                taints=(Taint(key=GPU_TAINT_KEY, value="present", effect="NoSchedule"),),
                labels={
                    **entry.labels,
                    HOSTNAME_LABEL: f"{entry.name}-{i}",
                    GFD_PRODUCT_LABEL: product,
                    GFD_FAMILY_LABEL: gpu.architecture,
                },
            )
            for i in range(entry.nodes)
        )
    try:
        return Inventory(pools=_pools(nodes, prices, catalog), catalog=catalog)
    except ValidationError as err:  # pools merged from several entries that disagree
        raise InventoryError(f"{path}: {_validation_problem(err)}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` for a YAML error (one line)."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "cannot be parsed"
        return f"{where}: {_one_line(problem)}"
    return f": {_one_line(str(err))}"


_UNION_MEMBERS = frozenset({"str", "int", "float"})  # of the quantity fields' type


def _validation_problem(err: ValidationError) -> str:
    """The first problem of a validation error as ``pools[2].gpusPerNode: must be ≥ 1 (got 0)``
    (with how many more there are)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    errors = err.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] in ("too_short", "too_long") and any(
            other[: len(loc)] == loc and other != loc for other in locs
        ):
            continue  # a list left short by its entries' own errors: those say what is wrong
        members = [
            other[-1]
            for other in locs
            if other[:-1] == loc[:-1] and isinstance(other[-1], str) and other[-1] in _UNION_MEMBERS
        ]
        if len(members) > 1 and loc[-1] in members:  # one error per member of a union
            loc = loc[:-1]
            if any(seen == loc for seen, _ in problems):
                continue
            got = _shown(error.get("input"))
            problems.append((loc, f"must be a Kubernetes quantity such as 16Gi (got {got})"))
            continue
        problems.append((loc, _problem_text(error)))
    if not problems:
        return _one_line(str(err))
    loc, text = problems[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    more = len(problems) - 1
    extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where.lstrip('.') or 'file'}: {text}{extra}"


def _problem_text(error: Any) -> str:
    ctx = error.get("ctx") or {}
    got = _shown(error.get("input"))
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx.get('ge')} (got {got})"
    if kind == "less_than_equal":
        return f"must be ≤ {ctx.get('le')} (got {got})"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} entry (got {got})"
    if kind == "string_pattern_mismatch":
        return f"must be lower-case letters, digits and '-' (got {got})"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters (got {got})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (got {got})"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list (got {got})"
    if kind == "model_type":
        return f"must be a mapping (got {got})"
    message = _one_line(str(error.get("msg", "invalid")))
    return f"{message[:1].lower()}{message[1:]} (got {got})"


def _shown(value: Any) -> str:
    text = _one_line(repr(value) if isinstance(value, str) else str(value))
    return text if len(text) <= 60 else text[:57] + "..."


@lru_cache(maxsize=8)
def default_inventory(catalog: GpuCatalog | None = None) -> Inventory:
    """The shipped offline inventory (:data:`DEFAULT_INVENTORY_FILE`) in ``catalog`` (None: the
    packaged one). Kept per catalog: an inventory is immutable."""
    return load_inventory(DEFAULT_INVENTORY_FILE, catalog)
