"""The shipped model and GPU catalogs: complete, loadable, and consistent with published facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmop.catalog import (
    CatalogError,
    GpuCatalog,
    GpuError,
    default_catalog,
    load_catalog,
    load_gpus,
    resolve_gpu,
)
from mmop.model import CATALOG_MODELS_DIR, catalog_ids, catalog_source, load_profile

REQUIRED_MODELS = [
    "llava-hf/llava-1.5-7b-hf",
    "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava-hf/bakLlava-v1-hf",
    "Qwen/Qwen2-VL-2B-Instruct",
    "Qwen/Qwen2-VL-7B-Instruct",
    "Qwen/Qwen2-VL-72B-Instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct-AWQ",
    "Qwen/Qwen2.5-VL-32B-Instruct",
    "Qwen/Qwen2.5-VL-72B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct",
    "Qwen/Qwen3-VL-4B-Instruct-FP8",
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Instruct",
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
    "Qwen/Qwen3-VL-235B-A22B-Instruct",
    "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8",
    "OpenGVLab/InternVL2_5-8B",
    "OpenGVLab/InternVL2_5-26B",
    "OpenGVLab/InternVL2_5-78B",
    "OpenGVLab/InternVL3-8B",
    "OpenGVLab/InternVL3-78B",
    "google/gemma-3-4b-it",
    "google/gemma-3-12b-it",
    "google/gemma-3-27b-it",
    "mistralai/Pixtral-12B-2409",
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    "microsoft/Phi-3.5-vision-instruct",
    "openbmb/MiniCPM-V-2_6",
    "HuggingFaceTB/SmolVLM-Instruct",
    "Qwen/Qwen2-Audio-7B-Instruct",
    "Qwen/Qwen2.5-Omni-7B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic",
    "Qwen/Qwen2.5-0.5B-Instruct",
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct-AWQ",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3-235B-A22B-FP8",
    "mistralai/Mistral-7B-Instruct-v0.3",
]

# Whole-model KV bytes per token (bf16, TP=1): layers × 2 × kv_heads × head_dim × 2 B, from the
# published architectures (layers / KV heads / head_dim), independent of mmop's config parsing.
KV_BYTES_PER_TOKEN = {
    "llava-hf/llava-1.5-7b-hf": 32 * 2 * 32 * 128 * 2,
    "llava-hf/llava-v1.6-mistral-7b-hf": 32 * 2 * 8 * 128 * 2,
    "llava-hf/bakLlava-v1-hf": 32 * 2 * 8 * 128 * 2,
    "Qwen/Qwen2-VL-2B-Instruct": 28 * 2 * 2 * 128 * 2,
    "Qwen/Qwen2-VL-7B-Instruct": 28 * 2 * 4 * 128 * 2,
    "Qwen/Qwen2-VL-72B-Instruct": 80 * 2 * 8 * 128 * 2,
    "Qwen/Qwen2.5-VL-3B-Instruct": 36 * 2 * 2 * 128 * 2,
    "Qwen/Qwen2.5-VL-7B-Instruct": 57_344,  # checked against a vLLM log
    "Qwen/Qwen2.5-VL-7B-Instruct-AWQ": 57_344,
    "Qwen/Qwen2.5-VL-32B-Instruct": 64 * 2 * 8 * 128 * 2,
    "Qwen/Qwen2.5-VL-72B-Instruct": 80 * 2 * 8 * 128 * 2,
    "Qwen/Qwen3-VL-4B-Instruct": 147_456,  # checked against a vLLM log
    "Qwen/Qwen3-VL-4B-Instruct-FP8": 147_456,
    "Qwen/Qwen3-VL-8B-Instruct": 36 * 2 * 8 * 128 * 2,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 98_304,  # checked against a vLLM log
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8": 98_304,
    "Qwen/Qwen3-VL-235B-A22B-Instruct": 94 * 2 * 4 * 128 * 2,
    "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8": 94 * 2 * 4 * 128 * 2,
    "OpenGVLab/InternVL2_5-8B": 32 * 2 * 8 * 128 * 2,
    "OpenGVLab/InternVL2_5-26B": 48 * 2 * 8 * 128 * 2,
    "OpenGVLab/InternVL2_5-78B": 80 * 2 * 8 * 128 * 2,
    "OpenGVLab/InternVL3-8B": 28 * 2 * 4 * 128 * 2,
    "OpenGVLab/InternVL3-78B": 80 * 2 * 8 * 128 * 2,
    "google/gemma-3-4b-it": 34 * 2 * 4 * 256 * 2,
    "google/gemma-3-12b-it": 48 * 2 * 8 * 256 * 2,
    "google/gemma-3-27b-it": 62 * 2 * 16 * 128 * 2,
    "mistralai/Pixtral-12B-2409": 40 * 2 * 8 * 128 * 2,
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": 163_840,  # checked against a vLLM log
    "microsoft/Phi-3.5-vision-instruct": 32 * 2 * 32 * 96 * 2,
    "openbmb/MiniCPM-V-2_6": 28 * 2 * 4 * 128 * 2,
    "HuggingFaceTB/SmolVLM-Instruct": 24 * 2 * 32 * 64 * 2,
    "Qwen/Qwen2-Audio-7B-Instruct": 32 * 2 * 32 * 128 * 2,
    "Qwen/Qwen2.5-Omni-7B": 28 * 2 * 4 * 128 * 2,
    "meta-llama/Llama-3.1-8B-Instruct": 131_072,  # checked against a vLLM log
    "meta-llama/Llama-3.3-70B-Instruct": 80 * 2 * 8 * 128 * 2,
    "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": 80 * 2 * 8 * 128 * 2,
    "Qwen/Qwen2.5-0.5B-Instruct": 24 * 2 * 2 * 64 * 2,
    "Qwen/Qwen2.5-1.5B-Instruct": 28 * 2 * 2 * 128 * 2,
    "Qwen/Qwen2.5-7B-Instruct": 28 * 2 * 4 * 128 * 2,
    "Qwen/Qwen2.5-7B-Instruct-AWQ": 28 * 2 * 4 * 128 * 2,
    "Qwen/Qwen3-0.6B": 28 * 2 * 8 * 128 * 2,
    "Qwen/Qwen3-32B": 64 * 2 * 8 * 128 * 2,
    "Qwen/Qwen3-235B-A22B-FP8": 94 * 2 * 4 * 128 * 2,
    "mistralai/Mistral-7B-Instruct-v0.3": 32 * 2 * 8 * 128 * 2,
}

# Published totals that include modules vLLM does not load, with the reason and the tolerance.
PARAM_EXCEPTIONS = {
    # The published 10.7 B includes the token2wav speech generator (DiT + BigVGAN), which mmop
    # does not count: vLLM serves the thinker only. mmop counts thinker + talker.
    "Qwen/Qwen2.5-Omni-7B": 0.05,
}

REQUIRED_GPUS = [
    "T4", "L4", "A10", "A10G", "L40", "L40S", "A100-40GB", "A100-40GB-SXM", "A100-40GB-PCIe",
    "A100-80GB", "A100-80GB-SXM", "A100-80GB-PCIe", "H100-80GB", "H100-80GB-SXM",
    "H100-80GB-PCIe", "H100-NVL", "H200", "B200", "RTX-3090", "RTX-4090", "RTX-5090",
    "RTX-PRO-6000", "MI300X",
]  # fmt: skip


def test_every_required_model_is_in_the_catalog() -> None:
    missing = sorted(set(REQUIRED_MODELS) - set(catalog_ids()))
    assert missing == []


@pytest.mark.parametrize("model_id", catalog_ids())
def test_catalog_model_records_its_sources(model_id: str) -> None:
    source = catalog_source(model_id)
    assert source["id"] == model_id
    files = source["files"]
    assert files, "no file recorded"
    for name, meta in files.items():
        assert (CATALOG_MODELS_DIR / model_id / name).is_file(), name
        assert meta["source"].startswith("https://"), name
        assert meta["provenance"] in ("verbatim", "reconstructed"), name
        if name.endswith(".json"):
            json.loads((CATALOG_MODELS_DIR / model_id / name).read_text())


@pytest.mark.parametrize("model_id", catalog_ids())
def test_parameter_count_matches_published_total(model_id: str) -> None:
    published = catalog_source(model_id).get("published_params")
    assert isinstance(published, int) and published > 0
    counted = load_profile(model_id).params.total
    tolerance = PARAM_EXCEPTIONS.get(model_id, 0.02)
    assert abs(counted - published) / published <= tolerance, (counted, published)


@pytest.mark.parametrize("model_id", sorted(KV_BYTES_PER_TOKEN))
def test_kv_bytes_per_token(model_id: str) -> None:
    if model_id not in catalog_ids():
        pytest.fail(f"{model_id} is missing from the catalog")
    profile = load_profile(model_id)
    per_token = sum(
        2 * profile.text.num_kv_heads * profile.text.head_dim * 2 for _ in profile.text.layers
    )
    assert per_token == KV_BYTES_PER_TOKEN[model_id]


def test_vision_models_have_towers_and_text_models_do_not() -> None:
    for model_id in catalog_ids():
        profile = load_profile(model_id)
        is_text = profile.family == "text"
        assert (profile.vision is None and profile.audio is None) == is_text, model_id


def test_gemma3_layer_pattern_is_five_local_to_one_global() -> None:
    profile = load_profile("google/gemma-3-27b-it")
    kinds = [layer.kind.value for layer in profile.text.layers]
    assert kinds.count("full") == 10 and kinds.count("sliding") == 52
    assert kinds[5] == "full" and kinds[0] == "sliding"
    assert {layer.window_tokens for layer in profile.text.layers if layer.kind == "sliding"} == {
        1024
    }


def test_quantized_checkpoints_carry_their_method() -> None:
    expect = {
        "Qwen/Qwen2.5-VL-7B-Instruct-AWQ": ("awq", 4),
        "Qwen/Qwen2.5-7B-Instruct-AWQ": ("awq", 4),
        "Qwen/Qwen3-VL-4B-Instruct-FP8": ("fp8", 8),
        "Qwen/Qwen3-235B-A22B-FP8": ("fp8", 8),
        "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8": ("fp8", 8),
        "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": ("compressed-tensors", 8),
    }
    for model_id, (method, bits) in expect.items():
        quant = load_profile(model_id).quantization
        assert quant is not None and (quant.method, quant.weight_bits) == (method, bits)


def test_moe_model_counts_experts() -> None:
    text = load_profile("Qwen/Qwen3-VL-30B-A3B-Instruct").text
    assert text.moe is not None
    assert (text.moe.num_experts, text.moe.experts_per_token) == (128, 8)


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_required_gpu_names_resolve(name: str) -> None:
    gpu = resolve_gpu(name)
    assert gpu.memory_gib > 0 and gpu.memory_bandwidth_gbps > 0 and gpu.price_per_hour_usd > 0


def test_plain_names_resolve_to_the_common_variant() -> None:
    assert resolve_gpu("A100-40GB").name == "A100-40GB-SXM"
    assert resolve_gpu("H100-80GB").name == "H100-80GB-SXM"


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-80GB-SXM"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB-SXM"),
        ("NVIDIA-L4", "L4"),
        ("Tesla-T4", "T4"),
        ("nvidia-l40s", "L40S"),
    ],
)
def test_gfd_product_labels_resolve(label: str, name: str) -> None:
    assert resolve_gpu(label).name == name


def test_no_name_or_label_is_claimed_twice() -> None:
    seen: dict[str, str] = {}
    for gpu in load_gpus():
        for key in {k.lower() for k in (gpu.name, *gpu.aliases, *gpu.gfd_products)}:
            assert key not in seen, (key, seen.get(key), gpu.name)
            seen[key] = gpu.name


def test_unknown_gpu_names_the_problem() -> None:
    with pytest.raises(GpuError, match="unknown GPU 'H300'"):
        resolve_gpu("H300")


def test_bf16_and_fp8_support_follow_the_architecture() -> None:
    assert not resolve_gpu("T4").supports.bf16
    assert not resolve_gpu("A100-80GB").supports.fp8
    assert resolve_gpu("L4").supports.fp8 and resolve_gpu("H100").supports.fp8


# ------------------------------------------------------------------------------------------------
# The catalog as a value


def test_a_catalog_is_an_immutable_value() -> None:
    packaged = default_catalog()
    assert load_catalog() is packaged and packaged.gpus == load_gpus()
    assert packaged.names() == [gpu.name for gpu in packaged.gpus]
    copy = GpuCatalog(packaged.gpus, "a copy")
    assert copy == packaged and hash(copy) == hash(packaged) and copy is not packaged
    assert GpuCatalog(packaged.gpus[:3]) != packaged
    with pytest.raises(AttributeError):
        packaged.gpus = ()  # type: ignore[misc]
    assert packaged.resolve("nvidia-l4") is packaged.find("L4") is resolve_gpu("L4")
    assert packaged.find("H300") is None
    with pytest.raises(GpuError, match="unknown GPU 'H300'"):
        packaged.resolve("H300")


def test_a_later_entry_takes_a_name_an_earlier_one_claimed() -> None:
    l4 = resolve_gpu("L4")
    other = l4.model_copy(update={"name": "L4-bis", "price_per_hour_usd": 9.0})
    catalog = GpuCatalog((l4, other))
    assert catalog.resolve("NVIDIA-L4").name == "L4-bis" and catalog.resolve("L4").name == "L4"


def test_unreadable_or_invalid_catalog_files_name_the_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(CatalogError, match=r"missing\.yaml: cannot read"):
        load_catalog(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [{name: X1000, memory_gib: 96}]\n")
    with pytest.raises(
        CatalogError, match=r"bad.yaml: gpus\[0\] \('X1000'\): vendor: Field required"
    ):
        load_catalog(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("gpus: []\n")
    with pytest.raises(CatalogError, match="expected `gpus:`"):
        load_catalog(empty)


def test_a_catalog_file_is_read_once_per_path(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump({"gpus": [resolve_gpu("L4").model_dump()]}))
    first = load_catalog(path)
    assert first.names() == ["L4"] and load_catalog(path) is first


def test_the_readme_says_how_many_catalog_configs_are_verbatim_and_reconstructed() -> None:
    """The README's claim about the catalog matches the source.yaml files."""
    import re
    from pathlib import Path

    import yaml

    from mmop.model import CATALOG_MODELS_DIR

    counts = {"verbatim": 0, "reconstructed": 0}
    for source in CATALOG_MODELS_DIR.glob("*/*/source.yaml"):
        files = yaml.safe_load(source.read_text())["files"]
        config = files.get("config.json") or files.get("params.json")
        counts[config["provenance"]] += 1
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = " ".join(readme.split())
    total = sum(counts.values())
    assert f"ships the configs of {total} models" in text
    assert re.search(rf"{counts['verbatim']} `config.json` files are verbatim copies", text)
    assert f"and {counts['reconstructed']} are reconstructed" in text


