"""Operator scale benchmark: many MultimodalModels on many kwok GPU nodes.

Usage (from the repository root, after `pip install -e '.[dev]'`):
    python bench/operator/run.py [--models 1000] [--nodes 500] [--rate 20] [--edits 200]
                                 [--markdown bench/operator/results.md] [--docs docs/benchmarks.md]

What it does, on a sandbox of its own (`--name`, default `opbench`; torn down at the end):

1. GPU node pools with --nodes nodes (40% 1×L4, 30% 4×L40S, 20% 8×A100-40GB, 10% 8×H100-80GB),
   the MultimodalModel CRD, the operator as a sandbox component (`mmop run --all-namespaces`,
   without --pod-label: no simulator starts; kwok runs the pods).
2. Creates --models small MultimodalModels (catalog vision models × workloads, one replica each)
   at --rate per second across --namespaces namespaces. create→Deployment: from the create call
   to the first ADDED event of its Deployment on a watch of Deployments managed by mmop.
3. When everything has settled, edits --edits of them (images.perRequest + 1) at --rate per
   second. edit→patch: from the patch call to the first Deployment event carrying a new
   mmop.dev/template-hash pod-template annotation.
4. Restart: SIGTERM to the operator's process group, start it again, and time (a) until its
   health endpoint answers and (b) until kopf has logged a finished resume for every model
   ("Resuming is processed" per object in logs/operator.log).

API writes are counted on the API server (`/metrics`, apiserver_request_total, read with the
sandbox's admin certificate) at phase boundaries; the metric has no user label, so the
operator's writes are taken as: writes to multimodalmodels (main resource and status) less the
benchmark's own creates and edits, plus APPLY requests to deployments, services and
poddisruptionbudgets (only mmop server-side-applies them; the controller-manager updates
Deployment status and annotations with UPDATE, not APPLY), plus the Events whose source is kopf
(kopf posts one Event per object log line at INFO and above; counted by listing Events).
Operator RSS and CPU time are sampled from /proc/<pid> once a second; peak is VmHWM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from e2e.markdown import replace_section  # noqa: E402
from e2e.sandbox import Sandbox  # noqa: E402

from mmop.model import load_profile  # noqa: E402

GROUP, VERSION, PLURAL = "mmop.dev", "v1alpha1", "multimodalmodels"
TEMPLATE_HASH = "mmop.dev/template-hash"
MODEL_LABEL = "mmop.dev/model"
MANAGED = "app.kubernetes.io/managed-by=mmop"

# (share of nodes, pool name, GPU, GPUs per node, cpu, memory)
POOL_SHAPES = [
    (0.4, "l4", "L4", 1, "16", "64Gi"),
    (0.3, "l40s", "L40S", 4, "64", "512Gi"),
    (0.2, "a100", "A100-40GB", 8, "96", "1100Gi"),
    (0.1, "h100", "H100-80GB", 8, "192", "2000Gi"),
]
MODELS = [
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen2-VL-7B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-8B-Instruct",
    "google/gemma-3-4b-it",
    "google/gemma-3-12b-it",
    "OpenGVLab/InternVL2_5-8B",
    "OpenGVLab/InternVL3-8B",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-hf/llava-1.5-7b-hf",
    "microsoft/Phi-3.5-vision-instruct",
    "openbmb/MiniCPM-V-2_6",
    "HuggingFaceTB/SmolVLM-Instruct",
    "google/gemma-3-27b-it",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
]
# (images per request, side, context, concurrency)
WORKLOADS = [(1, 1024, 4096, 4), (2, 1024, 8192, 8), (1, 1280, 16384, 16), (2, 768, 8192, 4)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pools_yaml(nodes: int) -> dict[str, Any]:
    counts = [max(1, int(nodes * share)) for share, *_ in POOL_SHAPES]
    counts[0] += nodes - sum(counts)
    return {
        "pools": [
            {"name": n, "gpu": g, "nodes": c, "gpusPerNode": k, "cpu": cpu, "memory": mem}
            for c, (_, n, g, k, cpu, mem) in zip(counts, POOL_SHAPES, strict=True)
        ]
    }


REMOTE_CODE_MODELS = frozenset(m for m in MODELS if load_profile(m).needs_remote_code)


def manifest(i: int) -> dict[str, Any]:
    model = MODELS[i % len(MODELS)]
    per, side, ctx, conc = WORKLOADS[(i // len(MODELS)) % len(WORKLOADS)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MultimodalModel",
        "metadata": {"name": f"m{i:04d}"},
        "spec": {
            # models whose config needs the repository's code are served with consent
            "model": {"id": model, "trustRemoteCode": model in REMOTE_CODE_MODELS},
            "workload": {
                "images": {"perRequest": per, "maxWidth": side, "maxHeight": side},
                "contextLength": {"min": ctx},
                "promptTokens": 500,
                "outputTokens": 200,
                "concurrency": conc,
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# ---------------------------------------------------------------------------- watchers
@dataclass
class DeploymentWatch:
    """First ADDED time per Deployment and the times its template hash changed."""

    added: dict[tuple[str, str], float] = field(default_factory=dict)
    hashes: dict[tuple[str, str], str] = field(default_factory=dict)
    changed: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, api_client: Any) -> None:
        from kubernetes import client, watch

        apps: Any = client.AppsV1Api(api_client)
        rv = ""
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    apps.list_deployment_for_all_namespaces,
                    label_selector=MANAGED,
                    resource_version=rv or None,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                    deserialize=False,
                ):
                    now = time.monotonic()
                    obj = ev["object"]
                    meta = obj.get("metadata") or {}
                    rv = meta.get("resourceVersion") or rv
                    if ev["type"] in ("BOOKMARK", "ERROR", "DELETED"):
                        if ev["type"] == "ERROR":
                            rv = ""
                        continue
                    key = (meta.get("namespace", ""), meta.get("name", ""))
                    tmpl = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
                    h = (tmpl.get("annotations") or {}).get(TEMPLATE_HASH, "")
                    with self.lock:
                        self.added.setdefault(key, now)
                        if key in self.hashes and self.hashes[key] != h:
                            self.changed.setdefault(key, []).append(now)
                        self.hashes[key] = h
                    if self.stop.is_set():
                        break
            except Exception as err:
                if "410" in str(err) or "Expired" in str(err):
                    rv = ""
                time.sleep(0.2)


@dataclass
class ProcSampler:
    """VmRSS / VmHWM / CPU seconds of one pid, once a second."""

    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, rss MiB)
    hwm_mib: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def read(self) -> tuple[float, float, float] | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" not in fields:  # a zombie
            return None
        rss = int(fields["VmRSS"].split()[0]) / 1024
        hwm = int(fields["VmHWM"].split()[0]) / 1024
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return rss, hwm, cpu

    def run(self) -> None:
        while not self.stop.is_set():
            got = self.read()
            if got is not None:
                self.samples.append((time.monotonic(), got[0]))
                self.hwm_mib = max(self.hwm_mib, got[1])
            self.stop.wait(1.0)

    def cpu(self) -> float:
        got = self.read()
        return got[2] if got else float("nan")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children, seconds (nan when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = sum(int(x) for x in stat[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (every process on the machine)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuLedger:
    """CPU seconds per sandbox component, this script and the rest of the machine, between
    two marks: where the 2 cores went during a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.start: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        out = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        out["this script"] = sum(os.times()[:4])
        out["machine"] = machine_busy_seconds()
        out["wall"] = time.monotonic()
        return out

    def mark(self) -> None:
        self.start = self.read()

    def since(self) -> dict[str, float]:
        now = self.read()
        delta = {k: round(now[k] - self.start[k], 1) for k in now}
        known = sum(v for k, v in delta.items() if k not in ("machine", "wall"))
        delta["other processes"] = round(delta["machine"] - known, 1)
        return delta


