"""The sandbox is a real cluster: scheduling on GPU products, pods that serve, Prometheus."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from e2e.sandbox import Sandbox, SandboxState
from e2e.sandbox.cluster import _pid_alive
from e2e.waiting import wait_for

VERSIONS = Path(__file__).resolve().parents[2] / "e2e" / "sandbox" / "versions.env"


def png(width: int = 4, height: int = 4) -> str:
    """A small valid RGB PNG, base64-encoded, so the request carries a real image part."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(data).decode()


def pinned(key: str) -> str:
    for line in VERSIONS.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"{key} not in {VERSIONS}")


def gpu_pod(name: str, product: str, gpus: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
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


def test_gpu_pods_land_only_on_the_requested_product(api_client: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    nodes = {n.metadata.name: n.metadata.labels for n in core.list_node().items}
    for i, product in enumerate(["NVIDIA-L4", "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"]):
        core.create_namespaced_pod(namespace, gpu_pod(f"gpu-{i}", product))
    for i, product in enumerate(["NVIDIA-L4", "NVIDIA-H100-80GB-HBM3", "NVIDIA-L4"]):
        pod = wait_for(
            lambda i=i: (p := core.read_namespaced_pod(f"gpu-{i}", namespace)).spec.node_name and p,
            f"pod gpu-{i} to be scheduled",
        )
        assert nodes[pod.spec.node_name]["nvidia.com/gpu.product"] == product
    # One L4 per node: a pod asking for two cannot be placed on any L4 node.
    core.create_namespaced_pod(namespace, gpu_pod("too-big", "NVIDIA-L4", gpus=2))
    wait_for(
        lambda: any(
            e.reason == "FailedScheduling"
            for e in core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=too-big"
            ).items
        ),
        "a FailedScheduling event for the two-GPU pod",
    )
    assert core.read_namespaced_pod("too-big", namespace).spec.node_name is None


def served_deployment(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name, "sandbox.mmop.dev/serve": "sim"}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000"},
                },
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.32.0",
                            "args": [
                                "--model=Qwen/Qwen2.5-VL-7B-Instruct",
                                "--served-model-name=qwen-vl",
                                "--max-num-seqs=8",
                                "--max-model-len=8192",
                            ],
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def test_served_deployment_is_ready_and_answers_at_pod_addresses(
    api_client: Any, namespace: str, sandbox: SandboxState
) -> None:
    from kubernetes import client

    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    apps.create_namespaced_deployment(namespace, served_deployment("vl"))
    dep = wait_for(
        lambda: (
            (d := apps.read_namespaced_deployment("vl", namespace)).status.ready_replicas == 2 and d
        ),
        "deployment vl to have 2 Ready replicas",
        timeout=90,
    )
    assert dep.status.ready_replicas == 2
    pods = core.list_namespaced_pod(namespace, label_selector="app=vl").items
    assert len(pods) == 2
    for pod in pods:
        ip = pod.status.pod_ip
        assert ip.startswith(f"127.{sandbox.pod_octet}."), ip
        body = {
            "model": "qwen-vl",
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{png()}"},
                        },
                    ],
                }
            ],
        }
        req = urllib.request.Request(
            f"http://{ip}:8000/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.load(resp)
        assert answer["model"] == "qwen-vl"
        assert answer["choices"][0]["message"]["content"]

    if sandbox.prometheus_url:
        url = sandbox.prometheus_url

        def scraped() -> list[Any] | None:
            q = urllib.parse.quote(f'up{{namespace="{namespace}",app="vl"}} == 1')
            with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=5) as resp:
                result = json.load(resp)["data"]["result"]
            return result if len(result) == 2 else None

        wait_for(scraped, "Prometheus to scrape both pods", timeout=60, interval=1)

        def kv_metric() -> list[Any] | None:
            q = urllib.parse.quote(f'vllm:kv_cache_usage_perc{{namespace="{namespace}"}}')
            with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=5) as resp:
                result = json.load(resp)["data"]["result"]
            return result or None

        wait_for(kv_metric, "vLLM's KV-cache metric in Prometheus", timeout=60, interval=1)


def test_prometheus_runs(sandbox: SandboxState) -> None:
    assert sandbox.prometheus_url, "Prometheus (Debian package `prometheus`) must be installed"


def test_tools_report_the_pinned_versions(sandbox: SandboxState) -> None:
    bins = sandbox.bin_dir
    out = subprocess.run(
        [bins["kubectl"], "version", "-o", "json", f"--kubeconfig={sandbox.kubeconfig}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    versions = json.loads(out)
    k8s = pinned("KUBERNETES_VERSION")
    assert versions["clientVersion"]["gitVersion"] == k8s
    assert versions["serverVersion"]["gitVersion"] == k8s
    helm = subprocess.run(
        [bins["helm"], "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert helm.strip().startswith(pinned("HELM_VERSION"))


def test_second_sandbox_runs_beside_and_tears_down_cleanly(sandbox: SandboxState) -> None:
    other = Sandbox(f"{sandbox.name}-b", prometheus=False)
    state = other.up(timeout=120)
    try:
        assert state.pod_octet != sandbox.pod_octet
        assert set(state.ports.values()).isdisjoint(sandbox.ports.values())
        again = Sandbox(other.name, prometheus=False)
        assert again.running()
    finally:
        other.down(quiet=True)
    assert not any(_pid_alive(pid) for pid in state.pids.values())
    assert not Path(state.root).exists()
    assert Sandbox(sandbox.name).running()
