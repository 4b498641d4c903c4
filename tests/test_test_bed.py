"""The test bed's own promises: CI never passes by skipping, and pruning spares other checkouts."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import pytest

from tests import conftest
from tests.conftest import REPO


def _pytest(tmp_path, ci: str | None, *files: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(REPO)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.ci_policy", "-p", "no:cacheprovider",
                           "-rfs", *files], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_ci_turns_every_skip_except_gpu_ones_into_a_failure(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    (tmp_path / "test_a.py").write_text(
        "import pytest\n\n"
        "def test_passes():\n    pass\n\n"
        "def test_needs_olah():\n    pytest.skip('olah not installed at /x (bash .ci/run installs it)')\n\n"
        "@pytest.mark.skipif(True, reason='docker-compose not installed')\n"
        "def test_needs_compose():\n    pass\n\n"
        "@pytest.mark.gpu\n"
        "def test_needs_a_gpu():\n    pytest.skip('needs a CUDA GPU')\n")
    (tmp_path / "test_b.py").write_text("import pytest\n\npytest.importorskip('no_such_module_wan22ctl')\n")

    local = _pytest(tmp_path, None, "test_a.py", "test_b.py")
    assert local.returncode == 0 and "1 passed, 4 skipped" in local.stdout, local.stdout
    for ci in ("true", "1"):
        r = _pytest(tmp_path, ci, "test_a.py")
        assert r.returncode == 1, r.stdout
        assert "skipped in CI: olah not installed at /x (bash .ci/run installs it)" in r.stdout
        assert "skipped in CI: docker-compose not installed" in r.stdout
        # a skip in setup (skipif) reads as an error, one in the call as a failure; the gpu test may skip
        assert "1 failed, 1 passed, 1 skipped, 1 error" in r.stdout and "needs a CUDA GPU" in r.stdout
        r = _pytest(tmp_path, ci, "test_b.py")  # a module-level skip stops the run at collection
        assert r.returncode == 2 and "skipped in CI: could not import 'no_such_module_wan22ctl'" in r.stdout, r.stdout
    assert _pytest(tmp_path, "false", "test_a.py", "test_b.py").returncode == 0


@pytest.mark.docker
def test_pruning_removes_only_this_checkouts_stale_images(docker_client):
    """Two checkouts (or runs) sharing a daemon must not delete each other's cached test images."""
    repo = f"wan22ctl-test/prune-probe-{uuid.uuid4().hex[:8]}"

    def image(tag: str, checkout: str | None) -> str:
        label = f"\nLABEL {conftest.CHECKOUT_LABEL}={checkout}" if checkout else ""
        dockerfile = f"FROM {conftest.BASE_IMAGE}{label}\nLABEL probe={tag}\n".encode()
        docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:{tag}", rm=True)
        return f"{repo}:{tag}"

    tags = {"stale": image("stale", conftest.CHECKOUT_ID), "current": image("current", conftest.CHECKOUT_ID),
            "other": image("other", "0123456789ab"), "unlabelled": image("unlabelled", None)}
    try:
        conftest.keep_image(tags["current"])
        conftest._prune_stale_images(docker_client)
        left = {t for t in tags.values() if docker_client.images.list(name=t)}
        assert left == {tags["current"], tags["other"], tags["unlabelled"]}
    finally:
        conftest._CURRENT_IMAGES.discard(tags["current"])
        for tag in tags.values():
            try:
                docker_client.images.remove(tag, force=True)
            except Exception:
                pass
