"""`wan22ctl-agent inventory`: the GPUs nvidia-smi reports, the host RAM free for loading and this
machine's `Runtime` (interpreters, folders), as JSON.

The host reads this through `docker exec` to plan a launch (`wan22ctl plan`, `generate`): these
facts belong to the machine the container runs on, not to the machine running the CLI, and with
the runtime the plan's argv is the one that runs.
"""

from __future__ import annotations

import json
import os
import subprocess

from wan22ctl import paths
from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, Inventory, Runtime, parse_nvidia_smi


def kit_dir() -> str:
    """Where any python finds `wan22ctl` (only its stdlib-only modules run inside Wan's process)."""
    if os.environ.get("WAN22CTL_SRC"):
        return os.environ["WAN22CTL_SRC"]
    if os.path.isdir(os.path.join(paths.CONTAINER_KIT_DIR, "wan22ctl")):
        return paths.CONTAINER_KIT_DIR
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def runtime() -> Runtime:
    """How this machine starts Wan2.2 (the image's defaults unless its environment says otherwise)."""
    return Runtime.from_environ(os.environ, kit_dir())


def host_ram_gb() -> float | None:
    """GB the load may use: MemAvailable, capped by the container's cgroup memory limit."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            limit = int(raw) / 1024**3
            available = limit if available is None else min(available, limit)
        break
    return None if available is None else round(available, 1)


def inventory() -> Inventory:
    """GPUs, free host RAM, runtime, and nvidia-smi's complaint when it listed nothing."""
    error = None
    try:
        proc = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=60)
        gpus = parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else []
        if proc.returncode != 0:
            error = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            error = error[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        gpus, error = [], str(exc)
    return Inventory(tuple(gpus), host_ram_gb(), runtime(), error)


def _cmd(args) -> int:
    print(json.dumps(inventory().to_dict()))
    return 0


def add_parser(subparsers) -> None:
    """Register `inventory`."""
    p = subparsers.add_parser("inventory", help="GPUs (nvidia-smi) and free host RAM, as JSON")
    p.set_defaults(func=_cmd)
