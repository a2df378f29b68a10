"""Drill (a): generated MultimodalModel specs, each judged by the API server and by pydantic.

Every spec is sent to the API server as a server-side dry-run create (`dryRun=All`, strict field
validation: the CRD's OpenAPI schema, its CEL rules, defaulting and pruning, exactly what
`kubectl apply` meets) and validated by `MultimodalModel.model_validate` (what the operator and
`mmop plan` read). The drill holds two things on every spec:

- the same verdict: both accept it or both refuse it;
- every refusal, by either, names a field the generator changed.

The specs are generated with hypothesis from a seed (the same seed gives the same specs): a valid
base (one of examples/ or a minimal spec) changed at one to three places, each new value drawn
near a boundary, valid or not: label keys and values of every length and syntax, Secret names
and keys, model ids (catalog ids, Hugging Face repo ids, paths, non-canonical ids), enums and
their near misses, numbers at and beyond their bounds (integral floats, strings, booleans),
free text with characters outside the Basic Multilingual Plane at and beyond its maximum
length, allowed and refused vLLM flags, nulls, unknown fields, and whole objects of the wrong
type. A refusal found by only one side is a bug in the schema or in pydantic.

Run against a fresh sandbox (started and stopped here) or an existing cluster with the CRD of
crds/ installed:

    python -m bench.reliability.specs --count 10000 --report docs/reliability.md
    python -m bench.reliability.specs --count 600 --kubeconfig ~/.kube/config --namespace default
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from e2e import markdown
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mmop.api import MultimodalModel
from mmop.crd import CRD_NAME, build_crd
from mmop.model import catalog_ids

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "mmop.dev", "v1alpha1", "multimodalmodels"
SECTION = "## Spec verdicts (drill a)"
DEFAULT_SEED = 20260315
NAME = "drill"

Spec = dict[str, Any]
Path_ = tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class Case:
    """One generated spec and the places the generator changed (wire names, from spec)."""

    spec: Spec
    touched: tuple[Path_, ...]


# Characters JSON can carry: everything but lone surrogates (Python allows them in a str; no
# JSON encoder can send one to the API server as itself).
_CHARS = st.characters(codec="utf-8")
_NON_BMP = st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF, codec="utf-8")
_BAD_TEXT = st.sampled_from(
    ["", " ", "\U0001f600", "a b", "\u00e9", "\x00", "\n", "A", "-", ".", "/", "_"]
)


def _sized_text(sizes: list[int], alphabet: st.SearchStrategy[str] = _CHARS) -> Any:
    return st.sampled_from(sizes).flatmap(
        lambda n: st.text(alphabet, min_size=n, max_size=n) if n >= 0 else st.just("")
    )


def _free_text(max_length: int) -> st.SearchStrategy[str]:
    """Text of any characters, non-BMP included, often at and just past its maximum length."""
    return st.one_of(
        st.text(_CHARS, max_size=12),
        st.text(_NON_BMP, min_size=1, max_size=4),
        _sized_text([max_length - 1, max_length, max_length + 1]),
        _sized_text([max_length, max_length + 1], _NON_BMP),
    )


_DNS_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?", fullmatch=True)
_PREFIX_253 = ".".join(["p" * 63] * 3 + ["p" * 61])
_PREFIX_254 = ".".join(["p" * 63] * 3 + ["p" * 62])
_DNS_SUBDOMAIN = st.one_of(
    st.lists(_DNS_LABEL, min_size=1, max_size=3).map(".".join),
    st.sampled_from([_PREFIX_253, _PREFIX_254, "p" * 64, "a.-b", "a..b", "-a", "a-", "A", "a_b"]),
)
_LABEL_NAME = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?", fullmatch=True),
    st.sampled_from(["n" * 63, "n" * 64, "-n", "n-", "n.", "_n", "n n", "n\u00f6", "n/"]),
)
LABEL_KEYS = st.one_of(
    _LABEL_NAME,
    st.builds(lambda p, n: f"{p}/{n}", _DNS_SUBDOMAIN, _LABEL_NAME),
    st.sampled_from(["", "/", "a/", "/a", "a/b/c", "Example.com/a", "\U0001f600"]),
    st.text(_CHARS, max_size=6),
)
LABEL_VALUES = st.one_of(
    st.just(""),
    _LABEL_NAME,
    st.sampled_from(["v" * 63, "v" * 64, "-v", "v v"]),
    st.none(),
    st.text(_CHARS, max_size=4),
    st.integers(-2, 2),
)
SECRET_NAMES = st.one_of(_DNS_SUBDOMAIN, _BAD_TEXT, st.sampled_from(["a" * 253, "a" * 254]))
SECRET_KEYS = st.one_of(
    st.from_regex(r"[-._a-zA-Z0-9]{1,8}", fullmatch=True),
    st.sampled_from([".", "..", "..k", ".k", "k..", "k" * 253, "k" * 254, "k k", "k\u00f6"]),
    _BAD_TEXT,
)
_HF_PART = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True),
    st.sampled_from(["x" * 96, "x" * 97, "a--b", "a..b", "m.git", ".", "..", "~"]),
)
_ODD_IDS = [
    "/models/x", "./x", "~/x", "../x", "Qwen/../Qwen/Qwen2-VL-7B-Instruct", "a//b", "a/b/",
    "a/b/c", "org/m\u00f6del", "org/m del", "o" * 96 + "/" + "x" * 96, "",
]  # fmt: skip
MODEL_IDS = st.one_of(
    st.sampled_from(catalog_ids()),
    st.builds(lambda a, b: f"{a}/{b}", _HF_PART, _HF_PART),
    _HF_PART,
    st.sampled_from(_ODD_IDS),
    st.text(_CHARS, max_size=10),
)
_FLAGS = [
    "--enable-prefix-caching", "--seed", "--chat-template", "--served-model-name",
    "--max-model-len", "--tensor-parallel-size", "--api-key", "--trust-remote-code", "-tp",
    "--gpu-memory-utilization", "--api_key", "--seed=", "---seed",
]  # fmt: skip
EXTRA_ARGS = st.one_of(
    st.sampled_from(_FLAGS),
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(_FLAGS), st.text(_CHARS, max_size=6)),
    _free_text(256),
)
ENV_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
    st.sampled_from(["LD_PRELOAD", "1A", "A-B", "A.B", "", "N" * 128, "N" * 129, "\u00c4"]),
)


def _env_item() -> st.SearchStrategy[Any]:
    value = st.one_of(_free_text(192), st.none(), st.integers(0, 2))
    return st.one_of(
        st.fixed_dictionaries({"name": ENV_NAMES}, optional={"value": value}),
        st.just({"value": "x"}),
        st.just({"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        st.none(),
    )


def _variant() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"id": MODEL_IDS},
        optional={"quantization": st.sampled_from(["fp8", "awq", "FP8", "int4", ""])},
    )


def _secret_ref() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries({"name": SECRET_NAMES}, optional={"key": SECRET_KEYS}),
        st.just({}),
        st.just({"name": "s", "optional": True}),
        st.none(),
    )


def _lists(item: st.SearchStrategy[Any], max_items: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(item, max_size=3),
        st.sampled_from([max_items, max_items + 1]).flatmap(
            lambda n: st.lists(item, min_size=n, max_size=n)
        ),
    )


def _selector() -> st.SearchStrategy[Any]:
    valid = st.from_regex(r"[a-z]([a-z0-9]{0,4})", fullmatch=True)
    return st.one_of(
        st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=3),
        st.sampled_from([16, 17]).flatmap(
            lambda n: st.dictionaries(valid, valid, min_size=n, max_size=n)
        ),
    )


# Fields whose values come from a pool of their own (wire paths under spec).
SPECIAL: dict[Path_, Callable[[], st.SearchStrategy[Any]]] = {
    ("model", "id"): lambda: MODEL_IDS,
    ("model", "revision"): lambda: st.one_of(_free_text(100), st.none()),
    ("model", "variants"): lambda: _lists(_variant(), 8),
    ("model", "tokenSecretRef"): _secret_ref,
    ("placement", "gpuTypes"): lambda: _lists(st.one_of(_free_text(64), st.none()), 16),
    ("placement", "nodeSelector"): _selector,
    ("placement", "quantizations"): lambda: _lists(
        st.sampled_from(["none", "fp8", "awq", "gptq", "compressed-tensors", "FP8", "int3", ""]),
        5,
    ),
    ("placement", "kvCacheDtypes"): lambda: _lists(
        st.sampled_from(["auto", "fp8", "Auto", "fp16"]), 2
    ),
    ("engine", "image"): lambda: st.one_of(
        _free_text(300), st.sampled_from(["", "vllm/vllm-openai:v0.32.0"])
    ),
    ("engine", "extraArgs"): lambda: _lists(EXTRA_ARGS, 24),
    ("engine", "env"): lambda: _lists(_env_item(), 16),
    ("engine", "apiKeySecretRef"): _secret_ref,
}


@functools.cache
def _spec_schema() -> dict[str, Any]:
    crd = build_crd()
    (version,) = crd["spec"]["versions"]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def _fields(node: dict[str, Any], path: Path_ = ()) -> Iterator[tuple[Path_, dict[str, Any]]]:
    for name, sub in node.get("properties", {}).items():
        yield (*path, name), sub
        if (*path, name) not in SPECIAL and "properties" in sub:
            yield from _fields(sub, (*path, name))


@functools.cache
def _field_list() -> list[tuple[Path_, dict[str, Any]]]:
    return list(_fields(_spec_schema()))


def _number(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    integer = node["type"] == "integer"
    lo, hi = node.get("minimum", -(2**31)), node.get("maximum", 2**31)
    inside: st.SearchStrategy[Any]
    edges: list[Any] = [lo, hi, 0, -1, 2**53, 2**63, float(lo), float(hi), True, "1", None]
    if integer:
        edges += [lo - 1, hi + 1, lo + 0.5, 2.0**60]
        inside = st.integers(int(lo) - 2, int(hi) + 2)
    else:
        edges += [lo - 1e-9, hi + 1e-9, lo + 1e-12, int(hi), int(hi) + 1, 5e-324]
        inside = st.floats(lo - 1, hi + 1, allow_nan=False, allow_infinity=False)
    return st.one_of(inside, st.sampled_from(edges))


def _value(path: Path_, node: dict[str, Any]) -> st.SearchStrategy[Any]:
    if path in SPECIAL:
        return SPECIAL[path]()
    kind = node["type"]
    if "enum" in node:
        values = list(node["enum"])
        near = [v.upper() for v in values] + [v.capitalize() for v in values] + ["", "x"]
        return st.sampled_from(values + near + [None, 1])
    if kind in ("integer", "number"):
        return _number(node)
    if kind == "boolean":
        return st.sampled_from([True, False, 1, 0, "true", None])
    if kind == "string":
        return st.one_of(_free_text(node.get("maxLength", 64)), st.none())
    if kind == "array":
        return st.lists(st.text(_CHARS, max_size=4), max_size=3)
    # an object: null, empty, an unknown field, the wrong type
    return st.sampled_from([None, {}, {"unknownField": 1}, "text", [], 0])


@functools.cache
def _examples() -> tuple[str, ...]:
    """The base specs, as JSON (each case parses its own copy)."""
    return tuple(json.dumps(s) for s in _example_specs())


def _example_specs() -> list[Spec]:
    out = [{"model": {"id": "Qwen/Qwen2.5-VL-7B-Instruct"}}]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        out.append(yaml.safe_load(path.read_text(encoding="utf-8"))["spec"])
    return out


def _set(spec: Spec, path: Path_, value: Any) -> bool:
    node: Any = spec
    for name in path[:-1]:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            return False
        node = child
    node[path[-1]] = value
    return True


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A valid base spec changed at up to three places (sometimes siblings, for the rules that
    tie fields together; sometimes an unknown field)."""
    schema = _spec_schema()
    fields = _field_list()
    base = json.loads(draw(st.sampled_from(_examples())))
    touched: list[Path_] = []
    how = draw(st.sampled_from(["one", "one", "two", "three", "siblings", "unknown", "none"]))
    if how == "none":
        return Case(base, ())
    if how == "unknown":
        parent = draw(st.sampled_from([(), *[p for p, n in fields if "properties" in n]]))
        path = (*parent, draw(st.sampled_from(["bogus", "replica", "modelId"])))
        _set(base, path, draw(st.sampled_from([1, None, "x", {}])))
        return Case(base, (path,))
    if how == "siblings":
        parents = [
            p for p, n in fields
            if len(n.get("properties") or ()) >= 2 and p not in SPECIAL
        ]  # fmt: skip
        parent = draw(st.sampled_from(parents))
        names = sorted(schema_at(schema, parent)["properties"])
        chosen = draw(st.lists(st.sampled_from(names), min_size=2, max_size=2, unique=True))
        picks = [(*parent, name) for name in chosen]
    else:
        k = {"one": 1, "two": 2, "three": 3}[how]
        picks = draw(st.lists(st.sampled_from([p for p, _ in fields]), min_size=k, max_size=k))
    for path in picks:
        node = schema_at(schema, path)
        if _set(base, path, draw(_value(path, node))):
            touched.append(path)
    return Case(base, tuple(touched))


