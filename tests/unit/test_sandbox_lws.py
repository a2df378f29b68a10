"""Pure parts of the sandbox's LeaderWorkerSet support: the controller's configuration, the
webhook configurations built from the upstream manifests, the serving certificate, and the
build's cache keys (LWS has its own; the main binaries' key does not move with it)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from e2e.sandbox import lws
from e2e.sandbox.pki import create_pki, issue_serving_cert

SANDBOX = Path(__file__).resolve().parents[2] / "e2e" / "sandbox"

# The shape of sigs.k8s.io/lws v0.9.0's config/webhook/manifests.yaml and its two patches.
MANIFESTS = """
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset}
  failurePolicy: Fail
  name: mleaderworkerset.kb.io
  rules: [{apiGroups: [leaderworkerset.x-k8s.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [leaderworkersets]}]
  sideEffects: None
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
  failurePolicy: Fail
  name: mpod.kb.io
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}]
  sideEffects: None
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /validate-leaderworkerset-x-k8s-io-v1-leaderworkerset}
  failurePolicy: Fail
  name: vleaderworkerset.kb.io
  rules: [{apiGroups: [leaderworkerset.x-k8s.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [leaderworkersets]}]
  sideEffects: None
- admissionReviewVersions: [v1]
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /validate--v1-pod}
  failurePolicy: Fail
  name: vpod.kb.io
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}]
  sideEffects: None
