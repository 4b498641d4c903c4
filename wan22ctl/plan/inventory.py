"""The machine a launch is planned for, as plain data: its GPUs (`nvidia-smi`), its free host RAM,
and its `Runtime` (how and where the container side starts Wan2.2).

The agent reports all three (`wan22ctl-agent inventory`); offline plans (`--gpu-count`) describe
GPUs on the command line and take the image's runtime.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Mapping

from wan22ctl import paths

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,compute_cap,driver_version",
    "--format=csv,noheader,nounits",
]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_gb: float  # GiB as nvidia-smi reports MiB / 1024
    compute_cap: str  # "9.0"
    driver: str

    def to_dict(self) -> dict:
        return asdict(self)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,compute_cap,driver_version --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        try:
            mem = float(parts[2]) / 1024
        except ValueError:
            continue
        gpus.append(Gpu(int(parts[0]), parts[1], round(mem, 1), parts[3], parts[4]))
    return gpus


@dataclass(frozen=True)
class Runtime:
    """How and where the container side starts Wan2.2. The defaults are the image's; a machine
    running the agent outside the image (or a test image) says otherwise through its environment:
    WAN22_PYTHON, WAN22_TORCHRUN, WAN22_BOOTSTRAP (0: run upstream's generate.py as is), WAN22_DIR,
    WAN22_OUTPUT_DIR, WAN22_CHECKPOINT_DIR, WAN22_S2V_TTS, and PYTHONPATH/WAN22CTL_SRC for the kit's source."""

    python: str = "python3"
    torchrun: str = "torchrun"
    bootstrap: bool = True  # start Wan through `python -m wan22ctl.agent.wanrun` (attention backend, speedups)
    wan22_dir: str = paths.CONTAINER_WAN22_DIR
    output_dir: str = paths.CONTAINER_OUTPUT_DIR
    checkpoint_dir: str = paths.CONTAINER_CHECKPOINT_DIR
    pythonpath: str = paths.CONTAINER_KIT_DIR  # what Wan's python is started with (the kit's source first)
    # Wan's Python has CosyVoice's packages for s2v's text-to-speech (the image's WAN22_S2V_TTS, from
    # its WAN_S2V_TTS build argument); None: not known (a machine that does not say, an offline plan)
    tts: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "Runtime":
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], kit_dir: str) -> "Runtime":
        """This machine's runtime from its environment; `kit_dir` holds the `wan22ctl` package."""
        return cls(
            python=environ.get("WAN22_PYTHON") or "python3",
            torchrun=environ.get("WAN22_TORCHRUN") or "torchrun",
            bootstrap=environ.get("WAN22_BOOTSTRAP", "1") != "0",
            wan22_dir=environ.get("WAN22_DIR") or paths.CONTAINER_WAN22_DIR,
            output_dir=environ.get("WAN22_OUTPUT_DIR") or paths.CONTAINER_OUTPUT_DIR,
            checkpoint_dir=environ.get("WAN22_CHECKPOINT_DIR") or paths.CONTAINER_CHECKPOINT_DIR,
            pythonpath=os.pathsep.join(p for p in (kit_dir, environ.get("PYTHONPATH")) if p),
            tts={"true": True, "false": False}.get(environ.get("WAN22_S2V_TTS", "").strip().lower()),
        )


@dataclass(frozen=True)
class Inventory:
    """What a launch is planned against: GPUs, free host RAM (GB, None: unknown), the runtime, and
    nvidia-smi's complaint when it listed nothing."""

    gpus: tuple[Gpu, ...]
    host_ram_gb: float | None = None
    runtime: Runtime = field(default_factory=Runtime)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"gpus": [g.to_dict() for g in self.gpus], "host_ram_gb": self.host_ram_gb,
                "runtime": self.runtime.to_dict(), "error": self.error}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Inventory":
        return cls(tuple(Gpu(**g) for g in data.get("gpus") or ()), data.get("host_ram_gb"),
                   Runtime.from_dict(data.get("runtime")), data.get("error"))
