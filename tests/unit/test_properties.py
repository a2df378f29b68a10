"""Properties that must hold for every model, GPU and flag combination."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mmop import modalities as mm
from mmop.catalog import gpu_names, resolve_gpu
from mmop.estimator import EngineArgs, estimate
from mmop.model import catalog_ids, load_profile

MODELS = catalog_ids()
QWEN_LIKE = [m for m in MODELS if load_profile(m).family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")]

models = st.sampled_from(MODELS)
gpus = st.sampled_from(gpu_names())
utils = st.floats(min_value=0.3, max_value=0.98)


@given(models, gpus, utils, st.floats(min_value=0.0, max_value=0.2))
def test_more_utilization_never_gives_fewer_kv_tokens(
    model: str, gpu: str, util: float, extra: float
) -> None:
    profile, spec = load_profile(model), resolve_gpu(gpu)
    length = min(4096, profile.max_position_embeddings)
    lo = estimate(profile, spec, EngineArgs(gpu_memory_utilization=util, max_model_len=length))
    hi = estimate(
        profile,
        spec,
        EngineArgs(gpu_memory_utilization=min(1.0, util + extra), max_model_len=length),
    )
    assert hi.kv_cache_tokens >= lo.kv_cache_tokens
    assert hi.kv_cache_gib >= lo.kv_cache_gib


@given(models, st.floats(min_value=8, max_value=400), st.floats(min_value=0, max_value=200))
def test_more_memory_never_gives_fewer_kv_tokens(model: str, gib: float, extra: float) -> None:
    profile = load_profile(model)
    # Same card family (same batch defaults) at two sizes.
    base = resolve_gpu("L40S")
    length = min(4096, profile.max_position_embeddings)
    args = EngineArgs(max_model_len=length, max_num_seqs=256, max_num_batched_tokens=2048)
    small = estimate(profile, base.with_memory(gib), args)
    large = estimate(profile, base.with_memory(gib + extra), args)
    assert large.kv_cache_tokens >= small.kv_cache_tokens
    assert large.max_model_len_fit >= small.max_model_len_fit


@given(
    st.sampled_from(QWEN_LIKE),
    st.integers(min_value=16, max_value=8000),
    st.integers(min_value=16, max_value=8000),
    st.integers(min_value=4 * 784, max_value=4000 * 784),
    st.integers(min_value=0, max_value=4000 * 784),
)
def test_larger_max_pixels_never_gives_fewer_image_tokens(
    model: str, w: int, h: int, max_pixels: int, extra: int
) -> None:
    if max(w, h) / min(w, h) > 200:
        return
    profile = load_profile(model)
    lo = mm.image_tokens(profile, w, h, {"max_pixels": max_pixels})
    hi = mm.image_tokens(profile, w, h, {"max_pixels": max_pixels + extra})
    assert hi >= lo > 0


@given(models, gpus, st.integers(min_value=1, max_value=8), st.sampled_from(["auto", "fp8"]))
def test_nothing_is_silently_negative(model: str, gpu: str, tp: int, kv: str) -> None:
    profile = load_profile(model)
    if profile.text.num_attention_heads % tp:
        return
    est = estimate(
        profile, resolve_gpu(gpu), EngineArgs(tensor_parallel_size=tp, kv_cache_dtype=kv)
    )
    for value in (
        est.weights_gib,
        est.non_torch_gib,
        est.activation_gib,
        est.cudagraph_gib,
        est.kv_cache_tokens,
        est.kv_cache_blocks,
        est.max_concurrency,
        est.max_model_len_fit,
    ):
        assert value >= 0
    if est.kv_cache_gib <= 0:
        assert not est.fits and est.kv_cache_tokens == 0
    if est.fits:
        assert est.kv_cache_tokens > 0 and est.max_model_len_fit >= est.max_model_len
