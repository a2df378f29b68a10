"""The weight cache in the sandbox (docs/caching.md): a real API server, scheduler, Job and
PersistentVolume controllers. The claim mmop creates binds to a ReadWriteMany volume, the
download Job's pod is scheduled, the model waits without a Deployment while the Job runs, and
once the pod succeeds the Job completes and the replicas appear, mounting the claim read-only.

kwok runs no container, so the test plays the download's outcome: it marks the Job's pod
Succeeded through the status subresource, as a kubelet would when `hf download` exits 0."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import (
    apply_manifest,
    condition,
    deployment,
    example,
    get_mm,
    in_process_operator,
    kubectl,
)

from mmop.render import FILL_COMMAND, HF_HOME


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState) -> Iterator[Any]:
    with in_process_operator(sandbox) as ctx:
        yield ctx


@pytest.fixture
def rwx_class(sandbox: SandboxState) -> Iterator[str]:
    """A storage class with one static ReadWriteMany volume (as an NFS export would give)."""
    name = f"rwx-{uuid.uuid4().hex[:6]}"
    objects = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "200Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": name,
                "persistentVolumeReclaimPolicy": "Retain",
                "nfs": {"server": "127.0.0.1", "path": "/weights"},
            },
        },
    ]
    kubectl(sandbox, "apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
            "items": objects}))  # fmt: skip
    try:
        yield name
    finally:
        kubectl(sandbox, "delete", "pv", name, "--wait=false", "--ignore-not-found")
        kubectl(sandbox, "delete", "storageclass", name, "--ignore-not-found")


def get(sandbox: SandboxState, namespace: str, *what: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(sandbox, "get", *what, "-n", namespace, "-o", "json")))


def cache_state(sandbox: SandboxState, namespace: str, name: str) -> tuple[Any, Any, Any]:
    mm = get_mm(sandbox, namespace, name)
    cache, ready = condition(mm, "CacheReady") or {}, condition(mm, "Ready") or {}
    return cache.get("reason"), ready.get("reason"), cache.get("message")


def test_replicas_wait_for_the_download_job_then_read_the_cache_read_only(
    sandbox: SandboxState, operator: Any, namespace: str, rwx_class: str
) -> None:
    doc = example("qwen2.5-vl-7b.yaml")
    name = doc["metadata"]["name"]
    doc["spec"]["model"]["cache"] = {"storageClassName": rwx_class}
    apply_manifest(sandbox, namespace, doc)

    # The claim binds to the ReadWriteMany volume; the Job is created; no Deployment yet.
    claim_name = f"{name}-weights"
    claim = wait_for(
        lambda: (
            (c := _maybe(sandbox, namespace, "pvc", claim_name))
            and c["status"].get("phase") == "Bound"
            and c
        ),
        "the weight-cache claim Bound",
        timeout=60,
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == rwx_class
    jobs = wait_for(
        lambda: get(sandbox, namespace, "jobs", "-l", f"mmop.dev/model={name}")["items"],
        "the download Job",
        timeout=60,
    )
    (job,) = jobs
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[: len(FILL_COMMAND) + 1] == [*FILL_COMMAND, get_mm(sandbox, namespace, name)[
        "status"]["plan"]["model"]]  # fmt: skip
    pod = wait_for(
        lambda: running_pods(sandbox, namespace, job),
        "the download Job's pod Running (scheduled on a GPU node it tolerates)",
        timeout=60,
    )[0]
    waiting = wait_for(
        lambda: (
            (s := cache_state(sandbox, namespace, name))[0] == "CacheFilling"
            and s[1] == "WaitingForCache"
            and s
        ),
        "CacheReady=False CacheFilling and Ready=False WaitingForCache",
        timeout=60,
    )
    assert job["metadata"]["name"] in waiting[2]
    assert deployment(sandbox, namespace, name) is None  # the replicas wait for the cache

    complete(sandbox, namespace, job, pod)
    dep = wait_for(lambda: deployment(sandbox, namespace, name), "the Deployment", timeout=60)
    pod_spec = dep["spec"]["template"]["spec"]
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": claim_name, "readOnly": True},
    } in pod_spec["volumes"]
    (engine,) = pod_spec["containers"]
    assert {"name": "model-cache", "mountPath": HF_HOME, "readOnly": True} in engine["volumeMounts"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in engine["env"]
    assert engine["resources"]["requests"]["ephemeral-storage"] == "10Gi"  # HOME's caches only
    wait_for(
        lambda: cache_state(sandbox, namespace, name)[0] == "CacheFilled",
        "CacheReady=True CacheFilled",
        timeout=60,
    )
    wait_for(
        lambda: (
            (condition(get_mm(sandbox, namespace, name), "Ready") or {}).get("status") == "True"
        ),
        "Ready=True: the replicas serve",
        timeout=120,
    )
    events = get(sandbox, namespace, "events", "--field-selector", f"involvedObject.name={name}")
    reasons = {e["reason"] for e in events["items"]}
    assert {"CacheFilling", "CacheFilled"} <= reasons, reasons

    # A new image is a new Job; the serving Deployment stays as it is until that Job is done.
    image = "registry.example/vllm-openai:v0.32.0-patched"
    kubectl(sandbox, "patch", "mmm", name, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"engine": {"image": image}}}))  # fmt: skip
    second = wait_for(
        lambda: [
            j
            for j in get(sandbox, namespace, "jobs", "-l", f"mmop.dev/model={name}")["items"]
            if j["metadata"]["name"] != job["metadata"]["name"]
        ],
        "a second download Job for the new image",
        timeout=60,
    )[0]
    assert second["spec"]["template"]["spec"]["containers"][0]["image"] == image
    wait_for(
        lambda: cache_state(sandbox, namespace, name)[0] == "CacheFilling",
        "CacheReady=False again",
        timeout=60,
    )
    held = deployment(sandbox, namespace, name)
    assert held is not None and held["spec"]["template"]["spec"]["containers"][0]["image"] != image
    assert (condition(get_mm(sandbox, namespace, name), "Ready") or {}).get("status") == "True"
    pod = wait_for(lambda: running_pods(sandbox, namespace, second), "its pod", timeout=60)[0]
    complete(sandbox, namespace, second, pod)
    wait_for(
        lambda: (
            (d := deployment(sandbox, namespace, name))
            and d["spec"]["template"]["spec"]["containers"][0]["image"] == image
        ),
        "the Deployment rolled to the new image once its cache was filled",
        timeout=60,
    )


def running_pods(sandbox: SandboxState, namespace: str, job: dict[str, Any]) -> list[Any]:
    found = get(sandbox, namespace, "pods", "-l", f"job-name={job['metadata']['name']}")
    return [p for p in found["items"] if p["status"].get("phase") == "Running"]


def complete(
    sandbox: SandboxState, namespace: str, job: dict[str, Any], pod: dict[str, Any]
) -> None:
    """The download succeeds (the kubelet's report, played by the test): the Job completes."""
    finished = "2026-01-01T00:00:00Z"
    status = {
        "status": {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [
                {
                    "name": "download",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": finished,
                            "finishedAt": finished,
                        }
                    },
                }
            ],
        }
    }
    kubectl(sandbox, "patch", "pod", pod["metadata"]["name"], "-n", namespace,
            "--subresource=status", "--type=merge", "-p", json.dumps(status))  # fmt: skip
    wait_for(
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in (_maybe(sandbox, namespace, "job", job["metadata"]["name"])["status"]).get(
                "conditions"
            )
            or []
        ),
        "the Job Complete",
        timeout=60,
    )


def _maybe(sandbox: SandboxState, namespace: str, kind: str, name: str) -> Any:
    """The object as JSON, or None while it does not exist."""
    import subprocess

    out = subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", "get", kind, name,
         "-n", namespace, "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return json.loads(out.stdout) if out.returncode == 0 else None
