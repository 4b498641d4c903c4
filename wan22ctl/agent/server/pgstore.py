"""The shared job queue: PostgreSQL through psycopg 3, for any number of server replicas.

`WAN22_QUEUE_URL=postgresql://…` makes the server use this store instead of the SQLite file
(`store.JobStore`); both offer the same methods, so the service and the HTTP routes do not know
which one they talk to. What differs is what many replicas need:

- **Claiming.** `claim_next()` takes the oldest queued job of this replica's task with
  `SELECT … FOR UPDATE SKIP LOCKED` and marks it running, owned by this replica, with a lease
  that ends `lease_s` seconds later (database time, so replicas' clocks do not matter).
- **Leases.** The running replica calls `renew()` every `lease_s / 3`; it answers "cancel" when
  another replica asked to cancel the job and "lost" when the lease is no longer this replica's.
  A replica that dies stops renewing: any replica's reaper (every `lease_s / 4`) puts the job
  back to `queued`, or marks it failed once it has used `max_attempts` attempts (a job that kills
  its replica each time must not loop forever). Every write of a running job is conditional on
  `owner`, so a replica that lost its lease can never overwrite the job's new run.
- **Notifications.** Each change sends `NOTIFY wan22ctl` (in the same statement or transaction):
  `queued:<task>` wakes idle replicas at once instead of at their next poll, `cancel:<id>` stops
  the job at its replica's next step, `changed:<id>` wakes event streams on every replica.
  A missed notification costs latency only: workers still poll and `renew()` reports cancels.
- **Progress** of the running job is written to the row (at most every PROGRESS_EVERY_S, and at
  every phase change), so any replica answers GET and the event stream for any job.
- **Schema** is versioned (`wan22_schema`) and migrated at start under an advisory lock, so two
  replicas starting at once do not race.

Errors: an unreachable or refused database at start is an `EnvError` (exit 3) naming
user@host:port/db and the fix; the password is never part of a message. At run time a lost
connection raises `StoreUnavailable` and sets `problem`, which turns /readyz to 503 until the
database answers again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Callable

from wan22ctl.agent.server.store import STATES, TERMINAL, IdempotencyConflict, Job, StoreUnavailable, list_query
from wan22ctl.agent.outputs import settle_files
from wan22ctl.errors import EnvError

log = logging.getLogger("wan22ctl.server")

CHANNEL = "wan22ctl"
TABLE = "wan22_jobs"
SCHEMA_TABLE = "wan22_schema"
MIGRATION_LOCK = 0x77616E3232  # pg_advisory_xact_lock key ("wan22"): one migrator at a time
PROGRESS_EVERY_S = 0.5
DEFAULT_LEASE_S = 30.0
_NOW = "extract(epoch from clock_timestamp())::double precision"

# Each entry moves the schema from version N-1 to N; entries are never edited once released.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, f"""
CREATE TABLE {TABLE} (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT NOT NULL,
    task TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s}'" for s in STATES)})),
    params JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    error TEXT,
    output TEXT,
    sidecar TEXT,
    seed BIGINT,
    steps_done INTEGER,
    timings JSONB,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    progress JSONB
);
CREATE INDEX {TABLE}_queued ON {TABLE} (task, seq) WHERE state = 'queued';
CREATE INDEX {TABLE}_leases ON {TABLE} (lease_until) WHERE state = 'running';
CREATE INDEX {TABLE}_state ON {TABLE} (state, seq);
"""),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

# What KEDA's postgresql trigger counts (plan/kube.py renders it): the jobs replicas have to serve.
def backlog_query(task: str) -> str:
    """Queued plus running jobs of one task: the number of replicas that has work."""
    if not re.fullmatch(r"[A-Za-z0-9.-]+", task):
        raise ValueError(task)
    return f"SELECT COUNT(*) FROM {TABLE} WHERE task = '{task}' AND state IN ('queued', 'running')"


def describe_url(url: str) -> str:
    """user@host:port/dbname of a connection URL, without its password (for messages and /v1/info)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "(an unparsable WAN22_QUEUE_URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or info.get("hostaddr") or "localhost"
    return f"postgresql://{user}{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def _scrub(text: str, url: str) -> str:
    """A driver message with the URL's password (if it appears at all) removed."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:
        password = None
    text = " ".join(str(text).split())
    return text.replace(password, "***") if password else text


def _connect_error(url: str, exc: Exception) -> EnvError:
    where = describe_url(url)
    reason = _scrub(str(exc), url)
    if "password authentication failed" in reason or "no password supplied" in reason:
        fix = "check the user and password in WAN22_QUEUE_URL (the Secret it comes from)"
    elif "does not exist" in reason:
        fix = "create the database (createdb) or name an existing one in WAN22_QUEUE_URL"
    else:
        fix = ("start PostgreSQL or correct the host and port in WAN22_QUEUE_URL; "
               "unset it to use the embedded SQLite queue")
    return EnvError(f"cannot reach the job queue at {where}: {reason}", fix=fix)


class PgJobStore:
    """The shared queue of one replica: a small connection pool plus one listening connection."""

    def __init__(self, url: str, *, task: str, replica: str, lease_s: float = DEFAULT_LEASE_S,
                 connect_timeout: float = 5.0, pool_size: int = 8):
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self.url = url
        self.location = describe_url(url)
        self.task = task
        self.replica = replica
        self.lease_s = float(lease_s)
        self.problem: str | None = None
        self.policy, self.max_attempts = "requeue", 2
        self._recovered = False
        self._connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._progress_pending: tuple[str, dict] | None = None
        self._progress_writer: threading.Thread | None = None
        self._claimed_seed: dict[str, int] = {}
        try:
            with psycopg.connect(url, connect_timeout=connect_timeout, autocommit=True) as conn:
                self._migrate(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise EnvError(f"the job queue at {self.location} refuses to create its tables: {_scrub(exc, url)}",
                           fix="give the user CREATE on its schema (GRANT CREATE ON SCHEMA public TO <user>), "
                               "or let the database's owner connect") from None
        except psycopg.OperationalError as exc:
            raise _connect_error(url, exc) from None
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=connect_timeout,
                                    kwargs={"autocommit": True, "row_factory": dict_row,
                                            "connect_timeout": connect_timeout},
                                    name=f"wan22ctl-{replica}")
        self._listener: threading.Thread | None = None

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _migrate(conn) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            row = conn.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise EnvError(f"the job queue's schema is version {current}, newer than this server's "
                               f"{SCHEMA_VERSION}", fix="run the same wan22ctl version on every replica")
            for version, sql in MIGRATIONS:
                if version > current:
                    conn.execute(sql)
                    log.info("job queue schema migrated to version %d", version)
            if row is None:
                conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif current < SCHEMA_VERSION:
                conn.execute(f"UPDATE {SCHEMA_TABLE} SET version = %s", (SCHEMA_VERSION,))

    def _run(self, fn: Callable):
        """fn(connection) with a pooled connection; connection failures become StoreUnavailable."""
        psycopg = self._psycopg
        try:
            with self._pool.connection() as conn:
                result = fn(conn)
            self.problem = None
            return result
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
            self.problem = f"the job queue at {self.location} is unreachable: {_scrub(exc, self.url)}"
            raise StoreUnavailable(self.problem) from None
        except Exception as exc:
            from psycopg_pool import PoolTimeout

            if isinstance(exc, PoolTimeout):
                self.problem = f"the job queue at {self.location} is unreachable (no connection within " \
                               f"{self._connect_timeout:g} s)"
                raise StoreUnavailable(self.problem) from None
            raise

    def _rows(self, sql: str, args=()) -> list[dict]:
        return self._run(lambda c: c.execute(sql, args).fetchall())

    def _first(self, sql: str, args=()) -> dict | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    @staticmethod
    def _job(row: dict | None) -> Job | None:
        if row is None:
            return None
        fields = {k: row[k] for k in Job.__dataclass_fields__}
        return Job(**fields)

    def close(self) -> None:
        self._stop.set()
        with self._progress:
            self._progress.notify_all()
        for thread in (self._listener, self._progress_writer):
            if thread is not None:
                thread.join(timeout=5)
        self._pool.close()

    # ------------------------------------------------------------------ notifications and the reaper

    def listen(self, on_event: Callable[[str, str], None]) -> None:
        """Call on_event(kind, arg) for every notification ("queued", task), ("cancel", id),
        ("changed", id), and reap expired leases, on a thread of its own until close()."""
        self._listener = threading.Thread(target=self._listen_loop, args=(on_event,), name="queue-listener",
                                          daemon=True)
        self._listener.start()

    def _listen_loop(self, on_event) -> None:
        psycopg = self._psycopg
        every = max(self.lease_s / 4, 0.2)
        next_reap = 0.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    on_event("reconnected", "")  # what was missed while away: look again
                    while not self._stop.is_set():
                        if self._recovered and time.monotonic() >= next_reap:
                            for job_id, state in self.reap():
                                log.info("job %s: its replica stopped renewing the lease; now %s", job_id, state)
                            next_reap = time.monotonic() + every
                        for n in conn.notifies(timeout=min(every, 0.5)):
                            kind, _, arg = n.payload.partition(":")
                            on_event(kind, arg)
            except (psycopg.OperationalError, StoreUnavailable) as exc:
                self.problem = f"the job queue at {self.location} is unreachable: {_scrub(exc, self.url)}"
                log.warning("%s; retrying", self.problem)
                self._stop.wait(1.0)
            except Exception:
                log.exception("queue listener failed; restarting it")
                self._stop.wait(1.0)

    def reap(self, *, mine: bool = False) -> list[tuple[str, str]]:
        """Apply the interrupted-job policy to running jobs whose lease ended (or, with `mine`, to
        every job this replica was running before it restarted): [(id, new state)]."""
        where = "owner = %(me)s" if mine else f"lease_until < {_NOW}"

        def run(conn):
            changed = []
            with conn.transaction():
                rows = conn.execute(f"SELECT id, attempts, cancel_requested, error, owner, output, sidecar FROM {TABLE} "
                                    f"WHERE state = 'running' AND {where} FOR UPDATE SKIP LOCKED",
                                    {"me": self.replica}).fetchall()
                for r in rows:
                    # Its files were named (the video was being published): done if both made it,
                    # else what was published goes, and the job runs again.
                    if r["output"] and settle_files(r["output"], r["sidecar"]):
                        conn.execute(f"UPDATE {TABLE} SET state = 'succeeded', finished_at = {_NOW}, "
                                     f"lease_until = NULL, progress = NULL WHERE id = %s", (r["id"],))
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"changed:{r['id']}"))
                        changed.append((r["id"], "succeeded"))
                        continue
                    if r["cancel_requested"]:
                        state, error = "cancelled", "cancelled; its replica stopped before the job ended"
                    elif self.policy == "requeue" and r["attempts"] < self.max_attempts:
                        state, error = "queued", r["error"]
                    else:
                        error = (f"its replica ({r['owner']}) stopped during attempt {r['attempts']} of "
                                 f"{self.max_attempts}" if self.policy == "requeue"
                                 else f"its replica ({r['owner']}) stopped (policy: fail)")
                        state, error = "failed", f"{r['error']} ({error})" if r["error"] else error
                    done = state != "queued"
                    conn.execute(
                        f"UPDATE {TABLE} SET state = %s, error = %s, owner = NULL, lease_until = NULL, "
                        f"progress = NULL, output = NULL, sidecar = NULL, started_at = CASE WHEN %s THEN started_at END, "
                        f"finished_at = CASE WHEN %s THEN {_NOW} END WHERE id = %s",
                        (state, error, done, done, r["id"]))
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"changed:{r['id']}"))
                    changed.append((r["id"], state))
                if any(s == "queued" for _, s in changed):
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"queued:{self.task}"))
            return changed

        return self._run(run)

    def recover(self, policy: str, max_attempts: int) -> list[tuple[str, str]]:
        """At start: remember the policy for the reaper, then apply it to this replica's own
        interrupted jobs (same replica id: it restarted) and to any expired lease."""
        self.policy, self.max_attempts = policy, max_attempts
        changed = self.reap(mine=True) + self.reap()
        self._recovered = True  # the listener's reaper may run now, with this policy
        return changed

    # ------------------------------------------------------------------ submit / read

    def submit(self, params: dict, request_hash: str, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Queue a job; with a known idempotency key (from any replica) return the earlier job."""
        from psycopg.types.json import Jsonb

        job_id = "video_" + uuid.uuid4().hex[:24]
        task = params.get("task", self.task)

        def run(conn):
            row = conn.execute(
                f"WITH ins AS (INSERT INTO {TABLE} (id, idempotency_key, request_hash, task, state, params, created_at) "
                f"VALUES (%s, %s, %s, %s, 'queued', %s, {_NOW}) ON CONFLICT (idempotency_key) DO NOTHING RETURNING *) "
                f"SELECT ins.*, pg_notify(%s, %s) AS _n FROM ins",
                (job_id, idempotency_key, request_hash, task, Jsonb(params), CHANNEL, f"queued:{task}")).fetchone()
            if row is not None:
                return row, True
            old = conn.execute(f"SELECT * FROM {TABLE} WHERE idempotency_key = %s", (idempotency_key,)).fetchone()
            return old, False

        row, created = self._run(run)
        if not created and row["request_hash"] != request_hash:
            raise IdempotencyConflict(idempotency_key)
        return self._job(row), created

    def get(self, job_id: str) -> Job | None:
        return self._job(self._first(f"SELECT * FROM {TABLE} WHERE id = %s", (job_id,)))

    def list(self, state: str | None = None, limit: int = 100, after_seq: int = 0, newest_first: bool = False,
             before_seq: int | None = None) -> list[Job]:
        """Jobs in submission order (or newest first), optionally of one state, between sequence numbers."""
        return [self._job(r) for r in self._rows(*list_query(TABLE, "%s", state, limit, after_seq, newest_first,
                                                             before_seq))]

    def counts(self) -> dict[str, int]:
        rows = self._rows(f"SELECT state, COUNT(*) AS n FROM {TABLE} GROUP BY state")
        counts = {s: 0 for s in STATES}
        counts.update({r["state"]: r["n"] for r in rows})
        return counts

    def queue_position(self, seq: int) -> int:
        return self._first(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE state = 'queued' AND task = %s AND seq < %s",
                           (self.task, seq))["n"]

    def queued_seqs(self) -> list[int]:
        """This task's queued jobs' sequence numbers, oldest first (queue positions for a listing)."""
        rows = self._rows(f"SELECT seq FROM {TABLE} WHERE state = 'queued' AND task = %s ORDER BY seq", (self.task,))
        return [r["seq"] for r in rows]

    def interrupted(self) -> list[Job]:
        """The jobs this replica (same replica id: it restarted) was running when it stopped."""
        rows = self._rows(f"SELECT * FROM {TABLE} WHERE state = 'running' AND owner = %s ORDER BY seq", (self.replica,))
        return [self._job(r) for r in rows]

    def upload_users(self, key: str, sha256: str) -> int:
        return self._first(f"SELECT COUNT(*) AS n FROM {TABLE} WHERE params->>%s = %s", (key, sha256))["n"]

    # ------------------------------------------------------------------ worker side

    def claim_next(self) -> Job | None:
        """Take the oldest queued job of this replica's task (skipping rows other replicas are
        claiming) and hold it with a lease."""
        row = self._first(
            f"WITH next AS (SELECT seq FROM {TABLE} WHERE state = 'queued' AND task = %(task)s ORDER BY seq "
            f"FOR UPDATE SKIP LOCKED LIMIT 1), "
            # The seed is drawn here (kept from an earlier attempt, else the request's, else random), so
            # set_seed() has nothing left to write for a job that just started.
            f"claimed AS (UPDATE {TABLE} j SET state = 'running', started_at = {_NOW}, attempts = j.attempts + 1, "
            f"seed = COALESCE(j.seed, NULLIF(GREATEST((j.params->>'seed')::bigint, -1), -1), "
            f"floor(random() * 9.2e18)::bigint), "
            f"owner = %(me)s, lease_until = {_NOW} + %(lease)s, progress = NULL FROM next WHERE j.seq = next.seq AND j.state = 'queued' "
            f"RETURNING j.*) SELECT * FROM claimed",
            {"task": self.task, "me": self.replica, "lease": self.lease_s})
        job = self._job(row)
        if job is not None:
            self._claimed_seed = {job.id: job.seed}
        return job

    def renew(self, job_id: str) -> str | None:
        """Extend this replica's lease: None, "cancel" (someone asked) or "lost" (no longer ours)."""
        row = self._first(f"UPDATE {TABLE} SET lease_until = {_NOW} + %s WHERE id = %s AND owner = %s "
                          f"AND state = 'running' RETURNING cancel_requested", (self.lease_s, job_id, self.replica))
        if row is None:
            return "lost"
        return "cancel" if row["cancel_requested"] else None

    def _update_mine(self, job_id: str, sets: str, args: tuple, notify: str | None = None, retry: bool = True,
                     durable: bool = True) -> bool:
        """An UPDATE of a job this replica runs (and still holds), and its notification, in one
        statement; False when the job is no longer this replica's. durable=False commits without
        waiting for the WAL flush (live progress: worthless after a crash, like SQLite's in memory)."""
        sql = f"UPDATE {TABLE} SET {sets} WHERE id = %s AND owner = %s AND state = 'running' RETURNING id"
        params = (*args, job_id, self.replica)
        if notify or not durable:
            async_commit = ", c AS (SELECT set_config('synchronous_commit', 'off', true) AS _c)" if not durable else ""
            note = "pg_notify(%s, %s)" if notify else "NULL"
            sql = f"WITH u AS ({sql}){async_commit} SELECT {note} AS _n FROM u{' CROSS JOIN c' if async_commit else ''}"
            params += (CHANNEL, notify) if notify else ()
        # A short outage must not lose a finished job's end: retry while the lease would still hold.
        deadline = time.monotonic() + self.lease_s
        while True:
            try:
                return bool(self._rows(sql, params))
            except StoreUnavailable:
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def set_seed(self, job_id: str, seed: int) -> None:
        if self._claimed_seed.pop(job_id, None) != seed:
            self._update_mine(job_id, "seed = %s", (seed,))

    def set_output(self, job_id: str, output: str | None, sidecar: str | None) -> None:
        """Record where a running job's video and sidecar go, before they are published there."""
        self._update_mine(job_id, "output = %s, sidecar = %s", (output, sidecar))

    def note_error(self, job_id: str, reason: str) -> None:
        self._update_mine(job_id, "error = %s", (reason,))

    def report_progress(self, job_id: str, progress: dict) -> None:
        """Hand the running job's live progress to the writer thread: the denoising loop never
        waits on the database, and only the latest progress is written (at once for a job's first
        report, so other replicas see it start, then every PROGRESS_EVERY_S)."""
        with self._progress:
            self._progress_pending = (job_id, progress)
            self._progress.notify()
        if self._progress_writer is None:
            self._progress_writer = threading.Thread(target=self._write_progress, name="progress", daemon=True)
            self._progress_writer.start()

    def _write_progress(self) -> None:
        from psycopg.types.json import Jsonb

        last_at, last_job = 0.0, None
        while not self._stop.is_set():
            with self._progress:
                while self._progress_pending is None and not self._stop.is_set():
                    self._progress.wait()
                if self._progress_pending is None:
                    return
                job_id, progress = self._progress_pending
                wait = last_at + PROGRESS_EVERY_S - time.monotonic()
                if job_id == last_job and wait > 0:
                    self._progress.wait(wait)  # a newer report, or the interval
                    continue
                self._progress_pending = None
            last_at, last_job = time.monotonic(), job_id
            try:
                self._update_mine(job_id, "progress = %s", (Jsonb(progress),), notify=f"changed:{job_id}",
                                  retry=False, durable=False)
            except StoreUnavailable:
                pass  # best effort; the lease keeper notices a lasting outage

    def _forget_progress(self) -> None:
        with self._progress:
            self._progress_pending = None

    def finish(self, job_id: str, state: str, *, error: str | None = None, output: str | None = None,
               sidecar: str | None = None, steps_done: int | None = None, timings: dict | None = None) -> None:
        from psycopg.types.json import Jsonb

        assert state in TERMINAL
        self._forget_progress()
        ok = self._update_mine(
            job_id, f"state = %s, finished_at = {_NOW}, error = %s, output = %s, sidecar = %s, steps_done = %s, "
                    f"timings = %s, lease_until = NULL, progress = NULL",
            (state, error, output, sidecar, steps_done, Jsonb(timings) if timings else None),
            notify=f"changed:{job_id}")
        if not ok:
            log.warning("job %s: its lease had passed to another replica; this run's end (%s) is not recorded",
                        job_id, state)

    def requeue(self, job_id: str) -> None:
        """Give a running job back (this replica is stopping; not the job's fault)."""
        self._forget_progress()
        self._update_mine(job_id, "state = 'queued', started_at = NULL, owner = NULL, lease_until = NULL, "
                                  "progress = NULL, attempts = GREATEST(attempts - 1, 0)", (),
                          notify=f"queued:{self.task}")

    def request_cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; mark a running one and tell its replica (any replica)."""
        def run(conn):
            with conn.transaction():
                row = conn.execute(
                    f"UPDATE {TABLE} SET "
                    f"finished_at = CASE WHEN state = 'queued' THEN {_NOW} ELSE finished_at END, "
                    f"error = CASE WHEN state = 'queued' THEN 'cancelled before it started' ELSE error END, "
                    f"cancel_requested = (state = 'running') OR cancel_requested, "
                    f"state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END "
                    f"WHERE id = %s AND state IN ('queued', 'running') RETURNING *", (job_id,)).fetchone()
                if row is None:
                    return conn.execute(f"SELECT * FROM {TABLE} WHERE id = %s", (job_id,)).fetchone()
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"cancel:{job_id}"))
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"changed:{job_id}"))
                return row

        return self._job(self._run(run))

    def delete(self, job_id: str) -> bool:
        def run(conn):
            with conn.transaction():
                n = conn.execute(f"DELETE FROM {TABLE} WHERE id = %s AND state <> 'running'", (job_id,)).rowcount
                if n:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"changed:{job_id}"))
            return n > 0

        return self._run(run)
