"""The container specs: settings in, one `ContainerSpec` per stack out (the resident server's too).

This is the only place the containers' shape is decided. `docker-compose.yml` is tested against
the main spec and `docker-compose.serve.yml` against the serve spec; the VideoX-Fun stack's spec
is planned in `plan/videox.py` with the same types (`plan/spec.py`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from wan22ctl import catalog, paths
from wan22ctl.catalog import Stack
from wan22ctl.errors import UserError
from wan22ctl.plan.spec import ContainerSpec, Healthcheck, Mount, gpu_request
from wan22ctl.plan.videox import plan_videox_container
from wan22ctl.settings import Settings

# The static environment of the main container; `container.env` (the compose env_file) holds
# the same lines, and a test keeps them equal.
MAIN_ENVIRONMENT: dict[str, str] = {
    "PYTORCH_ALLOC_CONF": "expandable_segments:True",
    "HF_HOME": paths.CONTAINER_HF_HOME,
    "WAN22_CHECKPOINT_DIR": paths.CONTAINER_CHECKPOINT_DIR,
    "WAN22_OUTPUT_DIR": paths.CONTAINER_OUTPUT_DIR,
    "WAN22_DIR": paths.CONTAINER_WAN22_DIR,
    "PYTHONUNBUFFERED": "1",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
}


def container_name(settings: Settings, stack: Stack) -> str:
    """The name of the stack's container."""
    return settings[stack.container_key]


def health_command() -> tuple[str, ...]:
    return ("wan22ctl-agent", "health")


def plan_main_container(settings: Settings) -> ContainerSpec:
    """The inference container: GPUs, host IPC/UTS, unconfined seccomp, persistent mounts."""
    return ContainerSpec(
        stack=catalog.MAIN.name,
        name=settings["CONTAINER_NAME"],
        image=settings["DOCKER_IMAGE"],
        command=("/bin/bash",),
        environment=dict(MAIN_ENVIRONMENT),
        mounts=tuple(Mount(host, target) for target, host in paths.main_mounts(settings).mounts),
        gpus=gpu_request(settings.gpus),
        ipc_mode="host",
        uts_mode="host",
        security_opt=("seccomp=unconfined",),
        privileged=settings.privileged,
        memlock=settings.memlock,
        shm_size=settings["SHM_SIZE"],
        tty=True,
        stdin_open=True,
        restart_policy=settings["RESTART_POLICY"],
        network_mode=None,
        healthcheck=Healthcheck(test=health_command()),
        working_dir=paths.CONTAINER_WAN22_DIR,
    )


_PLANNERS = {"main": plan_main_container, "videox-fun": plan_videox_container}


def plan_container(settings: Settings, stack: Stack = catalog.MAIN) -> ContainerSpec:
    """The spec of one stack's container."""
    return _PLANNERS[stack.name](settings)


# --------------------------------------------------------------------------- resident server
# `wan22ctl up --serve`: the main container with the server as its command and its port published.

SERVER_CONTAINER_PORT = 8000
SERVER_KEY_FILE = f"{paths.CONTAINER_OUTPUT_DIR}/.wan22ctl/server/api_key"  # written by the host, mode 600
# WAN22_QUEUE_URL for `up --serve`: a password inside, so a file like the key, never the spec's env
SERVER_QUEUE_URL_FILE = f"{paths.CONTAINER_OUTPUT_DIR}/.wan22ctl/server/queue_url"


def server_run_env(settings: Settings) -> dict[str, str]:
    """The server's environment from settings: generate passes these per run (the launch plan's
    env); the server reads them once at start. The Kubernetes pods get the same (plan/kube.py)."""
    return {"WAN22_ATTENTION": settings["WAN22_ATTENTION"], "WAN22_COMPILE": settings["WAN22_COMPILE"],
            "WAN22_DTYPE": settings["WAN22_DTYPE"]}


def server_preset_lora(settings: Settings) -> str | None:
    """The catalog LoRA model SERVER_PRESET merges for SERVER_TASK (None without a preset); UserError
    when the preset has none for the task. `up --serve` and `kube render` both ask."""
    preset = settings["SERVER_PRESET"]
    if not preset:
        return None
    key = catalog.PRESETS[preset].loras.get(settings["SERVER_TASK"])
    if key is None:
        raise UserError(f"SERVER_PRESET={preset} has no distilled LoRA for SERVER_TASK={settings['SERVER_TASK']} "
                        f"(it has: {', '.join(catalog.PRESETS[preset].loras)})",
                        fix="set SERVER_TASK to one of those, or SERVER_PRESET= (empty)")
    return key


def plan_serve_container(settings: Settings, stack: Stack = catalog.MAIN) -> ContainerSpec:
    """The main container running `wan22ctl-agent server` for SERVER_TASK.

    The server listens on every address inside the container (a published port reaches only
    those), so every container on the Docker network could reach it too: it always has an API
    key, WAN22_API_KEY or one `up --serve` generates, and the port is published on SERVER_HOST
    (beyond loopback only with WAN22_API_KEY set: UserError otherwise). The key itself never
    enters the spec (it would show in `docker inspect`): the server reads it from SERVER_KEY_FILE
    on the outputs mount, where the host's CLI reads it as well. With GPUs the server plans its
    GPUs and flags as `generate` would (`--plan auto`).
    """
    if not stack.serves:
        raise UserError(f"--serve runs Wan2.2's resident server; it belongs to the {catalog.MAIN.name} stack")
    if not ipaddress.ip_address(settings.server_host).is_loopback and not settings.wan22_api_key:
        raise UserError(f"SERVER_HOST={settings.server_host} publishes the server beyond this machine without a key",
                        fix="set WAN22_API_KEY (clients send Authorization: Bearer KEY), or SERVER_HOST=127.0.0.1")
    preset = settings["SERVER_PRESET"]
    server_preset_lora(settings)
    base = plan_main_container(settings)
    # Wan2.2's python (torch, the `wan` package's requirements), not the kit's venv: the server
    # imports `wan` in-process, and its HTTP stack is installed there (docker/requirements-server.txt).
    command = ["python3", "-m", "wan22ctl.agent", "server", "--task", settings["SERVER_TASK"], "--host", "0.0.0.0",
               "--port", str(SERVER_CONTAINER_PORT)]
    if settings.gpus.kind != "none":
        command += ["--plan", "auto"]
    if preset:
        command += ["--preset", preset]
    command += ["--api-key-file", SERVER_KEY_FILE]
    if settings["WAN22_QUEUE_URL"]:  # a replica of the shared queue: the URL from a file (mode 600)
        command += ["--queue-url-file", SERVER_QUEUE_URL_FILE]
    port = f"{settings['SERVER_HOST']}:{settings['SERVER_PORT']}"
    run_env = server_run_env(settings)
    return replace(base, command=tuple(command), ports={f"{SERVER_CONTAINER_PORT}/tcp": port},
                   environment={**base.environment, "PYTHONPATH": paths.CONTAINER_KIT_DIR, **run_env}, tty=False,
                   stdin_open=False)
