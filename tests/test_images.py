"""Images against a real registry on localhost (Debian's docker-registry with htpasswd auth)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import uuid

import pytest

from tests.ports import free_port

pytestmark = [pytest.mark.docker,
              pytest.mark.skipif(not shutil.which("docker-registry") or not shutil.which("htpasswd"),
                                 reason="docker-registry / htpasswd not installed")]

USER, PASSWORD = "tester", "s3cret-registry-pw-71"



@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    (root / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: wan22ctl-test\n    path: {root}/htpasswd\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"localhost:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def tiny_image(docker_client):
    """A one-file image made without any registry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = f"wan22ctl-test/tiny:{uuid.uuid4().hex[:8]}"
    docker_client.api.import_image_from_data(buf.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    yield tag
    for ref in [tag] + [t for img in docker_client.images.list() for t in img.tags if "/t/tiny" in t]:
        try:
            docker_client.images.remove(ref, force=True)
        except Exception:
            pass


def test_push_then_pull_with_progress(cli, docker_client, registry, tiny_image):
    target = f"{registry}/t/tiny:{uuid.uuid4().hex[:6]}"
    env = {"DOCKER_IMAGE": tiny_image, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    r = cli("push", target, extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pushed {target}" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr

    docker_client.images.remove(target)
    r = cli("pull", "--image", target, extra_env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"pulled {target}" in r.stdout
    assert docker_client.images.get(target)


def test_push_with_wrong_password_fails_loudly_and_leaves_no_tag(cli, docker_client, registry, tiny_image):
    import docker

    target = f"{registry}/t/tiny:bad"
    r = cli("push", target, extra_env={
        "DOCKER_IMAGE": tiny_image, "REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": "wrong-pw-xyz"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "push of" in r.stderr and ("authentication required" in r.stderr or "unauthorized" in r.stderr)
    assert "wrong-pw-xyz" not in r.stdout + r.stderr
    with pytest.raises(docker.errors.ImageNotFound):  # issue 17, D12: the tag the push made went with it
        docker_client.images.get(target)
    assert docker_client.images.get(tiny_image)  # the source keeps its own


def test_push_refuses_a_bad_reference_before_tagging(cli, docker_client, tiny_image):
    """Issue 17, D12: `push 'UPPER/Case:tag'` was a raw Docker APIError (exit 1)."""
    before = set(docker_client.images.get(tiny_image).tags)
    for target, says in [("UPPER/Case:tag", "the repository part 'UPPER' is not in lower case"),
                         ("localhost:5000/img@sha256:" + "0" * 64, "a digest names content"),
                         ("my_host:5000/img", "the registry 'my_host:5000' is not a host name")]:
        r = cli("push", target, extra_env={"DOCKER_IMAGE": tiny_image})
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.startswith(f"error: {target!r} is not an image reference: ") and says in r.stderr, r.stderr
        assert "APIError" not in r.stderr and "unexpected" not in r.stderr
    assert set(docker_client.images.get(tiny_image).tags) == before  # nothing was tagged


def test_pull_failures(cli, registry):
    r = cli("pull", "--image", f"{registry}/t/missing:1", extra_env={"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD})
    assert r.returncode == 2 and "not found" in r.stderr, r.stderr
    r = cli("pull", "--image", f"{registry}/t/missing:1", extra_env={"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": "nope-pw-1"})
    assert r.returncode == 2 and "REGISTRY_PASSWORD" in r.stderr, r.stderr
    assert "nope-pw-1" not in r.stdout + r.stderr


def test_up_in_pull_mode_pulls_a_missing_image(cli, docker_client, registry, kit_image):
    target = f"{registry}/t/kit:{uuid.uuid4().hex[:6]}"
    env = {"REGISTRY_USERNAME": USER, "REGISTRY_PASSWORD": PASSWORD}
    assert cli("push", target, extra_env={**env, "DOCKER_IMAGE": kit_image}).returncode == 0
    docker_client.images.remove(target)
    try:
        r = cli("up", "--wait", "60", extra_env={**env, "IMAGE_MODE": "pull", "DOCKER_IMAGE": target})
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"pulling {target} (image not present)" in r.stdout and f"pulled {target}" in r.stdout
        r = cli("up", "--wait", "60", extra_env={**env, "IMAGE_MODE": "pull", "DOCKER_IMAGE": target})
        assert "pulling" not in r.stdout and "nothing to do" in r.stdout
    finally:
        cli("down", extra_env={"DOCKER_IMAGE": target})
        docker_client.images.remove(target, force=True)


def test_build_dry_run_names_the_builder(cli):
    r = cli("build", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["action"] == "build"
    assert plan["build"]["builder"] == ("buildx" if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0 else "classic")
    assert plan["build"]["buildargs"]["TORCH_CUDA_ARCH_LIST"] == "8.9;9.0"
    assert "HF_TOKEN" not in json.dumps(plan)


def test_kit_image_carries_settings_and_no_secrets(docker_client, kit_image):
    image = docker_client.images.get(kit_image)
    config = image.attrs["Config"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["PYTORCH_ALLOC_CONF"] == "expandable_segments:True"
    assert env["TORCH_CUDA_ARCH_LIST"] == "8.9;9.0"
    assert env["WAN22_REF"] == "42bf4cfaa384bc21833865abc2f9e6c0e67233dc"
    assert config["Healthcheck"]["Test"] == ["CMD", "wan22ctl-agent", "health"]
    history = json.dumps(image.history()) + json.dumps(config)
    for word in ("HF_TOKEN", "REGISTRY_PASSWORD"):
        assert word not in history, word
    out = docker_client.containers.run(kit_image, ["wan22ctl", "--version"], remove=True)
    assert out.strip() == b"wan22ctl 0.1.0"
