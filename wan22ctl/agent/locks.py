"""GPU and run locks on the outputs folder: one generation per GPU at a time, and partial files
told apart from a crashed run's.

Both are `flock`s on files under `<outputs>/.locks`, released by the kernel when the process
ends, even by SIGKILL: a lock file's content (who holds it) is only ever advice for messages.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import threading
from datetime import datetime, timezone

from wan22ctl.protocol import emit


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class GpuLock:
    """flock on one file per GPU under <outputs>/.locks; released when the process ends, even by SIGKILL."""

    def __init__(self, output_dir: str, gpus, run_id: str):
        self.dir = os.path.join(output_dir, ".locks")
        self.gpus = sorted(gpus)
        self.run_id = run_id
        self.files: list = []

    def _holder(self, path: str) -> str:
        try:
            with open(path) as f:
                info = json.loads(f.read() or "{}")
            return f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')}, since {info.get('since', '?')})"
        except (OSError, json.JSONDecodeError):
            return "another run"

    def acquire(self, wait: bool, stop: threading.Event) -> bool:
        os.makedirs(self.dir, exist_ok=True)
        announced = False
        for gpu in self.gpus:  # in index order, so two runs never wait on each other crosswise
            path = os.path.join(self.dir, f"gpu-{gpu}.lock")
            f = open(path, "a+")
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder(path)
                    if not wait:
                        f.close()
                        self.release()
                        emit("busy", gpus=self.gpus, gpu=gpu, holder=holder)
                        return False
                    if not announced:
                        emit("waiting", gpus=self.gpus, gpu=gpu, holder=holder)
                        announced = True
                    if stop.wait(0.5):
                        f.close()
                        self.release()
                        return False
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"run_id": self.run_id, "pid": os.getpid(), "since": _now()}))
            f.flush()
            self.files.append(f)
        if announced:
            emit("lock_acquired", gpus=self.gpus)
        return True

    def release(self) -> None:
        for f in self.files:
            try:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            except OSError:
                pass
        self.files = []


def run_lock(output_dir: str, run_id: str):
    """Held for a run's whole life, so a later run can tell its partial files from a crashed run's."""
    os.makedirs(os.path.join(output_dir, ".locks"), exist_ok=True)
    f = open(os.path.join(output_dir, ".locks", f"run-{run_id}.lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def sweep_stale(output_dir: str) -> list[str]:
    """Remove partial files and staged inputs left by runs that died without cleaning up (SIGKILL)."""
    removed = []
    for path in glob.glob(os.path.join(output_dir, ".partial-*")):
        run_id = os.path.basename(path).removeprefix(".partial-").split(".")[0]
        lock_path = os.path.join(output_dir, ".locks", f"run-{run_id}.lock")
        try:
            with open(lock_path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the run is gone
        except BlockingIOError:
            continue
        except OSError:
            pass
        for p in (path, lock_path):
            try:
                os.unlink(p)
                removed.append(p)
            except OSError:
                pass
        shutil.rmtree(os.path.join(output_dir, ".staging", run_id), ignore_errors=True)
    return removed
