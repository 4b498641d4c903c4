"""`wan22ctl-agent animate-prep`: run Wan-Animate's preprocessing plan and publish its folder whole.

The script writes into a temporary folder beside the final one; only when it exits 0 and every
file `generate --task animate-14B` opens is there (each MP4 complete) is the folder renamed to its
final name, never over an existing one (-2, -3, ... instead). A failure or Ctrl-C removes the
temporary folder and the staged inputs. The GPU lock is the launcher's, so preprocessing and
generation never share a GPU by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from wan22ctl.agent import outputs
from wan22ctl.agent.launcher import StopSignals, _kill_group
from wan22ctl.agent.locks import GpuLock
from wan22ctl.agent.progress import read_lines
from wan22ctl.plan.animate_prep import PrepPlan
from wan22ctl.protocol import EXIT_BUSY, EXIT_INTERRUPTED, emit


def _publish_folder(work: str, out_dir: str) -> str:
    """Rename `work` to `out_dir` (or out_dir-2, ...) without replacing anything."""
    for n in range(1, 1000):
        target = out_dir if n == 1 else f"{out_dir}-{n}"
        try:
            os.mkdir(target)  # reserve the name: mkdir fails when it exists
        except FileExistsError:
            continue
        os.rmdir(target)
        os.rename(work, target)
        return target
    raise FileExistsError(f"no free name for {out_dir}")


def run_prep(plan: PrepPlan, wait: bool = True) -> int:
    """Run the preprocessing; 0 only when the folder was published complete."""
    os.makedirs(os.path.dirname(plan.work_dir), exist_ok=True)
    staging = os.path.dirname(os.path.dirname(plan.video))
    lock = GpuLock(plan.output_dir, (0,), plan.run_id)
    signals = StopSignals.install()
    try:
        if not lock.acquire(wait, signals.stop):
            emit("result", status="interrupted" if signals.signal else "busy",
                 exit_code=EXIT_INTERRUPTED if signals.signal else EXIT_BUSY)
            return EXIT_INTERRUPTED if signals.signal else EXIT_BUSY
        emit("launch", run_id=plan.run_id, argv=list(plan.argv), cwd=plan.cwd)
        proc = subprocess.Popen(plan.argv, cwd=plan.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        signals.proc = proc
        tail: list[str] = []

        def echo(line: str) -> None:
            tail[:] = (tail + [line])[-20:]
            print(line, flush=True)

        read_lines(proc.stdout, echo)
        code = proc.wait()
        if signals.signal is not None:
            emit("result", status="interrupted", exit_code=EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        if code != 0:
            reason = f"preprocess_data.py exited with code {code}"
            emit("result", status="failed", exit_code=1, reason=reason, log_tail=tail[-8:])
            print(f"error: {reason}", file=sys.stderr)
            return 1
        problems = []
        for name in plan.expected:
            path = os.path.join(plan.work_dir, name)
            problem = "not written" if not os.path.isfile(path) else outputs.check_mp4(path) if name.endswith(".mp4") else None
            if problem:
                problems.append(f"{name}: {problem}")
        if problems:
            reason = "preprocessing exited 0 but the folder is incomplete (" + "; ".join(problems) + ")"
            emit("result", status="failed", exit_code=1, reason=reason)
            print(f"error: {reason}", file=sys.stderr)
            return 1
        with open(os.path.join(plan.work_dir, "prep.json"), "w", encoding="utf-8") as f:
            json.dump({"request": plan.request, "argv": list(plan.argv)}, f, indent=2)
        folder = _publish_folder(plan.work_dir, plan.out_dir)
        emit("result", status="ok", exit_code=0, folder=folder, files=sorted(os.listdir(folder)))
        return 0
    finally:
        if signals.proc is not None and signals.proc.poll() is None:
            _kill_group(signals.proc, grace=1)
        lock.release()
        shutil.rmtree(plan.work_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        signals.restore()


def _cmd(args) -> int:
    return run_prep(PrepPlan.from_dict(json.loads(args.plan_json)), wait=not args.no_wait)


def add_parser(subparsers) -> None:
    """Register `animate-prep`."""
    p = subparsers.add_parser("animate-prep", help="run Wan-Animate's preprocessing plan (JSON), publish the folder")
    p.add_argument("--plan-json", required=True, help="the plan as JSON text")
    p.add_argument("--no-wait", action="store_true", help="exit 75 at once when the GPU is busy")
    p.set_defaults(func=_cmd)