# ---------------------------------------------------------------------------- API counting
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "UPDATE", "CREATE"}
METRIC = re.compile(r"^apiserver_request_total\{(.*)\}\s+([0-9.e+]+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def api_writes(api_client: Any) -> dict[str, float]:
    """Write counters from the API server's /metrics: mmm (all multimodalmodels writes) and
    apply (APPLY to deployments, services, poddisruptionbudgets)."""
    method, url, headers, _, _ = api_client.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    resp = api_client.call_api(method, url, header_params=headers)
    resp.read()
    text = resp.data.decode()
    out = {"mmm": 0.0, "apply": 0.0}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(1)))
        verb, resource = labels.get("verb", ""), labels.get("resource", "")
        if verb not in WRITE_VERBS or labels.get("dry_run"):
            continue
        value = float(m.group(2))
        if resource == PLURAL:
            out["mmm"] += value
        elif verb == "APPLY" and resource in ("deployments", "services", "poddisruptionbudgets"):
            out["apply"] += value
    return out


def kopf_events(api_client: Any) -> int:
    from kubernetes import client

    core: Any = client.CoreV1Api(api_client)
    resp = core.list_event_for_all_namespaces(_preload_content=False)
    items = json.loads(resp.data)["items"]
    return sum(1 for e in items if (e.get("source") or {}).get("component") in ("kopf", "mmop"))


