"""Carrying out download plans and verifications: the doing half of `download` and `verify`.

`prepare()` gathers the facts (hub listing per model, files and partials on disk, the ledger,
free space) and asks `wan22ctl.plan.download` for the plan. `execute()` hashes the files that
are there but unverified, fetches the rest with a pool of workers (each file is hashed as its
bytes arrive and takes its final name only when the hash matches), and writes the manifest
only when every file of the commit matched. `verify()` re-hashes everything against the hub (or, when
the hub cannot be reached, against the hashes the manifest recorded).

Progress and outcomes go out as events through `on_event(name, **fields)`; the agent prints
them as `@@wan22ctl` lines, the host renders them. A full disk stops the run with both numbers
and deletes nothing: finished files stay verified in the ledger, partial ones stay resumable.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from wan22ctl.catalog import Model
from wan22ctl.errors import EnvError, RunFailed, Wan22Error
from wan22ctl.hub import hf
from wan22ctl.hub.integrity import Ledger, expected_hash, matches, new_hasher, remove_manifest, write_manifest
from wan22ctl.hub.state import model_dir, read_manifest
from wan22ctl.plan.download import (
    DownloadPlan, FileStep, LocalFile, ModelPlan, RemoteFile, RemoteListing, human_bytes, included, plan_download,
    plan_model,
)

EventSink = Callable[..., None]  # on_event(name: str, **fields)


def filesystem_of(path: Path) -> tuple[str, int]:
    """(mount point holding `path` or its nearest existing parent, free bytes there)."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    dev = p.stat().st_dev
    mount = p
    while mount.parent != mount and mount.parent.stat().st_dev == dev:
        mount = mount.parent
    return str(mount), shutil.disk_usage(p).free


class ByteProgress:
    """Thread-safe byte counter that emits at most ~5 `progress` events a second.

    It is also where workers learn that the run was interrupted: `add()` raises once `cancel`
    is set, so every transfer stops at its next chunk and leaves a resumable partial.
    """

    def __init__(self, on_event: EventSink, phase: str, total: int, done: int):
        self.on_event, self.phase, self.total, self.done = on_event, phase, total, done
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._last = 0.0

    def add(self, n: int) -> None:
        if self.cancel.is_set():
            raise hf.Cancelled()
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last < 0.2:
                return
            self._last = now
            done = self.done
        self.on_event("progress", phase=self.phase, done=done, total=self.total)

    def flush(self) -> None:
        self.on_event("progress", phase=self.phase, done=self.done, total=self.total)


def _retry_reporter(on_event: EventSink, endpoint: str):
    def report(attempt: int, attempts: int, delay: float, reason: str) -> None:
        on_event("retry", endpoint=endpoint, attempt=attempt, attempts=attempts, delay_s=delay, reason=reason)

    return report


def prepare(models: tuple[Model, ...], roots: dict[str, str], *, endpoint: str, token: str | None,
            revision: str = "main", force: bool = False, on_event: EventSink) -> DownloadPlan:
    """Ask the hub what each model holds, look at the disk, and plan (nothing is written)."""
    plans: list[ModelPlan] = []
    free: dict[str, tuple[str, int]] = {}
    for model in models:
        listing = hf.list_repo(model.repo_id, revision, endpoint, token, on_retry=_retry_reporter(on_event, endpoint))
        listing = included(model, listing)
        target = model_dir(model, roots[model.mount])
        ledger = Ledger(target, listing.commit)
        local: dict[str, LocalFile] = {}
        for f in listing.files:
            path = target / f.path
            size = path.stat().st_size if path.is_file() else None
            etag = f.sha256 or f.blob_id
            local[f.path] = LocalFile(
                size=size, partial=hf.partial_bytes(target, f.path, etag) if size != f.size else 0,
                verified=size is not None and ledger.vouches(f.path, etag),
            )
        plans.append(plan_model(model, listing, local, str(target)))
        free[str(target)] = filesystem_of(target)
    return plan_download(plans, free, force=force)


