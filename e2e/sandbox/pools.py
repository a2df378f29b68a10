"""GPU node pools for the sandbox: a small YAML format and the Node objects it describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mmop.catalog import resolve_gpu

DEFAULT_POOLS = Path(__file__).parent / "pools.yaml"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "sandbox.mmop.dev/pool"
MAX_NODES = 1000  # the operator scale benchmark (bench/operator) runs 500


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    gpu: str = Field(description="GPU catalog name or GFD product label")
    nodes: int = Field(ge=1, le=250)
    gpus_per_node: int = Field(alias="gpusPerNode", ge=0, le=16)
    cpu: str = "32"
    memory: str = "256Gi"
    # Every kubelet reports its node's ephemeral storage; vLLM pods that download their weights
    # request it (the scheduler refuses them on a node that reports none).
    ephemeral_storage: str = Field(default="2000Gi", alias="ephemeralStorage")


class Pools(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[Pool] = Field(min_length=1)


def load_pools(path: Path = DEFAULT_POOLS) -> Pools:
    pools = Pools.model_validate(yaml.safe_load(path.read_text()))
    for pool in pools.pools:
        resolve_gpu(pool.gpu)  # fail early on an unknown GPU
    names = [p.name for p in pools.pools]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: pool names must be unique")
    if sum(p.nodes for p in pools.pools) > MAX_NODES:
        raise ValueError(f"{path}: at most {MAX_NODES} nodes in all")
    return pools


def node_objects(pools: Pools, pod_cidr_octet: int) -> list[dict[str, Any]]:
    """Node manifests; node i gets podCIDR 127.<octet>.<i>.0/24 so pod IPs are loopback. More
    than 254 nodes do not fit one /24 each: then node i gets a /26 (62 pod addresses), the
    (i % 4)-th quarter of 127.<octet>.<i // 4>.0/24."""
    nodes: list[dict[str, Any]] = []
    small = sum(p.nodes for p in pools.pools) > 254
    index = 0
    for pool in pools.pools:
        gpu = resolve_gpu(pool.gpu)
        major, _, minor = (gpu.compute_capability or "9.4").partition(".")
        for n in range(pool.nodes):
            index += 1
            if small:
                cidr = f"127.{pod_cidr_octet}.{index // 4}.{(index % 4) * 64}/26"
            else:
                cidr = f"127.{pod_cidr_octet}.{index}.0/24"
            labels = {
                "kubernetes.io/hostname": f"{pool.name}-{n}",
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                POOL_LABEL: pool.name,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": gpu.gfd_products[0] if gpu.gfd_products else gpu.name,
                "nvidia.com/gpu.memory": str(round(gpu.memory_gib * 1024)),
                "nvidia.com/gpu.count": str(pool.gpus_per_node),
                "nvidia.com/gpu.family": gpu.architecture,
                "nvidia.com/gpu.compute.major": major,
                "nvidia.com/gpu.compute.minor": minor,
            }
            resources = {
                "cpu": pool.cpu,
                "memory": pool.memory,
                "ephemeral-storage": pool.ephemeral_storage,
                "pods": "110",
                "nvidia.com/gpu": str(pool.gpus_per_node),
            }
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"{pool.name}-{n}",
                        "labels": labels,
                        "annotations": {
                            KWOK_ANNOTATION: "fake",
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                    },
                    "spec": {
                        "podCIDR": cidr,
                        "podCIDRs": [cidr],
                        "taints": [
                            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
                        ]
                        if pool.gpus_per_node
                        else [],
                    },
                    "status": {"allocatable": resources, "capacity": resources},
                }
            )
    return nodes
