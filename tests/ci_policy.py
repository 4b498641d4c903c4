"""In CI a missing prerequisite fails the run: only tests marked `gpu` may skip there.

Locally a test skips when Docker, olah, torch, docker-compose, docker-registry or a tmpfs mount is
missing, with the reason and the fix; in CI (the `CI` variable set, as `.ci/run`'s callers and
every CI service set it) the same skip is turned into a failure with that reason, so a broken
runner can never pass by skipping what it was meant to test.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
ALLOWED_MARKER = "gpu"


def _reason(longrepr) -> str:
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_if_skipped_in_ci(report, node) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") and node.get_closest_marker(ALLOWED_MARKER) is None:
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI: {_reason(report.longrepr)} (CI must provide every prerequisite; "
                           f"only tests marked {ALLOWED_MARKER!r} may skip)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_if_skipped_in_ci(outcome.get_result(), item)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level skip (pytest.importorskip at the top of a file)
    _fail_if_skipped_in_ci(outcome.get_result(), collector)
