"""Failure paths of `up`: each one a clear message, the right exit code, and no orphan container."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.docker


def assert_no_container(docker_client, name):
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"}), f"{name} left behind"


def test_daemon_unreachable_names_docker_host(cli):
    r = cli("up", extra_env={"DOCKER_HOST": "unix:///tmp/wan22ctl-no-such.sock"})
    assert r.returncode == 3
    assert "unix:///tmp/wan22ctl-no-such.sock" in r.stderr and "start Docker" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("status", extra_env={"DOCKER_HOST": "tcp://127.0.0.1:1"})
    assert r.returncode == 3 and "tcp://127.0.0.1:1" in r.stderr


def test_dry_run_needs_no_daemon(cli):
    # the plan is printed; only whether the image is already there stays open, and says so
    r = cli("up", "--dry-run", "--json", extra_env={"DOCKER_HOST": "unix:///tmp/wan22ctl-no-such.sock"})
    assert r.returncode == 0, r.stderr
    image = json.loads(r.stdout)["image"]
    assert image["action"] == "pull" and "not checked" in image["reason"]  # IMAGE_MODE=pull here


def test_no_nvidia_runtime_says_install_toolkit_and_cleans_up(cli, docker_client):
    r = cli("up", extra_env={"GPUS": "all"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert 'could not select device driver "" with capabilities: [[gpu]]' in r.stderr
    assert "nvidia-container-toolkit" in r.stderr.lower().replace(" ", "-") or "NVIDIA Container Toolkit" in r.stderr
    assert "GPUS=none" in r.stderr
    assert_no_container(docker_client, cli.env["CONTAINER_NAME"])


def test_privileged_refused_names_the_setting(cli, docker_client):
    r = cli("up", extra_env={"PRIVILEGED": "true"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "PRIVILEGED=false" in r.stderr
    assert_no_container(docker_client, cli.env["CONTAINER_NAME"])


def test_memlock_refused_names_the_setting(cli, docker_client):
    r = cli("up", extra_env={"MEMLOCK": "unlimited"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "MEMLOCK=off" in r.stderr
    assert_no_container(docker_client, cli.env["CONTAINER_NAME"])


def test_foreign_container_with_the_same_name_is_not_touched(cli, docker_client, kit_image):
    name = cli.env["CONTAINER_NAME"]
    foreign = docker_client.containers.create(kit_image, name=name, command=["true"])
    try:
        r = cli("up")
        assert r.returncode == 3 and "not made by wan22ctl" in r.stderr
        assert docker_client.containers.get(name).id == foreign.id
    finally:
        foreign.remove(force=True)


def test_build_failure_shows_the_builder_error(cli, docker_client):
    tag = f"wan22ctl-test/broken:{cli.env['CONTAINER_NAME']}"
    r = cli("up", extra_env={"IMAGE_MODE": "build", "DOCKER_IMAGE": tag,
                             "BASE_IMAGE": "wan22ctl-test/no-such-base:1"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"build of {tag} failed at" in r.stderr and "FROM ${BASE_IMAGE}" in r.stderr
    assert "BASE_IMAGE=wan22ctl-test/no-such-base:1" in r.stdout
    assert_no_container(docker_client, cli.env["CONTAINER_NAME"])
    assert not docker_client.images.list(name=tag)


def test_registry_unreachable_in_pull_mode(cli, docker_client):
    r = cli("up", extra_env={"IMAGE_MODE": "pull", "DOCKER_IMAGE": "127.0.0.1:1/wan22ctl/none:1"})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot pull 127.0.0.1:1/wan22ctl/none:1" in r.stderr and "IMAGE_MODE=build" in r.stderr
    assert_no_container(docker_client, cli.env["CONTAINER_NAME"])


def test_conflicting_flags_and_bad_stack_exit_2(cli):
    r = cli("up", "--build", "--pull")
    assert r.returncode == 2 and "exclude each other" in r.stderr
    r = cli("up", "--stack", "nope")
    assert r.returncode == 2 and "unknown stack" in r.stderr
