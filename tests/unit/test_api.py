"""The MultimodalModel spec: defaults, bounds, unknown fields, cross-field rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mmop.api import MultimodalModel, MultimodalModelSpec


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
