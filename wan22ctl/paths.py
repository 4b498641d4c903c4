"""Where things are in the container, and the one mapping between host and container paths.

The container's folders are fixed: the image, the compose files and every plan use these
names. The host's are settings (OUTPUT_DIR, CHECKPOINT_DIR, HF_HOME, VIDEOX_MODELS_DIR) bind-
mounted there. `main_mounts()` is that pairing for the main container; the container spec
mounts exactly it, and the CLI turns a path the agent or the server reports back into the path
the user sees with the same `PathMap`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CONTAINER_OUTPUT_DIR = "/opt/outputs"
CONTAINER_CHECKPOINT_DIR = "/opt/checkpoints"
CONTAINER_HF_HOME = "/opt/hf-home"
CONTAINER_WAN22_DIR = "/workspace/wan2.2"
CONTAINER_VIDEOX_DIR = "/workspace/VideoX-Fun"
CONTAINER_VIDEOX_MODELS_DIR = "/workspace/VideoX-Fun/models"
# The kit's own source in the image (and where the VideoX-Fun container mounts the host's):
# PYTHONPATH points here, so any python (Wan's, VideoX-Fun's) imports `wan22ctl`.
CONTAINER_KIT_DIR = "/opt/wan22ctl-src"


def under(path: str, folder: str) -> str | None:
    """`path` relative to `folder` ("" for the folder itself), or None when it lies elsewhere."""
    if path == folder:
        return ""
    if path.startswith(folder.rstrip("/") + "/"):
        return path[len(folder.rstrip("/")) + 1:]
    return None


@dataclass(frozen=True)
class PathMap:
    """Folders mounted from one side into the other: (container folder, host folder) pairs."""

    mounts: tuple[tuple[str, str], ...]

    def to_host(self, path: str | None) -> str | None:
        """A container path as the host sees it (unchanged when no mount covers it)."""
        if not path:
            return path
        for container, host in self.mounts:
            rest = under(path, container)
            if rest is not None:
                return os.path.join(host, rest) if rest else host
        return path

    def as_dict(self) -> dict[str, str]:
        """{container folder: host folder}."""
        return dict(self.mounts)


def main_mounts(settings) -> PathMap:
    """What the main container mounts: outputs, checkpoints and the Hugging Face cache."""
    return PathMap((
        (CONTAINER_OUTPUT_DIR, settings.output_dir),
        (CONTAINER_CHECKPOINT_DIR, settings.checkpoint_dir),
        (CONTAINER_HF_HOME, settings.hf_home),
    ))
