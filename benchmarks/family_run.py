"""s2v-14B and animate-14B end to end through the kit's container-side launcher, with real Wan2.2
code and synthetic checkpoints, timed per phase and per clip.

For each task: make its inputs (s2v: a face-sized PNG and a WAV whose length gives `--clips`
clips; animate: a prepared folder — src_pose.mp4, src_face.mp4, src_ref.png, and with --replace
src_bg.mp4, src_mask.mp4 — long enough for `--clips` clips), check and plan them with the kit's
own `build_request`/`plan_launch` (the same code `wan22ctl generate` runs, reading the inputs'
headers), stage them where the plan says, run `python3 -m wan22ctl.agent generate --plan FILE`
(GPU lock, argv, clip-aware progress, MP4 check, sidecar) and print a table: phase seconds,
clips run, seconds per step, peak GPU memory, the published video. Results are synthetic-weight
runs with few steps: timings, not quality.

On the GPU machine (WAN22_DIR = a Wan2.2 checkout at WAN22_REF, its requirements and
requirements_animate.txt installed; 64 GiB of disk holds one family checkpoint at a time):

    export WAN22_DIR=$PWD/.devcarry/wan2.2 OUT=${OUT:-/tmp/out}
    python3 benchmarks/family_run.py --task s2v-14B --ckpt-root /tmp/ckpt --synth --steps 4 --clips 2
    python3 benchmarks/family_run.py --task animate-14B --ckpt-root /tmp/ckpt --synth --steps 4 --clips 2 --drop-dit
    python3 benchmarks/family_run.py --task s2v-14B --plan-only --gpu-count 1 --gpu-mem-gb 141 ...  # no GPU

--synth writes the task's checkpoint with benchmarks/synth_checkpoints.py when it is missing (T5
and its tokenizer are hard-linked from the first one made, under CKPT_ROOT/.t5); --drop-dit
deletes the DiT shards afterwards so the next task fits. Writes family-<task>[-label].json under $OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import wave
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.e2e_run import run_agent  # noqa: E402
from wan22ctl import catalog  # noqa: E402
from wan22ctl.plan import launch  # noqa: E402
from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, Runtime, parse_nvidia_smi  # noqa: E402

SYNTH_KEY = {"s2v-14B": "s2v-14b", "animate-14B": "animate-14b"}


def write_png(path: str, width: int, height: int) -> str:
    """A smooth RGB gradient as a PNG, standard library only."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for x in range(width):
            raw += bytes((x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), 128))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(bytes(raw), 6)) + chunk(b"IEND", b""))
    return path


def write_wav(path: str, seconds: float) -> str:
    """A 16 kHz mono tone with a slow pitch glide (speech-like energy for the audio encoder)."""
    rate = 16000
    with wave.open(path, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * (180 + 40 * math.sin(i / rate))
                                                                        * i / rate))) for i in range(int(seconds * rate))))
    return path


def s2v_seconds(clips: int, frames: int, fps: int = 16) -> float:
    """An audio length WanS2V turns into exactly `clips` clips of `frames` (catalog.s2v_clip_count)."""
    seconds = (clips - 1) * frames / fps + 0.5 * frames / fps
    assert catalog.s2v_clip_count(seconds, frames, fps) == clips
    return seconds


