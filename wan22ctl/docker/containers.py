"""Containers: carry out a `ContainerSpec` through docker-py, idempotently, leaving no orphans.

`ensure_running()` compares the spec with the one stored on an existing container (a label),
does nothing when they match, and recreates the container (saying what changed) when they do
not. A container whose start fails (no NVIDIA runtime, privileged or memlock refused) is
removed before the error is raised: docker-py would leave it in `Created`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from wan22ctl.docker.client import NVIDIA_FIX, explanation, is_nvidia_runtime_error
from wan22ctl.errors import EnvError, RunFailed
from wan22ctl.plan.spec import LABEL_SPEC, LABEL_SPEC_HASH, LABEL_STACK, ContainerSpec, diff_specs


@dataclass
class UpResult:
    action: str  # "unchanged", "started", "created", "recreated"
    changes: list[str] = field(default_factory=list)
    container_id: str = ""


def create_kwargs(spec: ContainerSpec) -> dict:
    """The docker-py `containers.create()` arguments for a spec."""
    import docker

    kwargs: dict = {
        "image": spec.image,
        "name": spec.name,
        "command": list(spec.command),
        "environment": dict(spec.environment),
        "volumes": {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
        "security_opt": list(spec.security_opt),
        "privileged": spec.privileged,
        "tty": spec.tty,
        "stdin_open": spec.stdin_open,
        "labels": spec.labels(),
        "detach": True,
    }
    if spec.ipc_mode:
        kwargs["ipc_mode"] = spec.ipc_mode
    if spec.uts_mode:
        kwargs["uts_mode"] = spec.uts_mode
    if spec.shm_size:
        kwargs["shm_size"] = spec.shm_size
    if spec.memlock is not None:
        kwargs["ulimits"] = [docker.types.Ulimit(name="memlock", soft=spec.memlock, hard=spec.memlock)]
    if spec.gpus is not None:
        kwargs["device_requests"] = [
            docker.types.DeviceRequest(
                count=spec.gpus.count if not spec.gpus.device_ids else 0,
                device_ids=list(spec.gpus.device_ids),
                capabilities=[["gpu"]],
            )
        ]
    if spec.restart_policy and spec.restart_policy != "no":
        kwargs["restart_policy"] = {"Name": spec.restart_policy}
    if spec.network_mode:
        kwargs["network_mode"] = spec.network_mode
    if spec.ports:
        # "127.0.0.1:8000" publishes on one host address (docker-py takes (ip, port)).
        kwargs["ports"] = {k: (v.rsplit(":", 1)[0], int(v.rsplit(":", 1)[1])) if isinstance(v, str) else v
                           for k, v in spec.ports.items()}
    if spec.working_dir:
        kwargs["working_dir"] = spec.working_dir
    if spec.healthcheck:
        s = 1_000_000_000
        h = spec.healthcheck
        kwargs["healthcheck"] = {
            "test": ["CMD", *h.test], "interval": h.interval_s * s, "timeout": h.timeout_s * s,
            "retries": h.retries, "start_period": h.start_period_s * s,
        }
    return kwargs


def find(client, name: str):
    """The container called `name`, or None."""
    import docker

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def stored_spec(container) -> dict:
    try:
        return json.loads(container.labels.get(LABEL_SPEC, "{}"))
    except json.JSONDecodeError:
        return {}


def _ensure_host_dirs(spec: ContainerSpec) -> None:
    import os

    for m in spec.mounts:
        try:
            os.makedirs(m.source, exist_ok=True)
        except PermissionError:
            raise EnvError(
                f"cannot create {m.source} (permission denied)",
                fix=f"sudo mkdir -p {m.source} && sudo chown $USER {m.source}, or point the setting at a folder you own",
            ) from None


def _start_failure(spec: ContainerSpec, exc: Exception) -> Exception:
    text = explanation(exc)
    if is_nvidia_runtime_error(exc):
        return EnvError(f"Docker cannot give GPUs to containers: {text}", fix=NVIDIA_FIX)
    lowered = text.lower()
    if "rlimit" in lowered or "memlock" in lowered:
        return EnvError(
            f"the container could not start with the memlock ulimit ({text})",
            fix="set MEMLOCK=off (or a byte limit the host allows) in .env",
        )
    if spec.privileged and ("operation not permitted" in lowered or "permission denied" in lowered):
        return EnvError(
            f"the container could not start privileged ({text})",
            fix="set PRIVILEGED=false in .env (and MEMLOCK=off if the host caps memlock)",
        )
    return RunFailed(f"container {spec.name} failed to start: {text}")


def create_and_start(client, spec: ContainerSpec):
    """Create and start; on a failed start remove the half-made container and raise the reason."""
    import docker

    _ensure_host_dirs(spec)
    try:
        container = client.containers.create(**create_kwargs(spec))
    except docker.errors.ImageNotFound:
        raise EnvError(f"image {spec.image} is not present", fix="run `wan22ctl build` or `wan22ctl pull`") from None
    except docker.errors.APIError as exc:
        raise RunFailed(f"cannot create container {spec.name}: {explanation(exc)}") from None
    try:
        container.start()
    except docker.errors.APIError as exc:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
        raise _start_failure(spec, exc) from None
    return container


def ensure_running(client, spec: ContainerSpec, recreate: bool = False) -> UpResult:
    """Make the named container match `spec` and run, doing as little as possible."""
    existing = find(client, spec.name)
    if existing is not None:
        if existing.labels.get(LABEL_STACK) is None:
            raise EnvError(
                f"a container named {spec.name} exists but was not made by wan22ctl",
                fix=f"remove it (`docker rm -f {spec.name}`) or set a different CONTAINER_NAME",
            )
        same = existing.labels.get(LABEL_SPEC_HASH) == spec.digest() and not recreate
        if same and existing.status == "running":
            return UpResult("unchanged", container_id=existing.id)
        if same:
            try:
                existing.start()
            except Exception as exc:
                raise _start_failure(spec, exc) from None
            return UpResult("started", container_id=existing.id)
        changes = diff_specs(stored_spec(existing), spec.to_dict()) or ["recreate requested"]
        existing.remove(force=True)
        container = create_and_start(client, spec)
        return UpResult("recreated", changes, container.id)
    container = create_and_start(client, spec)
    return UpResult("created", container_id=container.id)


def health(container) -> str:
    """'healthy', 'unhealthy', 'starting', or 'none' when the container has no health check."""
    container.reload()
    state = container.attrs.get("State", {})
    return (state.get("Health") or {}).get("Status", "none")


def wait_healthy(container, timeout_s: float, on_wait: Callable[[str], None] | None = None) -> str:
    """Poll until healthy (or no health check); raise RunFailed with the last log lines otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = health(container)
        if container.status not in ("running", "created", "restarting"):
            raise RunFailed(f"container {container.name} stopped ({container.status}); last log lines:\n{last_logs(container)}")
        if status in ("healthy", "none"):
            return status
        if status == "unhealthy":
            raise RunFailed(f"container {container.name} is unhealthy; last health output:\n{health_log(container)}")
        if time.monotonic() > deadline:
            raise RunFailed(f"container {container.name} not healthy after {timeout_s:.0f}s (status {status})")
        if on_wait:
            on_wait(status)
        time.sleep(1)


