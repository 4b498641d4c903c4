"""Container lifecycle against a real Docker Engine: up/down/status, idempotence, recreate, storage, attach."""

from __future__ import annotations

import json
import socket
import time

import pytest

from wan22ctl.docker.containers import create_kwargs
from wan22ctl.plan.container import plan_container
from wan22ctl.settings import load_settings

pytestmark = pytest.mark.docker


def up(cli, *args, **kw):
    r = cli("up", "--wait", "60", *args, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def status(cli) -> dict:
    r = cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return {c["stack"]: c for c in json.loads(r.stdout)["containers"]}


def test_up_status_down_keeps_storage(cli, docker_client, tmp_path):
    r = up(cli)
    name = cli.env["CONTAINER_NAME"]
    assert f"{name} created" in r.stdout and "healthy" in r.stdout
    assert f"docker attach {name}" in r.stdout

    main = status(cli)["main"]
    assert main["state"] == "running" and main["health"] == "healthy"
    targets = {m["target"]: m["source"] for m in main["mounts"]}
    assert targets["/opt/outputs"] == cli.env["OUTPUT_DIR"]
    assert targets["/opt/checkpoints"] == cli.env["CHECKPOINT_DIR"]
    assert status(cli)["videox-fun"]["state"] == "absent"

    container = docker_client.containers.get(name)
    code, _ = container.exec_run(["sh", "-c", "echo weights > /opt/checkpoints/keep.bin && echo video > /opt/outputs/out.mp4"])
    assert code == 0
    assert (tmp_path / "outputs" / "out.mp4").read_text() == "video\n"  # outputs appear on the host

    r = cli("down")
    assert r.returncode == 0 and f"{name} removed" in r.stdout
    assert status(cli)["main"]["state"] == "absent"
    assert (tmp_path / "checkpoints" / "keep.bin").read_text() == "weights\n"
    assert (tmp_path / "outputs" / "out.mp4").exists()

    up(cli)
    code, out = docker_client.containers.get(name).exec_run(["cat", "/opt/checkpoints/keep.bin"])
    assert (code, out) == (0, b"weights\n")  # checkpoints survive container removal
    r = cli("down")
    assert r.returncode == 0
    r = cli("down")
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_up_is_idempotent_and_recreates_on_change(cli, docker_client):
    up(cli)
    name = cli.env["CONTAINER_NAME"]
    first = docker_client.containers.get(name).id
    r = up(cli)
    assert "nothing to do" in r.stdout
    assert docker_client.containers.get(name).id == first

    r = up(cli, extra_env={"SHM_SIZE": "2g"})
    assert "recreated" in r.stdout and "shm_size: '16g' -> '2g'" in r.stdout
    second = docker_client.containers.get(name)
    assert second.id != first
    assert second.attrs["HostConfig"]["ShmSize"] == 2 * 1024**3
    assert cli("down").returncode == 0


def test_attach_gives_a_shell(cli, docker_client):
    up(cli)
    container = docker_client.containers.get(cli.env["CONTAINER_NAME"])
    config = container.attrs["Config"]
    assert config["Tty"] is True and config["OpenStdin"] is True
    # What `docker attach` does: talk to the main process (bash) on its stdin/stdout.
    sock = docker_client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
    raw = sock._sock
    raw.settimeout(10)
    raw.sendall(b"echo attach-$((40+2))\n")
    seen = b""
    deadline = time.monotonic() + 10
    while b"attach-42" not in seen and time.monotonic() < deadline:
        try:
            seen += raw.recv(4096)
        except socket.timeout:
            break
    raw.close()
    assert b"attach-42" in seen
    assert cli("down").returncode == 0


def test_real_gpu_and_kernel_settings_via_create_and_inspect(docker_client, kit_image, tmp_path):
    """The sandbox cannot start privileged/memlock/GPU containers; create + inspect shows the settings."""
    env = {"DOCKER_IMAGE": kit_image, "CONTAINER_NAME": f"wan22t-inspect-{tmp_path.name[-8:]}",
           "OUTPUT_DIR": str(tmp_path / "o"), "CHECKPOINT_DIR": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "h"),
           "HF_TOKEN": "hf_never_in_inspect_123", "REGISTRY_PASSWORD": "never-in-inspect-456"}
    spec = plan_container(load_settings(None, environ=env))
    container = docker_client.containers.create(**create_kwargs(spec))
    try:
        attrs = docker_client.api.inspect_container(container.id)
        host = attrs["HostConfig"]
        assert host["Privileged"] is True
        assert host["IpcMode"] == "host" and host["UTSMode"] == "host"
        assert "seccomp=unconfined" in host["SecurityOpt"]
        assert {"Name": "memlock", "Soft": -1, "Hard": -1} in host["Ulimits"]
        assert host["ShmSize"] == 16 * 1024**3
        request = host["DeviceRequests"][0]
        assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
        assert "PYTORCH_ALLOC_CONF=expandable_segments:True" in attrs["Config"]["Env"]
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        dump = json.dumps(attrs)
        assert "hf_never_in_inspect_123" not in dump and "never-in-inspect-456" not in dump
    finally:
        container.remove(force=True)


