"""The renderer: what the Deployment, Service and PodDisruptionBudget say for real plans."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.sandbox.podserver import SERVE_LABEL, container_port, simulator_args
from pydantic import ValidationError

from mmop.api import MultimodalModel, SecretKeyRef
from mmop.inventory import default_inventory
from mmop.planner import Plan, plan
from mmop.render import (
    STARTUP_FLOOR_SECONDS,
    TEMPLATE_HASH,
    Rendered,
    RenderOptions,
    render,
    startup_budget_seconds,
    vllm_args,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
UID = "0f6c9d2e-1111-4a5b-9c3d-222233334444"


@functools.cache
def planned(stem: str) -> tuple[MultimodalModel, Plan]:
    m = MultimodalModel.model_validate(
        yaml.safe_load((ROOT / "examples" / f"{stem}.yaml").read_text())
    )
    return m, plan(m, default_inventory())


def rendered(
    stem: str = "qwen2.5-vl-7b",
    options: RenderOptions | None = None,
    spec_update: dict[str, Any] | None = None,
    plan_update: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Rendered:
    m, p = planned(stem)
    spec = m.spec.model_copy(update=spec_update or {})
    p = p.model_copy(update=plan_update or {})
    return render(m.metadata.name, "serving", UID, spec, p, options or RenderOptions(), **kwargs)


def pod_spec(r: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = r.deployment["spec"]["template"]["spec"]
    return spec


def container(r: Rendered) -> dict[str, Any]:
    c: dict[str, Any] = pod_spec(r)["containers"][0]
    return c


def walk(value: Any, path: str = "") -> list[str]:
    """Paths of every None in a nested structure."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in walk(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_render_structurally_valid_objects_without_none(path: Path) -> None:
    r = rendered(path.stem)
    for obj in r.objects():
        assert walk(obj) == []
        assert obj["metadata"]["name"] == planned(path.stem)[0].metadata.name
        assert obj["metadata"]["namespace"] == "serving"
        json.dumps(obj)  # plain JSON data only
    dep = r.deployment
    assert (dep["apiVersion"], dep["kind"]) == ("apps/v1", "Deployment")
    assert (r.service["apiVersion"], r.service["kind"]) == ("v1", "Service")
    pdb = r.pod_disruption_budget
    assert (pdb["apiVersion"], pdb["kind"]) == ("policy/v1", "PodDisruptionBudget")
    template = dep["spec"]["template"]
    # The selector matches the pod template (the API server rejects a Deployment otherwise).
    match = dep["spec"]["selector"]["matchLabels"]
    assert match.items() <= template["metadata"]["labels"].items()
    assert r.service["spec"]["selector"] == match == pdb["spec"]["selector"]["matchLabels"]
    volumes = {v["name"] for v in template["spec"]["volumes"]}
    for c in template["spec"]["containers"]:
        assert c["name"] and c["image"]
        assert {m["name"] for m in c["volumeMounts"]} <= volumes
        ports = {p["name"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] in ports
    assert r.service["spec"]["ports"][0]["targetPort"] in ports


def test_gpu_limit_is_the_tensor_parallel_size() -> None:
    resources = container(rendered("qwen2.5-vl-7b"))["resources"]
    _, p = planned("qwen2.5-vl-7b")
    assert resources["limits"]["nvidia.com/gpu"] == p.tensor_parallel_size
    assert resources["limits"]["nvidia.com/gpu"] == p.resources.gpus
    # Guaranteed QoS (CPU and memory requests = limits); ephemeral storage is requested only
    asked = {k: v for k, v in resources["requests"].items() if k != "ephemeral-storage"}
    assert asked == resources["limits"]
    assert resources["requests"]["ephemeral-storage"] == p.resources.ephemeral_storage
    assert resources["limits"]["cpu"] == p.resources.cpu
    assert resources["limits"]["memory"] == p.resources.memory
    base, _ = planned("qwen2.5-vl-7b")
    p4 = p.model_copy(
        update={
            "tensor_parallel_size": 4,
            "resources": p.resources.model_copy(update={"gpus": 4}),
        }
    )
    r4 = render("m", "ns", None, base.spec, p4, RenderOptions())
    assert container(r4)["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_pods_require_the_planned_gpu_product_and_tolerate_the_gpu_taint() -> None:
    r = rendered("mistral-small-3.1")
    _, p = planned("mistral-small-3.1")
    terms = pod_spec(r)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    expressions = [e for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]]
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": [p.gpu_product]} in (
        expressions
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(r)[
        "tolerations"
    ]


def test_spec_node_selector_is_passed_through() -> None:
    m, _ = planned("qwen2.5-vl-7b")
    placement = m.spec.placement.model_copy(update={"node_selector": {"zone": "b", "pool": "gpu"}})
    r = rendered(spec_update={"placement": placement})
    assert pod_spec(r)["nodeSelector"] == {"pool": "gpu", "zone": "b"}
    assert "nodeSelector" not in pod_spec(rendered())


def test_shm_is_memory_backed_with_the_planned_size() -> None:
    _, p = planned("gemma-3-27b")
    r = rendered("gemma-3-27b")
    dshm = next(v for v in pod_spec(r)["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": p.resources.shm_size}
    mounts = {m["mountPath"]: m["name"] for m in container(r)["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm"


def test_model_cache_pvc_is_mounted_at_hf_home() -> None:
    r = rendered(options=RenderOptions(model_cache_pvc="hf-cache"))
    cache = next(v for v in pod_spec(r)["volumes"] if v["name"] == "model-cache")
    assert cache["persistentVolumeClaim"] == {"claimName": "hf-cache"}
    mounts = {m["mountPath"]: m["name"] for m in container(r)["volumeMounts"]}
    assert mounts["/home/vllm/.cache/huggingface"] == "model-cache"
    env = {e["name"]: e.get("value") for e in container(r)["env"]}
    assert env["HF_HOME"] == "/home/vllm/.cache/huggingface"


def test_owner_reference_points_at_the_multimodal_model() -> None:
    r = rendered()
    for obj in r.objects():
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mmop.dev/v1alpha1",
                "kind": "MultimodalModel",
                "name": "qwen-vl",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    m, p = planned("qwen2.5-vl-7b")
    orphan = render("qwen-vl", "serving", None, m.spec, p, RenderOptions())
    assert all("ownerReferences" not in o["metadata"] for o in orphan.objects())


def test_token_secret_becomes_hf_token_from_the_secret() -> None:
    m, _ = planned("qwen2.5-vl-7b")
    source = m.spec.model.model_copy(
        update={"token_secret_ref": SecretKeyRef(name="hf", key="tok")}
    )
    r = rendered(spec_update={"model": source})
    env = {e["name"]: e for e in container(r)["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}},
    }
    assert env["VLLM_NO_USAGE_STATS"]["value"] == "1"
    assert "HF_TOKEN" not in {e["name"] for e in container(rendered())["env"]}


def test_engine_env_is_added_and_overrides_mmop_defaults() -> None:
    m, _ = planned("qwen2.5-vl-7b")
    engine = type(m.spec.engine).model_validate(
        {
            "env": [
                {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"},
                {"name": "HF_HOME", "value": "/x"},
            ]
        }
    )
    env = container(rendered(spec_update={"engine": engine}))["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    values = {e["name"]: e["value"] for e in env}
    assert values["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert values["HF_HOME"] == "/x"


def test_plan_args_appear_verbatim_after_vllm_serve() -> None:
    m, p0 = planned("qwen2.5-vl-7b")
    spec = MultimodalModel.model_validate(
        {
            **m.model_dump(by_alias=True, exclude_none=True),
            "spec": {
                **m.spec.model_dump(by_alias=True, exclude_none=True),
                "engine": {"extraArgs": ["--enable-prefix-caching", "--seed=7"]},
            },
        }
    )
    p = plan(spec, default_inventory())
    r = render("qwen-vl", "serving", UID, spec.spec, p, RenderOptions())
    c = container(r)
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == vllm_args(p)
    assert c["args"][0] == p.model
    assert c["args"][-2:] == ["--enable-prefix-caching", "--seed=7"]
    assert c["image"] == spec.spec.engine.image
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert vllm_args(p0) != vllm_args(p)


def test_hash_changes_with_args_but_not_with_replicas() -> None:
    base = rendered()
    _, p = planned("qwen2.5-vl-7b")
    other_args = rendered(plan_update={"extra_args": [*p.extra_args, "--seed=1"]})
    more_replicas = rendered(plan_update={"replicas": p.replicas + 3})
    overridden = rendered(replicas=7, generation=12)
    assert other_args.template_hash != base.template_hash
    assert more_replicas.template_hash == base.template_hash
    assert overridden.template_hash == base.template_hash
    assert more_replicas.deployment["spec"]["replicas"] == p.replicas + 3
    assert overridden.deployment["spec"]["replicas"] == 7
    assert overridden.deployment["metadata"]["annotations"] == {"mmop.dev/generation": "12"}
    for r in (base, other_args):
        assert r.deployment["metadata"]["labels"][TEMPLATE_HASH] == r.template_hash
        annotations = r.deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations[TEMPLATE_HASH] == r.template_hash
    assert len(base.template_hash) == 16
    int(base.template_hash, 16)


def test_rendering_is_deterministic() -> None:
    a, b = rendered(), rendered()
    assert json.dumps(a.model_dump()) == json.dumps(b.model_dump())
    labels = a.deployment["spec"]["template"]["metadata"]["labels"]
    assert list(labels) == sorted(labels)


def test_extra_pod_labels_and_annotations_are_applied_to_pods_only() -> None:
    options = RenderOptions(
        extra_pod_labels={SERVE_LABEL: "sim", "team": "vision"},
        extra_pod_annotations={"sandbox.mmop.dev/kv-cache-blocks": "512"},
    )
    r = rendered(options=options)
    meta = r.deployment["spec"]["template"]["metadata"]
    assert meta["labels"][SERVE_LABEL] == "sim"
    assert meta["labels"]["team"] == "vision"
    assert meta["annotations"]["sandbox.mmop.dev/kv-cache-blocks"] == "512"
    assert SERVE_LABEL not in r.deployment["spec"]["selector"]["matchLabels"]
    assert SERVE_LABEL not in r.service["spec"]["selector"]
    assert r.template_hash != rendered().template_hash


def test_sandbox_pod_server_reads_the_rendered_pod() -> None:
    """The sandbox serves a rendered pod as vLLM would: same model, name and limits."""
    r = rendered(options=RenderOptions(extra_pod_labels={SERVE_LABEL: "sim"}))
    _, p = planned("qwen2.5-vl-7b")
    pod = {"metadata": r.deployment["spec"]["template"]["metadata"], "spec": pod_spec(r)}
    sim = simulator_args(pod, 4321)
    assert f"--model={p.model}" in sim
    assert sim[sim.index("--served-model-name") + 1] == "qwen-vl"
    assert f"--max-model-len={p.max_model_len}" in sim
    assert f"--max-num-seqs={p.max_num_seqs}" in sim
    assert container_port(pod) == 8000


@pytest.mark.parametrize(
    "options",
    [
        {"extra_pod_labels": {"app.kubernetes.io/instance": "x"}},
        {"extra_pod_labels": {"mmop.dev/model": "x"}},
        {"extra_pod_labels": {"ok": "not a value"}},
        {"extra_pod_labels": {"bad key!": "v"}},
        {"extra_pod_annotations": {"mmop.dev/template-hash": "0"}},
        {"drain_seconds": -1},
        {"startup_budget_factor": 0},
        {"unknown": 1},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RenderOptions.model_validate(options)


def test_metrics_annotations_can_be_turned_off() -> None:
    on = rendered().deployment["spec"]["template"]["metadata"]["annotations"]
    assert on["prometheus.io/scrape"] == "true"
    assert on["prometheus.io/port"] == "8000"
    assert on["prometheus.io/path"] == "/metrics"
    off = rendered(options=RenderOptions(metrics_annotations=False))
    annotations = off.deployment["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("prometheus.io/") for k in annotations)


def startup_seconds(r: Rendered) -> int:
    probe = container(r)["startupProbe"]
    seconds: int = probe["failureThreshold"] * probe["periodSeconds"]
    return seconds


def test_startup_budget_grows_with_model_size_and_has_a_floor() -> None:
    _, p = planned("gemma-3-27b")
    small = p.model_copy(update={"memory": p.memory.model_copy(update={"weights_gib": 1.0})})
    big = p.model_copy(update={"memory": p.memory.model_copy(update={"weights_gib": 140.0})})
    bigger = big.model_copy(update={"tensor_parallel_size": 4})
    options = RenderOptions()
    m, _ = planned("gemma-3-27b")
    budgets = [
        startup_seconds(render("g", "ns", None, m.spec, x, options)) for x in (small, big, bigger)
    ]
    assert budgets[0] == STARTUP_FLOOR_SECONDS
    assert budgets[0] < budgets[1] < budgets[2]
    # Real examples: the 27B model gets more time than the 7B one, and never less than 10 min.
    assert startup_seconds(rendered("gemma-3-27b")) > startup_seconds(rendered("qwen2.5-vl-7b"))
    assert startup_seconds(rendered("qwen2.5-vl-7b")) >= 600
    slow = RenderOptions(startup_budget_factor=3)
    assert startup_budget_seconds(big, slow) > startup_budget_seconds(big, options)
    # The Deployment does not call a pod that is still loading weights a failed rollout.
    r = render("g", "ns", None, m.spec, bigger, options)
    assert r.deployment["spec"]["progressDeadlineSeconds"] > startup_seconds(r)


def test_readiness_and_liveness_probe_health_generously() -> None:
    c = container(rendered())
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    live = c["livenessProbe"]
    assert live["failureThreshold"] * live["periodSeconds"] >= 120
    assert live["timeoutSeconds"] >= 5
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_drain_sleeps_before_sigterm_and_grace_covers_streams() -> None:
    r = rendered(options=RenderOptions(drain_seconds=45))
    assert container(r)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "45"]
    assert pod_spec(r)["terminationGracePeriodSeconds"] == 45 + 60
    none = rendered(options=RenderOptions(drain_seconds=0))
    assert "lifecycle" not in container(none)
    assert pod_spec(rendered())["terminationGracePeriodSeconds"] == 90


def test_rollout_never_surges_by_default() -> None:
    strategy = rendered().deployment["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    surge = rendered(options=RenderOptions(max_surge=1)).deployment["spec"]["strategy"]
    assert surge["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_service_and_pdb() -> None:
    r = rendered()
    svc = r.service["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert r.pod_disruption_budget["spec"]["maxUnavailable"] == 1
    labels = r.service["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "vllm"
    assert labels["app.kubernetes.io/managed-by"] == "mmop"
    assert labels["mmop.dev/model"] == "qwen-vl"
    assert r.selector_string == "app.kubernetes.io/instance=qwen-vl,mmop.dev/model=qwen-vl"


# --- Pod Security Standard "restricted" (R6) ------------------------------------------------

RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
    }
)


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the Pod Security Standard `restricted` (baseline included) refuses in a pod spec, as
    the Kubernetes documentation lists its controls (Pod Security Standards, v1.30+)."""
    out: list[str] = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds)}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctl {sysctl['name']}")
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added")
        if not (sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsNonRoot") is False:
            out.append(f"{name}: runAsNonRoot false")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
    return out


def test_the_restricted_check_catches_what_it_should() -> None:
    bad = {
        "hostNetwork": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True}}],
    }
    found = " ".join(restricted_violations(bad))
    for word in ("hostNetwork", "hostPath", "privileged", "ALL", "runAsNonRoot", "seccomp"):
        assert word in found


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_pods_pass_pod_security_restricted(path: Path) -> None:
    assert restricted_violations(pod_spec(rendered(path.stem))) == []
    with_pvc = rendered(path.stem, options=RenderOptions(model_cache_pvc="hf-cache"))
    assert restricted_violations(pod_spec(with_pvc)) == []


def test_the_engine_runs_as_a_configurable_non_root_user() -> None:
    sc = pod_spec(rendered())["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (1000, 1000, 1000)
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    options = RenderOptions(run_as_user=2000, run_as_group=3000, fs_group=4000)
    sc = pod_spec(rendered(options=options))["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (2000, 3000, 4000)
    for field in ("run_as_user", "run_as_group", "fs_group"):
        with pytest.raises(ValidationError):
            RenderOptions.model_validate({field: 0})


def test_home_and_every_cache_root_are_on_writable_volumes() -> None:
    """A non-root engine writes only below its volumes: HOME (an emptyDir: ~/.cache, ~/.config,
    ~/.triton, ~/.nv, torch.compile and FlashInfer JIT caches) and HF_HOME (the model cache)."""
    for options in (RenderOptions(), RenderOptions(model_cache_pvc="hf-cache")):
        r = rendered(options=options)
        env = {e["name"]: e.get("value") for e in container(r)["env"]}
        volumes = {v["name"]: v for v in pod_spec(r)["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container(r)["volumeMounts"]}
        assert all(not m.get("readOnly") for m in container(r)["volumeMounts"])

        def volume_of(path: str, mounts: dict[str, str] = mounts) -> str:
            best = max((m for m in mounts if path == m or path.startswith(m + "/")), key=len)
            return mounts[best]

        assert env["HOME"] == "/home/vllm"
        assert volumes[volume_of(env["HOME"])]["emptyDir"] == {}
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "VLLM_CACHE_ROOT", "VLLM_CONFIG_ROOT"):
            assert env[name].startswith(env["HOME"] + "/"), name
            assert volume_of(env[name]) == "home", name
        assert volume_of(env["HF_HOME"]) == "model-cache"
        assert "/root" not in json.dumps(r.deployment)


def test_api_key_comes_from_the_secret_and_never_from_argv() -> None:
    m, p = planned("qwen2.5-vl-7b")
    engine = type(m.spec.engine).model_validate(
        {"apiKeySecretRef": {"name": "vllm-key", "key": "api-key"}}
    )
    r = rendered(spec_update={"engine": engine})
    c = container(r)
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vllm-key", "key": "api-key"}},
    }
    assert not any(a.startswith("--api-key") for a in c["args"])
    assert not any(a.startswith("--api-key") for a in vllm_args(p))
    assert "vllm-key" not in json.dumps(c["args"])
    # the probes stay outside vLLM's key-guarded prefixes (/v1, /v2, /inference, /cohere)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert "VLLM_API_KEY" not in {e["name"] for e in container(rendered())["env"]}


def test_container_security() -> None:
    r = rendered()
    sc = container(r)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged") is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert pod_spec(r)["enableServiceLinks"] is False  # no VLLM_PORT from a Service named vllm
    assert pod_spec(r)["automountServiceAccountToken"] is False


# --- the vLLM argv is built here, from the plan's fields --------------------------------------


def test_vllm_args_are_built_from_the_plans_fields() -> None:
    _, p = planned("qwen2.5-vl-7b")
    args = vllm_args(p)
    assert args[0] == p.model
    flags = dict(a.split("=", 1) for a in args[1:])
    assert flags["--served-model-name"] == p.served_model_name
    assert flags["--port"] == "8000"
    assert flags["--tensor-parallel-size"] == str(p.tensor_parallel_size)
    assert flags["--max-model-len"] == str(p.max_model_len)
    assert flags["--max-num-seqs"] == str(p.max_num_seqs)
    assert flags["--max-num-batched-tokens"] == str(p.max_num_batched_tokens)
    assert flags["--gpu-memory-utilization"] == str(p.gpu_memory_utilization)
    assert flags["--quantization"] == p.quantization_method == "fp8"
    assert flags["--kv-cache-dtype"] == p.kv_cache_dtype
    assert json.loads(flags["--limit-mm-per-prompt"]) == p.limit_mm_per_prompt
    assert json.loads(flags["--mm-processor-kwargs"]) == p.mm_processor_kwargs
    changed = p.model_copy(
        update={
            "quantization_method": None,
            "kv_cache_dtype": "auto",
            "revision": "abc123",
            "trust_remote_code": True,
            "extra_args": ["--seed=3"],
            "resources": p.resources.model_copy(update={"mm_processor_cache_gb": 1}),
        }
    )
    args = vllm_args(changed)
    assert not any(a.startswith(("--quantization", "--kv-cache-dtype")) for a in args)
    assert args[-4:] == [
        "--mm-processor-cache-gb=1",
        "--revision=abc123",
        "--trust-remote-code",
        "--seed=3",
    ]


def test_startup_budget_doubles_the_download_only_for_fp8_on_load() -> None:
    _, p = planned("qwen2.5-vl-7b")
    assert p.quantization_method == "fp8"
    online = startup_budget_seconds(p, RenderOptions(startup_budget_factor=10))
    checkpoint = p.model_copy(update={"quantization_method": None})
    assert startup_budget_seconds(checkpoint, RenderOptions(startup_budget_factor=10)) < online


def test_companions_are_the_rendered_service_and_pdb() -> None:
    from mmop.render import companions

    r = rendered()
    assert companions("qwen-vl", "serving", UID) == [r.service, r.pod_disruption_budget]
    orphan = companions("qwen-vl", "serving", None)
    assert all("ownerReferences" not in o["metadata"] for o in orphan)


def test_the_vllm_module_imports_nothing_of_mmop() -> None:
    """mmop.vllm (the pin, flag names, port) sits below everything: it imports no mmop module."""
    import ast

    import mmop.vllm

    tree = ast.parse(Path(mmop.vllm.__file__).read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.split(".")[0] == "mmop"]
