"""The shared PostgreSQL queue with real processes: several `wan22ctl-agent server` replicas,
one PostgreSQL 15 (tests/start_postgres.sh), the CPU stand-in pipeline, one outputs folder
that every replica mounts (as the RWX volume on Kubernetes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_server import STANDIN, Server, read_events

psycopg = pytest.importorskip("psycopg")


def replicas(tmp: Path, url: str, n: int, env: dict | None = None, args: tuple = ()) -> list[Server]:
    """n server processes on one queue and one outputs folder, each with its own log and calls file."""
    servers = []
    for i in range(n):
        home = tmp / f"replica{i}"
        home.mkdir()
        s = Server(home, env={"WAN22_QUEUE_URL": url, "FAKE_WAN_STEP_S": "0.01", **(env or {})}, args=args)
        s.out = tmp / "shared-out"
        servers.append(s)
    starters = [threading.Thread(target=s.start) for s in servers]  # at once: schema creation races
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    for s in servers:
        assert s.proc and s.proc.poll() is None, s.logtext()
    return servers


def stop_all(servers: list[Server]) -> None:
    for s in servers:
        s.stop()


def by_replica(servers: list[Server], job: dict) -> Server:
    return next(s for s in servers if job["replica"].endswith(f"-{s.port}"))


def test_hundred_jobs_across_three_replicas_each_done_once(tmp_path, pg_url):
    servers = replicas(tmp_path, pg_url, 3)
    try:
        ids = [servers[i % 3].submit(prompt=f"job {i}", sample_steps=4)["id"] for i in range(100)]
        final = {i: servers[(n + 1) % 3].wait(i, timeout=120) for n, i in enumerate(ids)}
        assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in final.values()), \
            Counter(j["state"] for j in final.values())
        # Each job ran exactly once, on exactly one replica: the stand-ins' own call logs.
        calls = [c for s in servers for c in s.calls_made()]
        assert Counter(c["input_prompt"] for c in calls) == Counter(f"job {i}" for i in range(100))
        assert all(c["ended"] == "ok" for c in calls)
        work = Counter(j["replica"] for j in final.values())
        assert len(work) == 3 and min(work.values()) >= 10, work  # every replica pulled
        assert len({j["output"] for j in final.values()}) == 100  # one video each, none overwritten
        # No two runs of one job overlapped: the database's start/finish times per job are single.
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM wan22_jobs WHERE state <> 'succeeded'").fetchone()[0] == 0
            assert conn.execute("SELECT version FROM wan22_schema").fetchall() == [(1,)]
        # Any replica serves any job's video from the shared volume.
        job = final[ids[0]]
        other = next(s for s in servers if s is not by_replica(servers, job))
        status, body, _ = other.api("GET", job["content_url"])
        assert status == 200 and body[4:8] == b"ftyp"
    finally:
        stop_all(servers)


def test_kill_9_replica_its_job_finishes_elsewhere(tmp_path, pg_url):
    lease, step_s, steps = 2.0, 0.05, 40  # one job: 2 s
    servers = replicas(tmp_path, pg_url, 3, env={"FAKE_WAN_STEP_S": str(step_s)},
                       args=("--lease-seconds", str(lease)))
    try:
        job = servers[0].submit(prompt="survives its replica", sample_steps=steps)
        running = servers[0].wait(job["id"], until=lambda j: j["state"] == "running" and j["replica"]
                                  and j["progress_detail"]["step"] >= 5, timeout=10)
        victim = by_replica(servers, running)
        victim.stop(signal.SIGKILL)
        killed_at = time.time()
        survivor = next(s for s in servers if s is not victim)
        final = survivor.wait(job["id"], timeout=30)
        took = time.time() - killed_at
        assert final["state"] == "succeeded" and final["attempts"] == 2, final
        assert final["replica"] != running["replica"]
        assert took < lease + steps * step_s + 1.5, took  # lease + one job time (+ scheduling slack)
        assert "stopped renewing the lease; now queued" in "".join(s.logtext() for s in servers if s is not victim)
    finally:
        stop_all(servers)


def test_job_that_kills_replicas_fails_after_max_attempts(tmp_path, pg_url):
    servers = replicas(tmp_path, pg_url, 2, env={"FAKE_WAN_STEP_S": "0.05"},
                       args=("--lease-seconds", "1", "--max-attempts", "2"))
    try:
        job = servers[0].submit(prompt="poison", sample_steps=400)
        for attempt in (1, 2):
            running = servers[-1].wait(job["id"], until=lambda j: j["state"] == "running" and j["attempts"] == attempt
                                       and j["replica"], timeout=15)
            victim = by_replica(servers, running)
            victim.stop(signal.SIGKILL)
            victim.start()  # a new pod, the same name: it reaps its own job at start
        final = servers[0].wait(job["id"], timeout=15)
        assert final["state"] == "failed" and "attempt 2 of 2" in final["error"]["message"], final
    finally:
        stop_all(servers)


def test_cancel_through_another_replica_stops_at_the_next_step(tmp_path, pg_url):
    servers = replicas(tmp_path, pg_url, 3, env={"FAKE_WAN_STEP_S": "0.05"})
    try:
        job = servers[0].submit(prompt="cancel me from afar", sample_steps=400)
        running = servers[0].wait(job["id"], until=lambda j: j["state"] == "running" and j["replica"]
                                  and j["progress_detail"]["step"] >= 3, timeout=10)
        runner = by_replica(servers, running)
        other = next(s for s in servers if s is not runner)
        step_before = runner.api("GET", f"/v1/videos/{job['id']}")[1]["progress_detail"]["step"]
        status, body, _ = other.api("POST", f"/v1/videos/{job['id']}/cancel")
        assert status == 200 and body["cancel_requested"] is True
        final = other.wait(job["id"], timeout=20)
        assert final["state"] == "cancelled"
        call = next(c for c in runner.calls_made() if c["input_prompt"] == "cancel me from afar")
        # NOTIFY reaches the runner at once: a few steps later, not a lease renewal (10 s = 200 steps) later
        assert call["ended"] == "JobCancelled" and call["steps_done"] - step_before <= 20, (step_before, call)
        # A queued job cancelled anywhere never starts: replica 1 now serves another task, so it
        # answers for this queue's jobs but does not claim them.
        stop_all(servers[1:])
        blocker = servers[0].submit(prompt="blocker", sample_steps=60)
        queued = servers[0].submit(prompt="never runs", sample_steps=4)
        servers[0].wait(blocker["id"], until=lambda j: j["state"] == "running")
        servers[1].task = "ti2v-5B"
        servers[1].start()
        assert servers[1].api("POST", f"/v1/videos/{queued['id']}/cancel")[1]["state"] == "cancelled"
        assert servers[0].wait(blocker["id"])["state"] == "succeeded"
        assert not any(c["input_prompt"] == "never runs" for s in servers for c in s.calls_made())
    finally:
        stop_all(servers)


def test_idempotency_keys_hold_across_replicas(tmp_path, pg_url):
    servers = replicas(tmp_path, pg_url, 3)
    try:
        body = {"prompt": "once only", "size": "832*480", "sample_steps": 3, "seed": 7}
        s1, first, _ = servers[0].api("POST", "/v1/videos", body, headers={"Idempotency-Key": "k-1"})
        s2, again, _ = servers[1].api("POST", "/v1/videos", body, headers={"Idempotency-Key": "k-1"})
        s3, clash, _ = servers[2].api("POST", "/v1/videos", body | {"seed": 8}, headers={"Idempotency-Key": "k-1"})
        assert (s1, s2, s3) == (201, 200, 409) and again["id"] == first["id"], (again, clash)
        assert clash["error"]["param"] == "Idempotency-Key"

        # The same key sent to every replica at once still makes one job.
        results = []

        def send(s):
            results.append(s.api("POST", "/v1/videos", body | {"prompt": "raced"}, headers={"Idempotency-Key": "k-2"}))

        threads = [threading.Thread(target=send, args=(s,)) for s in servers for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r[0] for r in results) == [200] * 11 + [201]
        assert len({r[1]["id"] for r in results}) == 1
        servers[0].wait(first["id"])
    finally:
        stop_all(servers)


def test_any_replica_shows_progress_and_streams_events(tmp_path, pg_url):
    servers = replicas(tmp_path, pg_url, 2, env={"FAKE_WAN_STEP_S": "0.05"})
    try:
        servers[1].stop()  # the job runs on replica 0; replica 1 comes back to watch it
        job = servers[0].submit(prompt="watched from afar", sample_steps=80)
        servers[1].start()
        seen = servers[1].wait(job["id"], until=lambda j: j["state"] == "running" and j["progress_detail"]["step"] >= 5)
        assert seen["progress_detail"]["phase"] == "denoising" and seen["progress_detail"]["total"] == 80
        assert seen["progress_detail"]["seconds_per_step"] > 0.03 and seen["replica"].endswith(f"-{servers[0].port}")
        events = read_events(servers[1].api, job["id"])
        assert events[-1][0] == "succeeded"
        steps = [d["progress_detail"]["step"] for n, d in events if n == "progress" and d["state"] == "running"]
        assert steps == sorted(steps) and len(set(steps)) >= 3, steps  # live, not only at the end
        listing = servers[1].api("GET", "/v1/videos?state=succeeded")[1]
        assert [j["id"] for j in listing["data"]] == [job["id"]]
        assert servers[1].api("DELETE", f"/v1/videos/{job['id']}")[0] == 200
        assert servers[0].api("GET", f"/v1/videos/{job['id']}")[0] == 404
    finally:
        stop_all(servers)


def _agent_server(tmp_path, url: str) -> subprocess.CompletedProcess:
    from tests.conftest import clean_environ

    return subprocess.run(
        [sys.executable, "-m", "wan22ctl.agent", "server", "--task", "t2v-A14B", "--pipeline", STANDIN,
         "--ckpt-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--port", "1"],
        cwd=REPO, env=clean_environ() | {"WAN22_QUEUE_URL": url}, capture_output=True, text=True, timeout=60)


def test_unreachable_or_wrong_queue_url_exits_3_without_the_password(tmp_path, pg_admin_url):
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(pg_admin_url)
    password = info["password"]
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cases = {
        f"postgresql://wan22:{password}@127.0.0.1:{port}/postgres": (f"127.0.0.1:{port}", "start PostgreSQL"),
        f"postgresql://wan22:not-{password}@127.0.0.1:{info['port']}/postgres": ("password authentication failed",
                                                                                  "check the user and password"),
        f"postgresql://wan22:{password}@127.0.0.1:{info['port']}/no_such_db": ("no_such_db", "create the database"),
    }
    for url, (where, fix) in cases.items():
        out = _agent_server(tmp_path, url)
        assert out.returncode == 3, out.stderr
        lines = out.stderr.strip().splitlines()
        assert lines[0].startswith("error: cannot reach the job queue at postgresql://wan22@127.0.0.1:")
        assert where in lines[0] and fix in lines[1] and len(lines) == 2, lines
        assert password not in out.stdout + out.stderr
    assert not (tmp_path / "out" / ".wan22ctl" / "server" / "queue.sqlite3").exists()  # no silent fallback
    out = _agent_server(tmp_path, "mysql://x@y/z")
    assert out.returncode == 2 and "must be a postgresql:// URL" in out.stderr


class CuttableProxy:
    """A TCP forwarder between the server and PostgreSQL that a test can cut and restore."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.open = False
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.socks = []

    def restore(self):
        self.open = True


