"""`wan22ctl-agent health`: the image's HEALTHCHECK — the kit is importable and the mounts usable."""

from __future__ import annotations

import os
import sys

from wan22ctl import paths


def check() -> list[str]:
    """Problems that make the container unhealthy (empty when healthy)."""
    problems = []
    for path in (paths.CONTAINER_OUTPUT_DIR, paths.CONTAINER_CHECKPOINT_DIR):
        if not os.path.isdir(path):
            problems.append(f"{path} is missing")
        elif not os.access(path, os.W_OK):
            problems.append(f"{path} is not writable")
    return problems


def run(args) -> int:
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print("healthy")
    return 1 if problems else 0


def add_parser(sub) -> None:
    p = sub.add_parser("health", help="exit 0 when the container is usable")
    p.set_defaults(func=run)
