"""One spec, two renderings: docker-compose.yml and the docker-py spec agree on every field.

`docker-compose config` (Compose v1, the one Debian ships) renders the file with the same
environment the CLI sees; the result is compared field by field with `plan_container()`.
Compose v1 does not know `uts` (Compose v2.15.1+ does), so that key is checked in the raw
file and removed from the copy v1 renders. docker-compose.serve.yml, layered over it, is
compared with the serve spec (`wan22ctl up --serve`) the same way, and run for real.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO, clean_environ
from wan22ctl.catalog import MAIN
from wan22ctl.plan.container import SERVER_KEY_FILE, plan_container, plan_serve_container
from wan22ctl.plan.image import build_args
from wan22ctl.settings import load_settings

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")

VARIANTS = [
    {},
    {"CONTAINER_NAME": "other-name", "SHM_SIZE": "64g", "OUTPUT_DIR": "/data/out", "CHECKPOINT_DIR": "/data/ckpt",
     "HF_HOME": "/data/hf", "DOCKER_IMAGE": "registry.example:5000/wan:1", "PRIVILEGED": "false",
     "RESTART_POLICY": "always"},
]


SERVE_FILE = "docker-compose.serve.yml"
COMPOSE_KEY_FILE = "/run/secrets/wan22-api-key"  # where docker-compose.serve.yml mounts WAN22_API_KEY_FILE


def compose_config(tmp_path, env: dict, profile: str | None = None, serve: bool = False) -> dict:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for svc in raw["services"].values():
        svc.pop("uts", None)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "container.env", tmp_path / "container.env")
    shutil.copy(REPO / SERVE_FILE, tmp_path / SERVE_FILE)
    files = ["-f", "docker-compose.yml"] + (["-f", SERVE_FILE] if serve else [])
    cmd = ["docker-compose", *files] + (["--profile", profile] if profile else []) + ["config"]
    r = subprocess.run(cmd, cwd=tmp_path, env={**clean_environ(), **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


def seconds(value: str) -> int:
    """Compose v1 renders durations as 10s, 15m, 1h30m."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", value)
    assert "".join(n + u for n, u in parts) == value, value
    return sum(int(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("env", VARIANTS, ids=["defaults", "overridden"])
def test_compose_matches_docker_py_spec(tmp_path, env):
    spec = plan_container(load_settings(None, environ=env), MAIN)
    svc = compose_config(tmp_path, env)["wan22"]
    assert svc["command"] == list(spec.command)
    assert svc["environment"] == spec.environment
    assert "ports" not in svc and spec.ports == {}
    assert_same_container(svc, spec)


SERVE_VARIANTS = [
    {},
    {**VARIANTS[1], "SERVER_TASK": "t2v-A14B", "SERVER_PORT": "18123", "SERVER_HOST": "0.0.0.0",
     "WAN22_API_KEY": "s3cret-from-env", "WAN22_API_KEY_FILE": "/srv/keys/wan22"},
]


@pytest.mark.parametrize("env", SERVE_VARIANTS, ids=["defaults", "overridden-with-key"])
def test_compose_serve_override_matches_the_serve_spec(tmp_path, env):
    spec = plan_serve_container(load_settings(None, environ=env))
    svc = compose_config(tmp_path, env, serve=True)["wan22"]

    # The one difference, by design: `up --serve` writes the key (given or generated) into a file on
    # the outputs mount; Compose mounts WAN22_API_KEY_FILE at a fixed path. Neither passes the key
    # as a variable, so `docker inspect` never shows it.
    def without_key_file(cmd, path):
        cmd = list(cmd)
        if "--api-key-file" in cmd:
            at = cmd.index("--api-key-file")
            assert cmd[at + 1] == path
            del cmd[at:at + 2]
        return cmd

    assert svc["command"][-2:] == ["--api-key-file", COMPOSE_KEY_FILE]
    assert "--api-key-file" in spec.command and "--published-host" not in spec.command
    assert without_key_file(svc["command"], COMPOSE_KEY_FILE) == without_key_file(spec.command, SERVER_KEY_FILE)
    assert svc["environment"] == spec.environment and "WAN22_API_KEY" not in svc["environment"]
    key_mount = [v for v in svc["volumes"] if v.split(":")[1] == COMPOSE_KEY_FILE]  # v1: "SRC:DST:MODE"
    assert key_mount == [f"{env.get('WAN22_API_KEY_FILE', '/dev/null')}:{COMPOSE_KEY_FILE}:ro"], svc["volumes"]
    svc = {**svc, "volumes": [v for v in svc["volumes"] if v not in key_mount]}
    (container_port, host), = spec.ports.items()
    assert svc["ports"] == [f"{host}:{container_port}"]  # HOST_IP:PORT:8000/tcp
    assert svc["tty"] is spec.tty is False and svc["stdin_open"] is spec.stdin_open is False
    assert_same_container(svc, spec)


def assert_same_container(svc: dict, spec) -> None:
    """Every field the main and the serve container share, rendered by Compose vs the spec."""
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["wan22"]
    assert svc["image"] == spec.image
    assert svc["container_name"] == spec.name
    assert svc["working_dir"] == spec.working_dir
    assert svc["ipc"] == spec.ipc_mode == "host"
    assert raw["uts"] == spec.uts_mode == "host"
    assert svc["privileged"] in (spec.privileged, str(spec.privileged).lower())
    assert svc["security_opt"] == list(spec.security_opt)
    assert svc["shm_size"] == spec.shm_size
    assert svc["ulimits"]["memlock"] == {"soft": spec.memlock, "hard": spec.memlock}
    assert svc["tty"] is spec.tty and svc["stdin_open"] is spec.stdin_open
    assert svc["restart"] == spec.restart_policy
    mounts = sorted(v.rsplit(":", 1)[0] if v.endswith((":rw", ":ro")) else v for v in svc["volumes"])
    assert mounts == sorted(f"{m.source}:{m.target}" for m in spec.mounts)
    assert_health_check_and_gpus(svc, spec)


def assert_health_check_and_gpus(svc: dict, spec) -> None:
    """The health check and the GPU reservation (GPUS=all) rendered by Compose vs the spec: every stack's."""
    hc = svc["healthcheck"]
    assert hc["test"] == ["CMD", *spec.healthcheck.test]
    assert seconds(hc["interval"]) == spec.healthcheck.interval_s
    assert seconds(hc["timeout"]) == spec.healthcheck.timeout_s
    assert seconds(hc["start_period"]) == spec.healthcheck.start_period_s
    assert hc["retries"] == spec.healthcheck.retries
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert spec.gpus is not None and spec.gpus.count == -1  # GPUS=all


def test_compose_build_args_match_the_image_plan(tmp_path):
    settings = load_settings(None, environ={})
    svc = compose_config(tmp_path, {})["wan22"]
    assert svc["build"]["args"] == build_args(settings, MAIN)
    assert svc["build"]["target"] == "inference"


def test_container_env_file_is_the_spec_environment():
    lines = [l for l in (REPO / "container.env").read_text().splitlines() if l and not l.startswith("#")]
    assert dict(l.split("=", 1) for l in lines) == plan_container(load_settings(None, environ={})).environment
