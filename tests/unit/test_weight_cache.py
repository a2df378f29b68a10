"""The weight cache (spec.model.cache): the claim, the download Job, the replicas that wait for
it and read it offline; ephemeral storage for pods that download the weights themselves; the
start-up budget by path; CacheReady from the Job as the watches show it."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mmop.api import MultimodalModel
from mmop.crd import build_crd
from mmop.inventory import default_inventory, load_inventory
from mmop.planner import GIB_BYTES, Plan, PlanningError, plan
from mmop.render import (
    CACHE_MIN_GIB,
    FILL_BACKOFF_LIMIT,
    FILL_COMMAND,
    HF_HOME,
    JOB_NAME_MAX,
    RenderOptions,
    cache_objects,
    checkpoint_gib,
    predicted_startup_seconds,
    render,
    startup_budget_seconds,
)
from mmop.status import cache_condition, plan_status

ROOT = Path(__file__).resolve().parents[2]
UID = "0f6c9d2e-1111-4a5b-9c3d-222233334444"


def manifest(cache: dict[str, Any] | None = None, **model: Any) -> MultimodalModel:
    doc = yaml.safe_load((ROOT / "examples" / "qwen2.5-vl-7b.yaml").read_text())
    if cache is not None:
        doc["spec"]["model"]["cache"] = cache
    doc["spec"]["model"].update(model)
    return MultimodalModel.model_validate(doc)


def planned(m: MultimodalModel) -> Plan:
    return plan(m, default_inventory())


def objects(m: MultimodalModel, options: RenderOptions | None = None) -> list[dict[str, Any]]:
    return cache_objects("vl", "serving", UID, m.spec, planned(m), options or RenderOptions())


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objs]
    return found[0]


def engine(m: MultimodalModel, options: RenderOptions | None = None) -> dict[str, Any]:
    r = render("vl", "serving", UID, m.spec, planned(m), options or RenderOptions())
    pod: dict[str, Any] = r.deployment["spec"]["template"]["spec"]
    return pod


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ----------------------------------------------------------------------------- without a cache


def test_a_pod_that_downloads_its_weights_requests_the_ephemeral_storage_for_them() -> None:
    m = manifest()
    p = planned(m)
    pod = engine(m)
    requests = pod["containers"][0]["resources"]["requests"]
    expected = math.ceil(checkpoint_gib(p) * 1.1) + 10
    assert requests["ephemeral-storage"] == f"{expected}Gi" == p.resources.ephemeral_storage
    assert "ephemeral-storage" not in pod["containers"][0]["resources"]["limits"]  # no eviction
    assert {"name": "model-cache", "emptyDir": {}} in pod["volumes"]
    assert "HF_HUB_OFFLINE" not in env_of(pod["containers"][0])
    assert cache_objects("vl", "serving", UID, m.spec, p, RenderOptions()) == []


def test_nodes_without_room_for_the_download_are_not_planned_on_unless_the_weights_are_cached(
    tmp_path: Path,
) -> None:
    """A 7B checkpoint (~16 GiB) does not fit a node with 20 GiB of ephemeral storage once
    the pod must download it; read from a shared cache, the pod needs only its HOME caches."""
    inventory = tmp_path / "inventory.yaml"
    pool = {"name": "l4", "gpu": "L4", "nodes": 16, "gpusPerNode": 1}
    inventory.write_text(yaml.safe_dump({"pools": [{**pool, "ephemeralStorage": "20Gi"}]}))
    inv = load_inventory(inventory)
    with pytest.raises(PlanningError, match="ephemeral storage"):
        plan(manifest(), inv)
    cached = plan(manifest({"storageClassName": "nfs"}), inv)
    assert cached.resources.ephemeral_bytes == 10 * GIB_BYTES


# ----------------------------------------------------------------------------- with a cache


def test_the_claim_and_the_download_job_mmop_creates() -> None:
    m = manifest({"storageClassName": "nfs-rwx"}, revision="abc123", tokenSecretRef={"name": "hf"})
    p = planned(m)
    objs = objects(m, RenderOptions(cache_storage_class="operator-default"))
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "Job"]  # the order applied
    claim = by_kind(objs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "vl-weights"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-rwx"  # the spec's class wins
    size = max(CACHE_MIN_GIB, math.ceil(checkpoint_gib(p) * 1.2))
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{size}Gi"
    job = by_kind(objs, "Job")
    for obj in objs:  # owned by the model: deleted with it
        assert obj["metadata"]["ownerReferences"][0]["uid"] == UID
        assert obj["metadata"]["labels"]["mmop.dev/model"] == "vl"
    assert job["spec"]["backoffLimit"] == FILL_BACKOFF_LIMIT
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["image"] == m.spec.engine.image  # the serving image brings huggingface_hub's CLI
    assert c["command"][:4] == [*FILL_COMMAND, p.model, "--revision"]
    assert c["command"][4] == "abc123"
    assert {"name": "model-cache", "mountPath": HF_HOME} in c["volumeMounts"]  # writable
    env = env_of(c)
    assert env["HF_HOME"] == HF_HOME
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    # the CLI's daily version check would ask pypi.org, outside HF_ENDPOINT
    assert env["HF_HUB_DISABLE_UPDATE_CHECK"] == env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "vl-weights"}} in pod[
        "volumes"
    ]
    # no GPU, on any node; the job's pods are not the model's engine pods
    assert "nvidia.com/gpu" not in c["resources"]["requests"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "mmop.dev/model" not in job["spec"]["template"]["metadata"]["labels"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_operators_storage_class_is_the_default_and_the_clusters_after_it() -> None:
    m = manifest({})
    with_default = by_kind(
        objects(m, RenderOptions(cache_storage_class="rwx")), "PersistentVolumeClaim"
    )
    assert with_default["spec"]["storageClassName"] == "rwx"
    bare = by_kind(objects(m), "PersistentVolumeClaim")
    assert "storageClassName" not in bare["spec"]  # the cluster's default class
    sized = by_kind(objects(manifest({"sizeGiB": 500})), "PersistentVolumeClaim")
    assert sized["spec"]["resources"]["requests"]["storage"] == "500Gi"


def test_a_claim_the_user_names_is_used_and_never_created() -> None:
    m = manifest({"claimName": "team-weights"})
    objs = objects(m)
    assert [o["kind"] for o in objs] == ["Job"]
    job_pod = objs[0]["spec"]["template"]["spec"]
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "team-weights"}} in (
        job_pod["volumes"]
    )
    assert engine(m)["volumes"][-1]["persistentVolumeClaim"]["claimName"] == "team-weights"


def test_replicas_mount_the_cache_read_only_and_stay_offline() -> None:
    m = manifest({"storageClassName": "nfs"})
    pod = engine(m, RenderOptions(model_cache_pvc="shared"))  # the spec's cache wins
    (c,) = pod["containers"]
    assert {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "vl-weights", "readOnly": True},
    } in pod["volumes"]
    assert {"name": "model-cache", "mountPath": HF_HOME, "readOnly": True} in c["volumeMounts"]
    assert env_of(c)["HF_HUB_OFFLINE"] == "1"
    assert c["resources"]["requests"]["ephemeral-storage"] == "10Gi"  # HOME's caches only


def test_an_operator_wide_claim_holds_the_download_so_pods_request_only_home_caches() -> None:
    (c,) = engine(manifest(), RenderOptions(model_cache_pvc="shared"))["containers"]
    assert c["resources"]["requests"]["ephemeral-storage"] == "10Gi"
    assert "HF_HUB_OFFLINE" not in env_of(c)  # a claim pods write to, not a filled cache


def test_the_job_is_a_new_one_for_a_new_revision_or_image_and_the_same_otherwise() -> None:
    def job_name(m: MultimodalModel) -> str:
        return str(by_kind(objects(m), "Job")["metadata"]["name"])

    base = manifest({})
    assert job_name(base) == job_name(manifest({}))
    assert job_name(base) != job_name(manifest({}, revision="v2"))
    other_image = base.model_copy(
        update={
            "spec": base.spec.model_copy(
                update={
                    "engine": base.spec.engine.model_copy(
                        update={"image": "registry.example/vllm:custom"}
                    )
                }
            )
        }
    )
    assert job_name(base) != job_name(other_image)
    long = cache_objects("m" * 253, "ns", UID, base.spec, planned(base), RenderOptions())
    name = str(long[-1]["metadata"]["name"])
    assert len(name) <= JOB_NAME_MAX and "-fill-" in name
    assert len(str(long[0]["metadata"]["name"])) <= 253


def test_the_startup_budget_follows_the_path_of_the_weights() -> None:
    """A big checkpoint read from the shared volume starts sooner than one downloaded: the
    probe budget and status.plan.startupSeconds (what the autoscaler forecasts over) say so."""
    big = manifest().model_copy()
    p = planned(big).model_copy(
        update={"memory": planned(big).memory.model_copy(update={"weights_gib": 300.0})}
    )
    online = predicted_startup_seconds(p)
    cached = predicted_startup_seconds(p, cached=True)
    assert cached < online
    factor = RenderOptions(startup_budget_factor=10)
    assert startup_budget_seconds(p, factor, cached=True) < startup_budget_seconds(p, factor)
    assert plan_status(p, "h", cached=True)["startupSeconds"] == cached
    assert plan_status(p, "h")["startupSeconds"] == online


# ----------------------------------------------------------------------------- CacheReady


def job_record(**status: Any) -> dict[str, Any]:
    return {"conditions": [], "active": 0, "failed": 0, **status}


@pytest.mark.parametrize(
    ("job", "claim", "status", "reason", "words"),
    [
        (None, None, "False", "CacheFilling", "creating Job"),
        (job_record(), {"phase": "Pending"}, "False", "CacheFilling", "vl-weights is Pending"),
        (
            job_record(active=1, failed=2, startTime="2026-12-05T08:00:00Z"),
            {"phase": "Bound"},
            "False",
            "CacheFilling",
            f"downloading: .* \\(attempt 3 of {FILL_BACKOFF_LIMIT + 1}, started 2026-12-05",
        ),
        (
            job_record(
                conditions=[{"type": "Complete", "status": "True"}],
                completionTime="2026-12-05T08:10:00Z",
            ),
            {"phase": "Bound"},
            "True",
            "CacheFilled",
            "downloaded into claim vl-weights",
        ),
        (
            job_record(
                conditions=[
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                    }
                ]
            ),
            {"phase": "Bound"},
            "False",
            "CacheFillFailed",
            "BackoffLimitExceeded: Job has reached .* delete the Job to try again",
        ),
    ],
)
def test_cache_ready_follows_the_download_job(
    job: dict[str, Any] | None, claim: dict[str, Any] | None, status: str, reason: str, words: str
) -> None:
    m = manifest({})
    p = planned(m)
    cond = cache_condition("vl", m, p, "vl-fill-0123abcd", job, claim)
    assert (cond.type, cond.status, cond.reason) == ("CacheReady", status, reason)
    assert re.search(words, cond.message), cond.message
    assert p.model in cond.message


# ----------------------------------------------------------------------------- the API


def test_a_named_claim_with_a_class_or_size_is_refused_by_pydantic_and_the_crd() -> None:
    with pytest.raises(ValidationError, match="claimName names an existing claim"):
        manifest({"claimName": "c", "sizeGiB": 10})
    with pytest.raises(ValidationError, match="claimName names an existing claim"):
        manifest({"claimName": "c", "storageClassName": "x"})
    with pytest.raises(ValidationError):
        manifest({"claimName": "Not_A_Name"})
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cache = schema["properties"]["spec"]["properties"]["model"]["properties"]["cache"]
    assert set(cache["properties"]) == {"claimName", "storageClassName", "sizeGiB"}
    (rule,) = cache["x-kubernetes-validations"]
    assert "claimName" in rule["rule"] and rule["message"].startswith("model.cache:")
