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

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from wan22ctl.cli.common import DryRunOpt, JsonOpt, StackOpt, console, emit, settings_from
from wan22ctl.errors import EnvError, UserError

STACK_NAME_KEY = {"main": "CONTAINER_NAME", "videox-fun": "VIDEOX_CONTAINER_NAME"}


def _check_stack(stack: str) -> str:
    if stack not in STACK_NAME_KEY:
        raise UserError(f"unknown stack {stack!r}; choose main or videox-fun")
    return stack


def build_context() -> Path:
    """The folder holding the Dockerfile: the current one if it has it, else the kit's checkout."""
    here = Path.cwd()
    if (here / "Dockerfile").is_file() and (here / "wan22ctl").is_dir():
        return here
    return Path(__file__).resolve().parents[2]


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
    from wan22ctl.docker.client import connect

    _check_stack(stack)
    if build and pull:
        raise UserError("--build and --pull exclude each other")
    settings = settings_from({"GPUS": gpus})
    spec = _up_spec(settings, stack, serve)
    if dry_run:  # read-only; without a Docker daemon the plan says the local image was not checked
        try:
            client = connect()
        except EnvError:
            client = None
        image_plan = _plan_image(client, settings, stack, build, pull)
        emit({"container": spec.to_dict(), "image": image_plan.to_dict()}, as_json, _print_spec)
        return

    from wan22ctl.docker import containers

    _before_docker(settings, stack)
    client = connect()
    image_plan = _plan_image(client, settings, stack, build, pull)
    out = console(stderr=as_json)
    _ensure_image(client, settings, image_plan, out)
    _prepare_host(client, settings, stack, serve, out)
    result = containers.ensure_running(client, spec, recreate=recreate)
    if result.action == "unchanged":
        out.print(f"{spec.name} is already running with this configuration; nothing to do")
    elif result.action == "recreated":
        out.print(f"{spec.name} recreated; changed:")
        for line in result.changes:
            out.print(f"  {line}")
    else:
        out.print(f"{spec.name} {result.action}")
    status = "skipped"
    if stack == "videox-fun":
        # The UI loads its model before it listens (minutes); `wan22ctl ui` waits for that.
        out.print("the UI is starting: `wan22ctl ui` waits until it answers and prints its URL")
    elif wait > 0:
        status = containers.wait_healthy(client.containers.get(spec.name), wait)
        out.print(f"{spec.name} is {status if status != 'none' else 'running'}")
    if as_json:
        emit({"action": result.action, "changes": result.changes, "name": spec.name,
              "container_id": result.container_id, "health": status}, True, print)
    elif (hint := _next_step(settings, stack, serve, spec.name)) is not None:
        out.print(hint)


def _plan_image(client, settings, stack: str, build: bool, pull: bool):
    """The image plan against the daemon's local image (client None: not checked)."""
    from wan22ctl.docker.images import local_image
    from wan22ctl.plan.image import image_ref, plan_image

    present, labels = None, None
    if client is not None and not (build or pull):
        present, labels = local_image(client, image_ref(settings, stack))
    return plan_image(settings, stack, build_context(), force_build=build, force_pull=pull, present=present,
                      local_labels=labels)


def _up_spec(settings, stack: str, serve: bool):
    """The stack's container spec, or with --serve the main container running the resident server."""
    from wan22ctl.plan.container import plan_container

    if serve:
        from wan22ctl.cli.serve import serve_spec

        return serve_spec(settings, stack)
    return plan_container(settings, stack)


def _before_docker(settings, stack: str) -> None:
    """Doctor's cheap checks (daemon API, host folders): one line and the fix, before any build."""
    if stack == "main":
        from wan22ctl.doctor import require

        require(settings, "up")


def _prepare_host(client, settings, stack: str, serve: bool, out) -> None:
    """Host-side files the container expects: VideoX-Fun's models/ folders, the server's key file."""
    if stack == "videox-fun":
        from wan22ctl.cli.ui import prepare_up

        prepare_up(client, settings, out)
    if serve:
        from wan22ctl.cli.serve import prepare_serve

        prepare_serve(settings)


