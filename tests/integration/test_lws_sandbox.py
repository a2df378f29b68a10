"""The LeaderWorkerSet controller in the sandbox (``Sandbox(lws=True)``): a LeaderWorkerSet on
the fake GPU nodes gets its leader StatefulSet, leader and worker pods with the variables LWS's pod
webhook injects, and ready replicas once kwok makes the pods Ready; the LeaderWorkerSet mmop
renders for a multi-node plan is accepted as it is."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import Sandbox, SandboxState
from e2e.sandbox import lws as lws_parts
from e2e.sandbox.cluster import _pid_alive
from e2e.waiting import wait_for

from mmop.api import MultimodalModel
from mmop.inventory import default_inventory
from mmop.planner import plan
from mmop.render import (
    LWS_LEADER_ADDRESS_ENV,
    LWS_WORKER_INDEX_ENV,
    RenderOptions,
    render_multinode,
)

# tests/unit/test_multinode.py's big_plan: more than one 4 x L40S node.
BIG = "Qwen/Qwen3-235B-A22B-FP8"

SET_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
TIMEOUT = 90.0  # every wait below is bounded by this


@pytest.fixture(scope="module")
def lws_sandbox() -> Iterator[tuple[Sandbox, SandboxState]]:
    # No skip when the controller cannot be built or started: up() raises and the tests fail.
    box = Sandbox(f"pytest-lws-{os.getpid()}", prometheus=False, lws=True)
    state = box.up(timeout=180)
    try:
        yield box, state
    finally:
        box.down(quiet=True)


@pytest.fixture(scope="module")
def lws_client(lws_sandbox: tuple[Sandbox, SandboxState]) -> Any:
    from kubernetes import config

    return config.new_client_from_config(lws_sandbox[1].kubeconfig)


@pytest.fixture
def lws_namespace(lws_client: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(lws_client)
    name = f"lws-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def gpu_template(product: str, gpus: int) -> dict[str, Any]:
    """A pod template as mmop's GPU pods are: the GPU resource, the GPU node taint tolerated."""
    return {
        "metadata": {"labels": {"app": "lws-test"}},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": product},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/none:latest",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


def leader_worker_set(name: str, product: str, gpus: int, size: int) -> dict[str, Any]:
    return {
        "apiVersion": lws_parts.API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": size,
                "leaderTemplate": gpu_template(product, gpus),
                "workerTemplate": gpu_template(product, gpus),
            },
        },
    }


def env_of(pod: Any) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env or []}


def lws_pods(core: Any, namespace: str, name: str) -> dict[str, Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{SET_NAME_LABEL}={name}").items
    return {p.metadata.name: p for p in pods}


def test_the_sandbox_runs_the_controller_on_loopback(
    lws_sandbox: tuple[Sandbox, SandboxState],
) -> None:
    box, state = lws_sandbox
    assert _pid_alive(state.pids["lws"])
    assert (box.logs / "lws.log").stat().st_size > 0
    ports = {state.ports[k] for k in ("lws-webhook", "lws-metrics", "lws-health")}
    others = {v for k, v in state.ports.items() if not k.startswith("lws-")}
    assert len(ports) == 3 and not ports & others
    config = (box.root / "lws" / "config.yaml").read_text()
    assert "0.0.0.0" not in config and ":8443" not in config and ":8081" not in config


def test_a_leader_worker_set_gets_leader_and_worker_pods_with_lws_variables(
    lws_client: Any, lws_namespace: str
) -> None:
    from kubernetes import client

    core = client.CoreV1Api(lws_client)
    apps = client.AppsV1Api(lws_client)
    custom = client.CustomObjectsApi(lws_client)
    ns, name = lws_namespace, "pair"
    custom.create_namespaced_custom_object(
        lws_parts.GROUP,
        lws_parts.VERSION,
        ns,
        lws_parts.PLURAL,
        leader_worker_set(name, "NVIDIA-H100-80GB-HBM3", gpus=8, size=2),
    )
    # The leader StatefulSet (one leader per replica), and a worker StatefulSet per leader.
    wait_for(lambda: apps.list_namespaced_stateful_set(ns).items, "the leader StatefulSet", TIMEOUT)
    leader_sts = apps.read_namespaced_stateful_set(name, ns)
    assert leader_sts.spec.replicas == 1
    pods = wait_for(
        lambda: (p := lws_pods(core, ns, name)).keys() >= {f"{name}-0", f"{name}-0-1"} and p,
        "the leader and worker pods",
        TIMEOUT,
    )
    assert apps.read_namespaced_stateful_set(f"{name}-0", ns).spec.replicas == 1
    leader, worker = pods[f"{name}-0"], pods[f"{name}-0-1"]
    assert worker.metadata.labels[WORKER_INDEX_LABEL] == "1"
    assert leader.metadata.labels[WORKER_INDEX_LABEL] == "0"
    # Injected by LWS's mutating pod webhook.
    for pod, index in ((leader, "0"), (worker, "1")):
        env = env_of(pod)
        assert env[LWS_LEADER_ADDRESS_ENV] == f"{name}-0.{name}.{ns}", env
        assert env[LWS_WORKER_INDEX_ENV] == index
        assert env["LWS_GROUP_SIZE"] == "2"

    # Both scheduled on whole H100 nodes (the GPU taint tolerated), on two different nodes.
    def scheduled() -> dict[str, Any] | None:
        pods = lws_pods(core, ns, name)
        return pods if all(p.spec.node_name for p in pods.values()) else None

    placed = wait_for(scheduled, "the pods to be scheduled", TIMEOUT)
    nodes = [p.spec.node_name for p in placed.values()]
    assert len(set(nodes)) == 2
    for node in nodes:
        labels = core.read_node(node).metadata.labels
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    # kwok makes the pods Ready; the controller counts the group ready.
    status = wait_for(
        lambda: (
            (lws := custom.get_namespaced_custom_object_status(
                lws_parts.GROUP, lws_parts.VERSION, ns, lws_parts.PLURAL, name
            ))["status"].get("readyReplicas") == 1
            and lws["status"]
        ),
        "the LeaderWorkerSet to report 1 ready replica",
        TIMEOUT,
    )  # fmt: skip
    assert status["replicas"] == 1
    # The headless Service LWS_LEADER_ADDRESS resolves through.
    service = core.read_namespaced_service(name, ns)
    assert service.spec.cluster_ip == "None"


def _leaves(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))
    else:
        yield path, value


