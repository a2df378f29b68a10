"""The engine tier's scenarios: mmop's rendered argv for the examples, and KV-cache pressure.

``example_argv`` plans an examples/ manifest on the default inventory and returns the argv mmop
renders for its pods. ``PRESSURE_FLAGS`` shrink the engine to a 2,560-token KV cache;
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

# vLLM's CPU backend uses 128-token KV blocks, and vLLM keeps one block of the pool as its null
# block (vllm/v1/core/block_pool.py l. 187 at 0.32.0): 20 blocks are a 2,560-token KV cache of
# which 19 blocks (2,432 tokens) hold requests. Appended after mmop's argv (the last value of a
# flag wins).
CPU_BLOCK_TOKENS = 128
PRESSURE_KV_BLOCKS = 20
PRESSURE_FLAGS: tuple[str, ...] = (
    "--max-model-len=2048",
    "--max-num-seqs=8",
    f"--num-gpu-blocks-override={PRESSURE_KV_BLOCKS}",
)
PRESSURE_KV_TOKENS = PRESSURE_KV_BLOCKS * CPU_BLOCK_TOKENS
# Four requests, each with four 320×240 images (108 image tokens apiece under the example's pixel
# cap: 493 prompt tokens, 4 blocks) and 1,400 output tokens, grow to 15 blocks each. Any two
# running at once outgrow the 19 usable blocks, so vLLM must preempt whenever two overlap; and a
# request that arrives while another runs is admitted at once (4 blocks stay free while the other
# holds at most 15, all it ever needs), so however the CPU spaces the arrivals, two overlap. (The
# earlier shape, 1,660-token prompts and 380 output tokens in 32 blocks, preempted only when two
# requests started within ~60 decode steps of each other; a loaded CPU sometimes spaced them
# further.) Seen here: 3-5 preemptions per run, KV usage up to 0.95, ~17 s per run.
PRESSURE_REQUESTS = 4
PRESSURE_IMAGES = 4
PRESSURE_IMAGE_SIZE = (320, 240)
PRESSURE_MAX_TOKENS = 1400


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
