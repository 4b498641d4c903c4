"""The image plan: whether `up` builds, pulls or uses what is there, and the build arguments.

In build mode an image is stale when its build-hash label differs from the hash of what the
build would use (Dockerfile, docker/, the package sources, the build arguments, and the local
source trees WAN22_SOURCE / VIDEOX_SOURCE name).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from wan22ctl.docker.images import BuildPlan, buildx_available
from wan22ctl.errors import UserError
from wan22ctl.plan.videox import videox_image
from wan22ctl.settings import Settings

LABEL_BUILD_HASH = "io.wan22ctl.build-hash"
TARGET = {"main": "inference", "videox-fun": "videox-fun"}


@dataclass(frozen=True)
class ImagePlan:
    ref: str
    mode: str  # build | pull
    action: str  # build | pull | none (decided against the local image by `resolve`)
    reason: str
    build: BuildPlan | None

    def to_dict(self) -> dict:
        return asdict(self)


def build_args(settings: Settings, stack: str) -> dict[str, str]:
    """Build arguments from settings. Secrets are never among them."""
    args = {
        "BASE_IMAGE": settings["BASE_IMAGE"],
        "GPU_STACK": settings["GPU_STACK"],
        "TORCH_CUDA_ARCH_LIST": settings["TORCH_CUDA_ARCH_LIST"],
        "TORCH_INDEX_URL": settings["TORCH_INDEX_URL"],
        "WAN22_REPO": settings["WAN22_REPO"],
        "WAN22_REF": settings["WAN22_REF"],
        "WAN22_SOURCE": settings["WAN22_SOURCE"],
    }
    if stack == "videox-fun":
        args.update(VIDEOX_REPO=settings["VIDEOX_REPO"], VIDEOX_REF=settings["VIDEOX_REF"],
                    VIDEOX_SOURCE=settings["VIDEOX_SOURCE"])
    return args


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
    """Hash of every file the Dockerfile copies plus the build arguments and target."""
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


def image_ref(settings: Settings, stack: str) -> str:
    """The image the stack's container runs."""
    return settings["DOCKER_IMAGE"] if stack == "main" else videox_image(settings)


def plan_image(settings: Settings, stack: str, context: Path, force_build: bool = False,
               force_pull: bool = False, local_labels: dict | None = None, present: bool | None = None) -> ImagePlan:
    """Decide build / pull / nothing. `present`/`local_labels` describe the local image as the caller
    found it (`docker.images.local_image`); present None: not checked (no Docker daemon to ask)."""
    ref = image_ref(settings, stack)
    mode = settings["IMAGE_MODE" if stack == "main" else "VIDEOX_IMAGE_MODE"]
    target = TARGET[stack]
    args = build_args(settings, stack)
    build = None
    if (mode == "build" or force_build) and not force_pull:
        digest = context_hash(context, args, target)
        builder = "buildx" if buildx_available() else "classic"
        build = BuildPlan(str(context), "Dockerfile", ref, target, args, builder, {LABEL_BUILD_HASH: digest})
    if force_build:
        return ImagePlan(ref, mode, "build", "--build given", build)
    if force_pull:
        return ImagePlan(ref, mode, "pull", "--pull given", None)
    if present is None:
        return ImagePlan(ref, mode, "build" if build else "pull",
                         "the local image was not checked (no Docker daemon reachable); if present and current: none",
                         build)
    if not present:
        return ImagePlan(ref, mode, "build" if build else "pull", "image not present", build)
    if build and (local_labels or {}).get(LABEL_BUILD_HASH) != build.labels[LABEL_BUILD_HASH]:
        return ImagePlan(ref, mode, "build", "sources changed since the image was built", build)
    return ImagePlan(ref, mode, "none", "image present and current", build)
