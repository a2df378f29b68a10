"""Models outside the catalog, read from the Hub with the real ``huggingface_hub`` client against
a Hub stand-in on 127.0.0.1 serving published config files (the catalog's copies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.hub import HubStandIn, Repo

from mmop.api import MultimodalModel
from mmop.cli import main
from mmop.hub import MAX_BACKOFF_SECONDS, HubError, HubReason, HubResolver, fetch
from mmop.inventory import default_inventory
from mmop.model import CATALOG_MODELS_DIR, load_profile
from mmop.planner import plan
from mmop.status import plan_status

BASE = "Qwen/Qwen2-VL-2B-Instruct"
FINE_TUNE = "acme/qwen2-vl-2b-receipts"  # a fine-tune: the base's published configs


def repo(repo_id: str, base: str = BASE, **kwargs: Any) -> Repo:
    return Repo.from_dir(repo_id, CATALOG_MODELS_DIR / base, **kwargs)


def test_a_fine_tune_reads_as_its_base_with_the_commit_it_was_read_at(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(repo(FINE_TUNE))
    got = fetch(FINE_TUNE, None, endpoint=hub.url, cache_dir=tmp_path)
    assert got.commit == hub.repos[FINE_TUNE].revisions["main"]
    assert sorted(got.files) == ["config.json", "preprocessor_config.json"]  # no source.yaml
    profile, base = got.profile(), load_profile(BASE)
    assert (profile.origin, profile.commit, profile.id) == ("hub", got.commit, FINE_TUNE)
    assert profile.family == base.family and profile.params == base.params
    assert profile.vision == base.vision and profile.text == base.text


def test_a_revision_is_read_at_its_own_commit(hub: HubStandIn, tmp_path: Path) -> None:
    hub.add(repo(FINE_TUNE, revisions={"v1": "1" * 40}))
    assert fetch(FINE_TUNE, "v1", endpoint=hub.url, cache_dir=tmp_path).commit == "1" * 40
    with pytest.raises(HubError) as err:
        fetch(FINE_TUNE, "v2", endpoint=hub.url, cache_dir=tmp_path)
    assert err.value.reason == HubReason.REVISION_NOT_FOUND and "'v2'" in str(err.value)


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, HubReason.GATED), ("hf_wrong", HubReason.GATED), ("hf_accepted", None)],
)
def test_a_gated_model_needs_a_token_that_accepted_its_license(
    hub: HubStandIn, tmp_path: Path, token: str | None, reason: HubReason | None
) -> None:
    hub.add(repo("acme/gated", gated=True, tokens=frozenset({"hf_accepted"})))
    if reason is None:
        assert fetch("acme/gated", None, endpoint=hub.url, token=token, cache_dir=tmp_path)
        return
    with pytest.raises(HubError) as err:
        fetch("acme/gated", None, endpoint=hub.url, token=token, cache_dir=tmp_path)
    assert err.value.reason == reason and "accept its license" in str(err.value)
    assert token is None or token not in str(err.value)  # the token is never in a message


def test_missing_private_and_non_model_repositories_say_what_is_wrong(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(repo("acme/private", private=True, tokens=frozenset({"hf_team"})))
    hub.add(Repo("acme/dataset-like", {"README.md": b"# not a model"}))
    for model_id, token, reason in [
        ("acme/nothing", None, HubReason.NOT_FOUND),
        ("acme/nothing", "hf_team", HubReason.NOT_FOUND),
        ("acme/private", None, HubReason.NOT_FOUND),
        ("acme/dataset-like", None, HubReason.NO_CONFIG),
    ]:
        with pytest.raises(HubError) as err:
            fetch(model_id, None, endpoint=hub.url, token=token, cache_dir=tmp_path)
        assert err.value.reason == reason, (model_id, err.value)
    assert fetch("acme/private", None, endpoint=hub.url, token="hf_team", cache_dir=tmp_path)


def test_a_config_that_is_not_json_is_unreadable_not_a_crash(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(Repo("acme/broken", {"config.json": b"{not json"}))
    with pytest.raises(HubError) as err:
        fetch("acme/broken", None, endpoint=hub.url, cache_dir=tmp_path)
    assert err.value.reason == HubReason.UNREADABLE and "config.json is not JSON" in str(err.value)
    hub.add(Repo("acme/odd", {"config.json": json.dumps({"model_type": "teapot"}).encode()}))
    with pytest.raises(HubError) as err:
        fetch("acme/odd", None, endpoint=hub.url, cache_dir=tmp_path).profile()
    assert err.value.reason == HubReason.UNREADABLE and "teapot" in str(err.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_resolver_asks_once_and_backs_off_while_the_hub_is_down(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(repo(FINE_TUNE))
    clock = Clock()
    resolver = HubResolver(endpoint=hub.url, cache_dir=tmp_path, clock=clock)
    info = f"GET /api/models/{FINE_TUNE}"

    hub.down = True
    with pytest.raises(HubError) as err:
        resolver.resolve(FINE_TUNE, None)
    assert err.value.reason == HubReason.UNREACHABLE and "503" in str(err.value)
    assert err.value.retryable
    with pytest.raises(HubError):  # within the backoff: the cached answer, no request
        resolver.resolve(FINE_TUNE, None)
    assert hub.requests[info] == 1
    clock.now += 15.0
    with pytest.raises(HubError):  # backoff over: asked again, still down; the backoff doubles
        resolver.resolve(FINE_TUNE, None)
    assert hub.requests[info] == 2
    clock.now += 20.0
    with pytest.raises(HubError):
        resolver.resolve(FINE_TUNE, None)
    assert hub.requests[info] == 2

    hub.down = False
    clock.now += 10.0
    first = resolver.resolve(FINE_TUNE, None)
    again = resolver.resolve(FINE_TUNE, None)
    assert first is again and hub.requests[info] == 3  # a success is kept


def test_a_refusal_someone_must_fix_is_asked_again_after_the_longest_backoff(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(repo("acme/gated", gated=True, tokens=frozenset({"hf_ok"})))
    clock = Clock()
    resolver = HubResolver(endpoint=hub.url, cache_dir=tmp_path, clock=clock)
    with pytest.raises(HubError):
        resolver.resolve("acme/gated", None)
    clock.now += MAX_BACKOFF_SECONDS - 1
    with pytest.raises(HubError):
        resolver.resolve("acme/gated", None)
    assert hub.requests["GET /api/models/acme/gated"] == 1
    # Another token is another question, asked at once.
    assert resolver.resolve("acme/gated", None, token="hf_ok").commit


def test_an_unreachable_endpoint_is_retryable_and_names_no_token(tmp_path: Path) -> None:
    with pytest.raises(HubError) as err:
        fetch(FINE_TUNE, None, endpoint="http://127.0.0.1:9", token="hf_secret", timeout=2,
              cache_dir=tmp_path)  # fmt: skip
    assert err.value.reason == HubReason.UNREACHABLE and err.value.retryable
    assert "hf_secret" not in str(err.value)


# ------------------------------------------------------------------------------ the planner


def manifest(model_id: str) -> MultimodalModel:
    text = (Path(__file__).resolve().parents[2] / "examples" / "qwen2.5-vl-7b.yaml").read_text()
    data = yaml.safe_load(text)
    data["spec"]["model"] = {"id": model_id}
    return MultimodalModel.model_validate(data)


def test_a_hub_model_plans_as_its_base_and_status_says_where_it_came_from(
    hub: HubStandIn, tmp_path: Path
) -> None:
    hub.add(repo(FINE_TUNE))
    profile = HubResolver(endpoint=hub.url, cache_dir=tmp_path).resolve(FINE_TUNE, None).profile()
    inventory = default_inventory()
    ours = plan(manifest(FINE_TUNE), inventory, resolved={FINE_TUNE: profile})
    base = plan(manifest(BASE), inventory)
    same = ("gpu", "tensor_parallel_size", "replicas", "quantization", "max_model_len",
            "max_tokens_per_image", "cost_per_hour_usd")  # fmt: skip
    assert {k: getattr(ours, k) for k in same} == {k: getattr(base, k) for k in same}
    assert ours.model == FINE_TUNE
    assert ours.memory.model_dump(exclude={"model"}) == base.memory.model_dump(exclude={"model"})
    status = plan_status(ours, "hash")
    assert status["modelSource"] == "hub" and status["modelCommit"] == profile.commit
    assert plan_status(base, "hash")["modelSource"] == "catalog"
    assert "modelCommit" not in plan_status(base, "hash")


# ---------------------------------------------------------------------------------- the CLI


def test_mmop_estimate_reads_a_hub_model_like_the_catalog_one(
    hub: HubStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.add(repo(FINE_TUNE))
    answers = []
    for model_id in (FINE_TUNE, BASE):
        assert main(["estimate", model_id, "--gpu", "L4", "--json"]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    ours, base = answers
    assert ours.pop("model") == FINE_TUNE and base.pop("model") == BASE
    assert ours == base


def test_mmop_estimate_of_a_gated_model_uses_the_users_token(
    hub: HubStandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(repo("acme/gated", gated=True, tokens=frozenset({"hf_mine"})))
    assert main(["estimate", "acme/gated", "--gpu", "L4", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["reason"] == "GatedModel" and "$HF_TOKEN" in error["error"]
    monkeypatch.setenv("HF_TOKEN", "hf_mine")
    assert main(["estimate", "acme/gated", "--gpu", "L4", "--json"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["estimate", "acme/gated", "--gpu", "L4"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# ------------------------------------------------------------------------ the generic path


@pytest.mark.parametrize(
    ("config", "words"),
    [
        # An unknown model type that does not state its size: no other family's defaults.
        ({"model_type": "teapot", "architectures": ["TeapotForCausalLM"]}, "lacks hidden_size"),
        ({"model_type": "teapot", "hidden_size": 2048, "num_attention_heads": 16},
         "lacks num_hidden_layers, vocab_size"),
        # An unknown multimodal family whose language model does not state its size.
        ({"model_type": "teapot_vl", "vision_config": {"hidden_size": 1024},
          "text_config": {"model_type": "teapot"}}, "lacks hidden_size"),
        # … or whose tower cannot be sized (no layer count).
        ({"model_type": "teapot_vl", "vision_config": {"hidden_size": 1024},
          "text_config": {"model_type": "llama"}}, "cannot bound its encoder"),
    ],
)  # fmt: skip
def test_a_config_the_generic_path_cannot_size_gets_no_verdict(
    config: dict[str, Any], words: str
) -> None:
    from mmop.model import ModelError, build_profile

    with pytest.raises(ModelError) as err:
        build_profile("acme/unknown", config, {})
    assert words in str(err.value) and "no verdict" in str(err.value)


def test_an_unknown_text_model_type_that_states_its_size_is_read() -> None:
    from mmop.model import build_profile

    config = {"model_type": "teapot", "hidden_size": 2048, "num_hidden_layers": 24,
              "num_attention_heads": 16, "vocab_size": 32000, "intermediate_size": 5632}  # fmt: skip
    profile = build_profile("acme/teapot", config, {})
    assert (profile.text.num_layers, profile.text.hidden_size) == (24, 2048)


def test_a_gated_read_with_one_token_never_stands_in_for_a_read_without_it(
    hub: HubStandIn, tmp_path: Path
) -> None:
    """The client keeps files by commit on disk and serves them without asking; the operator
    shares that cache between models, so the licence check must be asked each time."""
    hub.add(repo("acme/gated", gated=True, tokens=frozenset({"hf_ok"})))
    assert fetch("acme/gated", None, endpoint=hub.url, token="hf_ok", cache_dir=tmp_path)
    with pytest.raises(HubError) as err:
        fetch("acme/gated", None, endpoint=hub.url, cache_dir=tmp_path)
    assert err.value.reason == HubReason.GATED
