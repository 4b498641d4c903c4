"""The server under abuse (issue 17's server rows): bursts, idle and slow sockets, malformed
bodies, hostile text and images, the exposure rule, and a crash between publishing a video and
recording it. Each test fails on the stdlib `http.server` implementation this stack replaced.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
from datetime import datetime

import pytest

from tests.burst import all_at_once
from tests.conftest import REPO, clean_environ
from tests.test_server import Api, Server, image_bytes, png_claiming


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("hard"), env={"FAKE_WAN_STEP_S": "0.005"}).start()
    yield s
    assert s.stop() == 0, s.logtext()


def raw(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes, read the answer until the server closes or `timeout` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- D2: a burst


def test_burst_of_300_requests_all_answered_under_a_second(server):
    """200 GETs and 100 POSTs released by one barrier: every one answered, p99 < 1 s."""
    known = server.submit(prompt="burst target", sample_steps=1)["id"]
    n = 300
    requests = ([("POST", "/v1/videos", {"prompt": f"burst {i}", "size": "832*480", "sample_steps": 1})
                 for i in range(100)] + [("GET", f"/v1/videos/{known}", None)] * 100
                + [("GET", "/v1/videos?limit=100", None)] * 100)
    results = all_at_once(requests, lambda *args: server.api(*args, timeout=30)[0])
    answered = [s for s, _ in results if isinstance(s, int) and s < 400]
    latencies = sorted(lat for _, lat in results)
    p50, p99 = latencies[n // 2], latencies[int(n * 0.99) - 1]
    print(f"burst: {len(answered)}/{n} answered, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert len(answered) == n, sorted({str(s) for s, _ in results})
    assert p99 < 1.0, f"p99 {p99:.2f} s"


# --------------------------------------------------------------------------- D3: idle and slow sockets


def test_idle_and_slow_sockets_starve_nobody(tmp_path):
    s = Server(tmp_path, env={"WAN22_API_KEY": "k3y"}).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=20) for _ in range(130)]
        loris = socket.create_connection(("127.0.0.1", s.port), timeout=20)
        loris.sendall(b"GET /v1/videos HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        assert Api(s.api.base)("GET", "/healthz", timeout=5)[0] == 200
        assert s.api("GET", "/v1/videos", timeout=5)[0] == 200
        assert s.api("POST", "/v1/videos", {"prompt": "past the idlers", "size": "832*480", "sample_steps": 1},
                     timeout=5)[0] == 201
        assert time.monotonic() - t0 < 2
        # The slow-loris keeps trickling headers; it and the idle sockets are closed by the server.
        deadline = time.monotonic() + 16
        loris.settimeout(0.5)
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                loris.sendall(b"X-Trickle: 1\r\n")
                closed = loris.recv(1) == b""
            except socket.timeout:
                pass
            except OSError:
                closed = True
        assert closed, "the slow-loris connection was never closed"
        for sock in idle[:10]:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1) == b""
        for sock in [*idle, loris]:
            sock.close()
    finally:
        s.stop()


# --------------------------------------------------------------------------- D1 and D8: malformed input

MALFORMED = [
    ("null", b"null", "application/json"), ("list", b"[]", "application/json"), ("string", b'"x"', "application/json"),
    ("number", b"1", "application/json"), ("truncated", b'{"prompt": "x"', "application/json"),
    ("bad utf-8", b'{"prompt": "\xff\xfe"}', "application/json"), ("NaN steps", b'{"prompt":"x","sample_steps":NaN}',
                                                                    "application/json"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("deep object", b'{"prompt": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", "application/json"),
    ("huge int", b'{"prompt":"x","seed":' + b"9" * 5000 + b"}", "application/json"),
    ("prompt list", b'{"prompt": ["a"]}', "application/json"), ("size object", b'{"prompt":"x","size":{}}',
                                                                 "application/json"),
    ("image number", b'{"prompt":"x","image":123}', "application/json"),
    ("guide nulls", b'{"prompt":"x","sample_guide_scale":[null,null]}', "application/json"),
    ("seed float", b'{"prompt":"x","seed":1e400}', "application/json"),
    ("text/plain", b"a fox", "text/plain"),
    ("form without prompt", b"size=832x480", "application/x-www-form-urlencoded"),
    ("form steps text", b"prompt=x&sample_steps=lots", "application/x-www-form-urlencoded"),
    ("form guide inf", b"prompt=x&sample_guide_scale=inf", "application/x-www-form-urlencoded"),
    ("multipart no boundary", b"--x\r\n", "multipart/form-data"),
    ("multipart cut", b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nfox', "multipart/form-data; boundary=b"),
]


@pytest.mark.parametrize("name,body,ctype", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_malformed_body_gets_a_json_4xx_at_once(server, name, body, ctype):
    t0 = time.monotonic()
    status, err, _ = server.api("POST", "/v1/videos", raw=body, headers={"Content-Type": ctype}, timeout=5)
    assert 400 <= status < 500 and isinstance(err, dict) and err["error"]["message"], (status, err)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("query", ["before=99999999999999999999999", "after=99999999999999999999999", "before=1e30",
                                   "limit=-1", "limit=abc", "after=video_000000000000000000000000", "order=up",
                                   "state=lost"])
def test_bad_list_queries_are_422(server, query):
    status, err, _ = server.api("GET", f"/v1/videos?{query}")
    assert status == 422 and err["error"]["param"], (query, status, err)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"])
def test_unknown_methods_get_the_json_405(server, method):
    answer = raw(server.port, f"{method} /v1/videos HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and b"content-type: application/json" in head.lower(), answer
    if method != "HEAD":
        assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_requests_the_http_parser_rejects_get_the_json_shape_too(server):
    for request in (b"FOO /v1/videos HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /v1/videos HTTP/9.9\r\n\r\n",
                    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"\x00\x01\x02garbage\r\n\r\n"):
        answer = raw(server.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 4") and json.loads(body)["error"]["message"], answer


def test_bad_content_length_and_a_stalled_body(tmp_path):
    s = Server(tmp_path, args=("--client-timeout", "1")).start()
    try:
        assert raw(s.port, b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").startswith(b"HTTP/1.1 4")
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:  # the body stops halfway
            sock.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\": ")
            t0 = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # the server closes after its answer
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408") and "stopped arriving" in json.loads(body)["error"]["message"]
        assert 0.5 < time.monotonic() - t0 < 5
        assert s.api("GET", "/healthz")[0] == 200
    finally:
        s.stop()


# --------------------------------------------------------------------------- D4: prompts are text


@pytest.mark.parametrize("prompt,what", [("fox \ud800", "lone surrogate"), ("fox \udfff tail", "lone surrogate"),
                                         ("fox \x1b]0;pwned\x07", "control character"),
                                         ("fox \x1b[2J", "control character"), ("nul \x00", "control character"),
                                         ("bell \x07", "control character"), ("c1 \x9b", "control character")])
def test_prompts_must_be_valid_text(server, prompt, what):
    body = json.dumps({"prompt": prompt, "size": "832*480"}).encode()  # \ud800 travels as a JSON escape
    status, err, _ = server.api("POST", "/v1/videos", raw=body, headers={"Content-Type": "application/json"})
    assert status == 422 and err["error"]["field"] == "prompt" and what in err["error"]["message"], err
    status, err, _ = server.api("POST", "/v1/videos", raw=json.dumps({"prompt": "x", "negative_prompt": prompt}).encode(),
                                headers={"Content-Type": "application/json"})
    assert status == 422 and err["error"]["field"] == "negative_prompt"


def test_newlines_and_tabs_are_fine(server):
    job = server.wait(server.submit(prompt="a fox\n\tin snow\r\nat dawn", sample_steps=1)["id"])
    assert job["state"] == "succeeded" and job["prompt"] == "a fox\n\tin snow\nat dawn"


# --------------------------------------------------------------------------- D5: the crash window


def test_crash_between_publish_and_record_leaves_one_video(tmp_path):
    """kill -9 after the MP4 has its final name and before the job is marked finished, 20 times:
    each job ends with exactly one video, the one its record names, and nothing half-written.

    The window is held open by a FIFO at the sidecar's temporary name, so that writing the
    sidecar blocks right after the video was published."""
    from wan22ctl.agent.outputs import final_stem

    s = Server(tmp_path).start()
    try:
        for i in range(20):
            prompt = f"crash window {i}"
            now = int(time.time())
            stems = {sec: final_stem("t2v-A14B", "832*480", prompt, datetime.fromtimestamp(sec))
                     for sec in range(now, now + 3)}
            for stem in stems.values():
                os.mkfifo(s.out / f"{stem}.json.partial")
            job = s.submit(prompt=prompt, sample_steps=2)
            stem = stems[int(job["created_at"])]
            video = s.out / f"{stem}.mp4"
            deadline = time.time() + 20
            while not video.exists():
                assert time.time() < deadline, s.logtext()
                time.sleep(0.002)
            time.sleep(0.05)  # into the blocked sidecar write
            s.stop(signal.SIGKILL)
            for other in stems.values():
                if other != stem:
                    os.remove(s.out / f"{other}.json.partial")
            s.start()
            final = s.wait(job["id"])
            videos = sorted(s.out.glob(f"t2v-A14B_832x480_crash-window-{i}_*.mp4"))
            assert final["state"] == "succeeded" and [str(v) for v in videos] == [final["output"]], (i, videos, final)
            assert os.path.isfile(final["sidecar"]) and not list(s.out.glob(f"*crash-window-{i}_*.partial"))
    finally:
        s.stop()


# --------------------------------------------------------------------------- D6: exposure


def test_wildcard_address_without_a_key_refuses_to_start(tmp_path):
    for host in ("0.0.0.0", "::"):
        r = subprocess.run(Server(tmp_path, host=host).argv(), cwd=REPO, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in clean_environ().items() if k != "WAN22_API_KEY"})
        assert r.returncode == 2 and "reachable beyond this machine" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_serve_container_always_has_a_key_file_and_trusts_no_published_host():
    from wan22ctl.plan.container import SERVER_KEY_FILE, plan_serve_container
    from wan22ctl.settings import load_settings

    for env in ({}, {"SERVER_HOST": "127.0.0.1"}, {"WAN22_API_KEY": "s3cret-value"}):
        spec = plan_serve_container(load_settings(None, environ=env))
        cmd = list(spec.command)
        assert "s3cret-value" not in json.dumps([cmd, spec.environment])
        assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--api-key-file") + 1] == SERVER_KEY_FILE
        assert "--published-host" not in cmd and "WAN22_API_KEY" not in spec.environment


# --------------------------------------------------------------------------- D9: images


def test_images_are_decoded_at_submit(tmp_path):
    s = Server(tmp_path, task="i2v-A14B").start()
    try:
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        for data in (png_claiming(640, 360) + b"junk" * 200, image_bytes(640, 360)[:-400],
                     b"\xff\xd8\xff\xe0" + b"\x00" * 300):
            status, err, _ = s.api("POST", "/v1/videos", {"prompt": "x", "image": b64(data)})
            assert status == 422 and err["error"]["field"] == "image", err

        # An image that went bad in the queue fails its job alone; the server and the next job go on.
        blocker = s.submit(prompt="blocker", sample_steps=100, image=b64(image_bytes(320, 200)))
        doomed = s.submit(prompt="doomed", sample_steps=2, image=b64(image_bytes(640, 360)))
        staged = next((s.out / ".wan22ctl/server/inputs").glob(f"{doomed['params']['image_sha256']}.*"))
        staged.write_bytes(staged.read_bytes()[:200])
        assert s.wait(blocker["id"])["state"] == "succeeded"
        final = s.wait(doomed["id"])
        assert final["state"] == "failed" and "unusable" in final["error"]["message"], final
        assert "doomed" not in {c["input_prompt"] for c in s.calls_made()}
        assert s.wait(s.submit(prompt="after", sample_steps=1, image=b64(image_bytes(320, 200)))["id"])["state"] == "succeeded"
    finally:
        s.stop()
