"""Container lifecycle: `up`, `down`, `status`, `attach`, `logs`, `shell`, `build`, `pull`, `push`, `config`.

Examples:
    wan22ctl up                         # build/pull if needed, start, wait until healthy
    wan22ctl up --stack videox-fun      # the VideoX-Fun UI container
    wan22ctl up --dry-run --json        # the container spec, nothing started
    wan22ctl status --json
    wan22ctl down                       # checkpoints and outputs stay on the host
    wan22ctl config                     # every setting, its value and where it came from
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from wan22ctl import catalog
from wan22ctl.cli.options import DryRunOpt, JsonOpt, StackOpt
from wan22ctl.cli.output import Output
from wan22ctl.errors import EnvError, UserError
from wan22ctl.settings import load_cli_settings

# --------------------------------------------------------------------------- up / down


def up(
    stack: StackOpt = "main",
    build: Annotated[bool, typer.Option("--build", help="Build the image first, whatever IMAGE_MODE says.")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="Pull the image first, whatever IMAGE_MODE says.")] = False,
    recreate: Annotated[bool, typer.Option("--recreate", help="Recreate the container even if it matches.")] = False,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="Override GPUS (all, none, a count, device=0,1).")] = None,
    wait: Annotated[int, typer.Option("--wait", help="Seconds to wait for the container to be healthy (0: don't).")] = 120,
    serve: Annotated[bool, typer.Option("--serve", help="Run the resident server for SERVER_TASK, published on SERVER_HOST:SERVER_PORT.")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build or pull the image when needed, then create and start the container."""
    from wan22ctl.docker import images
    from wan22ctl.docker.client import connect
    from wan22ctl.plan.container import plan_container, plan_serve_container

    the_stack = catalog.stack(stack)
    if build and pull:
        raise UserError("--build and --pull exclude each other")
    settings = load_cli_settings({"GPUS": gpus})
    spec = plan_serve_container(settings, the_stack) if serve else plan_container(settings, the_stack)
    if serve and settings["SERVER_PRESET"]:
        _require_preset_loras(settings)
    out = Output(as_json)
    if dry_run:  # read-only; without a Docker daemon the plan says the local image was not checked
        try:
            client = connect()
        except EnvError:
            client = None
        image_plan = images.plan_for(client, settings, the_stack, force_build=build, force_pull=pull)
        data = {"container": spec.to_dict(), "image": image_plan.to_dict()}
        out.result(data, lambda d: print(json.dumps(d, indent=2, sort_keys=True, default=str)))
        return

    from wan22ctl.docker.kit import KitContainer, prepare_host

    if the_stack.preflight:
        from wan22ctl.doctor import require  # doctor's cheap checks (daemon API, host folders), before any build

        require(settings, "up")
    client = connect()
    _ensure_image(out, client, settings, images.plan_for(client, settings, the_stack, force_build=build,
                                                         force_pull=pull))
    for warning in prepare_host(client, settings, the_stack, serve):
        out.warn(warning)
    kit, result = KitContainer.up(client, spec, the_stack, recreate=recreate)
    _say_done(out, spec.name, result)
    status = "skipped"
    if the_stack.wait_healthy and wait > 0:
        status = kit.wait_healthy(wait)
        out.say(f"{spec.name} is {status if status != 'none' else 'running'}")
    out.result({"action": result.action, "changes": result.changes, "name": spec.name,
                "container_id": result.container_id, "health": status},
               lambda _: out.say(_next_step(settings, the_stack, serve, spec.name)))


def _require_preset_loras(settings) -> None:
    """SERVER_PRESET's catalog LoRAs are downloaded: else one line naming the download, before the
    image or the container (the server would stop at its load with the same line in its log)."""
    from wan22ctl.hub.state import model_state

    from wan22ctl.plan.container import server_preset_lora

    key = server_preset_lora(settings)
    if model_state(catalog.MODEL_BY_KEY[key], settings.checkpoint_dir)[0] != "complete":
        raise UserError(f"SERVER_PRESET={settings['SERVER_PRESET']} needs the {key} LoRAs, which are not downloaded "
                        f"in {settings.checkpoint_dir}", fix=f"run: wan22ctl download {key}")


def _say_done(out: Output, name: str, result) -> None:
    """What `up` did to the container, and what changed when it was recreated."""
    if result.action == "unchanged":
        out.say(f"{name} is already running with this configuration; nothing to do")
    elif result.action == "recreated":
        out.say(f"{name} recreated; changed:")
        for line in result.changes:
            out.say(f"  {line}")
    else:
        out.say(f"{name} {result.action}")


