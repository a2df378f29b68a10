"""What a MultimodalModel may ask of the cluster: images, Secrets and environment (pure).

Whoever may create a MultimodalModel makes mmop create pods: without a policy they choose the
image, the pods' environment and which Secret of the namespace is mounted as the Hub token or
the API key. `check` holds a spec against a `Policy` the cluster administrator configured (the
chart's `policy.allowedImages` and `policy.allowedSecrets`, passed as `mmop run
--allowed-image` and `--allowed-secret`) and returns every violation with the field it is about;
the operator refuses to deploy a spec with any (condition `PolicyDenied`).

Some environment variables are refused whatever the policy says: they make the dynamic linker,
Python or vLLM load code or libraries from a path (`REFUSED_ENV`, each with the reason), or they
are set by mmop itself (the Hub token, the API key, the Hub cache).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mmop.api import MultimodalModelSpec, SecretKeyRef

# Names refused in spec.engine.env, with why. vLLM's are from vllm/envs.py of the pinned release
# (0.32.0).
REFUSED_ENV: dict[str, str] = {
    # the dynamic linker (ld.so) loads these libraries into every process
    "LD_PRELOAD": "the dynamic linker loads these libraries into every process",
    "LD_LIBRARY_PATH": "the dynamic linker searches these directories for libraries first",
    "LD_AUDIT": "the dynamic linker loads these auditing libraries into every process",
    # Python
    "PYTHONPATH": "Python imports modules from these directories first",
    "PYTHONHOME": "Python takes its standard library from this directory",
    "PYTHONSTARTUP": "Python runs this file at an interactive start",
    "PYTHONUSERBASE": "Python imports modules from this user site directory",
    "PYTHONBREAKPOINT": "Python imports and calls this function at breakpoint()",
    "PYTHONPLATLIBDIR": "Python takes its platform library directory from this name",
    # vLLM (vllm/envs.py)
    "VLLM_PLUGINS": "vLLM loads the named installed plugins (general and platform entry points)",
    "VLLM_NCCL_SO_PATH": "vLLM loads the NCCL library from this path",
    "VLLM_CUDART_SO_PATH": "vLLM loads the CUDA runtime library from this path",
    "VLLM_LOGGING_CONFIG_PATH": (
        "vLLM passes this file to logging.config.dictConfig, whose factories import and call "
        "any Python callable"
    ),
    "VLLM_ALLOW_INSECURE_SERIALIZATION": "vLLM then deserializes with pickle",
    "VLLM_MODEL_REDIRECT_PATH": "vLLM serves the model from the path this file names instead",
    "VLLM_RUST_FRONTEND_PATH": "vLLM runs this binary as its front end",
    "VLLM_ENABLE_CUDA_COMPATIBILITY": (
        "vLLM then prepends a CUDA compatibility directory to LD_LIBRARY_PATH"
    ),
    "VLLM_CUDA_COMPATIBILITY_PATH": "vLLM prepends this directory to LD_LIBRARY_PATH",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": (
        "vLLM then lets any client load LoRA adapters from paths at run time"
    ),
    # set by mmop (render.py): a user value would replace or shadow mmop's
    "HF_TOKEN": "mmop sets it from spec.model.tokenSecretRef",
    "HUGGING_FACE_HUB_TOKEN": "the Hub token is spec.model.tokenSecretRef",
    "VLLM_API_KEY": "mmop sets it from spec.engine.apiKeySecretRef",
    "HF_HOME": "mmop sets the Hub cache directory",
    "VLLM_NO_USAGE_STATS": "mmop sets it",
}
# Every name with this prefix is the dynamic linker's (LD_PROFILE, LD_DEBUG_OUTPUT, ...).
REFUSED_ENV_PREFIXES = ("LD_",)

_DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Policy:
    """The administrator's limits. Empty allow-lists allow anything (the default)."""

    allowed_images: tuple[str, ...] = ()
    """Image references or prefixes a spec may name in spec.engine.image: a registry
    (`registry.example.com/`), a repository and everything below it (`registry.example.com/team`
    or `vllm/vllm-openai`, any tag or digest) or one image (`vllm/vllm-openai:v0.32.0`). Docker
    Hub names are compared in full (`vllm/vllm-openai` is `docker.io/vllm/vllm-openai`)."""
    allowed_secrets: tuple[str, ...] = ()
    """Secret names a spec may reference (spec.model.tokenSecretRef and
    spec.engine.apiKeySecretRef)."""


@dataclass(frozen=True)
class Violation:
    field: str
    """The spec field, as `kubectl explain` names it (e.g. spec.engine.env[2].name)."""
    message: str


def normalize_image(reference: str) -> str:
    """A reference as the container runtime resolves its registry: Docker Hub names get their
    registry (`docker.io/`) and, for official images, `library/`."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return reference
    if not sep:
        return f"{_DOCKER_HUB}/library/{reference}"
    return f"{_DOCKER_HUB}/{reference}"


def image_allowed(image: str, allowed: Iterable[str]) -> bool:
    """Whether `image` is one of `allowed` or below one of them (at a `/`, `:` or `@`)."""
    full = normalize_image(image)
    for entry in allowed:
        if entry.endswith("/"):  # a registry or an organisation: everything below it
            if full.startswith(normalize_image(entry + "x")[:-1]):
                return True
            continue
        prefix = normalize_image(entry)
        if full == prefix or (full.startswith(prefix) and full[len(prefix)] in "/:@"):
            return True
    return False


def env_refused(name: str) -> str | None:
    """Why an env var name is refused in spec.engine.env (None: it is not)."""
    if name in REFUSED_ENV:
        return REFUSED_ENV[name]
    for prefix in REFUSED_ENV_PREFIXES:
        if name.startswith(prefix):
            return f"{prefix}* variables configure the dynamic linker"
    return None


def check(spec: MultimodalModelSpec, policy: Policy) -> list[Violation]:
    """Every way `spec` breaks `policy` or the always-refused environment names."""
    out: list[Violation] = []
    engine = spec.engine
    # The default image is the operator's own (`mmop run --vllm-image`), chosen by whoever
    # installed it: only an image the spec names is held against the allow-list.
    named = "image" in engine.model_fields_set
    if named and policy.allowed_images and not image_allowed(engine.image, policy.allowed_images):
        out.append(
            Violation(
                "spec.engine.image",
                f"image {engine.image!r} is not allowed by the operator's policy; allowed: "
                + ", ".join(policy.allowed_images),
            )
        )
    refs: list[tuple[str, SecretKeyRef | None]] = [
        ("spec.model.tokenSecretRef.name", spec.model.token_secret_ref),
        ("spec.engine.apiKeySecretRef.name", engine.api_key_secret_ref),
    ]
    for field, ref in refs:
        if ref is not None and policy.allowed_secrets and ref.name not in policy.allowed_secrets:
            out.append(
                Violation(
                    field,
                    f"Secret {ref.name!r} is not allowed by the operator's policy; allowed: "
                    + ", ".join(policy.allowed_secrets),
                )
            )
    for i, var in enumerate(engine.env):
        why = env_refused(var.name)
        if why is not None:
            out.append(
                Violation(
                    f"spec.engine.env[{i}].name",
                    f"environment variable {var.name} is refused: {why}",
                )
            )
    return out


__all__ = [
    "REFUSED_ENV",
    "REFUSED_ENV_PREFIXES",
    "Policy",
    "Violation",
    "check",
    "env_refused",
    "image_allowed",
    "normalize_image",
]
