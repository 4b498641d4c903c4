"""The server's HTTP layer, old stack against new, on one machine in one run (CPU stand-in pipeline).

The old stack is the stdlib `http.server` implementation as of --old-ref (taken from git with
`git archive`, run from a temporary folder); the new one is this checkout. Both serve the same
stand-in pipeline (tests/standins/fake_wan_pipeline.py of their own tree), side by side; each row
alternates old and new in slices, so load from elsewhere on the machine falls on both alike. Rows:

- create / retrieve / list: --requests sequential requests while a long job holds the worker
  (POST /v1/videos JSON; GET /v1/videos/{id}; GET /v1/videos?limit=20), latency p50/p99: on one
  keep-alive connection (as the openai SDK's pool sends them), and each on a new one (as curl does);
- sse fan-out: --watchers clients follow one job's event stream; per progress update, how long
  after the first watcher each watcher received it (p50/p99), and how many watchers saw the end;
- burst: 200 GETs + 100 POSTs released by one barrier, each on a new connection: answered, p50/p99.

    python benchmarks/http_bench.py                     # old = cd03ec4, 300 requests, 100 watchers
    python benchmarks/http_bench.py --rounds 3 --requests 500 --old-ref cd03ec4

Prints a table (new/old ratio per row) and writes http-bench.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.burst import all_at_once  # noqa: E402

BODY = {"prompt": "a heron over a lake at dawn", "size": "832*480", "sample_steps": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


class Stack:
    """One server process of one tree."""

    def __init__(self, name: str, tree: str, work: str):
        self.name, self.tree, self.work = name, tree, work
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self, step_s: float) -> "Stack":
        out = tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.work)
        os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
        env = dict(os.environ, PYTHONPATH=self.tree, FAKE_WAN_STEP_S=str(step_s))
        env.pop("WAN22_API_KEY", None)
        argv = [sys.executable, "-m", "wan22ctl.agent", "server", "--task", "t2v-A14B", "--pipeline",
                os.path.join(self.tree, "tests/standins/fake_wan_pipeline.py"), "--ckpt-dir", os.path.join(out, "ckpt"),
                "--output-dir", os.path.join(out, "videos"), "--port", str(self.port)]
        self.log = open(os.path.join(out, "server.log"), "ab")
        self.proc = subprocess.Popen(argv, cwd=self.tree, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} server did not start; see {out}/server.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def request(self, method: str, path: str, body=None, conn: http.client.HTTPConnection | None = None,
                timeout: float = 30):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body) if body is not None else None
            conn.request(method, path, data, {"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            payload = r.read()
            return r.status, payload
        finally:
            if own:
                conn.close()

    def wait_idle(self) -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            _, body = self.request("GET", "/v1/videos?state=queued&limit=1")
            _, running = self.request("GET", "/v1/videos?state=running&limit=1")
            if not json.loads(body)["data"] and not json.loads(running)["data"]:
                return
            time.sleep(0.1)


def sequential(stack: Stack, method: str, path: str, n: int, body=None, keep_alive: bool = True) -> list[float]:
    """Latencies of `n` requests one after the other: on one keep-alive connection (as SDKs with a
    connection pool send them), or each on a new connection (as curl does)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30) if keep_alive else None
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = stack.request(method, path, body, conn=conn)
        out.append(time.perf_counter() - t0)
        assert status < 300, status
    if conn is not None:
        conn.close()
    return out


