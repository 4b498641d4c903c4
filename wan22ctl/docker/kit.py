"""`KitContainer`: one of the kit's containers, found by its stack's name, and every call the CLI
makes on it (agent commands, GPU inventory, staged inputs, logs, image digest, health, mounts).

A command that needs the container asks for it once: `KitContainer.running(settings)` (or
`existing` when a stopped one will do); a missing one is the same EnvError, naming the `up`
command that fixes it, wherever it is asked for.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from wan22ctl import catalog
from wan22ctl.catalog import Stack
from wan22ctl.docker import containers
from wan22ctl.docker.client import connect
from wan22ctl.docker.exec import EventHandler, ExecResult, LineHandler, run_exec
from wan22ctl.errors import EnvError, RunFailed
from wan22ctl.plan.container import SERVER_KEY_FILE, SERVER_QUEUE_URL_FILE, container_name
from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, Gpu, Inventory, parse_nvidia_smi
from wan22ctl.plan.spec import ContainerSpec
from wan22ctl.settings import Settings

T = TypeVar("T")


class ContainerStopped(Exception):
    """The container stopped or restarted while something waited on it."""

    def __init__(self, status: str, exit_code, last_logs: str):
        super().__init__(f"{status}, exit code {exit_code}")
        self.status = status
        self.exit_code = exit_code
        self.last_logs = last_logs


def _up_command(stack: Stack) -> str:
    return "wan22ctl up" if stack is catalog.MAIN else f"wan22ctl up --stack {stack.name}"


class KitContainer:
    """A container of one stack, with the docker-py client that found it."""

    def __init__(self, client, container, stack: Stack = catalog.MAIN):
        self.client = client
        self.container = container
        self.stack = stack

    # ----------------------------------------------------------------------- finding it

    @classmethod
    def find(cls, settings: Settings, stack: Stack = catalog.MAIN, client=None) -> "KitContainer | None":
        """The stack's container when it exists (running or not)."""
        client = client or connect()
        container = containers.find(client, container_name(settings, stack))
        return None if container is None else cls(client, container, stack)

    @classmethod
    def existing(cls, settings: Settings, stack: Stack = catalog.MAIN) -> "KitContainer":
        """The stack's container, running or stopped; EnvError naming `up` when there is none."""
        kit = cls.find(settings, stack)
        if kit is None:
            name = container_name(settings, stack)
            raise EnvError(f"container {name} does not exist", fix=f"run `{_up_command(stack)}` first")
        return kit

    @classmethod
    def running(cls, settings: Settings, stack: Stack = catalog.MAIN) -> "KitContainer":
        """The stack's running container; EnvError naming `up` when it is absent or stopped."""
        kit = cls.find(settings, stack)
        if kit is None or not kit.is_running:
            name = container_name(settings, stack)
            raise EnvError(f"container {name} is not running", fix=f"run `{_up_command(stack)}` first")
        return kit

    @classmethod
    def up(cls, client, spec: ContainerSpec, stack: Stack, recreate: bool = False) -> tuple["KitContainer", containers.UpResult]:
        """Carry out `spec` (`containers.ensure_running`) and return the container and what was done."""
        result = containers.ensure_running(client, spec, recreate=recreate)
        return cls(client, client.containers.get(spec.name), stack), result

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def is_running(self) -> bool:
        return self.container.status == "running"

    # ----------------------------------------------------------------------- running things in it

    def run_agent(self, argv: Sequence[str], *, environment: dict | None = None, on_line: LineHandler | None = None,
                  on_event: EventHandler | None = None) -> ExecResult:
        """`wan22ctl-agent ARGV` in the container, streamed (`exec.run_exec`)."""
        return run_exec(self.container, ["wan22ctl-agent", *argv], environment=environment, on_line=on_line,
                        on_event=on_event)

    def inventory(self) -> Inventory:
        """GPUs, free host RAM and runtime as the agent in the container reports them."""
        code, out = self.container.exec_run(["wan22ctl-agent", "inventory"])
        text = out.decode("utf-8", "replace").strip()
        if code != 0:
            raise EnvError(f"cannot read the GPU inventory in the container: {text.splitlines()[-1:] or code}",
                           fix="rebuild the image (`wan22ctl build`) so wan22ctl-agent matches this kit")
        return Inventory.from_dict(json.loads(text.splitlines()[-1]))

    def gpus_seen(self) -> list[Gpu]:
        """GPUs as `nvidia-smi` inside the container reports them (empty when it cannot)."""
        try:
            code, out = self.container.exec_run(NVIDIA_SMI_QUERY)
        except Exception:
            return []
        return parse_nvidia_smi(out.decode("utf-8", "replace")) if code == 0 else []

    def stage_file(self, host_path: str, container_path: str, root: str) -> None:
        """Copy a host file to `container_path` under `root` (folders made); works with a remote daemon."""
        rel = os.path.relpath(container_path, root)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            parts = Path(rel).parts
            for i in range(1, len(parts)):
                info = tarfile.TarInfo("/".join(parts[:i]))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            tar.add(host_path, arcname=rel, recursive=False)
        if not self.container.put_archive(root, buf.getvalue()):
            raise RunFailed(f"could not copy {host_path} into the container")

    def remove_tree(self, container_path: str) -> None:
        """`rm -rf` inside the container; failures are ignored (the agent sweeps stale staging)."""
        try:
            self.container.exec_run(["rm", "-rf", container_path])
        except Exception:
            pass

    # ----------------------------------------------------------------------- facts about it

    def image_digest(self) -> str | None:
        """The image's repo digest (else its id): recorded in sidecars."""
        try:
            image = self.client.images.get(self.container.attrs["Image"])
            digests = image.attrs.get("RepoDigests") or []
            return digests[0] if digests else image.id
        except Exception:
            return self.container.attrs.get("Image")

    def mount_source(self, target: str) -> str | None:
        """The host folder mounted at `target`, or None."""
        mounted = {m.get("Destination"): m.get("Source") for m in self.container.attrs.get("Mounts", [])}
        return mounted.get(target)

    def describe(self) -> dict:
        """What `status` shows: image and digests, state, health, GPUs requested, mounts, ports."""
        return containers.describe(self.client, self.container)

    def logs(self, tail: int | str = 200) -> str:
        return self.container.logs(tail=tail).decode("utf-8", "replace")

    def follow_logs(self, tail: int | str = 200) -> Iterator[str]:
        for chunk in self.container.logs(stream=True, follow=True, tail=tail):
            yield chunk.decode("utf-8", "replace")

    # ----------------------------------------------------------------------- waiting on it

    def wait_healthy(self, timeout_s: float) -> str:
        return containers.wait_healthy(self.container, timeout_s)

    def poll(self, check: Callable[[], T | None], timeout_s: float, interval_s: float = 1.0) -> T | None:
        """Call `check` until it returns something; None once `timeout_s` has passed. Raises
        ContainerStopped (with the last log lines) when the container stops or restarts meanwhile."""
        deadline = time.monotonic() + timeout_s
        self.container.reload()
        restarts = self.container.attrs.get("RestartCount", 0)
        while True:
            self.container.reload()
            status = self.container.status
            if status not in ("running", "created") or self.container.attrs.get("RestartCount", 0) > restarts:
                raise ContainerStopped(status, self.container.attrs.get("State", {}).get("ExitCode"),
                                       containers.last_logs(self.container))
            answer = check()
            if answer is not None:
                return answer
            if time.monotonic() > deadline:
                return None
            time.sleep(interval_s)

    def last_logs(self) -> str:
        return containers.last_logs(self.container)