"""


def pod_patch(name: str, path: str, operations: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "op": "replace",
            "path": "/webhooks/1",
            "value": {
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "service": {"name": "webhook-service", "namespace": "system", "path": path}
                },
                "failurePolicy": "Fail",
                "name": name,
                "objectSelector": {
                    "matchExpressions": [
                        {"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}
                    ]
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": operations,
                        "resources": ["pods"],
                    }
                ],
                "sideEffects": "None",
            },
        }
    ]


PATCHES = {
    "MutatingWebhookConfiguration": pod_patch("mpod.kb.io", "/mutate--v1-pod", ["CREATE"]),
    "ValidatingWebhookConfiguration": pod_patch(
        "vpod.kb.io", "/validate--v1-pod", ["CREATE", "UPDATE"]
    ),
}


def test_webhooks_call_the_loopback_url_with_the_sandbox_ca() -> None:
    docs = [d for d in yaml.safe_load_all(MANIFESTS) if d]
    out = lws.webhook_configurations(docs, PATCHES, "https://127.0.0.1:23456/", b"PEM")
    assert [(o["kind"], o["metadata"]["name"]) for o in out] == [
        ("MutatingWebhookConfiguration", "lws-mutating-webhook-configuration"),
        ("ValidatingWebhookConfiguration", "lws-validating-webhook-configuration"),
    ]
    urls = {h["name"]: h["clientConfig"] for o in out for h in o["webhooks"]}
    assert urls["mpod.kb.io"] == {
        "url": "https://127.0.0.1:23456/mutate--v1-pod",
        "caBundle": base64.b64encode(b"PEM").decode(),
    }
    assert urls["vleaderworkerset.kb.io"]["url"] == (
        "https://127.0.0.1:23456/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset"
    )
    # No Service anywhere: the API server calls the controller on the host.
    assert "service" not in str(out)
    # The pod webhooks see only LWS pods (upstream's patches), the LWS ones every LWS.
    hooks = {h["name"]: h for o in out for h in o["webhooks"]}
    for name in ("mpod.kb.io", "vpod.kb.io"):
        selector = hooks[name]["objectSelector"]["matchExpressions"]
        assert selector == [{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}]
    assert "objectSelector" not in hooks["mleaderworkerset.kb.io"]
    # The input documents are left as they were.
    assert docs[0]["metadata"]["name"] == "mutating-webhook-configuration"
    assert "service" in docs[0]["webhooks"][1]["clientConfig"]


def test_webhook_configurations_refuse_what_they_do_not_know() -> None:
    with pytest.raises(ValueError, match="unexpected Service"):
        lws.webhook_configurations([{"kind": "Service"}], {}, "https://x", b"")
    no_path = {
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "m"},
        "webhooks": [{"name": "w", "clientConfig": {"url": "https://elsewhere"}}],
    }
    with pytest.raises(ValueError, match="no service path"):
        lws.webhook_configurations([no_path], {}, "https://x", b"")


def test_json_patch_add_replace_remove() -> None:
    doc = {"a": {"b": [1, 2, 3]}, "c": "x"}
    out = lws.apply_json_patch(
        doc,
        [
            {"op": "replace", "path": "/a/b/1", "value": 20},
            {"op": "add", "path": "/a/b/-", "value": 4},
            {"op": "add", "path": "/a/d~1e", "value": {"f": 1}},
            {"op": "remove", "path": "/c"},
        ],
    )
    assert out == {"a": {"b": [1, 20, 3, 4], "d/e": {"f": 1}}}
    assert doc == {"a": {"b": [1, 2, 3]}, "c": "x"}
    with pytest.raises(KeyError):
        lws.apply_json_patch(doc, [{"op": "replace", "path": "/missing", "value": 1}])
    with pytest.raises(ValueError, match="unsupported"):
        lws.apply_json_patch(doc, [{"op": "move", "from": "/c", "path": "/d"}])


def test_controller_config_keeps_everything_on_loopback_and_certs_external() -> None:
    cfg = lws.controller_config(
        webhook_port=21001, cert_dir=Path("/c"), metrics_port=21002, health_port=21003
    )
    assert cfg["apiVersion"] == "config.lws.x-k8s.io/v1alpha1" and cfg["kind"] == "Configuration"
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["webhook"] == {"host": "127.0.0.1", "port": 21001, "certDir": "/c"}
    assert cfg["metrics"]["bindAddress"] == "127.0.0.1:21002"
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:21003"


def test_the_probe_tells_whether_the_mutating_webhook_ran() -> None:
    probe = lws.probe_object()
    assert probe["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert not lws.webhooks_applied(probe)
    mutated = {"spec": {**probe["spec"], "networkConfig": {"subdomainPolicy": "Shared"}}}
    assert lws.webhooks_applied(mutated)


def test_the_webhook_serving_certificate_is_signed_by_the_sandbox_ca(tmp_path: Path) -> None:
    pki = create_pki(tmp_path / "pki", "10.96.0.1")
    issue_serving_cert(pki, tmp_path / "certs" / "tls.crt", tmp_path / "certs" / "tls.key", "w")
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert (tmp_path / "certs" / "tls.key").stat().st_mode & 0o077 == 0


def test_assets_name_what_is_missing(tmp_path: Path) -> None:
    assets = lws.LwsAssets(tmp_path)
    missing = assets.missing()
    assert str(assets.controller) in missing and len(missing) == 6
    assets.controller.parent.mkdir(parents=True)
    assets.controller.write_text("#!/bin/sh\n")
    assets.controller.chmod(0o755)
    assets.share.mkdir(parents=True)
    for name in (*lws.CRD_FILES, lws.WEBHOOK_MANIFESTS, *lws.WEBHOOK_PATCHES.values()):
        (assets.share / name).write_text(yaml.safe_dump({"kind": "X"}))
    assert assets.missing() == []


# ------------------------------------------------------------------------------- cache keys


def _copy_sandbox(dest: Path) -> Path:
    """The build script, versions.env and wrappers, to change them without touching the repo."""
    dest.mkdir()
    shutil.copy(SANDBOX / "build.sh", dest / "build.sh")
    shutil.copy(SANDBOX / "versions.env", dest / "versions.env")
    shutil.copytree(SANDBOX / "gomod", dest / "gomod")
    return dest


def _ask(sandbox: Path, cache: Path, flag: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMOP_")}
    env["MMOP_SANDBOX_CACHE_DIR"] = str(cache)
    out = subprocess.run(
        ["bash", str(sandbox / "build.sh"), flag],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return out.stdout.strip()


def _key_before_lws(sandbox: Path) -> str:
    """The main key as build.sh computed it before LWS was added: a SHA-256 over the recipe
    revision, the platform, versions.env and every gomod/*/go.mod and go.sum, with the files as
    they were then (versions.env without the optional section, no gomod/lws)."""
    script = (sandbox / "build.sh").read_text()
    recipe = re.search(r"^readonly RECIPE_REVISION=(\d+)$", script, re.M)
    assert recipe
    versions = (sandbox / "versions.env").read_text()
    before = versions[: versions.index("# ==== optional components")].rstrip("\n") + "\n"
    wrappers = sorted(p for p in (sandbox / "gomod").iterdir() if p.name != "lws")
    text = f"recipe {recipe.group(1)}\nplatform {os.uname().sysname}/{os.uname().machine}\n"
    text += "== versions.env\n" + before
    for name in ("go.mod", "go.sum"):
        for w in wrappers:
            text += f"== gomod/{w.name}/{name}\n" + (w / name).read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_the_main_binaries_key_ignores_the_optional_components(tmp_path: Path) -> None:
    """Adding LWS (its versions.env section, its wrapper) left the key of the main binaries as
    it was, so they are never rebuilt for it; moving the LWS pin moves LWS's own key only."""
    cache = tmp_path / "cache"
    full = _copy_sandbox(tmp_path / "full")
    bin_dir = Path(_ask(full, cache, "--print-dir"))
    lws_dir = Path(_ask(full, cache, "--print-lws-dir"))
    assert bin_dir == cache / _key_before_lws(full) / "bin"
    assert lws_dir.parent == cache and lws_dir.name.startswith("lws-")

    moved = _copy_sandbox(tmp_path / "moved")
    text = (moved / "versions.env").read_text()
    assert "LWS_VERSION=v0.9.0" in text
    (moved / "versions.env").write_text(text.replace("LWS_VERSION=v0.9.0", "LWS_VERSION=v0.9.1"))
    assert Path(_ask(moved, cache, "--print-dir")) == bin_dir
    assert Path(_ask(moved, cache, "--print-lws-dir")) != lws_dir

    bumped = _copy_sandbox(tmp_path / "bumped")
    text = (bumped / "versions.env").read_text()
    assert "KWOK_VERSION=" in text
    (bumped / "versions.env").write_text(re.sub(r"KWOK_VERSION=\S+", "KWOK_VERSION=v9.9.9", text))
    assert Path(_ask(bumped, cache, "--print-dir")) != bin_dir
    assert Path(_ask(bumped, cache, "--print-lws-dir")) == lws_dir
