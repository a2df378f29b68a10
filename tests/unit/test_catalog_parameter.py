"""The GPU catalog is a value handed to whoever plans, never a rewritten global: two catalogs
plan side by side in one process, each inventory resolves GPU names in its own, and
`mmop run --gpu-catalog/--prices` merges into a file the operator loads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmop import catalog
from mmop.api import MultimodalModel
from mmop.catalog import GpuCatalog, GpuError, default_catalog, load_catalog, resolve_gpu
from mmop.cli import catalog_file, load_catalog_overrides
from mmop.inventory import (
    Inventory,
    NodeGpus,
    UnrecognisedNode,
    default_inventory,
    inventory_from_objects,
    load_inventory,
    node_record,
)
from mmop.inventory_cache import InventoryCache
from mmop.planner import AssessmentCache, plan

Obj = dict[str, Any]
NEW_PRODUCT = "Vendor-X1000"


def packaged_document() -> dict[str, Any]:
    return dict(yaml.safe_load(catalog.GPUS_FILE.read_text(encoding="utf-8")))


def overridden(tmp_path: Path) -> GpuCatalog:
    """The packaged catalog with L4 at $50/h and a new GPU, X1000 (an L40S at $0.05/h known by
    the GFD product Vendor-X1000), merged as `mmop run --gpu-catalog --prices` merges them."""
    l40s = next(g for g in packaged_document()["gpus"] if g["name"] == "L40S")
    x1000 = {**l40s, "name": "X1000", "aliases": [], "gfd_products": [NEW_PRODUCT]}
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(yaml.safe_dump({"gpus": [x1000]}))
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump({"L4": 50.0, "X1000": 0.05}))
    path = catalog_file(str(gpus), str(prices))
    assert path is not None
    return load_catalog(path)


def node(name: str, product: str, gpus: int = 4) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


NODES = [node("l4-0", "NVIDIA-L4"), node("l4-1", "NVIDIA-L4"), node("x-0", NEW_PRODUCT)]


def manifest(spec: Obj) -> MultimodalModel:
    return MultimodalModel.model_validate(
        {
            "apiVersion": "mmop.dev/v1alpha1",
            "kind": "MultimodalModel",
            "metadata": {"name": "m"},
            "spec": spec,
        }
    )


MODEL_SPEC: Obj = {"model": {"id": "Qwen/Qwen2.5-VL-3B-Instruct"}}
MODEL = manifest(MODEL_SPEC)


def test_two_catalogs_plan_side_by_side_in_one_process(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    packaged_inv = inventory_from_objects(NODES, [])
    custom_inv = inventory_from_objects(NODES, [], custom)
    assert packaged_inv.catalog == default_catalog() and custom_inv.catalog is custom
    shared = AssessmentCache()

    def both(_: int) -> tuple[Any, Any]:
        return plan(MODEL, packaged_inv, cache=shared), plan(MODEL, custom_inv, cache=shared)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(both, range(8)))
    for packaged_plan, custom_plan in results:
        assert packaged_plan.gpu == "L4" and packaged_plan.gpu_product == "NVIDIA-L4"
        assert custom_plan.gpu == "X1000" and custom_plan.gpu_product == NEW_PRODUCT
        assert custom_plan.cost_per_hour_usd == pytest.approx(0.05 * custom_plan.replicas)
        # L4 lost on the overridden price: 2 GPUs at $50/h
        assert any(
            a.gpu == "L4" and a.tensor_parallel_size == 2 and "$100.00/h" in a.reason
            for a in custom_plan.alternatives
        )
        assert packaged_plan.model_dump() == results[0][0].model_dump()
        assert custom_plan.model_dump() == results[0][1].model_dump()
    # the process's own (packaged) catalog is untouched
    assert resolve_gpu("L4").price_per_hour_usd == packaged_inv.price("L4") != 50.0
    with pytest.raises(GpuError):
        resolve_gpu("X1000")


def test_a_product_only_the_overridden_catalog_knows(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    assert isinstance(node_record(NODES[2]), UnrecognisedNode)
    record = node_record(NODES[2], custom)
    assert isinstance(record, NodeGpus) and record.gpu == "X1000"
    assert inventory_from_objects(NODES, []).unknown_products == (NEW_PRODUCT,)
    custom_inv = inventory_from_objects(NODES, [], custom)
    assert custom_inv.unknown == () and custom_inv.gpu_types() == ("L4", "X1000")
    pool = custom_inv.pool(NEW_PRODUCT)
    assert pool is not None and pool.gpu_spec().name == "X1000"
    assert custom_inv.price("L4") == 50.0 and custom_inv.price("X1000") == 0.05
    # a GPU type the inventory's catalog does not know is refused, as resolve_gpu refuses it
    with pytest.raises(GpuError, match="X1000"):
        inventory_from_objects(NODES, []).price("X1000")


def test_gpu_types_are_resolved_in_the_inventorys_catalog(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    spec = manifest({**MODEL_SPEC, "placement": {"gpuTypes": ["X1000"]}})
    assert plan(spec, inventory_from_objects(NODES, [], custom)).gpu == "X1000"
    with pytest.raises(GpuError, match="X1000"):
        plan(spec, inventory_from_objects(NODES, []))


def test_inventory_files_and_the_shipped_inventory_take_a_catalog(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    path = tmp_path / "inventory.yaml"
    pools = [{"name": "x", "gpu": "X1000", "nodes": 2, "gpusPerNode": 4}]
    path.write_text(yaml.safe_dump({"pools": pools}))
    inv = load_inventory(path, custom)
    assert inv.catalog is custom and inv.gpu_types() == ("X1000",)
    assert inv.pools[0].product_label == NEW_PRODUCT and inv.price("X1000") == 0.05
    with pytest.raises(ValueError, match="X1000"):
        load_inventory(path)
    assert default_inventory(custom).price("L4") == 50.0
    assert default_inventory().price("L4") == resolve_gpu("L4").price_per_hour_usd


def test_the_inventory_cache_assembles_with_its_catalog(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    cache = InventoryCache(catalog=custom)
    nodes = {n["metadata"]["name"]: [node_record(n, custom)] for n in NODES}
    inv = cache.inventory(nodes, {}, ("ns", "m"))
    assert inv.catalog is custom and inv.gpu_types() == ("L4", "X1000")
    assert inv == inventory_from_objects(NODES, [], custom)
    assert InventoryCache().catalog == default_catalog()


def test_the_catalog_is_part_of_the_inventory_but_not_of_its_dump(tmp_path: Path) -> None:
    custom = overridden(tmp_path)
    custom_inv = inventory_from_objects(NODES[:2], [], custom)
    packaged_inv = inventory_from_objects(NODES[:2], [])
    assert "catalog" not in custom_inv.model_dump() and "catalog" not in repr(custom_inv)
    assert custom_inv != packaged_inv  # same nodes, other catalog (and prices)
    assert custom_inv.matching({"nvidia.com/gpu.product": "NVIDIA-L4"}).catalog is custom
    # pools built with one catalog cannot be put in an inventory of another
    with pytest.raises(ValueError, match="another GPU catalog"):
        Inventory(pools=custom_inv.pools, catalog=default_catalog())
    assert Inventory(pools=custom_inv.pools).catalog is custom


def test_one_gpu_name_described_twice_is_assessed_twice(tmp_path: Path) -> None:
    """The planner's assessment cache keys on the whole GPU spec: a catalog that gives L4 a
    different bandwidth gets its own figures, not the other catalog's."""
    doc = packaged_document()
    for entry in doc["gpus"]:
        if entry["name"] == "L4":
            entry["memory_bandwidth_gbps"] = entry["memory_bandwidth_gbps"] / 4
    slow = GpuCatalog.from_document(doc, "slow L4")
    nodes = NODES[:2]
    shared = AssessmentCache()
    plan(MODEL, inventory_from_objects(nodes, []), cache=shared)
    reused = plan(MODEL, inventory_from_objects(nodes, [], slow), cache=shared)
    fresh = plan(MODEL, inventory_from_objects(nodes, [], slow))
    assert reused.model_dump() == fresh.model_dump()


