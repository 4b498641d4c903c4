"""Build inputs from reachable sources: WAN22_SOURCE / VIDEOX_SOURCE and TORCH_INDEX_URL reach the
build as arguments, a local source is part of the image's build hash, bad ones stop before the build."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, clean_environ
from wan22ctl.catalog import MAIN
from wan22ctl.docker.images import context_hash
from wan22ctl.plan.image import build_args
from wan22ctl.settings import load_settings


def build_plan(**env):
    r = subprocess.run([sys.executable, "-m", "wan22ctl", "build", "--dry-run", "--json"], cwd=REPO,
                       env={**clean_environ(), **env}, capture_output=True, text=True, timeout=60)
    return r


def test_sources_and_index_reach_the_build_arguments(tmp_path):
    r = build_plan(WAN22_SOURCE="tests/standins/wan2.2", TORCH_INDEX_URL="https://pypi.org/simple")
    assert r.returncode == 0, r.stderr
    args = json.loads(r.stdout)["build"]["buildargs"]
    assert args["WAN22_SOURCE"] == "tests/standins/wan2.2" and args["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    default = json.loads(build_plan().stdout)["build"]["buildargs"]
    assert default["WAN22_SOURCE"] == "" and default["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu128"


def test_a_missing_or_outside_source_is_one_line_and_exit_2():
    r = build_plan(WAN22_SOURCE=".upstream/no-such-wan.tar.gz")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "WAN22_SOURCE=.upstream/no-such-wan.tar.gz does not exist" in r.stderr
    r = build_plan(WAN22_SOURCE="/srv/wan2.2")
    assert r.returncode == 2 and "must be a path inside the kit folder" in r.stderr
    r = build_plan(VIDEOX_SOURCE="../VideoX-Fun")
    assert r.returncode == 2 and "VIDEOX_SOURCE" in r.stderr


def test_a_changed_local_source_makes_the_image_stale(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "generate.py").write_text("v1")
    settings = load_settings(None, environ={"WAN22_SOURCE": "src"})

    def digest():  # what the image's build-hash label is compared with
        return context_hash(tmp_path, build_args(settings, MAIN), MAIN.build_target)

    first = digest()
    assert digest() == first
    (tmp_path / "src" / "generate.py").write_text("v2")
    assert digest() != first
