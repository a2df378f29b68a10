"""Plans that a real cluster accepts: each test reproduces a way `mmop plan` used to exit 0 with
a plan that failed (remote code, downscaled images, clamped context, an argv with a path of the
planning machine, max_num_seqs beyond the SLO, memory at other flags, pods no node holds)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_planner import inventory, manifest

from mmop import modalities
from mmop.api import MultimodalModel
from mmop.estimator import EngineArgs, estimate
from mmop.inventory import default_inventory
from mmop.model import CATALOG_MODELS_DIR, load_profile
from mmop.planner import PlanningError, plan, pod_resources
from mmop.render import vllm_args

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> MultimodalModel:
    return MultimodalModel.model_validate(yaml.safe_load((ROOT / "examples" / name).read_text()))


def flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg == name:
            return ""
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


INTERNVL = {
    "model": {"id": "OpenGVLab/InternVL2_5-8B"},
    "workload": {
        "images": {"perRequest": 1, "maxWidth": 2048, "maxHeight": 2048},
        "contextLength": {"min": 8192},
        "requestsPerSecond": 4,
        "slo": {"ttftP95Seconds": 2},
    },
    "scaling": {"maxReplicas": 6},
}


# --- remote code -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    ["OpenGVLab/InternVL2_5-8B", "microsoft/Phi-3.5-vision-instruct", "openbmb/MiniCPM-V-2_6"],
)
def test_a_model_that_needs_remote_code_is_not_planned_without_consent(model_id: str) -> None:
    spec = {"model": {"id": model_id}, "workload": {"images": {"perRequest": 1}}}
    with pytest.raises(PlanningError) as err:
        plan(manifest(spec), default_inventory())
    assert err.value.reason == "RemoteCodeRequired"
    assert err.value.bad_input
    assert "trustRemoteCode: true" in str(err.value)


def test_with_consent_the_flag_is_rendered_and_the_plan_says_so() -> None:
    spec = {**INTERNVL, "model": {"id": "OpenGVLab/InternVL2_5-8B", "trustRemoteCode": True}}
    result = plan(manifest(spec), default_inventory())
    assert "--trust-remote-code" in vllm_args(result)
    assert result.trust_remote_code
    assert any("remote code" in note or "code from the model" in note for note in result.notes)


def test_the_internvl_example_allows_remote_code_and_renders_the_flag() -> None:
    result = plan(example("internvl2.5-8b.yaml"), default_inventory())
    assert "--trust-remote-code" in vllm_args(result)


def test_models_without_remote_code_never_get_the_flag() -> None:
    result = plan(example("qwen2.5-vl-7b.yaml"), default_inventory())
    assert "--trust-remote-code" not in vllm_args(result)
    assert not result.trust_remote_code


def test_remote_code_cannot_be_smuggled_through_extra_args() -> None:
    with pytest.raises(ValueError, match="trustRemoteCode"):
        manifest({**INTERNVL, "engine": {"extraArgs": ["--trust-remote-code"]}})


# --- images: native unless the spec sets a floor ------------------------------------------------


def test_images_are_not_downscaled_without_a_floor_in_the_spec() -> None:
    result = plan(example("internvl2.5-8b.yaml"), default_inventory())
    profile = load_profile("OpenGVLab/InternVL2_5-8B")
    native = modalities.worst_image_cost(profile, 2048, 2048).tokens
    assert result.native_tokens_per_image == native
    assert result.tokens_per_image == native
    assert result.native_cost_per_hour_usd is None  # the plan is native


def test_a_floor_allows_a_cap_and_the_plan_shows_what_native_would_cost(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {
            "images": {
                "perRequest": 8,
                "maxWidth": 4096,
                "maxHeight": 4096,
                "minTokensPerImage": 256,
            },
            "contextLength": {"min": 32768},
            "concurrency": 64,
        },
        "placement": {"quantizations": ["none"], "kvCacheDtypes": ["auto"]},
        "scaling": {"maxReplicas": 16},
    }
    inv = inventory(tmp_path, [{"name": "l4", "gpu": "L4", "nodes": 16, "gpusPerNode": 1}])
    result = plan(manifest(spec), inv)
    assert result.native_tokens_per_image is not None and result.tokens_per_image is not None
    assert result.tokens_per_image >= 256
    if result.tokens_per_image < result.native_tokens_per_image:
        assert result.native_cost_per_hour_usd is None or (
            result.native_cost_per_hour_usd > result.cost_per_hour_usd
        )
        assert any("native" in note for note in result.notes)


def test_a_smaller_cap_never_wins_at_the_same_cost(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"images": {"perRequest": 1, "minTokensPerImage": 64}},
    }
    inv = inventory(tmp_path, [{"name": "h100", "gpu": "H100-80GB", "nodes": 1, "gpusPerNode": 1}])
    result = plan(manifest(spec), inv)
    assert result.tokens_per_image == result.native_tokens_per_image


def test_the_planned_image_budget_is_the_worst_case_within_the_bounds() -> None:
    spec = {
        "model": {"id": "OpenGVLab/InternVL3-8B", "trustRemoteCode": True},
        "workload": {"images": {"perRequest": 1, "maxWidth": 2048, "maxHeight": 2048}},
    }
    result = plan(manifest(spec), default_inventory())
    profile = load_profile("OpenGVLab/InternVL3-8B")
    wide = modalities.image_cost(profile, 1920, 640, result.mm_processor_kwargs).tokens
    corner = modalities.image_cost(profile, 2048, 2048, result.mm_processor_kwargs).tokens
    assert wide > corner
    assert result.tokens_per_image is not None and result.tokens_per_image >= wide


# --- context ------------------------------------------------------------------------------------


def test_a_context_above_the_models_limit_is_refused_with_the_limit() -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"contextLength": {"min": 1_000_000}},
    }
    with pytest.raises(PlanningError) as err:
        plan(manifest(spec), default_inventory())
    limit = load_profile("Qwen/Qwen2.5-VL-7B-Instruct").max_position_embeddings
    assert err.value.reason == "ContextTooLong"
    assert err.value.bad_input
    assert str(limit) in str(err.value)


def test_a_preferred_context_above_the_limit_is_planned_at_the_limit_and_said() -> None:
    limit = load_profile("Qwen/Qwen2.5-VL-7B-Instruct").max_position_embeddings
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"contextLength": {"min": 4096, "preferred": limit * 4}},
    }
    result = plan(manifest(spec), default_inventory())
    assert result.max_model_len <= limit
    assert any("preferred" in note for note in result.notes)


# --- max_num_seqs from the SLO, with a margin -------------------------------------------------


def test_max_num_seqs_is_the_in_slo_concurrency_with_a_margin() -> None:
    m = example("qwen2.5-vl-7b.yaml")
    result = plan(m, default_inventory())
    assert result.max_num_seqs == result.performance.concurrency_per_replica
    assert flag(vllm_args(result), "--max-num-seqs") == str(result.max_num_seqs)
    slo = m.spec.workload.slo
    if slo.ttft_p95_seconds:
        assert result.performance.ttft_p95_seconds <= 0.9 * slo.ttft_p95_seconds + 1e-6
    if slo.tpot_p95_seconds:
        assert result.performance.tpot_p95_seconds <= 0.9 * slo.tpot_p95_seconds + 1e-6


def test_the_margin_is_a_spec_field() -> None:
    base = example("qwen2.5-vl-7b.yaml").model_dump(by_alias=True, exclude_none=True)
    slo = base["spec"]["workload"]["slo"]
    loose = plan(MultimodalModel.model_validate(base), default_inventory())
    slo["margin"] = 0.6
    tight = plan(MultimodalModel.model_validate(base), default_inventory())
    assert tight.performance.concurrency_per_replica <= loose.performance.concurrency_per_replica
    if slo.get("ttftP95Seconds"):
        assert tight.performance.ttft_p95_seconds <= 0.6 * slo["ttftP95Seconds"] + 1e-6


# --- the memory shown is the memory at the rendered flags --------------------------------------


@pytest.mark.parametrize("name", ["qwen2.5-vl-7b.yaml", "gemma-3-27b.yaml"])
def test_the_plans_memory_is_vllms_at_exactly_the_rendered_flags(name: str) -> None:
    m = example(name)
    result = plan(m, default_inventory())
    assert result.memory.max_num_seqs == result.max_num_seqs
    profile = load_profile(result.model)
    gpu = default_inventory().pool(result.gpu)
    assert gpu is not None
    args = EngineArgs(
        tensor_parallel_size=result.tensor_parallel_size,
        quantization="fp8" if flag(vllm_args(result), "--quantization") == "fp8" else None,
        kv_cache_dtype=flag(vllm_args(result), "--kv-cache-dtype") or "auto",
        gpu_memory_utilization=result.gpu_memory_utilization,
        max_model_len=result.max_model_len,
        max_num_seqs=result.max_num_seqs,
        max_num_batched_tokens=result.max_num_batched_tokens,
        limit_mm_per_prompt=result.limit_mm_per_prompt,
        mm_processor_kwargs=result.mm_processor_kwargs,
    )
    again = estimate(profile, gpu.gpu_spec(), args)
    assert again.kv_cache_tokens == result.memory.kv_cache_tokens
    assert again.activation_gib == result.memory.activation_gib


# --- a local directory is planned offline; the pod never serves its path -----------------------


def with_model_id(spec: dict[str, Any], model_id: str) -> MultimodalModel:
    """A manifest whose spec.model.id is `model_id`, set past the schema (which refuses paths:
    the planner must be safe on its own, and `mmop plan` plans local directories)."""
    m = manifest({"model": {"id": "placeholder"}, **spec})
    source = m.spec.model.model_copy(update={"id": model_id})
    return m.model_copy(update={"spec": m.spec.model_copy(update={"model": source})})


def test_a_local_directory_never_reaches_the_pods_argv(tmp_path: Path) -> None:
    local = tmp_path / "my-finetune"
    shutil.copytree(CATALOG_MODELS_DIR / "Qwen/Qwen2.5-VL-7B-Instruct", local)
    spec: dict[str, Any] = {"model": {"id": "x"}, "workload": {"images": {"perRequest": 1}}}
    result = plan(with_model_id(spec, str(local)), default_inventory(), allow_local=True)
    assert all(str(tmp_path) not in arg for arg in vllm_args(result))
    assert vllm_args(result)[0] == "MODEL"
    assert any("local directory" in note for note in result.notes)
    named = plan(
        with_model_id(spec, str(local)),
        default_inventory(),
        allow_local=True,
        model_ref="acme/qwen-vl-ft",
    )
    assert vllm_args(named)[0] == "acme/qwen-vl-ft"
    assert named.model == "acme/qwen-vl-ft"


def test_the_operator_does_not_read_paths_of_its_own_filesystem(tmp_path: Path) -> None:
    local = tmp_path / "m"
    shutil.copytree(CATALOG_MODELS_DIR / "Qwen/Qwen2.5-VL-7B-Instruct", local)
    with pytest.raises(PlanningError) as err:
        plan(with_model_id({}, str(local)), default_inventory())
    assert err.value.reason == "UnknownModel"


@pytest.mark.parametrize("relative", [False, True])
def test_the_operator_answers_the_same_whether_or_not_a_path_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    """R8: an id naming a directory of the operator's machine gets the same message as one that
    names nothing, and the planner never asks the filesystem about it."""
    shutil.copytree(CATALOG_MODELS_DIR / "Qwen/Qwen2.5-VL-7B-Instruct", tmp_path / "org" / "m")
    monkeypatch.chdir(tmp_path)
    there = "org/m" if relative else str(tmp_path / "org" / "m")
    absent = "gro/m" if relative else str(tmp_path / "gro" / "m")
    assert Path(there).is_dir() and not Path(absent).exists()
    messages = []
    for model_id in (there, absent):
        with pytest.raises(PlanningError) as err:
            plan(with_model_id({}, model_id), default_inventory())
        assert err.value.reason == "UnknownModel"
        messages.append(str(err.value).replace(model_id, "ID"))
    assert messages[0] == messages[1]
    looked: list[str] = []
    real_is_dir, real_exists = Path.is_dir, Path.exists

    def is_dir(self: Path) -> bool:
        looked.append(str(self))
        return real_is_dir(self)

    def exists(self: Path, **kwargs: Any) -> bool:
        looked.append(str(self))
        return real_exists(self, **kwargs)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(PlanningError):
        plan(with_model_id({}, there), default_inventory())
    assert not [p for p in looked if "org/m" in p and "catalog" not in p], looked


def test_the_operator_reads_no_local_variant_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed variant that names a directory of the operator's machine is not read from it:
    it is planned as the base model's shape with the listed method, as any non-catalog id."""
    local = tmp_path / "awq"
    shutil.copytree(CATALOG_MODELS_DIR / "Qwen/Qwen2.5-VL-7B-Instruct-AWQ", local)
    m = manifest(
        {
            "model": {
                "id": "Qwen/Qwen2.5-VL-7B-Instruct",
                "variants": [{"id": "x/y", "quantization": "awq"}],
            },
            "placement": {"quantizations": ["awq"]},
        }
    )
    listed = m.spec.model.variants[0].model_copy(update={"id": str(local)})
    source = m.spec.model.model_copy(update={"variants": [listed]})
    m = m.model_copy(update={"spec": m.spec.model_copy(update={"model": source})})
    looked: list[str] = []
    real_is_dir, real_is_file = Path.is_dir, Path.is_file

    def is_dir(self: Path) -> bool:
        looked.append(str(self))
        return real_is_dir(self)

    def is_file(self: Path) -> bool:
        looked.append(str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    monkeypatch.setattr(Path, "is_file", is_file)
    operator = plan(m, default_inventory())
    assert operator.model == str(local)
    assert not [p for p in looked if p.startswith(str(tmp_path))], looked
    plan(m, default_inventory(), allow_local=True)  # the CLI reads it
    assert [p for p in looked if p.startswith(str(local))]


# --- a listed pre-quantized variant beats online quantization of the same method --------------


def test_a_listed_fp8_checkpoint_is_preferred_over_online_fp8(tmp_path: Path) -> None:
    spec = {
        "model": {
            "id": "Qwen/Qwen3-VL-4B-Instruct",
            "variants": [{"id": "Qwen/Qwen3-VL-4B-Instruct-FP8", "quantization": "fp8"}],
        },
        "workload": {"images": {"perRequest": 1}},
        "placement": {"quantizations": ["fp8"]},
    }
    inv = inventory(tmp_path, [{"name": "l4", "gpu": "L4", "nodes": 2, "gpusPerNode": 1}])
    result = plan(manifest(spec), inv)
    assert result.model == "Qwen/Qwen3-VL-4B-Instruct-FP8"
    assert vllm_args(result)[0] == "Qwen/Qwen3-VL-4B-Instruct-FP8"
    assert flag(vllm_args(result), "--quantization") is None  # the checkpoint says it
    assert any("pre-quantized" in note for note in result.notes)


# --- the whole pod must fit a node --------------------------------------------------------------


def test_pods_are_sized_from_the_model_and_land_only_where_they_fit(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"images": {"perRequest": 1}},
    }
    small = inventory(
        tmp_path,
        [{"name": "l4", "gpu": "L4", "nodes": 2, "gpusPerNode": 1, "cpu": "2", "memory": "16Gi"}],
    )
    with pytest.raises(PlanningError) as err:
        plan(manifest(spec), small)
    assert "CPU" in str(err.value)
    roomy = inventory(
        tmp_path,
        [{"name": "l4", "gpu": "L4", "nodes": 2, "gpusPerNode": 1, "cpu": "4", "memory": "16Gi"}],
    )
    result = plan(manifest(spec), roomy)
    assert result.resources.cpu_millicores <= 4000
    assert result.resources.memory_bytes <= 16 * 1024**3


