"""`wan22ctl-agent generate`: run one LaunchPlan's argv, observe it, and publish a checked video.

Container side of `wan22ctl generate` (and usable without Docker: `python -m wan22ctl.agent
generate --plan plan.json` with WAN22_DIR / WAN22_OUTPUT_DIR / WAN22_CHECKPOINT_DIR pointing
at real folders). Steps:

1. lock the plan's GPUs (`<outputs>/.locks/gpu-N.lock`, flock): a second run on the same GPUs
   waits, saying who holds them, or exits 75 at once with --no-wait;
2. start `python3 generate.py ...` or `torchrun ...` in its own process group (WAN22_PYTHON /
   WAN22_TORCHRUN override the interpreters; WAN22_BOOTSTRAP=1 starts Wan through
   `python3 -m wan22ctl.agent.wanrun` so an attention backend can be installed first);
3. turn upstream's log lines and tqdm bar into events: `phase` (load, text_encode, denoise,
   decode, save, with seconds) and `progress` (step, total, ETA);
4. after exit 0, check the temporary file is a complete MP4 (upstream exits 0 when saving
   failed), move it to a readable final name without overwriting anything, and write the
   JSON sidecar; on failure or SIGTERM/SIGINT kill the process group and remove every
   partial file.
"""

from __future__ import annotations

import fcntl
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

from wan22ctl.protocol import EXIT_BUSY, EXIT_INTERRUPTED, emit, parse_event
from wan22ctl.agent import outputs

TQDM_RE = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<(?:(?:(\d+):)?(\d+):(\d+)|\?)")
# Upstream's denoising bar has no description ("  50%|...| 20/40 [...]"); bars with one, such as
# diffusers' "Loading checkpoint shards: 100%|...| 6/6" during load, are not denoising steps.
DENOISE_BAR_RE = re.compile(r"^\s*\d+%\|")
ERROR_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
PHASES = ("load", "text_encode", "denoise", "decode", "save")


# --------------------------------------------------------------------------- paths


def local_dirs() -> dict[str, str]:
    """Where things are on this machine: the image's paths unless the environment says otherwise."""
    from wan22ctl import catalog

    return {
        "wan22": os.environ.get("WAN22_DIR") or catalog.CONTAINER_WAN22_DIR,
        "outputs": os.environ.get("WAN22_OUTPUT_DIR") or catalog.CONTAINER_OUTPUT_DIR,
        "checkpoints": os.environ.get("WAN22_CHECKPOINT_DIR") or catalog.CONTAINER_CHECKPOINT_DIR,
    }


def localize(plan: dict) -> dict:
    """The plan with its container paths mapped onto this machine's folders (a no-op in the image)."""
    from wan22ctl import catalog

    dirs = local_dirs()
    prefixes = [(catalog.CONTAINER_OUTPUT_DIR, dirs["outputs"]), (catalog.CONTAINER_CHECKPOINT_DIR, dirs["checkpoints"])]

    def mapped(value):
        if not isinstance(value, str):
            return value
        for old, new in prefixes:
            if value == old or value.startswith(old + "/"):
                return new + value[len(old):]
        return value

    plan = dict(plan)
    argv = list(plan["argv"])
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--ckpt_dir", "--save_file", "--image"):
            argv[i + 1] = mapped(argv[i + 1])
    plan["argv"] = argv
    for key in ("save_file", "ckpt_dir", "image", "output_dir"):
        plan[key] = mapped(plan.get(key))
    plan["cwd"] = dirs["wan22"]
    return plan


def set_bootstrap(argv: list[str], on: bool) -> list[str]:
    """Switch between `generate.py` and `-m wan22ctl.agent.wanrun` as the entry of the argv."""
    from wan22ctl.plan.launch import BOOTSTRAP_MODULE

    argv = list(argv)
    if on and "generate.py" in argv:
        i = argv.index("generate.py")
        argv[i:i + 1] = ["-m", BOOTSTRAP_MODULE]
    elif not on and BOOTSTRAP_MODULE in argv:
        i = argv.index(BOOTSTRAP_MODULE)
        argv[i - 1:i + 1] = ["generate.py"]
    return argv


