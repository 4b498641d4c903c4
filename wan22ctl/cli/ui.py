"""`wan22ctl ui`: wait until the VideoX-Fun Gradio UI answers, then print its URL.

Examples:
    wan22ctl up --stack videox-fun      # start the container (launcher inside starts the UI)
    wan22ctl ui                         # wait for the UI (model loading takes minutes), print the URL
    wan22ctl ui --timeout 60 --json

A container that stops, restarts, or does not answer within the timeout fails the command
(exit 1) with the container's last log lines.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from wan22ctl.cli.options import JsonOpt
from wan22ctl.cli.output import Output
from wan22ctl.errors import RunFailed, UserError
from wan22ctl.settings import load_cli_settings

TimeoutOpt = Annotated[int, typer.Option("--timeout", help="Seconds to wait for the UI to answer.")]


def _answers(url: str) -> int | None:
    """The HTTP status the URL answers with (any status below 500 means the server is up), or None."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code if exc.code < 500 else None
    except (OSError, urllib.error.URLError):
        return None


def _launch_event(kit) -> dict | None:
    """The launcher's `videox_launch` event from the container log (mode, model, port), if printed."""
    from wan22ctl.protocol import parse_event

    try:
        text = kit.logs(tail=200)
    except Exception:
        return None
    for line in reversed(text.splitlines()):
        event = parse_event(line.strip())
        if event and event.get("event") == "videox_launch":
            return event
    return None


def wait_for_ui(kit, url: str, timeout_s: float) -> int:
    """Poll `url` until it answers; RunFailed with the last log lines when the container stops,
    restarts, or the timeout passes. Returns the HTTP status."""
    from wan22ctl.docker.kit import ContainerStopped

    try:
        status = kit.poll(lambda: _answers(url), timeout_s)
    except ContainerStopped as stopped:
        raise RunFailed(
            f"the VideoX-Fun container {kit.name} stopped before its UI answered "
            f"({stopped.status}, exit code {stopped.exit_code}); last log lines:\n{stopped.last_logs}",
            fix="fix what the log says, then `wan22ctl up --stack videox-fun` (`wan22ctl logs --stack videox-fun` "
                "shows more)") from None
    if status is None:
        raise RunFailed(
            f"the VideoX-Fun UI did not answer at {url} within {timeout_s:.0f}s "
            f"(container {kit.name} is {kit.container.status}); last log lines:\n{kit.last_logs()}")
    return status


def ui(
    timeout: TimeoutOpt = 900,
    as_json: JsonOpt = False,
) -> None:
    """Wait until the VideoX-Fun UI answers HTTP, then print its URL."""
    import os

    from wan22ctl import catalog
    from wan22ctl.docker.kit import KitContainer
    from wan22ctl.plan.videox import ui_url

    if timeout < 0:
        raise UserError("--timeout must be 0 or more seconds")
    settings = load_cli_settings()
    kit = KitContainer.existing(settings, catalog.VIDEOX)
    url = ui_url(settings, os.environ.get("DOCKER_HOST"))
    out = Output(as_json)
    started = time.monotonic()
    if _answers(url) is None:
        out.note(f"waiting for the VideoX-Fun UI at {url} (up to {timeout}s; loading a model takes minutes)")
    status = wait_for_ui(kit, url, timeout)
    launch = _launch_event(kit) or {}
    data = {
        "url": url, "name": kit.name, "http_status": status, "waited_s": round(time.monotonic() - started, 1),
        "ui_mode": launch.get("ui_mode"), "model_path": launch.get("model_path"),
        "gpu_memory_mode": launch.get("gpu_memory_mode"),
    }

    def human(d: dict) -> None:
        if d["gpu_memory_mode"]:
            out.note(f"{d['ui_mode']} mode, model {d['model_path']}, GPU memory mode {d['gpu_memory_mode']}")
        out.say(f"VideoX-Fun UI ready: {d['url']}")

    out.result(data, human)


def register(app: typer.Typer) -> None:
    """Add `ui` to the root app."""
    app.command("ui")(ui)