def fan_out(stack: Stack, watchers: int) -> dict:
    """`watchers` event streams on one 30-step job: per update, each watcher's delay after the first.

    The job waits behind a blocker until every watcher is connected, so all see every update."""
    stack.wait_idle()
    _, blocker = stack.request("POST", "/v1/videos", BODY | {"prompt": "blocker", "sample_steps": 1000})
    blocker = json.loads(blocker)["id"]
    status, job = stack.request("POST", "/v1/videos", BODY | {"sample_steps": 30, "prompt": "watched"})
    job_id = json.loads(job)["id"]
    seen: list[dict] = [{} for _ in range(watchers)]
    connected, ended = [False] * watchers, [False] * watchers

    def watch(k: int) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=120)
            conn.request("GET", f"/v1/videos/{job_id}/events")
            r = conn.getresponse()
            connected[k] = True
            for raw in r:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    p = data.get("progress_detail") or data.get("progress")
                    seen[k].setdefault((data["state"], p["phase"], p["step"]), time.perf_counter())
                    if data["state"] in ("succeeded", "failed", "cancelled"):
                        ended[k] = True
                        break
            conn.close()
        except OSError:
            pass

    threads = [threading.Thread(target=watch, args=(k,), daemon=True) for k in range(watchers)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while not all(connected) and time.time() < deadline:
        time.sleep(0.05)
    stack.request("POST", f"/v1/videos/{blocker}/cancel")
    for t in threads:
        t.join(timeout=120)
    delays = []
    for key in set().union(*seen):
        times = [s[key] for s in seen if key in s]
        delays += [t - min(times) for t in times]
    return {"delays": delays, "ended": sum(ended), "connected": sum(connected)}


def burst(stack: Stack) -> dict:
    stack.wait_idle()
    _, job = stack.request("POST", "/v1/videos", BODY)
    known = json.loads(job)["id"]
    requests = ([("POST", "/v1/videos", BODY)] * 100 + [("GET", f"/v1/videos/{known}", None)] * 100
                + [("GET", "/v1/videos?limit=100", None)] * 100)
    results = all_at_once(requests, lambda method, path, body: stack.request(method, path, body, timeout=60)[0])
    answered = [lat for status, lat in results if isinstance(status, int) and status < 400]
    return {"answered": len(answered), "latencies": [lat for _, lat in results],
            "errors": sorted({str(s) for s, _ in results if not (isinstance(s, int) and s < 400)})}


ROWS = ("create", "retrieve", "list", "create, new connections", "retrieve, new connections",
        "list, new connections")
SLICES = 10  # each row alternates old and new in this many slices, so load from elsewhere falls on both


def hold_worker(stack: Stack) -> str:
    """A long job holds the worker (sleeping in the stand-in's steps), so the videos the rows create
    stay queued: no job's save or commit competes with the requests being timed."""
    _, blocker = stack.request("POST", "/v1/videos", BODY | {"prompt": "blocker", "sample_steps": 1000})
    blocker = json.loads(blocker)["id"]
    while json.loads(stack.request("GET", f"/v1/videos/{blocker}")[1])["state"] != "running":
        time.sleep(0.05)
    return blocker


def clear_queue(stack: Stack, blocker: str) -> None:
    while True:
        queued = json.loads(stack.request("GET", "/v1/videos?state=queued&limit=1000")[1])["data"]
        if not queued:
            break
        for job in queued:
            stack.request("POST", f"/v1/videos/{job['id']}/cancel")
    stack.request("POST", f"/v1/videos/{blocker}/cancel")


def row_request(stack: Stack, row: str) -> tuple:
    """(method, path, body, keep_alive) of one row's requests."""
    keep_alive = "new connections" not in row
    if row.startswith("create"):
        return "POST", "/v1/videos", BODY, keep_alive
    if row.startswith("retrieve"):
        _, listing = stack.request("GET", "/v1/videos?limit=1")
        return "GET", f"/v1/videos/{json.loads(listing)['data'][0]['id']}", None, keep_alive
    return "GET", "/v1/videos?limit=20", None, keep_alive


def alternating(k: int) -> tuple[str, str]:
    return ("old", "new") if k % 2 == 0 else ("new", "old")


def run(args, stacks: dict) -> dict:
    rows = {name: {row: [] for row in ROWS} for name in stacks}
    fans, bursts = {name: [] for name in stacks}, {name: [] for name in stacks}
    blockers = {name: hold_worker(stack) for name, stack in stacks.items()}
    for row in ROWS:
        for k in range(SLICES):
            for name in alternating(k):
                method, path, body, keep_alive = row_request(stacks[name], row)
                rows[name][row] += sequential(stacks[name], method, path, args.requests // SLICES, body, keep_alive)
    for name, stack in stacks.items():
        clear_queue(stack, blockers[name])
    for k in range(args.rounds):
        for name in alternating(k):
            fans[name].append(fan_out(stacks[name], args.watchers))
    for k in range(args.rounds):
        for name in alternating(k):
            bursts[name].append(burst(stacks[name]))
    return {"rows": rows, "fans": fans, "bursts": bursts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-ref", default="cd03ec4", help="the commit with the stdlib http.server stack")
    parser.add_argument("--requests", type=int, default=300, help="per row and stack")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="fan-out and burst runs per stack")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="http-bench-")
    old_tree = os.path.join(work, "old")
    os.makedirs(old_tree)
    archive = subprocess.run(["git", "-C", REPO, "archive", args.old_ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", old_tree], input=archive, check=True)
    stacks = {"old": Stack("old", old_tree, work), "new": Stack("new", REPO, work)}
    try:
        for stack in stacks.values():
            stack.start(step_s=0.05)
        res = run(args, stacks)
    finally:
        for stack in stacks.values():
            if stack.proc is not None:
                stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    table = [(row, pct(res["rows"]["old"][row], 0.5), pct(res["rows"]["old"][row], 0.99),
              pct(res["rows"]["new"][row], 0.5), pct(res["rows"]["new"][row], 0.99), "") for row in ROWS]
    fan = {n: [d for f in res["fans"][n] for d in f["delays"]] for n in stacks}
    ended = {n: f"{sum(f['ended'] for f in res['fans'][n])}/{args.watchers * args.rounds}" for n in stacks}
    table.append((f"sse fan-out x{args.watchers}", pct(fan["old"], 0.5), pct(fan["old"], 0.99), pct(fan["new"], 0.5),
                  pct(fan["new"], 0.99), f"saw the end: old {ended['old']}, new {ended['new']}"))
    lat = {n: [x for b in res["bursts"][n] for x in b["latencies"]] for n in stacks}
    answered = {n: f"{sum(b['answered'] for b in res['bursts'][n])}/{300 * args.rounds}" for n in stacks}
    table.append(("burst 200 GET + 100 POST", pct(lat["old"], 0.5), pct(lat["old"], 0.99), pct(lat["new"], 0.5),
                  pct(lat["new"], 0.99), f"answered: old {answered['old']}, new {answered['new']}"))

    print(f"{platform.node()} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}, old = {args.old_ref}; "
          f"{args.requests} requests per row and stack in {SLICES} alternating slices; {args.rounds} fan-out and "
          f"burst runs per stack")
    print(f"{'row':<28} {'old p50':>9} {'old p99':>9} {'new p50':>9} {'new p99':>9} {'p50 x':>6} {'p99 x':>6}  note")
    for name, o50, o99, n50, n99, note in table:
        print(f"{name:<28} {o50 * 1000:>7.2f}ms {o99 * 1000:>7.2f}ms {n50 * 1000:>7.2f}ms {n99 * 1000:>7.2f}ms "
              f"{n50 / o50:>6.2f} {n99 / o99:>6.2f}  {note}")
    path = os.path.join(os.environ.get("OUT") or "/tmp", "http-bench.json")
    with open(path, "w") as f:
        json.dump({"args": vars(args), "table": table,
                   "burst_errors": {n: [b["errors"] for b in res["bursts"][n]] for n in stacks}}, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
