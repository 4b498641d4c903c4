"""`wan22ctl up --serve` and docker-compose.serve.yml for real: the container runs the server
(stand-in pipeline from the stand-in image), its port is published on 127.0.0.1, and the host
commands (`jobs`, `wait`, `generate` with one prompt or a batch) reach it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml

from tests.test_generate import fake_checkpoints
from tests.test_server import Api, free_port



def wait_ready_and_locked(api, container, timeout: float = 60) -> None:
    """Wait for /readyz, then check that a request without the key is refused."""
    deadline = time.time() + timeout
    while True:
        try:
            if api("GET", "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        assert time.time() < deadline, container.logs().decode()[-3000:]
        time.sleep(0.2)
    assert Api(api.base)("GET", "/v1/videos")[0] == 401

def test_up_serve_then_jobs_wait_from_the_host(cli, standin_image, docker_client):
    port = free_port()
    key = "k3y-for-the-test"
    env = {"DOCKER_IMAGE": standin_image, "SERVER_PORT": str(port), "SERVER_TASK": "ti2v-5B", "WAN22_API_KEY": key}
    ckpt = cli.env["CHECKPOINT_DIR"]
    subprocess.run(["mkdir", "-p", f"{ckpt}/Wan2.2-TI2V-5B"], check=True)

    r = cli("up", "--serve", "--wait", "60", extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"server: http://127.0.0.1:{port}" in r.stdout + r.stderr

    container = docker_client.containers.get(cli.env["CONTAINER_NAME"])
    binding = container.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]
    assert binding == {"HostIp": "127.0.0.1", "HostPort": str(port)}
    assert key not in json.dumps(container.attrs)  # the key reached the server through a file, not the spec

    api = Api(f"http://127.0.0.1:{port}", key)
    wait_ready_and_locked(api, container)

    status, job, _ = api("POST", "/v1/videos", {"prompt": "a fox from the container", "sample_steps": 5})
    assert status == 201, job
    r = cli("wait", job["id"], extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out_dir = cli.env["OUTPUT_DIR"]
    assert f"saved {out_dir}/ti2v-5B_1280x704_a-fox-from-the-container_" in r.stdout + r.stderr  # a host path
    r = cli("jobs", "--json", extra_env=env)
    listed = json.loads(r.stdout)["data"]
    assert [j["state"] for j in listed] == ["succeeded"] and listed[0]["output"].startswith(out_dir)
    r = cli("jobs", extra_env={**env, "WAN22_API_KEY": "wrong"})
    assert r.returncode == 2 and "refused the API key" in r.stderr

    # `generate` finds the running server for its task and submits there instead of running generate.py.
    from pathlib import Path

    fake_checkpoints(Path(ckpt))
    r = cli("generate", "--task", "ti2v-5B", "--prompt", "a heron by the server", "--steps", "4", extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted to the resident server as video_" in r.stdout + r.stderr
    assert f"saved {out_dir}/ti2v-5B_1280x704_a-heron-by-the-server_" in r.stdout + r.stderr
    assert len(json.loads(cli("jobs", "--json", extra_env=env).stdout)["data"]) == 2


def test_up_serve_without_a_key_still_locks_the_server(cli, standin_image, docker_client):
    """The server binds every container address (reachable from the whole Docker network), so it
    always has a key: without WAN22_API_KEY `up --serve` generates one into the outputs folder
    (mode 600, never in `docker inspect`) and the host's CLI reads it from there."""
    import os
    from pathlib import Path

    port = free_port()
    env = {"DOCKER_IMAGE": standin_image, "SERVER_PORT": str(port), "SERVER_TASK": "ti2v-5B"}
    subprocess.run(["mkdir", "-p", f"{cli.env['CHECKPOINT_DIR']}/Wan2.2-TI2V-5B"], check=True)
    r = cli("up", "--serve", "--wait", "60", extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    container = docker_client.containers.get(cli.env["CONTAINER_NAME"])
    cmd = container.attrs["Config"]["Cmd"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and "--published-host" not in cmd
    assert cmd[cmd.index("--api-key-file") + 1] == "/opt/outputs/.wan22ctl/server/api_key"
    assert container.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0] == {"HostIp": "127.0.0.1", "HostPort": str(port)}
    key_file = Path(cli.env["OUTPUT_DIR"]) / ".wan22ctl/server/api_key"
    key = key_file.read_text().strip()
    assert len(key) >= 32 and os.stat(key_file).st_mode & 0o777 == 0o600
    assert key not in json.dumps(container.attrs)

    api = Api(f"http://127.0.0.1:{port}", key)
    wait_ready_and_locked(api, container)  # anonymous: 401
    assert api("GET", "/v1/videos")[0] == 200
    r = cli("jobs", "--json", extra_env=env)  # the CLI found the generated key
    assert r.returncode == 0 and json.loads(r.stdout)["data"] == [], r.stdout + r.stderr
    assert cli("up", "--serve", "--wait", "60", extra_env=env).returncode == 0
    assert key_file.read_text().strip() == key  # kept across `up`s


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")
def test_compose_serve_override_runs_the_server_and_a_batch(cli, standin_image, docker_client, tmp_path):
    """docker-compose.serve.yml for real: the key from WAN22_API_KEY_FILE (never in `docker inspect`),
    `--plan auto` over a (stand-in) H100, the port on 127.0.0.1, and a `generate --prompt-file`
    batch queued there (the CLI, as a client, sends WAN22_API_KEY)."""
    from pathlib import Path

    from tests.test_compose import compose_config

    port, key = free_port(), "k3y-from-a-file"
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    env = {**cli.env, "DOCKER_IMAGE": standin_image, "SERVER_PORT": str(port), "SERVER_TASK": "ti2v-5B",
           "WAN22_API_KEY": key, "WAN22_API_KEY_FILE": str(key_file)}
    fake_checkpoints(Path(cli.env["CHECKPOINT_DIR"]))
    (tmp_path / "compose").mkdir()
    svc = compose_config(tmp_path / "compose", env, serve=True)["wan22"]
    # What this GPU-less sandbox cannot start (GPU reservation, memlock); the rest as rendered.
    del svc["deploy"], svc["ulimits"], svc["build"]
    svc["environment"]["WAN22_FAKE_GPUS"] = "1x80:9.0:NVIDIA H100 80GB HBM3"
    up = tmp_path / "up.yml"
    up.write_text(yaml.safe_dump({"version": "3.9", "services": {"wan22": svc}}))
    compose = ["docker-compose", "-p", cli.env["CONTAINER_NAME"], "-f", str(up)]
    try:
        r = subprocess.run([*compose, "up", "-d", "--no-build"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        container = docker_client.containers.get(cli.env["CONTAINER_NAME"])
        binding = container.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]
        assert binding == {"HostIp": "127.0.0.1", "HostPort": str(port)}
        assert key not in json.dumps(container.attrs)  # docker inspect: the file's path, never the key

        api = Api(f"http://127.0.0.1:{port}", key)
        wait_ready_and_locked(api, container)
        info = api("GET", "/v1/info")[1]
        assert info["task"] == "ti2v-5B" and info["auth"] is True and info["plan"]["auto"], info

        prompts = tmp_path / "prompts.txt"
        prompts.write_text('a crane over a lake\n{"prompt": "bad frames", "frame_num": 80}\na boat at dawn\n')
        r = cli("generate", "--task", "ti2v-5B", "--steps", "3", "--prompt-file", str(prompts), "--json",
                extra_env=env)
        assert r.returncode == 0, r.stdout + r.stderr  # the invalid line is skipped, the others ran
        rows = json.loads(r.stdout)["runs"]
        assert [row["status"] for row in rows] == ["ok", "invalid", "ok"]
        assert r.stderr.count("submitted to the resident server as video_") == 2
        out_dir = cli.env["OUTPUT_DIR"]
        for row in (rows[0], rows[2]):
            assert row["video"].startswith(out_dir + "/ti2v-5B_1280x704_") and Path(row["video"]).is_file()
    finally:
        subprocess.run([*compose, "down", "--timeout", "5"], capture_output=True, timeout=120)