def execute(plan: DownloadPlan, *, token: str | None, workers: int, on_event: EventSink) -> None:
    """Fetch and verify every model of the plan; RunFailed/EnvError on the first failure."""
    progress = ByteProgress(on_event, "download", plan.total_bytes,
                            sum(f.have_bytes for m in plan.models for f in m.files))
    progress.flush()
    for m in plan.models:
        _execute_model(m, token=token, workers=workers, progress=progress, on_event=on_event)
    progress.flush()


def _execute_model(m: ModelPlan, *, token: str | None, workers: int, progress: ByteProgress,
                   on_event: EventSink) -> None:
    target = Path(m.target_dir)
    on_event("model_start", key=m.key, repo=m.repo_id, commit=m.commit, target_dir=m.target_dir,
             total_bytes=m.total_bytes, fetch_bytes=m.fetch_bytes)
    if m.complete_on_disk and (target / ".wan22ctl-manifest.json").is_file():
        on_event("model_done", key=m.key, state="complete", fetched=0, target_dir=m.target_dir, commit=m.commit)
        return
    target.mkdir(parents=True, exist_ok=True)
    remove_manifest(target)  # in flux until every file matches again
    ledger = Ledger(target, m.commit)
    fetched = 0

    def check(step: FileStep) -> FileStep | None:
        """Hash a file that is there but unverified; the step to fetch it when it does not match."""
        if matches(target / step.path, step):
            ledger.record(step.path, expected_hash(step))
            on_event("file", key=m.key, path=step.path, status="verified")
            return None
        hf.forget_local(target, step.path, expected_hash(step))
        ledger.forget([step.path])
        progress.add(-step.size)
        on_event("file", key=m.key, path=step.path, status="mismatch, fetching again")
        return FileStep(path=step.path, size=step.size, action="fetch", have_bytes=0,
                        sha256=step.sha256, blob_id=step.blob_id)

    def fetch(step: FileStep) -> None:
        nonlocal fetched
        for attempt in (1, 2):
            try:
                hf.with_retries(
                    lambda: hf.download_file(
                        m.repo_id, step.path, m.commit, target, endpoint=m.endpoint, token=token, size=step.size,
                        expect_hash=expected_hash(step), new_hasher=lambda: new_hasher(step), on_bytes=progress.add),
                    what=f"downloading {m.repo_id}/{step.path}", endpoint=m.endpoint,
                    on_retry=_retry_reporter(on_event, m.endpoint),
                )
            except hf.HashMismatch:
                progress.add(-step.size)
                on_event("file", key=m.key, path=step.path, status=f"hash mismatch after download (attempt {attempt})")
                continue
            ledger.record(step.path, expected_hash(step))
            fetched += 1
            on_event("file", key=m.key, path=step.path, status="fetched")
            return
        raise RunFailed(f"{m.repo_id}/{step.path} does not match the hub's hash after two downloads; "
                        f"the endpoint {m.endpoint} may serve corrupt data")

    to_check = [f for f in m.files if f.action == "check"]
    to_fetch = [f for f in m.files if f.action == "fetch"]
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            to_fetch += [s for s in _run_all(pool, check, to_check, progress.cancel) if s is not None]
            to_fetch.sort(key=lambda s: -s.size)
            _run_all(pool, fetch, to_fetch, progress.cancel)
    except Wan22Error:
        raise
    except Exception as exc:
        if hf.is_disk_full(exc):
            _, free = filesystem_of(target)
            remaining = sum(f.size for f in m.files) - sum(e["size"] for e in ledger.entries.values())
            raise EnvError(
                f"disk full while downloading {m.repo_id} into {target}: {human_bytes(free)} ({free} bytes) free, "
                f"{human_bytes(remaining)} ({remaining} bytes) still to write; nothing completed was deleted",
                fix="free space (or point CHECKPOINT_DIR at a bigger disk), then rerun the same command to resume",
            ) from None
        reason = hf.unreachable_reason(exc)
        if reason:
            raise EnvError(f"lost the Hugging Face endpoint {m.endpoint} while downloading {m.repo_id} ({reason})",
                           fix=hf.ENDPOINT_FIX) from None
        raise RunFailed(f"downloading {m.repo_id} failed: {type(exc).__name__}: {exc}") from None
    write_manifest(m)
    on_event("model_done", key=m.key, state="complete", fetched=fetched, target_dir=m.target_dir, commit=m.commit)