def test_queue_lost_at_run_time_turns_readyz_503_until_it_returns(tmp_path, pg_url):
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(pg_url)
    proxy = CuttableProxy(("127.0.0.1", int(info["port"])))
    url = f"postgresql://{info['user']}:{info['password']}@127.0.0.1:{proxy.port}/{info['dbname']}"
    s = Server(tmp_path, env={"WAN22_QUEUE_URL": url}, args=("--lease-seconds", "2")).start()
    try:
        assert s.api("GET", "/readyz")[0] == 200
        proxy.cut()
        deadline = time.time() + 10
        while (status := s.api("GET", "/readyz"))[0] != 503:
            assert time.time() < deadline, status
            time.sleep(0.1)
        body = status[1]
        assert body["phase"] == "queue unreachable" and f"127.0.0.1:{proxy.port}" in body["error"]
        assert info["password"] not in json.dumps(body) + s.logtext()
        status, err, headers = s.api("GET", "/v1/videos", timeout=30)
        assert status == 503 and headers["Retry-After"] == "5" and "unreachable" in err["error"]["message"]
        proxy.restore()
        deadline = time.time() + 15
        while s.api("GET", "/readyz")[0] != 200:
            assert time.time() < deadline, s.logtext()[-2000:]
            time.sleep(0.1)
        assert s.wait(s.submit(prompt="after the outage", sample_steps=3)["id"])["state"] == "succeeded"
    finally:
        s.stop()


