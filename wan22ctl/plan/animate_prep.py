"""Wan-Animate's preprocessing, planned: a driving video and a character image in, the folder
`generate --task animate-14B --src-root` reads out.

Pure. `build_prep_request` checks what the user typed before anything slow (the video decodes,
the image is one, modes that go together, a size Wan-Animate supports); `plan_prep` renders the
exact command the container runs: upstream's own `wan/modules/animate/preprocess/preprocess_data.py`
with the Animate checkpoint's `process_checkpoint/` (pose and face detectors; SAM2 for
replacement; FLUX.1-Kontext-dev for `--flux`), README's settings for each mode. The agent
(`agent/animate_prep.py`) runs it into a temporary folder and publishes it complete or not at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

from wan22ctl import catalog
from wan22ctl.errors import UserError
from wan22ctl.plan.inventory import Runtime

PREPROCESS_SCRIPT = "wan/modules/animate/preprocess/preprocess_data.py"
PREP_FOLDER = "animate-prep"  # under OUTPUT_DIR
FLUX_FOLDER = "process_checkpoint/FLUX.1-Kontext-dev"  # a separate, gated download (black-forest-labs)
# README: replacement mode's mask settings (--iterations 3 --k 7 --w_len 1 --h_len 1).
REPLACE_MASK_ARGS = ("--iterations", "3", "--k", "7", "--w_len", "1", "--h_len", "1")


@dataclass(frozen=True)
class PrepRequest:
    video: str  # host paths
    image: str
    name: str  # the output folder's name under OUTPUT_DIR/animate-prep
    size: str  # 1280*720 or 720*1280: the area the video is resized to (aspect kept)
    fps: int
    replace: bool
    retarget: bool
    flux: bool


def build_prep_request(video: str, image: str, *, name: str | None = None, size: str | None = None, fps: int = 30,
                       replace: bool = False, retarget: bool = False, flux: bool = False,
                       probe: bool = True) -> PrepRequest:
    """A checked preprocessing request; UserError (exit 2) for the first problem."""
    from wan22ctl import media
    from wan22ctl.plan.launch import _probe, normalize_size

    task = catalog.TASKS["animate-14B"]
    size = normalize_size(size) if size else task.default_size
    if size not in task.sizes:
        raise UserError(f"--size {size} is not one animate-14B supports; choose one of {', '.join(task.sizes)}")
    if fps != -1 and not 1 <= fps <= 120:
        raise UserError(f"--fps {fps} must be 1-120, or -1 for the video's own rate")
    if retarget and replace:
        raise UserError("--retarget is for animation mode; Wan-Animate's replacement mode keeps the video's poses")
    if flux and not retarget:
        raise UserError("--flux edits the images for pose retargeting: give --retarget too")
    if probe:
        _probe(media.video_info, "video", video)
        _probe(media.image_kind, "image", image)
    base = name or os.path.splitext(os.path.basename(video))[0]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "video"
    return PrepRequest(video=video, image=image, name=safe, size=size, fps=fps, replace=replace, retarget=retarget,
                       flux=flux)


@dataclass(frozen=True)
class PrepPlan:
    """What the container runs, and where the result goes (container paths)."""

    request: dict
    run_id: str
    argv: tuple[str, ...]
    cwd: str
    video: str  # staged inputs
    image: str
    output_dir: str  # the container's OUTPUT_DIR
    work_dir: str  # the script writes here; published to out_dir when complete
    out_dir: str
    expected: tuple[str, ...]  # files the folder must hold to be published

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PrepPlan":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["argv"], fields["expected"] = tuple(fields["argv"]), tuple(fields["expected"])
        return cls(**fields)


def plan_prep(request: PrepRequest, run_id: str, runtime: Runtime = Runtime()) -> PrepPlan:
    """Upstream's preprocessing command for `request`, rendered for the container's runtime."""
    ckpt = f"{runtime.checkpoint_dir}/{catalog.MODEL_BY_KEY['animate'].subdir}/process_checkpoint"
    staging = f"{runtime.output_dir}/.staging/{run_id}"
    video = f"{staging}/video/{_safe_name(request.video)}"
    image = f"{staging}/image/{_safe_name(request.image)}"
    work = f"{runtime.output_dir}/{PREP_FOLDER}/.partial-{run_id}"
    w, h = request.size.split("*")
    argv = [runtime.python, f"{runtime.wan22_dir}/{PREPROCESS_SCRIPT}", "--ckpt_path", ckpt, "--video_path", video,
            "--refer_path", image, "--save_path", work, "--resolution_area", w, h, "--fps", str(request.fps)]
    if request.replace:
        argv += ["--replace_flag", *REPLACE_MASK_ARGS]
    if request.retarget:
        argv.append("--retarget_flag")
    if request.flux:
        argv.append("--use_flux")
    expected = catalog.ANIMATE_SOURCE_FILES + (catalog.ANIMATE_REPLACE_FILES if request.replace else ())
    return PrepPlan(request=asdict(request), run_id=run_id, argv=tuple(argv), cwd=runtime.wan22_dir, video=video,
                    image=image, output_dir=runtime.output_dir, work_dir=work, out_dir=f"{runtime.output_dir}/{PREP_FOLDER}/{request.name}",
                    expected=expected)


def missing_checkpoints(request: PrepRequest, animate_dir: str) -> list[str]:
    """Preprocessing checkpoints absent under the host's Animate folder (FLUX only with --flux)."""
    needed = [p for p in catalog.ANIMATE_PROCESS_CHECKPOINTS if "sam2" not in p or request.replace]
    if request.flux:
        needed.append(FLUX_FOLDER + "/")
    return [p for p in needed if not os.path.exists(os.path.join(animate_dir, p.rstrip("/")))]


def _safe_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path)) or "input"
