"""A model's children against what exists: missing, changed, or someone else's (mmop.children)."""

from __future__ import annotations

from typing import Any

from mmop.children import ChildRecord, compare, covers, in_place, record

UID = "11111111-2222-3333-4444-555555555555"


def service(owner: str | None = UID, selector: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "m",
        "namespace": "ns",
        "labels": {"app.kubernetes.io/managed-by": "mmop", "mmop.dev/model": "m"},
    }
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": True, "kind": "MultimodalModel"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector or {"mmop.dev/model": "m"},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def live(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server returns it: defaults and fields of its own added."""
    out = {**obj, "spec": {**obj["spec"], "clusterIP": "10.96.0.7", "sessionAffinity": "None"}}
    out["spec"]["ports"] = [{**p, "nodePort": None} for p in obj["spec"]["ports"]]
    return out


def test_a_child_in_place_needs_nothing_despite_the_servers_defaults() -> None:
    desired = service()
    actions = compare([desired], {"Service": record(live(desired))}, UID, "ns")
    assert actions.apply == () and actions.unknown == () and actions.conflicts == ()
    assert in_place(desired, record(live(desired)), UID)


def test_a_missing_child_is_read_before_it_is_created() -> None:
    """Not seen by the watches: it may exist without mmop's labels, so it is looked up first."""
    actions = compare([service()], {"Service": None}, UID, "ns")
    assert [o["kind"] for o in actions.unknown] == ["Service"] and actions.apply == ()
    assert not in_place(service(), None, UID)


def test_a_changed_child_is_applied_again() -> None:
    edited = live(service(selector={"app": "someone-else"}))
    actions = compare([service()], {"Service": record(edited)}, UID, "ns")
    assert [o["kind"] for o in actions.apply] == ["Service"]


def test_someone_elses_object_is_a_conflict_never_applied() -> None:
    for owner in (None, "another-uid"):
        theirs = record(live(service(owner=owner, selector={"app": "theirs"})))
        actions = compare([service()], {"Service": theirs}, UID, "ns")
        assert actions.apply == () and actions.unknown == ()
        (conflict,) = actions.conflicts
        assert "Service ns/m already exists" in conflict
        assert not in_place(service(), theirs, UID)


def test_covers_compares_what_mmop_sets_only() -> None:
    assert covers({"a": 1, "b": [{"x": 1}]}, {"a": 1, "b": [{"x": 1, "y": 2}], "c": 3})
    assert not covers({"b": [{"x": 1}]}, {"b": [{"x": 1}, {"x": 2}]})
    assert not covers({"a": {"k": "v"}}, {"a": {"k": "w"}})
    assert not covers({"a": 1}, {})


def test_a_deployment_record_stands_for_its_template_by_the_hash() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "m", "ownerReferences": [{"uid": UID, "controller": True}]},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"annotations": {"mmop.dev/template-hash": "abc"}}},
        },
    }
    rec = record(dep)
    assert rec == ChildRecord(
        "Deployment", "m", UID, {"labels": {}, "spec": {"replicas": 2}, "templateHash": "abc"}
    )
    scaled = {**dep, "spec": {**dep["spec"], "replicas": 3}}
    assert [o["kind"] for o in compare([scaled], {"Deployment": rec}, UID, "ns").apply] == [
        "Deployment"
    ]
