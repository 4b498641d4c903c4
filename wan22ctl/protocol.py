"""What the container side and the host agree on: the event-line protocol and the exit codes.

The agent prints ordinary log lines as they are, and structured events as one line each:
`@@wan22ctl {"event": "...", ...}`. The host parses these out of the exec stream and renders
them (progress bars, summaries); `--local` runs feed the same events to the same renderer.
Both sides import this module, so it imports only the standard library (Wan's own Python
process loads it through `wan22ctl.agent.wanrun` and `speedups`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

PREFIX = "@@wan22ctl "

# `wan22ctl-agent generate` exit codes the host reads besides 0 and 1.
EXIT_BUSY = 75  # EX_TEMPFAIL: the GPUs are locked by another run and --no-wait was given
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM stopped the run; nothing partial is left


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