@dataclass
class Counter:
    api_client: Any
    ours_mmm: int = 0  # the benchmark's own writes to multimodalmodels

    def snapshot(self) -> dict[str, float]:
        snap = api_writes(self.api_client)
        snap["events"] = kopf_events(self.api_client)
        snap["ours"] = self.ours_mmm
        return snap

    @staticmethod
    def operator_writes(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        mmm = (b["mmm"] - a["mmm"]) - (b["ours"] - a["ours"])
        apply = b["apply"] - a["apply"]
        events = b["events"] - a["events"]
        return {"mmm": mmm, "apply": apply, "events": events, "total": mmm + apply + events}


# ---------------------------------------------------------------------------- helpers
def list_models(api_client: Any) -> dict[str, dict[str, Any]]:
    from kubernetes import client

    api: Any = client.CustomObjectsApi(api_client)
    items = api.list_cluster_custom_object("mmop.dev", "v1alpha1", "multimodalmodels")["items"]
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in items}


def changed_models(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], shown: int = 5
) -> list[str]:
    """What changed in models whose resourceVersion moved: '<ns/name>: <paths>' (a few)."""
    out = []
    for key, old in sorted(before.items()):
        new = after.get(key)
        if new is None or new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"]:
            continue
        paths = [
            f"{part}.{k}"
            for part in ("metadata", "status")
            for k in sorted(set(old.get(part) or {}) | set(new.get(part) or {}))
            if k not in ("resourceVersion", "managedFields", "conditions")
            and (old.get(part) or {}).get(k) != (new.get(part) or {}).get(k)
        ]
        was = {c["type"]: c for c in (old.get("status") or {}).get("conditions") or []}
        for c in (new.get("status") or {}).get("conditions") or []:
            before = was.get(c["type"]) or {}
            if (before.get("status"), before.get("reason")) != (c["status"], c["reason"]):
                paths.append(
                    f"{c['type']} {before.get('status')}/{before.get('reason')} → "
                    f"{c['status']}/{c['reason']} ({c.get('message', '')})"
                )
            elif before != c:
                paths.append(f"{c['type']}: {', '.join(k for k in c if before.get(k) != c[k])}")
        out.append(f"{key}: {', '.join(paths) or 'no field changed'}")
    return out[:shown] + ([f"… {len(out) - shown} more"] if len(out) > shown else [])


def paced(n: int, rate: float, call: Callable[[int], None]) -> float:
    """Call call(i) for i < n at `rate` per second (open loop); returns the seconds taken."""
    start = time.monotonic()
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        call(i)
    return time.monotonic() - start


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(interval)
    log(f"timed out waiting for {what}")
    return False


