"""Reliability drills against the operator as a process (`mmop run --all-namespaces`), judged
from outside through the API server: lost children are repaired (R1), objects the operator does
not own are left alone (R3), random SIGKILLs during churn converge with nothing written on a
settled restart (drill b), and the API server paused under load is ridden out (drill c).

The full forms are `python -m bench.reliability.kills` and `python -m bench.reliability.pause`
(figures in docs/reliability.md); these are their bounded forms.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bench.reliability.drill import (
    Api,
    OperatorProcess,
    condition,
    install_crd,
    kill_drill,
    manifest,
    sandbox_of,
    wait_converged,
    wait_until,
)
from bench.reliability.pause import pause_drill
from e2e.sandbox import SandboxState

# The condition a model shows when an object it would create already exists and is not its
# own (R3): type, status, reason.
CONFLICT = ("Ready", "False", "ChildConflict")
# How long a lost child may stay lost while the operator runs (R1).
REPAIR_SECONDS = 60
# How long a model may take to become Ready on kwok's pods.
READY_SECONDS = 90


@pytest.fixture(scope="module")
def api(sandbox: SandboxState) -> Api:
    install_crd(sandbox)
    return Api(sandbox)


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState, api: Api) -> Iterator[OperatorProcess]:
    op = OperatorProcess(sandbox_of(sandbox))
    op.start()
    try:
        yield op
    finally:
        op.kill()


@pytest.fixture
def live_operator(operator: OperatorProcess) -> OperatorProcess:
    """The module's operator, started again if a test left it stopped."""
    if not operator.alive():
        operator.start()
    return operator