def schema_at(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    node = schema
    for name in path:
        node = node["properties"][name]
    return node


def generate(count: int, seed_value: int) -> list[Case]:
    """`count` cases, the same for the same seed."""
    out: list[Case] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(cases())
    def collect(case: Case) -> None:
        out.append(case)

    collect()
    return out[:count]


# --------------------------------------------------------------------------------------------
# Judging


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    message: str = ""


@dataclass(frozen=True)
class Outcome:
    case: Case
    server: Verdict
    pydantic: Verdict

    @property
    def agree(self) -> bool:
        return self.server.accepted == self.pydantic.accepted

    def names_a_touched_field(self, verdict: Verdict) -> bool:
        words = {w for path in self.case.touched for w in path[-2:]}
        return any(w in verdict.message for w in words)


def manifest(spec: Spec) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MultimodalModel",
        "metadata": {"name": NAME},
        "spec": spec,
    }


def judge_pydantic(spec: Spec) -> Verdict:
    try:
        MultimodalModel.model_validate(manifest(spec))
    except ValidationError as err:
        return Verdict(False, str(err))
    return Verdict(True)


class ServerJudge:
    """Server-side dry-run creates, several at a time (one connection pool, thread-safe)."""

    def __init__(self, kubeconfig: str, namespace: str, threads: int = 8) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
        api_client.configuration.connection_pool_maxsize = threads
        self._objects = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.threads = threads
        self._lock = threading.Lock()
        self.retries = 0

    def judge(self, spec: Spec) -> Verdict:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(5):
            try:
                self._objects.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, manifest(spec),
                    dry_run="All", field_validation="Strict", _request_timeout=30,
                )  # fmt: skip
                return Verdict(True)
            except ApiException as err:
                if err.status in (400, 422):
                    body = json.loads(err.body or "{}")
                    return Verdict(False, str(body.get("message") or err.body))
                if attempt == 4 or err.status not in (429, 500, 503, 504):
                    raise
            with self._lock:
                self.retries += 1
            time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def judge_all(self, specs: list[Spec]) -> list[Verdict]:
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(self.judge, specs))


