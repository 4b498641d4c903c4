"""`wan22ctl-agent generate`: run one LaunchPlan's argv, observe it, and publish a checked video.

Container side of `wan22ctl generate` (and usable without Docker: `python -m wan22ctl.agent
generate --plan plan.json` with WAN22_DIR / WAN22_OUTPUT_DIR / WAN22_CHECKPOINT_DIR pointing
at real folders). Steps:

1. read the plan (`LaunchPlan.from_dict`); a plan made for another runtime than this machine's
   (`wan22ctl-agent inventory` reports it; a plan from `wan22ctl plan --gpu-count` assumes the
   image's) is re-rendered for this one, and the agent says so (`plan_adjusted` event);
2. lock the plan's GPUs (`locks.py`): a second run on the same GPUs waits, saying who holds
   them, or exits 75 at once with --no-wait;
3. start the plan's argv with the plan's environment in its own process group (s2v with
   --tts-text: CHECKPOINT_DIR's CosyVoice model linked where upstream looks for it);
4. turn upstream's log lines and tqdm bar into `phase` and `progress` events (`progress.py`);
5. after exit 0, check the temporary file is a complete MP4 (upstream exits 0 when saving
   failed), move it to a readable final name without overwriting anything, and write the
   JSON sidecar; on failure or SIGTERM/SIGINT kill the process group and remove every
   partial file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from wan22ctl.agent import outputs
from wan22ctl.agent.locks import GpuLock, run_lock, sweep_stale
from wan22ctl.agent.progress import ProgressTracker, read_lines
from wan22ctl.plan.launch import LaunchPlan
from wan22ctl.protocol import EXIT_BUSY, EXIT_INTERRUPTED, emit

ERROR_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def for_this_machine(plan: LaunchPlan) -> LaunchPlan:
    """The plan as it runs here: unchanged when it was made for this machine's runtime, else
    re-rendered for it, with an event and a line saying so."""
    from wan22ctl.agent.inventory import runtime

    here = runtime()
    if plan.runtime == here:
        return plan
    adjusted = plan.for_runtime(here)
    emit("plan_adjusted", runtime=here.to_dict(), argv=list(adjusted.argv))
    print(f"note: the plan was made for another runtime; running it with this machine's "
          f"({adjusted.command_line()})", file=sys.stderr)
    return adjusted


def _descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (ranks a launcher put in sessions of their own included)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """TERM the child's process group and descendants (torchrun forwards it to the ranks); KILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets = _descendants(proc.pid)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not any(_alive(p) for p in targets):
                try:  # the leader is gone; is anything of its group still alive?
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)


