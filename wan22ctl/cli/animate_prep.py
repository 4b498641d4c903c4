"""`wan22ctl animate-prep`: turn a driving video and a character image into animate-14B's input folder.

Examples:
    wan22ctl animate-prep --video dance.mp4 --image me.png                 # animation mode
    wan22ctl animate-prep --video dance.mp4 --image me.png --retarget      # retarget the poses to the image
    wan22ctl animate-prep --video scene.mp4 --image me.png --replace       # replacement mode (SAM2 masks)
    wan22ctl generate --task animate-14B --src-root OUTPUT_DIR/animate-prep/dance

Runs Wan2.2's own preprocessing (wan/modules/animate/preprocess/preprocess_data.py) in the
container with the Animate checkpoint's process_checkpoint/ models. The folder appears under
OUTPUT_DIR/animate-prep/ only when complete, and never replaces an existing one.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Optional

import typer

from wan22ctl.cli.options import DryRunOpt, JsonOpt
from wan22ctl.cli.output import Output
from wan22ctl.errors import RunFailed, UserError
from wan22ctl.settings import load_cli_settings


def animate_prep(
    video: Annotated[Path, typer.Option("--video", help="The driving video (its motion and expressions).")],
    image: Annotated[Path, typer.Option("--image", help="The character to animate (PNG or JPEG).")],
    name: Annotated[Optional[str], typer.Option("--name", help="The folder's name under OUTPUT_DIR/animate-prep (default: the video's).")] = None,
    size: Annotated[Optional[str], typer.Option("--size", help="The area the video is resized to: 1280*720 (default) or 720*1280.")] = None,
    fps: Annotated[int, typer.Option("--fps", help="Frames per second to sample (30; -1: the video's own).")] = 30,
    replace: Annotated[bool, typer.Option("--replace", help="Replacement mode: also the background and the mask (SAM2).")] = False,
    retarget: Annotated[bool, typer.Option("--retarget", help="Animation mode: retarget the poses to the character's proportions.")] = False,
    flux: Annotated[bool, typer.Option("--flux", help="With --retarget: straighten the poses with FLUX.1-Kontext-dev (a separate, gated download).")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Prepare the folder animate-14B reads (src_pose.mp4, src_face.mp4, src_ref.png; with --replace also src_bg.mp4, src_mask.mp4)."""
    from wan22ctl import catalog
    from wan22ctl.paths import main_mounts
    from wan22ctl.plan.animate_prep import build_prep_request, missing_checkpoints, plan_prep

    out = Output(as_json)
    settings = load_cli_settings()
    request = build_prep_request(str(video), str(image), name=name, size=size, fps=fps, replace=replace,
                                 retarget=retarget, flux=flux)
    animate_dir = Path(settings.checkpoint_dir) / catalog.MODEL_BY_KEY["animate"].subdir
    missing = missing_checkpoints(request, str(animate_dir))
    if missing:
        fix = ("download black-forest-labs/FLUX.1-Kontext-dev (gated) into that folder"
               if missing == [p for p in missing if "FLUX" in p] else "run: wan22ctl download animate")
        raise UserError(f"preprocessing needs {', '.join(missing)} under {animate_dir}; {fix}")
    run_id = uuid.uuid4().hex[:12]
    to_host = main_mounts(settings).to_host
    if dry_run:
        plan = plan_prep(request, run_id)
        out.result({"plan": plan.to_dict(), "folder": to_host(plan.out_dir)},
                   lambda data: out.say("argv: " + " ".join(data["plan"]["argv"])))
        return
    from wan22ctl.docker.kit import KitContainer

    kit = KitContainer.running(settings)
    plan = plan_prep(request, run_id, kit.inventory().runtime)
    result: dict = {}
    try:
        kit.stage_file(request.video, plan.video, plan.output_dir)
        kit.stage_file(request.image, plan.image, plan.output_dir)
        with out.run_view("animate-prep") as view:
            def on_event(event):
                if event.get("event") == "result":
                    result.update(event)
                view.on_event(event)

            res = kit.run_agent(["animate-prep", "--plan-json", json.dumps(plan.to_dict())], on_line=view.on_line,
                                on_event=on_event)
    except KeyboardInterrupt:
        raise RunFailed("interrupted: preprocessing stopped in the container; nothing was published") from None
    if result.get("status") != "ok":
        raise RunFailed(f"animate-prep {result.get('status', 'failed')}: "
                        f"{result.get('reason') or f'the container side ended with exit code {res.exit_code}'}")
    folder = to_host(result["folder"])
    out.result({"folder": folder, "files": result.get("files", [])},
               lambda data: out.say(f"prepared {folder}\nnext: wan22ctl generate --task animate-14B --src-root {folder}"
                                    + (" --replace" if replace else "")))


def register(app: typer.Typer) -> None:
    """Add `animate-prep` to the root app."""
    app.command("animate-prep")(animate_prep)
