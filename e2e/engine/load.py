"""Bounded client load for a served model: OpenAI chat requests that carry images.

Every request goes to the URL the caller gives (a server on 127.0.0.1 or a sandbox pod address)
and has a timeout; ``concurrent_chats`` runs a fixed number of requests in threads and returns
when all have finished. Used by the engine tests and by ``python -m e2e.engine golden``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from e2e.engine.images import png_data_url


@dataclass(frozen=True)
class ChatResult:
    status: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    error: str = ""


def chat_body(
    model: str, images: list[str], text: str, max_tokens: int, ignore_eos: bool = True
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": url}} for url in images
    ]
    content.append({"type": "text", "text": text})
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        # random weights rarely emit the end token, but when they do the request ends early
        "ignore_eos": ignore_eos,
    }


def post_json(url: str, body: dict[str, Any], timeout: float = 120.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace")


def chat(
    base_url: str,
    model: str,
    images: list[str],
    text: str = "Describe the picture.",
    max_tokens: int = 16,
    timeout: float = 120.0,
) -> ChatResult:
    started = time.monotonic()
    status, answer = post_json(
        base_url + "/v1/chat/completions", chat_body(model, images, text, max_tokens), timeout
    )
    seconds = time.monotonic() - started
    if status != 200 or not isinstance(answer, dict):
        return ChatResult(status, 0, 0, seconds, error=str(answer)[:500])
    usage = answer.get("usage") or {}
    return ChatResult(
        status, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), seconds
    )


def concurrent_chats(
    base_url: str,
    model: str,
    requests: int,
    max_tokens: int,
    image_size: tuple[int, int] = (320, 240),
    images_per_request: int = 1,
    while_running: Callable[[], None] | None = None,
    timeout: float = 180.0,
) -> list[ChatResult]:
    """``requests`` chats at once, each with its own images (no two alike); ``while_running`` is
    called repeatedly (e.g. to scrape /metrics) until the last request has finished."""
    width, height = image_size
    # every image made before the first request goes, so the requests leave together
    images = [
        [
            png_data_url(width, height, seed=i * images_per_request + k)
            for k in range(images_per_request)
        ]
        for i in range(requests)
    ]
    done = threading.Event()
    with ThreadPoolExecutor(max_workers=requests) as pool:
        futures = [
            pool.submit(
                chat,
                base_url,
                model,
                images[i],
                f"Request {i}: describe the picture.",
                max_tokens,
                timeout,
            )
            for i in range(requests)
        ]
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            if all(f.done() for f in futures):
                done.set()
                break
            if while_running is not None:
                while_running()
            time.sleep(0.1)
        return [f.result(timeout=max(1.0, deadline - time.monotonic())) for f in futures]
