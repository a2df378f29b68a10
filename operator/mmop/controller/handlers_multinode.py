"""The kopf registrations for replicas over several nodes (``mmop run --multinode``): the watch of
the LeaderWorkerSets mmop manages. Loaded beside handlers.py only with ``--multinode``
(runner.load_handlers), so an operator without it neither needs the LWS CRD nor the right to
read its objects. Nothing imports this module.
"""

from __future__ import annotations

from typing import Any

import kopf

from mmop.controller.context import context_of
from mmop.controller.workload import mirror_workload, model_of, workload_record
from mmop.render import LABEL_MANAGED_BY, LWS_API_VERSION, MANAGER

LWS_GROUP, LWS_VERSION = LWS_API_VERSION.split("/")
MANAGED = {LABEL_MANAGED_BY: MANAGER}


@kopf.index(LWS_GROUP, LWS_VERSION, "leaderworkersets", labels=MANAGED)
async def mmop_groups(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
) -> Any:
    """The LeaderWorkerSets mmop manages, as the Deployments' index keeps them (groups as
    replicas, with the pods per group)."""
    context_of(memo).inventory.changed()
    return {(namespace, model_of(body, name)): workload_record(body, name)}


@kopf.on.event(LWS_GROUP, LWS_VERSION, "leaderworkersets", labels=MANAGED)
async def group_changed(
    body: kopf.Body, type: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Mirror the LeaderWorkerSet's group counts and readiness into the model's status."""
    await mirror_workload(context_of(memo), body, type, logger)
