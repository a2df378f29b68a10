"""The CRD is generated from api.py: committed file in step, structural, agrees with pydantic."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from mmop.api import (
    EXTRA_ARGS_ALLOWED,
    LABEL_KEY_MAX,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    MODEL_ID_PATTERN,
    NODE_SELECTOR_MAX,
    MultimodalModel,
)
from mmop.cli import main
from mmop.crd import CRD_FILENAME, build_crd, render_crd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / CRD_FILENAME
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
K8S_TYPES = {"string", "integer", "number", "boolean", "object", "array"}


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def to_json_schema(node: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """The OpenAPI v3.0 structural schema as JSON Schema 2020-12, the way the API server reads it
    with strict field validation: unlisted fields are errors unless preserve-unknown-fields."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "default"):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            if value is True:
                out[key] = node[bound]
                out.pop(bound, None)
            continue
        if key in ("minimum", "maximum") and node.get(f"exclusive{key.title()}") is True:
            continue
        if key == "properties":
            out[key] = {k: to_json_schema(v, strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_json_schema(value, strict)
        else:
            out[key] = value
    if node.get("nullable"):
        out["type"] = [out["type"], "null"]
    if (
        strict
        and node.get("type") == "object"
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # metadata is the API server's own; the CRD only narrows metadata.name
    converted = to_json_schema(schema)
    converted["properties"]["metadata"].pop("additionalProperties")
    jsonschema.Draft202012Validator.check_schema(converted)
    return jsonschema.Draft202012Validator(converted)


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "m"},
        "spec": spec,
    }


# --- the committed file ---------------------------------------------------------------------------


def test_committed_crd_matches_api_models() -> None:
    assert COMMITTED.is_file(), f"{COMMITTED} is missing; run: mmop crd --output-dir crds"
    assert COMMITTED.read_text(encoding="utf-8") == render_crd(), (
        f"{COMMITTED.relative_to(ROOT)} is out of date with operator/mmop/api.py; "
        "regenerate it with: mmop crd --output-dir crds"
    )


def test_rendering_is_deterministic() -> None:
    assert render_crd() == render_crd()
    assert yaml.safe_load(render_crd()) == build_crd()


def test_cli_prints_and_writes_the_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == render_crd()
    assert main(["crd", "--output-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / CRD_FILENAME).read_text(encoding="utf-8") == render_crd()


def test_cli_reports_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["crd", "--output-dir", str(blocker)]) == 2
    assert "--output-dir" in capsys.readouterr().err


# --- shape of the CRD ------------------------------------------------------------------------------


def test_names_version_and_subresources(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "multimodalmodels.mmop.dev"
    spec = crd["spec"]
    assert spec["group"] == "mmop.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "MultimodalModel",
        "listKind": "MultimodalModelList",
        "plural": "multimodalmodels",
        "singular": "multimodalmodel",
        "shortNames": ["mmm"],
        "categories": ["mmop"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns_point_at_documented_fields(
    crd: dict[str, Any], schema: dict[str, Any]
) -> None:
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == [
        "Model",
        "GPU",
        "GPUs",
        "Quant",
        "Context",
        "MaxImageTokens",
        "Replicas",
        "Ready",
        "Age",
    ]
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "Time since creation",
    }
    for name, column in columns.items():
        if name == "Age":
            continue
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == column["type"], name


def test_scale_paths_exist_with_integer_and_string_types(schema: dict[str, Any]) -> None:
    props = schema["properties"]
    assert props["spec"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["selector"]["type"] == "string"


# --- structural schema ------------------------------------------------------------------------------


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        where = path or "<root>"
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title"} & node.keys(), where
        assert node.get("type") in K8S_TYPES, f"{where}: type {node.get('type')!r}"
        assert not ("properties" in node and "additionalProperties" in node), where
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, where
        if node["type"] == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields") is True
            ), where
        if node["type"] == "array":
            assert "items" in node, where
        assert node.get("default", 0) is not None, f"{where}: null default"


def test_every_spec_field_is_documented(schema: dict[str, Any]) -> None:
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        if path.endswith("[]") or path.endswith("{}"):
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_json_schema_idioms_become_kubernetes_ones(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    workload = spec["workload"]["properties"]
    preferred = workload["contextLength"]["properties"]["preferred"]
    assert preferred["nullable"] is True and preferred["type"] == "integer"
    assert "default" not in preferred
    kv = spec["scaling"]["properties"]["targets"]["properties"]["kvCacheUsage"]
    assert (kv["minimum"], kv["exclusiveMinimum"], kv["maximum"]) == (0, True, 1)
    selector = spec["placement"]["properties"]["nodeSelector"]
    assert selector["type"] == "object"
    assert selector["maxProperties"] == NODE_SELECTOR_MAX
    assert selector["additionalProperties"] == {
        "type": "string",
        "maxLength": 63,
        "pattern": LABEL_VALUE_PATTERN,
    }
    quant = spec["model"]["properties"]["variants"]["items"]["properties"]["quantization"]
    assert quant["enum"] == ["none", "fp8", "awq", "gptq", "compressed-tensors"]
    assert schema["required"] == ["spec"]
    assert spec["model"]["required"] == ["id"]


def test_defaults_fill_nested_objects_but_not_the_image(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["workload"]["default"] == {}
    assert spec["workload"]["properties"]["contextLength"]["default"] == {}
    assert spec["workload"]["properties"]["contextLength"]["properties"]["min"]["default"] == 4096
    assert spec["placement"]["properties"]["quantizations"]["default"] == ["none", "fp8", "awq"]
    assert spec["scaling"]["properties"]["mode"]["default"] == "Auto"
    # the serving image follows the operator's pinned vLLM, not the CRD's creation day
    assert "default" not in spec["engine"]["properties"]["image"]
    assert "default" not in spec["engine"]["properties"]["extraArgs"]


def test_every_default_is_valid_for_its_field(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        if "default" in node:
            errors = list(
                jsonschema.Draft202012Validator(to_json_schema(node)).iter_errors(node["default"])
            )
            assert not errors, f"{path}: default {node['default']!r}: {errors[0].message}"


def test_status_keeps_its_fields_and_preserves_unknown_ones(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    plan = status["properties"]["plan"]
    assert plan["nullable"] is True
    assert {"gpu", "gpusPerReplica", "quantization", "maxModelLen", "maxImageTokens"} <= set(
        plan["properties"]
    )
    assert plan["properties"]["memory"] == {
        "type": "object",
        "description": "Predicted memory per GPU",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


# --- CEL rules ---------------------------------------------------------------------------------------


def rules_at(schema: dict[str, Any], *path: str) -> list[dict[str, Any]]:
    node = schema["properties"]["spec"]
    for part in path:
        node = node["properties"][part]
    return node["x-kubernetes-validations"]  # type: ignore[no-any-return]


def test_cross_field_rules_are_cel_with_messages(schema: dict[str, Any]) -> None:
    (scaling,) = rules_at(schema, "scaling")
    assert "minReplicas" in scaling["rule"] and "maxReplicas" in scaling["rule"]
    assert scaling["message"] == "scaling.minReplicas must be <= scaling.maxReplicas"
    (context,) = rules_at(schema, "workload")
    assert "promptTokens" in context["rule"] and "outputTokens" in context["rule"]
    assert context["message"] == "contextLength.min must hold promptTokens + outputTokens"
    (preferred,) = rules_at(schema, "workload", "contextLength")
    assert preferred["message"] == "contextLength.preferred must be >= contextLength.min"
    remote, api_key, extra = rules_at(schema, "engine", "extraArgs")
    assert "--trust-remote-code" in remote["rule"]
    assert "spec.model.trustRemoteCode" in remote["message"]
    assert "--api-key" in api_key["rule"] and "--api-key" not in extra["rule"]
    assert "spec.engine.apiKeySecretRef" in api_key["message"]
    assert all(flag in extra["rule"] for flag in EXTRA_ARGS_ALLOWED)
    assert extra["message"].startswith("engine.extraArgs: only these vLLM flags are allowed")
    assert "is not allowed" in extra["messageExpression"]


def test_cel_rules_guard_optional_fields(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], path
            fields = [p for p in node.get("properties", {}) if f"self.{p}" in rule["rule"]]
            for field in fields:
                if field in node.get("required", []):
                    continue
                assert f"has(self.{field})" in rule["rule"], f"{path}: {field} unguarded"


def test_cel_rules_have_bounded_inputs(schema: dict[str, Any]) -> None:
    """The API server estimates a rule's cost from maxItems/maxLength/maxProperties; unbounded
    inputs fail (a CRD over the cost budget is refused)."""
    extra = schema["properties"]["spec"]["properties"]["engine"]["properties"]["extraArgs"]
    assert extra["maxItems"] <= 64 and extra["items"]["maxLength"] <= 4096
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        if "x-kubernetes-validations" not in node:
            continue
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if node["type"] == "string":
            assert "maxLength" in node, path


def cel_patterns(node: dict[str, Any]) -> list[str]:
    """The regular expressions a node's CEL rules match `self` against."""
    out = []
    for rule in node.get("x-kubernetes-validations", []):
        for literal in re.findall(r"self\.matches\('((?:[^'\\]|\\.)*)'\)", rule["rule"]):
            out.append(re.sub(r"\\(.)", r"\1", literal))
    return out


def test_ids_and_label_keys_are_checked_by_cel_with_the_api_patterns(
    schema: dict[str, Any],
) -> None:
    spec = schema["properties"]["spec"]["properties"]
    model = spec["model"]["properties"]
    assert cel_patterns(model["id"]) == [MODEL_ID_PATTERN]
    assert cel_patterns(model["variants"]["items"]["properties"]["id"]) == [MODEL_ID_PATTERN]
    for node in (model["id"], model["variants"]["items"]["properties"]["id"]):
        (rule,) = node["x-kubernetes-validations"]
        assert "!self.contains('--')" in rule["rule"] and "!self.contains('..')" in rule["rule"]
        assert "!self.endsWith('.git')" in rule["rule"]
        assert "Hugging Face repo id" in rule["message"]
    (keys,) = spec["placement"]["properties"]["nodeSelector"]["x-kubernetes-validations"]
    assert LABEL_KEY_PATTERN.replace("\\", "\\\\") in keys["rule"]
    assert keys["message"].startswith("placement.nodeSelector: every key must be a label key")


# --- the largest spec the schema admits ----------------------------------------------------------

# One character of each kind whose JSON costs differ: ASCII, a control character (\u0001 in every
# JSON encoder), a quote, '<' (Go's encoder writes \u003c), Latin, CJK and one outside the Basic
# Multilingual Plane (4 bytes of UTF-8; 12 bytes in Python's ASCII-escaped JSON).
PROBES = ("a", "\x01", '"', "<", "\u00e9", "\u4e2d", "\U0001f600")
KIB = 1024
ANNOTATIONS_LIMIT = 256 * KIB  # all of an object's annotations together (API server)


def json_bytes(value: Any, encoding: str) -> int:
    """Bytes of `value` as JSON: "utf8" (UTF-8 JSON), "kopf" (Python's json.dumps, ASCII-escaped,
    as kopf writes its last-handled-configuration annotation), "go" (Go's encoding/json, as
    kubectl writes last-applied-configuration: <, > and & escaped, UTF-8 otherwise)."""
    if encoding == "go":
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return len(text.encode()) + 5 * sum(text.count(c) for c in "<>&")
    ascii_only = encoding == "kopf"
    return len(json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":")).encode())


def costliest_char(node: dict[str, Any], encoding: str) -> str:
    """The probe character costliest in `encoding` that the node's patterns let through."""
    patterns = [p for p in [node.get("pattern"), *cel_patterns(node)] if p]

    def admitted(c: str) -> bool:
        return all(re.search(p, c) or re.search(p, f"a{c}a") for p in patterns)

    return max((c for c in PROBES if admitted(c)), key=lambda c: json_bytes(c, encoding))


def largest(node: dict[str, Any], encoding: str) -> Any:
    """A value at least as large as any the schema admits: every property present, every string
    at maxLength in its costliest character, every list at maxItems, every map at
    maxProperties with keys as long as a label key; unbounded strings and lists fail."""
    kind = node["type"]
    if kind == "object" and "properties" in node:
        return {name: largest(sub, encoding) for name, sub in node["properties"].items()}
    if kind == "object":
        assert "maxProperties" in node, node
        value = largest(node["additionalProperties"], encoding)
        return {f"{i:04d}".ljust(LABEL_KEY_MAX, "k"): value for i in range(node["maxProperties"])}
    if kind == "array":
        assert "maxItems" in node, node
        return [largest(node["items"], encoding) for _ in range(node["maxItems"])]
    if kind == "string":
        if "enum" in node:
            return max(node["enum"], key=len)
        assert "maxLength" in node, node
        return costliest_char(node, encoding) * node["maxLength"]
    if kind == "integer":
        return -(2**53 - 1)
    if kind == "number":
        return -1.7976931348623157e308
    assert kind == "boolean"
    return False


def test_every_spec_string_list_and_map_is_bounded(schema: dict[str, Any]) -> None:
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"{path}: a string without maxLength"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: a list without maxItems"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: a map without maxProperties"


def test_the_largest_admissible_spec_stays_well_under_the_annotation_limit(
    schema: dict[str, Any],
) -> None:
    """kopf keeps the spec in its mmop.dev/last-handled-configuration annotation, and `kubectl
    apply` (client-side) keeps it in kubectl.kubernetes.io/last-applied-configuration: both count
    toward the 256 KiB the API server allows for all annotations. The largest spec is under
    100 KiB of UTF-8 JSON, and both copies together, each in its writer's encoding, leave at
    least 32 KiB for the user's own labels and annotations (which kopf copies too)."""
    spec = schema["properties"]["spec"]
    utf8 = json_bytes(largest(spec, "utf8"), "utf8")
    kopf = json_bytes(largest(spec, "kopf"), "kopf")
    go = json_bytes(largest(spec, "go"), "go")
    assert utf8 < 100 * KIB, f"the largest spec is {utf8 / KIB:.1f} KiB of UTF-8 JSON"
    both = kopf + go
    assert both <= ANNOTATIONS_LIMIT - 32 * KIB, (
        f"kopf's copy {kopf / KIB:.1f} KiB + kubectl's {go / KIB:.1f} KiB"
    )


# --- the examples and the schema agree with pydantic ------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_validate_against_the_schema(
    path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    MultimodalModel.model_validate(document)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"model": {"id": "x", "bogus": 1}}, "model"),
        ({"model": {"id": "x"}, "extra": True}, ""),
        ({"model": {"id": "x"}, "workload": {"images": {"perRequest": 100}}}, "perRequest"),
        ({"model": {"id": ""}}, "id"),
        ({"model": {"id": "x"}, "scaling": {"targets": {"kvCacheUsage": 0}}}, "kvCacheUsage"),
        ({"model": {"id": "x"}, "scaling": {"mode": "auto"}}, "mode"),
        ({"model": {"id": "x"}, "engine": {"env": [{"name": "1BAD"}]}}, "name"),
        ({"model": {"id": "x"}, "placement": {"quantizations": []}}, "quantizations"),
        ({"workload": {}}, "model"),
    ],
)
def test_schema_refuses_what_pydantic_refuses(
    spec: dict[str, Any], where: str, validator: jsonschema.Draft202012Validator
) -> None:
    document = manifest(spec)
    with pytest.raises(ValidationError):
        MultimodalModel.model_validate(document)
    errors = list(validator.iter_errors(document))
    assert errors
    assert where in " ".join(".".join(map(str, e.path)) + " " + e.message for e in errors)


def test_schema_accepts_nulls_where_pydantic_does(
    validator: jsonschema.Draft202012Validator,
) -> None:
    document = manifest(
        {"model": {"id": "x", "revision": None}, "workload": {"contextLength": {"preferred": None}}}
    )
    MultimodalModel.model_validate(document)
    assert not list(validator.iter_errors(document))


def test_status_written_by_the_operator_validates(
    validator: jsonschema.Draft202012Validator,
) -> None:
    document = copy.deepcopy(manifest({"model": {"id": "x"}}))
    document["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "readyReplicas": 1,
        "selector": "app=x",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
        "plan": {
            "model": "x",
            "gpu": "L4",
            "gpuProduct": "NVIDIA-L4",
            "gpusPerReplica": 1,
            "replicas": 1,
            "quantization": "fp8",
            "kvCacheDtype": "auto",
            "maxModelLen": 8192,
            "costPerHourUsd": 0.8,
            "memory": {"weightsGib": 8.1},
            "alternatives": [{"gpu": "T4", "reason": "DoesNotFit"}],
        },
    }
    MultimodalModel.model_validate(document)
    assert not list(validator.iter_errors(document))


def test_integers_a_cel_rule_reads_are_refused_as_floats_by_pydantic_too(
    schema: dict[str, Any],
) -> None:
    """The API server takes an integral float (2.0) for an integer field, but a CEL rule reading
    that field fails ("expected int, got float64") and the object is refused: pydantic must
    refuse the float in exactly those fields."""
    checked = 0
    for path, node in walk(schema["properties"]["spec"]):
        for rule in node.get("x-kubernetes-validations", []):
            for name in set(re.findall(r"self\.(\w+)", rule["rule"])):
                sub = node.get("properties", {}).get(name)
                if sub is None or sub["type"] != "integer":
                    continue
                value = float(sub.get("default", sub.get("minimum", 1)))
                spec: dict[str, Any] = {"model": {"id": "a/b"}}
                target = spec
                for part in [p for p in path.split(".") if p]:
                    target = target.setdefault(part, {})
                target[name] = value
                with pytest.raises(ValidationError, match=name):
                    MultimodalModel.model_validate(manifest(spec))
                target[name] = int(value)
                checked += 1
    assert checked >= 6


def test_fractional_bounds_of_numbers_are_repeated_in_cel(schema: dict[str, Any]) -> None:
    """The API server compares an integer value with a bound truncated to an integer (so 0
    passes minimum 0.5): a CEL rule repeats every fractional bound with real numbers."""
    found = 0
    for path, node in walk(schema["properties"]["spec"], "spec"):
        for bound in ("minimum", "maximum"):
            if node.get("type") == "number" and not float(node.get(bound, 0)).is_integer():
                rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
                assert any(repr(float(node[bound])) in r for r in rules), (path, bound, rules)
                found += 1
    assert found >= 1
    with pytest.raises(ValidationError, match="margin"):
        MultimodalModel.model_validate(
            manifest({"model": {"id": "a"}, "workload": {"slo": {"margin": 0}}})
        )