def _run_all(pool: ThreadPoolExecutor, fn, items: list, cancel: threading.Event | None = None) -> list:
    """Map `fn` over `items` in the pool; on the first failure (or Ctrl-C) stop the rest and raise it."""
    futures = [pool.submit(fn, item) for item in items]
    try:
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # KeyboardInterrupt lands in this (main) thread
        if cancel is not None:
            cancel.set()
        for f in futures:
            f.cancel()
        raise
    failed = [f for f in done if f.exception() is not None]
    if failed:
        if cancel is not None:
            cancel.set()  # running transfers stop at their next chunk; their partials stay resumable
        for p in pending:
            p.cancel()
        wait(pending)
        raise failed[0].exception()
    return [f.result() for f in futures]


def verify(models: tuple[Model, ...], roots: dict[str, str], *, endpoint: str, token: str | None,
           revision: str = "main", workers: int, on_event: EventSink) -> list[dict]:
    """Re-hash every file of each model against the hub; write or remove the manifest accordingly."""
    results = []
    for model in models:
        target = model_dir(model, roots[model.mount])
        try:
            listing = included(model, hf.list_repo(model.repo_id, revision, endpoint, token,
                                                   on_retry=_retry_reporter(on_event, endpoint)))
        except hf.Unreachable as exc:
            listing = _listing_from_manifest(target)
            if listing is None:
                raise
            on_event("warning", message=f"{exc.message}; checking {model.key} against its manifest instead")
        plan = plan_model(model, listing, {}, str(target))
        progress = ByteProgress(on_event, "verify", plan.total_bytes, 0)
        ledger = Ledger(target, listing.commit)
        bad: list[str] = []
        missing: list[str] = []

        def one(step: FileStep) -> None:
            path = target / step.path
            if not path.is_file():
                missing.append(step.path)
                on_event("file", key=model.key, path=step.path, status="missing")
            elif matches(path, step):
                ledger.record(step.path, expected_hash(step))
            else:
                bad.append(step.path)
                on_event("file", key=model.key, path=step.path, status="mismatch")
            progress.add(step.size)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            _run_all(pool, one, list(plan.files))
        progress.flush()
        if not bad and not missing:
            write_manifest(plan)
            state = "complete"
        else:
            if target.is_dir():
                remove_manifest(target)
                ledger.forget(bad + missing)
            state = "absent" if len(missing) == len(plan.files) else "partial"
        result = {"key": model.key, "repo": model.repo_id, "commit": listing.commit, "target_dir": str(target),
                  "state": state, "bad": sorted(bad), "missing": sorted(missing), "files": len(plan.files)}
        on_event("verified", **result)
        results.append(result)
    return results


def _listing_from_manifest(target: Path) -> RemoteListing | None:
    """The hub's facts as the manifest recorded them, for verifying without a network."""
    manifest = read_manifest(target)
    if manifest is None:
        return None
    files = tuple(
        RemoteFile(path=rel, size=int(info["size"]), sha256=info.get("sha256"), blob_id=info.get("git_sha1"))
        for rel, info in manifest["files"].items()
    )
    return RemoteListing(repo_id=manifest.get("repo", ""), revision=manifest.get("revision", ""),
                         commit=manifest.get("commit", ""), files=files, source=manifest.get("source", "hf"),
                         endpoint=manifest.get("endpoint", ""))
