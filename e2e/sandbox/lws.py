"""The LeaderWorkerSet controller (sigs.k8s.io/lws) as a sandbox component, for
``Sandbox(lws=True)``: its CRDs, the controller as a local process against the sandbox's API
server, and its admission webhooks served on 127.0.0.1.

In a cluster LWS runs in a pod behind a Service, makes its own serving certificate and patches it
into its webhook configurations. Here the API server runs on the host, so the controller serves its
webhooks on ``https://127.0.0.1:<port>`` with a certificate from the sandbox's own CA, its internal
certificate management is off, and the webhook configurations name that URL with the sandbox CA as
``caBundle``. The binary and the manifests come from ``bash e2e/sandbox/build.sh --lws`` (cache
key of their own; e2e/sandbox/BUILD.md).
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
BUILD_SCRIPT = HERE / "build.sh"

BINARY = "lws-controller"
GROUP = "leaderworkerset.x-k8s.io"
VERSION = "v1"
PLURAL = "leaderworkersets"
API_VERSION = f"{GROUP}/{VERSION}"
# The CRDs the controller watches: LeaderWorkerSet, and DisaggregatedSet (v0.9.0 starts that
# controller unconditionally, so its CRD must exist too).
CRD_FILES = (
    "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
    "disaggregatedset.x-k8s.io_disaggregatedsets.yaml",
)
WEBHOOK_MANIFESTS = "manifests.yaml"
# The upstream kustomization patches its generated webhook manifests with these (JSON 6902): the
# pod webhooks only see pods labelled leaderworkerset.sigs.k8s.io/name.
WEBHOOK_PATCHES = {
    "MutatingWebhookConfiguration": "mutating-patch.yaml",
    "ValidatingWebhookConfiguration": "validating-patch.yaml",
}
# kustomize's namePrefix in the upstream config/default.
NAME_PREFIX = "lws-"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mmop-sandbox"}


class LwsError(RuntimeError):
    """The LWS controller's files are missing or could not be built."""


@dataclass(frozen=True)
class LwsAssets:
    """A directory holding ``bin/lws-controller`` and ``share/lws/*.yaml``."""

    root: Path

    @property
    def controller(self) -> Path:
        return self.root / "bin" / BINARY

    @property
    def share(self) -> Path:
        return self.root / "share" / "lws"

    def missing(self) -> list[str]:
        names = [self.controller] if not os.access(self.controller, os.X_OK) else []
        files = [*CRD_FILES, WEBHOOK_MANIFESTS, *WEBHOOK_PATCHES.values()]
        names += [self.share / f for f in files if not (self.share / f).is_file()]
        return [str(n) for n in names]

    def crds(self) -> list[dict[str, Any]]:
        return [yaml.safe_load((self.share / f).read_text()) for f in CRD_FILES]

    def webhook_documents(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The upstream webhook manifests and, by kind, the patches to apply to them."""
        docs = [d for d in yaml.safe_load_all((self.share / WEBHOOK_MANIFESTS).read_text()) if d]
        patches = {
            kind: yaml.safe_load((self.share / name).read_text())
            for kind, name in WEBHOOK_PATCHES.items()
        }
        return docs, patches


def find_lws(build: bool = True, log: Callable[[str], None] | None = None) -> LwsAssets:
    """The LWS controller and manifests: MMOP_LWS_DIR, else the build cache (built when
    allowed: ``bash e2e/sandbox/build.sh --lws``, about 2 minutes cold)."""
    env_dir = os.environ.get("MMOP_LWS_DIR")
    if env_dir:
        assets = LwsAssets(Path(env_dir))
    else:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-lws-dir"],
            check=True,
            capture_output=True,
            text=True,
        )
        assets = LwsAssets(Path(out.stdout.strip()))
        if assets.missing() or not (assets.root / ".complete").is_file():
            if not build:
                raise LwsError(
                    f"the LWS controller is not built ({assets.root}); run "
                    f"bash {BUILD_SCRIPT} --lws"
                )
            if log:
                log(f"building the LWS controller into {assets.root} (first run: ~2 minutes)")
            proc = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--lws"], check=False, stdout=subprocess.DEVNULL
            )
            if proc.returncode != 0:
                raise LwsError("step 'build LWS controller' failed; see the message above")
    missing = assets.missing()
    if missing:
        raise LwsError("missing LWS controller files: " + ", ".join(missing))
    return assets


def controller_config(
    *, webhook_port: int, cert_dir: Path, metrics_port: int, health_port: int
) -> dict[str, Any]:
    """The controller's --config file (config.lws.x-k8s.io/v1alpha1 Configuration): webhooks,
    metrics and probes on 127.0.0.1 only, no leader election, and no internal certificate
    management (it would write a Secret and patch the webhook configurations' caBundle)."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
    }


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"not a JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_json_patch(document: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> Any:
    """A copy of ``document`` with the JSON 6902 operations add, replace and remove applied
    (what the upstream kustomize patches use)."""
    out: Any = copy.deepcopy(dict(document))
    for op in ops:
        *parents, last = _pointer(op["path"])
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        kind = op["op"]
        if isinstance(target, list):
            index = len(target) if last == "-" else int(last)
            if kind == "add":
                target.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                target[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del target[index]
            else:
                raise ValueError(f"unsupported JSON patch op {kind!r}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in target:
                raise KeyError(op["path"])
            target[last] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del target[last]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return out


def webhook_configurations(
    documents: Sequence[Mapping[str, Any]],
    patches: Mapping[str, Sequence[Mapping[str, Any]]],
    base_url: str,
    ca_bundle: bytes,
) -> list[dict[str, Any]]:
    """The upstream Mutating/ValidatingWebhookConfigurations, patched as upstream's
    kustomization does, named with its ``lws-`` prefix, each webhook calling ``base_url`` + its
    service path, trusting ``ca_bundle`` (PEM)."""
    ca = base64.b64encode(ca_bundle).decode()
    out = []
    for doc in documents:
        kind = doc["kind"]
        if kind not in WEBHOOK_PATCHES:
            raise ValueError(f"unexpected {kind} in the LWS webhook manifests")
        obj = apply_json_patch(doc, patches.get(kind, []))
        obj["metadata"] = {
            "name": NAME_PREFIX + obj["metadata"]["name"],
            "labels": dict(MANAGED_BY),
        }
        for hook in obj["webhooks"]:
            client = hook["clientConfig"]
            path = client.get("service", {}).get("path")
            if not path:
                raise ValueError(f"webhook {hook.get('name')} has no service path")
            hook["clientConfig"] = {"url": base_url.rstrip("/") + path, "caBundle": ca}
        out.append(obj)
    return out


def probe_object(name: str = "mmop-sandbox-webhook-probe") -> dict[str, Any]:
    """A minimal LeaderWorkerSet for a server-side dry run: LWS's mutating webhook sets
    ``spec.networkConfig.subdomainPolicy`` (the CRD schema does not default it), so the dry run's
    answer tells whether the webhooks are in force."""
    return {
        "apiVersion": API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "leaderWorkerTemplate": {
                "size": 1,
                "workerTemplate": {
                    "spec": {"containers": [{"name": "main", "image": "registry.invalid/x:1"}]}
                },
            },
        },
    }


def webhooks_applied(answer: Mapping[str, Any]) -> bool:
    """Whether a dry run of :func:`probe_object` went through LWS's mutating webhook."""
    network = answer.get("spec", {}).get("networkConfig") or {}
    return bool(network.get("subdomainPolicy"))
