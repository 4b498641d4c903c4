"""`wan22ctl up --serve` for real: the container runs the server (stand-in pipeline from the
stand-in image), its port is published on 127.0.0.1, and the host commands reach it.
"""

from __future__ import annotations

import json
import subprocess
import time

from tests.test_generate import fake_checkpoints
from tests.test_server import Api, free_port


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
    deadline = time.time() + 60
    while True:
        try:
            if api("GET", "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        assert time.time() < deadline, container.logs().decode()[-3000:]
        time.sleep(0.2)
    assert Api(api.base)("GET", "/v1/videos")[0] == 401

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
