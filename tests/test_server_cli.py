"""The host side of the resident server: `wan22ctl jobs`, `wait`, `cancel`, and `generate` (one
prompt or a batch) submitting to it, run as a user runs them against a real server process
(stand-in pipeline, no Docker needed).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.conftest import clean_environ, read_until, unique
from tests.test_generate import fake_checkpoints
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


def test_submit_then_wait_and_jobs(srv, tmp_path):
    from wan22ctl.server_client import server_for, submit
    from wan22ctl.plan.launch import build_request

    request = build_request("ti2v-5B", "a lighthouse at dusk", sample_steps=8, seed=7)
    job = submit(server_for(settings_for(srv.port), "ti2v-5B"), request)
    assert job["state"] in ("queued", "running") and job["params"]["seed"] == 7

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


def test_server_for_declines(srv):
    from wan22ctl.server_client import server_for

    assert server_for(settings_for(free_port()), "ti2v-5B") is None  # nothing listens there
    # A server that loaded another task leaves the request to generate.py.
    assert server_for(settings_for(srv.port), "t2v-A14B") is None


@pytest.fixture
def gen_env(tmp_path):
    """`generate`'s settings next to the server: checkpoints it can check, no container to fall back to."""
    fake_checkpoints(tmp_path / "ckpt")
    return {"CHECKPOINT_DIR": str(tmp_path / "ckpt"), "CONTAINER_NAME": unique("wan22-no-such")}


def test_generate_batch_goes_to_the_server(srv, tmp_path, gen_env):
    (tmp_path / "notes.txt").write_text("not an image")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "a plain batch line\n"
        '{"prompt": "a json batch line", "steps": 3, "seed": 77}\n'
        '{"prompt": "bad frames", "frame_num": 80}\n'
        '{"prompt": "this one breaks FAIL"}\n'
        '{"prompt": "a text file as image", "image": "notes.txt"}\n'
        "the last line still runs\n"
    )
    before = len(srv.calls_made())
    r = wan22ctl(srv, "generate", "--task", "ti2v-5B", "--steps", "2", "--prompt-file", str(prompts), "--json",
                 extra_env=gen_env)
    assert r.returncode == 1, r.stderr
    rows = json.loads(r.stdout)["runs"]
    assert [row["status"] for row in rows] == ["ok", "ok", "invalid", "failed", "invalid", "ok"]
    assert json.loads(r.stdout)["failed"] == 3
    assert "4n+1" in rows[2]["error"]  # the CLI's check: never submitted
    assert "image" in rows[4]["error"] and "PNG" in rows[4]["error"]  # the server's 422 for that line
    assert "stand-in failure" in rows[3]["error"]
    assert r.stderr.count("submitted to the resident server as video_") == 4
    assert "prompts.jsonl:3: skipped" in r.stderr and "prompts.jsonl:5: skipped" in r.stderr
    for row in rows[:2] + rows[5:]:
        assert row["video"].startswith(str(srv.out)) and (tmp_path / row["video"]).is_file(), row
    calls = srv.calls_made()[before:]
    assert [c["input_prompt"] for c in calls] == ["a plain batch line", "a json batch line", "this one breaks FAIL",
                                                  "the last line still runs"]
    assert (calls[1]["sampling_steps"], calls[1]["seed"], calls[0]["sampling_steps"]) == (3, 77, 2)
    listed = {j["id"]: j["state"] for j in json.loads(wan22ctl(srv, "jobs", "--json").stdout)["data"]}
    assert [listed[row["job"]] for row in rows if row["job"]] == ["succeeded", "succeeded", "failed", "succeeded"]

    # The same batch for a person: a line per run and the summary table.
    prompts.write_text("one for the table\n{\"prompt\": \"bad frames\", \"frame_num\": 80}\n")
    r = wan22ctl(srv, "generate", "--task", "ti2v-5B", "--steps", "2", "--prompt-file", str(prompts),
                 extra_env=gen_env)
    assert r.returncode == 0, r.stderr  # a skipped line alone does not fail the batch
    assert "saved " in r.stdout and "generate: summary" in r.stdout and "invalid" in r.stdout
    assert "prompts.jsonl:2: skipped" in r.stdout


def test_generate_dry_run_or_mixed_tasks_submit_nothing(srv, tmp_path, gen_env):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dry line\n")
    before = len(json.loads(wan22ctl(srv, "jobs", "--json").stdout)["data"])
    r = wan22ctl(srv, "generate", "--task", "ti2v-5B", "--prompt-file", str(prompts), "--dry-run", extra_env=gen_env)
    assert r.returncode == 3 and "is not running" in r.stderr, r.stderr  # planning asks the container
    # One server serves one task: a batch that mixes tasks runs through generate.py.
    prompts.write_text('a 5B line\n{"prompt": "an A14B line", "task": "t2v-A14B", "size": "832*480"}\n')
    r = wan22ctl(srv, "generate", "--task", "ti2v-5B", "--prompt-file", str(prompts), extra_env=gen_env)
    assert r.returncode == 3 and "is not running" in r.stderr, r.stderr
    assert "submitted" not in r.stderr
    assert len(json.loads(wan22ctl(srv, "jobs", "--json").stdout)["data"]) == before