def _source_dir() -> str:
    """Where the system python finds `wan22ctl` (only the stdlib-only modules run inside Wan)."""
    if os.environ.get("WAN22CTL_SRC"):
        return os.environ["WAN22CTL_SRC"]
    if os.path.isdir("/opt/wan22ctl-src/wan22ctl"):
        return "/opt/wan22ctl-src"
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_command(plan: dict) -> tuple[list[str], dict[str, str]]:
    """The argv and environment actually started, after interpreter and bootstrap overrides."""
    argv = list(plan["argv"])
    flag = os.environ.get("WAN22_BOOTSTRAP")
    bootstrap = plan.get("bootstrap", False) if flag not in ("0", "1") else flag == "1"
    argv = set_bootstrap(argv, bootstrap)
    if argv[0] == "python3":
        argv[0] = os.environ.get("WAN22_PYTHON", "python3")
    elif argv[0] == "torchrun":
        argv[0] = os.environ.get("WAN22_TORCHRUN", "torchrun")
    env = dict(os.environ)
    env.update(plan.get("env") or {})
    env["PYTHONUNBUFFERED"] = "1"
    if bootstrap:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_source_dir(), env.get("PYTHONPATH")) if p)
    else:
        env["WAN22_BOOTSTRAP"] = "0"  # keeps the image's hand-typed hook (wan22ctl-generate.pth) out too
    return argv, env


# --------------------------------------------------------------------------- locks


class GpuLock:
    """flock on one file per GPU under <outputs>/.locks; released when the process ends, even by SIGKILL."""

    def __init__(self, output_dir: str, gpus, run_id: str):
        self.dir = os.path.join(output_dir, ".locks")
        self.gpus = sorted(gpus)
        self.run_id = run_id
        self.files: list = []

    def _holder(self, path: str) -> str:
        try:
            with open(path) as f:
                info = json.loads(f.read() or "{}")
            return f"run {info.get('run_id', '?')} (pid {info.get('pid', '?')}, since {info.get('since', '?')})"
        except (OSError, json.JSONDecodeError):
            return "another run"

    def acquire(self, wait: bool, stop: threading.Event) -> bool:
        os.makedirs(self.dir, exist_ok=True)
        announced = False
        for gpu in self.gpus:  # in index order, so two runs never wait on each other crosswise
            path = os.path.join(self.dir, f"gpu-{gpu}.lock")
            f = open(path, "a+")
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = self._holder(path)
                    if not wait:
                        f.close()
                        self.release()
                        emit("busy", gpus=self.gpus, gpu=gpu, holder=holder)
                        return False
                    if not announced:
                        emit("waiting", gpus=self.gpus, gpu=gpu, holder=holder)
                        announced = True
                    if stop.wait(0.5):
                        f.close()
                        self.release()
                        return False
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"run_id": self.run_id, "pid": os.getpid(), "since": _now()}))
            f.flush()
            self.files.append(f)
        if announced:
            emit("lock_acquired", gpus=self.gpus)
        return True

    def release(self) -> None:
        for f in self.files:
            try:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            except OSError:
                pass
        self.files = []


