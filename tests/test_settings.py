"""Settings: precedence, .env.example ≡ embedded defaults, misspelt keys, invalid values, masking."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, clean_environ
from wan22ctl.errors import UserError
from wan22ctl.settings import DEFAULTS, load_settings, render_env_example


def run(cwd, *args, env_extra=None):
    env = clean_environ()
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_env_example_is_the_embedded_defaults():
    assert (REPO / ".env.example").read_text() == render_env_example()
    assert DEFAULTS["CONTAINER_NAME"] == "wan22-inference"
    assert DEFAULTS["OUTPUT_DIR"] == "/opt/outputs"
    assert DEFAULTS["TORCH_CUDA_ARCH_LIST"] == "8.9;9.0"
    assert DEFAULTS["WAN22_REF"] == "42bf4cfaa384bc21833865abc2f9e6c0e67233dc"
    assert ":latest" not in DEFAULTS["BASE_IMAGE"] and ":" in DEFAULTS["BASE_IMAGE"]


def test_precedence_flag_over_environment_over_env_file_over_default(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SHM_SIZE=32g\nGPUS=2\nCONTAINER_NAME=from-file\n")
    s = load_settings(env_file, environ={"GPUS": "device=0,1", "CONTAINER_NAME": "from-env"},
                      overrides={"CONTAINER_NAME": "from-flag"})
    assert (s["CONTAINER_NAME"], s.source("CONTAINER_NAME")) == ("from-flag", "flag")
    assert (s["GPUS"], s.source("GPUS")) == ("device=0,1", "environment")
    assert s["SHM_SIZE"] == "32g" and s.source("SHM_SIZE").startswith(".env")
    assert (s["IMAGE_MODE"], s.source("IMAGE_MODE")) == ("build", "default")


def test_no_env_file_works_on_defaults(tmp_path):
    r = run(tmp_path, "config", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["env_file"] is None
    assert data["settings"]["CONTAINER_NAME"] == {"value": "wan22-inference", "source": "default"}


def test_misspelt_key_is_reported_with_the_closest_key(tmp_path):
    (tmp_path / ".env").write_text("DOCKR_IMAGE=foo:1\nSHM_SIZE=8g\n")
    r = run(tmp_path, "config", "--json")
    assert r.returncode == 0
    assert "unknown key DOCKR_IMAGE" in r.stderr and "did you mean DOCKER_IMAGE?" in r.stderr
    assert json.loads(r.stdout)["settings"]["SHM_SIZE"]["value"] == "8g"


def test_invalid_value_names_the_key_and_exits_2(tmp_path):
    (tmp_path / ".env").write_text("IMAGE_MODE=sometimes\n")
    r = run(tmp_path, "config")
    assert r.returncode == 2
    assert "IMAGE_MODE" in r.stderr and "build, pull" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(tmp_path, "up", "--dry-run", env_extra={"IMAGE_MODE": "pull", "GPUS": "lots"})
    assert r.returncode == 2 and "GPUS" in r.stderr and len(r.stderr.strip().splitlines()) == 1


SECRETS = {"HF_TOKEN": "hf_supersecretvalue123", "REGISTRY_PASSWORD": "pw-xyz-987", "WAN22_API_KEY": "key-abc-654"}


def test_secrets_are_masked_in_config(tmp_path):
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    r = run(tmp_path, "config")
    j = run(tmp_path, "config", "--json")
    assert r.returncode == 0 and j.returncode == 0, r.stderr + j.stderr
    for out in (r.stdout + r.stderr, j.stdout + j.stderr):
        for value in SECRETS.values():
            assert value not in out
    shown = json.loads(j.stdout)["settings"]
    assert {k: shown[k]["value"] for k in SECRETS} == dict.fromkeys(SECRETS, "(set, hidden)")


@pytest.mark.parametrize("key", ["SERVER_PORT", "VIDEOX_PORT"])
def test_ports_are_tcp_port_numbers(tmp_path, key):
    for good in ("1", "8000", "65535"):
        assert load_settings(None, environ={key: good})[key] == good
    for bad in ("0", "65536", "-1", "80a"):
        with pytest.raises(UserError, match=f"invalid {key}='{bad}' \\(from environment\\): must be a TCP port"):
            load_settings(None, environ={key: bad})
    r = run(tmp_path, "config", env_extra={key: "65536"})
    assert r.returncode == 2 and key in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_gpus_forms_normalise(tmp_path):
    for raw, norm in (("all", "all"), ("2", "2"), ("0,2", "device=0,2"), ("device=1", "device=1"), ("none", "none")):
        assert load_settings(None, environ={"GPUS": raw})["GPUS"] == norm
    for bad in ("0", "-1", "lots", "device=", "0,,2"):
        with pytest.raises(UserError, match="invalid GPUS"):
            load_settings(None, environ={"GPUS": bad})


HEAVY = ("docker", "huggingface_hub", "rich")


def test_help_imports_nothing_heavy(tmp_path):
    """`wan22ctl --help` (and the app itself) must not import docker, huggingface_hub or rich: the
    commands import them when they run. How fast it starts is measured by benchmarks/cli_startup.py."""
    env = clean_environ()
    help_run = (
        "import runpy, sys\nsys.argv = ['wan22ctl', '--help']\ncode = 0\n"
        "try:\n    runpy.run_module('wan22ctl', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exc:\n    code = exc.code or 0\n"
        f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules), 'exit:', code, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", help_run], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "Usage" in r.stdout and "generate" in r.stdout, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "heavy: [] exit: 0", r.stderr
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys, wan22ctl.cli.app; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"],
        env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr


def test_environment_overriding_env_file_is_noted(tmp_path):
    (tmp_path / ".env").write_text("CONTAINER_NAME=from-file\nHF_TOKEN=hf_file_token_1\n")
    r = run(tmp_path, "config", "--json", env_extra={"CONTAINER_NAME": "from-platform", "HF_TOKEN": "hf_env_token_2"})
    assert r.returncode == 0
    assert "note: CONTAINER_NAME=from-platform from the environment overrides the value in .env" in r.stderr
    assert "HF_TOKEN=(set, hidden) from the environment" in r.stderr
    assert "hf_env_token_2" not in r.stderr + r.stdout and "hf_file_token_1" not in r.stderr + r.stdout
    assert json.loads(r.stdout)["settings"]["CONTAINER_NAME"]["value"] == "from-platform"
