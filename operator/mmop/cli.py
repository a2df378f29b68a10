"""`mmop` command line: estimate, plan, crd and run.

`plan` and `estimate` share one contract. Exit codes: 0 an answer (for `estimate`, a
configuration that does not fit is an answer, not an error); 2 bad input (unknown model or GPU,
an invalid manifest, inventory or flag, a spec the model cannot serve); 3 nothing fits (`plan`
only). Errors are one line on stderr; with `--json`, stdout holds exactly one JSON object either
way: the answer, or ``{"error", "reason", "exit_code", "nearest_miss"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from mmop.catalog import GpuError, resolve_gpu
from mmop.estimator import (
    DTYPES,
    KV_CACHE_DTYPE_FLAGS,
    KV_DTYPE_BYTES,
    PINNED_VLLM_VERSION,
    QUANTIZATION_FLAGS,
    EngineArgs,
    Estimate,
    EstimateError,
    NoVerdict,
    estimate,
)
from mmop.model import ModelError, ModelProfile, is_catalog_id, load_profile

if TYPE_CHECKING:
    from mmop.api import MultimodalModel

EXIT_USAGE = 2
EXIT_INFEASIBLE = 3


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit code 2. ``reason`` is the
    CamelCase reason of the JSON error object."""

    def __init__(self, message: str, reason: str = "InvalidArgument") -> None:
        super().__init__(message)
        self.reason = reason


class CommandError(Exception):
    """A failure as `plan` and `estimate` report it: ``mmop: LABEL: MESSAGE`` on stderr (one
    line) and, with ``--json``, the JSON error object on stdout."""

    def __init__(
        self,
        message: str,
        reason: str,
        exit_code: int,
        nearest_miss: str | None = None,
        label: str = "error",
    ) -> None:
        super().__init__(message)
        self.message = _one_line(message)
        self.reason = reason
        self.exit_code = exit_code
        self.nearest_miss = None if nearest_miss is None else _one_line(nearest_miss)
        self.label = label

    def payload(self) -> dict[str, Any]:
        return {
            "error": self.message,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "nearest_miss": self.nearest_miss,
        }


def _one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(text.split())


_VALIDATION_HEADER = re.compile(r"^(?P<prefix>.*?)\d+ validation errors? for \S+\s*$")
_VALIDATION_TYPE = re.compile(r"\s*\[type=[^\]]*\]\s*$")


