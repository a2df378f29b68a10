"""Writing a benchmark's section into a Markdown document (docs/benchmarks.md)."""

from __future__ import annotations

import re


def replace_section(text: str, heading: str, section: str) -> str:
    """``text`` with the level-2 section titled ``heading`` replaced by ``section`` (which
    starts with its own ``## heading`` line), or with ``section`` appended when there is none.
    The sections after it are kept."""
    lines = text.splitlines(keepends=True)
    title = re.compile(rf"^## {re.escape(heading)}\s*$")
    start = next((i for i, line in enumerate(lines) if title.match(line)), None)
    body = section.strip("\n") + "\n"
    if start is None:
        return text.rstrip("\n") + "\n\n" + body
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + after if after else "")
