"""`wan22ctl doctor`: every reason a run would fail, found in seconds, each with its fix.

    from wan22ctl.doctor import run_doctor, preflight
    results = run_doctor(settings, task="t2v-A14B")      # list[CheckResult], table order
    reason = preflight(settings, "generate", task="ti2v-5B")  # None, or one line + fix

Layout: `rules` (pure verdicts against catalog facts), `probes` (Docker/host facts, the `--gpus`
probe container), `checks` (one small function per check), `result` (the result object and the
JSON document). `up`, `download` and `generate` call `preflight`/`require` with their stage so
a user who never runs `doctor` still gets the one-line reason before anything slow starts.
"""

from __future__ import annotations

from typing import Iterable

from wan22ctl import catalog
from wan22ctl.doctor.result import FAIL, PASS, SCHEMA, SKIP, STATUSES, WARN, CheckResult, report_dict
from wan22ctl.settings import Settings

__all__ = [
    "CheckResult", "FAIL", "PASS", "SCHEMA", "SKIP", "STATUSES", "WARN",
    "preflight", "report_dict", "require", "run_doctor",
]


def _context(settings: Settings, task: str | None, models: Iterable[catalog.Model] | None, allow_probe: bool,
             plan=None):
    from wan22ctl.doctor.checks import Context

    if models is None:
        models = (catalog.model_for_task(task),) if task else ()
    return Context(settings, task, tuple(models), allow_probe=allow_probe, plan=plan)


def run_doctor(settings: Settings, task: str | None = None) -> list[CheckResult]:
    """Run every check (probe container included) for `task`; results in table order."""
    from wan22ctl.doctor.checks import ALL_CHECKS

    ctx = _context(settings, task, None, allow_probe=True)
    return [check(ctx) for check in ALL_CHECKS]


def preflight(settings: Settings, stage: str, task: str | None = None,
              models: Iterable[catalog.Model] | None = None, plan=None) -> CheckResult | None:
    """The first FAIL among the cheap checks of `stage` ("up", "download", "generate"), else None.

    Cheap means no probe container and no network: GPU facts come from the running container
    only (a check that cannot see one says SKIP). `models` defaults to the task's model.
    `plan` (generate): the LaunchPlan about to run, so its rank count (and, in `doctor`, GPU
    memory and host RAM) are judged for the real request rather than the task's defaults.
    """
    from wan22ctl.doctor.checks import STAGE_CHECKS

    ctx = _context(settings, task, models, allow_probe=False, plan=plan)
    for check in STAGE_CHECKS[stage]:
        result = check(ctx)
        if result.status == FAIL:
            return result
    return None


def require(settings: Settings, stage: str, task: str | None = None,
            models: Iterable[catalog.Model] | None = None, plan=None) -> None:
    """`preflight`, raising EnvError (exit 3, one line + fix) on the first FAIL."""
    from wan22ctl.errors import EnvError

    failed = preflight(settings, stage, task, models, plan)
    if failed is not None:
        raise EnvError(failed.one_line(), fix=failed.fix)
