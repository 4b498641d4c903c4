"""The container spec: settings in, one plain-data description of each stack's container out.

This is the only place the container's shape is decided. The docker-py adapter
(`wan22ctl.docker.containers`) turns a `ContainerSpec` into `create()` arguments, and
`docker-compose.yml` is tested against `compose_view()` of the same spec.
No secret ever enters a spec: HF_TOKEN and registry passwords reach processes at exec time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from wan22ctl import catalog
from wan22ctl.settings import Settings

LABEL_PREFIX = "io.wan22ctl"
LABEL_STACK = f"{LABEL_PREFIX}.stack"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"

# The static environment of the main container; `container.env` (the compose env_file) holds
# the same lines, and a test keeps them equal.
MAIN_ENVIRONMENT: dict[str, str] = {
    "PYTORCH_ALLOC_CONF": "expandable_segments:True",
    "HF_HOME": catalog.CONTAINER_HF_HOME,
    "WAN22_CHECKPOINT_DIR": catalog.CONTAINER_CHECKPOINT_DIR,
    "WAN22_OUTPUT_DIR": catalog.CONTAINER_OUTPUT_DIR,
    "WAN22_DIR": catalog.CONTAINER_WAN22_DIR,
    "PYTHONUNBUFFERED": "1",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
}


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # container path
    read_only: bool = False


@dataclass(frozen=True)
class GpuRequest:
    """`--gpus`: all (count -1), a count, or explicit device ids; None means no GPUs."""

    count: int = -1
    device_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: int = 5
    timeout_s: int = 20
    retries: int = 3
    start_period_s: int = 5


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `docker create` needs for one stack, as plain data."""

    stack: str
    name: str
    image: str
    command: tuple[str, ...]
    environment: dict[str, str]
    mounts: tuple[Mount, ...]
    gpus: GpuRequest | None
    ipc_mode: str | None
    uts_mode: str | None
    security_opt: tuple[str, ...]
    privileged: bool
    memlock: int | None  # bytes, -1 for unlimited, None for the engine's default
    shm_size: str | None
    tty: bool
    stdin_open: bool
    restart_policy: str
    network_mode: str | None
    ports: dict[str, int | str] = field(default_factory=dict)  # "7860/tcp" -> host port, or "HOST_IP:PORT"
    healthcheck: Healthcheck | None = None
    working_dir: str | None = None

    def to_dict(self) -> dict:
        """JSON-shaped dict (lists, not tuples), equal to what a label stores and reads back."""
        return json.loads(json.dumps(asdict(self), sort_keys=True))

    def digest(self) -> str:
        """A stable hash of the spec: equal digests mean the container need not change."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def labels(self) -> dict[str, str]:
        """Labels stored on the container so a later `up` can tell what changed."""
        return {
            LABEL_STACK: self.stack,
            LABEL_SPEC_HASH: self.digest(),
            LABEL_SPEC: json.dumps(self.to_dict(), sort_keys=True),
        }


def parse_gpus(value: str) -> GpuRequest | None:
    """GPUS setting (already normalised by settings) to a request."""
    if value == "none":
        return None
    if value == "all":
        return GpuRequest(count=-1)
    if value.startswith("device="):
        return GpuRequest(count=0, device_ids=tuple(value.removeprefix("device=").split(",")))
    return GpuRequest(count=int(value))


def parse_memlock(value: str) -> int | None:
    if value == "off":
        return None
    if value == "unlimited":
        return -1
    return int(value)


def health_command() -> tuple[str, ...]:
    return ("wan22ctl-agent", "health")


def plan_main_container(settings: Settings) -> ContainerSpec:
    """The inference container: GPUs, host IPC/UTS, unconfined seccomp, persistent mounts."""
    return ContainerSpec(
        stack="main",
        name=settings["CONTAINER_NAME"],
        image=settings["DOCKER_IMAGE"],
        command=("/bin/bash",),
        environment=dict(MAIN_ENVIRONMENT),
        mounts=(
            Mount(settings["OUTPUT_DIR"], catalog.CONTAINER_OUTPUT_DIR),
            Mount(settings["CHECKPOINT_DIR"], catalog.CONTAINER_CHECKPOINT_DIR),
            Mount(settings["HF_HOME"], catalog.CONTAINER_HF_HOME),
        ),
        gpus=parse_gpus(settings["GPUS"]),
        ipc_mode="host",
        uts_mode="host",
        security_opt=("seccomp=unconfined",),
        privileged=settings.get_bool("PRIVILEGED"),
        memlock=parse_memlock(settings["MEMLOCK"]),
        shm_size=settings["SHM_SIZE"],
        tty=True,
        stdin_open=True,
        restart_policy=settings["RESTART_POLICY"],
        network_mode=None,
        healthcheck=Healthcheck(test=health_command()),
        working_dir=catalog.CONTAINER_WAN22_DIR,
    )


# --------------------------------------------------------------------------- resident server (issue 8)
# `wan22ctl up --serve`: the main container with the server as its command and its port published.

SERVER_CONTAINER_PORT = 8000
SERVER_KEY_FILE = f"{catalog.CONTAINER_OUTPUT_DIR}/.wan22ctl/server/api_key"  # written by the host, mode 600
SERVER_PYTHONPATH = "/opt/wan22ctl-src"  # the kit's source in the image (Dockerfile), importable by any python


def plan_serve_container(settings: Settings) -> ContainerSpec:
    """The main container running `wan22ctl-agent server` for SERVER_TASK.

    The server listens on every address inside the container; what the world sees is the
    published port on SERVER_HOST, so that address decides whether an API key is required.
    The key itself never enters the spec (it would show in `docker inspect`): the server reads
    it from SERVER_KEY_FILE on the outputs mount. With GPUs the server plans its GPUs and flags
    as `generate` would (`--plan auto`).
    """
    from dataclasses import replace

    base = plan_main_container(settings)
    # Wan2.2's python (torch, the `wan` package's requirements), not the kit's venv: the server
    # imports `wan` in-process. Its own modules need only the standard library (and torch).
    command = ["python3", "-m", "wan22ctl.agent", "server", "--task", settings["SERVER_TASK"], "--host", "0.0.0.0",
               "--port", str(SERVER_CONTAINER_PORT), "--published-host", settings["SERVER_HOST"]]
    if settings["GPUS"] != "none":
        command += ["--plan", "auto"]
    if settings["WAN22_API_KEY"]:
        command += ["--api-key-file", SERVER_KEY_FILE]
    port = f"{settings['SERVER_HOST']}:{settings['SERVER_PORT']}"
    # generate passes these per run (the launch plan's env); the server reads them once at start
    run_env = {"WAN22_ATTENTION": settings["WAN22_ATTENTION"], "WAN22_COMPILE": settings["WAN22_COMPILE"]}
    return replace(base, command=tuple(command), ports={f"{SERVER_CONTAINER_PORT}/tcp": port},
                   environment={**base.environment, "PYTHONPATH": SERVER_PYTHONPATH, **run_env}, tty=False,
                   stdin_open=False)


def plan_container(settings: Settings, stack: str = "main") -> ContainerSpec:
    """The spec of one stack's container."""
    if stack == "main":
        return plan_main_container(settings)
    if stack == "videox-fun":
        from wan22ctl.plan.videox import plan_videox_container

        return plan_videox_container(settings)
    raise ValueError(stack)


def diff_specs(old: dict, new: dict) -> list[str]:
    """Human lines naming each top-level field that differs between two spec dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return lines
