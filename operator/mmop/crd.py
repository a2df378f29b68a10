"""The MultimodalModel CustomResourceDefinition, generated from api.py (pure: no I/O).

api.py is the single source: the OpenAPI schema is pydantic's JSON schema of the spec and status
models, rewritten into a Kubernetes structural schema (every $ref inlined, `anyOf [X, null]` as
`nullable`, titles dropped, descriptions kept for `kubectl explain`). The cross-field rules that
pydantic checks in `model_validator`s are repeated here as CEL `x-kubernetes-validations`, so
`kubectl apply` refuses what the operator would refuse, with the same words.

Unknown fields: a structural schema prunes fields it does not list; `kubectl apply` asks the API
server for strict field validation by default (`--validate=strict`, kubectl >= 1.27), which turns
an unknown field into an error instead of a silent prune.

`mmop crd` writes the result to crds/; a unit test fails when the committed file drifts.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import core_schema

from mmop.api import (
    API_GROUP,
    API_KEY_FLAG,
    API_KEY_FLAG_MESSAGE,
    API_VERSION,
    CACHE_CLAIM_MESSAGE,
    DNS1123_SUBDOMAIN_MAX,
    EXTRA_ARGS_ALLOWED,
    KIND,
    LABEL_KEY_PATTERN,
    LABEL_KEYS_MESSAGE,
    LABEL_NAME_MAX,
    MODEL_ID_FORBIDDEN,
    MODEL_ID_FORBIDDEN_SUFFIX,
    MODEL_ID_PATTERN,
    MODEL_ID_RULE,
    REMOTE_CODE_FLAG,
    REMOTE_CODE_FLAG_MESSAGE,
    ContextLength,
    MultimodalModelSpec,
    MultimodalModelStatus,
    ObjectMeta,
    Scaling,
    Workload,
)

PLURAL = "multimodalmodels"
SINGULAR = "multimodalmodel"
SHORT_NAMES = ["mmm"]
CATEGORIES = ["mmop"]
CRD_NAME = f"{PLURAL}.{API_GROUP}"
CRD_FILENAME = f"{API_GROUP}_{PLURAL}.yaml"
CRD_HEADER = "# Generated from operator/mmop/api.py by `mmop crd --output-dir crds`. Do not edit.\n"

Schema = dict[str, Any]
FieldPath = tuple[str, ...]

# Keywords copied as they are from pydantic's JSON schema into the structural schema.
_KEPT = (
    "description",
    "type",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
)
_DROPPED = ("title",)
_TYPES = ("string", "integer", "number", "boolean", "object", "array")

# Defaults the API server must NOT write into stored objects. The serving image follows mmop's
# pinned vLLM release: a stored default would freeze every existing resource on the release that
# was current when it was created, and the estimator would plan for a different engine than runs.
# The operator applies this default itself (pydantic), so an upgrade moves the image with it.
_NO_SERVER_DEFAULT: frozenset[FieldPath] = frozenset({("spec", "engine", "image")})

# Bounds the API server needs to admit the CEL rules (their estimated cost grows with string
# length) that api.py does not state yet. Each is applied only where pydantic sets none; api.py
# should carry them (`list[Annotated[str, Field(max_length=...)]]`) so the CLI agrees.
_CEL_BOUNDS: dict[FieldPath, Schema] = {("spec", "engine", "extraArgs", "[]"): {"maxLength": 4096}}

# Optional fields the CRD does not declare nullable: the API server prunes their null like an
# absent field. spec.replicas is read by the scale subresource, which cannot read a null (api.py
# prunes it the same way: MultimodalModelSpec._NULL_PRUNED).
NOT_NULLABLE: frozenset[FieldPath] = frozenset({("spec", "replicas")})

# Kubernetes list semantics that pydantic has no word for (server-side apply merges by key).
_LIST_MAP_KEYS: dict[FieldPath, list[str]] = {("status", "conditions"): ["type"]}


class _FactoryDefaults(GenerateJsonSchema):
    """pydantic leaves `default_factory` defaults out of JSON schemas; the CRD wants them.

    A nested model whose factory builds its all-defaults value becomes `default: {}`: the API
    server then fills in the nested defaults itself, so stored objects and CEL rules see every
    effective value. Empty lists and maps get no default (absent and empty mean the same).
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return {} if value == type(value).model_validate({}) else value
        if isinstance(value, list | dict) and not value:
            return NoDefault
        return value


def _json_schema(model: type[BaseModel]) -> JsonSchemaValue:
    return model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_FactoryDefaults
    )


