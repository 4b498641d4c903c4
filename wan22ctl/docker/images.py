"""Images: build (buildx when present, else docker-py's classic builder), pull, push, login.

docker-py reports build and push failures inside the stream instead of raising; every stream
here goes through `_check_item`, which turns an `error` item into a `RunFailed`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Mapping

from wan22ctl.docker.client import explanation
from wan22ctl.errors import EnvError, RunFailed, UserError

LineFn = Callable[[str], None]
ProgressFn = Callable[[dict], None]


@dataclass(frozen=True)
class BuildPlan:
    """What `wan22ctl build` runs: plain data, printable with --dry-run."""

    context: str
    dockerfile: str
    tag: str
    target: str | None
    buildargs: dict[str, str] = field(default_factory=dict)
    builder: str = "classic"  # "buildx" or "classic"
    labels: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The equivalent docker CLI command line."""
        cmd = ["docker", "buildx", "build", "--load"] if self.builder == "buildx" else ["docker", "build"]
        cmd += ["-f", self.dockerfile, "-t", self.tag]
        if self.target:
            cmd += ["--target", self.target]
        for k, v in sorted(self.buildargs.items()):
            cmd += ["--build-arg", f"{k}={v}"]
        for k, v in sorted(self.labels.items()):
            cmd += ["--label", f"{k}={v}"]
        return cmd + [self.context]


def buildx_available() -> bool:
    """True when the docker CLI with the buildx plugin is on PATH."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "buildx", "version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _check_item(item: Mapping) -> None:
    if "error" in item or "errorDetail" in item:
        detail = item.get("errorDetail") or {}
        raise RunFailed(str(detail.get("message") or item.get("error")).strip())


def build_image(client, plan: BuildPlan, on_line: LineFn) -> str:
    """Run the build, feeding each output line to `on_line`; return the image id or raise RunFailed."""
    if plan.builder == "buildx":
        proc = subprocess.Popen(plan.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
            tail = (tail + [line.rstrip()])[-5:]
        if proc.wait() != 0:
            raise RunFailed(f"docker buildx build failed (exit {proc.returncode}): {' / '.join(tail)}")
        return client.images.get(plan.tag).id
    image_id = ""
    last_step = ""
    stream = client.api.build(
        path=plan.context, dockerfile=plan.dockerfile, tag=plan.tag, target=plan.target,
        buildargs=plan.buildargs, labels=plan.labels, rm=True, forcerm=True, decode=True,
    )
    for item in stream:
        try:
            _check_item(item)
        except RunFailed as exc:
            raise RunFailed(f"build of {plan.tag} failed at `{last_step}`: {exc.message}") from None
        text = item.get("stream")
        if text:
            for line in text.rstrip("\n").split("\n"):
                on_line(line)
                if line.startswith("Step "):
                    last_step = line
        aux = item.get("aux") or {}
        if "ID" in aux:
            image_id = aux["ID"]
    if not image_id:
        raise RunFailed("the build ended without producing an image")
    return image_id


def local_image(client, ref: str) -> tuple[bool, dict]:
    """(present, labels) of `ref` in the daemon's image store."""
    import docker

    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False, {}
    return True, (image.labels or {})


def split_ref(ref: str) -> tuple[str, str]:
    """'repo[:tag]' to (repo, tag); a port in the registry host is not a tag."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def auth_config(username: str, password: str) -> dict | None:
    if not username:
        return None
    return {"username": username, "password": password}


def pull_image(client, ref: str, auth: dict | None, on_progress: ProgressFn) -> None:
    """Pull with per-layer progress items; raise UserError/EnvError with the registry's words."""
    import docker

    repo, tag = split_ref(ref)
    try:
        for item in client.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            _check_item(item)
            on_progress(item)
    except docker.errors.NotFound as exc:
        raise UserError(f"image {ref} not found in its registry ({explanation(exc)})",
                        fix="check DOCKER_IMAGE, or set IMAGE_MODE=build to build it from ./Dockerfile") from None
    except docker.errors.APIError as exc:
        text = explanation(exc)
        if "unauthorized" in text.lower() or "authentication required" in text.lower():
            raise UserError(f"registry refused the credentials for {ref}: {text}",
                            fix="set REGISTRY_USERNAME and REGISTRY_PASSWORD in .env") from None
        if "manifest unknown" in text.lower() or "not found" in text.lower():
            raise UserError(f"image {ref} not found in its registry ({text})",
                            fix="check DOCKER_IMAGE, or set IMAGE_MODE=build") from None
        raise EnvError(f"cannot pull {ref}: {text}",
                       fix="check the registry address and your network, or set IMAGE_MODE=build") from None


def push_image(client, ref: str, auth: dict | None, on_progress: ProgressFn) -> None:
    """Push; errors arrive inside docker-py's stream and are raised here, never swallowed."""
    import docker

    repo, tag = split_ref(ref)
    try:
        for item in client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth):
            _check_item(item)
            on_progress(item)
    except (docker.errors.APIError, RunFailed) as exc:
        text = exc.message if isinstance(exc, RunFailed) else explanation(exc)
        fix = None
        if "unauthorized" in text.lower() or "authentication required" in text.lower() or "denied" in text.lower():
            fix = "set REGISTRY_USERNAME and REGISTRY_PASSWORD (or use --ecr-region for Amazon ECR)"
        raise RunFailed(f"push of {ref} failed: {text}", fix=fix) from None


def ecr_credentials(region: str | None = None) -> tuple[str, str, str]:
    """(registry, user, password) from AWS ECR `get_authorization_token` (needs the `ecr` extra)."""
    import base64

    try:
        import boto3
    except ImportError:
        raise EnvError("pushing to Amazon ECR needs boto3", fix="pip install 'wan22ctl[ecr]'") from None
    data = boto3.client("ecr", region_name=region).get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    return data["proxyEndpoint"].removeprefix("https://"), user, password