FINDINGS = [
    "- `null` in a field that is not nullable (`workload: null`, `engine.image: null`, a null "
    "label\n  value): the API server prunes it and applies the default; pydantic refused it. "
    "pydantic now\n  drops it too.",
    '- A string for a number (`"2"`) or a number for a boolean (`1`): pydantic\'s lax mode '
    "took\n  them, the API server refuses them. The spec models are strict now.",
    "- An integral float (`2.0`) for an integer: the schema takes it, but a CEL rule that reads "
    'the\n  field fails on it ("expected int, got float64"), and so does the scale '
    "subresource on\n  `replicas`. pydantic takes integral floats except in exactly those "
    "fields.",
    "- `replicas: null`: declared nullable, but the scale subresource cannot read a null. The "
    "CRD\n  no longer declares it nullable (the API server prunes the null), and pydantic drops "
    "it.",
    "- `margin: 0` (an integer under `minimum: 0.5`): the API server compares an integer with "
    "the\n  bound truncated to an integer, so it passed. A CEL rule repeats every fractional "
    "bound.",
]


@dataclass
class Report:
    seed: int
    count: int
    outcomes: list[Outcome] = field(default_factory=list)
    generate_seconds: float = 0.0
    judge_seconds: float = 0.0
    command: str = ""
    server: str = ""
    threads: int = 8

    @property
    def disagreements(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.agree]

    @property
    def unnamed(self) -> list[tuple[str, Outcome]]:
        out = []
        for o in self.outcomes:
            for side, verdict in (("API server", o.server), ("pydantic", o.pydantic)):
                if not verdict.accepted and not o.names_a_touched_field(verdict):
                    out.append((side, o))
        return out

    @property
    def accepted(self) -> int:
        return sum(1 for o in self.outcomes if o.agree and o.server.accepted)

    @property
    def refused(self) -> int:
        return sum(1 for o in self.outcomes if o.agree and not o.server.accepted)

    def problems(self, limit: int = 5) -> str:
        lines = []
        for o in self.disagreements[:limit]:
            lines.append(
                f"DISAGREE spec={json.dumps(o.case.spec)[:600]} touched={o.case.touched} "
                f"server={o.server} pydantic={o.pydantic.message[:600]!r}"
            )
        for side, o in self.unnamed[:limit]:
            verdict = o.server if side == "API server" else o.pydantic
            lines.append(
                f"UNNAMED ({side}) touched={o.case.touched} message={verdict.message[:600]!r}"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        total = self.generate_seconds + self.judge_seconds
        agreements = len(self.outcomes) - len(self.disagreements)

        def para(text: str) -> str:
            return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)

        return "\n".join(
            [
                SECTION,
                "",
                para(
                    "Generated MultimodalModel specs, each judged by the API server (server-side "
                    "dry-run create with strict field validation: the CRD's schema, CEL rules, "
                    "pruning and defaults) and by `MultimodalModel.model_validate` (what the "
                    "operator and `mmop plan` read). Each spec is a valid base (a file of "
                    "`examples/` or a minimal spec) changed at one to three places with values "
                    "near a boundary, valid or not (`bench/reliability/specs.py` lists them). "
                    "Both must give the same verdict, and every refusal must name a field the "
                    "generator changed."
                ),
                "",
                "| figure | value |",
                "|---|---|",
                f"| specs | {len(self.outcomes)} (seed {self.seed}) |",
                f"| same verdict | {agreements} of {len(self.outcomes)} |",
                f"| accepted by both / refused by both | {self.accepted} / {self.refused} |",
                f"| refusals that name no changed field | {len(self.unnamed)} |",
                f"| time | {total:.1f} s ({self.generate_seconds:.1f} s generating, "
                f"{self.judge_seconds:.1f} s judging, {self.threads} requests at a time) |",
                f"| API server | {self.server} |",
                "",
                "Command:",
                "",
                "```bash",
                self.command,
                "```",
                "",
                para(
                    "The bounded form runs in CI: `tests/integration/test_spec_verdicts.py` (600 "
                    "specs, a fixed seed, under 2 minutes). On the code before it, 70 of those "
                    "600 specs got different verdicts."
                ),
                "",
                para(
                    "Where the two disagreed on the code before it, each fixed in `api.py` or "
                    "`crd.py` and kept as a case of `tests/integration/test_crd_apiserver.py`:"
                ),
                "",
                *FINDINGS,
                "",
            ]
        )