def _at(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def test_the_rendered_multinode_leader_worker_set_is_accepted_as_rendered(
    lws_client: Any, lws_namespace: str
) -> None:
    """render_multinode's object (Qwen3-235B-A22B-FP8 on L40S over two nodes) passes the CRD
    schema and the webhooks, keeps every field it sets (nothing pruned as unknown) and runs."""
    from kubernetes import client

    m = MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "big"},
            "spec": {"model": {"id": BIG}, "placement": {"gpuTypes": ["L40S"]}},
        }
    )
    big = plan(m, default_inventory(), multinode=True)
    assert big.nodes_per_replica == 2
    out = render_multinode("big", lws_namespace, None, m.spec, big, RenderOptions())
    body = out.leader_worker_set
    name = body["metadata"]["name"]
    assert name == "big-lws"
    custom = client.CustomObjectsApi(lws_client)
    args = (lws_parts.GROUP, lws_parts.VERSION, lws_namespace, lws_parts.PLURAL)
    dry = custom.create_namespaced_custom_object(*args, body, dry_run="All")
    created = custom.create_namespaced_custom_object(*args, body)
    for answer in (dry, created):
        for path, value in _leaves(body["spec"]):
            try:
                got = _at(answer["spec"], path)
            except (KeyError, IndexError):
                pytest.fail(f"spec {list(path)} was dropped by the API server (v0.9.0 CRD)")
            assert str(got) == str(value), f"spec {list(path)}: {got!r} != {value!r}"
    spec = created["spec"]
    assert spec["startupPolicy"] == "LeaderCreated"
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert spec["rolloutStrategy"]["type"] == "RollingUpdate"

    core = client.CoreV1Api(lws_client)
    size = big.nodes_per_replica
    want = {f"{name}-{r}" for r in range(big.replicas)} | {
        f"{name}-{r}-{w}" for r in range(big.replicas) for w in range(1, size)
    }
    pods = wait_for(
        lambda: (p := lws_pods(core, lws_namespace, name)).keys() >= want and p,
        f"the {len(want)} pods of big's {big.replicas} group(s)",
        TIMEOUT,
    )
    for pod_name, pod in pods.items():
        env = env_of(pod)
        group = pod.metadata.labels["leaderworkerset.sigs.k8s.io/group-index"]
        assert env[LWS_LEADER_ADDRESS_ENV] == f"{name}-{group}.{name}.{lws_namespace}", pod_name
        # What the workers' --node-rank=$(LWS_WORKER_INDEX) expands to.
        assert env[LWS_WORKER_INDEX_ENV] == pod.metadata.labels[WORKER_INDEX_LABEL], pod_name
    wait_for(
        lambda: (
            custom.get_namespaced_custom_object_status(*args, name)
            .get("status", {})
            .get("readyReplicas")
            == big.replicas
        ),
        f"big to report {big.replicas} ready replica(s)",
        TIMEOUT,
    )