def settle(counter: Counter, quiet: float, timeout: float) -> dict[str, float]:
    """Wait until the operator made no write for `quiet` seconds; returns the last snapshot."""
    end = time.monotonic() + timeout
    last = counter.snapshot()
    calm_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(2)
        snap = counter.snapshot()
        if Counter.operator_writes(last, snap)["total"] > 0:
            calm_since = time.monotonic()
        last = snap
        if time.monotonic() - calm_since >= quiet:
            break
    return last


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0, help="creates and edits per second")
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--namespaces", type=int, default=5)
    ap.add_argument("--name", default="opbench", help="sandbox name")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait per phase")
    ap.add_argument("--quiet", type=float, default=20, help="seconds without writes = settled")
    ap.add_argument("--idle", type=float, default=60, help="seconds of idle write counting")
    ap.add_argument("--markdown", help="write the results here")
    ap.add_argument("--docs", help="replace the '## Operator' section of this file")
    ap.add_argument("--keep-logs", action="store_true", help="keep the sandbox's logs/")
    ap.add_argument(
        "--memory-report",
        help="trace the operator's allocations (slower) and write, at steady state, where its "
        "memory goes to this file (mmop/controller/memory_report.py); not for the figures",
    )
    ns = ap.parse_args(argv)
    command = "python bench/operator/run.py " + " ".join(argv if argv is not None else sys.argv[1:])

    from kubernetes import client, config

    tmp = Path(tempfile.mkdtemp(prefix="mmop-opbench-"))
    pools_file = tmp / "pools.yaml"
    pools_file.write_text(yaml.safe_dump(pools_yaml(ns.nodes), sort_keys=False))
    box = Sandbox(ns.name, pools_file=pools_file, prometheus=False, log=log)
    results: dict[str, Any] = {"command": command, "models": ns.models, "nodes": ns.nodes}
    results["rate"], results["edits"] = ns.rate, ns.edits
    results["pools"] = pools_yaml(ns.nodes)["pools"]
    dwatch = DeploymentWatch()
    sampler: ProcSampler | None = None
    try:
        t0 = time.monotonic()
        state = box.up(timeout=max(180.0, ns.nodes * 0.6))
        results["sandbox_up_s"] = round(time.monotonic() - t0, 1)
        log(f"sandbox up with {ns.nodes} nodes in {results['sandbox_up_s']} s")
        kubectl = state.bin_dir["kubectl"]

        def kc(*args: str) -> str:
            return subprocess.run(
                [kubectl, f"--kubeconfig={state.kubeconfig}", *args],
                check=True,
                capture_output=True,
                text=True,
            ).stdout

        kc("apply", "--server-side", "--field-manager=mmop", "-f", str(ROOT / "crds"))
        kc("wait", "--for=condition=Established", "crd/multimodalmodels.mmop.dev")
        api_client = config.new_client_from_config(config_file=state.kubeconfig)
        api_client.configuration.connection_pool_maxsize = 16
        custom: Any = client.CustomObjectsApi(api_client)
        core: Any = client.CoreV1Api(api_client)
        namespaces = [f"bench-{k}" for k in range(ns.namespaces)]
        for name in namespaces:
            core.create_namespace({"metadata": {"name": name}})
        wait_until(
            "the MultimodalModel API",
            lambda: (
                subprocess.run(
                    [kubectl, f"--kubeconfig={state.kubeconfig}", "get", "mmm", "-A"],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ),
            60,
        )

        # MALLOC_ARENA_MAX as the operator image sets it (images/operator/Dockerfile); no
        # serve label: kwok alone runs the pods.
        env = {"MALLOC_ARENA_MAX": "2"}
        report = Path(ns.memory_report).resolve() if ns.memory_report else None
        if report is not None:
            env["MMOP_MEMORY_REPORT"] = str(report)
        box.start_operator(serve=None, env=env)
        pid = box.state().pids["operator"]  # type: ignore[union-attr]
        sampler = ProcSampler(pid)
        threading.Thread(target=sampler.run, daemon=True).start()
        watch_client = config.new_client_from_config(config_file=state.kubeconfig)
        threading.Thread(target=dwatch.run, args=(watch_client,), daemon=True).start()
        counter = Counter(api_client)
        time.sleep(3)
        idle_rss = sampler.samples[-1][1] if sampler.samples else float("nan")
        results["rss_idle_mib"] = round(idle_rss, 1)

        # ------------------------------------------------------------ create
        keys = [(namespaces[i % len(namespaces)], f"m{i:04d}") for i in range(ns.models)]
        created_at: dict[tuple[str, str], float] = {}
        errors: list[str] = []

        def create(i: int) -> None:
            nsname, name = keys[i]
            created_at[keys[i]] = time.monotonic()
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, nsname, PLURAL, manifest(i))
                counter.ours_mmm += 1
            except Exception as err:
                errors.append(f"create {nsname}/{name}: {err}")

        before = counter.snapshot()
        cpu0 = sampler.cpu()
        ledger = CpuLedger(box.state().pids)  # type: ignore[union-attr]
        ledger.mark()
        log(f"creating {ns.models} models at {ns.rate}/s")
        took = paced(ns.models, ns.rate, create)
        results["create_s"] = round(took, 1)
        log(f"created in {took:.1f} s; waiting for their Deployments")
        t_created = time.monotonic()
        wait_until("every Deployment", lambda: all(k in dwatch.added for k in keys), ns.timeout)
        results["all_deployments_after_last_create_s"] = round(
            max((dwatch.added.get(k, t_created) for k in keys), default=t_created) - t_created, 1
        )
        create_rss_peak = max((r for _, r in sampler.samples), default=float("nan"))
        after = settle(counter, ns.quiet, ns.timeout)
        w = Counter.operator_writes(before, after)
        results["create_writes"] = w
        results["create_cpu_s"] = round(sampler.cpu() - cpu0, 1)
        results["create_cpu_ledger"] = ledger.since()
        lat = [dwatch.added[k] - created_at[k] for k in keys if k in dwatch.added]
        results["create_lat"] = lat
        results["create_missing"] = ns.models - len(lat)
        results["create_errors"] = errors[:5]
        results["rss_after_create_mib"] = round(create_rss_peak, 1)
        log(
            f"create→Deployment p50 {pct(lat, 50):.2f} s p99 {pct(lat, 99):.2f} s; "
            f"operator writes {w}"
        )
        unplaced = 0
        for nsname in namespaces:
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, nsname, PLURAL)[
                "items"
            ]:
                conds = (item.get("status") or {}).get("conditions") or []
                planned = next((c for c in conds if c.get("type") == "Planned"), {})
                if planned.get("status") != "True":
                    unplaced += 1
        results["unplaced"] = unplaced
        gpus = subprocess.run(
            [kubectl, f"--kubeconfig={state.kubeconfig}", "get", "deploy", "-A", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        products: dict[str, int] = {}
        for item in json.loads(gpus)["items"]:
            found = re.search(
                r'"nvidia\.com/gpu\.product"(?:: "|, "operator": "In", "values": \[")([^"]+)',
                json.dumps(item["spec"]["template"]["spec"]),
            )
            prod = found.group(1) if found else "?"
            products[prod] = products.get(prod, 0) + 1
        results["gpu_products"] = products

        # ------------------------------------------------------------ steady state
        snap_a = counter.snapshot()
        time.sleep(ns.idle)
        snap_b = counter.snapshot()
        idle = Counter.operator_writes(snap_a, snap_b)
        results["idle_writes_per_min"] = {k: v * 60 / ns.idle for k, v in idle.items()}
        results["rss_steady_mib"] = round(sampler.samples[-1][1], 1)
        if report is not None:
            os.kill(pid, signal.SIGUSR2)
            wait_until("the memory report", report.exists, 30)

        # ------------------------------------------------------------ edit
        edit_keys = keys[:: max(1, ns.models // max(1, ns.edits))][: ns.edits]
        edited_at: dict[tuple[str, str], float] = {}

        def edit(i: int) -> None:
            nsname, name = edit_keys[i]
            obj = custom.get_namespaced_custom_object(GROUP, VERSION, nsname, PLURAL, name)
            per = obj["spec"]["workload"]["images"]["perRequest"] + 1
            edited_at[edit_keys[i]] = time.monotonic()
            try:
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    nsname,
                    PLURAL,
                    name,
                    {"spec": {"workload": {"images": {"perRequest": per}}}},
                )
                counter.ours_mmm += 1
            except Exception as err:
                errors.append(f"edit {nsname}/{name}: {err}")

        with dwatch.lock:
            changes_before = {k: len(dwatch.changed.get(k, [])) for k in edit_keys}
        before = counter.snapshot()
        cpu0 = sampler.cpu()
        log(f"editing {len(edit_keys)} models at {ns.rate}/s")
        paced(len(edit_keys), ns.rate, edit)

        def edit_seen(k: tuple[str, str]) -> float | None:
            with dwatch.lock:
                times = dwatch.changed.get(k, [])[changes_before[k] :]
            return next((t for t in times if t >= edited_at[k]), None)

        wait_until(
            "every edit applied",
            lambda: all(edit_seen(k) is not None for k in edit_keys),
            min(ns.timeout, 300),
        )
        after = settle(counter, ns.quiet, ns.timeout)
        results["edit_writes"] = Counter.operator_writes(before, after)
        results["edit_cpu_s"] = round(sampler.cpu() - cpu0, 1)
        elat = [t - edited_at[k] for k in edit_keys if (t := edit_seen(k)) is not None]
        results["edit_lat"] = elat
        results["edit_missing"] = len(edit_keys) - len(elat)
        results["edit_count"] = len(edit_keys)
        log(f"edit→patch p50 {pct(elat, 50):.2f} s p99 {pct(elat, 99):.2f} s")
        results["rss_peak_mib"] = round(sampler.hwm_mib, 1)
        results["rss_after_edit_mib"] = round(sampler.samples[-1][1], 1)

        # ------------------------------------------------------------ restart
        sampler.stop.set()
        oplog = box.logs / "operator.log"
        t_stop = time.monotonic()
        os.killpg(pid, signal.SIGTERM)

        def stopped() -> bool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # the sandbox started it as our child
            return sampler.read() is None  # type: ignore[union-attr]

        wait_until("the operator to stop", stopped, 60, 0.1)
        results["stop_s"] = round(time.monotonic() - t_stop, 1)
        models_before = list_models(api_client)
        offset = oplog.stat().st_size
        before = counter.snapshot()
        t_start = time.monotonic()
        box.start_operator(serve=None, env=env, timeout=120)
        results["restart_healthy_s"] = round(time.monotonic() - t_start, 1)
        pid = box.state().pids["operator"]  # type: ignore[union-attr]
        sampler = ProcSampler(pid)
        threading.Thread(target=sampler.run, daemon=True).start()

        # kopf logs "Resuming is processed: …" once per object when its resume handlers are done
        # (the log lines carry no object name: counted, not matched).
        def resumed() -> int:
            with oplog.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace").count("Resuming is processed")

        ok = wait_until("every model resumed", lambda: resumed() >= len(keys), ns.timeout, 0.5)
        results["restart_resumed_s"] = round(time.monotonic() - t_start, 1)
        results["restart_resumed_n"] = resumed()
        results["restart_complete"] = ok
        after = settle(counter, ns.quiet, ns.timeout)
        results["restart_writes"] = Counter.operator_writes(before, after)
        results["restart_changed"] = changed_models(models_before, list_models(api_client))
        results["rss_after_restart_mib"] = round(sampler.samples[-1][1], 1)
        results["restart_cpu_s"] = round(sampler.cpu(), 1)
        sampler.stop.set()
    finally:
        (tmp / "partial.json").write_text(json.dumps(results, default=str))
        dwatch.stop.set()
        if sampler is not None:
            sampler.stop.set()
        box.down(quiet=True, keep_logs=ns.keep_logs)
        log("sandbox down" + (f" (logs kept in {box.logs})" if ns.keep_logs else ""))

    table = render(results)
    print(table)
    if ns.markdown:
        Path(ns.markdown).write_text(table)
    if ns.docs:
        append_docs(Path(ns.docs), results)
    Path(tmp / "results.json").write_text(json.dumps(results, default=str))
    log(f"raw results: {tmp / 'results.json'}")
    return 0


def fmt_writes(w: dict[str, float], per: int) -> str:
    return (
        f"{w['total'] / per:.2f} ({w['mmm'] / per:.2f} model patches, "
        f"{w['apply'] / per:.2f} applies, {w['events'] / per:.2f} events)"
    )


def figures(r: dict[str, Any]) -> str:
    create, edits = r["create_lat"], r["edit_lat"]
    p99c = pct(create, 99)
    rss_peak = r["rss_peak_mib"]
    idle = r["idle_writes_per_min"]
    rw = r["restart_writes"]
    n, e = r["models"], r["edit_count"]
    rows = [
        ("create→Deployment p50", f"{pct(create, 50):.2f} s", ""),
        (
            "create→Deployment p99",
            f"{p99c:.2f} s (max {max(create, default=float('nan')):.2f} s)",
            f"≤ 2 s: {'met' if p99c <= 2 else 'NOT met'}",
        ),
        ("edit→patch p50", f"{pct(edits, 50):.2f} s", ""),
        ("edit→patch p99", f"{pct(edits, 99):.2f} s", ""),
        ("operator API writes per created model", fmt_writes(r["create_writes"], n), ""),
        ("operator API writes per edit", fmt_writes(r["edit_writes"], e), ""),
        (
            "operator API writes per minute, idle (all settled)",
            f"{idle['total']:.0f} ({idle['mmm']:.0f} model patches, {idle['apply']:.0f} "
            f"applies, {idle['events']:.0f} events)",
            "",
        ),
        (
            "operator RSS idle (no models) / steady (all models)",
            (f"{r['rss_idle_mib']:.0f} MiB / {r['rss_steady_mib']:.0f} MiB"),
            "",
        ),
        (
            "operator RSS peak (VmHWM)",
            f"{rss_peak:.0f} MiB",
            f"≤ 250 MB: {'met' if rss_peak * 1.048576 <= 250 else 'NOT met'}",
        ),
        (
            "operator CPU: create phase / edit phase",
            (f"{r['create_cpu_s']:.0f} s / {r['edit_cpu_s']:.0f} s"),
            "",
        ),
        (
            "CPU seconds from the first create until all settled, by process",
            _ledger(r.get("create_cpu_ledger") or {}),
            "",
        ),
        ("restart: healthy", f"{r['restart_healthy_s']:.1f} s", ""),
        (
            f"restart: all {n} models resumed",
            f"{r['restart_resumed_s']:.1f} s ({r['restart_resumed_n']} resumed)",
            "",
        ),
        (
            "restart: operator API writes caused by the resume",
            f"{rw['total']:.0f} ({rw['mmm']:.0f} model patches, {rw['apply']:.0f} applies, "
            f"{rw['events']:.0f} events)",
            f"0 for unchanged models: {'met' if rw['total'] == 0 else 'NOT met'}",
        ),
        (
            "restart: models whose resourceVersion moved (fields changed)",
            "; ".join(r.get("restart_changed") or []) or "none",
            "",
        ),
    ]
    lines = ["| figure | value | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines) + "\n"


def _ledger(d: dict[str, float]) -> str:
    if not d:
        return "not measured"
    wall = d.get("wall", float("nan"))
    parts = [
        f"{k} {v:.0f}"
        for k, v in sorted(d.items(), key=lambda kv: -kv[1])
        if k not in ("machine", "wall")
    ]
    return (
        f"{', '.join(parts)}; all processes {d.get('machine', float('nan')):.0f} of "
        f"{2 * wall:.0f} core-seconds in {wall:.0f} s"
    )


def sizes(r: dict[str, Any]) -> str:
    pools = ", ".join(f"{p['nodes']} × {p['gpusPerNode']} {p['gpu']}" for p in r["pools"])
    gpus = ", ".join(f"{k}: {v}" for k, v in sorted(r["gpu_products"].items()))
    return (
        f"- sizes used: {r['models']} MultimodalModels, {r['nodes']} kwok GPU nodes ({pools}), "
        f"created at {r['rate']:g}/s (took {r['create_s']} s), {r['edit_count']} edits at "
        f"{r['rate']:g}/s\n"
        f"- Deployments by GPU product: {gpus}; models not planned: {r['unplaced']}; "
        f"models without a Deployment: {r['create_missing']}; edits not seen: "
        f"{r['edit_missing']}\n"
        f"- sandbox up with all nodes Ready: {r['sandbox_up_s']} s; last Deployment "
        f"{r['all_deployments_after_last_create_s']} s after the last create\n"
    )


def render(r: dict[str, Any]) -> str:
    return (
        "# Operator scale benchmark\n\n"
        f"Command: `{r['command']}`\n\n"
        "Machine: 2 CPU cores, 24 GiB, shared by etcd, kube-apiserver, controller-manager, "
        "scheduler, kwok, the operator and this script.\n\n"
        f"{sizes(r)}\n{figures(r)}"
    )


def append_docs(path: Path, r: dict[str, Any]) -> None:
    section = (
        "## Operator\n\n"
        "Command (from the repository root, after `pip install -e '.[dev]'`; sandbox binaries "
        "built):\n\n"
        f"```bash\n{r['command']}\n```\n\n"
        "How it measures and what the figures mean: `bench/operator/run.py` and "
        "`bench/operator/results.md`. Machine: 2 CPU cores, 24 GiB, shared by the whole "
        "control plane, kwok, the operator and the benchmark.\n\n"
        f"{sizes(r)}\n{figures(r)}"
    )
    path.write_text(replace_section(path.read_text(), "Operator", section))


if __name__ == "__main__":
    sys.exit(main())
