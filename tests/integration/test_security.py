"""Drill (e), security, against the operator as a process (`mmop run --all-namespaces` at log
level debug, its output in the sandbox's logs/operator.log):

- the values of the Secrets a model names (the Hub token, the engine's API key) never appear in
  the operator's output, in Events, in any model's status or in the objects it renders: only
  references to the Secrets do;
- the API key is not a flag (`--api-key` in extraArgs is refused, pointing at apiKeySecretRef);
- user `env` cannot carry `valueFrom` (it could read any Secret of the namespace) and no hostPath
  volume is ever rendered;
- the rendered pods are admitted in a namespace that enforces Pod Security `restricted`.

The chart's RBAC (least privilege) is checked by tests/unit/test_chart_files.py and
tests/integration/test_chart_install.py.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bench.reliability.drill import (
    GROUP,
    PLURAL,
    VERSION,
    Api,
    OperatorProcess,
    condition,
    install_crd,
    manifest,
    sandbox_of,
    wait_until,
)
from e2e.sandbox import SandboxState
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mmop.api import MultimodalModel

READY_SECONDS = 90
# The variable vLLM 0.32.0 reads the API key from when --api-key is not given
# (vllm/envs.py "VLLM_API_KEY"; vllm/entrypoints/serve/middleware/register.py).
API_KEY_ENV = "VLLM_API_KEY"
# Volume types a rendered pod may use: none of them reaches the node's filesystem.
SAFE_VOLUMES = {"emptyDir", "persistentVolumeClaim", "secret", "configMap", "projected"}


@pytest.fixture(scope="module")
def api(sandbox: SandboxState) -> Api:
    install_crd(sandbox)
    return Api(sandbox)


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState, api: Api) -> Iterator[OperatorProcess]:
    op = OperatorProcess(sandbox_of(sandbox), extra_args=["--log-level", "debug"])
    op.start()
    try:
        yield op
    finally:
        op.kill()


def secret_value() -> str:
    return f"sekrit-{secrets.token_hex(16)}"


def make_secret(api: Api, namespace: str, name: str, key: str, value: str) -> None:
    api.core.create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "stringData": {key: value}}
    )


def ready(api: Api, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        wait_until(
            f"{namespace}/{name} Ready",
            lambda: (
                (m := api.model(namespace, name))
                and (c := condition(m, "Ready"))
                and c["status"] == "True"
                and m
            ),
            READY_SECONDS,
        )
    )


def assert_nowhere(api: Api, operator: OperatorProcess, namespace: str, value: str) -> None:
    """``value`` (and its base64 form) is in no operator output, Event, model or rendered
    object of ``namespace``."""
    forms = [value, base64.b64encode(value.encode()).decode()]
    places = {
        "the operator's output": operator.log_text(),
        "Events": json.dumps(api.events(namespace)),
        "models (spec and status)": json.dumps(api.models(namespace)),
        "rendered objects": json.dumps(
            [api.children(namespace, k) for k in ("Deployment", "Service", "PodDisruptionBudget")]
        ),
        "pods": json.dumps(api._json(api.core.list_namespaced_pod, namespace)["items"]),
    }
    for where, text in places.items():
        for form in forms:
            assert form not in text, f"a Secret's value appears in {where}"


def secret_env(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for env in container.get("env") or []:
        if env["name"] == name:
            return dict(env)
    raise AssertionError(f"no {name} in {[e['name'] for e in container.get('env') or []]}")


def test_the_hub_token_value_never_leaves_its_secret(
    api: Api, operator: OperatorProcess, namespace: str
) -> None:
    value = secret_value()
    make_secret(api, namespace, "hub", "token", value)
    body = manifest("hub-model", 0)
    body["spec"]["model"]["tokenSecretRef"] = {"name": "hub", "key": "token"}
    api.create_model(namespace, body)
    ready(api, namespace, "hub-model")
    dep = api.child(namespace, "Deployment", "hub-model")
    assert dep is not None
    env = secret_env(dep, "HF_TOKEN")
    assert env == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hub", "key": "token"}},
    }
    assert_nowhere(api, operator, namespace, value)


def test_the_api_key_comes_from_its_secret_and_never_leaves_it(
    api: Api, operator: OperatorProcess, namespace: str
) -> None:
    value = secret_value()
    make_secret(api, namespace, "engine-key", "key", value)
    body = manifest("keyed", 1)
    body["spec"]["engine"] = {"apiKeySecretRef": {"name": "engine-key", "key": "key"}}
    api.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    mm = ready(api, namespace, "keyed")
    dep = api.child(namespace, "Deployment", "keyed")
    assert dep is not None
    env = secret_env(dep, API_KEY_ENV)
    assert env["valueFrom"] == {"secretKeyRef": {"name": "engine-key", "key": "key"}}, env
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--api-key") for a in container["args"]), container["args"]
    assert "--api-key" not in json.dumps(mm["status"])
    assert_nowhere(api, operator, namespace, value)


def test_an_api_key_flag_in_extra_args_is_refused(api: Api, namespace: str) -> None:
    body = manifest("flagged", 0)
    body["spec"]["engine"] = {"extraArgs": [f"--api-key={secret_value()}"]}
    with pytest.raises(ApiException) as refused:
        api.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
        )
    assert refused.value.status in (400, 422)
    assert "apiKeySecretRef" in str(refused.value.body)
    with pytest.raises(ValidationError, match="apiKeySecretRef"):
        MultimodalModel.model_validate({**body, "metadata": {"name": "flagged"}})


def test_user_env_cannot_read_secrets(api: Api, namespace: str) -> None:
    body = manifest("env-from", 0)
    body["spec"]["engine"] = {
        "env": [{"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "any", "key": "k"}}}]
    }
    # Refused when the client asks for strictness (kubectl's default) ...
    with pytest.raises(ApiException) as refused:
        api.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All", field_validation="Strict"
        )
    assert refused.value.status in (400, 422)
    assert "valueFrom" in str(refused.value.body)
    # ... and dropped by the schema's pruning when it does not: never stored.
    stored = api.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All", field_validation="Ignore"
    )
    assert "valueFrom" not in json.dumps(stored["spec"])
    with pytest.raises(ValidationError, match="valueFrom"):
        MultimodalModel.model_validate(body)


def test_no_host_path_is_ever_rendered(api: Api, operator: OperatorProcess, namespace: str) -> None:
    make_secret(api, namespace, "hub", "token", secret_value())
    extras: list[dict[str, dict[str, Any]]] = [
        {},
        {"model": {"tokenSecretRef": {"name": "hub"}}},
        {"engine": {"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]}},
    ]
    for i, extra in enumerate(extras):
        body = manifest(f"vol-{i}", i)
        for key, part in extra.items():
            body["spec"][key] = {**body["spec"].get(key, {}), **part}
        api.create_model(namespace, body)
    deps = wait_until(
        "three Deployments",
        lambda: len(d := api.children(namespace, "Deployment")) == 3 and d,
        READY_SECONDS,
    )
    for dep in deps:
        pod = dep["spec"]["template"]["spec"]
        assert "hostPath" not in json.dumps(dep)
        for volume in pod.get("volumes") or []:
            kinds = set(volume) - {"name"}
            assert kinds <= SAFE_VOLUMES, volume
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_pods_are_admitted_under_restricted_pod_security(
    api: Api, operator: OperatorProcess
) -> None:
    namespace = f"psa-{uuid.uuid4().hex[:8]}"
    api.create_namespace(namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        api.create_model(namespace, manifest("restricted", 0))
        wait_until("the Deployment", lambda: api.child(namespace, "Deployment", "restricted"), 60)

        def pods() -> list[dict[str, Any]]:
            items = api._json(
                api.core.list_namespaced_pod,
                namespace,
                label_selector="mmop.dev/model=restricted",
            )["items"]
            return list(items)

        try:
            wait_until("the model's pods to be admitted", pods, 60)
        except AssertionError as err:
            refusals = [
                e["message"] for e in api.events(namespace) if e.get("reason") == "FailedCreate"
            ]
            raise AssertionError(f"{err}; refusals: {refusals[:1]}") from None
        ready(api, namespace, "restricted")
    finally:
        api.delete_namespace(namespace)
