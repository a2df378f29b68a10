"""The inventory the planner sees, assembled from the controller's watch indexes and rebuilt only
after they change. Pure: the indexes are plain mappings handed in; nothing here talks to the
cluster.

Index records: per GPU node a NodeGpus (or an UnrecognisedNode); per pod bound to a node
``(node, GPUs, CPU millicores, memory bytes, ephemeral bytes, (namespace, model) or None)``;
per mmop Deployment a mapping with its replicas, the pod's requests and the GPU product it is
pinned to.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmop.catalog import GpuCatalog, default_catalog
from mmop.inventory import (
    NO_REQUESTS,
    Inventory,
    NodeGpus,
    Requests,
    UnrecognisedNode,
    inventory_from_records,
    place_pending,
)


@dataclass
class InventoryCache:
    """The inventory assembled from the Node and Pod indexes, rebuilt only after they change.

    The index functions keep parsed records (a NodeGpus per GPU node; node, requests and model
    per pod bound to a node; replicas, pod requests and product per mmop Deployment) and bump
    ``version`` when a record changes; a deletion (kopf drops the record without calling the
    index function) shows as an index that shrank. Reconciles share one assembled inventory per
    change and only build a variant for a model whose own pods must be left out (a re-plan may
    reuse what the model holds). Pods a Deployment wants but the scheduler has not bound yet are
    placed as it would place them, so models planned in quick succession do not count the same
    free GPUs, CPU and memory.

    ``catalog`` is the GPU catalog the node records were made with (``node_record(body,
    catalog)``); the inventories it assembles carry it, so the planner resolves GPU names in it."""

    catalog: GpuCatalog = field(default_factory=default_catalog)

    version: int = 0
    built: tuple[int, int, int, int] = (-1, 0, 0, 0)
    base: Inventory | None = None
    records: list[NodeGpus | UnrecognisedNode] = field(default_factory=list)
    requested: dict[str, Requests] = field(default_factory=dict)
    by_model: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)
    pending: dict[tuple[str, str], list[tuple[str, Requests]]] = field(default_factory=dict)
    copies: dict[tuple[str, Requests], tuple[NodeGpus, NodeGpus]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def changed(self) -> None:
        self.version += 1

    def inventory(
        self,
        nodes: Mapping[str, Any],
        pods: Mapping[str, Any],
        exclude_model: tuple[str, str],
        deployments: Mapping[Any, Any] | None = None,
    ) -> Inventory:
        with self.lock:
            seen = (self.version, len(nodes), len(pods), len(deployments or {}))
            if self.built != seen or self.base is None:
                self._assemble(nodes, pods, deployments or {})
                self.built = seen
            held = self.by_model.get(exclude_model)
            if not held and exclude_model not in self.pending:
                assert self.base is not None
                return self.base
            without = dict(self.requested)
            for node, *asked in held or ():
                without[node] = without.get(node, NO_REQUESTS).minus(Requests(*asked[:4]))
            others = [p for k, claims in self.pending.items() if k != exclude_model for p in claims]
            return inventory_from_records(
                self.records,
                place_pending(self.records, without, others),
                self.copies,
                catalog=self.catalog,
            )

    def _assemble(
        self, nodes: Mapping[str, Any], pods: Mapping[str, Any], deployments: Mapping[Any, Any]
    ) -> None:
        self.records = [r for store in list(nodes.values()) for r in list(store)]
        if len(self.copies) > 16 * len(self.records) + 64:
            self.copies.clear()  # nodes came and went: forget the copies of old ones
        sums: dict[str, list[int]] = {}
        by_model: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for store in list(pods.values()):
            for record in list(store):
                node = record[0]
                total = sums.get(node)
                if total is None:
                    sums[node] = [record[1], record[2], record[3], record[4]]
                else:
                    total[0] += record[1]
                    total[1] += record[2]
                    total[2] += record[3]
                    total[3] += record[4]
                model = record[5]
                if model is not None:
                    mine = by_model.get(model)
                    if mine is None:
                        by_model[model] = [record]
                    else:
                        mine.append(record)
        requested = {node: Requests(*total) for node, total in sums.items()}
        pending: dict[tuple[str, str], list[tuple[str, Requests]]] = {}
        for key, store in list(deployments.items()):
            for dep in list(store):
                asked = int(dep.get("replicas") or 0) * int(dep.get("podsPerReplica") or 1)
                want = asked - len(by_model.get(key, ()))
                if want > 0 and dep.get("product") and dep.get("gpus"):
                    pod = Requests(
                        int(dep["gpus"]),
                        int(dep.get("cpu") or 0),
                        int(dep.get("memory") or 0),
                        int(dep.get("ephemeral") or 0),
                    )
                    pending[key] = [(str(dep["product"]), pod)] * want
        self.requested, self.by_model, self.pending = requested, by_model, pending
        every = [p for claims in pending.values() for p in claims]
        self.base = inventory_from_records(
            self.records,
            place_pending(self.records, requested, every),
            self.copies,
            catalog=self.catalog,
        )
