"""The profiles of a model's checkpoints that are not in the catalog, read from the Hub for
the planner (which does no I/O): the model itself and its pre-quantized variants. A model whose
spec names ``model.configMapRef`` is read from that ConfigMap instead (clusters without the Hub).

The token for a gated or private repository comes from ``spec.model.tokenSecretRef``, read only
when its Secret is one the administrator named (``OperatorConfig.hub_token_secrets``, the chart's
``hub.tokenSecrets``, which is also the only Secret RBAC lets the operator read). Otherwise the
model is read anonymously, and a refusal says what to change.
"""

from __future__ import annotations

from mmop.api import MultimodalModel
from mmop.controller.context import OperatorContext
from mmop.hub import HubError, HubReason
from mmop.model import (
    CONFIG_FILES,
    ModelError,
    ModelProfile,
    is_catalog_id,
    parse_model_files,
    profile_from_files,
)


def resolve_models(ctx: OperatorContext, manifest: MultimodalModel) -> dict[str, ModelProfile]:
    """Profiles by id of the model and its variants outside the catalog. Raises HubError for
    the model; a variant that cannot be read is left to the planner (which then assumes the
    base model's shape with the variant's method, as for any variant it cannot read)."""
    source = manifest.spec.model
    if source.config_map_ref is not None:
        return {source.id: _from_config_map(ctx, manifest)}
    ids = [source.id, *(v.id for v in source.variants)]
    wanted = [i for i in dict.fromkeys(ids) if not is_catalog_id(i)]
    if not wanted:
        return {}
    token, why_not = _token(ctx, manifest)
    out: dict[str, ModelProfile] = {}
    for model_id in wanted:
        revision = source.revision if model_id == source.id else None
        try:
            out[model_id] = ctx.hub.resolve(model_id, revision, token).profile()
        except HubError as err:
            if model_id != source.id:
                continue
            if why_not and err.reason in (HubReason.GATED, HubReason.NOT_FOUND):
                raise HubError(HubReason.TOKEN_UNAVAILABLE, f"{err}; {why_not}") from None
            raise
    return out


def _token(ctx: OperatorContext, manifest: MultimodalModel) -> tuple[str | None, str]:
    """The Hub token the operator may use for this model, and — when there is one it may not
    use — why (said when the Hub refuses the anonymous read)."""
    ref = manifest.spec.model.token_secret_ref
    if ref is None:
        return None, ""
    namespace = manifest.metadata.namespace or "default"
    if ref.name not in ctx.config.hub_token_secrets:
        return None, (
            f"the operator may not read Secret {ref.name} (spec.model.tokenSecretRef): an "
            "administrator lists the Secrets it may read in the chart's hub.tokenSecrets"
        )
    value = ctx.kube().secret_value(namespace, ref.name, ref.key)
    if not value:
        return None, f"Secret {namespace}/{ref.name} has no key {ref.key!r}"
    return value, ""


def _from_config_map(ctx: OperatorContext, manifest: MultimodalModel) -> ModelProfile:
    """The model's profile from the ConfigMap its spec names (read on every plan: one GET)."""
    ref = manifest.spec.model.config_map_ref
    assert ref is not None
    namespace = manifest.metadata.namespace or "default"
    where = f"ConfigMap {namespace}/{ref.name} (spec.model.configMapRef)"
    from kubernetes.client.exceptions import ApiException

    try:
        data = ctx.kube().config_map_data(namespace, ref.name)
    except ApiException as err:
        if err.status != 403:
            raise
        raise HubError(
            HubReason.NO_CONFIG,
            f"{where}: the operator may not read ConfigMaps (an administrator grants it with "
            "the chart's hub.configMaps)",
        ) from None
    if data is None:
        raise HubError(HubReason.NO_CONFIG, f"{where} does not exist")
    try:
        files = parse_model_files(data, where)
        if not any(name in files for name in CONFIG_FILES):
            raise HubError(HubReason.NO_CONFIG, f"{where} has no config.json or params.json key")
        return profile_from_files(manifest.spec.model.id, files, origin="configmap")
    except ModelError as err:
        raise HubError(HubReason.UNREADABLE, str(err)) from None