def test_gpu_count_and_device_ids(docker_client, kit_image, tmp_path):
    for gpus, expect in (("2", {"Count": 2, "DeviceIDs": []}), ("device=0,3", {"Count": 0, "DeviceIDs": ["0", "3"]})):
        env = {"DOCKER_IMAGE": kit_image, "GPUS": gpus, "CONTAINER_NAME": f"wan22t-gpus-{gpus[-1]}-{tmp_path.name[-6:]}",
               "OUTPUT_DIR": str(tmp_path / "o"), "CHECKPOINT_DIR": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "h")}
        container = docker_client.containers.create(**create_kwargs(plan_container(load_settings(None, environ=env))))
        try:
            req = docker_client.api.inspect_container(container.id)["HostConfig"]["DeviceRequests"][0]
            assert {k: req[k] or [] if k == "DeviceIDs" else req[k] for k in expect} == expect
        finally:
            container.remove(force=True)


def test_dry_run_prints_the_spec_without_touching_containers(cli, docker_client):
    r = cli("up", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["container"]["name"] == cli.env["CONTAINER_NAME"]
    assert data["container"]["ipc_mode"] == "host"
    assert data["image"]["action"] == "none"
    assert not docker_client.containers.list(all=True, filters={"name": cli.env["CONTAINER_NAME"]})


def test_run_sh_brings_the_container_up(cli, docker_client):
    """README quick start: ./run.sh, then the container is running and attachable."""
    import subprocess

    from tests.conftest import REPO

    r = subprocess.run(["bash", str(REPO / "run.sh"), "--wait", "60"], env=cli.env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    name = cli.env["CONTAINER_NAME"]
    assert f"docker attach {name}" in r.stdout
    container = docker_client.containers.get(name)
    assert container.status == "running" and container.attrs["Config"]["Tty"] is True
    assert cli("down").returncode == 0


def test_status_shows_gpus_seen_in_the_container_and_logs(cli, docker_client, standin_image):
    up(cli, extra_env={"DOCKER_IMAGE": standin_image})
    name = cli.env["CONTAINER_NAME"]
    container = docker_client.containers.get(name)
    code, _ = container.exec_run(["sh", "-c", "echo '2x80:9.0:NVIDIA H100 80GB HBM3' > /etc/wan22-fake-gpus"])
    assert code == 0
    r = cli("status", "--json", extra_env={"DOCKER_IMAGE": standin_image})
    gpus = json.loads(r.stdout)["containers"][0]["gpus_visible"]
    assert [(g["index"], g["name"], g["memory_gb"], g["compute_cap"]) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 80.0, "9.0"), (1, "NVIDIA H100 80GB HBM3", 80.0, "9.0")]
    r = cli("status", extra_env={"DOCKER_IMAGE": standin_image})
    assert "NVIDIA H100" in r.stdout and "running" in r.stdout
    container.exec_run(["sh", "-c", "echo hello-from-pid1 > /proc/1/fd/1"])
    r = cli("logs", "--tail", "5")
    assert r.returncode == 0 and "hello-from-pid1" in r.stdout
    assert cli("down").returncode == 0
