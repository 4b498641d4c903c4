"""What one check found, and the report that `doctor --json` prints.

A `CheckResult` is plain data: a stable id, a status (PASS / WARN / FAIL / SKIP), the measured
value, the requirement it was judged against and, unless it passed, the fix (a command or a
setting). The JSON document (`report_dict`) is versioned by `SCHEMA`; its shape is tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
STATUSES = (PASS, WARN, FAIL, SKIP)

# Bump when a key is renamed or removed; adding keys keeps the version.
SCHEMA = "wan22ctl.doctor/1"


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check."""

    id: str  # stable machine key, e.g. "gpu.vram"
    name: str  # what the table shows, e.g. "GPU memory"
    status: str  # PASS / WARN / FAIL / SKIP
    value: str  # what was measured ("1x NVIDIA A100 40 GB")
    requirement: str  # what it was judged against ("80 GB on one GPU")
    fix: str | None = None  # command or setting that fixes it; None when nothing to do
    data: dict[str, Any] = field(default_factory=dict)  # measured facts, machine-readable

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "status": self.status, "value": self.value,
            "requirement": self.requirement, "fix": self.fix, "data": self.data,
        }

    def one_line(self) -> str:
        """The reason in one line, as `up`/`download`/`generate` print it before stopping."""
        return f"{self.name}: {self.value} (needs {self.requirement})"


def report_dict(results: Iterable[CheckResult], task: str | None) -> dict[str, Any]:
    """The `doctor --json` document: schema, task, ok, counts per status, and every check in order."""
    results = list(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "task": task,
        "ok": counts[FAIL] == 0,
        "counts": counts,
        "checks": [r.to_dict() for r in results],
    }
