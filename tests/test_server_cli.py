"""The host side of the resident server: `wan22ctl jobs`, `wait`, `cancel` and `submit_if_server`,
run as a user runs them against a real server process (stand-in pipeline, no Docker needed).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import clean_environ
from tests.test_server import Server, free_port


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("srvcli"), task="ti2v-5B", env={"FAKE_WAN_STEP_S": "0.03"},
               args=()).start()
    yield s
    s.stop()


def wan22ctl(srv, *args, timeout=60, extra_env=None):
    env = clean_environ() | {"SERVER_PORT": str(srv.port), "OUTPUT_DIR": str(srv.out)} | (extra_env or {})
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=srv.tmp, env=env, capture_output=True,
                          text=True, timeout=timeout)


def settings_for(port: int, **extra):
    from wan22ctl.settings import load_settings

    return load_settings(environ={"SERVER_PORT": str(port), **extra})


def test_submit_if_server_then_wait_and_jobs(srv, tmp_path):
    from wan22ctl.cli.serve import submit_if_server
    from wan22ctl.plan.launch import build_request

    request = build_request("ti2v-5B", "a lighthouse at dusk", sample_steps=8, seed=7)
    job = submit_if_server(settings_for(srv.port), request)
    assert job is not None and job["state"] in ("queued", "running") and job["params"]["seed"] == 7

    r = wan22ctl(srv, "wait", job["id"])
    assert r.returncode == 0, r.stderr
    assert "saved " in r.stdout + r.stderr and "seed 7" in r.stdout + r.stderr
    call = next(c for c in srv.calls_made() if c["input_prompt"] == "a lighthouse at dusk")
    assert call["size"] == [1280, 704] and call["frame_num"] == 121 and call["guide_scale"] == 5.0

    r = wan22ctl(srv, "jobs", "--json")
    assert r.returncode == 0, r.stderr
    listed = {j["id"]: j for j in json.loads(r.stdout)["data"]}
    assert listed[job["id"]]["state"] == "succeeded" and listed[job["id"]]["output"].endswith(".mp4")
    r = wan22ctl(srv, "jobs")
    assert r.returncode == 0 and job["id"] in r.stdout and "succeeded" in r.stdout


def test_submit_if_server_declines(srv):
    from wan22ctl.cli.serve import submit_if_server
    from wan22ctl.plan.launch import build_request

    t0 = time.time()
    assert submit_if_server(settings_for(free_port()), build_request("ti2v-5B", "x", seed=1)) is None
    assert time.time() - t0 < 2
    # A server that loaded another task leaves the request to generate.py.
    assert submit_if_server(settings_for(srv.port), build_request("t2v-A14B", "x", size="832*480", seed=1)) is None


def test_cancel_and_wait_report_it(srv):
    long = srv.submit(prompt="cancel from the cli", size="1280*704", sample_steps=300)
    srv.wait(long["id"], until=lambda j: j["progress"]["step"] >= 2)
    r = wan22ctl(srv, "cancel", long["id"])
    assert r.returncode == 0 and "stops at its next step" in r.stdout, r.stderr
    r = wan22ctl(srv, "wait", long["id"])
    assert r.returncode == 1 and f"{long['id']} cancelled" in r.stderr
    r = wan22ctl(srv, "cancel", long["id"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "cancelled"


def test_cli_errors_are_one_line(srv):
    r = wan22ctl(srv, "wait", "video_000000000000000000000000")
    assert r.returncode == 2 and "no video" in r.stderr and "Traceback" not in r.stderr
    r = wan22ctl(srv, "jobs", extra_env={"SERVER_PORT": str(free_port())})
    assert r.returncode == 3 and "no server answers" in r.stderr and "wan22ctl up --serve" in r.stderr


def test_wait_rides_out_a_server_restart(tmp_path):
    """`wan22ctl wait` keeps following a job across kill -9 and restart of the server."""
    s = Server(tmp_path, task="ti2v-5B", env={"FAKE_WAN_STEP_S": "0.03"}).start()
    try:
        job = s.submit(prompt="survives", size="1280*704", sample_steps=60)
        waiter = subprocess.Popen([sys.executable, "-m", "wan22ctl", "wait", job["id"]], cwd=s.tmp,
                                  env=clean_environ() | {"SERVER_PORT": str(s.port)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        s.wait(job["id"], until=lambda j: j["progress"]["step"] >= 5)
        s.stop(signal.SIGKILL)
        time.sleep(1.5)
        s.start()
        out, _ = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, out
        assert "waiting for it to come back" in out and "saved " in out
    finally:
        s.stop()


def test_wan22ctl_serve_runs_the_server_here(tmp_path):
    s = Server(tmp_path, task="ti2v-5B")
    argv = [sys.executable, "-m", "wan22ctl", "serve", *s.argv()[4:]]  # the same options, after `serve`
    s.env["WAN22_PYTHON"] = sys.executable
    s.argv = lambda launcher=None: argv
    s.start()
    try:
        assert s.wait(s.submit(prompt="served by wan22ctl serve", size="1280*704")["id"])["state"] == "succeeded"
    finally:
        assert s.stop() == 0