def health_log(container) -> str:
    logs = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    return "\n".join(str(entry.get("Output", "")).strip() for entry in logs[-3:])


def last_logs(container, lines: int = 20) -> str:
    try:
        return container.logs(tail=lines).decode("utf-8", "replace")
    except Exception:
        return "(no logs)"


def remove(client, name: str) -> bool:
    """Stop and remove the named container; True when there was one. Mounts are never touched."""
    container = find(client, name)
    if container is None:
        return False
    container.remove(force=True)
    return True


def describe(client, container) -> dict:
    """The facts `status` shows: image and digest, state, health, GPUs requested, mounts."""
    container.reload()
    attrs = container.attrs
    host = attrs.get("HostConfig", {})
    image_id = attrs.get("Image", "")
    digests: list[str] = []
    try:
        digests = client.images.get(image_id).attrs.get("RepoDigests") or []
    except Exception:
        pass
    requests = host.get("DeviceRequests") or []
    return {
        "name": container.name,
        "stack": container.labels.get(LABEL_STACK),
        "image": attrs.get("Config", {}).get("Image"),
        "image_id": image_id,
        "image_digests": digests,
        "state": attrs.get("State", {}).get("Status"),
        "health": (attrs.get("State", {}).get("Health") or {}).get("Status", "none"),
        "started_at": attrs.get("State", {}).get("StartedAt"),
        "gpus_requested": [
            {"count": r.get("Count"), "device_ids": r.get("DeviceIDs") or []} for r in requests
        ],
        "mounts": [
            {"source": m.get("Source"), "target": m.get("Destination"), "rw": m.get("RW")}
            for m in attrs.get("Mounts", [])
        ],
        "privileged": host.get("Privileged"),
        "ipc_mode": host.get("IpcMode"),
        "uts_mode": host.get("UTSMode"),
        "ports": attrs.get("NetworkSettings", {}).get("Ports") or {},
    }
