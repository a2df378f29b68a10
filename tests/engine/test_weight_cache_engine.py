"""The weight cache with the real tools: the download Job mmop renders, run as it is with the
engine venv's ``hf`` (huggingface_hub's CLI, as in the serving image) against a Hub stand-in on
127.0.0.1, fills a directory (the claim) with the Hub's cache layout, leaves out the formats
vLLM never reads and asks nothing again on a second run; then vLLM's CPU build, given the Hub id
the pod names, ``HF_HUB_OFFLINE=1`` and that directory read-only at ``HF_HOME``, with the
stand-in stopped, starts from it and answers a chat, as a replica mounting the claim does."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.engine.images import png_data_url
from e2e.engine.launcher import EngineServer
from e2e.engine.load import chat
from e2e.engine.scenario import EXAMPLES, PRESSURE_FLAGS
from e2e.engine.venv import EngineVenv
from e2e.hub import HubStandIn, Repo

from mmop.api import MultimodalModel
from mmop.inventory import default_inventory
from mmop.planner import Plan, plan
from mmop.render import FILL_COMMAND, HF_HOME, HOME, RenderOptions, cache_objects, render

UID = "0f6c9d2e-1111-4a5b-9c3d-222233334444"
EXAMPLE = "qwen2.5-vl-7b.yaml"
NAME = "qwen-vl"  # the example's name, its served model name
# Served beside the tiny model's files; the Job's --exclude patterns leave them out.
EXCLUDED = {"original/consolidated.pth": b"\0" * 4096, "model.gguf": b"GGUF" + b"\0" * 1020}
DOWNLOAD_SECONDS = 180
ENGINE_START_SECONDS = 300


def cached_manifest() -> MultimodalModel:
    doc = yaml.safe_load((EXAMPLES / EXAMPLE).read_text())
    doc["spec"]["model"]["cache"] = {}
    return MultimodalModel.model_validate(doc)


def fill_container(m: MultimodalModel, p: Plan) -> dict[str, Any]:
    objs = cache_objects(NAME, "serving", UID, m.spec, p, RenderOptions())
    (job,) = [o for o in objs if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return dict(container)


def job_environment(
    container: Mapping[str, Any], home: Path, claim: Path, endpoint: str
) -> dict[str, str]:
    """The Job container's variables, its two volumes here (HOME an empty directory, HF_HOME the
    claim), HF_ENDPOINT the stand-in; nothing else of this process's environment but PATH."""
    mounts = {HOME: str(home), HF_HOME: str(claim)}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_ENDPOINT": endpoint}
    for var in container["env"]:
        assert "value" in var, var  # no token in this manifest: every variable is a value
        env[var["name"]] = mounts.get(var["value"], var["value"])
    return env


def run_job(argv: list[str], env: Mapping[str, str], cwd: Path) -> str:
    proc = subprocess.run(
        argv,
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=DOWNLOAD_SECONDS,
        check=False,
    )
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def snapshot_files(snapshot: Path) -> dict[str, bytes]:
    return {
        p.relative_to(snapshot).as_posix(): p.read_bytes()
        for p in sorted(snapshot.rglob("*"))
        if p.is_file()
    }


def downloads(hub: HubStandIn) -> dict[str, int]:
    """The file requests (HEAD and GET of resolve) the stand-in answered, by request."""
    return {k: n for k, n in hub.requests.items() if "/resolve/" in k}


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