def write_animate_folder(folder: str, clips: int, clip_len: int, refert: int, size: str, replace: bool) -> str:
    """What animate-prep writes, at `size`, long enough for `clips` windows (needs imageio[ffmpeg])."""
    import imageio.v2 as imageio
    import numpy as np

    w, h = (int(x) for x in size.split("*"))
    frames = clip_len + (clips - 1) * (clip_len - refert)
    os.makedirs(folder, exist_ok=True)

    def video(name: str, width: int, height: int, draw) -> None:
        with imageio.get_writer(os.path.join(folder, name), fps=30, codec="libx264", quality=8,
                                macro_block_size=1) as writer:
            for t in range(frames):
                writer.append_data(draw(t, width, height))

    def pose(t, width, height):
        img = np.zeros((height, width, 3), np.uint8)
        cx = width // 2 + int(width * 0.2 * math.sin(t / 10))
        img[height // 4:3 * height // 4, max(cx - 20, 0):cx + 20] = (255, 128, 0)
        return img

    video("src_pose.mp4", w, h, pose)
    video("src_face.mp4", 512, 512, lambda t, width, height: np.full((height, width, 3), (t * 3) % 255, np.uint8))
    if replace:
        video("src_bg.mp4", w, h, lambda t, width, height: np.full((height, width, 3), 90, np.uint8))
        video("src_mask.mp4", w, h, pose)
    write_png(os.path.join(folder, "src_ref.png"), w, h)
    assert catalog.animate_clip_count(frames, clip_len, refert) == clips
    return folder


def synthesize(task: str, root: str) -> None:
    """The task's synthetic checkpoint under root, unless there (T5 shared through root/.t5)."""
    model = catalog.model_for_task(task)
    out = os.path.join(root, model.subdir)
    if os.path.exists(os.path.join(out, "diffusion_pytorch_model.safetensors.index.json")):
        return
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "synth_checkpoints.py"), "--model", SYNTH_KEY[task],
           "--out", out]
    t5 = os.path.join(root, ".t5")
    if os.path.exists(os.path.join(t5, "models_t5_umt5-xxl-enc-bf16.pth")):
        cmd += ["--reuse-t5", t5]
    subprocess.run(cmd, check=True)
    if not os.path.exists(t5):
        os.makedirs(os.path.join(t5, "google", "umt5-xxl"))
        for rel in ("models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json",
                    "google/umt5-xxl/tokenizer_config.json", "google/umt5-xxl/special_tokens_map.json"):
            os.link(os.path.join(out, rel), os.path.join(t5, rel))


def make_request(args, inputs: str) -> launch.GenerationRequest:
    if args.task == "s2v-14B":
        w, h = (int(x) for x in args.size.split("*"))
        image = write_png(os.path.join(inputs, "face.png"), w, h)
        audio = write_wav(os.path.join(inputs, "talk.wav"), s2v_seconds(args.clips, args.frames))
        return launch.build_request(args.task, "a person talking to the camera, studio light", size=args.size,
                                    frame_num=args.frames, sample_steps=args.steps, seed=42, image=image, audio=audio,
                                    offload=args.offload, gpus=args.gpus)
    folder = args.src_root or write_animate_folder(os.path.join(inputs, "process_results"), args.clips, args.frames,
                                                   1, args.size, args.replace)
    return launch.build_request(args.task, None, frame_num=args.frames, sample_steps=args.steps, seed=42,
                                src_root=folder, refert_num=1, replace=args.replace, offload=args.offload,
                                gpus=args.gpus)


def stage(plan: launch.LaunchPlan) -> None:
    """What `wan22ctl generate` does on the host: copy the inputs where the plan's argv names them."""
    pairs = ([(plan.request["image"], plan.image)] if plan.image else []) + launch.staged_files(plan)
    for source, target in pairs:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)


def summarise(task: str, label: str, request, plan, events: list[dict], code: int, wall: float) -> dict:
    phases: dict[str, float] = {}
    for e in events:
        if e.get("event") == "phase" and e.get("state") == "end":
            phases[e["name"]] = round(phases.get(e["name"], 0.0) + e["seconds"], 3)
    progress = [e for e in events if e.get("event") == "progress"]
    finals = [e for e in progress if e["step"] == e["total"] and e["total"]]
    steps = sum(e["total"] for e in finals)
    return {"task": task, "label": label, "size": request.size, "frames_per_clip": request.frame_num,
            "steps": request.sample_steps, "clips_expected": request.clips, "clips_run": len(finals),
            "exit_code": code, "wall_s": round(wall, 1), "phases_s": phases,
            "s_per_step": round(phases.get("denoise", 0) / steps, 2) if steps else None,
            "gpu_memory": [e for e in events if e.get("event") == "gpu_memory"],
            "attention": next((e for e in events if e.get("event") == "attention"), None),
            "plan": {"nproc": plan.nproc, "offload_model": plan.offload_model, "est_peak_gpu_gb": plan.est_peak_gpu_gb,
                     "reasons": list(plan.reasons), "argv": list(plan.argv)},
            "result": next((e for e in events if e.get("event") == "result"), {})}


