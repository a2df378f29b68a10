"""The sandbox serves chosen pods with the real engine: mmop plans and renders an example, the
Deployment's pod (labelled sandbox.mmop.dev/serve=vllm) runs vLLM's CPU build with the rendered
argv on a tiny model of the same family, turns Ready, and answers image chats and /metrics at
its pod address. One engine at a time: Qwen2-VL first, then LLaVA."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.engine.images import png_data_url
from e2e.engine.load import chat
from e2e.engine.scenario import (
    EXAMPLES,
    PRESSURE_FLAGS,
    PRESSURE_IMAGE_SIZE,
    PRESSURE_IMAGES,
    PRESSURE_KV_TOKENS,
    PRESSURE_MAX_TOKENS,
    PRESSURE_REQUESTS,
)
from e2e.sandbox import Sandbox, SandboxState
from e2e.sandbox.podserver import REAL_ENGINE, SERVE_LABEL
from e2e.waiting import WaitTimeout, wait_for

from mmop.api import MultimodalModel
from mmop.inventory import default_inventory
from mmop.metrics import parse_exposition, parse_startup_log
from mmop.planner import plan
from mmop.render import RenderOptions, render
from mmop.vllm import OPENAI_PORT

EXAMPLE_QWEN = "qwen2.5-vl-7b.yaml"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxState]:
    box = Sandbox(f"engine-{os.getpid()}", prometheus=False)
    state = box.up(timeout=180)
    try:
        yield state
    finally:
        box.down(quiet=True)


@pytest.fixture(scope="module")
def api(sandbox: SandboxState) -> Any:
    from kubernetes import config

    return config.new_client_from_config(sandbox.kubeconfig)


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"e-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


def served_example(example: str, namespace: str) -> tuple[MultimodalModel, dict[str, Any]]:
    manifest = MultimodalModel.model_validate(yaml.safe_load((EXAMPLES / example).read_text()))
    planned = plan(manifest, default_inventory())
    options = RenderOptions(extra_pod_labels={SERVE_LABEL: REAL_ENGINE})
    rendered = render(
        manifest.metadata.name, namespace, None, manifest.spec, planned, options, replicas=1
    )
    return manifest, rendered.deployment


def planned_max_model_len(deployment: dict[str, Any]) -> int:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return int(next(a for a in args if a.startswith("--max-model-len=")).split("=")[1])


def health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.parametrize(
    ("example", "image"),
    [("qwen2.5-vl-7b.yaml", (640, 480)), ("llava-next-mistral-7b.yaml", (800, 600))],
)
def test_rendered_pod_is_served_by_vllm(
    api: Any, namespace: str, sandbox: SandboxState, example: str, image: tuple[int, int]
) -> None:
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    manifest, deployment = served_example(example, namespace)
    name = deployment["metadata"]["name"]
    from kubernetes.dynamic import DynamicClient

    deployments = DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment")
    deployments.create(body=deployment, namespace=namespace)  # as rendered: plain dicts
    wait_for(
        lambda: apps.read_namespaced_deployment(name, namespace).status.ready_replicas == 1,
        f"{example}: the real engine to make its pod Ready",
        timeout=300,
        interval=1.0,
    )
    pod = core.list_namespaced_pod(namespace).items[0]
    url = f"http://{pod.status.pod_ip}:{OPENAI_PORT}"
    served_name = manifest.metadata.name
    width, height = image
    answer = chat(url, served_name, [png_data_url(width, height, seed=1)], max_tokens=8)
    assert answer.status == 200, answer.error
    assert answer.completion_tokens == 8 and answer.prompt_tokens > 50

    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        scrape = parse_exposition(resp.read().decode(), pod.metadata.name, 0.0)
    assert scrape.counters["request_success"] == 1
    assert scrape.counters["mm_cache_queries"] == 1
    assert scrape.gauges["kv_cache_usage"] == 0.0

    # the pod server keeps the engine's log per pod: mmop reads the start-up report from it
    log = Path(sandbox.root) / "pods" / f"{namespace}_{pod.metadata.name}.log"
    report = parse_startup_log(log.read_text(errors="replace"))
    assert report.kv_cache_device == "CPU"
    assert report.kv_cache_tokens is not None and report.kv_cache_tokens > 0
    assert report.max_model_len_tokens == planned_max_model_len(deployment)

    apps.delete_namespaced_deployment(name, namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, "the pod to be deleted", 60)
    wait_for(lambda: not health(url), "the engine to stop with its pod", timeout=60)


def test_the_autoscaler_reads_the_real_engine_under_traffic(
    sandbox: SandboxState, namespace: str
) -> None:
    """The operator in-process, the Qwen2.5-VL example served by the real engine with a KV cache
    shrunk to 2,560 tokens (PRESSURE_FLAGS), mode External (one engine fits this machine, so the
    autoscaler recommends rather than starts a second): four image chats at once fill the KV
    cache and queue; mmop scrapes the engine's own /metrics, records the scale-up it would make,
    and reports the KV cache the engine really has next to the one it planned."""
    rounds = 12  # chats per client at most: the autoscaler speaks within a few

    from tests.integration.test_operator import (
        apply_manifest,
        example,
        get_mm,
        in_process_operator,
    )

    annotations = {"sandbox.mmop.dev/engine-args": " ".join(PRESSURE_FLAGS)}
    doc = example(EXAMPLE_QWEN)
    name = doc["metadata"]["name"]
    doc["spec"]["replicas"] = 1
    doc["spec"]["scaling"] = {
        "mode": "External",
        "minReplicas": 1,
        "maxReplicas": 2,
        "behavior": {"windowSeconds": 5, "scaleUpCooldownSeconds": 0},
    }
    # The CPU engine answers /metrics from a process that shares two busy cores with its engine
    # core: a scrape can take longer than the operator's 2 s default while the chats run.
    with in_process_operator(
        sandbox, annotations, serve=REAL_ENGINE, scrape_timeout_seconds=15.0
    ) as operator:
        apply_manifest(sandbox, namespace, doc)
        wait_for(
            lambda: (
                ((get_mm(sandbox, namespace, name).get("status") or {}).get("readyReplicas")) == 1
            ),
            "the real engine's pod Ready",
            timeout=300,
            interval=1.0,
        )
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(sandbox.kubeconfig))
        pod = core.list_namespaced_pod(namespace).items[0]
        url = f"http://{pod.status.pod_ip}:{OPENAI_PORT}"
        images = [
            [
                png_data_url(*PRESSURE_IMAGE_SIZE, seed=20_000 + 10 * r + k)
                for k in range(PRESSURE_IMAGES)
            ]
            for r in range(PRESSURE_REQUESTS)
        ]
        answers: list[Any] = []
        stop = threading.Event()

        def pressure(imgs: list[str]) -> None:
            # One of PRESSURE_REQUESTS clients, each asking again as soon as it is answered
            # until the autoscaler has spoken: the engine never drains between rounds, so any
            # tick (and the one before it, which the scale-up window also counts) sees the
            # pressure. Bounded in count and time.
            deadline = time.monotonic() + 280
            for _ in range(rounds):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                answers.append(chat(url, name, imgs, max_tokens=PRESSURE_MAX_TOKENS))

        def recommended() -> dict[str, Any] | None:
            for d in (get_mm(sandbox, namespace, name).get("status") or {}).get("decisions") or []:
                if d["reason"] == "ExternalScaling" and "would set 2 replicas" in d["message"]:
                    return dict(d)
            return None

        clients = [threading.Thread(target=pressure, args=(i,), daemon=True) for i in images]
        for client_thread in clients:
            client_thread.start()
        try:
            decision = wait_for(recommended, "the autoscaler's recommendation", timeout=300)
        except WaitTimeout as timeout:
            # What the autoscaler saw and said instead: its decisions, state and conditions.
            status = get_mm(sandbox, namespace, name).get("status") or {}
            seen = {k: status.get(k) for k in ("decisions", "autoscaler", "conditions", "plan")}
            pods = [
                (p.metadata.name, p.status.phase) for p in core.list_namespaced_pod(namespace).items
            ]
            raise AssertionError(f"{timeout}; pods {pods}; status {seen}") from timeout
        finally:
            stop.set()
            for client_thread in clients:
                client_thread.join(timeout=600)
        assert answers and all(a.status == 200 for a in answers), answers
        assert decision is not None and decision["action"] == "Hold"
        # Read off the engine's own /metrics: its KV cache and queue (Saturated,
        # LowSpareCapacity), its arrivals and queue against what a replica finishes
        # (DemandForecast), or its TTFT histogram (SloMissed; the CPU engine is far slower than
        # the GPU the plan is for).
        reasons = ("Saturated", "LowSpareCapacity", "DemandForecast", "SloMissed")
        assert any(r in decision["message"] for r in reasons), decision
        labels = {"namespace": namespace, "model": name}
        observed = operator.telemetry.registry.get_sample_value(
            "mmop_model_kv_cache_tokens", {**labels, "source": "observed"}
        )
        assert observed == PRESSURE_KV_TOKENS  # the engine's own cache_config_info
        predicted = operator.telemetry.registry.get_sample_value(
            "mmop_model_kv_cache_tokens", {**labels, "source": "predicted"}
        )
        assert predicted is not None and predicted > PRESSURE_KV_TOKENS  # planned for a GPU
        # Only a recommendation: the Deployment keeps the one replica spec.replicas asks for.
        assert get_mm(sandbox, namespace, name)["status"]["replicas"] == 1


def test_the_real_engines_kv_cache_calibrates_later_plans(
    sandbox: SandboxState, namespace: str
) -> None:
    """The calibration loop on the real engine: vLLM's CPU build serves the Qwen2.5-VL example
    with a KV cache of 90 % of what mmop planned for the GPU (``--num-gpu-blocks-override``);
    the operator reads it from the engine's own ``vllm:cache_config_info``, records it against
    the plan in its ConfigMap, posts a KvCacheObserved Event, and the next plan of that
    configuration uses the engine's figure. (At 90 % no re-plan is due, so one engine runs:
    the sandbox test shows the re-plan with the stand-in.)"""
    import json as _json

    from tests.integration.test_operator import (
        apply_manifest,
        example,
        get_mm,
        in_process_operator,
        kubectl,
    )

    from mmop.calibration import key_of_plan
    from mmop.inventory import inventory_from_objects
    from mmop.planner import Limits

    doc = example(EXAMPLE_QWEN)
    name = doc["metadata"]["name"]
    doc["spec"]["replicas"] = 1
    doc["spec"]["scaling"] = {"mode": "Off", "minReplicas": 1, "maxReplicas": 1}
    nodes = _json.loads(kubectl(sandbox, "get", "nodes", "-o", "json"))["items"]
    inventory = inventory_from_objects(nodes, [])
    manifest = MultimodalModel.model_validate(doc)
    predicted = plan(manifest, inventory).memory.kv_cache_tokens
    blocks = int(predicted * 0.9) // 128  # the CPU backend's block size
    engine_args = f"--max-model-len=2048 --max-num-seqs=8 --num-gpu-blocks-override={blocks}"
    annotations = {"sandbox.mmop.dev/engine-args": engine_args}
    store = f"{namespace}/mmop-calibration"
    with in_process_operator(
        sandbox, annotations, serve=REAL_ENGINE, calibration_configmap=store,
        autoscale_interval_seconds=2.0,
    ) as operator:  # fmt: skip
        apply_manifest(sandbox, namespace, doc)
        status = wait_for(
            lambda: (
                (s := get_mm(sandbox, namespace, name).get("status") or {}).get("readyReplicas")
                == 1
                and s
            ),
            "the real engine's pod Ready",
            timeout=300,
            interval=1.0,
        )
        assert status["plan"]["memory"]["kv_cache_tokens"] == predicted
        key = key_of_plan(status["plan"], [], "0.32.0")
        assert key is not None
        found = wait_for(
            lambda: operator.calibration.store.lookup(key), "the engine's KV cache recorded", 60
        )
        assert found.observed_tokens == blocks * 128 and found.startups == 1
        events = _json.loads(kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json"))
        assert any(
            e["reason"] == "KvCacheObserved" and e["type"] == "Normal" for e in events["items"]
        )
        later = plan(manifest, inventory, limits=Limits(kv_calibration=operator.calibration.store))
        assert abs(later.kv_memory_scale - blocks * 128 / predicted) < 1e-3
        assert abs(later.memory.kv_cache_tokens - blocks * 128) <= 0.02 * blocks * 128
        assert any("calibrated from 1 start-up(s)" in n for n in later.notes)
        saved = wait_for(
            lambda: _json.loads(
                kubectl(sandbox, "get", "configmap", "mmop-calibration", "-n", namespace,
                        "-o", "json", "--ignore-not-found") or "{}"
            ).get("data"),
            "the calibration ConfigMap",
            60,
        )  # fmt: skip
        assert [_json.loads(v)["observed_tokens"] for v in saved.values()] == [blocks * 128]


def engine_memory_mib() -> int:
    """Resident memory of the vLLM CPU engines this machine runs now (every process whose
    command line names vLLM's API server or its engine core), MiB."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if b"vllm" not in cmdline and "VLLM" not in status:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) // 1024
    return total


def test_the_autoscaler_scales_onto_a_second_real_engine(
    sandbox: SandboxState, namespace: str
) -> None:
    """Mode Auto with two real engines: the Qwen2.5-VL example served by vLLM's CPU build with
    its KV cache shrunk to 4,096 tokens; four image chats at a time fill it and queue; mmop reads
    the engine's own /metrics and sets the Deployment to 2 replicas itself; the second pod
    starts a second vLLM engine on this machine, turns Ready and answers a chat at its own
    address, while the first keeps serving. The figures of the run (the second engine's start
    and the engines' memory) are printed for docs/autoscaling.md."""
    from tests.integration.test_operator import (
        apply_manifest,
        example,
        get_mm,
        in_process_operator,
    )

    annotations = {"sandbox.mmop.dev/engine-args": " ".join(PRESSURE_FLAGS)}
    doc = example(EXAMPLE_QWEN)
    name = doc["metadata"]["name"]
    doc["spec"]["scaling"] = {
        "mode": "Auto",
        "minReplicas": 1,
        "maxReplicas": 2,
        # No scale-down while the second engine starts on the two busy cores.
        "behavior": {
            "windowSeconds": 5,
            "scaleUpCooldownSeconds": 0,
            "scaleDownStabilizationSeconds": 3600,
        },
    }
    with in_process_operator(sandbox, annotations, serve=REAL_ENGINE, scrape_timeout_seconds=15.0):
        apply_manifest(sandbox, namespace, doc)
        wait_for(
            lambda: (
                ((get_mm(sandbox, namespace, name).get("status") or {}).get("readyReplicas")) == 1
            ),
            "the first engine's pod Ready",
            timeout=300,
            interval=1.0,
        )
        one_engine = engine_memory_mib()
        from kubernetes import client, config

        api = config.new_client_from_config(sandbox.kubeconfig)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        first = core.list_namespaced_pod(namespace).items[0]
        url = f"http://{first.status.pod_ip}:{OPENAI_PORT}"
        images = [
            [
                png_data_url(*PRESSURE_IMAGE_SIZE, seed=30_000 + 10 * r + k)
                for k in range(PRESSURE_IMAGES)
            ]
            for r in range(PRESSURE_REQUESTS)
        ]
        answers: list[Any] = []
        stop = threading.Event()

        def pressure(imgs: list[str]) -> None:
            deadline = time.monotonic() + 280
            for _ in range(12):  # bounded: the autoscaler acts within a few
                if stop.is_set() or time.monotonic() > deadline:
                    break
                answers.append(chat(url, name, imgs, max_tokens=PRESSURE_MAX_TOKENS))

        def scaled() -> bool:
            dep = apps.read_namespaced_deployment(name, namespace)
            return bool(dep.spec.replicas == 2)

        clients = [threading.Thread(target=pressure, args=(i,), daemon=True) for i in images]
        for c in clients:
            c.start()
        try:
            wait_for(scaled, "mmop to set 2 replicas", timeout=300)
            ordered = time.monotonic()
        finally:
            stop.set()  # the second engine starts on the two cores the chats were using
            for c in clients:
                c.join(timeout=600)
        assert answers and all(a.status == 200 for a in answers), answers

        def scale_ups() -> list[dict[str, Any]]:
            status = get_mm(sandbox, namespace, name).get("status") or {}
            return [d for d in status.get("decisions") or [] if d["action"] == "ScaleUp"]

        # The decision is recorded after the scale it ordered (a second status write), and the
        # two engines and the chats share two cores: wait for the record, do not race it.
        wait_for(lambda: bool(scale_ups()), "the ScaleUp recorded in status", timeout=120)
        ups = scale_ups()
        assert ups[0]["replicas"] == 2, ups
        wait_for(
            lambda: (
                ((get_mm(sandbox, namespace, name).get("status") or {}).get("readyReplicas")) == 2
            ),
            "the second engine's pod Ready",
            timeout=420,
            interval=1.0,
        )
        second_ready = time.monotonic() - ordered
        two_engines = engine_memory_mib()
        pods = core.list_namespaced_pod(namespace).items
        assert len(pods) == 2
        second = next(p for p in pods if p.metadata.name != first.metadata.name)
        answer = chat(
            f"http://{second.status.pod_ip}:{OPENAI_PORT}",
            name,
            images[0][:1],
            max_tokens=PRESSURE_MAX_TOKENS,
        )
        assert answer.status == 200, answer
        again = chat(url, name, images[1][:1], max_tokens=PRESSURE_MAX_TOKENS)
        assert again.status == 200, again
        print(
            f"second engine Ready {second_ready:.0f} s after mmop set 2 replicas; "
            f"engines' resident memory {one_engine} MiB with one, {two_engines} MiB with two"
        )