def test_schema_is_created_once_and_a_newer_one_is_refused(pg_url):
    from wan22ctl.agent.server.pgstore import SCHEMA_VERSION, PgJobStore
    from wan22ctl.errors import EnvError

    stores, errors = [], []
    barrier = threading.Barrier(4)

    def open_one(i):
        barrier.wait()
        try:
            stores.append(PgJobStore(pg_url, task="t2v-A14B", replica=f"r{i}"))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    for store in stores:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM wan22_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE wan22_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(EnvError, match=f"version {SCHEMA_VERSION + 1}, newer than"):
        PgJobStore(pg_url, task="t2v-A14B", replica="old")


def test_a_replica_that_lost_its_lease_cannot_record_the_end(pg_url):
    from wan22ctl.agent.server.pgstore import PgJobStore

    a = PgJobStore(pg_url, task="t2v-A14B", replica="a", lease_s=0.3)
    b = PgJobStore(pg_url, task="t2v-A14B", replica="b", lease_s=30)
    try:
        job, created = a.submit({"task": "t2v-A14B", "prompt": "p"}, "h")
        assert created and a.claim_next().id == job.id and b.claim_next() is None  # taken: skipped
        assert a.renew(job.id) is None
        time.sleep(0.5)  # a "paused" past its lease
        assert b.reap() == [(job.id, "queued")]
        assert b.claim_next().id == job.id
        assert a.renew(job.id) == "lost"
        a.finish(job.id, "failed", error="late")
        b.finish(job.id, "succeeded", output="/x.mp4")
        final = b.get(job.id)
        assert (final.state, final.output, final.error, final.attempts, final.owner) == \
               ("succeeded", "/x.mp4", None, 2, "b")
        other, _ = a.submit({"task": "ti2v-5B", "prompt": "p"}, "h2")
        assert a.claim_next() is None  # another task's job: left for its own replicas
    finally:
        a.close()
        b.close()