# ------------------------------------------------------------------ the operator, --multinode


def _scale_up_as_the_autoscaler(ctx: Any, body: dict[str, Any], replicas: int) -> None:
    import asyncio
    import logging

    from mmop import autoscaler
    from mmop.api import Scaling
    from mmop.controller.autoscaling import _act

    decision = autoscaler.ScalingDecision(
        action=autoscaler.Action.SCALE_UP, replicas=replicas, reason="Saturated"
    )
    obs = autoscaler.observation(
        now_seconds=0.0, desired_replicas=1, ready_replicas=1, loads=(), ttft_p95_seconds=None,
        preemptions_per_second=None, oom_killed=(), plan={}, saved={}, consolidated=False,
    )  # fmt: skip
    assert ctx.indexes is not None
    taken, *_ = asyncio.run(
        _act(ctx, body, ctx.indexes, logging.getLogger("test"), decision, obs, Scaling(),
             autoscaler.State(), 0.0)
    )  # fmt: skip
    assert taken.action == autoscaler.Action.SCALE_UP, taken.message  # not ScaleRefused


def _service_or_none(core: Any, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return core.read_namespaced_service(name, namespace)
    except ApiException:
        return None


@pytest.fixture(scope="module")
def multinode_operator(lws_sandbox: tuple[Sandbox, SandboxState]) -> Iterator[Any]:
    from tests.integration.test_operator import in_process_operator

    with in_process_operator(lws_sandbox[1], multinode=True) as ctx:
        yield ctx


def test_the_operator_serves_a_model_over_two_nodes_as_a_leader_worker_set(
    lws_sandbox: tuple[Sandbox, SandboxState],
    lws_client: Any,
    lws_namespace: str,
    multinode_operator: Any,
) -> None:
    from kubernetes import client
    from tests.integration.test_operator import apply_manifest, condition, get_mm

    state, ns = lws_sandbox[1], lws_namespace
    custom, core = client.CustomObjectsApi(lws_client), client.CoreV1Api(lws_client)
    doc = {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "big"},
        "spec": {"model": {"id": BIG}, "placement": {"gpuTypes": ["L40S"]}},
    }
    apply_manifest(state, ns, doc)

    def group() -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found: dict[str, Any] = custom.get_namespaced_custom_object(
                "leaderworkerset.x-k8s.io", "v1", ns, "leaderworkersets", "big-lws"
            )
        except ApiException:
            return None
        return found

    lws = wait_for(group, "the model's LeaderWorkerSet", TIMEOUT)
    assert lws["spec"]["replicas"] == 1
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["metadata"]["ownerReferences"][0]["kind"] == "MultimodalModel"

    # Ready once the group's pods run on two whole L40S nodes.
    mm = wait_for(
        lambda: (
            (m := get_mm(state, ns, "big"))
            and (c := condition(m, "Ready"))
            and c["status"] == "True"
            and m
        ),
        "Ready=True on the model over two nodes",
        TIMEOUT,
    )
    assert mm["status"]["plan"]["nodesPerReplica"] == 2
    assert mm["status"]["readyReplicas"] == 1
    pods = core.list_namespaced_pod(ns, label_selector="mmop.dev/model=big").items
    assert len(pods) == 2
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2 and all(n for n in nodes)
    for n in nodes:
        assert core.read_node(n).metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-L40S"
    for p in pods:
        (engine,) = [c for c in p.spec.containers if c.name == "vllm"]
        assert engine.resources.limits["nvidia.com/gpu"] == "4"
        assert "--pipeline-parallel-size=2" in engine.args
    worker = next(p for p in pods if p.metadata.labels[WORKER_INDEX_LABEL] == "1")
    assert "--headless" in next(c for c in worker.spec.containers if c.name == "vllm").args
    service = core.read_namespaced_service("big", ns)
    assert service.spec.selector[WORKER_INDEX_LABEL] == "0"  # requests reach the leader only
    assert service.spec.cluster_ip != "None"
    # LWS's own headless Service, through which the workers resolve LWS_LEADER_ADDRESS.
    headless = wait_for(
        lambda: _service_or_none(core, ns, "big-lws"), "LWS's headless Service", TIMEOUT
    )
    assert headless.spec.cluster_ip == "None"
    assert headless.metadata.owner_references[0].kind == "LeaderWorkerSet"
    for p in pods:
        assert env_of(p)[LWS_LEADER_ADDRESS_ENV] == f"big-lws-0.big-lws.{ns}"

    # The autoscaler's write, made by the operator's own code (autoscaling._act: the scale
    # subresource of the workload found in the watches, by its own name, big-lws): a second group.
    _scale_up_as_the_autoscaler(multinode_operator, get_mm(state, ns, "big"), 2)
    mm = wait_for(
        lambda: (
            (m := get_mm(state, ns, "big"))
            and (m.get("status") or {}).get("readyReplicas") == 2
            and m
        ),
        "two ready groups mirrored into the model's status",
        TIMEOUT,
    )
    pods = core.list_namespaced_pod(ns, label_selector="mmop.dev/model=big").items
    assert len({p.spec.node_name for p in pods}) == 4  # every L40S node, one pod each

    # A worker lost (its node drained, its process killed): the whole group is recreated
    # (restartPolicy RecreateGroupOnPodRestart: a vLLM engine cannot take a new worker).
    leader = next(p for p in pods if p.metadata.name == "big-lws-0")
    core.delete_namespaced_pod("big-lws-0-1", ns)

    def recreated() -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            now = core.read_namespaced_pod("big-lws-0", ns)
        except ApiException:
            return False
        return bool(now.metadata.uid != leader.metadata.uid)

    wait_for(recreated, "the group's leader recreated after its worker was deleted", TIMEOUT)
    wait_for(
        lambda: (
            (m := get_mm(state, ns, "big"))
            and (m.get("status") or {}).get("readyReplicas") == 2
            and (condition(m, "Ready") or {}).get("status") == "True"
        ),
        "both groups ready again",
        TIMEOUT,
    )


