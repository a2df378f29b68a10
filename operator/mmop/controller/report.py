"""What the operator tells users: status writes (only what changed, with optimistic
concurrency) and Events. The content comes from the pure ``mmop.status``."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mmop.controller.kube import Kube
from mmop.status import Cond, status_changes

log = logging.getLogger("mmop.controller")


class NotPlannedYet(Exception):
    """The model has no plan in its status yet (the reconcile that writes one is under way)."""


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(
    kube: Kube,
    namespace: str,
    name: str,
    fields: Mapping[str, Any],
    conds: Sequence[Cond],
    current: Mapping[str, Any] | None = None,
    planned_only: bool = False,
) -> bool:
    """Set status fields and merge conditions against the object's current status; nothing is
    written when nothing changes. ``planned_only``: raise NotPlannedYet instead of writing
    before the reconcile has written a plan (it writes these fields too). Returns whether it
    wrote."""

    def changes(obj: Mapping[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        if planned_only and not status.get("plan"):
            raise NotPlannedYet
        generation = (obj.get("metadata") or {}).get("generation")
        return status_changes(status, generation, fields, conds, now_rfc3339())

    return kube.update_status(namespace, name, changes, current=current)


def post_event(kube: Kube, body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """An Event on the model. Posting one never fails the work it reports: a refused Event is
    logged and the work goes on."""
    try:
        kube.event(body, kind, reason, message)
    except Exception as err:  # the decision stands; only its Event is lost
        log.warning(f"event {reason} not posted: {type(err).__name__}: {err}")
