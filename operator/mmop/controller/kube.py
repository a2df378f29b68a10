"""Kubernetes I/O for the operator: server-side apply, reads of one child, scale, status
patches, Events.

Everything the operator sends to the API server goes through ``Kube``; what it reads of the
cluster otherwise comes from kopf's watches (handlers.py's indexes). The core stays pure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mmop.api import API_GROUP as GROUP
from mmop.api import API_VERSION as VERSION
from mmop.crd import PLURAL
from mmop.render import LWS_API_VERSION, LWS_KIND

FIELD_MANAGER = "mmop"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# The children mmop applies, by (apiVersion, kind): their API paths.
APPLY_PATHS = {
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
    ("v1", "Service"): "/api/v1/namespaces/{namespace}/services/{name}",
    ("policy/v1", "PodDisruptionBudget"): (
        "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
    ),
    ("v1", "PersistentVolumeClaim"): (
        "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
    ),
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
    (LWS_API_VERSION, LWS_KIND): (
        f"/apis/{LWS_API_VERSION}/namespaces/{{namespace}}/leaderworkersets/{{name}}"
    ),
}
# The kinds whose replicas the autoscaler sets through their scale subresource.
SCALE_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
    LWS_KIND: f"/apis/{LWS_API_VERSION}/namespaces/{{namespace}}/leaderworkersets/{{name}}/scale",
}

CONFIG_MAP_PATH = "/api/v1/namespaces/{namespace}/configmaps/{name}"

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
        policy = client.PolicyV1Api(api_client)
        self._typed_read: dict[tuple[str, str], Callable[..., Any]] = {
            ("apps/v1", "Deployment"): self.apps.read_namespaced_deployment,
            ("v1", "Service"): self.core.read_namespaced_service,
            ("policy/v1", "PodDisruptionBudget"): policy.read_namespaced_pod_disruption_budget,
            ("v1", "PersistentVolumeClaim"): self.core.read_namespaced_persistent_volume_claim,
            ("batch/v1", "Job"): client.BatchV1Api(api_client).read_namespaced_job,
            (LWS_API_VERSION, LWS_KIND): self._read_group,
        }

    def _read_group(self, name: str, namespace: str, **kwargs: Any) -> Any:
        group, version = LWS_API_VERSION.split("/")
        return self.custom.get_namespaced_custom_object(
            group, version, namespace, "leaderworkersets", name, **kwargs
        )

    # ------------------------------------------------------------------ reads
    def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object of a child kind as JSON (None: it does not exist)."""
        from kubernetes.client.exceptions import ApiException

        read = self._typed_read[(api_version, kind)]
        try:
            response = read(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        out: dict[str, Any] = json.loads(response.data)
        return out

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data (None: no such ConfigMap)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        data = json.loads(response.data).get("data") or {}
        return {str(k): str(v) for k, v in data.items()}

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded (None: no such Secret or key). The caller checks that
        the operator may read this Secret; the value is never logged."""
        import base64

        from kubernetes.client.exceptions import ApiException

        try:
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        data = (json.loads(response.data).get("data") or {}).get(key)
        return base64.b64decode(data).decode("utf-8").strip() if data else None

    # ------------------------------------------------------------------ writes
    def apply_config_map(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply of one of the operator's own ConfigMaps (the calibration store)."""
        self.apply(obj, CONFIG_MAP_PATH)

    def apply(self, obj: Mapping[str, Any], path: str | None = None) -> None:
        """Server-side apply with mmop's field manager (force: mmop owns these fields; the
        reconcile never applies an object the model does not own).

        The body goes as UTF-8 JSON text: the client's own encoding escapes characters
        outside the Basic Multilingual Plane (an emoji in a user's value) as surrogate pairs,
        which JSON allows but the API server's YAML reader of apply patches refuses (400). The
        response is left raw: turning a Deployment back into the client's objects costs more
        CPU than rendering it."""
        from kubernetes.client.exceptions import ApiException

        meta = obj["metadata"]
        path = path or APPLY_PATHS[(str(obj["apiVersion"]), str(obj["kind"]))]
        method, url, headers, _, _ = self.api_client.param_serialize(
            method="PATCH",
            resource_path=path,
            path_params={"namespace": meta["namespace"], "name": meta["name"]},
            query_params=[("fieldManager", FIELD_MANAGER), ("force", True)],
            header_params={"Content-Type": APPLY_CONTENT_TYPE, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        response = self.api_client.call_api(method, url, header_params=headers, body=body)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        _release(response.response)
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

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's replicas (a LeaderWorkerSet's groups) through its scale
        subresource (the autoscaler's write)."""
        self._call(
            "PATCH",
            SCALE_PATHS[kind],
            namespace,
            name,
            {"spec": {"replicas": replicas}},
            "application/merge-patch+json",
            [("fieldManager", f"{FIELD_MANAGER}-autoscaler")],
        )

    def _call(
        self,
        method: str,
        path: str,
        namespace: str,
        name: str,
        obj: Mapping[str, Any],
        content_type: str,
        query: list[tuple[str, Any]] | None = None,
    ) -> None:
        """One write to ``path`` with a JSON body (``content_type``: a JSON patch or plain
        JSON); raises ApiException when refused."""
        from kubernetes.client.exceptions import ApiException

        method, url, headers, _, _ = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            path_params={"namespace": namespace, "name": name},
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        # a JSON content type: the client encodes the body itself
        response = self.api_client.call_api(method, url, header_params=headers, body=dict(obj))
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        _release(response.response)
        self.writes += 1

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
