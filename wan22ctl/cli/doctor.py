"""`wan22ctl doctor`: check the whole path (Docker, NVIDIA runtime, GPUs, driver, memory, disk,
/dev/shm, memlock, Hugging Face, image, container) for the task you are about to run.

Examples:
    wan22ctl doctor                       # everything that does not depend on a task
    wan22ctl doctor --task t2v-A14B       # plus GPU memory, host RAM, disk and repo access for it
    wan22ctl doctor --task ti2v-5B --json # the same as a JSON document (schema wan22ctl.doctor/1)

Exit code: 0 when no check FAILs (WARN and SKIP are allowed), 1 when any check FAILs.

JSON (`--json`, schema "wan22ctl.doctor/1"; keys are only ever added within a version):
    {"schema": "wan22ctl.doctor/1", "task": "t2v-A14B" | null, "ok": bool,
     "counts": {"PASS": n, "WARN": n, "FAIL": n, "SKIP": n},
     "checks": [{"id": "gpu.vram", "name": "GPU memory", "status": "PASS|WARN|FAIL|SKIP",
                 "value": str, "requirement": str, "fix": str | null, "data": {...}}, ...]}
Check ids, in order: docker.daemon, host.folders, image.present, nvidia.runtime, gpu.visible,
gpu.arch, gpu.driver, gpu.vram, host.ram, disk.checkpoints, container.shm, container.memlock,
hf.endpoint, hf.token, hf.repo, container.health. `fix` is null on PASS.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from wan22ctl.cli.options import JsonOpt
from wan22ctl.cli.output import Output
from wan22ctl.errors import UserError
from wan22ctl.settings import load_cli_settings

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


def doctor(
    task: Annotated[Optional[str], typer.Option("--task", help="Task to check for: t2v-A14B, i2v-A14B or ti2v-5B.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find every reason a run would fail: each check PASS/WARN/FAIL/SKIP with value, requirement and fix."""
    from wan22ctl import catalog

    if task is not None and task not in catalog.TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(catalog.task_names())}")
    settings = load_cli_settings()
    from wan22ctl.doctor import report_dict, run_doctor

    report = report_dict(run_doctor(settings, task), task)
    out = Output(as_json)
    out.result(report, lambda r: _render(out, r))
    if not report["ok"]:
        # sys.exit, not typer.Exit: the root app runs click with standalone_mode=False, which
        # turns typer.Exit into a return value that `main()` drops.
        sys.exit(1)


def _render(out: Output, report: dict) -> None:
    out.table(("check", "status", "value", "requirement", "fix"),
              [(c["name"], (c["status"], _STYLE[c["status"]]), c["value"], c["requirement"], c["fix"] or "")
               for c in report["checks"]],
              title=f"wan22ctl doctor{' --task ' + report['task'] if report['task'] else ''}")
    counts = report["counts"]
    summary = ", ".join(f"{counts[s]} {s}" for s in ("PASS", "WARN", "FAIL", "SKIP") if counts[s])
    out.say(f"{summary}: " + ("ready" if report["ok"] else "fix the FAIL rows first"))


def register(app: typer.Typer) -> None:
    """Add `doctor` to the root app."""
    app.command("doctor")(doctor)
