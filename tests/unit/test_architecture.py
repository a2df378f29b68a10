"""The package draws as docs/architecture.md says: the pure core imports no shell, nothing
imports the kopf registrations, no import cycle in the controller, no operator state in module
globals, no environment read at import, and the controller's functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "mmop"
CORE = (
    "api", "capabilities", "catalog", "model", "modalities", "estimator", "perf", "inventory",
    "inventory_cache", "planner", "render", "children", "status", "autoscaler", "policy", "vllm",
    "calibration",
)  # fmt: skip
SHELL = ("controller", "metrics", "hub")
MAX_CONTROLLER_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        name = ".".join(["mmop", *parts])
        out[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return out


def imports(tree: ast.Module) -> set[str]:
    """Every mmop module a module imports, at any level (top or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmop"):
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mmop"))
    return found


ALL = modules()


def test_the_core_imports_neither_controller_nor_metrics() -> None:
    for name in CORE:
        tree = ALL.get(f"mmop.{name}")
        assert tree is not None, f"mmop.{name} is listed as core but does not exist"
        bad = {m for m in imports(tree) if m.count(".") and m.split(".")[1] in SHELL}
        assert not bad, f"mmop.{name} imports {sorted(bad)}"


def test_no_core_module_does_network_io() -> None:
    """The Hub client and HTTP stay in the shell (hub.py, metrics/, controller/)."""
    for name in CORE:
        tree = ALL[f"mmop.{name}"]
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                used.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                used.update(a.name.split(".")[0] for a in node.names)
        assert not used & {"huggingface_hub", "aiohttp", "httpx", "requests", "urllib3"}, name


def test_metrics_never_imports_the_controller() -> None:
    for name, tree in ALL.items():
        if name.startswith("mmop.metrics"):
            assert not {m for m in imports(tree) if m.startswith("mmop.controller")}, name


def test_nothing_imports_the_kopf_registrations() -> None:
    for name, tree in ALL.items():
        assert "mmop.controller.handlers" not in imports(tree), name


def test_the_controller_has_no_import_cycle() -> None:
    graph = {
        name: {m for m in imports(tree) if m in ALL and m != name}
        for name, tree in ALL.items()
        if name.startswith("mmop.controller")
    }

    def reach(start: str, seen: set[str]) -> set[str]:
        for nxt in graph.get(start, ()):
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)
        return seen

    for name in graph:
        assert name not in reach(name, set()), f"{name} imports itself through others"


MUTABLE_CALLS = {"dict", "list", "set", "deque", "defaultdict", "OrderedDict", "Counter"}


def _mutable(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in MUTABLE_CALLS
    return False


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_module_level_mutable_state(name: str) -> None:
    """Module globals are constants: tables may be dicts only when never written (they are
    named in UPPER_CASE and the package never assigns into them)."""
    for node in ALL[name].body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and _mutable(value) and not target.id.startswith("__"):
                assert target.id.isupper(), f"{name}: module-level mutable {target.id}"


@pytest.mark.parametrize("name", sorted(ALL))
def test_no_environment_read_at_import(name: str) -> None:
    for node in ALL[name].body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and sub.attr in ("environ", "getenv"):
                raise AssertionError(f"{name} reads the environment at import")


def test_no_global_of_another_module_is_rewritten() -> None:
    """No ``module.NAME = …`` anywhere (the catalog and the default image are parameters)."""
    for name, tree in ALL.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id in {"catalog", "api", "handlers", "planner"}
                    ):
                        raise AssertionError(f"{name} rewrites {target.value.id}.{target.attr}")


def test_controller_functions_stay_small() -> None:
    for name, tree in ALL.items():
        if not name.startswith("mmop.controller"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_CONTROLLER_FUNCTION_LINES, (
                    f"{name}.{node.name}: {length} lines"
                )


def test_handlers_module_holds_registrations_and_their_helpers_only() -> None:
    tree = ALL["mmop.controller.handlers"]
    registered = 0
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            registered += bool(node.decorator_list)
    assert registered >= 10


def test_test_files_have_unique_names() -> None:
    """tests/ has no packages: pytest imports every test file by its bare name, so two files of
    one name in different folders make the whole run fail at collection."""
    names = [p.name for p in (PACKAGE.parents[1] / "tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