def run(kubeconfig: str, namespace: str, count: int, seed_value: int, threads: int = 8) -> Report:
    """Generate `count` specs and judge each both ways."""
    report = Report(seed=seed_value, count=count, threads=threads)
    started = time.monotonic()
    generated = generate(count, seed_value)
    report.generate_seconds = time.monotonic() - started
    judge = ServerJudge(kubeconfig, namespace, threads)
    started = time.monotonic()
    server = judge.judge_all([c.spec for c in generated])
    local = [judge_pydantic(c.spec) for c in generated]
    report.judge_seconds = time.monotonic() - started
    report.outcomes = [Outcome(c, s, p) for c, s, p in zip(generated, server, local, strict=True)]
    return report


def install_crd(kubectl: str, kubeconfig: str) -> None:
    """crds/ applied server-side and Established (and in discovery)."""
    base = [kubectl, f"--kubeconfig={kubeconfig}"]
    subprocess.run(
        [*base, "apply", "--server-side", "--field-manager=mmop-tests", "--force-conflicts",
         "-f", str(ROOT / "crds")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        [*base, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s"],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


def replace_section(document: str, section: str) -> str:
    """`document` with its "Spec verdicts (drill a)" section replaced (or added at the end);
    the other sections are kept. A new document gets the page's title."""
    if not document.strip():
        return "# Reliability\n\n" + section.strip("\n") + "\n"
    return markdown.replace_section(document, SECTION.removeprefix("## "), section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability.specs", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: a fresh sandbox)")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--report", type=Path, help="write the figures into this Markdown file")
    ns = parser.parse_args(argv)
    command = "python -m bench.reliability.specs " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    sandbox = None
    try:
        if ns.kubeconfig is None:
            from e2e.sandbox import Sandbox

            sandbox = Sandbox(f"specs-{os.getpid()}-{uuid.uuid4().hex[:4]}", prometheus=False)
            state = sandbox.up(timeout=180)
            kubeconfig, kubectl = state.kubeconfig, state.bin_dir["kubectl"]
        else:
            kubeconfig, kubectl = ns.kubeconfig, "kubectl"
        install_crd(kubectl, kubeconfig)
        version = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "version", "-o", "json"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        report = run(kubeconfig, ns.namespace, ns.count, ns.seed, ns.threads)
        report.command = command
        report.server = json.loads(version.stdout)["serverVersion"]["gitVersion"]
    finally:
        if sandbox is not None:
            sandbox.down(quiet=True)
    print(report.markdown())
    problems = report.problems(limit=20)
    if problems:
        print(problems, file=sys.stderr)
    if ns.report is not None:
        text = ns.report.read_text(encoding="utf-8") if ns.report.exists() else ""
        ns.report.write_text(replace_section(text, report.markdown()), encoding="utf-8")
        print(f"wrote the figures into {ns.report}", file=sys.stderr)
    return 1 if report.disagreements or report.unnamed else 0


if __name__ == "__main__":
    sys.exit(main())
