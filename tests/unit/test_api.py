"""The MultimodalModel spec: defaults, bounds, unknown fields, cross-field rules, what can never
be applied, model ids, the API key as a Secret reference, and the policy hooks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mmop.api import ALLOW_LOCAL_MODEL, MultimodalModel, MultimodalModelSpec, model_id_problem
from mmop.policy import Policy, check, env_refused


def doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "x"},
        "spec": spec,
    }


def test_minimal_spec_gets_defaults() -> None:
    m = MultimodalModel.model_validate(doc({"model": {"id": "Qwen/Qwen3-0.6B"}}))
    assert m.spec.workload.context_length.min == 4096
    assert m.spec.scaling.mode == "Auto"
    assert m.spec.engine.image.startswith("vllm/vllm-openai:v")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": {"id": "a/b"}, "colour": "red"}, "Extra inputs"),
        ({"model": {"id": "a/b"}, "workload": {"images": {"perRequest": 100}}}, "less than or equal to 64"),
        ({"model": {"id": "a/b"}, "scaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas must be <="),
        ({"model": {"id": "a/b"}, "workload": {"contextLength": {"min": 1024}, "promptTokens": 1000, "outputTokens": 100}}, "must hold promptTokens"),
        ({"model": {"id": "a/b"}, "workload": {"contextLength": {"min": 8192, "preferred": 4096}}}, "preferred must be >="),
        ({"model": {"id": "a/b"}, "engine": {"extraArgs": ["--gpu-memory-utilization=0.99"]}}, "is not allowed"),
        ({"model": {"id": "a/b"}, "placement": {"quantizations": ["int3"]}}, "Input should be"),
    ],
)  # fmt: skip
def test_bad_specs_are_rejected_with_a_reason(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MultimodalModel.model_validate(doc(spec))


def test_camel_case_on_the_wire_snake_case_in_python() -> None:
    spec = MultimodalModelSpec.model_validate(
        {"model": {"id": "a/b"}, "workload": {"images": {"perRequest": 2, "maxWidth": 640}}}
    )
    assert spec.workload.images.per_request == 2
    assert spec.model_dump(by_alias=True)["workload"]["images"]["maxWidth"] == 640


# --- what can never be applied is refused (R4) ------------------------------------------------


def refused(spec: dict[str, Any], *words: str) -> str:
    with pytest.raises(ValidationError) as err:
        MultimodalModel.model_validate(doc(spec))
    text = str(err.value)
    for word in words:
        assert word in text, text
    return text


def accepted(spec: dict[str, Any]) -> MultimodalModel:
    return MultimodalModel.model_validate(doc(spec))


PREFIX_253 = ".".join(["a" * 63] * 4)[:253]


@pytest.mark.parametrize(
    "selector",
    [
        {"pool": "gpu", "example.com/tier": "", "a.b-c_d": "A.b-1_2"},
        {f"{PREFIX_253}/{'n' * 63}": "v" * 63},
        {"x": None},  # a null value: the API server drops it
    ],
)
def test_node_selector_admits_label_syntax(selector: dict[str, Any]) -> None:
    m = accepted({"model": {"id": "a/b"}, "placement": {"nodeSelector": selector}})
    assert None not in m.spec.placement.node_selector.values()


@pytest.mark.parametrize(
    "selector",
    [
        {"-pool": "gpu"},
        {"pool-": "gpu"},
        {"a/b/c": "gpu"},
        {"Example.com/x": "gpu"},
        {"/x": "gpu"},
        {"example.com/": "gpu"},
        {"n" * 64: "gpu"},
        {f"{PREFIX_253}a/x": "gpu"},
        {"has space": "gpu"},
        {"p\u00f6ol": "gpu"},
        {"pool": "v" * 64},
        {"pool": "-gpu"},
        {"pool": "g p u"},
        {f"k{i}": "v" for i in range(17)},
    ],
)
def test_node_selector_refuses_what_no_pod_can_carry(selector: dict[str, Any]) -> None:
    refused({"model": {"id": "a/b"}, "placement": {"nodeSelector": selector}}, "nodeSelector")


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ({"name": "Hf-Token"}, "name"),
        ({"name": "hf_token"}, "name"),
        ({"name": "-hf"}, "name"),
        ({"name": "a" * 254}, "name"),
        ({"name": "hf", "key": "to ken"}, "key"),
        ({"name": "hf", "key": "."}, "key"),
        ({"name": "hf", "key": ".."}, "key"),
        ({"name": "hf", "key": "..token"}, "key"),
        ({"name": "hf", "key": "k" * 254}, "key"),
        ({"name": "hf", "key": "t\u00f6ken"}, "key"),
    ],
)
def test_secret_refs_refuse_names_and_keys_kubernetes_refuses(
    ref: dict[str, Any], field: str
) -> None:
    refused({"model": {"id": "a/b", "tokenSecretRef": ref}}, f"tokenSecretRef.{field}")
    refused(
        {"model": {"id": "a/b"}, "engine": {"apiKeySecretRef": ref}}, f"apiKeySecretRef.{field}"
    )


@pytest.mark.parametrize(
    "ref",
    [{"name": "hf-token"}, {"name": "a.b-c", "key": ".hidden"}, {"name": "x", "key": "A_b-1.c.."}],
)
def test_secret_refs_admit_kubernetes_names_and_keys(ref: dict[str, Any]) -> None:
    accepted({"model": {"id": "a/b", "tokenSecretRef": ref}, "engine": {"apiKeySecretRef": ref}})


def test_characters_outside_the_basic_multilingual_plane_are_not_refused() -> None:
    m = accepted(
        {
            "model": {"id": "a/b"},
            "engine": {"extraArgs": ["--chat-template={{ '\U0001f600' }}"], "env": [
                {"name": "GREETING", "value": "\U0001f600 \u4e2d"}
            ]},
        }
    )  # fmt: skip
    assert m.spec.engine.env[0].value.startswith("\U0001f600")


# --- model ids are Hugging Face repo ids (R8) ----------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        "/models/x",
        "./x",
        "~/x",
        "../x",
        "Qwen/../Qwen/Qwen2-VL-7B-Instruct",
        "a//b",
        "a/b/",
        "/a",
        ".",
        "..",
        "a/.",
        "a/b/c",
        "a--b",
        "org/a..b",
        "org/model.git",
        "-org/x",
        "org/x-",
        "o" * 97 + "/x",
        "org/" + "x" * 97,
        "org/m\u00f6del",
        "org/m del",
    ],
)
def test_path_like_and_non_canonical_ids_are_refused(model_id: str) -> None:
    text = refused({"model": {"id": model_id}}, "model.id must be a Hugging Face repo id")
    assert f"({model_id!r}: " in text  # the message says which id and what is wrong with it
    if model_id.startswith(("/", "./", "../", "~")):
        assert f"({model_id!r}: a path)" in text
    refused(
        {"model": {"id": "a/b", "variants": [{"id": model_id, "quantization": "fp8"}]}},
        "model.variants[].id",
    )


@pytest.mark.parametrize(
    "model_id",
    ["gpt2", "Qwen/Qwen2.5-VL-7B-Instruct", "_org/_x_", "a.b-c_d/E.F-1", "o" * 96 + "/" + "x" * 96],
)
def test_hugging_face_repo_ids_are_accepted(model_id: str) -> None:
    assert accepted({"model": {"id": model_id}}).spec.model.id == model_id


def test_every_catalog_id_is_a_repo_id() -> None:
    from mmop.model import catalog_ids

    for model_id in catalog_ids():
        assert model_id_problem(model_id) is None, model_id


def test_the_cli_may_name_a_local_directory_through_the_validation_context() -> None:
    data = doc({"model": {"id": "/tmp/my-finetune"}})
    with pytest.raises(ValidationError):
        MultimodalModel.model_validate(data)
    m = MultimodalModel.model_validate(data, context={ALLOW_LOCAL_MODEL: True})
    assert m.spec.model.id == "/tmp/my-finetune"
    with pytest.raises(ValidationError):  # the context allows a path, not an empty id
        MultimodalModel.model_validate(
            doc({"model": {"id": ""}}), context={ALLOW_LOCAL_MODEL: True}
        )


# --- the API key is a Secret reference (R5) -------------------------------------------------------


@pytest.mark.parametrize("args", [["--api-key=s3cret"], ["--api-key", "s3cret"]])
def test_api_key_in_extra_args_is_refused_and_points_at_the_secret_ref(args: list[str]) -> None:
    text = refused({"model": {"id": "a/b"}, "engine": {"extraArgs": args}}, "apiKeySecretRef")
    assert "s3cret" not in text  # an error never repeats what was written


def test_api_key_secret_ref_is_a_spec_field() -> None:
    m = accepted({"model": {"id": "a/b"}, "engine": {"apiKeySecretRef": {"name": "vllm-key"}}})
    ref = m.spec.engine.api_key_secret_ref
    assert ref is not None and (ref.name, ref.key) == ("vllm-key", "token")
    assert m.spec.model_dump(by_alias=True)["engine"]["apiKeySecretRef"]["name"] == "vllm-key"


# --- values are read as the API server reads them -----------------------------------------------


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"model": {"id": "a/b"}, "replicas": "3"}, "replicas"),
        ({"model": {"id": "a/b"}, "replicas": 2.0}, "replicas"),  # the scale subresource's int64
        # integers a CEL rule reads: the API server refuses a float there ("expected int")
        ({"model": {"id": "a/b"}, "scaling": {"maxReplicas": 3.0}}, "maxReplicas"),
        ({"model": {"id": "a/b"}, "scaling": {"minReplicas": 1.0}}, "minReplicas"),
        ({"model": {"id": "a/b"}, "workload": {"promptTokens": 100.0}}, "promptTokens"),
        ({"model": {"id": "a/b"}, "workload": {"outputTokens": 100.0}}, "outputTokens"),
        ({"model": {"id": "a/b"}, "workload": {"contextLength": {"min": 8192.0}}}, "min"),
        (
            {"model": {"id": "a/b"}, "workload": {"contextLength": {"preferred": 8192.0}}},
            "preferred",
        ),
        ({"model": {"id": "a/b"}, "workload": {"images": {"perRequest": "2"}}}, "perRequest"),
        ({"model": {"id": "a/b"}, "workload": {"images": {"perRequest": True}}}, "perRequest"),
        ({"model": {"id": "a/b"}, "workload": {"images": {"perRequest": 2.5}}}, "perRequest"),
        ({"model": {"id": "a/b", "trustRemoteCode": 1}}, "trustRemoteCode"),
        ({"model": {"id": "a/b", "trustRemoteCode": "true"}}, "trustRemoteCode"),
        ({"model": {"id": "a/b"}, "workload": {"audio": {"maxSeconds": "30"}}}, "maxSeconds"),
        ({"model": {"id": "a/b"}, "engine": {"env": [{"name": "A", "value": 1}]}}, "value"),
        ({"model": {"id": "a/b"}, "placement": {"gpuTypes": [None]}}, "gpuTypes"),
        ({"model": None}, "model"),
        ({"model": {"id": "a/b"}, "workload": {"images": {"minPixels": 2**62}}}, "minPixels"),
    ],
)
def test_types_are_the_api_servers(spec: dict[str, Any], where: str) -> None:
    refused(spec, where)


def test_integral_floats_are_integers_and_nulls_of_non_nullable_fields_are_dropped() -> None:
    m = accepted(
        {
            "model": {"id": "a/b", "revision": None},
            "workload": {"images": {"perRequest": 2.0}, "video": None, "concurrency": None},
            "scaling": {"minReplicas": None, "behavior": {"windowSeconds": 30.0}},
            "engine": {"image": None, "env": [{"name": "A", "value": None}]},
        }
    )
    assert (
        m.spec.workload.images.per_request == 2 and type(m.spec.workload.images.per_request) is int
    )
    assert m.spec.scaling.min_replicas == 1 and m.spec.scaling.behavior.window_seconds == 30
    assert m.spec.engine.image.startswith("vllm/vllm-openai:v")
    assert m.spec.engine.env[0].value == ""
    assert m.spec.workload.video.enabled is False


# --- policy hooks (R5) --------------------------------------------------------------------------


def spec_of(spec: dict[str, Any]) -> MultimodalModelSpec:
    return MultimodalModelSpec.model_validate({"model": {"id": "a/b"}, **spec})


def test_an_empty_policy_allows_any_image_and_secret_but_never_code_loading_env() -> None:
    spec = spec_of(
        {
            "model": {"id": "a/b", "tokenSecretRef": {"name": "anything"}},
            "engine": {
                "image": "evil.example.com/x:1",
                "env": [
                    {"name": "NCCL_DEBUG", "value": "INFO"},
                    {"name": "LD_PRELOAD", "value": "/tmp/x.so"},
                    {"name": "PYTHONPATH", "value": "/tmp"},
                    {"name": "VLLM_PLUGINS", "value": "x"},
                    {"name": "HF_TOKEN", "value": "y"},
                    {"name": "LD_DEBUG_OUTPUT", "value": "/tmp/l"},
                ],
            },
        }
    )
    found = {v.field: v.message for v in check(spec, Policy())}
    assert set(found) == {f"spec.engine.env[{i}].name" for i in (1, 2, 3, 4, 5)}
    assert "LD_PRELOAD" in found["spec.engine.env[1].name"]
    assert "tokenSecretRef" in found["spec.engine.env[4].name"]


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
     "VLLM_PLUGINS", "VLLM_LOGGING_CONFIG_PATH", "VLLM_NCCL_SO_PATH", "HF_TOKEN", "VLLM_API_KEY",
     "HF_HOME"],
)  # fmt: skip
def test_refused_env_names_include_the_linkers_pythons_vllms_and_mmops(name: str) -> None:
    assert env_refused(name) is not None
    assert env_refused("OMP_NUM_THREADS") is None


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/vllm/vllm-openai:v0.32.0", True),
        ("registry.example.com/vllm/vllm-openai@sha256:" + "0" * 64, True),
        ("registry.example.com/vllm-evil/x:1", False),
        ("registry.example.com.evil.io/vllm/x:1", False),
        ("vllm/vllm-openai:v0.32.0", True),  # docker.io/vllm/vllm-openai
        ("docker.io/vllm/vllm-openai:v0.32.0", True),
        ("vllm/vllm-openai-evil:v1", False),
        ("mirror.example.com/any/thing:1", True),
        ("ubuntu", False),
    ],
)
def test_images_are_allowed_by_registry_repository_or_reference(image: str, allowed: bool) -> None:
    policy = Policy(
        allowed_images=("registry.example.com/vllm", "vllm/vllm-openai", "mirror.example.com/")
    )
    spec = spec_of({"engine": {"image": image}})
    violations = check(spec, policy)
    assert (not violations) == allowed, violations
    if not allowed:
        assert violations[0].field == "spec.engine.image"


def test_the_operators_default_image_is_not_held_against_the_policy() -> None:
    assert check(spec_of({}), Policy(allowed_images=("registry.example.com/",))) == []


def test_secret_references_must_be_allowed_names() -> None:
    spec = spec_of(
        {
            "model": {"id": "a/b", "tokenSecretRef": {"name": "hf-token"}},
            "engine": {"apiKeySecretRef": {"name": "db-password"}},
        }
    )
    (violation,) = check(spec, Policy(allowed_secrets=("hf-token", "vllm-key")))
    assert violation.field == "spec.engine.apiKeySecretRef.name"
    assert "db-password" in violation.message
