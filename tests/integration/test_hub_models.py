"""Models outside the catalog in the sandbox: the operator reads their configs from a Hub
stand-in on 127.0.0.1 with the real huggingface_hub client, plans them, and says on the model
what stops it (a gated repository, a token it may not read, the Hub down)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.hub import HubStandIn, Repo
from e2e.sandbox import SandboxState
from e2e.waiting import wait_for
from tests.integration.test_operator import (
    apply_manifest,
    condition,
    deployment,
    example,
    get_mm,
    in_process_operator,
    kubectl,
)

from mmop.model import CATALOG_MODELS_DIR

BASE = "Qwen/Qwen2-VL-2B-Instruct"
FINE_TUNE = "acme/qwen2-vl-2b-receipts"
GATED = "acme/qwen2-vl-2b-gated"
TOKEN = "hf_stand_in_accepted_0123456789"


# A family outside the catalog, from its published config (bench/families: a verbatim copy).
GPT_OSS = "openai/gpt-oss-20b"
FAMILIES = Path(__file__).resolve().parents[2] / "bench" / "families"
# Multimodal families mmop has no processor rule for: the generic path (bench/families).
NEW_MULTIMODAL = (
    "google/gemma-4-26B-A4B",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    "deepseek-ai/DeepSeek-OCR",
)
# Families with a processor rule, named by a Hub id outside the catalog (bench/families).
QWEN3_OMNI = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
MINICPM_V4 = "openbmb/MiniCPM-V-4"
QWEN3_6 = "Qwen/Qwen3.6-35B-A3B"  # Qwen3.5 architecture: hybrid linear attention, MoE, vision
GLM_4_1V = "zai-org/GLM-4.1V-9B-Thinking"
QWEN3_NEXT = "Qwen/Qwen3-Next-80B-A3B-Instruct"  # linear attention (Gated DeltaNet) MoE, text
GLM_4_5V = "zai-org/GLM-4.5V"  # GLM-4.1V's vision over a GLM-4.5-Air MoE decoder
INTERNVL3_5 = "OpenGVLab/InternVL3_5-8B"  # the remote-code chat layout over a Qwen3 decoder


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStandIn]:
    base = CATALOG_MODELS_DIR / BASE
    gpt_oss = {"config.json": (FAMILIES / GPT_OSS / "config.json").read_bytes()}
    stand_in = HubStandIn(
        {
            FINE_TUNE: Repo.from_dir(FINE_TUNE, base),
            GATED: Repo.from_dir(GATED, base, gated=True, tokens=frozenset({TOKEN})),
            GPT_OSS: Repo(GPT_OSS, gpt_oss),
            **{
                m: Repo.from_dir(m, FAMILIES / m)
                for m in (
                    *NEW_MULTIMODAL,
                    QWEN3_OMNI,
                    MINICPM_V4,
                    QWEN3_6,
                    GLM_4_1V,
                    QWEN3_NEXT,
                    GLM_4_5V,
                    INTERNVL3_5,
                )
            },
        }
    )
    with stand_in.serve():
        yield stand_in


@pytest.fixture(scope="module")
def operator(sandbox: SandboxState, hub: HubStandIn) -> Iterator[Any]:
    with in_process_operator(
        sandbox,
        hub_endpoint=hub.url,
        hub_token_secrets=frozenset({"hf-token"}),
        unplaced_retry_seconds=2.0,
    ) as ctx:
        yield ctx


def model(name: str, model_id: str, secret: str | None = None) -> dict[str, Any]:
    doc = example("qwen2.5-vl-7b.yaml")
    doc["metadata"]["name"] = name
    doc["spec"]["model"] = {"id": model_id}
    if secret:
        doc["spec"]["model"]["tokenSecretRef"] = {"name": secret, "key": "token"}
    return doc


def secret(sandbox: SandboxState, namespace: str, name: str, value: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"token": base64.b64encode(value.encode()).decode()},
    }
    kubectl(sandbox, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def planned(sandbox: SandboxState, namespace: str, name: str, status: str, reason: str) -> Any:
    def probe() -> dict[str, Any] | None:
        mm = get_mm(sandbox, namespace, name)
        cond = condition(mm, "Planned")
        return mm if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    try:
        return wait_for(probe, f"Planned={status} {reason} on {name}", timeout=90)
    except AssertionError:
        mm = get_mm(sandbox, namespace, name)
        raise AssertionError(f"{name}: {(mm.get('status') or {}).get('conditions')}") from None


def test_a_fine_tune_on_the_hub_is_planned_and_served_by_its_hub_id(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    apply_manifest(sandbox, namespace, model("receipts", FINE_TUNE))
    mm = planned(sandbox, namespace, "receipts", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == FINE_TUNE and plan["modelSource"] == "hub"
    assert plan["modelCommit"] == hub.repos[FINE_TUNE].revisions["main"]
    dep = wait_for(lambda: deployment(sandbox, namespace, "receipts"), "the Deployment")
    assert FINE_TUNE in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    wait_for(
        lambda: (
            (c := condition(get_mm(sandbox, namespace, "receipts"), "Ready"))
            and c["status"] == "True"
        ),
        "Ready=True",
        timeout=120,
    )


def test_a_gated_model_is_read_with_the_token_the_operator_may_read_and_never_shown(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    secret(sandbox, namespace, "hf-token", TOKEN)
    apply_manifest(sandbox, namespace, model("gated", GATED, secret="hf-token"))
    mm = planned(sandbox, namespace, "gated", "True", "PlanFound")
    assert mm["status"]["plan"]["modelSource"] == "hub"
    events = kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json")
    assert TOKEN not in json.dumps(mm) and TOKEN not in events


def test_a_token_secret_the_operator_may_not_read_is_named_on_the_model(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    secret(sandbox, namespace, "team-token", TOKEN)
    apply_manifest(sandbox, namespace, model("not-listed", GATED, secret="team-token"))
    mm = planned(sandbox, namespace, "not-listed", "False", "TokenUnavailable")
    message = condition(mm, "Planned")["message"]  # type: ignore[index]
    assert "gated" in message and "team-token" in message and "hub.tokenSecrets" in message
    assert deployment(sandbox, namespace, "not-listed") is None
    events = json.loads(kubectl(sandbox, "get", "events", "-n", namespace, "-o", "json"))
    assert any(e["reason"] == "TokenUnavailable" for e in events["items"])


def test_an_unreachable_hub_is_shown_and_the_model_is_planned_once_it_is_back(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    hub.add(Repo.from_dir("acme/later", CATALOG_MODELS_DIR / BASE))
    hub.down = True
    try:
        apply_manifest(sandbox, namespace, model("later", "acme/later"))
        mm = planned(sandbox, namespace, "later", "False", "HubUnreachable")
        assert "503" in condition(mm, "Planned")["message"]  # type: ignore[index]
    finally:
        hub.down = False
    # Retried by the operator's loop within the Hub's first backoff (15 s) and a retry period.
    planned(sandbox, namespace, "later", "True", "PlanFound")


def test_an_unknown_repository_is_refused_with_the_hubs_answer(
    sandbox: SandboxState, operator: Any, namespace: str
) -> None:
    apply_manifest(sandbox, namespace, model("typo", "acme/qwen2-vl-2b-reciepts"))
    mm = planned(sandbox, namespace, "typo", "False", "ModelNotFound")
    assert "acme/qwen2-vl-2b-reciepts was not found" in condition(mm, "Planned")["message"]  # type: ignore[index]


def config_map(sandbox: SandboxState, namespace: str, name: str, files: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": files,
    }
    kubectl(sandbox, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def test_a_model_read_from_a_config_map_needs_no_hub(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """Air-gapped: the id is nowhere on the Hub; its configs are in a ConfigMap."""
    doc = model("offline", "internal/qwen2-vl-2b-mirror")
    doc["spec"]["model"]["configMapRef"] = {"name": "qwen-configs"}
    apply_manifest(sandbox, namespace, doc)
    mm = planned(sandbox, namespace, "offline", "False", "ModelConfigMissing")
    assert "qwen-configs" in condition(mm, "Planned")["message"]  # type: ignore[index]
    base = CATALOG_MODELS_DIR / BASE
    files = {p.name: p.read_text() for p in base.iterdir() if p.suffix == ".json"}
    config_map(sandbox, namespace, "qwen-configs", files)
    mm = planned(sandbox, namespace, "offline", "True", "PlanFound")
    assert mm["status"]["plan"]["modelSource"] == "configmap"
    assert not any("qwen2-vl-2b-mirror" in r for r in hub.requests)  # the Hub was never asked


def test_a_family_outside_the_catalog_plans_from_the_hub(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """gpt-oss-20b (MXFP4 MoE, sliding-window layers), a text model: planned from the Hub
    stand-in's copy of its published config, with vLLM's MXFP4 sizing."""
    doc = model("gpt-oss", GPT_OSS)
    doc["spec"]["workload"] = {"promptTokens": 2048, "outputTokens": 512, "concurrency": 8}
    apply_manifest(sandbox, namespace, doc)
    mm = planned(sandbox, namespace, "gpt-oss", "True", "PlanFoundApproximate")
    plan = mm["status"]["plan"]
    assert plan["model"] == GPT_OSS and plan["modelSource"] == "hub"
    assert plan["approximate"] is True and plan["kvMemoryScale"] == 0.8  # the generic path's margin
    assert plan["quantization"] == "mxfp4"
    assert plan["memory"]["weights_gib"] > 12.5  # experts MXFP4, the rest bf16 (~13.7 GiB)


@pytest.mark.parametrize("model_id", NEW_MULTIMODAL)
def test_a_multimodal_family_without_a_processor_rule_plans_approximately_from_the_hub(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str, model_id: str
) -> None:
    """Gemma 4, Llama 4, DeepSeek-OCR: read from the Hub stand-in's copies of their published
    configs by the generic path, planned with images at the tower's upper bound and the
    approximate margin, and said so on the model."""
    name = model_id.split("/")[1].lower().replace(".", "-")[:40].rstrip("-")
    apply_manifest(sandbox, namespace, vision_workload(model(name, model_id)))
    mm = planned(sandbox, namespace, name, "True", "PlanFoundApproximate")
    plan = mm["status"]["plan"]
    assert plan["model"] == model_id and plan["modelSource"] == "hub"
    assert plan["approximate"] is True and plan["kvMemoryScale"] == 0.8
    assert plan["maxImageTokens"] > 0
    assert any("multimodal family" in note for note in plan.get("notes", [])), plan.get("notes")


def vision_workload(doc: dict[str, Any]) -> dict[str, Any]:
    doc["spec"]["workload"] = {
        "images": {"perRequest": 1, "maxWidth": 1024, "maxHeight": 1024},
        "contextLength": {"min": 8192},
        "promptTokens": 1024,
        "outputTokens": 256,
        "concurrency": 4,
    }
    return doc


def test_qwen3_omni_plans_from_the_hub_with_its_own_processor_rule(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """Qwen3-Omni is not the generic path: its thinker is sized and its images counted as its
    processor counts them (tests/engine/test_processor_tokens.py). The stand-in serves its
    config.json only (no public copy of its preprocessor_config.json is kept here), so images
    are bounded by the size published Qwen models set, not the processor class default, and the
    plan says it is approximate and why."""
    apply_manifest(sandbox, namespace, vision_workload(model("omni3", QWEN3_OMNI)))
    mm = planned(sandbox, namespace, "omni3", "True", "PlanFoundApproximate")
    plan = mm["status"]["plan"]
    assert plan["model"] == QWEN3_OMNI and plan["modelSource"] == "hub"
    assert plan["approximate"] is True and plan["kvMemoryScale"] == 0.8
    notes = plan.get("notes", [])
    assert any("no preprocessor_config.json" in note for note in notes), notes
    # 1024x1024 on 32-pixel units, within the published bound: 32 x 32 tokens (the class
    # default's 980 units would have shrunk it to 31 x 31)
    assert plan["maxImageTokens"] == 1024
    # the thinker alone: 59.1 GiB in bf16; the cheapest plan may quantize it to fp8 online
    weights = plan["memory"]["weights_gib"] * plan["gpusPerReplica"]
    expected = {"fp8": (29.5, 33.0)}.get(plan["quantization"], (58.5, 59.8))
    assert expected[0] < weights < expected[1], (plan["quantization"], weights)


def test_minicpm_v4_needs_the_users_consent_to_remote_code_then_plans(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    apply_manifest(sandbox, namespace, vision_workload(model("minicpm4", MINICPM_V4)))
    mm = planned(sandbox, namespace, "minicpm4", "False", "RemoteCodeRequired")
    assert "trustRemoteCode" in condition(mm, "Planned")["message"]  # type: ignore[index]
    assert deployment(sandbox, namespace, "minicpm4") is None
    doc = vision_workload(model("minicpm4", MINICPM_V4))
    doc["spec"]["model"]["trustRemoteCode"] = True
    apply_manifest(sandbox, namespace, doc)
    mm = planned(sandbox, namespace, "minicpm4", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == MINICPM_V4 and not plan.get("approximate")
    assert plan["maxImageTokens"] == 448  # worst image within 1024x1024: (1 + 6 slices) x 64


def test_qwen3_6_plans_from_the_hub_with_its_hybrid_kv_cache(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """Qwen3.6 (the Qwen3.5 architecture): Qwen3-VL's processors over a hybrid decoder whose
    linear-attention layers keep a state per request, not a KV cache per token."""
    apply_manifest(sandbox, namespace, vision_workload(model("qwen36", QWEN3_6)))
    mm = planned(sandbox, namespace, "qwen36", "True", "PlanFoundApproximate")
    plan = mm["status"]["plan"]
    assert plan["model"] == QWEN3_6 and plan["modelSource"] == "hub"
    # config.json only on the stand-in: the published image bound, approximate
    assert plan["approximate"] is True
    assert plan["maxImageTokens"] == 1024  # 1024x1024 on 32-pixel units


def test_glm_4_1v_plans_from_the_hub_with_video_off(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """GLM-4.1V: images as its processor counts them; a workload without video gets a plan that
    turns video off, so vLLM profiles no video dummy."""
    apply_manifest(sandbox, namespace, vision_workload(model("glm41v", GLM_4_1V)))
    mm = planned(sandbox, namespace, "glm41v", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == GLM_4_1V and not plan.get("approximate")
    assert plan["maxImageTokens"] == 1369  # 1024x1024: 37 x 37 tokens of 28 px
    dep = wait_for(lambda: deployment(sandbox, namespace, "glm41v"), "the Deployment")
    args = " ".join(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    assert '"video":0' in args.replace(" ", ""), args


def test_glm_4_1v_plans_video_from_the_hub(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """GLM-4.1V with video: its frames counted as Glm4vVideoProcessor samples and resizes them
    (tests/engine/test_processor_tokens.py), so the plan is exact and keeps video on."""
    doc = vision_workload(model("glm41v-video", GLM_4_1V))
    doc["spec"]["workload"]["video"] = {
        "enabled": True, "maxFrames": 32, "maxWidth": 640, "maxHeight": 360,
    }  # fmt: skip
    doc["spec"]["workload"]["contextLength"] = {"min": 16384}
    apply_manifest(sandbox, namespace, doc)
    mm = planned(sandbox, namespace, "glm41v-video", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == GLM_4_1V and not plan.get("approximate")
    assert plan["videoTokens"] > 0
    dep = wait_for(lambda: deployment(sandbox, namespace, "glm41v-video"), "the Deployment")
    args = " ".join(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    assert '"video":0' not in args.replace(" ", ""), args


def test_qwen3_next_plans_from_the_hub(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """Qwen3-Next (hybrid Gated DeltaNet and full attention, MoE): planned from the Hub stand-in's
    copy of its published config, across GPUs (its 148 GiB of bf16 weights hold no one GPU)."""
    doc = model("qwen3-next", QWEN3_NEXT)
    doc["spec"]["workload"] = {"promptTokens": 2048, "outputTokens": 512, "concurrency": 8}
    apply_manifest(sandbox, namespace, doc)
    mm = wait_for(
        lambda: (
            (m := get_mm(sandbox, namespace, "qwen3-next"))
            and (condition(m, "Planned") or {}).get("status") == "True"
            and m
        ),
        "Planned=True on qwen3-next",
        timeout=90,
    )
    plan = mm["status"]["plan"]
    assert plan["model"] == QWEN3_NEXT and plan["modelSource"] == "hub"
    assert plan["gpusPerReplica"] * plan["memory"]["weights_gib"] > 70  # fp8 at least


def test_glm_4_5v_plans_from_the_hub_across_gpus(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """GLM-4.5V (glm4v_moe): GLM-4.1V's image rule over a MoE decoder of 107.7 B parameters
    (200.6 GiB in bf16), so the plan is exact, spans GPUs and turns video off."""
    apply_manifest(sandbox, namespace, vision_workload(model("glm45v", GLM_4_5V)))
    mm = planned(sandbox, namespace, "glm45v", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == GLM_4_5V and plan["modelSource"] == "hub"
    assert not plan.get("approximate")
    assert plan["maxImageTokens"] == 1369  # 1024x1024: 37 x 37 tokens of 28 px
    assert plan["gpusPerReplica"] >= 2
    weights = plan["memory"]["weights_gib"] * plan["gpusPerReplica"]
    assert weights > 95, (plan["quantization"], weights)  # fp8 at least
    dep = wait_for(lambda: deployment(sandbox, namespace, "glm45v"), "the Deployment")
    args = " ".join(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    assert '"video":0' in args.replace(" ", ""), args


def test_internvl3_5_needs_remote_code_then_plans_with_its_tiling(
    sandbox: SandboxState, operator: Any, hub: HubStandIn, namespace: str
) -> None:
    """InternVL3.5-8B (InternVLChatModel over Qwen3-8B): the chat rule's tiling, so the plan is
    exact; its config maps AutoConfig to the repository's code, which the user must allow."""
    apply_manifest(sandbox, namespace, vision_workload(model("internvl35", INTERNVL3_5)))
    planned(sandbox, namespace, "internvl35", "False", "RemoteCodeRequired")
    doc = vision_workload(model("internvl35", INTERNVL3_5))
    doc["spec"]["model"]["trustRemoteCode"] = True
    apply_manifest(sandbox, namespace, doc)
    mm = planned(sandbox, namespace, "internvl35", "True", "PlanFound")
    plan = mm["status"]["plan"]
    assert plan["model"] == INTERNVL3_5 and plan["modelSource"] == "hub"
    assert not plan.get("approximate")
    assert plan["maxImageTokens"] == (12 + 1) * 256  # worst image within 1024x1024
