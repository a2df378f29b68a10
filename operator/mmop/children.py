"""A model's children (Deployment or LeaderWorkerSet, Service, PodDisruptionBudget, the weight
cache's claim and Job): what exists against what is
desired, and who owns them. Pure: the controller's watches hand in the records, and it acts on
the answer.

A child is the model's when its controller owner reference names the model's uid. What mmop
compares is the part of each object it sets (``projection``): labels, owner, and per kind the
fields it renders; the API server's defaults (a port's protocol, a Service's cluster IP) are
left alone, so a desired child "is in place" when every field mmop sets has the value mmop
wants (``covers``). A child that exists but is not the model's is a conflict: mmop never adopts
it (server-side apply with force would rewrite its selector and make the model its owner, so
deleting the model would delete it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmop.render import LWS_KIND, TEMPLATE_HASH

CHILD_KINDS = (
    "Deployment",
    LWS_KIND,
    "Service",
    "PodDisruptionBudget",
    "PersistentVolumeClaim",
    "Job",
)
# The spec fields mmop sets, per kind (the rest is the API server's or another controller's).
# A claim's and a Job's spec cannot change once created (a new checkpoint is a new Job): only
# their labels and owner are compared.
_SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("replicas",),
    LWS_KIND: ("replicas",),
    "Service": ("type", "selector", "ports"),
    "PodDisruptionBudget": ("maxUnavailable", "minAvailable", "selector"),
}


@dataclass(frozen=True)
class ChildRecord:
    """One existing child as a watch saw it: its kind and name, the uid of its controller
    owner (None: no controller), and the fields mmop compares (``projection``)."""

    kind: str
    name: str
    owner_uid: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildActions:
    """What a reconcile does with its rendered children."""

    apply: tuple[dict[str, Any], ...] = ()  # missing or different: server-side apply
    unknown: tuple[dict[str, Any], ...] = ()  # not seen by the watches: read before creating
    conflicts: tuple[str, ...] = ()  # "Service ns/name: why" — exists, not the model's


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of an object's controller owner (None: it has none)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid")) if ref.get("uid") else None
    return None


def projection(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a child that mmop sets: labels, and per kind its spec fields (for a
    Deployment: replicas and the pod template's hash, which stands for the whole template)."""
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    out: dict[str, Any] = {"labels": dict(meta.get("labels") or {})}
    out["spec"] = {k: spec[k] for k in _SPEC_FIELDS.get(kind, ()) if k in spec}
    if kind == "Deployment":
        annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations")
        out["templateHash"] = (annotations or {}).get(TEMPLATE_HASH)
    elif kind == LWS_KIND:  # both templates carry the hash of the pair
        leader = (spec.get("leaderWorkerTemplate") or {}).get("leaderTemplate") or {}
        annotations = (leader.get("metadata") or {}).get("annotations")
        out["templateHash"] = (annotations or {}).get(TEMPLATE_HASH)
    return out


def record(obj: Mapping[str, Any]) -> ChildRecord:
    """The record a watch keeps of an existing child."""
    meta = obj.get("metadata") or {}
    return ChildRecord(
        kind=str(obj.get("kind") or ""),
        name=str(meta.get("name") or ""),
        owner_uid=controller_uid(obj),
        fields=projection(obj),
    )


def covers(desired: Any, live: Any) -> bool:
    """Whether ``live`` holds every value of ``desired`` (maps: each desired key, recursively;
    lists: the same length, item by item; anything else: equal). Keys only ``live`` has — the
    API server's defaults — do not matter."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and covers(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list | tuple):
        return (
            isinstance(live, list | tuple)
            and len(desired) == len(live)
            and all(covers(d, x) for d, x in zip(desired, live, strict=True))
        )
    return bool(desired == live)


def in_place(desired: Mapping[str, Any], existing: ChildRecord | None, owner_uid: str) -> bool:
    """Whether the model's child ``desired`` exists, is the model's, and holds what mmop sets."""
    return (
        existing is not None
        and existing.owner_uid == owner_uid
        and covers(projection(desired), existing.fields)
    )


def compare(
    desired: Sequence[Mapping[str, Any]],
    existing: Mapping[str, ChildRecord | None],
    owner_uid: str,
    namespace: str,
) -> ChildActions:
    """What to do with each desired child given the ``existing`` ones by kind (as the watches
    saw them; None: not seen). A child owned by something else is a conflict, never applied."""
    apply: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    conflicts: list[str] = []
    for obj in desired:
        kind = str(obj["kind"])
        name = str(obj["metadata"]["name"])
        seen = existing.get(kind)
        if seen is None:
            unknown.append(dict(obj))
        elif seen.owner_uid != owner_uid:
            conflicts.append(conflict_message(kind, namespace, name, seen.owner_uid))
        elif not covers(projection(obj), seen.fields):
            apply.append(dict(obj))
    return ChildActions(apply=tuple(apply), unknown=tuple(unknown), conflicts=tuple(conflicts))


def conflict_message(kind: str, namespace: str, name: str, owner_uid: str | None) -> str:
    who = f"controlled by uid {owner_uid}" if owner_uid else "not created by this model"
    return (
        f"{kind} {namespace}/{name} already exists and is {who}; mmop does not take it over "
        f"(rename the model or remove the {kind})"
    )
