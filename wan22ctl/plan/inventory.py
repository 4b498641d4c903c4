"""GPU inventory: what `nvidia-smi` reports, as plain data for plans and checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
