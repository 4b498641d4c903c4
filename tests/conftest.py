"""Shared test bed: a real Docker Engine, images built from the product Dockerfile, the real CLI.

Tests drive `python -m wan22ctl` as a user would (cwd without a .env, explicit environment)
and assert on exit codes, output and files. Every container and image a test makes carries a
unique name and is removed afterwards, so the suite can run twice in a row.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STANDINS = REPO / "tests" / "standins"
BASE_IMAGE = os.environ.get("WAN22CTL_TEST_BASE_IMAGE", "wan22ctl-test/debian:bookworm")

# Keys of ours that the machine's environment may carry (CONTAINER_NAME is common) and that
# would leak into tests.
from wan22ctl.settings import SPECS  # noqa: E402

OUR_KEYS = {s.key for s in SPECS} | {"WAN22CTL_ENV_FILE"}

pytest_plugins = ["tests.hubserver", "tests.ci_policy"]


def _docker():
    import docker

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except Exception as exc:  # pragma: no cover - environment
        pytest.skip(f"Docker Engine unreachable ({exc}); start dockerd or set DOCKER_HOST")  # fails in CI


@pytest.fixture(scope="session")
def docker_client():
    client = _docker()
    yield client
    _prune_stale_images(client)


# Test images are cached between runs under a tag that hashes their inputs. Each session keeps
# the tags it used and removes older tags of the same repositories, so caches do not pile up.
# Only images this checkout built (labelled with its path's hash) are pruned: two checkouts or
# two runs sharing one daemon never delete each other's cached images.
_CURRENT_IMAGES: set[str] = set()
CHECKOUT_LABEL = "wan22ctl.test.checkout"
CHECKOUT_ID = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]


def keep_image(tag: str) -> str:
    """Register `tag` as this session's current cached image of its repository."""
    _CURRENT_IMAGES.add(tag)
    return tag


def _prune_stale_images(client) -> None:
    repos = {t.rsplit(":", 1)[0] for t in _CURRENT_IMAGES}
    try:
        images = client.images.list(filters={"label": f"{CHECKOUT_LABEL}={CHECKOUT_ID}"})
    except Exception:  # another run removed an image while it was listed: prune next time
        return
    stale = [image for image in images
             if image.tags and all(t.rsplit(":", 1)[0] in repos and t not in _CURRENT_IMAGES for t in image.tags)]
    # Newest first: a stand-in image goes before the kit image it was built FROM.
    for image in sorted(stale, key=lambda i: i.attrs.get("Created", ""), reverse=True):
        try:
            client.images.remove(image.id, force=True)
        except Exception:  # in use by a container of another run: leave it
            pass