class StopSignals:
    """SIGTERM and SIGINT while a child runs: from `install()` until `restore()`, a signal is kept in
    `.signal`, sets `.stop` (a GPU-lock wait gives up) and kills the child's group, `.proc` once
    started, from a thread (the handler must return at once)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.signal: int | None = None
        self._old: dict = {}

    @classmethod
    def install(cls) -> "StopSignals":
        signals = cls()
        signals._old = {s: signal.signal(s, signals._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        return signals

    def _on_signal(self, signum, frame) -> None:
        self.signal = signum
        self.stop.set()
        if self.proc is not None:
            threading.Thread(target=_kill_group, args=(self.proc,), daemon=True).start()

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for s, h in self._old.items():
            signal.signal(s, h)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _remove(*paths: str | None) -> None:
    for p in paths:
        if p:
            try:
                os.unlink(p)
            except OSError:
                pass


def sidecar_data(plan: LaunchPlan, tracker: ProgressTracker, exit_code: int, *,
                 image_digest: str | None, source_image: str | None, started: str, video: str,
                 total_s: float) -> dict:
    """Everything needed to know how a video was made, and nothing secret."""
    from wan22ctl import __version__, catalog

    req = plan.request
    task = catalog.TASKS[req["task"]]
    width, height = _video_size(video, req["size"]) if task.inputs else (int(x) for x in req["size"].split("*"))
    guide = req.get("guide_scale")
    return {
        "video": os.path.basename(video),
        "bytes": os.path.getsize(video),
        "status": "ok",
        "exit_code": exit_code,
        "task": req["task"],
        "prompt": req["prompt"] if task.takes_prompt else catalog.ANIMATE_PROMPT,
        "negative_prompt": catalog.negative_prompt(req["task"]),
        "size": req["size"],
        "width": width,
        "height": height,
        "frame_num": req["frame_num"],
        "fps": task.fps,
        "sample_steps": req["sample_steps"],
        "sample_shift": req["sample_shift"],
        "guide_scale": guide if guide is not None else (list(task.guide_scale) if task.moe else task.guide_scale[0]),
        "guide_scale_source": "flag" if guide is not None else "config default (low-noise, high-noise)" if task.moe else "config default",
        "seed": req["seed"],
        "solver": req["solver"],
        "preset": req.get("preset"),
        "loras": tracker.loras,
        "image": {"source": source_image, "staged_as": plan.image} if plan.image else None,
        **_task_input_record(plan, tracker),
        "plan": plan.to_dict(),
        "argv": list(plan.argv),
        "phases_s": tracker.phases,
        "total_s": round(total_s, 3),
        "attention": tracker.attention,
        "gpu_memory": tracker.gpu_memory,
        "weights": tracker.weights,
        # DiT weight dtype and offload mode (off, model, blocks) as planned; `weights` is where the
        # container put them (resident, pinned, streamed)
        "dtype": plan.dtype,
        "offload": plan.offload_mode,
        "resident_blocks": plan.resident_blocks,
        "gpus": list(plan.gpu_names),
        "gpu_indices": list(plan.gpus),
        "docker_image_digest": image_digest,
        "wan22_commit": os.environ.get("WAN22_REF"),
        "wan22ctl_version": __version__,
        "run_id": plan.run_id,
        "started_at": started,
        "finished_at": _now(),
    }


def _video_size(video: str, size: str) -> tuple[int, int]:
    """The video's own width and height (s2v follows the image's aspect within the size's area,
    animate the preprocessed folder's size), else the requested size."""
    from wan22ctl import media

    try:
        info = media.video_info(video)
    except media.MediaError:
        info = None
    if info is not None and info.width and info.height:
        return info.width, info.height
    w, h = (int(x) for x in size.split("*"))
    return w, h


def tts_workdir(plan: LaunchPlan, staging: str) -> str:
    """A working folder of this run's own for `--tts-text`: upstream's WanS2V opens `CosyVoice` (its
    code) and `CosyVoice2-0.5B` (the model; downloaded from ModelScope there when absent) by relative
    names and writes the speech to `tts.wav` in the working folder, so two runs in Wan2.2's folder
    would overwrite each other's speech. Here: links to Wan2.2's `CosyVoice` (when the image has it)
    and to CHECKPOINT_DIR's model; the run's tts.wav is published beside its video afterwards."""
    from wan22ctl import catalog

    work = os.path.join(staging, "work")
    os.makedirs(work, exist_ok=True)
    links = {catalog.COSYVOICE.subdir: os.path.join(plan.runtime.checkpoint_dir, catalog.COSYVOICE.subdir)}
    if os.path.isdir(os.path.join(plan.cwd, "CosyVoice")):
        links["CosyVoice"] = os.path.join(plan.cwd, "CosyVoice")
    for name, target in links.items():
        os.symlink(target, os.path.join(work, name))
    return work


def _keep_cosyvoice_code(work: str, wan_dir: str) -> None:
    """Upstream clones CosyVoice's code into the working folder when it finds none there (network):
    move that clone into Wan2.2's folder, which later runs link, so it is fetched once."""
    clone, kept = os.path.join(work, "CosyVoice"), os.path.join(wan_dir, "CosyVoice")
    if os.path.isdir(clone) and not os.path.islink(clone) and not os.path.exists(kept):
        try:
            shutil.move(clone, kept)
        except OSError as exc:
            print(f"warning: CosyVoice's code stays in {clone} (removed with the run): {exc}", file=sys.stderr)


def _task_input_record(plan: LaunchPlan, tracker: ProgressTracker) -> dict:
    """s2v / animate fields of the sidecar: each input's original and staged path, the clip settings."""
    from wan22ctl import catalog

    req = plan.request
    task = catalog.TASKS[req["task"]]
    if not task.inputs:
        return {}
    record = {name: req.get(name) for name in task.inputs if name not in plan.inputs}
    for name, staged in plan.inputs.items():
        record[name] = {"source": req[name], "staged_as": staged}
    record.update(frames_per_clip=req["frame_num"], clips_expected=req.get("clips"), clips_run=tracker.clip)
    if "s2v" in req["task"]:
        record["speech_merged"] = tracker.merge_error is None
    return record


