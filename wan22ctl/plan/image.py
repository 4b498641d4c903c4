"""The image plan: whether `up` builds, pulls or uses what is there, and the build's arguments.

In build mode an image is stale when its build-hash label differs from the hash of what the
build would use (Dockerfile, docker/, the package sources, the build arguments, and the local
source trees WAN22_SOURCE / VIDEOX_SOURCE name). The facts this
plan is made from (is the image present and with which labels, is buildx there, the hash of the
build context) are gathered by `wan22ctl.docker.images.plan_for` and passed in.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from wan22ctl.catalog import Stack
from wan22ctl.errors import UserError
from wan22ctl.settings import Settings

LABEL_BUILD_HASH = "io.wan22ctl.build-hash"


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


@dataclass(frozen=True)
class ImagePlan:
    ref: str
    mode: str  # build | pull
    action: str  # build | pull | none (decided against the local image)
    reason: str
    build: BuildPlan | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BuildFacts:
    """What a build plan needs from the machine: the builder on PATH and the build context's hash."""

    builder: str  # "buildx" or "classic"
    context_hash: str


def build_args(settings: Settings, stack: Stack) -> dict[str, str]:
    """Build arguments from settings. Secrets are never among them."""
    return {key: settings[key] for key in stack.build_arg_keys}


def image_ref(settings: Settings, stack: Stack) -> str:
    """The image the stack's container runs. A stack whose default image is someone else's (PAI's,
    for VideoX-Fun) is tagged as our own when built from our Dockerfile, so the build never poses
    as, or is mistaken for, the pulled image."""
    if (stack.local_build_image and settings[stack.image_mode_key] == "build"
            and settings.source(stack.image_key) == "default"):
        return stack.local_build_image
    return settings[stack.image_key]


# Docker's reference grammar (distribution/reference): a registry host (with a port) may lead,
# repository path components are lower case, a tag is up to 128 word characters, dots and dashes.
_HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}")
REFERENCE_FIX = "give REGISTRY[:PORT]/REPOSITORY[:TAG] with the repository in lower case, e.g. localhost:5000/wan22/inference:0.1.0"


def parse_reference(ref: str) -> tuple[str, str]:
    """(repository, tag) of an image reference as Docker reads it, the tag "latest" when none is
    given (`localhost:5000/img` is the repository `localhost:5000/img`); UserError saying what is
    wrong, before anything is tagged, pulled or pushed."""
    def refuse(why: str) -> UserError:
        return UserError(f"{ref!r} is not an image reference: {why}", fix=REFERENCE_FIX)

    if "@" in ref:
        raise refuse("a digest names content, not a place to push or pull a tag; give a tag")
    repo, tag = (ref.rsplit(":", 1) if ":" in ref.rsplit("/", 1)[-1] else (ref, "latest"))
    if not _TAG.fullmatch(tag):
        raise refuse(f"the tag {tag!r} must be up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")
    parts = repo.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        if not _HOST.fullmatch(parts[0]):
            raise refuse(f"the registry {parts[0]!r} is not a host name with an optional port")
        parts = parts[1:]
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            why = "is not in lower case" if _COMPONENT.fullmatch(part.lower()) else \
                "must be lower-case letters and digits, separated by '.', '_', '__' or '-'"
            raise refuse(f"the repository part {part!r} {why}")
    if len(repo) > 255:
        raise refuse("the repository is longer than 255 characters")
    return repo, tag


def registry_ref(settings: Settings, stack: Stack) -> str:
    """The reference `pull` fetches: the image setting as given."""
    return settings[stack.image_key]


def builds(settings: Settings, stack: Stack, force_build: bool = False, force_pull: bool = False) -> bool:
    """Whether the plan has a build (build mode or --build, and no --pull)."""
    return (settings[stack.image_mode_key] == "build" or force_build) and not force_pull


def plan_image(settings: Settings, stack: Stack, context: str, facts: BuildFacts | None = None, *,
               force_build: bool = False, force_pull: bool = False, local_labels: dict | None = None,
               present: bool | None = None) -> ImagePlan:
    """Decide build / pull / nothing. `facts` are needed when the plan `builds()`. `present` and
    `local_labels` describe the local image; present None: not checked (no Docker daemon to ask)."""
    ref = image_ref(settings, stack)
    mode = settings[stack.image_mode_key]
    build = None
    if builds(settings, stack, force_build, force_pull):
        if facts is None:
            raise ValueError("a build plan needs the BuildFacts")
        build = BuildPlan(context, "Dockerfile", ref, stack.build_target, build_args(settings, stack), facts.builder,
                          {LABEL_BUILD_HASH: facts.context_hash})
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
