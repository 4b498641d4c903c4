"""The VideoX-Fun service of docker-compose.yml (profile `videox-fun`) equals `plan_videox_container()`.

Rendered by `docker-compose config` (Compose v1) with the environment the CLI would see, with
the project folder set to the checkout so `./wan22ctl` resolves to the package the spec mounts.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO, clean_environ
from tests.test_compose import assert_health_check_and_gpus
from wan22ctl.catalog import VIDEOX
from wan22ctl.plan.container import plan_container
from wan22ctl.plan.image import build_args
from wan22ctl.settings import load_settings

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")

VARIANTS = [
    {},
    {"VIDEOX_CONTAINER_NAME": "vx-other", "VIDEOX_IMAGE": "registry.example:5000/vx:2", "VIDEOX_SHM_SIZE": "32g",
     "VIDEOX_MODELS_DIR": "/data/vx-models", "OUTPUT_DIR": "/data/out", "VIDEOX_PORT": "7999",
     "VIDEOX_MODEL": "CogVideoX-Fun-V1.1-5b-InP", "VIDEOX_UI_MODE": "normal",
     "VIDEOX_GPU_MEMORY_MODE": "model_cpu_offload_and_qfloat8", "VIDEOX_REF": "0123abc", "RESTART_POLICY": "always"},
]


def compose_services(tmp_path, env: dict, profile: str = "videox-fun") -> dict:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for svc in raw["services"].values():
        svc.pop("uts", None)  # Compose v1 does not know it (the main stack's test checks it)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "container.env", tmp_path / "container.env")
    cmd = ["docker-compose", "-f", str(path), "--project-directory", str(REPO)]
    cmd += ["--profile", profile, "config"]
    r = subprocess.run(cmd, cwd=REPO, env={**clean_environ(), **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


@pytest.mark.parametrize("env", VARIANTS, ids=["defaults", "overridden"])
def test_compose_profile_matches_the_videox_spec(tmp_path, env):
    spec = plan_container(load_settings(None, environ=env), VIDEOX)
    svc = compose_services(tmp_path, env)["videox-fun"]

    # `docker compose up` without the profile leaves this service alone (Compose v1's `config`
    # ignores profiles, so the key itself is what can be checked here).
    assert svc["profiles"] == ["videox-fun"]
    assert svc["image"] == spec.image
    assert svc["container_name"] == spec.name
    assert svc["command"] == list(spec.command)
    assert svc["working_dir"] == spec.working_dir
    assert svc["network_mode"] == spec.network_mode == "host"  # VIDEOX_HOST_NETWORK=true, the default
    assert "ports" not in svc and spec.ports == {}
    assert svc["security_opt"] == list(spec.security_opt)
    assert svc["shm_size"] == spec.shm_size
    assert svc["restart"] == spec.restart_policy
    for key in ("ipc", "uts", "privileged", "ulimits", "tty", "stdin_open"):
        assert key not in svc  # the seed's UI container runs without them; so does the spec
    assert spec.ipc_mode is spec.uts_mode is spec.memlock is None and not spec.privileged and not spec.tty
    assert svc["environment"] == spec.environment
    volumes = sorted(svc["volumes"])
    assert volumes == sorted(f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts)
    assert_health_check_and_gpus(svc, spec)


def test_compose_build_matches_the_videox_image_plan(tmp_path):
    svc = compose_services(tmp_path, {})["videox-fun"]
    assert svc["build"]["target"] == "videox-fun"
    assert svc["build"]["args"] == build_args(load_settings(None, environ={}), VIDEOX)