def test_catalog_overrides_merge_by_name_alias_and_product_and_prices_win(
    tmp_path: Path,
) -> None:
    gpus = tmp_path / "gpus.yaml"
    gpus.write_text(
        yaml.safe_dump(
            {
                "gpus": [
                    {"name": "NVIDIA-L4", "memory_gib": 21.5, "price_per_hour_usd": 9.0},
                    {"name": "H100-80GB", "price_per_hour_usd": 7.0},  # an alias
                    {"name": "L40S", "memory_bandwidth_gbps": 900.0},  # a catalog name
                ]
            }
        )
    )
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump({"l4": 0.5}))
    merged = load_catalog_overrides(str(gpus), str(prices), packaged_document())
    assert len(merged["gpus"]) == len(packaged_document()["gpus"])  # nothing added or lost
    from_merge = GpuCatalog.from_document(merged)
    path = catalog_file(str(gpus), str(prices))
    assert path is not None and load_catalog(path) == from_merge
    l4 = from_merge.resolve("L4")
    assert l4.memory_gib == 21.5 and l4.price_per_hour_usd == 0.5  # the price table wins
    assert "operator price table" in l4.price_source
    assert from_merge.resolve("H100-80GB-SXM").price_per_hour_usd == 7.0
    assert from_merge.resolve("NVIDIA-L40S").memory_bandwidth_gbps == 900.0
    # the packaged catalog, and so resolve_gpu, stays as shipped
    assert resolve_gpu("L4").memory_gib != 21.5 and resolve_gpu("L4").price_per_hour_usd != 0.5


def test_no_override_means_the_packaged_catalog() -> None:
    assert catalog_file(None, None) is None
    assert load_catalog(None) is default_catalog()
    assert load_catalog(None).names() == catalog.gpu_names()
