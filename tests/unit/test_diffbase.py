"""The light diff-base storage builds exactly kopf's essence."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from mmop.controller.diffbase import LightDiffBaseStorage

BODY: dict[str, Any] = {
    "apiVersion": "mmop.dev/v1alpha1",
    "kind": "MultimodalModel",
    "metadata": {
        "name": "m",
        "namespace": "ns",
        "uid": "u",
        "resourceVersion": "12",
        "generation": 3,
        "labels": {"team": "a"},
        "annotations": {
            "note": "kept",
            "mmop.dev/last-handled-configuration": '{"spec": {}}',
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "ownerReferences": [{"kind": "Thing", "name": "o", "uid": "x", "apiVersion": "v1"}],
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {"model": {"id": "Qwen/Qwen2-VL-2B-Instruct"}, "scaling": {"maxReplicas": 3}},
    "status": {"plan": {"args": ["--x"] * 50}, "conditions": [{"type": "Ready"}]},
}


@pytest.mark.parametrize(
    "extra",
    [None, [("spec",)], ["spec"], [("status", "conditions")], [("metadata", "generation")]],
)
def test_the_same_essence_as_kopfs_own_storage(extra: Any) -> None:
    ours = LightDiffBaseStorage(prefix="mmop.dev", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="mmop.dev", key="last-handled-configuration")
    body = kopf.Body(BODY)
    expected = kopfs.build(body=body, extra_fields=extra)
    assert ours.build(body=body, extra_fields=extra) == expected
    assert "status" not in expected or extra == [("status", "conditions")]


def test_the_essence_is_a_copy() -> None:
    ours = LightDiffBaseStorage(prefix="mmop.dev", key="last-handled-configuration")
    raw = {**BODY, "spec": {"model": {"id": "a"}}}
    essence = ours.build(body=kopf.Body(raw), extra_fields=[("spec",)])
    raw["spec"]["model"]["id"] = "b"
    assert essence["spec"]["model"]["id"] == "a"