def test_api_only_replica_accepts_jobs_while_no_gpu_replica_runs(tmp_path, pg_url):
    (tmp_path / "front").mkdir()
    front = Server(tmp_path / "front", env={"WAN22_QUEUE_URL": pg_url, "FAKE_WAN_LOAD_S": "30"}, args=("--api-only",))
    front.out = tmp_path / "shared-out"
    front.start()  # ready at once: the pipeline (30 s here) is never loaded
    try:
        job = front.submit(prompt="waits for a GPU replica", sample_steps=3)
        time.sleep(1.0)
        assert front.api("GET", f"/v1/videos/{job['id']}")[1]["state"] == "queued"
        worker = replicas(tmp_path, pg_url, 1)[0]
        try:
            done = front.wait(job["id"], timeout=30)
            assert done["state"] == "succeeded" and done["replica"].endswith(f"-{worker.port}")
            assert front.api("GET", done["content_url"])[0] == 200
        finally:
            worker.stop()
    finally:
        front.stop()
    out = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "server", "--api-only", "--pipeline", STANDIN],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "WAN22_QUEUE_URL"})
    assert out.returncode == 2 and "set WAN22_QUEUE_URL" in out.stderr


def test_the_image_and_the_queue_extra_install_the_same_driver():
    """docker/requirements-server.txt (Wan2.2's Python in the image) and `pip install wan22ctl[queue]`."""
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["queue"]
    lines = [ln.strip() for ln in (REPO / "docker" / "requirements-server.txt").read_text().splitlines()]
    assert [ln for ln in lines if ln.startswith("psycopg")] == extra


