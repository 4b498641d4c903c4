"""Gathering facts for the checks: the Docker Engine, the image, the container, the host disk.

Thin adapters only; every judgement is in `wan22ctl.doctor.rules`. The one container doctor
creates (the `--gpus` probe) carries a label and a name derived from CONTAINER_NAME, and is
removed in a `finally` whatever happens, so a failed probe leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from wan22ctl.plan.spec import GpuRequest

LABEL_PROBE = "io.wan22ctl.doctor-probe"
PROBE_TIMEOUT_S = 60


def probe_name(container_name: str) -> str:
    """The probe container's name: one per kit container, so parallel kits never collide."""
    return f"{container_name}-doctor-probe"


@dataclass
class ProbeResult:
    """What the `--gpus` probe container did."""

    started: bool
    exit_code: int | None = None
    output: str = ""
    error: str = ""  # the daemon's words when create/start failed
    nvidia_error: bool = False  # the failure is the missing NVIDIA runtime


@dataclass
class ImageFacts:
    ref: str
    id: str
    created: str
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def image_facts(client, ref: str) -> ImageFacts | None:
    """The local image's id, creation time, ENV and labels; None when it is not present."""
    import docker

    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    config = image.attrs.get("Config") or {}
    env = dict(item.split("=", 1) for item in (config.get("Env") or []) if "=" in item)
    return ImageFacts(ref, image.short_id.removeprefix("sha256:"), image.attrs.get("Created", ""), env,
                      dict(config.get("Labels") or {}))


def run_probe(client, image: str, command: list[str], gpus: GpuRequest | None, name: str) -> ProbeResult:
    """Run `command` in a short-lived container with a GPU request; always remove the container."""
    import docker

    from wan22ctl.docker.client import explanation, is_nvidia_runtime_error

    _remove_stale_probe(client, name)
    request = gpus or GpuRequest(count=-1)
    device = docker.types.DeviceRequest(
        count=request.count if not request.device_ids else 0, device_ids=list(request.device_ids),
        capabilities=[["gpu"]],
    )
    container = None
    try:
        container = client.containers.create(
            image, command, name=name, detach=True, device_requests=[device],
            labels={LABEL_PROBE: "1"},
        )
        container.start()
        status = container.wait(timeout=PROBE_TIMEOUT_S)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return ProbeResult(True, int(status.get("StatusCode", -1)), output)
    except docker.errors.APIError as exc:
        return ProbeResult(False, error=explanation(exc), nvidia_error=is_nvidia_runtime_error(exc))
    except Exception as exc:  # a hung probe (read timeout) is a finding, not a crash
        return ProbeResult(False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass


def _remove_stale_probe(client, name: str) -> None:
    """A probe left by a killed doctor run carries our label; anything else of that name is not ours."""
    import docker

    try:
        old = client.containers.get(name)
    except docker.errors.NotFound:
        return
    if old.labels.get(LABEL_PROBE):
        old.remove(force=True)


def exec_text(container, command: list[str]) -> tuple[int, str]:
    """Run a short command in a running container: (exit code, stdout+stderr text)."""
    code, out = container.exec_run(command, user="root")
    return int(code if code is not None else -1), out.decode("utf-8", "replace")


def host_memory_gb() -> tuple[float, float] | None:
    """(MemTotal, MemAvailable) in GB from this machine's /proc/meminfo; None when unreadable."""
    try:
        fields = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii"))
    except OSError:
        return None
    kb = lambda key: float(fields[key].strip().split()[0])  # noqa: E731
    return kb("MemTotal") / 1024**2, kb("MemAvailable") / 1024**2


def daemon_is_local() -> bool:
    """True when the daemon runs on this machine (its /proc and disks are ours)."""
    host = os.environ.get("DOCKER_HOST", "unix://")
    return host.startswith("unix://") or host.startswith("npipe://")


def free_gb(path: str) -> tuple[float, str]:
    """Free GB on the filesystem that holds `path` (or its nearest existing parent), and that parent."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return shutil.disk_usage(p).free / 1e9, p


def dir_bytes(path: str) -> int:
    """Bytes of the files under `path` (0 when absent)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
