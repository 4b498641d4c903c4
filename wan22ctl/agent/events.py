"""The line protocol between the container side and the host.

The agent prints ordinary log lines as they are, and structured events as one line each:
`@@wan22ctl {"event": "...", ...}`. The host parses these out of the exec stream and renders
them (progress bars, summaries); `--local` runs feed the same events to the same renderer.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PREFIX = "@@wan22ctl "


def format_event(event: str, **fields: Any) -> str:
    return PREFIX + json.dumps({"event": event, **fields}, default=str, separators=(",", ":"))


def emit(event: str, **fields: Any) -> None:
    """Write one event line to stdout and flush, so the host sees it at once."""
    sys.stdout.write(format_event(event, **fields) + "\n")
    sys.stdout.flush()


def parse_event(line: str) -> dict | None:
    """The event in a line, or None for an ordinary log line."""
    if not line.startswith(PREFIX):
        return None
    try:
        return json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
