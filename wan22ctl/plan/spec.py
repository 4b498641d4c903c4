"""`ContainerSpec`: one plain-data description of a container, whichever stack it belongs to.

The docker-py adapter (`wan22ctl.docker.containers`) turns a spec into `create()` arguments;
the spec is stored on the container as a label, so a later `up` can say what changed. No secret
ever enters a spec: HF_TOKEN and registry passwords reach processes at exec time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from wan22ctl.settings import GpuSelection

LABEL_PREFIX = "io.wan22ctl"
LABEL_STACK = f"{LABEL_PREFIX}.stack"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"


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


def gpu_request(selection: GpuSelection) -> GpuRequest | None:
    """The Docker device request for the GPUS setting."""
    if selection.kind == "none":
        return None
    if selection.kind == "ids":
        return GpuRequest(count=0, device_ids=tuple(map(str, selection.ids)))
    return GpuRequest(count=selection.count if selection.kind == "count" else -1)


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


def diff_specs(old: dict, new: dict) -> list[str]:
    """Human lines naming each top-level field that differs between two spec dicts."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return lines
