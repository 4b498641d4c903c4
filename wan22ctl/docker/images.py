"""Images: the facts an image plan needs, build (buildx when present, else docker-py's classic
builder), pull, push, login.

docker-py reports build and push failures inside the stream instead of raising; every stream
here goes through `_check_item`, which turns an `error` item into a `RunFailed`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Mapping

from wan22ctl.catalog import Stack
from wan22ctl.docker.client import explanation
from wan22ctl.errors import EnvError, RunFailed, UserError
from wan22ctl.plan.image import (BuildFacts, BuildPlan, ImagePlan, build_args, builds, image_ref, parse_reference,
                                 plan_image)
from wan22ctl.settings import Settings

LineFn = Callable[[str], None]
ProgressFn = Callable[[dict], None]


def build_context() -> Path:
    """The folder holding the Dockerfile: the current one if it has it, else the kit's checkout."""
    here = Path.cwd()
    if (here / "Dockerfile").is_file() and (here / "wan22ctl").is_dir():
        return here
    return Path(__file__).resolve().parents[2]


LOCAL_SOURCES = ("WAN22_SOURCE", "VIDEOX_SOURCE")


def local_sources(context: Path, buildargs: dict[str, str]) -> list[Path]:
    """The local source trees/tarballs the build ADDs (WAN22_SOURCE, VIDEOX_SOURCE); UserError when
    one is missing, before anything is sent to the builder."""
    found = []
    for key in LOCAL_SOURCES:
        rel = buildargs.get(key)
        if not rel:
            continue
        path = context / rel
        if not path.exists():
            raise UserError(f"{key}={rel} does not exist in {context}: put the source tree or tarball inside "
                            f"the kit folder (the build context), or leave {key} empty to clone it")
        found.append(path)
    return found


def context_hash(context: Path, buildargs: dict[str, str], target: str) -> str:
    """Hash of every file the Dockerfile copies (the local source trees included) plus the build
    arguments and target."""
    h = hashlib.sha256()
    files = [context / "Dockerfile", context / "pyproject.toml", context / "README.md", context / "download_model.sh"]
    for folder in ("docker", "wan22ctl"):
        files += sorted(p for p in (context / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for source in local_sources(context, buildargs):
        files += [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(context)).encode())
            h.update(f.read_bytes())
    h.update(repr(sorted(buildargs.items())).encode())
    h.update(target.encode())
    return h.hexdigest()[:16]


def plan_for(client, settings: Settings, stack: Stack, *, force_build: bool = False,
             force_pull: bool = False) -> ImagePlan:
    """The image plan with the facts gathered here: the local image (client None: not checked),
    the builder on PATH and the build context's hash (only when the plan builds)."""
    present, labels = None, None
    if client is not None and not (force_build or force_pull):
        present, labels = local_image(client, image_ref(settings, stack))
    context = build_context()
    facts = None
    if builds(settings, stack, force_build, force_pull):
        facts = BuildFacts("buildx" if buildx_available() else "classic",
                           context_hash(context, build_args(settings, stack), stack.build_target))
    return plan_image(settings, stack, str(context), facts, force_build=force_build, force_pull=force_pull,
                      present=present, local_labels=labels)


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


def auth_config(username: str, password: str) -> dict | None:
    if not username:
        return None
    return {"username": username, "password": password}


def _follow(stream, on_progress: ProgressFn) -> None:
    for item in stream:
        _check_item(item)
        on_progress(item)


def pull_image(client, ref: str, auth: dict | None, on_progress: ProgressFn) -> None:
    """Pull with per-layer progress items; raise UserError/EnvError with the registry's words."""
    import docker

    repo, tag = parse_reference(ref)
    try:
        _follow(client.api.pull(repo, tag=tag, stream=True, decode=True, auth_config=auth), on_progress)
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


def tag_and_push(client, source: str, repo: str, tag: str, auth: dict | None, on_progress: ProgressFn) -> str:
    """Tag the local image `source` as REPO:TAG (a reference `parse_reference` accepted) and push it;
    the reference pushed. Registry errors arrive inside docker-py's stream and are raised here,
    never swallowed; a tag this call made is removed again when the push fails."""
    import docker

    target = f"{repo}:{tag}"
    try:
        image = client.images.get(source)
    except docker.errors.ImageNotFound:
        raise UserError(f"image {source} is not present locally", fix="run `wan22ctl build` first") from None
    existed, _ = local_image(client, target)
    image.tag(repo, tag)
    try:
        _follow(client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth), on_progress)
    except (docker.errors.APIError, RunFailed) as exc:
        if not existed:
            try:
                client.images.remove(target)  # the source keeps its own tag: this only untags
            except docker.errors.APIError:
                pass
        text = exc.message if isinstance(exc, RunFailed) else explanation(exc)
        refused = any(word in text.lower() for word in ("unauthorized", "authentication required", "denied"))
        fix = "set REGISTRY_USERNAME and REGISTRY_PASSWORD (or use --ecr-region for Amazon ECR)" if refused else None
        raise RunFailed(f"push of {target} failed: {text}", fix=fix) from None
    return target


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
