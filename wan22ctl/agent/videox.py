"""`wan22ctl-agent ui` / `ui-health`: the VideoX-Fun container's launcher and health check.

`ui` reads the container's environment (set by `wan22ctl.plan.videox`), measures the first
GPU with nvidia-smi when VIDEOX_GPU_MEMORY_MODE=auto, makes VideoX-Fun's models/ subfolders,
fetches VideoX-Fun at VIDEOX_REF when the image lacks it (the pulled PAI image has only the
Python stack), prints the launch plan, and replaces itself with the image's Python running
`videox_app.py` — which calls VideoX-Fun's own `ui`/`ui_host` entry points. No VideoX-Fun file
is edited. WAN22_VIDEOX_APP names another app script (tests use a stand-in that serves HTTP).

Runs with the image's Python and only the standard library, so it also works where the kit's
dependencies are not installed:  python3 -m wan22ctl.agent.videox ui
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from wan22ctl.protocol import emit
from wan22ctl.errors import EnvError, UserError
from wan22ctl.plan.videox import MODEL_SUBDIRS, UI_CONTAINER_PORT, model_dir, plan_ui_launch

APP_ENV = "WAN22_VIDEOX_APP"
LAUNCH_ENV = "WAN22_VIDEOX_LAUNCH"


def first_gpu_memory_mib() -> int | None:
    """Total memory of the first visible GPU (the one VideoX-Fun uses), or None when unknown."""
    from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, parse_nvidia_smi

    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *NVIDIA_SMI_QUERY[1:]], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    gpus = parse_nvidia_smi(out.stdout) if out.returncode == 0 else []
    return round(gpus[0].memory_gb * 1024) if gpus else None


def model_present(path: str) -> bool:
    return os.path.isdir(path) and any(os.scandir(path))


def ensure_checkout(videox_dir: str, repo: str, ref: str) -> None:
    """Fetch VideoX-Fun at `ref` into `videox_dir` unless it is already there.

    `git clone` refuses the folder because models/ is already mounted in it, so the checkout
    is init + shallow fetch of the one commit + checkout.
    """
    if os.path.isdir(os.path.join(videox_dir, "videox_fun")):
        return
    git = shutil.which("git")
    if not git:
        raise EnvError(f"VideoX-Fun is not in the image ({videox_dir}) and git is not available to fetch it",
                       fix="set VIDEOX_IMAGE_MODE=build to build the videox-fun image from ./Dockerfile")
    print(f"VideoX-Fun is not in the image; fetching {repo} at {ref}", flush=True)
    for argv in (["init", "-q", videox_dir],
                 ["-C", videox_dir, "fetch", "-q", "--depth", "1", repo, ref],
                 ["-C", videox_dir, "checkout", "-q", "--detach", "FETCH_HEAD"]):
        result = subprocess.run([git, *argv], capture_output=True, text=True)
        if result.returncode != 0:
            raise EnvError(f"fetching VideoX-Fun failed: git {' '.join(argv)}: {result.stderr.strip()}",
                           fix="check the container's network access to GitHub, or set VIDEOX_IMAGE_MODE=build")


def run_ui(args) -> None:
    """Plan the UI launch from the environment and exec the app with it (never returns)."""
    env = dict(os.environ)
    videox_dir = env.get("VIDEOX_DIR", "/workspace/VideoX-Fun")
    models = os.path.join(videox_dir, "models")
    for sub in MODEL_SUBDIRS:
        os.makedirs(os.path.join(models, sub), exist_ok=True)
    mib = first_gpu_memory_mib() if env.get("VIDEOX_GPU_MEMORY_MODE", "auto") == "auto" else None
    try:
        launch = plan_ui_launch(env, mib, model_present(model_dir(env)))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    os.makedirs(launch.savedir, exist_ok=True)
    app = env.get(APP_ENV)
    if not app:
        ensure_checkout(videox_dir, env.get("VIDEOX_REPO", ""), env.get("VIDEOX_REF", ""))
        app = str(Path(__file__).with_name("videox_app.py"))
    # The image's Python (torch, gradio): python3 on PATH, or VIDEOX_PYTHON for images that differ.
    python = shutil.which(env.get("VIDEOX_PYTHON") or "python3") or sys.executable
    print(f"VideoX-Fun UI: {launch.ui_mode} mode, model {launch.model_path} ({launch.model_type}), "
          f"GPU memory mode {launch.gpu_memory_mode} ({launch.gpu_memory_reason}), "
          f"will listen on {launch.server_name}:{launch.server_port}", flush=True)
    emit("videox_launch", **launch.to_dict())
    os.chdir(launch.videox_dir)
    # exec, not a child: the app becomes the container's main process and gets Docker's signals.
    os.execve(python, [python, app], {**env, LAUNCH_ENV: json.dumps(launch.to_dict())})


def run_health(args) -> int:
    """Exit 0 when the UI answers HTTP inside the container."""
    port = os.environ.get("VIDEOX_SERVER_PORT", str(UI_CONTAINER_PORT))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=4) as resp:
            print(f"UI answers on port {port} (HTTP {resp.status})")
            return 0
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            print(f"UI answers on port {port} (HTTP {exc.code})")
            return 0
        print(f"UI on port {port} answers HTTP {exc.code}", file=sys.stderr)
    except (OSError, urllib.error.URLError) as exc:
        print(f"UI not answering on port {port}: {exc}", file=sys.stderr)
    return 1


def add_parser(sub) -> None:
    """Register `ui` and `ui-health` on wan22ctl-agent."""
    p = sub.add_parser("ui", help="start VideoX-Fun's Gradio UI (the videox-fun container's command)")
    p.set_defaults(func=run_ui)
    p = sub.add_parser("ui-health", help="exit 0 when the VideoX-Fun UI answers HTTP")
    p.set_defaults(func=run_health)


def main(argv: list[str] | None = None) -> None:
    """`python3 -m wan22ctl.agent.videox ...`: these subcommands without the rest of the agent."""
    from wan22ctl.errors import Wan22Error

    parser = argparse.ArgumentParser(prog="wan22ctl-agent", description="VideoX-Fun launcher")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except Wan22Error as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
