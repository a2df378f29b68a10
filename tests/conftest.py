"""Shared test configuration."""

from collections.abc import Iterator

import pytest
from e2e.hub import HubStandIn
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _no_real_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never reach the real Hugging Face Hub: anything that would asks 127.0.0.1:9
    (nothing listens there) unless a test points HF_ENDPOINT at a stand-in; no user token;
    downloads land in a temporary directory."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """A Hub stand-in on 127.0.0.1 (no repositories yet), HF_ENDPOINT pointing at it."""
    with HubStandIn().serve() as stand_in:
        monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
        yield stand_in