def _next_step(settings, stack: str, serve: bool, name: str) -> str | None:
    """What to do next, for people (the VideoX-Fun hint was printed with the start)."""
    if serve:
        from wan22ctl.cli.serve import server_url

        return f"server: {server_url(settings)} (loading {settings['SERVER_TASK']}; `wan22ctl jobs`, `wan22ctl logs -f`)"
    if stack == "main":
        return f"attach a shell: docker attach {name}   (detach with Ctrl-P Ctrl-Q)"
    return None


def _print_spec(data: dict) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _ensure_image(client, settings, image_plan, out) -> None:
    """Build or pull per the image plan; nothing when the image is present and current."""
    from wan22ctl.docker import images

    if image_plan.action == "none":
        return
    if image_plan.action == "build":
        out.print(f"building {image_plan.build.tag} from BASE_IMAGE={image_plan.build.buildargs['BASE_IMAGE']} "
                  f"({image_plan.reason})")
        _run_build(client, image_plan.build, out)
    else:
        out.print(f"pulling {image_plan.ref} ({image_plan.reason})")
        auth = images.auth_config(settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"])
        _run_pull(client, image_plan.ref, auth, out)


def _run_build(client, build_plan, out) -> None:
    from wan22ctl.docker import images

    images.build_image(client, build_plan, lambda line: out.print(line, markup=False))
    out.print(f"built {build_plan.tag}")


def _run_pull(client, ref: str, auth, out) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from wan22ctl.docker import images

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=out, transient=False) as progress:
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
    out.print(f"pulled {ref}")


def down(
    stack: StackOpt = "main",
    as_json: JsonOpt = False,
) -> None:
    """Stop and remove the container. Checkpoints, outputs and the HF cache stay on the host."""
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect

    _check_stack(stack)
    settings = settings_from()
    name = settings[STACK_NAME_KEY[stack]]
    removed = containers.remove(connect(), name)
    emit({"name": name, "removed": removed}, as_json,
         lambda d: print(f"{name} removed" if removed else f"{name} is not there; nothing to do"))