def run_plan(plan: LaunchPlan, *, wait: bool = True, image_digest: str | None = None,
             source_image: str | None = None) -> int:
    """Run a plan end to end; returns the exit code (0 only when a checked video was published)."""
    plan = for_this_machine(plan)
    run_id = plan.run_id
    out_dir = plan.output_dir
    os.makedirs(out_dir, exist_ok=True)
    staging = os.path.join(out_dir, ".staging", run_id)
    generate_py = os.path.join(plan.cwd, "generate.py")
    if "generate.py" in plan.argv and not os.path.isfile(generate_py):
        emit("result", status="failed", reason=f"{generate_py} not found (is WAN22_DIR right?)", exit_code=3)
        print(f"error: {generate_py} not found; set WAN22_DIR to a Wan2.2 checkout", file=sys.stderr)
        return 3

    signals = StopSignals.install()
    held = run_lock(out_dir, run_id)
    sweep_stale(out_dir)
    lock = GpuLock(out_dir, plan.gpus, run_id)
    try:
        if not lock.acquire(wait, signals.stop):
            if signals.signal:
                emit("result", status="interrupted", exit_code=EXIT_INTERRUPTED)
                return EXIT_INTERRUPTED
            print(f"error: GPU(s) {', '.join(map(str, lock.gpus))} are busy with another generation "
                  "(--no-wait given)", file=sys.stderr)
            emit("result", status="busy", exit_code=EXIT_BUSY)
            return EXIT_BUSY
        return _run_child(plan, signals, staging, image_digest=image_digest, source_image=source_image)
    finally:
        lock.release()
        _remove(plan.save_file)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            os.unlink(os.path.join(out_dir, ".locks", f"run-{run_id}.lock"))
        except OSError:
            pass
        held.close()
        signals.restore()