class SchemaError(ValueError):
    """pydantic produced a JSON schema construct a Kubernetes structural schema cannot express."""


def structural(node: Schema, defs: dict[str, Schema], path: FieldPath = ()) -> Schema:
    """Rewrite one JSON-schema node (pydantic's dialect) into a Kubernetes structural schema."""
    where = ".".join(path) or "<root>"
    node = dict(node)
    nullable = False
    if "$ref" in node:
        node = {**_resolve(node.pop("$ref"), defs, where), **node}
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator not in node:
            continue
        options = node.pop(combinator)
        non_null = [o for o in options if o != {"type": "null"}]
        nullable = len(non_null) < len(options)
        if len(non_null) != 1 or (combinator == "allOf" and nullable):
            raise SchemaError(f"{where}: {combinator} of {options!r} has no structural form")
        inner = dict(non_null[0])
        if "$ref" in inner:
            inner = {**_resolve(inner.pop("$ref"), defs, where), **inner}
        node = {**inner, **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "$ref" in node:  # a $ref reached through a combinator
        node = {**_resolve(node.pop("$ref"), defs, where), **node}

    out: Schema = {}
    for key, value in node.items():
        if key in _KEPT:
            out[key] = value
        elif key in _DROPPED:
            continue
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema 2020 numbers; OpenAPI v3.0 (Kubernetes) bounds + boolean flags.
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "default":
            if value is not None and path not in _NO_SERVER_DEFAULT:
                out["default"] = value
        elif key == "properties":
            out["properties"] = {
                name: structural(sub, defs, (*path, name)) for name, sub in value.items()
            }
        elif key == "required":
            if value:
                out["required"] = list(value)
        elif key == "items":
            out["items"] = structural(value, defs, (*path, "[]"))
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out["additionalProperties"] = structural(value, defs, path)
            # False: extra="forbid". Structural schemas prune unlisted fields; strict field
            # validation (kubectl's default) turns them into errors.
        elif key == "$defs":
            continue
        else:
            raise SchemaError(f"{where}: JSON-schema keyword {key!r} has no mapping to the CRD")
    if nullable and path not in NOT_NULLABLE:
        out["nullable"] = True
    if out.get("type") not in _TYPES:
        raise SchemaError(f"{where}: no single type ({out.get('type')!r})")
    if out["type"] == "object" and not {"properties", "additionalProperties"} & out.keys():
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _resolve(ref: str, defs: dict[str, Schema], where: str) -> Schema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaError(f"{where}: unresolvable $ref {ref!r}")
    return defs[ref[len(prefix) :]]


def model_schema(model: type[BaseModel], path: FieldPath) -> Schema:
    """The structural schema of one pydantic model, rooted at `path` (e.g. ("spec",))."""
    raw = _json_schema(model)
    return structural(raw, raw.get("$defs", {}), path)


# --- CEL: the model_validator rules of api.py, for the API server ---------------------------------


def _value(model: type[BaseModel], attr: str, obj: str = "self") -> str:
    """CEL for a field's effective value: the field when set, else the pydantic default."""
    field = model.model_fields[attr]
    name = field.alias or attr
    default = field.get_default(call_default_factory=True)
    return f"(has({obj}.{name}) ? {obj}.{name} : {default!r})"


def _alias(model: type[BaseModel], attr: str) -> str:
    return model.model_fields[attr].alias or attr


def _cel_string(text: str) -> str:
    """A CEL string literal (single-quoted) of `text`."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _model_id_rule(where: str) -> Schema:
    """huggingface_hub's repo-id rule (api.MODEL_ID_*) as one CEL rule with a readable message."""
    checks = [f"self.matches({_cel_string(MODEL_ID_PATTERN)})"]
    checks += [f"!self.contains({_cel_string(bad)})" for bad in MODEL_ID_FORBIDDEN]
    checks.append(f"!self.endsWith({_cel_string(MODEL_ID_FORBIDDEN_SUFFIX)})")
    return {
        "rule": " && ".join(checks),
        "message": f"{where} must be {MODEL_ID_RULE}",
        "reason": "FieldValueInvalid",
    }


def _label_keys_rule() -> Schema:
    """Every key of placement.nodeSelector a label key (an OpenAPI schema cannot constrain map
    keys): the syntax, a prefix of at most 253 characters, a name of at most 63. The pattern
    allows at most one '/', so indexOf('/') is the prefix's length (-1: no prefix)."""
    key = (
        f"k.matches({_cel_string(LABEL_KEY_PATTERN)})"
        f" && k.indexOf('/') <= {DNS1123_SUBDOMAIN_MAX}"
        f" && size(k) - k.indexOf('/') - 1 <= {LABEL_NAME_MAX}"
    )
    return {
        "rule": f"self.all(k, {key})",
        "message": LABEL_KEYS_MESSAGE,
        "reason": "FieldValueInvalid",
    }


def _rules() -> dict[FieldPath, list[Schema]]:
    min_replicas = _value(Scaling, "min_replicas")
    max_replicas = _value(Scaling, "max_replicas")
    ctx = _alias(Workload, "context_length")
    min_default = ContextLength.model_fields["min"].default
    ctx_min = f"(has(self.{ctx}) ? {_value(ContextLength, 'min', f'self.{ctx}')} : {min_default})"
    text_tokens = f"{_value(Workload, 'prompt_tokens')} + {_value(Workload, 'output_tokens')}"
    preferred = _alias(ContextLength, "preferred")
    flag = "a.split('=')[0]"
    allowed = "[" + ", ".join(f"'{f}'" for f in EXTRA_ARGS_ALLOWED) + "]"
    refused = f"a.startsWith('-') && !({flag} in {allowed})"
    return {
        ("spec", "model", "id"): [_model_id_rule("model.id")],
        ("spec", "model", "variants", "[]", "id"): [_model_id_rule("model.variants[].id")],
        ("spec", "placement", "nodeSelector"): [_label_keys_rule()],
        ("spec", "model", "cache"): [
            {
                "rule": "!has(self.claimName) || (!has(self.storageClassName) && "
                "!has(self.sizeGiB))",
                "message": CACHE_CLAIM_MESSAGE,
                "reason": "FieldValueInvalid",
            }
        ],
        ("spec", "scaling"): [
            {
                "rule": f"{min_replicas} <= {max_replicas}",
                "message": "scaling.minReplicas must be <= scaling.maxReplicas",
                "fieldPath": f".{_alias(Scaling, 'min_replicas')}",
                "reason": "FieldValueInvalid",
            }
        ],
        ("spec", "workload"): [
            {
                "rule": f"{ctx_min} >= {text_tokens}",
                "message": "contextLength.min must hold promptTokens + outputTokens",
                "fieldPath": f".{ctx}",
                "reason": "FieldValueInvalid",
            }
        ],
        ("spec", "workload", ctx): [
            {
                "rule": (
                    f"!has(self.{preferred}) || self.{preferred} >= {_value(ContextLength, 'min')}"
                ),
                "message": "contextLength.preferred must be >= contextLength.min",
                "fieldPath": f".{preferred}",
                "reason": "FieldValueInvalid",
            }
        ],
        ("spec", "engine", "extraArgs"): [
            {
                "rule": f"!self.exists(a, {flag} == '{REMOTE_CODE_FLAG}')",
                "message": REMOTE_CODE_FLAG_MESSAGE,
                "reason": "FieldValueForbidden",
            },
            {
                "rule": f"!self.exists(a, {flag} == '{API_KEY_FLAG}')",
                "message": API_KEY_FLAG_MESSAGE,
                "reason": "FieldValueForbidden",
            },
            {
                "rule": f"self.all(a, !({refused}))",
                "message": (
                    "engine.extraArgs: only these vLLM flags are allowed (mmop sets memory, "
                    "parallelism and length flags itself): " + ", ".join(EXTRA_ARGS_ALLOWED)
                ),
                "messageExpression": (
                    f"'engine.extraArgs: ' + self.filter(a, {refused})[0].split('=')[0]"
                    " + ' is not allowed (mmop sets memory, parallelism and length "
                    "flags itself); allowed: " + ", ".join(EXTRA_ARGS_ALLOWED) + "'"
                ),
                "reason": "FieldValueForbidden",
            },
        ],
    }


def _at(schema: Schema, path: FieldPath, root: FieldPath) -> Schema:
    node = schema
    for name in path[len(root) :]:
        node = node["items"] if name == "[]" else node["properties"][name]
    return node


def _with_rules(schema: Schema, root: FieldPath, rules: dict[FieldPath, list[Schema]]) -> Schema:
    for path, bounds in _CEL_BOUNDS.items():
        if path[: len(root)] == root:
            node = _at(schema, path, root)
            for key, value in bounds.items():
                node.setdefault(key, value)
    for path, path_rules in rules.items():
        if path[: len(root)] == root:
            _at(schema, path, root)["x-kubernetes-validations"] = path_rules
    return schema


def _guard_fractional_bounds(node: Schema, path: FieldPath) -> None:
    """Repeat every non-integral bound of a number field as a CEL rule. The API server checks an
    integer value against `minimum`/`maximum` truncated to an integer (kube-openapi's
    MinimumInt), so `margin: 0` passes `minimum: 0.5`; a CEL rule compares the real numbers."""
    if node.get("type") == "number":
        rules = []
        for bound, op, exclusive_op in (("minimum", ">=", ">"), ("maximum", "<=", "<")):
            value = node.get(bound)
            if value is None or float(value).is_integer():
                continue
            exclusive = node.get(f"exclusive{bound[:3].title()}imum") is True
            cmp = exclusive_op if exclusive else op
            rules.append(
                {
                    "rule": f"self {cmp} {float(value)!r}",
                    "message": f"{'.'.join(path[1:])} must be {cmp} {value}",
                    "reason": "FieldValueInvalid",
                }
            )
        if rules:
            node["x-kubernetes-validations"] = [*node.get("x-kubernetes-validations", []), *rules]
    for name, sub in node.get("properties", {}).items():
        _guard_fractional_bounds(sub, (*path, name))
    if isinstance(node.get("items"), dict):
        _guard_fractional_bounds(node["items"], (*path, "[]"))


def _open_status_objects(node: Schema) -> None:
    """Status is written by the operator only: a newer operator's fields survive an older CRD."""
    if node.get("type") == "object":
        node["x-kubernetes-preserve-unknown-fields"] = True
    for sub in node.get("properties", {}).values():
        _open_status_objects(sub)
    if "items" in node:
        _open_status_objects(node["items"])


def openapi_schema() -> Schema:
    """The CRD's openAPIV3Schema: the whole MultimodalModel object."""
    rules = _rules()
    spec = _with_rules(model_schema(MultimodalModelSpec, ("spec",)), ("spec",), rules)
    _guard_fractional_bounds(spec, ("spec",))
    spec["description"] = _doc(MultimodalModelSpec) or (
        "What to serve, for which workload, where it may run and how it scales"
    )
    status = model_schema(MultimodalModelStatus, ("status",))
    status["description"] = _doc(MultimodalModelStatus) or (
        "What mmop decided and observed: the plan in force, replicas, conditions, decisions"
    )
    _open_status_objects(status)
    for path, keys in _LIST_MAP_KEYS.items():
        listed = _at(status, path, ("status",))
        listed["x-kubernetes-list-type"] = "map"
        listed["x-kubernetes-list-map-keys"] = keys
    meta = model_schema(ObjectMeta, ("metadata",))
    metadata: Schema = {
        "type": "object",
        "properties": {"name": meta["properties"]["name"]},
    }
    return {
        "type": "object",
        "description": (
            "A multimodal (vision, video, audio + language) model served with vLLM. mmop plans "
            "the GPU type and count, quantization, image token budget and context that fit the "
            "workload, deploys vLLM with matching flags, and scales it."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": (
                    "APIVersion defines the versioned schema of this representation of an object."
                ),
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource.",
            },
            "metadata": metadata,
            "spec": spec,
            "status": status,
        },
    }