def status(
    stack: Annotated[Optional[str], typer.Option("--stack", help="Only this stack (default: both).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Image and digest, state, health, GPUs the container sees, and mounts, for each stack."""
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect

    settings = settings_from()
    client = connect()
    stacks = [_check_stack(stack)] if stack else list(STACK_NAME_KEY)
    report = []
    for s in stacks:
        name = settings[STACK_NAME_KEY[s]]
        container = containers.find(client, name)
        if container is None:
            report.append({"stack": s, "name": name, "state": "absent"})
            continue
        info = containers.describe(client, container)
        info["stack"] = s
        info["gpus_visible"] = _gpus_seen(container) if info["state"] == "running" else []
        if s == "videox-fun":
            from wan22ctl.plan.videox import ui_url

            info["url"] = ui_url(settings)
        report.append(info)
    emit({"containers": report}, as_json, _render_status)


def _gpus_seen(container) -> list[dict]:
    """GPUs as `nvidia-smi` inside the container reports them (empty when it cannot)."""
    from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, parse_nvidia_smi

    try:
        code, out = container.exec_run(NVIDIA_SMI_QUERY)
    except Exception:
        return []
    if code != 0:
        return []
    return [g.to_dict() for g in parse_nvidia_smi(out.decode("utf-8", "replace"))]


def _render_status(data: dict) -> None:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in ("stack", "name", "state", "health", "image", "GPUs", "mounts", "url"):
        table.add_column(col)
    for c in data["containers"]:
        gpus = ", ".join(f"{g['index']}:{g['name']} {g['memory_gb']:.0f}GB" for g in c.get("gpus_visible", [])) or "-"
        mounts = "\n".join(f"{m['source']} -> {m['target']}" for m in c.get("mounts", [])) or "-"
        url = c.get("url", "-") if c["state"] == "running" else "-"
        table.add_row(c["stack"], c["name"], c["state"], c.get("health", "-"), str(c.get("image", "-")), gpus, mounts, url)
    console().print(table)


# --------------------------------------------------------------------------- interactive


def _docker_cli() -> str:
    import shutil

    exe = shutil.which("docker")
    if not exe:
        raise UserError("the docker command-line client is not on PATH (needed for interactive sessions)",
                        fix="install the Docker CLI, or use `docker exec -it` from another host")
    return exe


def _running_name(stack: str) -> str:
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect

    settings = settings_from()
    name = settings[STACK_NAME_KEY[_check_stack(stack)]]
    container = containers.find(connect(), name)
    if container is None or container.status != "running":
        raise UserError(f"{name} is not running", fix="run `wan22ctl up` first")
    return name


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
    """Print the container's log."""
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect

    settings = settings_from()
    name = settings[STACK_NAME_KEY[_check_stack(stack)]]
    container = containers.find(connect(), name)
    if container is None:
        raise UserError(f"{name} does not exist", fix="run `wan22ctl up` first")
    kwargs = {"tail": tail if tail > 0 else "all"}
    if follow:
        try:
            for chunk in container.logs(stream=True, follow=True, **kwargs):
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
    else:
        sys.stdout.write(container.logs(**kwargs).decode("utf-8", "replace"))


# --------------------------------------------------------------------------- images


def build(
    stack: StackOpt = "main",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the image from ./Dockerfile (buildx when present, else the classic builder)."""
    from wan22ctl.plan.image import plan_image

    settings = settings_from()
    plan = plan_image(settings, _check_stack(stack), build_context(), force_build=True)
    if dry_run:
        emit(plan.to_dict(), as_json, lambda d: print(" ".join(plan.build.argv())))
        return
    from wan22ctl.docker.client import connect

    _run_build(connect(), plan.build, console(stderr=as_json))
    if as_json:
        emit({"tag": plan.build.tag, "built": True}, True, print)


def pull(
    stack: StackOpt = "main",
    image: Annotated[Optional[str], typer.Option("--image", help="Reference to pull instead of the setting.")] = None,
) -> None:
    """Pull the image with per-layer progress."""
    from wan22ctl.docker import images
    from wan22ctl.docker.client import connect

    settings = settings_from()
    ref = image or settings["DOCKER_IMAGE" if _check_stack(stack) == "main" else "VIDEOX_IMAGE"]
    auth = images.auth_config(settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"])
    _run_pull(connect(), ref, auth, console())


def push(
    target: Annotated[str, typer.Argument(help="Where to push: REGISTRY/REPO[:TAG] (Docker Hub user/repo, ghcr.io/OWNER/IMAGE, ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO).")],
    stack: StackOpt = "main",
    ecr_region: Annotated[Optional[str], typer.Option("--ecr-region", help="Log in to Amazon ECR through boto3 for this region.")] = None,
) -> None:
    """Tag the local image as TARGET and push it; registry errors fail the command."""
    import docker

    from wan22ctl.docker import images
    from wan22ctl.docker.client import connect

    settings = settings_from()
    from wan22ctl.plan.videox import videox_image

    source = settings["DOCKER_IMAGE"] if _check_stack(stack) == "main" else videox_image(settings)
    client = connect()
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound:
        raise UserError(f"image {source} is not present locally", fix="run `wan22ctl build` first") from None
    repo, tag = images.split_ref(target)
    image.tag(repo, tag)
    if ecr_region or ".dkr.ecr." in target:
        _, user, password = images.ecr_credentials(ecr_region)
    else:
        user, password = settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"]
    auth = images.auth_config(user, password)
    out = console()
    layers: dict[str, str] = {}

    def on_item(item: dict) -> None:
        if item.get("id") and item.get("status") != layers.get(item["id"]):
            layers[item["id"]] = item.get("status", "")
            if item.get("status") in ("Pushed", "Layer already exists", "Mounted from"):
                out.print(f"{item['id']}: {item['status']}")

    images.push_image(client, f"{repo}:{tag}", auth, on_item)
    out.print(f"pushed {repo}:{tag}")


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
    settings = settings_from()
    masked = settings.masked()
    data = {k: {"value": masked[k], "source": settings.source(k)} for k in masked}
    emit({"env_file": str(settings.env_file) if settings.env_file else None, "settings": data}, as_json,
         _render_config)


def _render_config(data: dict) -> None:
    from rich.table import Table

    table = Table(title=f"settings (env file: {data['env_file'] or 'none'})")
    for col in ("key", "value", "source"):
        table.add_column(col)
    for key, v in data["settings"].items():
        table.add_row(key, v["value"], v["source"])
    console().print(table)


def register(app: typer.Typer) -> None:
    for fn in (up, down, status, attach, logs, shell, build, pull, push, config):
        app.command(fn.__name__)(fn)