def _next_step(settings, stack: catalog.Stack, serve: bool, name: str) -> str:
    if serve:
        from wan22ctl.server_client import server_url

        return f"server: {server_url(settings)} (loading {settings.server_task}; `wan22ctl jobs`, `wan22ctl logs -f`)"
    return stack.next_step.format(name=name)


def _ensure_image(out: Output, client, settings, image_plan) -> None:
    """Build or pull per the image plan; nothing when the image is present and current."""
    from wan22ctl.docker import images

    if image_plan.action == "none":
        return
    if image_plan.action == "build":
        out.say(f"building {image_plan.build.tag} from BASE_IMAGE={image_plan.build.buildargs['BASE_IMAGE']} "
                f"({image_plan.reason})")
        _run_build(out, client, image_plan.build)
    else:
        out.say(f"pulling {image_plan.ref} ({image_plan.reason})")
        _run_pull(out, client, image_plan.ref, images.auth_config(settings.registry_username, settings.registry_password))


def _run_build(out: Output, client, build_plan) -> None:
    from wan22ctl.docker import images

    images.build_image(client, build_plan, out.say)
    out.say(f"built {build_plan.tag}")


def _run_pull(out: Output, client, ref: str, auth) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from wan22ctl.docker import images

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=out.console, transient=False) as progress:
        tasks: dict[str, int] = {}

        def on_item(item: dict) -> None:
            layer = item.get("id")
            detail = item.get("progressDetail") or {}
            if not layer or item.get("status", "").startswith(("Pulling from", "Digest", "Status")):
                return
            if layer not in tasks:
                tasks[layer] = progress.add_task(f"{layer}: {item.get('status', '')}", total=None)
            total, current = detail.get("total"), detail.get("current")
            progress.update(tasks[layer], description=f"{layer}: {item.get('status', '')}",
                            total=total or None, completed=current or 0)
            if item.get("status") in ("Pull complete", "Already exists"):
                t = progress.tasks[tasks[layer]].total or 1
                progress.update(tasks[layer], total=t, completed=t)

        images.pull_image(client, ref, auth, on_item)
    out.say(f"pulled {ref}")


def down(stack: StackOpt = "main", as_json: JsonOpt = False) -> None:
    """Stop and remove the container. Checkpoints, outputs and the HF cache stay on the host."""
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect
    from wan22ctl.plan.container import container_name

    the_stack = catalog.stack(stack)
    name = container_name(load_cli_settings(), the_stack)
    removed = containers.remove(connect(), name)
    out = Output(as_json)
    out.result({"name": name, "removed": removed},
               lambda _: out.say(f"{name} removed" if removed else f"{name} is not there; nothing to do"))


