"""`wan22ctl-agent inventory`: the GPUs nvidia-smi reports and the host RAM free for loading, as JSON.

The host reads this through `docker exec` to plan a launch (`wan22ctl plan`, `generate`):
both facts belong to the machine the container runs on, not to the machine running the CLI.
"""

from __future__ import annotations

import json
import subprocess

from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, parse_nvidia_smi


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


def inventory() -> dict:
    """{"gpus": [...], "host_ram_gb": x, "error": nvidia-smi's complaint or None}."""
    error = None
    try:
        proc = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=60)
        gpus = parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else []
        if proc.returncode != 0:
            error = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            error = error[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        gpus, error = [], str(exc)
    return {"gpus": [g.to_dict() for g in gpus], "host_ram_gb": host_ram_gb(), "error": error}


def _cmd(args) -> int:
    print(json.dumps(inventory()))
    return 0


def add_parser(subparsers) -> None:
    """Register `inventory`."""
    p = subparsers.add_parser("inventory", help="GPUs (nvidia-smi) and free host RAM, as JSON")
    p.set_defaults(func=_cmd)