def _error_line(err: BaseException) -> str:
    """One line for an error whose text may be a multi-line dump (a pydantic ValidationError, a
    YAML error with its source excerpt), possibly behind a prefix such as the file name: the
    prefix, then ``loc: msg`` of the first validation error (or the YAML problem and where)."""
    import yaml

    text = str(err)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    header = _VALIDATION_HEADER.match(lines[0])
    if len(lines) == 1 and header is None:
        return _one_line(text)
    cause: BaseException | None = err
    if not isinstance(err, ValidationError | yaml.MarkedYAMLError):
        cause = err.__cause__ or err.__context__
    detail = None
    if isinstance(cause, ValidationError) and cause.errors():
        first = cause.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        detail = f"{loc}: {first['msg']}" if loc else str(first["msg"])
    elif isinstance(cause, yaml.MarkedYAMLError) and cause.problem:
        mark = cause.problem_mark
        where = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
        detail = f"{cause.problem}{where}"
    if detail is not None and cause is not None:
        head = next((line for line in str(cause).splitlines() if line.strip()), "")
        at = text.find(head) if head and cause is not err else -1
        return _one_line((text[:at] if at > 0 else "") + detail)
    if header is not None and len(lines) >= 3:  # a dump whose ValidationError is gone
        message = _VALIDATION_TYPE.sub("", lines[2])
        return _one_line(f"{header['prefix']}{lines[1].strip()}: {message.strip()}")
    return _one_line(lines[0])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _json_arg(name: str, raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"{name}: malformed JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(value, dict):
        raise UsageError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def _speculative(spec: dict[str, Any]) -> dict[str, Any]:
    """--speculative-config's JSON as EngineArgs fields (vLLM's SpeculativeConfig keys)."""
    if not spec:
        return {}
    method = spec.get("method")
    if method is None:
        # vLLM infers a draft model's method from the model it names
        method = "draft_model" if spec.get("model") else None
    if not isinstance(method, str):
        raise UsageError('--speculative-config: expected a method (e.g. "mtp") or a model')
    return {
        "speculative_method": method,
        "num_speculative_tokens": spec.get("num_speculative_tokens"),
    }


def _validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    flag = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else loc
    return f"{flag}: {first['msg']} (at {loc})"


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmop", description="Plan and serve multimodal models with vLLM.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    est = sub.add_parser(
        "estimate",
        help="vLLM's start-up memory accounting for a model on a GPU",
        description=(
            "Predict what vLLM logs at start-up — weights, activation, CUDA graphs, available KV "
            "cache, KV tokens, concurrency — and whether the configuration fits. Flags are "
            "vLLM's own."
        ),
    )
    est.add_argument(
        "model",
        help="catalog id (e.g. Qwen/Qwen2.5-VL-7B-Instruct), a directory, or a Hugging Face Hub "
        "id (read from $HF_ENDPOINT, token $HF_TOKEN)",
    )
    est.add_argument("--revision", help="the Hub revision (branch, tag or commit)")
    est.add_argument("--gpu", required=True, help="catalog GPU name or nvidia.com/gpu.product")
    est.add_argument("--gpu-memory-gib", type=float, help="override device memory (GiB)")
    est.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    est.add_argument(
        "--quantization",
        "-q",
        choices=QUANTIZATION_FLAGS,
        metavar="METHOD",
        help="any of vLLM's methods; one mmop does not size gets no verdict",
    )
    est.add_argument("--dtype", default="auto", choices=DTYPES)
    est.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=KV_CACHE_DTYPE_FLAGS,
        metavar="DTYPE",
        help=f"any of vLLM's; mmop sizes {', '.join(KV_DTYPE_BYTES)}, others get no verdict",
    )
    est.add_argument("--gpu-memory-utilization", type=float)
    est.add_argument("--max-model-len", type=int)
    est.add_argument("--max-num-seqs", type=int)
    est.add_argument("--max-num-batched-tokens", type=int)
    est.add_argument("--block-size", type=int)
    est.add_argument("--limit-mm-per-prompt", help='JSON, e.g. \'{"image": 2, "video": 0}\'')
    est.add_argument("--mm-processor-kwargs", help="JSON, e.g. '{\"max_pixels\": 1003520}'")
    est.add_argument("--mm-encoder-tp-mode", choices=("weights", "data"), default="weights")
    est.add_argument("--enforce-eager", action="store_true")
    est.add_argument("--skip-mm-profiling", action="store_true")
    est.add_argument(
        "--speculative-config",
        help='JSON, e.g. \'{"method": "mtp", "num_speculative_tokens": 2}\' (the model\'s own MTP '
        "layers; other drafters get no verdict)",
    )
    est.add_argument("--vllm-version", default=PINNED_VLLM_VERSION)
    est.add_argument(
        "--vllm-use-v1",
        action="store_true",
        help="vLLM 0.8-0.10 run with VLLM_USE_V1=1 (V1 forced); without it they may run V0 "
        "and get no verdict",
    )
    est.add_argument("--json", action="store_true", help="print one JSON object")

    pl = sub.add_parser(
        "plan",
        help="the cheapest deployment of a MultimodalModel manifest on a cluster's GPUs",
        description=(
            "Plan a MultimodalModel (as you would kubectl apply it) on an inventory of GPU "
            "pools: GPU type and count, quantization, KV dtype, image cap, context, vLLM flags, "
            "replicas and $/hour, with the alternatives and why they lost. Exit 3 when nothing "
            "fits, with the nearest miss."
        ),
    )
    pl.add_argument("manifest", help="MultimodalModel YAML file (- for stdin)")
    pl.add_argument("--inventory", help="inventory YAML (default: the built-in sample cluster)")
    pl.add_argument("--vllm-version", default=PINNED_VLLM_VERSION)
    pl.add_argument(
        "--model-ref",
        help="what the pod serves when spec.model.id is a local directory: a Hub id or a path "
        "on the pod's model volume (default: the placeholder MODEL)",
    )
    pl.add_argument(
        "--multinode",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="when no single node holds a replica, or spanning nodes saves at least a fifth "
        "of the cost, plan one over several nodes (tensor parallel within a node × pipeline "
        "parallel across nodes, a LeaderWorkerSet; docs/multinode.md), as an operator run "
        "with --multinode does",
    )
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    rn = sub.add_parser(
        "run",
        help="run the operator (kopf) against the current kubeconfig or in-cluster config",
        description="Watch MultimodalModels and keep their vLLM Deployments planned and current.",
    )
    scope = rn.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all (default)")
    rn.add_argument(
        "--pod-label", action="append", default=[], help="extra label for vLLM pods, KEY=VALUE"
    )
    rn.add_argument(
        "--pod-annotation",
        action="append",
        default=[],
        help="extra annotation for vLLM pods, KEY=VALUE",
    )
    rn.add_argument(
        "--cache-storage-class",
        default=None,
        help="storage class of the weight-cache claims mmop creates for spec.model.cache when "
        "the model names none (default: the cluster's default class)",
    )
    rn.add_argument(
        "--multinode",
        action="store_true",
        default=None,
        help="plan models that no single node holds (or that cost at least a fifth less so) "
        "over several nodes and serve them as LeaderWorkerSets (needs the LWS controller; "
        "docs/multinode.md)",
    )
    rn.add_argument(
        "--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz"
    )
    rn.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="kopf peering object NAME (ClusterKopfPeering; KopfPeering with -n): of the "
        "processes sharing it only one reconciles (default: standalone, no peering)",
    )
    rn.add_argument(
        "--peering-priority",
        type=int,
        default=None,
        help="peering priority; the highest live one reconciles (default: from the start time, "
        "so the longest-running process keeps the lead)",
    )
    rn.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="operator log level (default info)"
    )
    rn.add_argument(
        "--log-format", choices=LOG_FORMATS, default="full", help="log lines: plain, full or json"
    )
    rn.add_argument("--verbose", action="store_true", help="same as --log-level debug")
    rn.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve mmop's Prometheus metrics on this port at /metrics (default: off)",
    )
    rn.add_argument(
        "--metrics-address", default="0.0.0.0", help="address for --metrics-port (default all)"
    )
    rn.add_argument(
        "--vllm-image",
        metavar="IMAGE",
        default=None,
        help="vLLM image for models whose spec names none (default: the pinned vLLM release); "
        "use a mirror of the same release",
    )
    rn.add_argument(
        "--gpu-catalog",
        metavar="FILE",
        default=None,
        help="YAML `gpus:` list merged over the built-in GPU catalog (by name, alias or GFD "
        "product; unknown names add a GPU)",
    )
    rn.add_argument(
        "--allowed-image",
        metavar="PREFIX",
        action="append",
        default=[],
        help="images models may run must start with one of these (repeatable; default: any)",
    )
    rn.add_argument(
        "--allowed-secret",
        metavar="NAME",
        action="append",
        default=[],
        help="Secrets models may reference for the Hub token or the API key (repeatable; "
        "default: any in the model's namespace)",
    )
    rn.add_argument(
        "--hub-endpoint",
        metavar="URL",
        default=None,
        help="the Hugging Face Hub (or a mirror) configs of models outside the catalog are read "
        "from (default: $HF_ENDPOINT, else https://huggingface.co)",
    )
    rn.add_argument(
        "--calibration-configmap",
        metavar="NAMESPACE/NAME",
        default=None,
        help="keep the KV caches engines reported at start-up in this ConfigMap (cluster-wide, "
        "across restarts; default: in memory only)",
    )
    rn.add_argument(
        "--hub-token-secret",
        metavar="NAME",
        action="append",
        default=[],
        help="a Secret the operator may read a model's Hub token from (spec.model."
        "tokenSecretRef) to read a gated model's config (repeatable; default: none)",
    )
    rn.add_argument(
        "--prices",
        metavar="FILE",
        default=None,
        help="YAML mapping of GPU name to $/GPU-hour, overriding the catalog's list prices",
    )

    crd = sub.add_parser(
        "crd",
        help="the MultimodalModel CustomResourceDefinition, generated from the API models",
        description=(
            "Render the MultimodalModel CRD (OpenAPI schema, CEL rules, printer columns) from "
            "mmop's API models: to stdout, or into DIR/mmop.dev_multimodalmodels.yaml."
        ),
    )
    crd.add_argument("--output-dir", metavar="DIR", help="write the CRD file into DIR")
    return parser