def status(
    stack: Annotated[Optional[str], typer.Option("--stack", help="Only this stack (default: both).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Image and digest, state, health, GPUs the container sees, and mounts, for each stack."""
    from wan22ctl.docker.client import connect
    from wan22ctl.docker.kit import KitContainer
    from wan22ctl.plan.container import container_name
    from wan22ctl.plan.videox import ui_url

    settings = load_cli_settings()
    client = connect()
    report = []
    for s in [catalog.stack(stack)] if stack else list(catalog.STACKS.values()):
        kit = KitContainer.find(settings, s, client)
        if kit is None:
            report.append({"stack": s.name, "name": container_name(settings, s), "state": "absent"})
            continue
        info = kit.describe()
        info["stack"] = s.name
        info["gpus_visible"] = [g.to_dict() for g in kit.gpus_seen()] if info["state"] == "running" else []
        if s is catalog.VIDEOX:
            info["url"] = ui_url(settings)
        report.append(info)
    out = Output(as_json)
    out.result({"containers": report}, lambda d: _render_status(out, d))


def _render_status(out: Output, data: dict) -> None:
    rows = []
    for c in data["containers"]:
        gpus = ", ".join(f"{g['index']}:{g['name']} {g['memory_gb']:.0f}GB" for g in c.get("gpus_visible", [])) or "-"
        mounts = "\n".join(f"{m['source']} -> {m['target']}" for m in c.get("mounts", [])) or "-"
        url = c.get("url", "-") if c["state"] == "running" else "-"
        rows.append((c["stack"], c["name"], c["state"], c.get("health", "-"), str(c.get("image", "-")), gpus, mounts,
                     url))
    out.table(("stack", "name", "state", "health", "image", "GPUs", "mounts", "url"), rows)


# --------------------------------------------------------------------------- interactive


def _docker_cli() -> str:
    import shutil

    exe = shutil.which("docker")
    if not exe:
        raise UserError("the docker command-line client is not on PATH (needed for interactive sessions)",
                        fix="install the Docker CLI, or use `docker exec -it` from another host")
    return exe


def _running_name(stack: str) -> str:
    from wan22ctl.docker.kit import KitContainer

    return KitContainer.running(load_cli_settings(), catalog.stack(stack)).name


def attach(stack: StackOpt = "main") -> None:
    """Attach to the container's shell (same as `docker attach`; detach with Ctrl-P Ctrl-Q)."""
    name = _running_name(stack)
    os.execvp(_docker_cli(), ["docker", "attach", name])


def shell(stack: StackOpt = "main") -> None:
    """Open a new interactive shell in the container (`docker exec -it NAME bash`)."""
    name = _running_name(stack)
    os.execvp(_docker_cli(), ["docker", "exec", "-it", name, "/bin/bash"])


def logs(
    stack: StackOpt = "main",
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end (0: all).")] = 200,
) -> None:
    """Print the container's log (as `docker logs` does: the container's own bytes, unfiltered)."""
    from wan22ctl.docker.kit import KitContainer

    kit = KitContainer.existing(load_cli_settings(), catalog.stack(stack))
    lines = tail if tail > 0 else "all"
    if follow:
        try:
            for text in kit.follow_logs(lines):
                sys.stdout.write(text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
    else:
        sys.stdout.write(kit.logs(lines))


# --------------------------------------------------------------------------- images


def build(stack: StackOpt = "main", dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Build the image from ./Dockerfile (buildx when present, else the classic builder)."""
    from wan22ctl.docker import images

    the_stack = catalog.stack(stack)
    plan = images.plan_for(None, load_cli_settings(), the_stack, force_build=True)
    out = Output(as_json)
    if dry_run:
        out.result(plan.to_dict(), lambda _: out.say(" ".join(plan.build.argv())))
        return
    from wan22ctl.docker.client import connect

    _run_build(out, connect(), plan.build)
    out.result({"tag": plan.build.tag, "built": True})


def pull(
    stack: StackOpt = "main",
    image: Annotated[Optional[str], typer.Option("--image", help="Reference to pull instead of the setting.")] = None,
) -> None:
    """Pull the image with per-layer progress."""
    from wan22ctl.docker import images
    from wan22ctl.docker.client import connect
    from wan22ctl.plan.image import registry_ref

    settings = load_cli_settings()
    ref = image or registry_ref(settings, catalog.stack(stack))
    _run_pull(Output(), connect(), ref, images.auth_config(settings.registry_username, settings.registry_password))


def push(
    target: Annotated[str, typer.Argument(help="Where to push: REGISTRY/REPO[:TAG] (Docker Hub user/repo, ghcr.io/OWNER/IMAGE, ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO).")],
    stack: StackOpt = "main",
    ecr_region: Annotated[Optional[str], typer.Option("--ecr-region", help="Log in to Amazon ECR through boto3 for this region.")] = None,
) -> None:
    """Tag the local image as TARGET and push it; registry errors fail the command (and the tag goes again)."""
    from wan22ctl.docker import images
    from wan22ctl.docker.client import connect
    from wan22ctl.plan.image import image_ref, parse_reference

    repo, tag = parse_reference(target)  # before anything is tagged or any credential fetched
    settings = load_cli_settings()
    source = image_ref(settings, catalog.stack(stack))
    if ecr_region or ".dkr.ecr." in target:
        _, user, password = images.ecr_credentials(ecr_region)
    else:
        user, password = settings.registry_username, settings.registry_password
    out = Output()
    layers: dict[str, str] = {}

    def on_item(item: dict) -> None:
        if item.get("id") and item.get("status") != layers.get(item["id"]):
            layers[item["id"]] = item.get("status", "")
            if item.get("status") in ("Pushed", "Layer already exists", "Mounted from"):
                out.say(f"{item['id']}: {item['status']}")

    pushed = images.tag_and_push(connect(), source, repo, tag, images.auth_config(user, password), on_item)
    out.say(f"pushed {pushed}")


# --------------------------------------------------------------------------- config


def config(
    as_json: JsonOpt = False,
    example: Annotated[bool, typer.Option("--example", help="Print .env.example (every key with its default).")] = False,
) -> None:
    """Print every resolved setting and where it came from; secrets are masked."""
    from wan22ctl.settings import render_env_example

    if example:
        sys.stdout.write(render_env_example())
        return
    settings = load_cli_settings()
    masked = settings.masked()
    data = {"env_file": str(settings.env_file) if settings.env_file else None,
            "settings": {k: {"value": masked[k], "source": settings.source(k)} for k in masked}}
    out = Output(as_json)
    out.result(data, lambda d: out.table(("key", "value", "source"),
                                         [(k, v["value"], v["source"]) for k, v in d["settings"].items()],
                                         title=f"settings (env file: {d['env_file'] or 'none'})"))


def register(app: typer.Typer) -> None:
    for fn in (up, down, status, attach, logs, shell, build, pull, push, config):
        app.command(fn.__name__)(fn)