def _run_child(plan: LaunchPlan, signals: StopSignals, staging: str, *, image_digest, source_image) -> int:
    save_file = plan.save_file
    argv = list(plan.argv)
    cwd, env = plan.cwd, {**os.environ, **plan.env}
    if plan.request.get("tts_text") is not None:
        cwd = tts_workdir(plan, staging)
        argv = [os.path.join(plan.cwd, a) if a == "generate.py" else a for a in argv]
        env.setdefault("WAN22_DIR", plan.cwd)  # where the bootstrap finds generate.py
    started = _now()
    t0 = time.monotonic()
    emit("launch", run_id=plan.run_id, argv=argv, nproc=plan.nproc, gpus=list(plan.gpus), cwd=cwd)
    tracker = ProgressTracker(clips=plan.request.get("clips"))
    out_lock = threading.Lock()

    def echo(stream, line):
        with out_lock:
            stream.write(line + "\n")
            stream.flush()

    def on_out(line):
        with out_lock:
            tracker.on_stdout(line)
        echo(sys.stdout, line)

    def on_err(line):
        with out_lock:
            progress = tracker.on_stderr(line)
        if not progress:
            echo(sys.stderr, line)

    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        emit("result", status="failed", reason=f"cannot start {argv[0]}: {exc}", exit_code=3)
        print(f"error: cannot start {argv[0]}: {exc}", file=sys.stderr)
        return 3
    signals.proc = proc
    if signals.stop.is_set():
        _kill_group(proc)
    readers = [threading.Thread(target=read_lines, args=(proc.stdout, on_out), daemon=True),
               threading.Thread(target=read_lines, args=(proc.stderr, on_err), daemon=True)]
    for r in readers:
        r.start()
    while proc.poll() is None:
        time.sleep(0.1)
    for r in readers:
        r.join(timeout=5)
    code = proc.returncode
    if cwd != plan.cwd:
        _keep_cosyvoice_code(cwd, plan.cwd)
    with out_lock:
        tracker.finish()
    if signals.signal is not None:
        _kill_group(proc, grace=1)
        _remove(save_file)
        emit("result", status="interrupted", exit_code=EXIT_INTERRUPTED, phases_s=tracker.phases)
        print("interrupted: generation stopped, partial output removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    if code != 0:
        _remove(save_file)
        tail = [line for line in tracker.last_lines if line.strip()]
        reason = f"generate.py exited with code {code}"
        cause = [line.strip() for line in tail if ERROR_LINE_RE.match(line.strip())]
        if cause:
            reason += f": {cause[-1]}"
        exit_code = code if code and code > 0 else 1  # wanrun's 2 (bad input) and 3 (environment) pass through
        emit("result", status="failed", exit_code=exit_code, reason=reason, log_tail=tail[-8:], phases_s=tracker.phases)
        print(f"error: {reason}", file=sys.stderr)
        return exit_code
    problem = outputs.check_mp4(save_file)
    if problem:
        _remove(save_file)
        reason = f"generate.py exited 0 but the video is bad: {problem}"
        if tracker.save_error:
            reason += f" (upstream: save_video failed, {tracker.save_error})"
        emit("result", status="failed", exit_code=1, reason=reason, phases_s=tracker.phases)
        print(f"error: {reason}", file=sys.stderr)
        return 1
    req = plan.request
    label = req["prompt"] or os.path.basename((req.get("src_root") or "").rstrip("/"))
    stem = outputs.final_stem(req["task"], req["size"], label, datetime.now())
    video = outputs.publish(save_file, plan.output_dir, stem)
    data = sidecar_data(plan, tracker, code, image_digest=image_digest, source_image=source_image,
                        started=started, video=video, total_s=time.monotonic() - t0)
    speech = os.path.join(cwd, "tts.wav")
    if cwd != plan.cwd and os.path.isfile(speech):  # --tts-text: the spoken words, kept beside the video
        data["tts_audio"] = os.path.splitext(video)[0] + ".tts.wav"
        try:
            outputs.publish_as(speech, data["tts_audio"])
        except OSError as exc:
            print(f"warning: the run's speech stays in {speech}: {exc}", file=sys.stderr)
            data["tts_audio"] = None
    sidecar = outputs.write_sidecar(video, data)
    if tracker.merge_error is not None:
        # Upstream logs the failed mux (no ffmpeg on PATH, a bad audio file) and exits 0 with a silent
        # video: a failure for speech-to-video, but the generated frames are kept, published as usual.
        reason = (f"the speech was not merged into the video (upstream: merge_video_audio failed, "
                  f"{tracker.merge_error}); the silent video is kept: {video}")
        emit("result", status="failed", exit_code=1, reason=reason, video=video, sidecar=sidecar,
             bytes=data["bytes"], phases_s=tracker.phases, total_s=data["total_s"])
        print(f"error: {reason}", file=sys.stderr)
        return 1
    emit("result", status="ok", exit_code=0, video=video, sidecar=sidecar, bytes=data["bytes"],
         phases_s=tracker.phases, total_s=data["total_s"])
    return 0


# --------------------------------------------------------------------------- entry point


def _cmd_generate(args) -> int:
    if args.plan_json:
        plan = json.loads(args.plan_json)
    elif args.plan == "-":
        plan = json.load(sys.stdin)
    elif args.plan:
        with open(args.plan, encoding="utf-8") as f:
            plan = json.load(f)
    else:
        print("error: give --plan FILE (or -) or --plan-json TEXT", file=sys.stderr)
        return 2
    if "plans" in plan:  # `wan22ctl plan --json` output as it is: its first plan
        plan = plan["plans"][0]
    plan = LaunchPlan.from_dict(plan.get("plan", plan))
    return run_plan(plan, wait=not args.no_wait, image_digest=args.image_digest, source_image=args.source_image)


def add_parser(subparsers) -> None:
    """Register `generate`."""
    p = subparsers.add_parser("generate", help="run a launch plan (JSON) and publish the checked video")
    p.add_argument("--plan", help="plan file from `wan22ctl plan --json` ('-': stdin)")
    p.add_argument("--plan-json", help="the plan as JSON text")
    p.add_argument("--no-wait", action="store_true", help="exit 75 at once when the GPUs are busy")
    p.add_argument("--image-digest", help="the Docker image digest, recorded in the sidecar")
    p.add_argument("--source-image", help="the input image's original path, recorded in the sidecar")
    p.set_defaults(func=_cmd_generate)
