"""Integration tests against a real local control plane (the e2e sandbox)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.sandbox import Sandbox, SandboxState
from e2e.waiting import wait_for


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxState]:
    box = Sandbox(f"pytest-{os.getpid()}")
    state = box.up(timeout=180)
    try:
        yield state
    finally:
        box.down(quiet=True)


@pytest.fixture(scope="session")
def api_client(sandbox: SandboxState) -> Any:
    from kubernetes import config

    return config.new_client_from_config(sandbox.kubeconfig)


@pytest.fixture
def namespace(api_client: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        f"the default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)
