"""The calibration loop's I/O: each new engine's KV cache recorded against its plan's
prediction (``mmop.calibration``, pure), kept in the operator context and in a ConfigMap
(``OperatorConfig.calibration_configmap``), so that later plans of the same configuration —
of any model, in any namespace, after a restart — use what the engines reported.

The ConfigMap is read once at start-up and written at most every ``SAVE_SECONDS`` when
something new was observed (server-side apply of its data; it is the operator's own object).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmop.calibration import CalibrationStore, Observed, key_of_plan
from mmop.vllm import PINNED_VLLM_VERSION

log = logging.getLogger("mmop.controller")

# Seconds between writes of the ConfigMap at most.
SAVE_SECONDS = 30.0


@dataclass
class CalibrationState:
    """The store as the operator holds it, and whether the ConfigMap lags behind it."""

    store: CalibrationStore = field(default_factory=CalibrationStore.empty)
    dirty: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def observe_engines(
        self,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        engines: Sequence[tuple[str, float]],
    ) -> list[tuple[str, Observed]]:
        """Record the KV cache of each engine (pod name, tokens) of a model against its plan;
        returns what was newly recorded."""
        plan = status.get("plan") or {}
        memory = plan.get("memory") or {}
        predicted = memory.get("kv_cache_tokens")
        extra = [str(a) for a in ((spec.get("engine") or {}).get("extraArgs") or [])]
        key = key_of_plan(plan, extra, PINNED_VLLM_VERSION)
        if key is None or not predicted:
            return []
        # The prediction before any calibration was applied to it: the ratio's base.
        scale = float(plan.get("kvMemoryScale") or 1.0)
        raw = max(1, round(int(predicted) / scale)) if scale > 0 else int(predicted)
        out = []
        with self.lock:
            for pod, tokens in engines:
                self.store, seen = self.store.observe(key, pod, raw, int(tokens))
                if seen is not None:
                    out.append((pod, seen))
                    self.dirty = True
        return out


def configmap_ref(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    namespace, _, name = value.partition("/")
    return (namespace, name) if namespace and name else None


def load(ctx: Any) -> None:
    """Read the store from the ConfigMap (a missing or unreadable one: an empty store)."""
    ref = configmap_ref(ctx.config.calibration_configmap)
    if ref is None:
        return
    try:
        data = ctx.kube().config_map_data(*ref)
    except Exception as err:  # the API server away at start-up: start empty, save later
        log.warning(f"calibration ConfigMap {ref[0]}/{ref[1]} not read: {type(err).__name__}")
        return
    with ctx.calibration.lock:
        ctx.calibration.store = CalibrationStore.from_data(data)
    log.info(
        f"calibration: {len(ctx.calibration.store.records)} configuration(s) from {ref[0]}/{ref[1]}"
    )


def save(ctx: Any) -> bool:
    """Write the ConfigMap when the store changed; returns whether it wrote."""
    ref = configmap_ref(ctx.config.calibration_configmap)
    state: CalibrationState = ctx.calibration
    if ref is None or not state.dirty:
        return False
    with state.lock:
        data, state.dirty = state.store.to_data(), False
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ref[1],
            "namespace": ref[0],
            "labels": {"app.kubernetes.io/managed-by": "mmop"},
        },
        "data": data,
    }
    try:
        ctx.kube().apply_config_map(body)
    except Exception:
        state.dirty = True  # written next time
        raise
    return True


async def save_loop(ctx: Any, every: float = SAVE_SECONDS) -> None:
    """Write the ConfigMap when something new was observed, at most every ``every`` s."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(save, ctx)
        except Exception as err:  # the API server away: written next time
            log.warning(f"calibration not saved: {type(err).__name__}: {err}")