def _doc(model: type[BaseModel]) -> str | None:
    doc = model.__doc__
    base_doc = BaseModel.__doc__
    if not doc or doc == base_doc:
        return None
    return " ".join(doc.split())


def _column(name: str, json_path: str, kind: str, description: str, **extra: Any) -> Schema:
    return {"name": name, "type": kind, "jsonPath": json_path, "description": description, **extra}


def _printer_columns() -> list[Schema]:
    return [
        _column("Model", ".spec.model.id", "string", "Model served"),
        _column("GPU", ".status.plan.gpu", "string", "GPU type of the plan"),
        _column("GPUs", ".status.plan.gpusPerReplica", "integer", "GPUs per replica"),
        _column("Quant", ".status.plan.quantization", "string", "Weight quantization"),
        _column("Context", ".status.plan.maxModelLen", "integer", "--max-model-len"),
        _column("MaxImageTokens", ".status.plan.maxImageTokens", "integer", "Tokens per image"),
        _column("Replicas", ".status.replicas", "integer", "Pods of the current Deployment"),
        _column("Ready", ".status.readyReplicas", "integer", "Ready pods"),
        _column("Age", ".metadata.creationTimestamp", "date", "Time since creation"),
    ]


def build_crd() -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of MultimodalModel."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


def render_crd(crd: dict[str, Any] | None = None) -> str:
    """The CRD as YAML: sorted keys, fixed width, so the same api.py gives the same bytes."""
    body = yaml.safe_dump(
        build_crd() if crd is None else crd,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return CRD_HEADER + body