def test_the_rendered_job_fills_the_cache_and_vllm_serves_from_it_offline(
    engine: EngineVenv, qwen_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = engine.venv / "bin" / "hf"
    assert hf.is_file(), f"the engine venv has no {hf}"
    m = cached_manifest()
    p = plan(m, default_inventory())
    model_id = p.model  # the stand-in serves the tiny model under the id the plan names
    container = fill_container(m, p)
    argv = list(container["command"])
    assert argv[: len(FILL_COMMAND)] == list(FILL_COMMAND) and argv[2] == model_id
    # the CLI's daily update check would ask https://pypi.org: the test (and the Job) may not
    assert {"name": "HF_HUB_DISABLE_UPDATE_CHECK", "value": "1"} in container["env"]

    files = {p.name: p.read_bytes() for p in sorted(qwen_model.iterdir()) if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files
    repo = Repo(model_id, {**files, **EXCLUDED})
    commit = repo.revisions["main"]
    hub = HubStandIn({model_id: repo})
    claim, home = tmp_path / "claim", tmp_path / "home"
    claim.mkdir()
    home.mkdir()
    try:
        url = hub.start()
        env = job_environment(container, home, claim, url)
        job_argv = [str(hf), *argv[1:]]  # only argv[0]: the CLI of the engine venv

        # 1. The first run downloads the checkpoint into the Hub's cache layout.
        run_job(job_argv, env, home)
        storage = claim / "hub" / f"models--{model_id.replace('/', '--')}"
        assert (storage / "refs" / "main").read_text() == commit
        assert snapshot_files(storage / "snapshots" / commit) == files  # nothing excluded
        first = downloads(hub)
        for name in files:
            assert first.get(f"GET /{model_id}/resolve/{commit}/{name}") == 1, (name, first)
        assert not [k for k in first if any(k.endswith(f"/{x}") for x in EXCLUDED)], first
        asked = {k for k in hub.requests if "/resolve/" not in k}
        api = f"GET /api/models/{model_id}"
        # the revision's commit, its file list (then kept in the claim, trees/<commit>.json),
        # and the CLI's agent registry (kept a day in HF_HOME)
        expected = {f"{api}/revision/main", f"{api}/tree/{commit}", "GET /api/agent-harnesses"}
        assert asked == expected

        # 2. Again (a new Job for the same checkpoint): it only resolves the revision.
        hub.requests.clear()
        run_job(job_argv, env, home)
        assert dict(hub.requests) == {f"GET /api/models/{model_id}/revision/main": 1}

        # 3. A file a failed pod left missing: the next one fetches that file alone.
        weights = storage / "snapshots" / commit / "model.safetensors"
        weights.resolve().unlink()
        weights.unlink()
        hub.requests.clear()
        run_job(job_argv, env, home)
        assert list(downloads(hub)) == [
            f"HEAD /{model_id}/resolve/{commit}/model.safetensors",
            f"GET /{model_id}/resolve/{commit}/model.safetensors",
        ]
        assert snapshot_files(storage / "snapshots" / commit) == files
    finally:
        hub.stop()  # the engine below runs with no Hub to reach

    # 4. A replica: the Deployment's argv (the Hub id, not a path) and its offline variable,
    # the claim read-only at HF_HOME, HF_ENDPOINT the stopped stand-in's address.
    r = render(NAME, "serving", UID, m.spec, p, RenderOptions())
    (pod_container,) = r.deployment["spec"]["template"]["spec"]["containers"]
    pod_env = {e["name"]: e.get("value") for e in pod_container["env"]}
    assert pod_env["HF_HUB_OFFLINE"] == "1" and pod_env["HF_HOME"] == HF_HOME
    mount = {v["mountPath"]: v for v in pod_container["volumeMounts"]}[HF_HOME]
    assert mount.get("readOnly") is True
    pod_argv = [*pod_container["command"], *pod_container.get("args", []), *PRESSURE_FLAGS]
    monkeypatch.setenv("HF_ENDPOINT", url)  # refused: nothing listens there any more
    set_writable(claim, False)  # the claim's files as the Job left them, now read-only
    before = sorted(str(p) for p in claim.rglob("*"))
    server, built = EngineServer.for_pod_argv(
        pod_argv,
        None,  # the pod's own model id, looked up in the cache
        tmp_path / "vllm",
        venv=engine,
        hf_home=claim,
        read_only=[claim] if shutil.which("unshare") else [],
        env={"HF_HUB_OFFLINE": pod_env["HF_HUB_OFFLINE"], "TRANSFORMERS_OFFLINE": None},
    )
    assert built.argv[:2] == ["--model", model_id]
    try:
        server.start(timeout=ENGINE_START_SECONDS)
        # vLLM found the id's files in the cache: refs/main, then the snapshot of that commit
        snapshot = storage / "snapshots" / commit
        assert f"replace model_id [{model_id}] to model_path [{snapshot}]" in server.log_text()
        answer = chat(server.url, NAME, [png_data_url(320, 240, seed=7)], max_tokens=4, timeout=120)
        assert answer.status == 200, answer.error
        assert answer.completion_tokens == 4 and answer.prompt_tokens > 0
    finally:
        server.stop()
        set_writable(claim, True)
    assert not server.alive()
    assert sorted(str(p) for p in claim.rglob("*")) == before  # the replica wrote nothing