def test_qwen3_vl_235b_counts_its_checkpoint_s_parameters_and_shares_the_30b_vision_tower() -> None:
    big_id, small_id = "Qwen/Qwen3-VL-235B-A22B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct"
    big = load_profile(big_id)
    # The safetensors total of the published checkpoint, exactly (source.yaml).
    assert big.params.total == catalog_source(big_id)["published_params"] == 235_670_022_896
    text = big.text
    assert text.moe is not None and (text.moe.num_experts, text.moe.experts_per_token) == (128, 8)
    assert (len(text.layers), text.hidden_size, text.num_kv_heads) == (94, 4096, 4)
    vision = {
        m: json.loads((CATALOG_MODELS_DIR / m / "config.json").read_text())["vision_config"]
        for m in (big_id, small_id)
    }
    assert vision[big_id].pop("out_hidden_size") == 4096
    assert vision[small_id].pop("out_hidden_size") == 2048
    assert vision[big_id] == vision[small_id]


def test_qwen3_vl_235b_fp8_is_the_bf16_checkpoint_in_128x128_fp8_blocks() -> None:
    bf16_id, fp8_id = "Qwen/Qwen3-VL-235B-A22B-Instruct", "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8"
    bf16, fp8 = load_profile(bf16_id), load_profile(fp8_id)
    assert fp8.params == bf16.params
    assert fp8.params.total == catalog_source(fp8_id)["published_params"] == 235_670_022_896
    quant = fp8.quantization
    assert quant is not None and (quant.method, quant.weight_bits) == ("fp8", 8)
    assert quant.group_size == 128 * 128  # one scale per 128×128 weight block
    assert {"lm_head", "model.visual"} <= set(quant.unquantized_modules)
    configs = {
        m: json.loads((CATALOG_MODELS_DIR / m / "config.json").read_text())
        for m in (bf16_id, fp8_id)
    }
    assert configs[fp8_id].pop("quantization_config")["weight_block_size"] == [128, 128]
    assert configs[fp8_id] == configs[bf16_id]
    assert fp8.text.moe is not None and fp8.text.moe.num_experts == 128


def test_internvl3_78b_pairs_internvit_6b_with_qwen2_5_72b() -> None:
    model_id = "OpenGVLab/InternVL3-78B"
    profile = load_profile(model_id)
    assert profile.family == "internvl" and not profile.approximate
    assert profile.params.total == catalog_source(model_id)["published_params"] == 78_408_318_336
    text = profile.text
    assert (len(text.layers), text.hidden_size, text.num_kv_heads, text.vocab_size) == (
        80,
        8192,
        8,
        151674,
    )
    vision = profile.vision
    assert vision is not None
    assert (vision.num_layers, vision.hidden_size, vision.image_size) == (45, 3200, 448)
    # The same components as InternVL2.5-78B: the same weights to the parameter.
    assert profile.params == load_profile("OpenGVLab/InternVL2_5-78B").params
