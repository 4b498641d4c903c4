"""Checking files against the hub's hashes, the per-file ledger, and the completion manifest.

The hub identifies LFS files by the sha256 of their payload and regular files by their git blob
sha1; both are recomputed here from the bytes on disk. Two records live in a model directory:

- the ledger (`.cache/wan22ctl/verified.json`): every file checked so far, with size and mtime,
  so an interrupted download does not re-hash 100 GB of good shards when it resumes;
- the manifest (`.wan22ctl-manifest.json`): written only when every file of the commit matched,
  it is what makes `model_state()` say "complete".
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from wan22ctl.hub.state import LEDGER_RELPATH, MANIFEST_NAME
from wan22ctl.plan.download import FileStep, ModelPlan

_CHUNK = 8 * 1024 * 1024


def new_hasher(step: FileStep):
    """A hashlib object that yields the hub's id for `step` once fed the file's bytes (None: no id listed)."""
    if step.sha256:
        return hashlib.sha256()
    if step.blob_id:
        return hashlib.sha1(f"blob {step.size}\0".encode())
    return None


def file_digest(path: Path, git_blob: bool = False) -> str:
    """sha256 of the file, or its git blob sha1 (what the hub lists for non-LFS files)."""
    if git_blob:
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def matches(path: Path, step: FileStep) -> bool:
    """Whether the file on disk is exactly the hub's file (size first, then the hash)."""
    try:
        if path.stat().st_size != step.size:
            return False
    except OSError:
        return False
    if step.sha256:
        return file_digest(path) == step.sha256
    if step.blob_id:
        return file_digest(path, git_blob=True) == step.blob_id
    return True  # the hub gave no hash; size is all we can check


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Ledger:
    """Files of one directory already checked against a commit; thread-safe, saved after each change."""

    def __init__(self, directory: Path, commit: str):
        self.directory = directory
        self.path = directory / LEDGER_RELPATH
        self.commit = commit
        self._lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("commit") == commit:
                self.entries = data.get("files", {})
        except (OSError, ValueError):
            pass

    def vouches(self, rel: str, expect_hash: str | None) -> bool:
        """True when `rel` was verified and is untouched since (same size and mtime, same expected hash)."""
        entry = self.entries.get(rel)
        if not entry:
            return False
        try:
            st = (self.directory / rel).stat()
        except OSError:
            return False
        return st.st_size == entry["size"] and st.st_mtime_ns == entry["mtime_ns"] and entry.get("hash") == expect_hash

    def record(self, rel: str, expect_hash: str | None) -> None:
        st = (self.directory / rel).stat()
        with self._lock:
            self.entries[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": expect_hash}
            self._save()

    def forget(self, rels: list[str]) -> None:
        with self._lock:
            for rel in rels:
                self.entries.pop(rel, None)
            self._save()

    def _save(self) -> None:
        try:
            _atomic_write_json(self.path, {"commit": self.commit, "files": self.entries})
        except OSError:
            pass  # a full disk must not turn a good download into a failure; the next run re-hashes


def expected_hash(step: FileStep) -> str | None:
    return step.sha256 or step.blob_id


def write_manifest(plan: ModelPlan) -> dict:
    """Mark the directory complete: repo, commit, and every file's size and hash."""
    data = {
        "repo": plan.repo_id,
        "revision": plan.revision,
        "commit": plan.commit,
        "source": plan.source,
        "endpoint": plan.endpoint,
        "model": plan.key,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_bytes": plan.total_bytes,
        "files": {
            f.path: {"size": f.size, **({"sha256": f.sha256} if f.sha256 else {}),
                     **({"git_sha1": f.blob_id} if f.blob_id and not f.sha256 else {})}
            for f in sorted(plan.files, key=lambda f: f.path)
        },
    }
    _atomic_write_json(Path(plan.target_dir) / MANIFEST_NAME, data)
    return data


def remove_manifest(directory: Path) -> None:
    try:
        (directory / MANIFEST_NAME).unlink()
    except FileNotFoundError:
        pass