def _tree_hash(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _build(client, context: Path, tag: str, buildargs: dict, target: str | None = None, dockerfile: str = "Dockerfile") -> None:
    from wan22ctl.docker.images import build_image
    from wan22ctl.plan.image import BuildPlan

    log: list[str] = []
    plan = BuildPlan(str(context), dockerfile, tag, target, buildargs, labels={CHECKOUT_LABEL: CHECKOUT_ID})
    try:
        build_image(client, plan, log.append)
    except Exception:
        print("\n".join(log[-40:]))
        raise


# What the product Dockerfile copies: a change to any of it means a new kit image.
KIT_INPUTS = [REPO / "Dockerfile", REPO / "docker", REPO / "wan22ctl", REPO / "pyproject.toml", REPO / "download_model.sh"]


def cached_image(client, repo: str, inputs: list[Path], salt: str, context: Path, buildargs: dict,
                 target: str | None = None, dockerfile: str = "Dockerfile") -> str:
    """`repo:<hash of inputs and salt>`, built only when absent, kept as this session's current tag."""
    tag = f"{repo}:{_tree_hash(inputs, salt)}"
    try:
        client.images.get(tag)
    except Exception:
        _build(client, context, tag, buildargs, target=target, dockerfile=dockerfile)
    return keep_image(tag)


@pytest.fixture(scope="session")
def kit_image(docker_client) -> str:
    """The product Dockerfile's kit layers on the Debian test base (GPU_STACK=false)."""
    docker_client.images.get(BASE_IMAGE)  # made by tests/make_base_image.sh (.ci/run)
    return cached_image(docker_client, "wan22ctl-test/kit", KIT_INPUTS, BASE_IMAGE, REPO,
                        {"BASE_IMAGE": BASE_IMAGE, "GPU_STACK": "false"}, target="inference")


# The GPU stack as CI builds it: the product Dockerfile with GPU_STACK=true on the Debian test base
# (the documented base without CUDA: the torch wheels bring the runtime), torch from PyPI (the same
# cu128 build as PyTorch's index), the stand-in Wan2.2 tree as WAN22_SOURCE (upstream's
# requirements.txt and import shape), flash-attn skipped and FlashAttention-4 installed. Docker's
# layer cache keeps the GPU layers between runs: only what changed is rebuilt.
STANDIN_WAN_TREE = STANDINS / "wan2.2"
GPU_BUILD_ARGS = {
    "BASE_IMAGE": BASE_IMAGE, "GPU_STACK": "true", "FLASH_ATTN": "none",
    "TORCH_INDEX_URL": os.environ.get("WAN22CTL_TEST_TORCH_INDEX_URL", "https://pypi.org/simple"),
    "WAN22_SOURCE": str(STANDIN_WAN_TREE.relative_to(REPO)),
}


@pytest.fixture(scope="session")
def gpu_image(docker_client) -> str:
    """The product image with its GPU stack, built for real (cold: ~15 min on 2 cores; warm: seconds)."""
    if os.environ.get("WAN22CTL_GPU_IMAGE") == "0":  # in CI a skip fails (tests/ci_policy.py)
        pytest.skip("WAN22CTL_GPU_IMAGE=0: the GPU image is not built in this run")
    docker_client.images.get(BASE_IMAGE)
    return cached_image(docker_client, "wan22ctl-test/gpu", KIT_INPUTS + [STANDIN_WAN_TREE],
                        repr(sorted(GPU_BUILD_ARGS.items())), REPO, GPU_BUILD_ARGS, target="inference")


@pytest.fixture(scope="session")
def standin_image(docker_client, kit_image) -> str:
    """The kit image plus stand-ins for nvidia-smi and Wan2.2's generate.py."""
    return cached_image(docker_client, "wan22ctl-test/standin", [STANDINS], kit_image, STANDINS,
                        {"KIT_IMAGE": kit_image})


@dataclass
class Cli:
    """Runs the real CLI in a clean working folder with a controlled environment."""

    cwd: Path
    env: dict[str, str]
    created: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 600, input: str | None = None, extra_env: dict | None = None):
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", "wan22ctl", *args], cwd=self.cwd, env=env, capture_output=True,
            text=True, timeout=timeout, input=input,
        )

    def remove_created(self, client) -> None:
        """Remove every container this runner made (or may have made); absent ones are fine."""
        for cname in self.created:
            try:
                client.containers.get(cname).remove(force=True)
            except Exception:
                pass

    def popen(self, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
        env = {**self.env, **(extra_env or {})}
        return subprocess.Popen(
            [sys.executable, "-m", "wan22ctl", *args], cwd=self.cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )


def read_until(stream, text: str, timeout: float = 60) -> list[str]:
    """Lines of a process's text stream up to the first one containing `text`, read in a thread:
    a process that never says it fails the test after `timeout` s instead of hanging it (the
    caller stops the process in its `finally`). The rest of the stream is left unread."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found.is_set(), f"no line with {text!r} within {timeout} s:\n" + "".join(lines)
    return lines


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OUR_KEYS}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    return env


def cli_without_docker(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in `cwd` with no Docker Engine to reach (DOCKER_HOST points nowhere) and host
    folders under it: what must be decided or refused before Docker is asked."""
    env = clean_environ()
    env.update(DOCKER_HOST="unix:///nonexistent/docker.sock", CHECKPOINT_DIR=str(cwd / "ckpt"),
               OUTPUT_DIR=str(cwd / "out"))
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def _settings_env(tmp_path: Path, name: str) -> dict[str, str]:
    """Settings that start here: a fresh container name, host folders under tmp_path."""
    env = clean_environ()
    env.update(
        CONTAINER_NAME=name,
        VIDEOX_CONTAINER_NAME=name + "-vx",
        IMAGE_MODE="pull",
        BASE_IMAGE=BASE_IMAGE,
        GPU_STACK="false",
        GPUS="none",
        PRIVILEGED="false",
        MEMLOCK="off",
        RESTART_POLICY="no",
        OUTPUT_DIR=str(tmp_path / "outputs"),
        CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        HF_HOME=str(tmp_path / "hf-home"),
        VIDEOX_MODELS_DIR=str(tmp_path / "videox-models"),
    )
    return env


@pytest.fixture
def host_cli(tmp_path):
    """The CLI for host-only commands (`download --local`, `models`, `verify --local`): no Docker Engine."""
    work = tmp_path / "work"
    work.mkdir()
    name = unique("wan22t")
    return Cli(work, _settings_env(tmp_path, name), [name, name + "-vx"])


@pytest.fixture
def cli(host_cli, docker_client, kit_image):
    """The CLI against a fresh container name and host folders under tmp_path, settings that start here.

    GPUS=none, PRIVILEGED=false, MEMLOCK=off: this sandbox cannot start containers with those
    (their refusal paths have their own tests); `create` + `inspect` tests cover the real values.
    """
    host_cli.env["DOCKER_IMAGE"] = kit_image
    yield host_cli
    host_cli.remove_created(docker_client)


# --------------------------------------------------------------------------- PostgreSQL (shared queue)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """A URL of the test PostgreSQL whose role may create databases.

    `.ci/run` starts the cluster (tests/start_postgres.sh) and exports WAN22CTL_TEST_PG_URL; a
    developer's pytest starts (or finds) the same cluster through the same script when run as root.
    """
    url = os.environ.get("WAN22CTL_TEST_PG_URL")
    if url:
        return url
    if os.geteuid() != 0:  # in CI a skip fails (tests/ci_policy.py)
        pytest.skip("PostgreSQL tests need WAN22CTL_TEST_PG_URL or root to start tests/start_postgres.sh "
                    "(`bash .ci/run` does both)")
    out = subprocess.run(["bash", str(REPO / "tests" / "start_postgres.sh")], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        pytest.fail(f"tests/start_postgres.sh failed:\n{out.stderr}")
    os.environ["WAN22CTL_TEST_PG_URL"] = out.stdout.strip()
    return os.environ["WAN22CTL_TEST_PG_URL"]


@pytest.fixture
def pg_url(pg_admin_url) -> str:
    """A fresh, empty database for one test (dropped afterwards)."""
    import psycopg

    name = "wan22test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_admin_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