def test_a_tight_node_gets_a_smaller_multimodal_cache_and_the_plan_says_so(
    tmp_path: Path,
) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"images": {"perRequest": 1}},
    }
    inv = inventory(
        tmp_path,
        [{"name": "l4", "gpu": "L4", "nodes": 1, "gpusPerNode": 1, "cpu": "4", "memory": "13Gi"}],
    )
    result = plan(manifest(spec), inv)
    cache = flag(vllm_args(result), "--mm-processor-cache-gb")
    assert cache is not None and int(cache) < 4
    assert result.resources.memory_bytes <= 13 * 1024**3
    assert any("--mm-processor-cache-gb" in note for note in result.notes)


def test_pod_sizes_grow_with_tensor_parallelism_and_media() -> None:
    text = pod_resources(14.0, 1, False, 4)
    media = pod_resources(14.0, 1, True, 4)
    tp4 = pod_resources(14.0, 4, True, 4)
    assert int(text.cpu) < int(media.cpu) < int(tp4.cpu)
    assert text.memory_bytes < media.memory_bytes < tp4.memory_bytes


# --- alternatives -------------------------------------------------------------------------------


def test_alternatives_carry_replicas_and_show_kv_or_cap_variants() -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {
            "images": {"perRequest": 2, "minTokensPerImage": 256},
            "concurrency": 32,
        },
    }
    result = plan(manifest(spec), default_inventory())
    priced = [a for a in result.alternatives if a.cost_per_hour_usd is not None]
    assert priced and all(a.replicas is not None for a in priced)
    same = [
        a
        for a in priced
        if (a.gpu, a.tensor_parallel_size, a.quantization)
        == (result.gpu, result.tensor_parallel_size, result.quantization)
    ]
    assert same, "no image-cap or KV-cache variant of the chosen configuration is shown"


