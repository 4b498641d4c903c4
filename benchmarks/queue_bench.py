"""Queue overhead: the shared PostgreSQL queue with 1, 3 and 6 replicas against SQLite on one.

Real server processes (`python -m wan22ctl.agent server`) with the CPU stand-in pipeline
(tests/standins/fake_wan_pipeline.py) at --step-s seconds per step, so what is measured is the
queue, not the model. Two workloads per configuration:

- **saturated**: --jobs jobs queued at once, spread over the replicas' APIs. Per job,
  *dequeue* = from the moment its replica was free to take it (its previous job's end, or the
  job's submission if later) to the claim, and *to first step* = claim to the first denoising
  step (the seed write and the hand-off); *dequeue-to-start* is their sum. jobs/s over the run.
- **idle pickup**: --idle jobs submitted one at a time to replica 0 while every replica idles:
  submission to claim, which NOTIFY (not the 1 s poll) decides for a replica that did not
  receive the request.

A second table times the store alone, without HTTP or the stand-in: N worker processes each
loop `finish(previous) → claim_next() → set_seed()` (what a replica does between two jobs) on
one queue of --store-jobs jobs; per dequeue p50/p99 and dequeues/s. On a busy machine this is
the steadier measure of what the database adds, since it has far fewer threads to schedule.

    python3 benchmarks/queue_bench.py --pg-url postgresql://wan22:PW@127.0.0.1:PORT/postgres

--pg-url must be allowed to create databases (tests/start_postgres.sh prints such a URL); each
configuration gets a fresh one. Prints a table; --json writes the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "standins" / "fake_wan_pipeline.py"
sys.path.insert(0, str(REPO))
from tests.ports import free_port, wait_answering  # noqa: E402


def api(port: int, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def start(n: int, out: Path, step_s: float, url: str | None) -> list[tuple[subprocess.Popen, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN22")}
    env |= {"PYTHONPATH": str(REPO), "FAKE_WAN_STEP_S": str(step_s)}
    if url:
        env["WAN22_QUEUE_URL"] = url
    procs = []
    for i in range(n):
        port = free_port()
        log = open(out / f"replica{i}.log", "wb")
        argv = [sys.executable, "-m", "wan22ctl.agent", "server", "--task", "t2v-A14B", "--pipeline", str(STANDIN),
                "--ckpt-dir", str(out), "--output-dir", str(out / "videos"), "--port", str(port)]
        procs.append((subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), port))
    for proc, port in procs:
        if not wait_answering(proc, functools.partial(api, port, "GET", "/readyz"), 60, 0.05):
            raise SystemExit(f"replica on {port} did not start; see {out}")
    return procs


def stop(procs) -> None:
    for proc, _ in procs:
        proc.terminate()
    for proc, _ in procs:
        proc.wait(timeout=30)


def rows(url: str | None, out: Path) -> list[dict]:
    """Every job's times (database clock), replica and timings, in submission order."""
    if url:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(url, row_factory=dict_row) as conn:
            return conn.execute("SELECT id, owner, created_at, started_at, finished_at, timings, state "
                                "FROM wan22_jobs ORDER BY seq").fetchall()
    db = sqlite3.connect(out / "videos" / ".wan22ctl/server/queue.sqlite3")
    db.row_factory = sqlite3.Row
    result = [dict(r) | {"owner": "sqlite", "timings": json.loads(r["timings"] or "null")}
              for r in db.execute("SELECT id, created_at, started_at, finished_at, timings, state FROM jobs ORDER BY seq")]
    db.close()
    return result


def wait_all(port: int, ids: list[str]) -> None:
    for job_id in ids:
        while api(port, "GET", f"/v1/videos/{job_id}")["state"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.02)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def run_config(label: str, n: int, url: str | None, args) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"queue-bench-{label}-"))
    procs = start(n, out, args.step_s, url)
    try:
        ports = [p for _, p in procs]
        body = {"prompt": "bench", "size": "832*480", "sample_steps": args.steps}
        ids = [api(ports[i % n], "POST", "/v1/videos", body | {"prompt": f"bench {i}"})["id"] for i in range(args.jobs)]
        wait_all(ports[0], ids)
        idle_ids = []
        for i in range(args.idle):
            time.sleep(0.2)  # every replica back in its idle wait
            idle_ids.append(api(ports[0], "POST", "/v1/videos", body | {"prompt": f"idle {i}"})["id"])
            wait_all(ports[0], idle_ids[-1:])
    finally:
        stop(procs)
    jobs = rows(url, out)
    sat = [j for j in jobs if j["id"] in set(ids)]
    assert all(j["state"] == "succeeded" for j in jobs), [j["state"] for j in jobs]
    dequeue, to_step = [], []
    free_at: dict[str, float] = {}
    for j in sorted(sat, key=lambda j: j["started_at"]):
        ready = max(j["created_at"], free_at.get(j["owner"], j["created_at"]))
        dequeue.append(j["started_at"] - ready)
        to_step.append(j["timings"]["start_latency_s"])
        free_at[j["owner"]] = j["finished_at"]
    total = [a + b for a, b in zip(dequeue, to_step)]
    span = max(j["finished_at"] for j in sat) - min(j["started_at"] for j in sat)
    idle = [j["started_at"] - j["created_at"] for j in jobs if j["id"] in set(idle_ids)]
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {"config": label, "replicas": n, "jobs": len(sat), "jobs_per_s": round(len(sat) / span, 1),
            "dequeue_p50_ms": ms(pct(dequeue, 50)), "dequeue_p99_ms": ms(pct(dequeue, 99)),
            "to_first_step_p50_ms": ms(pct(to_step, 50)), "to_first_step_p99_ms": ms(pct(to_step, 99)),
            "dequeue_to_start_p50_ms": ms(pct(total, 50)), "dequeue_to_start_p99_ms": ms(pct(total, 99)),
            "idle_pickup_p50_ms": ms(statistics.median(idle)) if idle else None,
            "idle_pickup_max_ms": ms(max(idle)) if idle else None,
            "ideal_jobs_per_s": round(n / (args.steps * args.step_s), 1)}


