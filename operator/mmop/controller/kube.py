"""Kubernetes I/O for the operator: reading the inventory, server-side apply, status patches.

Everything that talks to the API server lives here (and in handlers.py); the planner and the
renderer stay pure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mmop.inventory import Inventory, inventory_from_objects

FIELD_MANAGER = "mmop"
MODEL_LABEL = "mmop.dev/model"
GROUP, VERSION, PLURAL = "mmop.dev", "v1alpha1", "multimodalmodels"

log = logging.getLogger("mmop.controller")


class Kube:
    """A thin wrapper over the kubernetes client with the calls the operator makes."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core: Any = client.CoreV1Api(api_client)
        self.apps: Any = client.AppsV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.writes = 0  # API writes this process made (tests and benchmarks count them)
        self._dynamic: Any = None
        self._resources: dict[tuple[str, str], Any] = {}
        self._typed_patch: dict[tuple[str, str], Callable[..., Any]] = {
            ("apps/v1", "Deployment"): self.apps.patch_namespaced_deployment,
            ("v1", "Service"): self.core.patch_namespaced_service,
            ("policy/v1", "PodDisruptionBudget"): client.PolicyV1Api(
                api_client
            ).patch_namespaced_pod_disruption_budget,
        }

    # ------------------------------------------------------------------ reads
    def inventory(self, exclude_model: tuple[str, str] | None = None) -> Inventory:
        """GPU pools from nodes and pods; the excluded model's own pods do not hold GPUs (they
        are being re-planned)."""
        # Raw JSON: building the client's typed objects for hundreds of nodes and pods and
        # converting them back to dicts costs far more CPU than the planning itself.
        nodes = self._list_json(self.core.list_node)
        pods = self._list_json(
            self.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        )
        if exclude_model is not None:
            ns, name = exclude_model
            pods = [
                p
                for p in pods
                if not (
                    p["metadata"].get("namespace") == ns
                    and (p["metadata"].get("labels") or {}).get(MODEL_LABEL) == name
                )
            ]
        return inventory_from_objects(nodes, pods)

    @staticmethod
    def _list_json(call: Callable[..., Any], **kwargs: Any) -> list[dict[str, Any]]:
        response = call(_preload_content=False, **kwargs)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.apps.read_namespaced_deployment(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        out: dict[str, Any] = json.loads(response.data)
        return out

    # ------------------------------------------------------------------ writes
    def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply with mmop's field manager (force: mmop owns these fields)."""
        meta = obj["metadata"]
        typed = self._typed_patch.get((obj["apiVersion"], obj["kind"]))
        if typed is not None:
            # The typed call with the response left raw: turning a Deployment back into the
            # client's objects costs more CPU than rendering it.
            _release(
                typed(
                    meta["name"],
                    meta["namespace"],
                    dict(obj),
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",
                    _preload_content=False,
                )
            )
        else:
            resource = self._resource(obj["apiVersion"], obj["kind"])
            resource.server_side_apply(
                body=dict(obj),
                name=meta["name"],
                namespace=meta["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        self.writes += 1

    def event(self, obj: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``obj`` (kind: Normal or Warning) from component mmop."""
        import datetime as dt
        import socket

        meta = obj.get("metadata") or {}
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion") or f"{GROUP}/{VERSION}",
                "kind": obj.get("kind") or "MultimodalModel",
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        _release(self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False))
        self.writes += 1

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replicas through its scale subresource (the autoscaler's write)."""
        _release(
            self.apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                field_manager=f"{FIELD_MANAGER}-autoscaler",
                _preload_content=False,
            )
        )
        self.writes += 1

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            from kubernetes.dynamic import DynamicClient

            if self._dynamic is None:
                self._dynamic = DynamicClient(self.api_client)  # type: ignore[no-untyped-call]
            self._resources[key] = self._dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def update_status(
        self,
        namespace: str,
        name: str,
        changes: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        attempts: int = 5,
        current: Mapping[str, Any] | None = None,
    ) -> bool:
        """Read the MultimodalModel, compute the status fields to change from it, and patch them
        with its resourceVersion as a precondition, retrying on conflict: writers of different
        fields (reconcile, Deployment events) never undo each other. No write when nothing
        changes. `current`, the object as the caller last saw it, saves the first read.
        Returns whether it wrote."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(attempts):
            if attempt == 0 and current is not None:
                obj = current  # the caller's copy; a conflict sends us to the server's
            else:
                try:
                    obj = self.custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name
                    )
                except ApiException as err:
                    if err.status == 404:
                        return False
                    raise
            update = dict(changes(obj))
            if not update:
                return False
            body = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": update,
            }
            try:
                _release(
                    self.custom.patch_namespaced_custom_object_status(
                        GROUP, VERSION, namespace, PLURAL, name, body, _preload_content=False
                    )
                )
            except ApiException as err:
                if err.status == 409:
                    continue
                raise
            self.writes += 1
            return True
        raise RuntimeError(f"status of {namespace}/{name}: conflicts on every attempt")


def _release(response: Any) -> None:
    """Hand a raw (``_preload_content=False``) response's connection back to the pool: urllib3
    reuses a connection only once its response has been read to the end, so an unread one is
    closed and the next request pays a new TCP connection and TLS handshake."""
    response.drain_conn()
    response.release_conn()