def prepare_host(client, settings: Settings, stack: Stack, serve: bool) -> list[str]:
    """Host-side files a stack's container expects, made before it is created; warnings to show.

    VideoX-Fun's models/ subfolders are made here, by the user, so they are not root-owned, and
    /dev/shm larger than the Docker host's memory gets a warning (Docker itself accepts it). The
    resident server's API key goes where the server reads it (OUTPUT_DIR, mode 600): WAN22_API_KEY,
    or one generated once and kept across `up`s (the server binds every container address, so it
    never runs without a key; the host's CLI reads the same file).
    """
    from wan22ctl.paths import main_mounts
    from wan22ctl.plan.videox import MODEL_SUBDIRS, shm_warning

    warnings = []
    if stack is catalog.VIDEOX:
        root = settings.videox_models_dir
        for sub in MODEL_SUBDIRS:
            try:
                os.makedirs(os.path.join(root, sub), exist_ok=True)
            except PermissionError:
                raise EnvError(f"cannot create {root}/{sub} (permission denied)",
                               fix=f"sudo mkdir -p {root} && sudo chown $USER {root}, or set VIDEOX_MODELS_DIR "
                                   "to a folder you own") from None
        warning = shm_warning(settings.videox_shm_size, (client.info() or {}).get("MemTotal"))
        if warning:
            warnings.append(warning)
    if serve:
        _write_server_key(main_mounts(settings).to_host(SERVER_KEY_FILE), settings.wan22_api_key)
        queue_file = main_mounts(settings).to_host(SERVER_QUEUE_URL_FILE)
        if settings["WAN22_QUEUE_URL"]:
            _write_secret(queue_file, settings["WAN22_QUEUE_URL"])
        else:  # no password left behind once the setting is gone
            try:
                os.unlink(queue_file)
            except FileNotFoundError:
                pass
    return warnings


def _write_server_key(path: str, key: str) -> None:
    import secrets

    if not key:
        try:
            with open(path) as f:
                key = f.readline().strip()
        except OSError:
            key = ""
    _write_secret(path, key or secrets.token_urlsafe(32))


def _write_secret(path: str, value: str) -> None:
    """`value` in `path`, mode 600 from its creation, replaced whole."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(path + ".tmp", path)