def _run_lock(output_dir: str, run_id: str):
    """Held for a run's whole life, so a later run can tell its partial files from a crashed run's."""
    os.makedirs(os.path.join(output_dir, ".locks"), exist_ok=True)
    f = open(os.path.join(output_dir, ".locks", f"run-{run_id}.lock"), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def sweep_stale(output_dir: str) -> list[str]:
    """Remove partial files and staged inputs left by runs that died without cleaning up (SIGKILL)."""
    removed = []
    for path in glob.glob(os.path.join(output_dir, ".partial-*")):
        run_id = os.path.basename(path).removeprefix(".partial-").split(".")[0]
        lock_path = os.path.join(output_dir, ".locks", f"run-{run_id}.lock")
        try:
            with open(lock_path, "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the run is gone
        except BlockingIOError:
            continue
        except OSError:
            pass
        for p in (path, lock_path):
            try:
                os.unlink(p)
                removed.append(p)
            except OSError:
                pass
        shutil.rmtree(os.path.join(output_dir, ".staging", run_id), ignore_errors=True)
    return removed


# --------------------------------------------------------------------------- progress


def _seconds(h, m, s) -> int:
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


class ProgressTracker:
    """Turns upstream's log lines (rank 0, stdout) and tqdm redraws (stderr) into events."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self.current: str | None = None
        self.phase_started = self.started
        self.phases: dict[str, float] = {}
        self.step = -1
        self.total = 0
        self.save_error: str | None = None
        self.last_lines: list[str] = []
        self.attention: dict | None = None  # wanrun's `attention` event: backend, GPU, speedups
        self.gpu_memory: list[dict] = []  # wanrun's `gpu_memory` events, one per rank
        self.weights: str | None = None  # speedups' `weights` event: where the MoE experts live
        self._begin("load")

    def _begin(self, name: str) -> None:
        now = self.clock()
        if self.current is not None:
            if self.current == name:
                return
            self.phases[self.current] = round(now - self.phase_started, 3)
            emit("phase", name=self.current, state="end", seconds=self.phases[self.current])
        self.current, self.phase_started = name, now
        emit("phase", name=name, state="start")

    def finish(self) -> None:
        if self.current is not None:
            self.phases[self.current] = round(self.clock() - self.phase_started, 3)
            emit("phase", name=self.current, state="end", seconds=self.phases[self.current])
            self.current = None

    def _remember(self, line: str) -> None:
        self.last_lines = (self.last_lines + [line])[-30:]

    def on_stdout(self, line: str) -> None:
        self._remember(line)
        event = parse_event(line) if line.startswith("@@") else None
        if event is not None:
            fields = {k: v for k, v in event.items() if k != "event"}
            if event.get("event") == "attention":
                self.attention = fields
            elif event.get("event") == "gpu_memory":
                self.gpu_memory.append(fields)
            elif event.get("event") == "weights":
                self.weights = fields.get("placement")
            return
        if "Generating video" in line and self.current == "load":
            self._begin("text_encode")
        elif "Saving generated video to" in line:
            self._begin("save")
        elif "save_video failed" in line:
            self.save_error = line.split("save_video failed", 1)[1].lstrip(",: ")
        elif line.rstrip().endswith("Finished."):
            self.finish()

    def on_stderr(self, line: str) -> bool:
        """Handle one stderr line; True when it was a progress redraw (not worth echoing)."""
        m = TQDM_RE.search(line)
        if not m:
            self._remember(line)
            return False
        if not DENOISE_BAR_RE.match(line):
            return True  # another bar (loading shards): a redraw, not a step
        step, total = int(m.group(1)), int(m.group(2))
        if self.current in ("load", "text_encode"):
            self._begin("denoise")
        # Under torchrun every rank draws a bar; report each step once, in order.
        if total != self.total or step > self.step:
            self.step, self.total = step, total
            elapsed = _seconds(m.group(3), m.group(4), m.group(5))
            eta = _seconds(m.group(6), m.group(7), m.group(8)) if m.group(7) else None
            emit("progress", step=step, total=total, elapsed_s=elapsed, eta_s=eta)
            if step == total and self.current == "denoise":
                self._begin("decode")
        return True


# --------------------------------------------------------------------------- the run


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# A whole tqdm redraw: tqdm writes "\r" + the bar and no line end, so the bar is complete when
# it ends in its rate bracket ("... 1.20it/s]"), not when the next redraw arrives.
_BAR_DONE = re.compile(rb"\d+/\d+ \[[^\]]*\]\s*$")


def _read_lines(stream, handle) -> None:
    """Split a byte stream on \\n and \\r (tqdm redraws with \\r) and hand each line on, a
    progress bar as soon as it is drawn (else every step would show one redraw late)."""
    buf = b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        if buf and _BAR_DONE.search(buf):
            parts.append(buf)
            buf = b""
        for part in parts:
            if part:
                handle(part.decode("utf-8", "replace"))
    if buf:
        handle(buf.decode("utf-8", "replace"))


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


def sidecar_data(plan: dict, argv: list[str], tracker: ProgressTracker, exit_code: int, *,
                 image_digest: str | None, source_image: str | None, started: str, video: str,
                 total_s: float) -> dict:
    """Everything needed to know how a video was made, and nothing secret."""
    from wan22ctl import __version__, catalog

    req = plan["request"]
    task = catalog.TASKS[req["task"]]
    width, height = (int(x) for x in req["size"].split("*"))
    guide = req.get("guide_scale")
    return {
        "video": os.path.basename(video),
        "bytes": os.path.getsize(video),
        "status": "ok",
        "exit_code": exit_code,
        "task": req["task"],
        "prompt": req["prompt"],
        "negative_prompt": catalog.SAMPLE_NEG_PROMPT,
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
        "image": {"source": source_image, "staged_as": plan.get("image")} if plan.get("image") else None,
        "plan": plan,
        "argv": argv,
        "phases_s": tracker.phases,
        "total_s": round(total_s, 3),
        "attention": tracker.attention,
        "gpu_memory": tracker.gpu_memory,
        "weights": tracker.weights,
        "gpus": list(plan.get("gpu_names") or []),
        "gpu_indices": list(plan.get("gpus") or []),
        "docker_image_digest": image_digest,
        "wan22_commit": os.environ.get("WAN22_REF"),
        "wan22ctl_version": __version__,
        "run_id": plan["run_id"],
        "started_at": started,
        "finished_at": _now(),
    }


def run_plan(plan: dict, *, wait: bool = True, image_digest: str | None = None,
             source_image: str | None = None) -> int:
    """Run a plan end to end; returns the exit code (0 only when a checked video was published)."""
    plan = localize(plan)
    run_id = plan["run_id"]
    out_dir = plan["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    staging = os.path.join(out_dir, ".staging", run_id)
    generate_py = os.path.join(plan["cwd"], "generate.py")
    argv, env = child_command(plan)
    if "generate.py" in argv and not os.path.isfile(generate_py):
        emit("result", status="failed", reason=f"{generate_py} not found (is WAN22_DIR right?)", exit_code=3)
        print(f"error: {generate_py} not found; set WAN22_DIR to a Wan2.2 checkout", file=sys.stderr)
        return 3

    stop = threading.Event()
    state = {"proc": None, "signal": None}

    def on_signal(signum, frame):
        state["signal"] = signum
        stop.set()
        if state["proc"] is not None:
            threading.Thread(target=_kill_group, args=(state["proc"],), daemon=True).start()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    run_lock = _run_lock(out_dir, run_id)
    sweep_stale(out_dir)
    lock = GpuLock(out_dir, plan.get("gpus") or [], run_id)
    try:
        if not lock.acquire(wait, stop):
            if state["signal"]:
                emit("result", status="interrupted", exit_code=EXIT_INTERRUPTED)
                return EXIT_INTERRUPTED
            print(f"error: GPU(s) {', '.join(map(str, lock.gpus))} are busy with another generation "
                  "(--no-wait given)", file=sys.stderr)
            emit("result", status="busy", exit_code=EXIT_BUSY)
            return EXIT_BUSY
        return _run_child(plan, argv, env, state, stop, image_digest=image_digest, source_image=source_image)
    finally:
        lock.release()
        _remove(plan["save_file"])
        shutil.rmtree(staging, ignore_errors=True)
        try:
            os.unlink(os.path.join(out_dir, ".locks", f"run-{run_id}.lock"))
        except OSError:
            pass
        run_lock.close()
        for s, h in old.items():
            signal.signal(s, h)


def _run_child(plan, argv, env, state, stop, *, image_digest, source_image) -> int:
    save_file = plan["save_file"]
    started = _now()
    t0 = time.monotonic()
    emit("launch", run_id=plan["run_id"], argv=argv, nproc=plan.get("nproc"), gpus=plan.get("gpus"),
         cwd=plan["cwd"])
    tracker = ProgressTracker()
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
        proc = subprocess.Popen(argv, cwd=plan["cwd"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        emit("result", status="failed", reason=f"cannot start {argv[0]}: {exc}", exit_code=3)
        print(f"error: cannot start {argv[0]}: {exc}", file=sys.stderr)
        return 3
    state["proc"] = proc
    if stop.is_set():
        _kill_group(proc)
    readers = [threading.Thread(target=_read_lines, args=(proc.stdout, on_out), daemon=True),
               threading.Thread(target=_read_lines, args=(proc.stderr, on_err), daemon=True)]
    for r in readers:
        r.start()
    while proc.poll() is None:
        time.sleep(0.1)
    for r in readers:
        r.join(timeout=5)
    code = proc.returncode
    with out_lock:
        tracker.finish()
    if state["signal"] is not None:
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
        emit("result", status="failed", exit_code=code if code and code > 0 else 1, reason=reason,
             log_tail=tail[-8:], phases_s=tracker.phases)
        print(f"error: {reason}", file=sys.stderr)
        return 1
    problem = outputs.check_mp4(save_file)
    if problem:
        _remove(save_file)
        reason = f"generate.py exited 0 but the video is bad: {problem}"
        if tracker.save_error:
            reason += f" (upstream: save_video failed, {tracker.save_error})"
        emit("result", status="failed", exit_code=1, reason=reason, phases_s=tracker.phases)
        print(f"error: {reason}", file=sys.stderr)
        return 1
    req = plan["request"]
    stem = outputs.final_stem(req["task"], req["size"], req["prompt"], datetime.now())
    video = outputs.publish(save_file, plan["output_dir"], stem)
    data = sidecar_data(plan, argv, tracker, code, image_digest=image_digest, source_image=source_image,
                        started=started, video=video, total_s=time.monotonic() - t0)
    sidecar = outputs.write_sidecar(video, data)
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
    plan = plan.get("plan", plan)
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
