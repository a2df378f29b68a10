"""The generated CRD on a real API server: it installs, the examples apply, bad input is refused at
`kubectl apply` with the words pydantic would use, and the subresources and columns work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from pydantic import ValidationError

from mmop.api import MultimodalModel
from mmop.crd import CRD_NAME

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# The same manager as the other integration tests that install crds/: applying the same file twice
# under one manager never conflicts, whichever test runs first.
FIELD_MANAGER = "mmop-tests"


def kubectl(
    sandbox: SandboxState, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sandbox.bin_dir["kubectl"], f"--kubeconfig={sandbox.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{' '.join(proc.args[2:])} failed: {proc.stderr.strip()}"
    return proc.stdout


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def crd(sandbox: SandboxState, api_client: Any) -> dict[str, Any]:
    """crds/ applied (idempotently: server-side, one field manager) and Established."""
    from kubernetes import client

    ok(
        kubectl(
            sandbox,
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            str(ROOT / "crds"),
        )
    )
    ext = client.ApiextensionsV1Api(api_client)

    def established() -> Any:
        found = ext.read_custom_resource_definition(CRD_NAME)
        conditions = {c.type: c.status for c in (found.status.conditions or [])}
        return found if conditions.get("Established") == "True" else None

    installed = wait_for(established, f"CRD {CRD_NAME} to be Established", timeout=60)
    # the REST mapping kubectl uses comes from discovery, published just after Established
    wait_for(
        lambda: kubectl(sandbox, "get", "multimodalmodels", "-A").returncode == 0,
        "multimodalmodels in discovery",
    )
    return api_client.sanitize_for_serialization(installed)  # type: ignore[no-any-return]


def test_crd_is_installed_with_its_names(crd: dict[str, Any], sandbox: SandboxState) -> None:
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "MultimodalModel",
        "multimodalmodels",
        ["mmm"],
    )
    ok(kubectl(sandbox, "get", "mmop", "-A"))  # the category resolves


def test_applying_the_crd_again_changes_nothing(crd: dict[str, Any], sandbox: SandboxState) -> None:
    before = crd["metadata"]["generation"]
    args = ("--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts")
    ok(kubectl(sandbox, "apply", *args, "-f", str(ROOT / "crds")))
    after = json.loads(ok(kubectl(sandbox, "get", "crd", CRD_NAME, "-o", "json")))
    assert after["metadata"]["generation"] == before


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_applies(
    path: Path, crd: dict[str, Any], sandbox: SandboxState, namespace: str
) -> None:
    out = ok(kubectl(sandbox, "apply", "--dry-run=server", "-n", namespace, "-f", str(path)))
    assert "created (server dry run)" in out


def test_unknown_fields_are_rejected(
    crd: dict[str, Any], sandbox: SandboxState, namespace: str
) -> None:
    doc = yaml.safe_dump(manifest("unknown", {"model": {"id": "x", "revison": "main"}}))
    # kubectl asks for strict field validation by default (no --validate flag needed) ...
    proc = kubectl(sandbox, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=doc)
    assert proc.returncode != 0
    assert 'unknown field "spec.model.revison"' in proc.stderr
    # ... and server-side apply refuses fields the schema does not declare
    proc = kubectl(
        sandbox, "apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-", stdin=doc
    )
    assert proc.returncode != 0
    assert ".spec.model.revison: field not declared in schema" in proc.stderr


def test_min_replicas_above_max_is_rejected_by_cel(
    crd: dict[str, Any], sandbox: SandboxState, namespace: str
) -> None:
    doc = manifest(
        "scaling", {"model": {"id": "x"}, "scaling": {"minReplicas": 5, "maxReplicas": 2}}
    )
    proc = kubectl(
        sandbox, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc)
    )
    assert proc.returncode != 0
    assert "spec.scaling.minReplicas" in proc.stderr
    assert "scaling.minReplicas must be <= scaling.maxReplicas" in proc.stderr


def test_out_of_range_value_is_rejected_by_the_schema(
    crd: dict[str, Any], sandbox: SandboxState, namespace: str
) -> None:
    doc = manifest("images", {"model": {"id": "x"}, "workload": {"images": {"perRequest": 100}}})
    proc = kubectl(
        sandbox, "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(doc)
    )
    assert proc.returncode != 0
    assert "spec.workload.images.perRequest" in proc.stderr
    assert "less than or equal to 64" in proc.stderr


def test_kubectl_explain_shows_the_descriptions(crd: dict[str, Any], sandbox: SandboxState) -> None:
    # the OpenAPI document is published a moment after the CRD is Established
    out = wait_for(
        lambda: kubectl(sandbox, "explain", "multimodalmodel.spec.workload.images").stdout,
        "kubectl explain multimodalmodel.spec.workload.images",
    )
    assert "perRequest" in out
    assert "Images per request, at most" in out
    assert "Quality floor in pixels: images may be downscaled to this" in out


# The API server and pydantic must agree: each spec is accepted by both or refused by both.
ACCEPTED, REFUSED = True, False
AGREEMENT: dict[str, tuple[bool, dict[str, Any]]] = {
    "defaults": (ACCEPTED, {}),
    "scaling-min-over-default-max": (REFUSED, {"scaling": {"minReplicas": 5}}),
    "scaling-min-equals-max": (ACCEPTED, {"scaling": {"minReplicas": 3, "maxReplicas": 3}}),
    "scaling-to-zero": (ACCEPTED, {"scaling": {"minReplicas": 0, "maxReplicas": 1}}),
    "preferred-below-min": (
        REFUSED,
        {"workload": {"contextLength": {"min": 8192, "preferred": 4096}}},
    ),
    "preferred-below-default-min": (REFUSED, {"workload": {"contextLength": {"preferred": 1024}}}),
    "preferred-null": (ACCEPTED, {"workload": {"contextLength": {"preferred": None}}}),
    "preferred-above-min": (
        ACCEPTED,
        {"workload": {"contextLength": {"min": 8192, "preferred": 32768}}},
    ),
    "context-too-short-for-default-tokens": (
        REFUSED,
        {"workload": {"contextLength": {"min": 512}}},
    ),
    "tokens-over-default-context": (
        REFUSED,
        {"workload": {"promptTokens": 4000, "outputTokens": 200}},
    ),
    "tokens-exactly-default-context": (
        ACCEPTED,
        {"workload": {"promptTokens": 4000, "outputTokens": 96}},
    ),
    "allowed-flags": (
        ACCEPTED,
        {
            "engine": {
                "extraArgs": ["--seed=3", "--chat-template", "/t.jinja", "--enable-prefix-caching"]
            }
        },
    ),
    # remote code is spec.model.trustRemoteCode, never an extra flag
    "remote-code-flag": (REFUSED, {"engine": {"extraArgs": ["--trust-remote-code"]}}),
    "remote-code-field": (ACCEPTED, {"model": {"id": "org/m", "trustRemoteCode": True}}),
    "planned-flag": (REFUSED, {"engine": {"extraArgs": ["--seed", "1", "--max-model-len=9"]}}),
    "short-flag": (REFUSED, {"engine": {"extraArgs": ["-tp", "2"]}}),
    "kv-usage-zero": (REFUSED, {"scaling": {"targets": {"kvCacheUsage": 0}}}),
    "kv-usage-one": (ACCEPTED, {"scaling": {"targets": {"kvCacheUsage": 1}}}),
    "audio-seconds-zero": (REFUSED, {"workload": {"audio": {"enabled": True, "maxSeconds": 0}}}),
    "bad-env-name": (REFUSED, {"engine": {"env": [{"name": "A-B", "value": "1"}]}}),
    "no-quantizations": (REFUSED, {"placement": {"quantizations": []}}),
    "unknown-quantization": (REFUSED, {"placement": {"quantizations": ["int3"]}}),
    "node-selector": (ACCEPTED, {"placement": {"nodeSelector": {"pool": "gpu"}}}),
    "node-selector-not-string": (REFUSED, {"placement": {"nodeSelector": {"pool": 1}}}),
    # R4: what no pod can carry is refused at apply
    "node-selector-label-syntax": (
        ACCEPTED,
        {"placement": {"nodeSelector": {"example.com/pool": "", "a.b-c_d": "A.b-1_2"}}},
    ),
    "node-selector-null-value-is-dropped": (ACCEPTED, {"placement": {"nodeSelector": {"a": None}}}),
    "node-selector-key-two-slashes": (REFUSED, {"placement": {"nodeSelector": {"a/b/c": "x"}}}),
    "node-selector-key-name-64": (REFUSED, {"placement": {"nodeSelector": {"n" * 64: "x"}}}),
    "node-selector-key-prefix-254": (
        REFUSED,
        {"placement": {"nodeSelector": {".".join(["p" * 63] * 3 + ["p" * 62]) + "/x": "x"}}},
    ),
    "node-selector-key-prefix-253": (
        ACCEPTED,
        {"placement": {"nodeSelector": {".".join(["p" * 63] * 3 + ["p" * 61]) + "/x": "x"}}},
    ),
    "node-selector-key-uppercase-prefix": (
        REFUSED,
        {"placement": {"nodeSelector": {"Example.com/x": "x"}}},
    ),
    "node-selector-value-64": (REFUSED, {"placement": {"nodeSelector": {"pool": "v" * 64}}}),
    "node-selector-value-syntax": (REFUSED, {"placement": {"nodeSelector": {"pool": "-v"}}}),
    "node-selector-17-labels": (
        REFUSED,
        {"placement": {"nodeSelector": {f"k{i}": "v" for i in range(17)}}},
    ),
    "token-secret-name-uppercase": (
        REFUSED,
        {"model": {"id": "org/model", "tokenSecretRef": {"name": "Hf"}}},
    ),
    "token-secret-key-dotdot": (
        REFUSED,
        {"model": {"id": "org/model", "tokenSecretRef": {"name": "hf", "key": "..k"}}},
    ),
    "token-secret-key-dot-prefixed": (
        ACCEPTED,
        {"model": {"id": "org/model", "tokenSecretRef": {"name": "hf.t", "key": ".k"}}},
    ),
    "empty-image": (REFUSED, {"engine": {"image": ""}}),
    "non-bmp-text": (
        ACCEPTED,
        {"engine": {"env": [{"name": "G", "value": "\U0001f600"}], "image": "r/\U0001f600"}},
    ),
    # R8: model ids are Hugging Face repo ids
    "model-id-path": (REFUSED, {"model": {"id": "/models/x"}}),
    "model-id-home": (REFUSED, {"model": {"id": "~/x"}}),
    "model-id-dot-dot-segment": (REFUSED, {"model": {"id": "Qwen/../Qwen/Qwen2-VL-7B-Instruct"}}),
    "model-id-double-slash": (REFUSED, {"model": {"id": "a//b"}}),
    "model-id-trailing-slash": (REFUSED, {"model": {"id": "a/b/"}}),
    "model-id-double-dash": (REFUSED, {"model": {"id": "org/a--b"}}),
    "model-id-git": (REFUSED, {"model": {"id": "org/a.git"}}),
    "model-id-part-97": (REFUSED, {"model": {"id": "org/" + "x" * 97}}),
    "model-id-parts-96": (ACCEPTED, {"model": {"id": "o" * 96 + "/" + "x" * 96}}),
    "model-id-name-only": (ACCEPTED, {"model": {"id": "gpt2"}}),
    "variant-id-path": (
        REFUSED,
        {"model": {"id": "org/model", "variants": [{"id": "./x", "quantization": "fp8"}]}},
    ),
    # R5: the API key is a Secret reference, never an argument
    "api-key-flag": (REFUSED, {"engine": {"extraArgs": ["--api-key=s3cret"]}}),
    "api-key-secret-ref": (ACCEPTED, {"engine": {"apiKeySecretRef": {"name": "vllm-key"}}}),
    # the API server's reading of types, nulls and bounds (found by the drill, specs.py)
    "workload-null-is-pruned": (ACCEPTED, {"workload": None}),
    "replicas-null-is-pruned": (ACCEPTED, {"replicas": None}),
    "replicas-integral-float": (REFUSED, {"replicas": 2.0}),
    "cel-read-integer-as-float": (REFUSED, {"scaling": {"maxReplicas": 3.0}}),
    "integral-float-for-integer": (ACCEPTED, {"workload": {"images": {"perRequest": 2.0}}}),
    "string-for-integer": (REFUSED, {"workload": {"images": {"perRequest": "2"}}}),
    "integer-for-boolean": (REFUSED, {"model": {"id": "org/model", "trustRemoteCode": 1}}),
    "integer-under-a-fractional-minimum": (REFUSED, {"workload": {"slo": {"margin": 0}}}),
    "integer-at-a-fractional-range": (ACCEPTED, {"workload": {"slo": {"margin": 1}}}),
}


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_api_server_and_pydantic_agree(
    case: str, crd: dict[str, Any], api_client: Any, namespace: str
) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    accepted, spec = AGREEMENT[case]
    doc = manifest("agree", {"model": {"id": "org/model"}, **spec})
    try:
        MultimodalModel.model_validate(doc)
        pydantic_error = None
    except ValidationError as err:
        pydantic_error = err.errors()[0]["msg"]
    objects = client.CustomObjectsApi(api_client)
    try:
        objects.create_namespaced_custom_object(
            "mmop.dev",
            "v1alpha1",
            namespace,
            "multimodalmodels",
            doc,
            dry_run="All",
            field_validation="Strict",
        )
        server_error = None
    except ApiException as err:
        assert err.status in (400, 422), err.body
        server_error = json.loads(err.body)["message"]
    assert (pydantic_error is None, server_error is None) == (accepted, accepted), (
        f"pydantic: {pydantic_error!r}; API server: {server_error!r}"
    )
    if pydantic_error is not None and "Value error, " in pydantic_error:
        # a model_validator rule: its CEL twin says the same words
        words = pydantic_error.split("Value error, ", 1)[1].split(" (", 1)[0]
        assert words in str(server_error)


def test_stored_object_has_defaults_status_columns_and_scale(
    crd: dict[str, Any], sandbox: SandboxState, api_client: Any, namespace: str
) -> None:
    from kubernetes import client

    ok(
        kubectl(
            sandbox, "apply", "-n", namespace, "-f", str(ROOT / "examples" / "qwen2.5-vl-7b.yaml")
        )
    )
    stored = json.loads(
        ok(kubectl(sandbox, "get", "mmm", "qwen-vl", "-n", namespace, "-o", "json"))
    )
    spec = stored["spec"]
    assert spec["workload"]["images"]["perRequest"] == 4  # the user's value
    assert spec["workload"]["video"] == {
        "enabled": False,
        "maxFrames": 32,
        "maxWidth": 640,
        "maxHeight": 360,
    }
    assert spec["placement"]["quantizations"] == ["none", "fp8", "awq"]
    assert "image" not in spec.get("engine", {})  # follows the operator's pinned vLLM
    MultimodalModel.model_validate(stored)  # what the operator reads back parses

    objects = client.CustomObjectsApi(api_client)
    status = {
        "observedGeneration": 1,
        "replicas": 2,
        "readyReplicas": 1,
        "selector": "mmop.dev/model=qwen-vl",
        "conditions": [{"type": "Planned", "status": "True", "reason": "Planned"}],
        "plan": {
            "model": "Qwen/Qwen2.5-VL-7B-Instruct",
            "gpu": "L40S",
            "gpuProduct": "NVIDIA-L40S",
            "gpusPerReplica": 1,
            "replicas": 2,
            "quantization": "fp8",
            "kvCacheDtype": "auto",
            "maxModelLen": 16384,
            "maxImageTokens": 1280,
            "costPerHourUsd": 3.6,
            "memory": {"kvCacheGib": 20.5},
            "fieldFromANewerOperator": 1,
        },
    }
    objects.patch_namespaced_custom_object_status(
        "mmop.dev", "v1alpha1", namespace, "multimodalmodels", "qwen-vl", {"status": status}
    )
    table = ok(kubectl(sandbox, "get", "mmm", "qwen-vl", "-n", namespace)).splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == [
        "NAME",
        "MODEL",
        "GPU",
        "GPUS",
        "QUANT",
        "CONTEXT",
        "MAXIMAGETOKENS",
        "REPLICAS",
        "READY",
        "AGE",
    ]
    assert row[:9] == [
        "qwen-vl",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "L40S",
        "1",
        "fp8",
        "16384",
        "1280",
        "2",
        "1",
    ]
    stored = json.loads(
        ok(kubectl(sandbox, "get", "mmm", "qwen-vl", "-n", namespace, "-o", "json"))
    )
    assert stored["status"]["plan"]["fieldFromANewerOperator"] == 1

    ok(kubectl(sandbox, "scale", "mmm", "qwen-vl", "-n", namespace, "--replicas=3"))
    scale = objects.get_namespaced_custom_object_scale(
        "mmop.dev", "v1alpha1", namespace, "multimodalmodels", "qwen-vl"
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 2, "selector": "mmop.dev/model=qwen-vl"}