def test_generate_one_prompt_json_and_ctrl_c(srv, tmp_path, gen_env):
    r = wan22ctl(srv, "generate", "--task", "ti2v-5B", "--prompt", "one prompt, json", "--steps", "2", "--json",
                 extra_env=gen_env)
    assert r.returncode == 0, r.stderr
    row, = json.loads(r.stdout)["runs"]
    assert row["status"] == "ok" and row["job"].startswith("video_") and row["video"].endswith(".mp4")

    # Ctrl-C stops watching; the server keeps every job of the batch.
    prompts = tmp_path / "long.txt"
    prompts.write_text("a long one\nanother long one\n")
    env = clean_environ() | {"SERVER_PORT": str(srv.port), "OUTPUT_DIR": str(srv.out)} | gen_env
    proc = subprocess.Popen([sys.executable, "-m", "wan22ctl", "generate", "--task", "ti2v-5B", "--steps", "400",
                             "--prompt-file", str(prompts)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ids = []
        for line in proc.stdout:  # a person's run: submissions and progress go to stdout
            if "submitted to the resident server as " in line:
                ids.append(line.split(" as ")[1].strip())
            if len(ids) == 2:
                break
        srv.wait(ids[0], until=lambda j: j["progress_detail"]["step"] >= 1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "stopped watching; the server keeps" in err, err
    states = [srv.api("GET", f"/v1/videos/{i}")[1]["state"] for i in ids]
    assert states == ["running", "queued"]
    for i in ids:
        wan22ctl(srv, "cancel", i)


def test_cancel_and_wait_report_it(srv):
    long = srv.submit(prompt="cancel from the cli", size="1280*704", sample_steps=300)
    srv.wait(long["id"], until=lambda j: j["progress_detail"]["step"] >= 2)
    r = wan22ctl(srv, "cancel", long["id"])
    assert r.returncode == 0 and "stops at its next step" in r.stdout, r.stderr
    r = wan22ctl(srv, "wait", long["id"])
    assert r.returncode == 1 and f"{long['id']} cancelled" in r.stderr
    r = wan22ctl(srv, "cancel", long["id"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "cancelled"


def test_jobs_shows_prompts_as_text_never_as_terminal_commands(srv):
    """Issue 17, D13: `wan22ctl jobs` printed prompts through rich, so markup and escape sequences in a
    submitted prompt (a title change, a screen clear) took effect in the operator's terminal."""
    markup = srv.submit(prompt="[bold red]ALARM[/bold red] [link=http://x]x[/link]", size="1280*704", sample_steps=1)
    status, escaped, _ = srv.api("POST", "/v1/videos", {"prompt": "title \x1b]0;pwned\x07 clear \x1b[2J\x1b[H",
                                                         "size": "1280*704", "sample_steps": 1})
    for job in (markup, escaped if status == 201 else None):
        if job is not None:
            srv.wait(job["id"])
    r = wan22ctl(srv, "jobs", "--limit", "500")
    assert r.returncode == 0, r.stderr
    assert "[bold red]ALARM[/bold red]" in r.stdout  # shown as typed, not interpreted
    assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
    if status == 201:
        assert "title \\x1b]0;pwned\\x07 clear" in r.stdout  # visible, and inert
    else:
        assert status == 422  # or the server refuses control characters in prompts outright


def test_cli_errors_are_one_line(srv):
    r = wan22ctl(srv, "wait", "video_000000000000000000000000")
    assert r.returncode == 2 and "no video" in r.stderr and "Traceback" not in r.stderr
    r = wan22ctl(srv, "jobs", extra_env={"SERVER_PORT": str(free_port())})
    assert r.returncode == 3 and "no server answers" in r.stderr and "wan22ctl up --serve" in r.stderr


def test_wait_rides_out_a_server_restart(tmp_path):
    """`wan22ctl wait` keeps following a job across kill -9 and restart of the server."""
    s = Server(tmp_path, task="ti2v-5B", env={"FAKE_WAN_STEP_S": "0.03"}).start()
    waiter = None
    try:
        job = s.submit(prompt="survives", size="1280*704", sample_steps=60)
        waiter = subprocess.Popen([sys.executable, "-m", "wan22ctl", "wait", job["id"]], cwd=s.tmp,
                                  env=clean_environ() | {"SERVER_PORT": str(s.port)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        s.wait(job["id"], until=lambda j: j["progress_detail"]["step"] >= 5)
        s.stop(signal.SIGKILL)
        seen = read_until(waiter.stdout, "waiting for it to come back")  # it noticed the server is gone
        s.start()
        out = "".join(seen) + waiter.communicate(timeout=60)[0]
        assert waiter.returncode == 0, out
        assert "saved " in out
    finally:
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
            waiter.wait()
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