def _hub_profile(model_id: str, revision: str | None) -> ModelProfile:
    """A model outside the catalog, read from the Hub as the operator reads it (the endpoint
    from $HF_ENDPOINT, the token from $HF_TOKEN: the user's own)."""
    from mmop.hub import DEFAULT_ENDPOINT, HubError, HubResolver

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UsageError(
            f"{model_id!r} is neither a catalog id nor a directory, and HF_HUB_OFFLINE is set",
            reason="UnknownModel",
        )
    resolver = HubResolver(endpoint=os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    try:
        return resolver.resolve(model_id, revision, os.environ.get("HF_TOKEN") or None).profile()
    except HubError as err:
        raise UsageError(str(err), reason=str(err.reason)) from err


def _is_hub_id(model_id: str) -> bool:
    """Not the catalog's, not a directory here, and shaped like a Hub repository id."""
    from mmop.api import model_id_problem

    if is_catalog_id(model_id) or Path(model_id).expanduser().is_dir():
        return False
    return model_id_problem(model_id) is None


def cli_profile(model_id: str, revision: str | None = None) -> ModelProfile:
    """The profile `mmop estimate` and `mmop plan` use: the catalog, a local directory, or
    the Hub."""
    if _is_hub_id(model_id):
        return _hub_profile(model_id, revision)
    try:
        return load_profile(model_id)
    except ModelError as err:
        raise UsageError(str(err), reason="UnknownModel") from err


def _resolved(manifest: MultimodalModel) -> dict[str, ModelProfile]:
    """Profiles of the manifest's Hub models (the model, and the variants that can be read)."""
    source = manifest.spec.model
    out: dict[str, ModelProfile] = {}
    if _is_hub_id(source.id):
        out[source.id] = _hub_profile(source.id, source.revision)
    for variant in source.variants:
        if variant.id not in out and _is_hub_id(variant.id):
            with contextlib.suppress(UsageError):
                out[variant.id] = _hub_profile(variant.id, None)
    return out


def run_estimate(ns: argparse.Namespace) -> Estimate:
    profile = cli_profile(ns.model, ns.revision)
    try:
        gpu = resolve_gpu(ns.gpu)
    except GpuError as err:
        raise UsageError(str(err), reason="UnknownGpu") from err
    if ns.gpu_memory_gib is not None:
        if not 0 < ns.gpu_memory_gib <= 4096:
            raise UsageError("--gpu-memory-gib: must be > 0 and <= 4096")
        gpu = gpu.with_memory(ns.gpu_memory_gib)
    raw = {
        "tensor_parallel_size": ns.tensor_parallel_size,
        "quantization": ns.quantization,
        "dtype": ns.dtype,
        "kv_cache_dtype": ns.kv_cache_dtype,
        "gpu_memory_utilization": ns.gpu_memory_utilization,
        "max_model_len": ns.max_model_len,
        "max_num_seqs": ns.max_num_seqs,
        "max_num_batched_tokens": ns.max_num_batched_tokens,
        "block_size": ns.block_size,
        "limit_mm_per_prompt": _json_arg("--limit-mm-per-prompt", ns.limit_mm_per_prompt),
        "mm_processor_kwargs": _json_arg("--mm-processor-kwargs", ns.mm_processor_kwargs),
        "mm_encoder_tp_mode": ns.mm_encoder_tp_mode,
        "enforce_eager": ns.enforce_eager,
        "skip_mm_profiling": ns.skip_mm_profiling,
        **_speculative(_json_arg("--speculative-config", ns.speculative_config)),
        "vllm_version": ns.vllm_version,
        "vllm_use_v1": ns.vllm_use_v1,
    }
    try:
        args = EngineArgs.model_validate(raw)
    except ValidationError as err:
        raise UsageError(_validation_message(err)) from err
    try:
        return estimate(profile, gpu, args)
    except NoVerdict as err:
        raise UsageError(str(err), reason="NoVerdict") from err
    except EstimateError as err:
        raise UsageError(str(err)) from err
    except ValueError as err:  # a processor rule refusing an input (e.g. aspect ratio)
        raise UsageError(str(err)) from err


JSON_KEYS = (
    "model",
    "gpu",
    "vllm_version",
    "tensor_parallel_size",
    "gpu_total_gib",
    "gpu_memory_utilization",
    "requested_gib",
    "weights_gib",
    "non_torch_gib",
    "activation_gib",
    "cudagraph_gib",
    "kv_cache_gib",
    "kv_cache_tokens",
    "kv_cache_blocks",
    "kv_bytes_per_token",
    "max_concurrency",
    "max_model_len",
    "max_model_len_fit",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_tokens_per_image",
    "max_tokens_per_video",
    "max_tokens_per_audio",
    "fits",
    "reason",
)


def _print_table(est: Estimate) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"{est.model} on {est.tensor_parallel_size}× {est.gpu} (vLLM {est.vllm_version})"
    )
    table.add_column("per GPU", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("device memory", f"{est.gpu_total_gib:.2f} GiB"),
        (f"budget (util {est.gpu_memory_utilization})", f"{est.requested_gib:.2f} GiB"),
        ("weights", f"{est.weights_gib:.2f} GiB"),
        ("non-torch", f"{est.non_torch_gib:.2f} GiB"),
        ("activation peak", f"{est.activation_gib:.2f} GiB"),
        ("  language model + sampler", f"{est.activation_text_gib:.2f} GiB"),
        ("  encoder profile", f"{est.activation_encoder_gib:.2f} GiB"),
        (
            "CUDA graphs" + ("" if est.cudagraph_subtracted_before_kv else " (after KV)"),
            f"{est.cudagraph_gib:.2f} GiB",
        ),
        ("available KV cache", f"{est.kv_cache_gib:.2f} GiB"),
        ("KV cache tokens", f"{est.kv_cache_tokens:,}"),
        ("max concurrency", f"{est.max_concurrency:.2f}x at {est.max_model_len:,} tokens"),
        ("largest max_model_len that fits", f"{est.max_model_len_fit:,}"),
        (
            "max_num_seqs / max_num_batched_tokens",
            f"{est.max_num_seqs} / {est.max_num_batched_tokens}",
        ),
    ]
    for modality, tokens in (
        ("image", est.max_tokens_per_image),
        ("video", est.max_tokens_per_video),
        ("audio", est.max_tokens_per_audio),
    ):
        if tokens is not None:
            rows.append((f"max tokens per {modality}", f"{tokens:,}"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print(f"multimodal profile: {est.mm_profile}")
    style = "green" if est.fits else "red"
    console.print(f"[{style}]{'FITS' if est.fits else 'DOES NOT FIT'}[/{style}]: {est.reason}")
    for warning in est.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = list(sys.argv[1:] if argv is None else argv)
    ns: argparse.Namespace | None = None
    try:
        ns = parser.parse_args(args)
        if ns.command == "estimate":
            est = run_estimate(ns)
            if ns.json:
                payload = est.model_dump(mode="json")
                ordered = {k: payload[k] for k in JSON_KEYS}
                ordered.update({k: v for k, v in payload.items() if k not in ordered})
                print(json.dumps(ordered, indent=2))
            else:
                _print_table(est)
            return 0
        if ns.command == "plan":
            return run_plan(ns)
        if ns.command == "crd":
            return run_crd(ns)
        if ns.command == "run":
            return run_operator(ns)
    except (UsageError, CommandError) as err:
        failure = (
            err if isinstance(err, CommandError) else CommandError(str(err), err.reason, EXIT_USAGE)
        )
        return _report(failure, _wants_json(ns, args))
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return 0  # pragma: no cover - argparse requires a command


def _wants_json(ns: argparse.Namespace | None, args: Sequence[str]) -> bool:
    """Whether the failed command asked for JSON (from its arguments when they did not parse)."""
    if ns is not None:
        return bool(getattr(ns, "json", False))
    return bool(args) and args[0] in ("plan", "estimate") and "--json" in args


def _report(failure: CommandError, as_json: bool) -> int:
    """The failure as one line on stderr and, for ``--json``, one JSON object on stdout."""
    if as_json:
        print(json.dumps(failure.payload(), indent=2))
    print(f"mmop: {failure.label}: {failure.message}", file=sys.stderr)
    return failure.exit_code


def _load_manifest(path: str) -> Any:
    import yaml

    from mmop.api import ALLOW_LOCAL_MODEL, MultimodalModel

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"{path}: {err.strerror}", reason="InvalidManifest") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: invalid YAML ({_error_line(err)})", "InvalidManifest") from err
    try:
        # `mmop plan` may name a directory of this machine as spec.model.id (the operator
        # never may: the schema refuses it there).
        return MultimodalModel.model_validate(data, context={ALLOW_LOCAL_MODEL: True})
    except ValidationError as err:
        raise UsageError(f"{path}: {_error_line(err)}", reason="InvalidManifest") from err


def run_plan(ns: argparse.Namespace) -> int:
    from mmop.planner import PlanningError, plan

    manifest = _load_manifest(ns.manifest)
    inventory = _load_inventory(ns.inventory)
    try:
        EngineArgs.model_validate({"vllm_version": ns.vllm_version})
    except ValidationError as err:
        raise UsageError(_validation_message(err)) from err
    try:
        result = plan(
            manifest,
            inventory,
            vllm_version=ns.vllm_version,
            allow_local=True,
            model_ref=ns.model_ref,
            resolved=_resolved(manifest),
            multinode=ns.multinode,
        )
    except GpuError as err:
        raise UsageError(str(err), reason="UnknownGpu") from err
    except PlanningError as err:
        message = str(err)
        _, found, miss = message.partition("nearest miss: ")
        raise CommandError(
            message,
            err.reason,
            EXIT_USAGE if err.bad_input else EXIT_INFEASIBLE,
            nearest_miss=miss if found else None,
            label=err.reason,
        ) from err
    if ns.json:
        from mmop.render import vllm_args

        # the plan's fields, with the argv (built by render) after vllm_version, as before
        out: dict[str, Any] = {}
        for key, value in result.model_dump(mode="json").items():
            out[key] = value
            if key == "vllm_version":
                out["args"] = vllm_args(result)
        print(json.dumps(out, indent=2))
    else:
        _print_plan(manifest.metadata.name, result)
    return 0


def _load_inventory(path: str | None) -> Any:
    """The inventory of ``--inventory`` (the built-in sample cluster without one); a bad file is
    a one-line UsageError ``--inventory FILE: <loc>: <msg>``."""
    from mmop import inventory

    if path is None:
        return inventory.default_inventory()
    errors: tuple[type[BaseException], ...] = (ValueError,)
    inventory_error = getattr(inventory, "InventoryError", None)
    if isinstance(inventory_error, type) and issubclass(inventory_error, Exception):
        errors = (*errors, inventory_error)
    try:
        return inventory.load_inventory(path)
    except OSError as err:
        detail = err.strerror or _error_line(err)
        raise UsageError(f"--inventory {path}: {detail}", reason="InvalidInventory") from err
    except errors as err:
        detail = _error_line(err)
        for prefix in {f"{path}: ", f"{Path(path)}: "}:
            detail = detail.removeprefix(prefix)
        raise UsageError(f"--inventory {path}: {detail}", reason="InvalidInventory") from err


def serve_command(args: Sequence[str]) -> str:
    """``vllm serve`` with ``args`` as a shell command that copy-pastes at any terminal width:
    one flag (with its values) per line, `` \\`` continuations, every argument shell-quoted."""
    import shlex

    lines = [["vllm", "serve"]]
    for arg in args:
        if arg.startswith("-") and len(lines[-1]) > (2 if len(lines) == 1 else 0):
            lines.append([])
        lines[-1].append(shlex.quote(arg))
    return " \\\n  ".join(" ".join(words) for words in lines)


def _tokens_per_item(result: Any) -> str | None:
    parts = []
    image = getattr(result, "tokens_per_image", None)
    if image is None:
        image = getattr(result, "max_tokens_per_image", None)
    if image is not None:
        native = getattr(result, "native_tokens_per_image", None)
        parts.append(
            f"image {image:,}" + (f" (native {native:,})" if native not in (None, image) else "")
        )
    for modality in ("video", "audio"):
        tokens = getattr(result, f"tokens_per_{modality}", None)
        if tokens is not None:
            parts.append(f"{modality} {tokens:,}")
    return ", ".join(parts) or None


def _print_plan(name: str, result: Any) -> None:
    """The plan as a table, its notes, the `vllm serve` command and the alternatives."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{escape(name)}[/bold]: {escape(result.explanation)}")
    image_cap = str(result.image_cap)
    native_cost = getattr(result, "native_cost_per_hour_usd", None)
    if native_cost is not None:
        image_cap += f" (native would cost ${native_cost:.2f}/h)"
    rows = [
        ("GPU", f"{result.tensor_parallel_size}× {result.gpu} ({result.gpu_product})"),
        *(
            [
                (
                    "nodes per replica",
                    f"{result.nodes_per_replica} (pipeline parallel "
                    f"{result.pipeline_parallel_size}; a LeaderWorkerSet group)",
                )
            ]
            if result.nodes_per_replica > 1
            else []
        ),
        ("replicas", str(result.replicas)),
        ("cost", f"${result.cost_per_hour_usd:.2f}/hour"),
        ("weights / KV cache", f"{result.quantization} / {result.kv_cache_dtype}"),
        ("max_model_len", f"{result.max_model_len:,}"),
        ("image cap", image_cap),
    ]
    tokens = _tokens_per_item(result)
    if tokens is not None:
        rows.append(("tokens per item", tokens))
    if getattr(result, "trust_remote_code", None):
        rows.append(("remote code", "trusted: the model repository's code runs"))
    rows += [
        (
            "KV cache per replica",
            f"{result.memory.kv_cache_gib:.2f} GiB/GPU, {result.memory.kv_cache_tokens:,} tokens",
        ),
        (
            "per replica",
            f"{result.performance.concurrency_per_replica} in flight, "
            f"{result.performance.requests_per_second_per_replica:.2f} req/s, "
            f"TTFT p95 {result.performance.ttft_p95_seconds:.2f} s, "
            f"TPOT p95 {1000 * result.performance.tpot_p95_seconds:.1f} ms",
        ),
        (
            "pod",
            f"{result.resources.gpus} GPU, {result.resources.cpu} CPU, "
            f"{result.resources.memory} memory, {result.resources.shm_size} /dev/shm",
        ),
    ]
    table = Table(show_header=False)
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)
    for note in getattr(result, "notes", None) or ():
        console.print(f"[yellow]note:[/yellow] {escape(str(note))}")
    # Plain print: rich would wrap the command at the terminal width, mid-argument.
    from mmop.render import vllm_args

    print(serve_command(vllm_args(result)), flush=True)
    if result.alternatives:
        alternatives = Table(title="alternatives", title_justify="left")
        for column in ("replicas", "GPUs per replica", "weights / KV", "image cap", "$/h"):
            alternatives.add_column(column, justify="right" if column == "$/h" else "left")
        alternatives.add_column("why not")
        for alt in result.alternatives:
            replicas = getattr(alt, "replicas", None)
            cost = alt.cost_per_hour_usd
            alternatives.add_row(
                "—" if replicas is None else str(replicas),
                (f"{alt.pipeline_parallel_size} nodes × " if alt.pipeline_parallel_size > 1 else "")
                + f"{alt.tensor_parallel_size}× {alt.gpu}",
                f"{alt.quantization} / {alt.kv_cache_dtype}",
                escape(str(getattr(alt, "image_cap", "—"))),
                "—" if cost is None else f"${cost:.2f}",
                escape(alt.reason),
            )
        console.print(alternatives)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, eq, val = value.partition("=")
        if not eq or not key:
            raise UsageError(f"{flag}: expected KEY=VALUE, got {value!r}")
        out[key] = val
    return out


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("plain", "full", "json")


def load_catalog_overrides(
    gpus_file: str | None, prices_file: str | None, base: Mapping[str, Any]
) -> dict[str, Any]:
    """The built-in GPU catalog document (``base``, as gpus.yaml holds it) with the operator's
    overrides: entries of ``gpus_file`` merged field by field into the catalog GPU their name
    resolves to (a new GPU when it resolves to none: then the entry must be complete), and the
    $/GPU-hour of ``prices_file`` (``{GPU name: price}``). Every entry is validated."""
    import yaml

    from mmop.catalog import GpuSpec

    entries = [dict(e) for e in base["gpus"]]

    def find(name: str) -> dict[str, Any] | None:
        key = name.strip().lower()
        for entry in entries:
            names = [entry["name"], *entry.get("aliases", ()), *entry.get("gfd_products", ())]
            if key in (str(n).lower() for n in names):
                return entry
        return None

    def read(path: str, flag: str) -> Any:
        try:
            return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as err:
            raise UsageError(f"{flag}: {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise UsageError(f"{flag}: {path}: invalid YAML ({str(err).splitlines()[0]})") from err

    if gpus_file is not None:
        data = read(gpus_file, "--gpu-catalog")
        gpus = data.get("gpus") if isinstance(data, dict) else None
        if not isinstance(gpus, list) or not all(
            isinstance(g, dict) and isinstance(g.get("name"), str) for g in gpus
        ):
            raise UsageError("--gpu-catalog: expected `gpus:` with a list of entries with a name")
        for override in gpus:
            target = find(override["name"])
            if target is None:
                entries.append(dict(override))
            else:
                target.update({k: v for k, v in override.items() if k != "name"})
    if prices_file is not None:
        prices = read(prices_file, "--prices")
        if not isinstance(prices, dict):
            raise UsageError("--prices: expected a mapping of GPU name to $/GPU-hour")
        for name, price in prices.items():
            target = find(str(name))
            if target is None:
                raise UsageError(f"--prices: unknown GPU {name!r}")
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                raise UsageError(f"--prices: {name}: expected a number >= 0, got {price!r}")
            target["price_per_hour_usd"] = float(price)
            target["price_source"] = f"operator price table ({prices_file})"
    for entry in entries:
        try:
            GpuSpec.model_validate(entry)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"GPU {entry.get('name')!r}: {loc}: {first['msg']}") from err
    return {**base, "gpus": entries}


def catalog_file(gpus_file: str | None, prices_file: str | None) -> Path | None:
    """The GPU catalog to plan with when it is overridden (None: the packaged one): the merged
    document, written to a private file that the operator's configuration names
    (``OperatorConfig.gpu_catalog``) and the operator loads with ``catalog.load_catalog``.
    Nothing of the process's own catalog changes: :func:`mmop.catalog.resolve_gpu` stays the
    packaged one's. A file that does not load is a UsageError here, at start-up."""
    if gpus_file is None and prices_file is None:
        return None
    import tempfile

    import yaml

    from mmop import catalog

    merged = load_catalog_overrides(
        gpus_file, prices_file, yaml.safe_load(catalog.GPUS_FILE.read_text(encoding="utf-8"))
    )
    fd, name = tempfile.mkstemp(prefix="mmop-gpus-", suffix=".yaml")
    with open(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(merged, out, sort_keys=False)
    try:
        catalog.load_catalog(Path(name))
    except catalog.CatalogError as err:
        raise UsageError(f"--gpu-catalog/--prices: {err}") from err
    return Path(name)


def check_vllm_image(image: str | None) -> None:
    """``--vllm-image``: the default of ``spec.engine.image`` for models that name none."""
    if image is not None and (
        not image.strip() or len(image) > 300 or any(c.isspace() for c in image)
    ):
        raise UsageError(f"--vllm-image: not an image reference: {image!r}")


def _start_priority() -> int:
    """Peering priority from the start time: earlier starts rank higher, so a restarted or newly
    scheduled replica waits as standby instead of taking the lead from a running one."""
    import time

    return -int(time.time() * 1000)


def run_operator(ns: argparse.Namespace) -> int:
    import logging

    import kopf

    from mmop.controller import runner
    from mmop.controller.config import from_environment
    from mmop.controller.context import OperatorContext
    from mmop.policy import Policy
    from mmop.render import RenderOptions

    if ns.metrics_port is not None and not 0 < ns.metrics_port < 65536:
        raise UsageError("--metrics-port: must be 1-65535")
    check_vllm_image(ns.vllm_image)
    config = from_environment(
        render=RenderOptions(
            extra_pod_labels=_pairs(ns.pod_label, "--pod-label"),
            extra_pod_annotations=_pairs(ns.pod_annotation, "--pod-annotation"),
            cache_storage_class=ns.cache_storage_class or None,
        ),
        default_vllm_image=ns.vllm_image,
        gpu_catalog=catalog_file(ns.gpu_catalog, ns.prices),
        policy=Policy(
            allowed_images=tuple(ns.allowed_image or ()),
            allowed_secrets=tuple(ns.allowed_secret or ()),
        ),
        hub_endpoint=ns.hub_endpoint,
        calibration_configmap=ns.calibration_configmap,
        hub_token_secrets=frozenset(ns.hub_token_secret or ()),
        multinode=ns.multinode,
    )
    ctx = OperatorContext(config=config)
    level = "debug" if ns.verbose else ns.log_level
    kopf.configure(
        debug=level == "debug",
        log_format={
            "plain": kopf.LogFormat.PLAIN,
            "full": kopf.LogFormat.FULL,
            "json": kopf.LogFormat.JSON,
        }[ns.log_format],
        # "[namespace/name]" before messages about an object (JSON lines carry it as a field).
        log_prefix=ns.log_format != "json",
    )
    logging.getLogger().setLevel(level.upper())
    if ns.metrics_port is not None:
        ctx.telemetry.start(ns.metrics_port, ns.metrics_address)
    from mmop.controller import memory_report

    memory_report.install()
    settings = kopf.OperatorSettings()
    if ns.namespace:
        # Namespaced: no cluster-wide listing of Namespaces or CRDs (the Role does not grant
        # it); the resources are found once, by API discovery, at start-up.
        settings.scanning.disabled = True
    priority = None
    if ns.peering is not None:
        priority = ns.peering_priority if ns.peering_priority is not None else _start_priority()
    runner.run(
        ctx,
        namespaces=ns.namespace or [],
        peering=ns.peering,
        priority=priority,
        liveness=ns.liveness,
        settings=settings,
    )
    return 0


def run_crd(ns: argparse.Namespace) -> int:
    from mmop.crd import CRD_FILENAME, render_crd

    text = render_crd()
    if ns.output_dir is None:
        sys.stdout.write(text)
        return 0
    target = Path(ns.output_dir) / CRD_FILENAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--output-dir: {err.strerror} ({target})") from err
    print(target)
    return 0


def entrypoint() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
