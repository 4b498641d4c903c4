"""The resident server end to end on CPU: the real `wan22ctl-agent server` process, real HTTP,
the real SQLite queue, with the stand-in pipeline (tests/standins/fake_wan_pipeline.py) in place
of Wan2.2's classes. Steps take 10-30 ms, so a job is well under a second.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, clean_environ
from tests.ports import free_port  # noqa: F401 (also imported from here by other tests)

STANDIN = str(REPO / "tests" / "standins" / "fake_wan_pipeline.py")
PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d49484452")  # the PNG signature, then IHDR's length and name



class Api:
    """Plain HTTP against the server: (status, parsed JSON or bytes, headers)."""

    def __init__(self, base: str, key: str | None = None):
        self.base = base
        self.key = key

    def __call__(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
                 timeout: float = 10):
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if self.key:
            h.setdefault("Authorization", f"Bearer {self.key}")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, payload, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, payload, hdrs = e.code, e.read(), e.headers
        if (hdrs.get("Content-Type") or "").startswith("application/json"):
            payload = json.loads(payload)
        return status, payload, hdrs


class Server:
    """One `python -m wan22ctl.agent server` process over a stand-in pipeline."""

    def __init__(self, tmp: Path, task: str = "t2v-A14B", env: dict | None = None, args: tuple = (),
                 host: str = "127.0.0.1", port: int | None = None):
        self.tmp = tmp
        self.out = tmp / "out"
        self.ckpt = tmp / "ckpt"
        self.ckpt.mkdir(exist_ok=True)
        self.calls = tmp / "calls.jsonl"
        self.port = port or free_port()
        self.task, self.host, self.args = task, host, args
        self.env = clean_environ() | {"FAKE_WAN_STEP_S": "0.02", "FAKE_WAN_CALLS_LOG": str(self.calls)} | (env or {})
        self.env.pop("WAN22_API_KEY", None) if "WAN22_API_KEY" not in (env or {}) else None
        self.api = Api(f"http://127.0.0.1:{self.port}", (env or {}).get("WAN22_API_KEY"))
        self.proc: subprocess.Popen | None = None

    def argv(self, launcher: tuple = (sys.executable, "-m", "wan22ctl.agent")) -> list[str]:
        return [*launcher, "server", "--task", self.task, "--pipeline", STANDIN, "--ckpt-dir", str(self.ckpt),
                "--output-dir", str(self.out), "--host", self.host, "--port", str(self.port), *self.args]

    def start(self, wait_ready: bool = True, launcher: tuple | None = None, env: dict | None = None) -> "Server":
        self.log = open(self.tmp / "server.log", "ab")
        argv = self.argv(launcher) if launcher else self.argv()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env | (env or {}), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.logtext()}")
            try:
                status, _, _ = self.api("GET", "/readyz" if wait_ready else "/healthz", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise AssertionError(f"server not ready:\n{self.logtext()}")

    def logtext(self) -> str:
        return (self.tmp / "server.log").read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def calls_made(self) -> list[dict]:
        return [json.loads(line) for line in self.calls.read_text().splitlines()] if self.calls.exists() else []

    def submit(self, **body) -> dict:
        status, job, _ = self.api("POST", "/v1/videos", {"prompt": "a red fox in snow", "size": "832*480",
                                                         "sample_steps": 5} | body)
        assert status == 201, job
        return job

    def wait(self, job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 30,
             until=None) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, job, _ = self.api("GET", f"/v1/videos/{job_id}")
            assert status == 200, job
            if job["state"] in states or (until and until(job)):
                return job
            time.sleep(0.01)
        raise AssertionError(f"{job_id} still {job['state']} after {timeout}s")


@pytest.fixture
def servers():
    """Make Servers that are stopped after the test whatever happened (a test stops its own to check it)."""
    made: list[Server] = []

    def make(*args, **kwargs) -> Server:
        made.append(Server(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server shared by the module's API tests (its jobs are independent)."""
    s = Server(tmp_path_factory.mktemp("srv")).start()
    yield s
    assert s.stop() == 0, s.logtext()


