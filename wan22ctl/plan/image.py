"""The image plan: whether `up` builds, pulls or uses what is there, and the build's arguments.

In build mode an image is stale when its build-hash label differs from the hash of what the
build would use (Dockerfile, docker/, the package sources, the build arguments, and the local
source trees WAN22_SOURCE / VIDEOX_SOURCE name). The facts this
plan is made from (is the image present and with which labels, is buildx there, the hash of the
build context) are gathered by `wan22ctl.docker.images.plan_for` and passed in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from wan22ctl.catalog import Stack
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