def print_table(s: dict) -> None:
    peak = max((g.get("peak_allocated_gib", 0) for g in s["gpu_memory"]), default=None)
    rows = [("task", s["task"]), ("size / frames a clip / steps", f"{s['size']} / {s['frames_per_clip']} / {s['steps']}"),
            ("clips (expected / run)", f"{s['clips_expected']} / {s['clips_run']}"),
            *[(f"phase {k} (s)", v) for k, v in s["phases_s"].items()], ("s per denoising step", s["s_per_step"]),
            ("peak GPU memory (GiB, allocated)", peak), ("planned peak (GB)", s["plan"]["est_peak_gpu_gb"]),
            ("wall (s)", s["wall_s"]), ("exit code", s["exit_code"]), ("video", s["result"].get("video"))]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(SYNTH_KEY), required=True)
    parser.add_argument("--ckpt-root", default="/tmp/ckpt")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, help="frames a clip (default: the task's, 80 / 77)")
    parser.add_argument("--size", help="s2v: the area (default 1024*704); animate: the prepared folder's size")
    parser.add_argument("--replace", action="store_true", help="animate: replacement mode")
    parser.add_argument("--src-root", help="animate: an existing prepared folder instead of a generated one")
    parser.add_argument("--offload", default="auto")
    parser.add_argument("--gpus", default="all")
    parser.add_argument("--label", default="")
    parser.add_argument("--synth", action="store_true", help="write the synthetic checkpoint when missing")
    parser.add_argument("--drop-dit", action="store_true", help="delete the DiT shards afterwards (disk)")
    parser.add_argument("--plan-only", action="store_true", help="make the inputs and print the plan; no GPU needed")
    parser.add_argument("--gpu-count", type=int, help="with --plan-only: plan for this many GPUs")
    parser.add_argument("--gpu-mem-gb", type=float, default=141.0)
    args = parser.parse_args()
    task = catalog.TASKS[args.task]
    args.frames = args.frames or task.frame_num
    args.size = args.size or task.default_size

    inputs = os.path.join(args.out, f"inputs-{args.task}")
    os.makedirs(inputs, exist_ok=True)
    request = make_request(args, inputs)
    run_id = time.strftime("family%H%M%S")
    env = dict(os.environ, WAN22_OUTPUT_DIR=args.out, WAN22_CHECKPOINT_DIR=args.ckpt_root, WAN22CTL_SRC=REPO,
               WAN22_BOOTSTRAP="1", PYTHONUNBUFFERED="1")
    if args.plan_only:
        inventory = launch.synthetic_inventory(args.gpu_count or 1, args.gpu_mem_gb)
    else:
        inventory = parse_nvidia_smi(subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, check=True).stdout)
    plan = launch.plan_launch(request, inventory, run_id=run_id, attention=os.environ.get("WAN22_ATTENTION", "auto"),
                              runtime=Runtime.from_environ(env, kit_dir=REPO))
    print("argv:", plan.command_line(), flush=True)
    print("clips:", request.clips, flush=True)
    if args.plan_only:
        print(json.dumps({"request": request.to_dict(), "plan": plan.to_dict()}, indent=1))
        return
    if args.synth:
        synthesize(args.task, args.ckpt_root)
    stage(plan)
    plan_file = os.path.join(args.out, f"plan-{run_id}.json")
    with open(plan_file, "w") as f:
        json.dump(plan.to_dict(), f, indent=1)
    t0 = time.time()
    events, code = run_agent(plan_file, env)
    summary = summarise(args.task, args.label, request, plan, events, code, time.time() - t0)
    print_table(summary)
    name = f"family-{args.task}{'-' + args.label if args.label else ''}.json"
    with open(os.path.join(args.out, name), "w") as f:
        json.dump({**summary, "events": events}, f, indent=1)
    if args.drop_dit:
        folder = os.path.join(args.ckpt_root, catalog.model_for_task(args.task).subdir)
        for entry in os.listdir(folder):
            if entry.startswith("diffusion_pytorch_model"):
                os.unlink(os.path.join(folder, entry))
    sys.exit(code)


if __name__ == "__main__":
    main()
