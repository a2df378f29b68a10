"""kopf's diff-base (the ``last-handled-configuration`` annotation), built without copying what
it throws away.

To tell whether a MultimodalModel changed, kopf builds its "essence" on every watch event: it
deep-copies the whole body, then deletes ``metadata`` (but labels and annotations) and
``status``. A model's status holds the plan (arguments, memory, alternatives, explanation,
decisions), so most of that copy is discarded at once: in the operator benchmark it was the
largest single cost in kopf's event processing. This storage hands kopf a lighter body — the
top-level fields but ``status``, and of ``metadata`` only what the essence keeps or the
annotation keys depend on — so kopf builds the same essence from far less. Handlers that watch a
field under ``status`` or ``metadata`` get the whole stanza.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

KEPT_METADATA = ("labels", "annotations", "ownerReferences")


class LightDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        fields = list(extra_fields or ())
        wanted = {self._top(f) for f in fields}
        light: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        meta = body.get("metadata") or {}
        if "metadata" in wanted:
            light["metadata"] = meta
        else:
            light["metadata"] = {k: meta[k] for k in KEPT_METADATA if k in meta}
        if "status" in wanted and "status" in body:
            light["status"] = body["status"]
        return super().build(body=kopf.Body(cast(kopf.RawBody, light)), extra_fields=fields)

    @staticmethod
    def _top(field: Any) -> str:
        if isinstance(field, str):
            return field.split(".", 1)[0]
        return str(next(iter(field), ""))