def read_events(api: Api, job_id: str, timeout: float = 30) -> list[tuple[str, dict]]:
    req = urllib.request.Request(api.base + f"/v1/videos/{job_id}/events")
    events, name = [], None
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


# --------------------------------------------------------------------------- API


def test_submit_stream_poll_download(server):
    job = server.submit(prompt="two cats boxing", sample_steps=12, seed=42)
    assert job["state"] in ("queued", "running") and job["id"].startswith("video_")
    events = read_events(server.api, job["id"])

    names = [n for n, _ in events]
    assert names[-1] == "succeeded" and set(names[:-1]) == {"progress"}
    steps = [d["progress_detail"]["step"] for _, d in events if d["progress_detail"]["phase"] == "denoising"]
    assert steps == sorted(steps) and len(set(steps)) >= 6, steps  # live, per-step, in order
    mid = next(d["progress_detail"] for _, d in events
               if d["progress_detail"]["phase"] == "denoising" and d["progress_detail"]["step"] >= 3)
    assert mid["total"] == 12 and mid["seconds_per_step"] > 0.01 and mid["eta_seconds"] > 0
    experts = {d["progress_detail"]["expert"] for _, d in events if d["progress_detail"]["phase"] == "denoising"}
    assert experts == {"high_noise", "low_noise"}  # t2v-A14B's MoE boundary 0.875 crossed

    status, done, _ = server.api("GET", f"/v1/videos/{job['id']}")
    assert status == 200 and done["state"] == "succeeded" and done["seed"] == 42
    assert done["progress_detail"]["phase"] == "done" and done["progress_detail"]["step"] == 12
    assert done["status"] == "completed" and done["progress"] == 100 and done["size"] == "832x480"
    t = done["timings"]
    # (how soon an idle worker starts a job is measured by benchmarks/server_bench.py, not asserted here)
    assert 0 <= t["start_latency_s"] and t["denoise_s"] >= 12 * 0.02 * 0.9 and t["total_s"] >= t["denoise_s"]
    status, body, headers = server.api("GET", done["content_url"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and body[4:8] == b"ftyp"
    status, part, headers = server.api("GET", done["content_url"], headers={"Range": "bytes=4-7"})
    assert status == 206 and part == b"ftyp" and headers["Content-Range"] == f"bytes 4-7/{len(body)}"
    status, tail, _ = server.api("GET", done["content_url"], headers={"Range": "bytes=-10"})
    assert status == 206 and tail == body[-10:]
    assert server.api("GET", done["content_url"], headers={"Range": f"bytes={len(body)}-"})[0] == 416
    sidecar = json.loads(Path(done["sidecar"]).read_text())
    assert sidecar["seed"] == 42 and sidecar["prompt"] == "two cats boxing" and sidecar["video"] in done["output"]
    assert sidecar["run_id"] == job["id"] and sidecar["bytes"] == len(body) and sidecar["fps"] == 16
    assert sidecar["guide_scale"] == [3.0, 4.0] and sidecar["guide_scale_source"] == "config default"
    assert sidecar["phases_s"]["denoise"] >= 12 * 0.02 * 0.9 and sidecar["phases_s"]["load"] == 0.0
    from wan22ctl.agent.launcher import sidecar_data
    from wan22ctl.agent.progress import ProgressTracker
    from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory

    request = build_request("t2v-A14B", "p", size="832*480", sample_steps=12, seed=1)
    plan = plan_launch(request, synthetic_inventory(1, 80), run_id="r")
    generate_keys = set(sidecar_data(plan, ProgressTracker(), 0, image_digest=None, source_image=None, started="",
                                     video=done["output"], total_s=1.0))
    assert generate_keys <= set(sidecar), generate_keys - set(sidecar)  # the same sidecar as generate's
    assert Path(done["output"]).name.startswith("t2v-A14B_832x480_two-cats-boxing_")

    # Left-out fields came from the task's config (not upstream's generate() defaults); guide is float.
    call = next(c for c in server.calls_made() if c["input_prompt"] == "two cats boxing")
    assert call["shift"] == 12.0 and call["frame_num"] == 81 and call["guide_scale"] == [3.0, 4.0]
    assert call["size"] == [832, 480] and call["seed"] == 42 and call["sampling_steps"] == 12

    status, listing, _ = server.api("GET", "/v1/videos?state=succeeded")
    assert status == 200 and job["id"] in [j["id"] for j in listing["data"]]
    assert listing["data"][-1]["progress"] == 100
    newest = server.submit(prompt="newest")
    _, desc, _ = server.api("GET", "/v1/videos?order=desc&limit=1")
    assert [j["id"] for j in desc["data"]] == [newest["id"]] and desc["has_more"] and desc["last_id"] == newest["id"]
    _, page, _ = server.api("GET", f"/v1/videos?order=desc&limit=1&after={desc['last_id']}")
    assert page["data"][0]["seq"] < desc["data"][0]["seq"]


def test_guide_scale_int_is_sent_as_float(server):
    job = server.submit(prompt="guide as int", sample_guide_scale=5)
    assert server.wait(job["id"])["state"] == "succeeded"
    call = next(c for c in server.calls_made() if c["input_prompt"] == "guide as int")
    assert call["guide_scale"] == 5.0 and isinstance(call["guide_scale"], float)


def test_cancel_running_job_then_next_job_runs(server):
    long = server.submit(prompt="long one", sample_steps=400)
    after = server.submit(prompt="after the cancel", sample_steps=4)
    server.wait(long["id"], until=lambda j: j["state"] == "running" and j["progress_detail"]["step"] >= 3)
    status, cancelled, _ = server.api("POST", f"/v1/videos/{long['id']}/cancel")
    assert status == 200 and cancelled["cancel_requested"]
    final = server.wait(long["id"])
    # it stops at the next step: at most the step under way when the cancel came finishes first
    assert final["state"] == "cancelled" and final["error"]["code"] == "cancelled"
    assert 3 <= final["progress_detail"]["step"] <= cancelled["progress_detail"]["step"] + 2
    assert server.wait(after["id"])["state"] == "succeeded"
    ends = {c["input_prompt"]: c for c in server.calls_made()}
    assert ends["long one"]["ended"] == "JobCancelled" and ends["long one"]["steps_done"] < 400
    status, err, _ = server.api("GET", f"/v1/videos/{long['id']}/content")
    assert status == 409

    # cancel a finished job: 409, and the job stays as it ended
    server.wait(after["id"])
    status, err, _ = server.api("POST", f"/v1/videos/{after['id']}/cancel")
    assert status == 409 and "succeeded" in err["error"]["message"]
    done = server.api("GET", f"/v1/videos/{after['id']}")[1]
    assert (done["state"], done["cancel_requested"]) == ("succeeded", False)

    # cancel a queued job: at once, never run
    blocker = server.submit(prompt="blocker", sample_steps=60)
    queued = server.submit(prompt="never runs", sample_steps=3)
    status, c, _ = server.api("POST", f"/v1/videos/{queued['id']}/cancel")
    assert status == 200 and c["state"] == "cancelled"
    server.wait(blocker["id"])
    assert "never runs" not in {c["input_prompt"] for c in server.calls_made()}


def test_failure_is_reported_and_server_lives_on(server):
    bad = server.submit(prompt="please FAIL here", sample_steps=6)
    final = server.wait(bad["id"])
    assert final["state"] == "failed" and "stand-in failure requested" in final["error"]["message"]
    assert server.wait(server.submit(prompt="fine again")["id"])["state"] == "succeeded"


def test_unusable_video_fails_the_job(tmp_path):
    s = Server(tmp_path, env={"FAKE_WAN_SAVE_NOTHING": "1"}).start()
    try:
        final = s.wait(s.submit(prompt="nothing saved")["id"])
        assert final["state"] == "failed" and "unusable: no file was written" in final["error"]["message"]
        assert final["output"] is None and not list(s.out.glob("*.mp4"))
    finally:
        s.stop()


def test_idempotent_submit(server):
    body = {"prompt": "same request", "size": "832*480", "sample_steps": 3}
    s1, j1, _ = server.api("POST", "/v1/videos", body, headers={"Idempotency-Key": "abc-123"})
    s2, j2, _ = server.api("POST", "/v1/videos", body, headers={"Idempotency-Key": "abc-123"})
    assert (s1, s2) == (201, 200) and j1["id"] == j2["id"]
    s3, err, _ = server.api("POST", "/v1/videos", body | {"prompt": "other"}, headers={"Idempotency-Key": "abc-123"})
    assert s3 == 409 and err["error"]["field"] == "Idempotency-Key"
    s4, j4, _ = server.api("POST", "/v1/videos", body)
    assert s4 == 201 and j4["id"] != j1["id"]


@pytest.mark.parametrize("body,field,text", [
    ({"prompt": "x", "size": "1280*704"}, "size", "not supported by t2v-A14B"),
    ({"prompt": "x", "frame_num": 80}, "frame_num", "4n+1"),
    ({"prompt": "   "}, "prompt", "prompt is required"),
    ({"size": "832*480"}, "prompt", "must be text"),
    ({"prompt": "x", "sample_steps": "40"}, "sample_steps", "integer"),
    ({"prompt": "x", "sample_steps": True}, "sample_steps", "integer"),  # JSON true is no 1
    ({"prompt": "x", "seed": False}, "seed", "integer"),
    ({"prompt": "x" * 10_001}, "prompt", "longer than 10000 characters"),
    ({"prompt": "x", "negative_prompt": "n" * 10_001}, "negative_prompt", "at most 10000 characters"),
    ({"prompt": "x", "sample_steps": 1001}, "sample_steps", "between"),
    ({"prompt": "x", "sample_solver": "heun"}, "sample_solver", "unipc"),
    ({"prompt": "x", "sample_shift": 0}, "sample_shift", "greater than 0"),
    ({"prompt": "x", "sample_guide_scale": [1, 2, 3]}, "sample_guide_scale", "[low_noise, high_noise]"),
    ({"prompt": "x", "image": base64.b64encode(b"hello").decode()}, "image", "takes no image"),
    ({"prompt": "x", "task": "ti2v-5B"}, "task", "this server runs t2v-A14B"),
    ({"prompt": "x", "steps": 3}, "steps", "unknown field"),
])
def test_validation_errors_name_the_field(server, body, field, text):
    status, err, _ = server.api("POST", "/v1/videos", body)
    assert status == 422, err
    assert err["error"]["field"] == field and text in err["error"]["message"]


def test_request_limits_and_bad_requests(server):
    status, err, _ = server.api("POST", "/v1/videos", raw=b"x" * 100, headers={"Content-Type": "text/plain"})
    assert status == 415
    status, err, _ = server.api("POST", "/v1/videos", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400
    # A body over the limit is refused from its Content-Length, before it is read.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 999999999\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 413")
    status, err, _ = server.api("GET", "/v1/videos/video_000000000000000000000000")
    assert status == 404
    status, err, _ = server.api("GET", "/v1/nothing")
    assert status == 404


def test_delete_info_metrics(server):
    job = server.wait(server.submit(prompt="to delete", sample_steps=2)["id"])
    assert os.path.exists(job["output"])
    status, gone, _ = server.api("DELETE", f"/v1/videos/{job['id']}")
    assert status == 200 and gone["deleted"] is True
    assert not os.path.exists(job["output"]) and not os.path.exists(job["sidecar"])
    assert server.api("GET", f"/v1/videos/{job['id']}")[0] == 404

    status, info, _ = server.api("GET", "/v1/info")
    assert status == 200 and info["task"] == "t2v-A14B" and info["plan"]["offload_model"] is True
    assert info["world_size"] == 1 and info["progress_hooked"]
    status, text, headers = server.api("GET", "/metrics")
    text = text.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in ("wan22ctl_queue_depth ", "wan22ctl_load_seconds ", "wan22ctl_step_seconds_count ",
                 'wan22ctl_job_duration_seconds_count{state="succeeded"} ', "wan22ctl_job_start_latency_seconds_sum "):
        assert name in text, name
    assert float(text.split("wan22ctl_step_seconds_count ")[1].split()[0]) > 10


# --------------------------------------------------------------------------- images


def image_bytes(w: int, h: int, fmt: str = "JPEG") -> bytes:
    """A real image Pillow wrote."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 90, 30)).save(buf, fmt)
    return buf.getvalue()


def png_claiming(w: int, h: int) -> bytes:
    """A valid PNG header (with its checksum) that claims w x h pixels and has no pixel data."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return PNG_1x1[:8] + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_image_checks(tmp_path):
    s = Server(tmp_path, task="i2v-A14B").start()
    try:
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        status, err, _ = s.api("POST", "/v1/videos", {"prompt": "x"})
        assert status == 422 and err["error"]["field"] == "image" and "needs" in err["error"]["message"]
        for data, text in ((b"GIF89a" + b"\x00" * 20, "not a PNG, JPEG or WebP"),
                           (png_claiming(9000, 9000), "9000x9000 pixels"), (png_claiming(4, 4), "4x4 pixels"),
                           (png_claiming(640, 4), "640x4 pixels"), (image_bytes(640, 9000), "640x9000 pixels"),
                           (png_claiming(8000, 8000), "at most 40000000 pixels"),
                           (png_claiming(60000, 60000), "decompression bomb"),
                           (png_claiming(640, 360), "does not decode"),
                           (image_bytes(640, 360)[:2000], "does not decode")):
            status, err, _ = s.api("POST", "/v1/videos", {"prompt": "x", "image": b64(data)})
            assert status == 422 and text in err["error"]["message"], err
        status, err, _ = s.api("POST", "/v1/videos", {"prompt": "x", "image": "!!notbase64"})
        assert status == 422 and "base64" in err["error"]["message"]

        jpeg = "data:image/jpeg;base64," + b64(image_bytes(640, 360))
        job, twin = s.submit(prompt="from a jpeg", image=jpeg), s.submit(prompt="same image", image=jpeg)
        done = s.wait(job["id"])
        assert done["state"] == "succeeded" and done["params"]["image_sha256"]
        staged = s.out / ".wan22ctl/server/inputs" / f"{done['params']['image_sha256']}.jpeg"
        s.wait(twin["id"])
        assert s.api("DELETE", f"/v1/videos/{job['id']}")[0] == 200 and staged.exists()  # the twin still uses it
        assert s.api("DELETE", f"/v1/videos/{twin['id']}")[0] == 200 and not staged.exists()
        call = next(c for c in s.calls_made() if c["input_prompt"] == "from a jpeg")
        assert call["max_area"] == 832 * 480 and call["shift"] == 5.0  # i2v: max_area, its own config shift
    finally:
        s.stop()


def test_ti2v_server_takes_one_guide_scale(tmp_path):
    """A (low, high) pair is for the two A14B experts; TI2V-5B has one model and one scale."""
    s = Server(tmp_path, task="ti2v-5B").start()
    try:
        status, err, _ = s.api("POST", "/v1/videos", {"prompt": "x", "sample_guide_scale": [3.0, 4.0]})
        assert status == 422 and err["error"]["field"] == "sample_guide_scale", err
        assert "only for the A14B (MoE) tasks" in err["error"]["message"]
        job = s.submit(prompt="one scale", size="1280*704", sample_steps=2, sample_guide_scale=4)
        assert s.wait(job["id"])["state"] == "succeeded"
        assert next(c for c in s.calls_made() if c["input_prompt"] == "one scale")["guide_scale"] == 4.0
    finally:
        s.stop()


# --------------------------------------------------------------------------- security


def test_api_key_required_beyond_localhost(tmp_path):
    port = free_port()
    refused = subprocess.run(Server(tmp_path, host="0.0.0.0", port=port).argv(), cwd=REPO, capture_output=True,
                             text=True, env={k: v for k, v in clean_environ().items() if k != "WAN22_API_KEY"})
    assert refused.returncode == 2 and "WAN22_API_KEY" in refused.stderr and "Traceback" not in refused.stderr

    s = Server(tmp_path, host="0.0.0.0", port=port, env={"WAN22_API_KEY": "s3cret-key"}).start()
    try:
        anon = Api(s.api.base)
        assert anon("GET", "/healthz")[0] == 200 and anon("GET", "/readyz")[0] == 200
        for method, path in (("GET", "/v1/videos"), ("GET", "/v1/info"), ("GET", "/metrics"),
                             ("POST", "/v1/videos"), ("GET", "/v1/videos/video_000000000000000000000000/content")):
            status, err, headers = anon(method, path, {"prompt": "x"} if method == "POST" else None)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert Api(s.api.base, "wrong")("GET", "/v1/videos")[0] == 401
        assert anon("GET", "/v1/videos", headers={"X-API-Key": "s3cret-key"})[0] == 200
        job = s.submit(prompt="with a key")
        assert s.wait(job["id"])["state"] == "succeeded"
    finally:
        s.stop()
    assert "s3cret-key" not in s.logtext()


# --------------------------------------------------------------------------- persistence


def test_hundred_jobs_survive_kill_9(tmp_path, servers):
    """kill -9 mid-queue, restart: every job is still there and ends succeeded; nothing done is lost."""
    s = servers(tmp_path, env={"FAKE_WAN_STEP_S": "0.01"}).start()
    ids = [s.submit(prompt=f"job {i}", sample_steps=4)["id"] for i in range(100)]
    deadline = time.time() + 30
    while True:
        status, listing, _ = s.api("GET", "/v1/videos?state=succeeded&limit=1000")
        running = s.api("GET", "/v1/videos?state=running")[1]["data"]
        if len(listing["data"]) >= 15 and running:
            break
        assert time.time() < deadline
        time.sleep(0.005)
    done_before = {j["id"]: j["output"] for j in listing["data"]}
    s.stop(signal.SIGKILL)
    assert s.proc.returncode == -signal.SIGKILL
    # The server is dead; the database file tells what it holds.

    db = sqlite3.connect(s.out / ".wan22ctl/server/queue.sqlite3")
    states = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    db.close()
    assert set(states) == set(ids)
    interrupted = [i for i, st in states.items() if st == "running"]
    assert len(interrupted) <= 1  # (0 only if the kill fell between two jobs)

    # Restart with a slow load: /readyz answers 503 meanwhile, submissions are still accepted.
    s.start(wait_ready=False, env={"FAKE_WAN_LOAD_S": "1.5"})
    status, body, _ = s.api("GET", "/readyz")
    assert status == 503 and body["phase"] == "loading"
    late = s.submit(prompt="submitted while loading", sample_steps=2)["id"]
    final = {i: s.wait(i, timeout=60) for i in [*ids, late]}
    assert all(j["state"] == "succeeded" for j in final.values()), {i: j["state"] for i, j in final.items()}
    assert all(final[i]["attempts"] == 2 for i in interrupted)
    for job_id, output in done_before.items():
        assert final[job_id]["output"] == output and os.path.getsize(output) > 0
    assert len({j["output"] for j in final.values()}) == 101
    assert "now queued" in s.logtext()
    s.stop()


@pytest.mark.parametrize("policy", ["requeue", "fail"])
def test_interrupted_job_by_policy(tmp_path, servers, policy):
    s = servers(tmp_path, args=("--on-interrupt", policy)).start()
    job = s.submit(prompt="interrupted", sample_steps=500)
    s.wait(job["id"], until=lambda j: j["state"] == "running")
    s.stop(signal.SIGKILL)
    s.start(env={"FAKE_WAN_STEP_S": "0.001"})
    if policy == "fail":
        final = s.api("GET", f"/v1/videos/{job['id']}")[1]
        assert final["state"] == "failed" and "interrupted by a server restart (policy: fail)" in final["error"]["message"]
    else:
        final = s.wait(job["id"])
        assert final["state"] == "succeeded" and final["attempts"] == 2
    s.stop()


def test_sigterm_requeues_the_running_job(tmp_path, servers):
    s = servers(tmp_path).start()
    job = s.submit(prompt="stopped politely", sample_steps=500)
    s.wait(job["id"], until=lambda j: j["state"] == "running" and j["progress_detail"]["step"] >= 2)
    assert s.stop() == 0
    s.start(env={"FAKE_WAN_STEP_S": "0.001"})
    final = s.wait(job["id"], timeout=30)
    assert final["state"] == "succeeded" and final["attempts"] == 1
    s.stop()


def test_server_holds_the_gpu_locks_generate_uses(tmp_path):
    """A generate run on the server's GPUs must wait instead of running out of GPU memory."""
    import threading

    from wan22ctl.agent.locks import GpuLock

    s = Server(tmp_path, env={"CUDA_VISIBLE_DEVICES": "0,1"}).start()
    try:
        other = GpuLock(str(s.out), [1], "generate-run")
        assert other.acquire(wait=False, stop=threading.Event()) is False
        holder = json.loads((s.out / ".locks" / "gpu-1.lock").read_text())
        assert holder["run_id"] == f"server-{s.proc.pid}"
    finally:
        s.stop()
    assert GpuLock(str(s.out), [0, 1], "generate-run").acquire(wait=False, stop=threading.Event()) is True


def test_concurrency_limit_answers_429(tmp_path):
    s = Server(tmp_path, args=("--max-concurrent", "2")).start()
    try:
        job = s.submit(prompt="watched", sample_steps=300)
        streams = [urllib.request.urlopen(s.api.base + f"/v1/videos/{job['id']}/events", timeout=10) for _ in range(2)]
        assert all(r.status == 200 for r in streams)
        status, err, headers = s.api("GET", "/v1/videos")
        assert status == 429 and err["error"]["type"] == "rate_limit_error" and headers["Retry-After"] == "1"
        assert s.api("GET", "/healthz")[0] == 200  # probes are never turned away
        for r in streams:
            r.close()
        s.api("POST", f"/v1/videos/{job['id']}/cancel")
        deadline = time.time() + 10
        while s.api("GET", "/v1/videos")[0] != 200:  # slots come back when the streams end
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        s.stop()


def test_keep_alive_connection_survives_an_unread_body(server):
    """A request answered before its body was read (404) must not poison the connection."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"prompt": "x" * 1000})
    conn.request("POST", "/v1/nothing", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.request("POST", "/v1/videos", json.dumps({"prompt": "kept alive", "size": "832*480", "sample_steps": 2}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 201, r.read()
    r.read()
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200  # the same connection carried a second request
    conn.close()


def test_concurrent_submits_with_shared_keys(server):
    """Eight clients at once, each submitting the same ten idempotency keys: ten jobs, no errors."""
    from concurrent.futures import ThreadPoolExecutor

    def client(n):
        out = []
        for k in range(10):
            body = {"prompt": f"concurrent {k}", "size": "832*480", "sample_steps": 1}
            status, job, _ = server.api("POST", "/v1/videos", body, headers={"Idempotency-Key": f"conc-{k}"})
            out.append((status, job["id"]))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(client, range(8)) for r in rs]
    assert {s for s, _ in results} <= {200, 201} and sum(s == 201 for s, _ in results) == 10
    assert len({i for _, i in results}) == 10


def test_one_server_per_queue(server, tmp_path):
    second = Server(tmp_path)
    second.out = server.out  # the same outputs volume, so the same queue
    r = subprocess.run(second.argv(), cwd=REPO, env=second.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "is served already" in r.stderr and f'"pid": {server.proc.pid}' in r.stderr
    assert server.api("GET", "/healthz")[0] == 200