@pytest.fixture
def namespaces(api: Api) -> Iterator[list[str]]:
    """Two fresh namespaces, deleted afterwards."""
    names = [f"rel-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        api.create_namespace(name)
    try:
        yield names
    finally:
        for name in names:
            api.delete_namespace(name)


def ready_model(api: Api, namespace: str, name: str, index: int = 0) -> dict[str, Any]:
    """Create a drill model and wait until it is Ready with all three children."""
    api.create_model(namespace, manifest(name, index))

    def ready() -> dict[str, Any] | None:
        mm = api.model(namespace, name)
        cond = condition(mm, "Ready")
        if not (cond and cond["status"] == "True"):
            return None
        kids = [api.child(namespace, k, name) for k in ("Deployment", "Service")]
        return mm if all(kids) else None

    try:
        return dict(wait_until(f"{namespace}/{name} Ready", ready, READY_SECONDS))
    except AssertionError as err:
        mm = api.model(namespace, name) or {}
        conditions = (mm.get("status") or {}).get("conditions")
        raise AssertionError(f"{err}; its conditions: {conditions}") from None


def returns(api: Api, namespace: str, kind: str, name: str, old_uid: str, timeout: float) -> Any:
    def back() -> dict[str, Any] | None:
        obj = api.child(namespace, kind, name)
        return obj if obj and obj["metadata"]["uid"] != old_uid else None

    return wait_until(f"the {kind} {namespace}/{name} to be recreated", back, timeout)


# ---------------------------------------------------------------------------------------- R1


@pytest.mark.parametrize("kind", ["Service", "PodDisruptionBudget"])
def test_a_child_deleted_by_hand_is_recreated(
    api: Api, live_operator: OperatorProcess, namespaces: list[str], kind: str
) -> None:
    ns = namespaces[0]
    ready_model(api, ns, "lost-child")
    old = api.child(ns, kind, "lost-child")
    assert old is not None
    api.delete_child(ns, kind, "lost-child")
    obj = returns(api, ns, kind, "lost-child", old["metadata"]["uid"], REPAIR_SECONDS)
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "MultimodalModel"


def _refusal(mm: dict[str, Any] | None, words: tuple[str, ...]) -> dict[str, Any] | None:
    """A condition that says something is wrong and quotes the refusal (one of ``words``)."""
    for cond in ((mm or {}).get("status") or {}).get("conditions") or []:
        bad = cond.get("status") == ("True" if cond.get("type") == "Degraded" else "False")
        if bad and any(w in str(cond.get("message", "")).lower() for w in words):
            return dict(cond)
    return None


def test_a_service_refused_by_a_quota_shows_on_the_model_and_heals(
    api: Api, live_operator: OperatorProcess, namespaces: list[str]
) -> None:
    ns = namespaces[0]
    api.core.create_namespaced_resource_quota(
        ns, {"metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}}
    )
    wait_until(
        "the quota's status",
        lambda: api.core.read_namespaced_resource_quota("no-services", ns).status or {},
        30,
    )
    api.create_model(ns, manifest("quota", 0))
    mm = wait_until(
        "a condition on the model naming the quota's refusal",
        lambda: _refusal(api.model(ns, "quota"), ("quota",)) and api.model(ns, "quota"),
        REPAIR_SECONDS,
    )
    assert api.child(ns, "Service", "quota") is None
    ready = condition(mm, "Ready")
    assert not (ready and ready["status"] == "True"), f"Ready=True without a Service: {ready}"

    api.core.delete_namespaced_resource_quota("no-services", ns)
    wait_until(
        "the Service once the quota is gone",
        lambda: api.child(ns, "Service", "quota"),
        REPAIR_SECONDS + 30,
    )
    wait_until(
        "Ready=True and no refusal left",
        lambda: (
            (m := api.model(ns, "quota"))
            and (c := condition(m, "Ready"))
            and c["status"] == "True"
            and not _refusal(m, ("quota",))
        ),
        READY_SECONDS,
    )


def test_children_deleted_while_the_operator_is_down_return_on_restart(
    api: Api, live_operator: OperatorProcess, namespaces: list[str]
) -> None:
    ns = namespaces[0]
    ready_model(api, ns, "down")
    service = api.child(ns, "Service", "down")
    pdb = api.child(ns, "PodDisruptionBudget", "down")
    assert service and pdb
    live_operator.kill(signal.SIGKILL)
    api.delete_child(ns, "Service", "down")
    api.delete_child(ns, "PodDisruptionBudget", "down")
    live_operator.start()
    returns(api, ns, "Service", "down", service["metadata"]["uid"], REPAIR_SECONDS)
    returns(api, ns, "PodDisruptionBudget", "down", pdb["metadata"]["uid"], REPAIR_SECONDS)


# ---------------------------------------------------------------------------------------- R3


def test_a_service_it_does_not_own_is_not_taken_over(
    api: Api, live_operator: OperatorProcess, namespaces: list[str]
) -> None:
    ns = namespaces[0]
    theirs = {
        "metadata": {"name": "taken", "labels": {"app": "someone-else"}},
        "spec": {
            "selector": {"app": "someone-else"},
            "ports": [{"name": "web", "port": 80, "targetPort": 8080}],
        },
    }
    api.core.create_namespaced_service(ns, theirs)
    api.create_model(ns, manifest("taken", 0))
    # The operator has acted on the model: it wrote a condition or created its Deployment.
    wait_until(
        "the operator to handle the model",
        lambda: (
            condition(api.model(ns, "taken"), "Planned") or api.child(ns, "Deployment", "taken")
        ),
        REPAIR_SECONDS,
    )
    time.sleep(3)  # the rest of that reconcile's writes

    def untouched() -> None:
        svc = api.core.read_namespaced_service("taken", ns)
        assert svc.spec.selector == {"app": "someone-else"}, svc.spec.selector
        assert not svc.metadata.owner_references, svc.metadata.owner_references
        assert svc.metadata.labels == {"app": "someone-else"}, svc.metadata.labels

    untouched()
    ctype, status, reason = CONFLICT
    cond = wait_until(
        f"{ctype}={status} reason={reason} on the model",
        lambda: (
            (c := condition(api.model(ns, "taken"), ctype))
            and c["status"] == status
            and c["reason"] == reason
            and c
        ),
        REPAIR_SECONDS,
    )
    assert "Service" in cond["message"] and "taken" in cond["message"], cond
    untouched()

    api.delete_model(ns, "taken")
    wait_until("the model to go", lambda: api.model(ns, "taken") is None, 60)
    wait_until(
        "its own children to be collected",
        lambda: (
            api.child(ns, "Deployment", "taken") is None
            and api.child(ns, "PodDisruptionBudget", "taken") is None
        ),
        60,
    )
    time.sleep(3)  # the garbage collector had its chance at the Service too
    untouched()


# ---------------------------------------------------------------------------------- drills


def test_random_kills_during_churn_converge_and_a_settled_restart_writes_nothing(
    sandbox: SandboxState, live_operator: OperatorProcess, namespaces: list[str]
) -> None:
    """Drill (b), bounded: 6 SIGKILLs over 20 models created, edited and deleted."""
    report = kill_drill(
        sandbox, namespaces, models=20, kills=6, seed=15, op=live_operator, converge_timeout=120
    )
    assert report.kills == 6
    assert not report.problems, report.lines()
    restart = report.restart
    assert restart.resumed >= restart.models, report.lines()
    assert restart.stale == [], restart.stale  # status shows its Deployment before a restart
    assert restart.changed == [], restart.what_changed
    assert restart.total == 0, report.lines()


def test_the_api_server_paused_under_load_is_ridden_out(
    sandbox: SandboxState, api: Api, live_operator: OperatorProcess, namespaces: list[str]
) -> None:
    """Drill (c), bounded: SIGSTOP of the API server for 20 s while models are created."""
    pid = live_operator.pid
    report = pause_drill(sandbox, namespaces, models=8, pause_seconds=20, op=live_operator)
    assert report.operator_same_process and live_operator.pid == pid, report.lines()
    assert report.operator_starts == 1
    wait_converged(api, namespaces, 10)
