"""The engine tier's scenarios: mmop's rendered argv for the examples, and KV-cache pressure.

``example_argv`` plans an examples/ manifest on the default inventory and returns the argv mmop
renders for its pods. ``PRESSURE_FLAGS`` shrink the engine to a 4,096-token KV cache;
``pressure`` sends concurrent image chats that need more than that and scrapes ``/metrics``
before, throughout and after, so a caller sees KV usage, queueing and preemptions rise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from e2e.engine.launcher import EngineServer
from e2e.engine.load import ChatResult, concurrent_chats

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLES = REPO / "examples"

# vLLM's CPU backend uses 128-token KV blocks: 32 blocks are a 4,096-token KV cache, two requests
# of the full 2,048-token length. Appended after mmop's argv (the last value of a flag wins).
CPU_BLOCK_TOKENS = 128
PRESSURE_KV_BLOCKS = 32
PRESSURE_FLAGS: tuple[str, ...] = (
    "--max-model-len=2048",
    "--max-num-seqs=8",
    f"--num-gpu-blocks-override={PRESSURE_KV_BLOCKS}",
)
PRESSURE_KV_TOKENS = PRESSURE_KV_BLOCKS * CPU_BLOCK_TOKENS
# Four requests, each with four 640×480 images (391 image tokens apiece under the example's
# pixel cap: ~1,660 prompt tokens) and 380 output tokens, need ~8,000 tokens of KV cache, twice
# what there is: two run, two queue, and the running ones preempt each other as they grow.
PRESSURE_REQUESTS = 4
PRESSURE_IMAGES = 4
PRESSURE_IMAGE_SIZE = (640, 480)
PRESSURE_MAX_TOKENS = 380


def example_argv(example: str) -> list[str]:
    """The vLLM argv mmop renders for ``examples/<example>`` (status.plan.args)."""
    from mmop.api import MultimodalModel
    from mmop.inventory import default_inventory
    from mmop.planner import plan
    from mmop.render import vllm_args

    manifest = MultimodalModel.model_validate(yaml.safe_load((EXAMPLES / example).read_text()))
    return vllm_args(plan(manifest, default_inventory()))


def example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.yaml"))


@dataclass
class PressureRun:
    before: tuple[float, str]  # (monotonic seconds, /metrics text)
    during: list[tuple[float, str]] = field(default_factory=list)
    after: tuple[float, str] = (0.0, "")
    results: list[ChatResult] = field(default_factory=list)
    seconds: float = 0.0


def pressure(
    server: EngineServer,
    model_name: str,
    requests: int = PRESSURE_REQUESTS,
    max_tokens: int = PRESSURE_MAX_TOKENS,
    images: int = PRESSURE_IMAGES,
    image_size: tuple[int, int] = PRESSURE_IMAGE_SIZE,
    scrape_interval: float = 0.25,
) -> PressureRun:
    """Concurrent image chats against ``server``; /metrics scraped before, during and after."""
    run = PressureRun(before=(time.monotonic(), server.metrics_text()))
    last = [0.0]

    def scrape() -> None:
        now = time.monotonic()
        if now - last[0] >= scrape_interval:
            last[0] = now
            run.during.append((now, server.metrics_text()))

    started = time.monotonic()
    run.results = concurrent_chats(
        server.url,
        model_name,
        requests,
        max_tokens,
        image_size=image_size,
        images_per_request=images,
        while_running=scrape,
    )
    run.seconds = time.monotonic() - started
    run.after = (time.monotonic(), server.metrics_text())
    return run
