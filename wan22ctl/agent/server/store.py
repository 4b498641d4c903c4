"""The persistent job queue: one SQLite database in WAL mode on the outputs volume.

Every state change is one committed transaction with `synchronous=FULL`, so a `kill -9` or a
power cut loses nothing that a client was told: a job the server answered 201 for is in the
file, a job marked succeeded has its video and sidecar on disk first, and a video is published
under its final name only after the running job's record names it (`set_output`). At start-up
`recover()` applies the interrupted-job policy to whatever was running when the server died.

Live progress (step, ETA, seconds per step) is kept in memory by the worker, not here: it is
worthless after a restart, and writing it per step would only slow the queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    output TEXT,
    sidecar TEXT,
    seed INTEGER,
    steps_done INTEGER,
    timings TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


def list_query(table: str, mark: str, state: str | None, limit: int, after_seq: int, newest_first: bool,
               before_seq: int | None) -> tuple[str, tuple]:
    """(SQL, arguments) of `list` for either store (`mark`: the driver's placeholder): jobs in
    submission order or newest first, optionally of one state, between sequence numbers."""
    where, args = [f"seq > {mark}"], [after_seq]
    if before_seq is not None:
        where.append(f"seq < {mark}")
        args.append(before_seq)
    if state:
        where.append(f"state = {mark}")
        args.append(state)
    order = "DESC" if newest_first else "ASC"
    return f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT {mark}", (*args, limit)


@dataclass(frozen=True)
class Job:
    """One row of the queue, as the API shows it (less live progress)."""

    seq: int
    id: str
    idempotency_key: str | None
    request_hash: str
    state: str
    params: dict
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    cancel_requested: bool
    error: str | None
    output: str | None
    sidecar: str | None
    seed: int | None
    steps_done: int | None
    timings: dict | None
    owner: str | None = None  # the replica running it (shared queue only)
    progress: dict | None = None  # live progress as its replica last wrote it (shared queue only)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["timings"] = json.loads(d["timings"]) if d.get("timings") else None
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request."""


class StoreUnavailable(Exception):
    """The queue database cannot be reached right now (a shared queue's network or server)."""


@dataclass
class _Submission:
    """One `submit` call waiting for the transaction that writes it: outcome (job, created) or an error."""

    params: dict
    request_hash: str
    idempotency_key: str | None
    outcome: object = None


class JobStore:
    """Thread-safe access to the queue database (one connection, one lock).

    One server owns the file, so there are no leases: `lease_s` is None and the hooks a shared
    queue needs (`renew`, `report_progress`, `listen`, `problem`) do nothing here.
    """

    lease_s: float | None = None
    problem: str | None = None

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # Reads go through a second connection: under WAL they see every committed change and
        # never wait for a writer's fsync (a burst of submits must not stall every GET).
        self._read_lock = threading.Lock()
        self._reader = self._connect()
        self._pending: list[_Submission] = []
        self._pending_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()

    def listen(self, on_event) -> None:
        """Every change comes from this process, so there is nothing to hear."""

    def renew(self, job_id: str) -> str | None:
        return None

    def report_progress(self, job_id: str, progress: dict) -> None:
        """Live progress stays in the worker's memory (see the module docstring)."""

    def interrupted(self) -> list[Job]:
        """The jobs this server was running when it stopped: every running job (it owns the file)."""
        return self.list("running", limit=1_000_000)

    def _one(self, sql: str, args: tuple = (), db: sqlite3.Connection | None = None) -> Job | None:
        row = (db or self._db).execute(sql, args).fetchone()
        return Job.from_row(row) if row else None

    # ------------------------------------------------------------------ submit / read

    def submit(self, params: dict, request_hash: str, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job; with a known idempotency key return the earlier job instead. (job, created).

        Submissions that arrive together are written in one transaction (one fsync for all):
        whichever thread gets the lock first writes every submission waiting by then.
        """
        mine = _Submission(params, request_hash, idempotency_key)
        with self._pending_lock:
            self._pending.append(mine)
        with self._lock:
            if mine.outcome is None:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._submit_batch(batch)
        if isinstance(mine.outcome, BaseException):
            raise mine.outcome
        return mine.outcome

    def _submit_batch(self, batch: list["_Submission"]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sub in batch:
                sub.outcome = self._insert(sub)
            self._db.execute("COMMIT")
        except BaseException as exc:
            self._db.execute("ROLLBACK")
            for sub in batch:
                sub.outcome = exc
            if not isinstance(exc, Exception):
                raise

    def _insert(self, sub: "_Submission"):
        if sub.idempotency_key:
            old = self._one("SELECT * FROM jobs WHERE idempotency_key=?", (sub.idempotency_key,))
            if old is not None:
                return (old, False) if old.request_hash == sub.request_hash else IdempotencyConflict(sub.idempotency_key)
        job_id = "video_" + uuid.uuid4().hex[:24]
        self._db.execute(
            "INSERT INTO jobs (id, idempotency_key, request_hash, state, params, created_at) VALUES (?,?,?,?,?,?)",
            (job_id, sub.idempotency_key, sub.request_hash, "queued", json.dumps(sub.params, sort_keys=True),
             time.time()),
        )
        return self._one("SELECT * FROM jobs WHERE id=?", (job_id,)), True

    def get(self, job_id: str) -> Job | None:
        with self._read_lock:
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,), self._reader)

    def list(self, state: str | None = None, limit: int = 100, after_seq: int = 0, newest_first: bool = False,
             before_seq: int | None = None) -> list[Job]:
        """Jobs in submission order (or newest first), optionally of one state, between sequence numbers."""
        sql, args = list_query("jobs", "?", state, limit, after_seq, newest_first, before_seq)
        with self._read_lock:
            return [Job.from_row(r) for r in self._reader.execute(sql, args).fetchall()]

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, zero when none)."""
        with self._read_lock:
            rows = self._reader.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = {s: 0 for s in STATES}
        counts.update({r[0]: r[1] for r in rows})
        return counts

    # ------------------------------------------------------------------ worker side

    def claim_next(self) -> Job | None:
        """Move the oldest queued job to running and return it (None when the queue is empty)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                self._db.execute(
                    "UPDATE jobs SET state='running', started_at=?, attempts=attempts+1 WHERE id=?",
                    (time.time(), row[0]),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._one("SELECT * FROM jobs WHERE id=?", (row[0],))

    def set_seed(self, job_id: str, seed: int) -> None:
        """Record the seed drawn for a job, so a re-queued job reproduces the same video."""
        with self._lock:
            self._db.execute("UPDATE jobs SET seed=? WHERE id=?", (seed, job_id))

    def finish(self, job_id: str, state: str, *, error: str | None = None, output: str | None = None,
               sidecar: str | None = None, steps_done: int | None = None, timings: dict | None = None) -> None:
        """Record a running job's end: succeeded (with its files), failed (with the reason) or cancelled."""
        assert state in TERMINAL
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state=?, finished_at=?, error=?, output=?, sidecar=?, steps_done=?, timings=? "
                "WHERE id=?",
                (state, time.time(), error, output, sidecar, steps_done, json.dumps(timings) if timings else None,
                 job_id),
            )

    def set_output(self, job_id: str, output: str | None, sidecar: str | None) -> None:
        """Record where a running job's video and sidecar go, before they are published there:
        recovery then knows which files are the job's (`Service.recover_outputs`)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET output=?, sidecar=? WHERE id=? AND state='running'",
                             (output, sidecar, job_id))

    def note_error(self, job_id: str, reason: str) -> None:
        """Keep a running job's failure reason across the restart that follows (torchrun ranks)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET error=? WHERE id=?", (reason, job_id))

    def requeue(self, job_id: str) -> None:
        """Put a running job back at its place in the queue (the server is stopping; not the job's fault)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state='queued', started_at=NULL, attempts=MAX(attempts-1, 0) "
                             "WHERE id=? AND state='running'", (job_id,))

    def queue_position(self, seq: int) -> int:
        """How many queued jobs are ahead of the one with this sequence number."""
        with self._read_lock:
            return self._reader.execute("SELECT COUNT(*) FROM jobs WHERE state='queued' AND seq<?", (seq,)).fetchone()[0]

    def queued_seqs(self) -> list[int]:
        """The queued jobs' sequence numbers, oldest first (queue positions for a listing)."""
        with self._read_lock:
            return [r[0] for r in self._reader.execute("SELECT seq FROM jobs WHERE state='queued' ORDER BY seq")]

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; mark a running one so the worker stops it at the next step."""
        with self._lock:
            job = self._one("SELECT * FROM jobs WHERE id=?", (job_id,))
            if job is None or job.state in TERMINAL:
                return job
            if job.state == "queued":
                self._db.execute("UPDATE jobs SET state='cancelled', finished_at=?, error=? WHERE id=?",
                                 (time.time(), "cancelled before it started", job_id))
            else:
                self._db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
            return self._one("SELECT * FROM jobs WHERE id=?", (job_id,))

    def upload_users(self, key: str, sha256: str) -> int:
        """How many jobs use the upload with this hash under params[key] (image_sha256, audio_sha256, ...)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE json_extract(params, ?)=?",
                                    (f"$.{key}", sha256)).fetchone()[0]

    def delete(self, job_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,)).rowcount > 0

    def recover(self, policy: str, max_attempts: int) -> list[tuple[str, str]]:
        """Apply the interrupted-job policy to jobs left running by a crash: [(id, new state)].

        `requeue` puts them back at their place in the queue unless they already had
        `max_attempts` tries (a job that kills the server each time must not loop forever);
        `fail` marks them failed with the reason. A cancel asked before the crash is honoured.
        """
        changed = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "SELECT id, attempts, cancel_requested, error FROM jobs WHERE state='running'").fetchall()
            now = time.time()
            for job_id, attempts, cancel, last_error in rows:
                if cancel:
                    self._db.execute("UPDATE jobs SET state='cancelled', finished_at=?, error=? WHERE id=?",
                                     (now, "cancelled; the server stopped before the job ended", job_id))
                    changed.append((job_id, "cancelled"))
                elif policy == "requeue" and attempts < max_attempts:
                    self._db.execute("UPDATE jobs SET state='queued', started_at=NULL WHERE id=?", (job_id,))
                    changed.append((job_id, "queued"))
                else:
                    reason = (f"interrupted by a server restart after {attempts} attempt(s)" if policy == "requeue"
                              else "interrupted by a server restart (policy: fail)")
                    if last_error:
                        reason = f"{last_error} ({reason})"
                    self._db.execute("UPDATE jobs SET state='failed', finished_at=?, error=? WHERE id=?",
                                     (now, reason, job_id))
                    changed.append((job_id, "failed"))
            self._db.execute("COMMIT")
        return changed
