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

from wan22ctl.cli.common import JsonOpt, console, emit, settings_from
from wan22ctl.errors import EnvError, RunFailed, UserError

TimeoutOpt = Annotated[int, typer.Option("--timeout", help="Seconds to wait for the UI to answer.")]


def prepare_up(client, settings, out) -> None:
    """Host-side steps before `up --stack videox-fun` creates the container.

    VideoX-Fun's models/ subfolders are made here, by the user, so they are not root-owned;
    /dev/shm larger than the Docker host's memory gets a warning (Docker itself accepts it).
    """
    import os

    from wan22ctl.plan.videox import MODEL_SUBDIRS, shm_warning

    for sub in MODEL_SUBDIRS:
        try:
            os.makedirs(os.path.join(settings["VIDEOX_MODELS_DIR"], sub), exist_ok=True)
        except PermissionError:
            raise EnvError(f"cannot create {settings['VIDEOX_MODELS_DIR']}/{sub} (permission denied)",
                           fix=f"sudo mkdir -p {settings['VIDEOX_MODELS_DIR']} && sudo chown $USER "
                               f"{settings['VIDEOX_MODELS_DIR']}, or set VIDEOX_MODELS_DIR to a folder you own") from None
    warning = shm_warning(settings["VIDEOX_SHM_SIZE"], (client.info() or {}).get("MemTotal"))
    if warning:
        out.print(f"warning: {warning}", markup=False)


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


def _launch_event(container) -> dict | None:
    """The launcher's `videox_launch` event from the container log (mode, model, port), if printed."""
    from wan22ctl.protocol import parse_event

    try:
        text = container.logs(tail=200).decode("utf-8", "replace")
    except Exception:
        return None
    for line in reversed(text.splitlines()):
        event = parse_event(line.strip())
        if event and event.get("event") == "videox_launch":
            return event
    return None


def wait_for_ui(container, url: str, timeout_s: float) -> int:
    """Poll `url` until it answers; RunFailed with the last log lines when the container stops,
    restarts, or the timeout passes. Returns the HTTP status."""
    from wan22ctl.docker.containers import last_logs

    deadline = time.monotonic() + timeout_s
    container.reload()
    restarts = container.attrs.get("RestartCount", 0)
    while True:
        container.reload()
        state = container.attrs.get("State", {})
        if container.status not in ("running", "created") or container.attrs.get("RestartCount", 0) > restarts:
            raise RunFailed(
                f"the VideoX-Fun container {container.name} stopped before its UI answered "
                f"({container.status}, exit code {state.get('ExitCode')}); last log lines:\n{last_logs(container)}",
                fix="fix what the log says, then `wan22ctl up --stack videox-fun` (`wan22ctl logs --stack videox-fun` shows more)")
        status = _answers(url)
        if status is not None:
            return status
        if time.monotonic() > deadline:
            raise RunFailed(
                f"the VideoX-Fun UI did not answer at {url} within {timeout_s:.0f}s "
                f"(container {container.name} is {container.status}); last log lines:\n{last_logs(container)}")
        time.sleep(1)


def ui(
    timeout: TimeoutOpt = 900,
    as_json: JsonOpt = False,
) -> None:
    """Wait until the VideoX-Fun UI answers HTTP, then print its URL."""
    import os

    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect
    from wan22ctl.plan.videox import ui_url

    if timeout < 0:
        raise UserError("--timeout must be 0 or more seconds")
    settings = settings_from()
    name = settings["VIDEOX_CONTAINER_NAME"]
    container = containers.find(connect(), name)
    if container is None:
        raise UserError(f"the VideoX-Fun container {name} does not exist", fix="run `wan22ctl up --stack videox-fun` first")
    url = ui_url(settings, os.environ.get("DOCKER_HOST"))
    out = console(stderr=True)
    started = time.monotonic()
    if _answers(url) is None:
        out.print(f"waiting for the VideoX-Fun UI at {url} (up to {timeout}s; loading a model takes minutes)")
    status = wait_for_ui(container, url, timeout)
    launch = _launch_event(container) or {}
    data = {
        "url": url, "name": name, "http_status": status, "waited_s": round(time.monotonic() - started, 1),
        "ui_mode": launch.get("ui_mode"), "model_path": launch.get("model_path"),
        "gpu_memory_mode": launch.get("gpu_memory_mode"),
    }

    def human(d: dict) -> None:
        if d["gpu_memory_mode"]:
            out.print(f"{d['ui_mode']} mode, model {d['model_path']}, GPU memory mode {d['gpu_memory_mode']}",
                      markup=False)
        print(f"VideoX-Fun UI ready: {d['url']}")

    emit(data, as_json, human)


def register(app: typer.Typer) -> None:
    """Add `ui` to the root app."""
    app.command("ui")(ui)