def test_a_dead_replicas_half_published_video_is_settled_by_the_reaper(tmp_path, pg_url):
    """A replica that died while publishing: both files there -> the job succeeded; only the video
    -> it is removed and the job runs again (no orphan, no duplicate video)."""
    from wan22ctl.agent.server.pgstore import PgJobStore

    a = PgJobStore(pg_url, task="t2v-A14B", replica="a", lease_s=0.3)
    b = PgJobStore(pg_url, task="t2v-A14B", replica="b", lease_s=30)
    try:
        done, _ = a.submit({"task": "t2v-A14B", "prompt": "published"}, "h1")
        half, _ = a.submit({"task": "t2v-A14B", "prompt": "half"}, "h2")
        for job, files in ((done, ("done.mp4", "done.json")), (half, ("half.mp4",))):
            assert a.claim_next().id == job.id
            a.set_output(job.id, str(tmp_path / f"{job.id}.mp4"), str(tmp_path / f"{job.id}.json"))
            for name in files:
                (tmp_path / f"{job.id}{Path(name).suffix}").write_bytes(b"x")
        time.sleep(0.5)
        assert sorted(b.reap()) == sorted([(done.id, "succeeded"), (half.id, "queued")])
        assert b.get(done.id).output == str(tmp_path / f"{done.id}.mp4")
        assert not (tmp_path / f"{half.id}.mp4").exists() and b.get(half.id).output is None
    finally:
        a.close()
        b.close()


def test_up_serve_joins_the_shared_queue_without_showing_its_password(tmp_path, pg_url):
    """WAN22_QUEUE_URL in .env: `up --serve` gives the server `--queue-url-file` (the URL holds a
    password: a mode-600 file on the outputs mount, as the API key), never the URL in its spec; a
    server started that way is a replica of the shared queue."""
    from tests.conftest import clean_environ

    secret_url = "postgresql://wan:pw-not-in-the-spec-42@db.example:5432/queue"
    r = subprocess.run([sys.executable, "-m", "wan22ctl", "up", "--serve", "--dry-run", "--json"], cwd=tmp_path,
                       env=clean_environ() | {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "GPUS": "none",
                                              "CHECKPOINT_DIR": str(tmp_path / "ckpt"), "OUTPUT_DIR": str(tmp_path / "out"),
                                              "SERVER_TASK": "ti2v-5B", "WAN22_QUEUE_URL": secret_url},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)["container"]["command"]
    assert command[command.index("--queue-url-file") + 1] == "/opt/outputs/.wan22ctl/server/queue_url"
    assert "pw-not-in-the-spec-42" not in r.stdout + r.stderr

    url_file = tmp_path / "queue_url"
    url_file.write_text(pg_url + "\n")
    home = tmp_path / "replica"
    home.mkdir()
    s = Server(home, env={"FAKE_WAN_STEP_S": "0.01"}, args=("--queue-url-file", str(url_file))).start()
    try:
        job = s.wait(s.submit(prompt="through the file", sample_steps=2)["id"])
        assert job["state"] == "succeeded" and job["replica"].endswith(f"-{s.port}"), job
    finally:
        s.stop()