# --- what the GPU runs: the pinned vLLM's dtype and kernels (mmop.capabilities) ----------------


T4_POOL = [{"name": "t4", "gpu": "T4", "nodes": 4, "gpusPerNode": 4}]


def test_gemma3_on_a_t4_is_planned_in_float32_and_the_plan_says_so(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "google/gemma-3-4b-it"},
        "workload": {"images": {"perRequest": 1}, "contextLength": {"min": 8192}},
    }
    result = plan(manifest(spec), inventory(tmp_path, T4_POOL))
    assert result.memory.dtype == "float32"
    # float32 weights of a 4B model (16 GiB) do not fit one 16 GB T4
    assert result.tensor_parallel_size > 1 or result.quantization != "none"
    assert any("float32" in note for note in result.notes)


def test_no_fp8_kv_cache_is_planned_on_a_t4(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"images": {"perRequest": 4}, "contextLength": {"min": 32768}},
        "placement": {"kvCacheDtypes": ["auto", "fp8"]},
        "scaling": {"maxReplicas": 16},
    }
    result = plan(manifest(spec), inventory(tmp_path, T4_POOL))
    assert result.kv_cache_dtype == "auto"
    assert flag(vllm_args(result), "--kv-cache-dtype") is None
    refused = [a for a in result.alternatives if a.kv_cache_dtype == "fp8"]
    assert all(a.cost_per_hour_usd is None for a in refused)


def test_only_fp8_kv_on_a_t4_is_refused_with_vllms_reason(tmp_path: Path) -> None:
    spec = {
        "model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "workload": {"images": {"perRequest": 1}},
        "placement": {"kvCacheDtypes": ["fp8"]},
    }
    with pytest.raises(PlanningError) as err:
        plan(manifest(spec), inventory(tmp_path, T4_POOL))
    assert "FP8 KV cache is not supported" in str(err.value)


def test_images_are_never_planned_above_the_models_own_processing() -> None:
    spec = {
        "model": {"id": "microsoft/Phi-3.5-vision-instruct", "trustRemoteCode": True},
        "workload": {"images": {"perRequest": 1, "maxWidth": 1344, "maxHeight": 1344}},
    }
    result = plan(manifest(spec), default_inventory())
    assert result.tokens_per_image == result.native_tokens_per_image
    assert result.mm_processor_kwargs.get("num_crops", 4) <= 4  # the processor's default