def test_a_235b_vision_model_in_bf16_turns_ready_over_two_a100_40gb_nodes(
    lws_sandbox: tuple[Sandbox, SandboxState],
    lws_client: Any,
    lws_namespace: str,
    multinode_operator: Any,
) -> None:
    """Issue 18's case: Qwen3-VL-235B-A22B-Instruct kept in bf16 (~439 GiB of weights) is more
    than a node of 8x A100-40GB holds; with --multinode it becomes a LeaderWorkerSet of two pods,
    each on a whole A100-40GB node (tp 8 within the node, pp 2 across), and turns Ready."""
    from kubernetes import client
    from tests.integration.test_operator import apply_manifest, condition, get_mm

    state, ns = lws_sandbox[1], lws_namespace
    core = client.CoreV1Api(lws_client)
    custom = client.CustomObjectsApi(lws_client)
    doc = {
        "apiVersion": "mmop.dev/v1alpha1",
        "kind": "MultimodalModel",
        "metadata": {"name": "vl"},
        "spec": {
            "model": {"id": "Qwen/Qwen3-VL-235B-A22B-Instruct"},
            "placement": {"gpuTypes": ["A100-40GB"], "quantizations": ["none"]},
        },
    }
    apply_manifest(state, ns, doc)
    mm = wait_for(
        lambda: (
            (m := get_mm(state, ns, "vl"))
            and (c := condition(m, "Ready"))
            and c["status"] == "True"
            and m
        ),
        "Ready=True on the 235B vision model over two A100-40GB nodes",
        TIMEOUT,
    )
    planned = mm["status"]["plan"]
    assert planned["nodesPerReplica"] == 2
    assert planned["quantization"] == "none"  # kept as asked: no quantization to squeeze it
    assert (planned["gpusPerReplica"], planned["pipelineParallelSize"]) == (16, 2)
    assert planned["gpuProduct"] == "NVIDIA-A100-SXM4-40GB"
    lws = custom.get_namespaced_custom_object(
        lws_parts.GROUP, lws_parts.VERSION, ns, lws_parts.PLURAL, "vl-lws"
    )
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    pods = core.list_namespaced_pod(ns, label_selector="mmop.dev/model=vl").items
    assert len(pods) == 2
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 2 and all(nodes)
    for n in nodes:
        labels = core.read_node(n).metadata.labels
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    for p in pods:
        (engine,) = [c for c in p.spec.containers if c.name == "vllm"]
        assert engine.resources.limits["nvidia.com/gpu"] == "8"
        assert "--tensor-parallel-size=8" in engine.args
        assert "--pipeline-parallel-size=2" in engine.args
        assert not any(a.startswith("--quantization") for a in engine.args)
