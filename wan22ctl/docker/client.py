"""Connecting to the Docker Engine, and turning its failures into errors that name the fix."""

from __future__ import annotations

import os

from wan22ctl.errors import EnvError

NVIDIA_RUNTIME_MARKERS = ('could not select device driver', 'unknown or invalid runtime name: nvidia')
NVIDIA_FIX = (
    "install and configure the NVIDIA Container Toolkit: "
    "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/ then "
    "`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker` "
    "(or set GPUS=none to start without GPUs)"
)


def daemon_location() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect():
    """A docker-py client with a negotiated API version, or an EnvError naming DOCKER_HOST."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        raise EnvError(
            f"cannot reach the Docker daemon at {daemon_location()} ({_short(exc)})",
            fix="start Docker (`sudo systemctl start docker`, or `sudo dockerd &`), "
            "check DOCKER_HOST, and make sure your user may use the socket (`sudo usermod -aG docker $USER`)",
        ) from None
    except Exception as exc:  # requests' ConnectionError when a version is pinned
        raise EnvError(
            f"cannot reach the Docker daemon at {daemon_location()} ({_short(exc)})",
            fix="start Docker (`sudo systemctl start docker`) and check DOCKER_HOST",
        ) from None


def is_nvidia_runtime_error(exc: Exception) -> bool:
    text = str(getattr(exc, "explanation", "") or exc)
    return any(marker in text for marker in NVIDIA_RUNTIME_MARKERS)


def explanation(exc: Exception) -> str:
    """The daemon's own words for an APIError, else the exception text."""
    return str(getattr(exc, "explanation", None) or exc)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."