def _store_worker(kind: str, where: str, replica: str, start_at: float, results) -> None:
    if kind == "sqlite":
        from wan22ctl.agent.server.store import JobStore

        store = JobStore(where)
    else:
        from wan22ctl.agent.server.pgstore import PgJobStore

        store = PgJobStore(where, task="t2v-A14B", replica=replica)
    times, previous = [], None
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        t0 = time.perf_counter()
        if previous is not None:
            store.finish(previous.id, "succeeded", output="/dev/null", steps_done=5, timings={"total_s": 0})
        job = store.claim_next()
        if job is None:
            break
        store.set_seed(job.id, 1)
        times.append(time.perf_counter() - t0)
        previous = job
    store.close()
    results.put(times)


def store_config(label: str, kind: str, n: int, args) -> dict:
    import multiprocessing as mp

    if kind == "sqlite":
        from wan22ctl.agent.server.store import JobStore

        where = str(Path(tempfile.mkdtemp(prefix="queue-bench-store-")) / "queue.sqlite3")
        store = JobStore(where)
    else:
        from wan22ctl.agent.server.pgstore import PgJobStore

        where = fresh_db(args.pg_url)
        store = PgJobStore(where, task="t2v-A14B", replica="submitter")
    for i in range(args.store_jobs):
        store.submit({"task": "t2v-A14B", "prompt": f"p{i}"}, f"h{i}")
    store.close()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 2.0
    procs = [ctx.Process(target=_store_worker, args=(kind, where, f"r{i}", start_at, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    times = [t for _ in procs for t in results.get()]
    for proc in procs:
        proc.join()
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {"config": label, "workers": n, "dequeues": len(times), "p50_ms": ms(pct(times, 50)),
            "p99_ms": ms(pct(times, 99)), "max_ms": ms(max(times)), "mean_ms": ms(statistics.mean(times))}


def fresh_db(admin_url: str) -> str:
    import psycopg

    name = "wan22bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pg-url", required=True, help="PostgreSQL URL whose role may CREATE DATABASE")
    p.add_argument("--jobs", type=int, default=120)
    p.add_argument("--idle", type=int, default=10)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--step-s", type=float, default=0.01)
    p.add_argument("--replicas", default="1,3,6")
    p.add_argument("--store-jobs", type=int, default=3000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    load = os.getloadavg()[0]

    stores = [store_config("sqlite", "sqlite", 1, args)]
    for n in (int(x) for x in args.replicas.split(",")):
        stores.append(store_config(f"postgres×{n}", "postgres", n, args))
    print(f"store alone: finish + claim_next + set_seed per dequeue, {args.store_jobs} jobs; ms; "
          f"{platform.node()} ({os.cpu_count()} CPUs, load {load:.1f}), {time.strftime('%Y-%m-%d')}")
    print(f"{'config':>12}  {'workers':>7}  {'dequeues':>8}  {'p50':>7}  {'p99':>7}  {'max':>8}  {'mean':>7}")
    for r in stores:
        print(f"{r['config']:>12}  {r['workers']:>7}  {r['dequeues']:>8}  {r['p50_ms']:>7}  {r['p99_ms']:>7}  "
              f"{r['max_ms']:>8}  {r['mean_ms']:>7}")
    print()

    results = [run_config("sqlite", 1, None, args)]
    for n in (int(x) for x in args.replicas.split(",")):
        results.append(run_config(f"postgres×{n}", n, fresh_db(args.pg_url), args))
    cols = [("config", 12), ("replicas", 8), ("jobs_per_s", 10), ("ideal_jobs_per_s", 9),
            ("dequeue_p50_ms", 10), ("dequeue_p99_ms", 10), ("to_first_step_p50_ms", 10),
            ("to_first_step_p99_ms", 10), ("dequeue_to_start_p50_ms", 10), ("dequeue_to_start_p99_ms", 10),
            ("idle_pickup_p50_ms", 10), ("idle_pickup_max_ms", 10)]
    heads = ["config", "replicas", "jobs/s", "ideal", "deq p50", "deq p99", "step p50", "step p99",
             "d2s p50", "d2s p99", "idle p50", "idle max"]
    print(f"servers: stand-in at {args.step_s} s/step x {args.steps} steps, {args.jobs} jobs queued at once; "
          f"ms; load {os.getloadavg()[0]:.1f}")
    print("  ".join(h.rjust(w) for h, (_, w) in zip(heads, cols)))
    for r in results:
        print("  ".join(str(r[k]).rjust(w) for k, w in cols))
    base = results[0]["dequeue_to_start_p99_ms"]
    for r in results[1:]:
        print(f"{r['config']}: adds {r['dequeue_to_start_p99_ms'] - base:+.2f} ms p99 dequeue-to-start over SQLite")
    if args.json:
        Path(args.json).write_text(json.dumps({"store": stores, "servers": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
