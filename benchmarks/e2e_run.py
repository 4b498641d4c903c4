"""End-to-end run of Wan2.2's generate.py through the kit's container side, timed per phase.

Plans the request with the kit's own planner (`wan22ctl.plan.launch`, the same code `wan22ctl
generate` uses), forces the `wan22ctl.agent.wanrun` bootstrap, runs the container-side launcher
exactly as the image does (`python3 -m wan22ctl.agent generate --plan plan.json`: GPU lock, argv,
progress parsing, MP4 check, sidecar), and prints the events it emitted as a table: phase seconds
(load, text_encode, denoise, decode, save), seconds per denoising step (tqdm), peak GPU memory,
attention backend, and the published video and sidecar.

    python3 benchmarks/e2e_run.py --task ti2v-5B --size 1280*704 --ckpt-root /tmp/ckpt --out /tmp/outputs [--steps N]
    python3 benchmarks/e2e_run.py --task t2v-A14B --size 1280*720 --preset lightning --ckpt-root /tmp/ckpt --out /tmp/outputs

WAN22_DIR must name the Wan2.2 checkout. Writes e2e-<task>.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wan22ctl.protocol import parse_event  # noqa: E402
from wan22ctl.plan import launch  # noqa: E402
from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, Runtime, parse_nvidia_smi  # noqa: E402


def run_agent(plan_file: str, env: dict, *options: str, on_event=None) -> tuple[list[dict], int]:
    """`python3 -m wan22ctl.agent generate --plan FILE [options]` from this checkout, as the image runs
    it: (its events, its exit code). Other output passes through, but for tqdm's step lines."""
    cmd = [sys.executable, "-m", "wan22ctl.agent", "generate", "--plan", plan_file, *options]
    events = []
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            event = parse_event(line.rstrip("\n"))
            if event is None:
                if "it/s]" not in line and "s/it]" not in line:
                    sys.stdout.write(line)
                continue
            events.append(event)
            if on_event is not None:
                on_event(event)
        code = proc.wait()
    return events, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--size", required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--image")
    parser.add_argument("--prompt", default="a cat walking in the rain at night, cinematic close up shot")
    parser.add_argument("--ckpt-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--offload", default="auto")
    parser.add_argument("--gpus", default="all", help="as `wan22ctl generate --gpus`: all, a count, or indices")
    parser.add_argument("--label", default="", help="suffix of the result file name (A/B runs)")
    parser.add_argument("--preset", help="as `wan22ctl generate --preset` (its LoRAs under --ckpt-root)")
    parser.add_argument("--compile", default="auto", choices=("auto", "1", "0"), help="the plan's WAN22_COMPILE")
    parser.add_argument("--dtype", default="bf16", help="as `wan22ctl generate --dtype`")
    parser.add_argument("--shim", action="store_true", help="stub Wav2Vec2 for a transformers 5.x machine")
    parser.add_argument("--emulate-gpu-gib", type=float,
                        help="plan for a card of this many GiB and cap generate.py's CUDA allocator at it (needs --shim)")
    args = parser.parse_args()

    smi = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, check=True).stdout
    inventory = parse_nvidia_smi(smi)
    if args.emulate_gpu_gib:  # the planner sees the smaller card; the shim caps the process at it
        inventory = [dataclasses.replace(g, memory_gb=args.emulate_gpu_gib) for g in inventory]
    request = launch.build_request(args.task, args.prompt, size=args.size, sample_steps=args.steps,
                                   frame_num=args.frames, seed=42, image=args.image, offload=args.offload,
                                   gpus=args.gpus, preset=args.preset, dtype=args.dtype)
    run_id = time.strftime("bench%H%M%S")
    env = dict(os.environ, WAN22_OUTPUT_DIR=args.out, WAN22_CHECKPOINT_DIR=args.ckpt_root, WAN22CTL_SRC=REPO,
               WAN22_BOOTSTRAP="1", PYTHONUNBUFFERED="1")
    if args.shim:  # harness-only: see benchmarks/device_shim/sitecustomize.py
        shim = os.path.join(REPO, "benchmarks", "device_shim")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
        if args.emulate_gpu_gib:
            env["WAN22_BENCH_GPU_CAP_GIB"] = str(args.emulate_gpu_gib)
    elif args.emulate_gpu_gib:
        parser.error("--emulate-gpu-gib needs --shim (the cap is applied by benchmarks/device_shim)")
    # planned for the runtime the launcher below will find (this checkout, these folders)
    plan = launch.plan_launch(request, inventory, run_id=run_id, attention=os.environ.get("WAN22_ATTENTION", "auto"), compile_mode=args.compile,
                              runtime=Runtime.from_environ(env, kit_dir=REPO))
    os.makedirs(args.out, exist_ok=True)
    if plan.image:  # what `wan22ctl generate` does on the host: stage the input beside the outputs
        os.makedirs(os.path.dirname(plan.image), exist_ok=True)
        shutil.copyfile(args.image, plan.image)
    plan_dict = plan.to_dict()
    plan_file = os.path.join(args.out, f"plan-{run_id}.json")
    with open(plan_file, "w") as f:
        json.dump(plan_dict, f, indent=1, default=list)
    print("argv:", " ".join(plan.argv), flush=True)
    t0 = time.time()
    events, code = run_agent(plan_file, env, *(["--source-image", args.image] if args.image else []),
                             on_event=lambda ev: print("EVENT", json.dumps(ev), flush=True))
    wall = time.time() - t0
    phases = {e["name"]: e["seconds"] for e in events if e.get("event") == "phase" and e.get("state") == "end"}
    progress = [e for e in events if e.get("event") == "progress"]
    forwards = [e for e in events if e.get("event") == "forward"]
    per_model = {}
    for e in forwards:
        per_model.setdefault(f"model{e['model']}", []).append(e["seconds"])
    result = next((e for e in events if e.get("event") == "result"), {})
    summary = {"task": args.task, "label": args.label, "size": args.size, "dtype": args.dtype,
               "emulated_gpu_gib": args.emulate_gpu_gib, "offload_mode": plan.offload_mode, "resident_blocks": plan.resident_blocks, "plan_reasons": list(plan.reasons), "steps": request.sample_steps, "frames": request.frame_num,
               "exit_code": code, "wall_s": round(wall, 1), "phases": phases,
               "attention": next((e for e in events if e.get("event") == "attention"), None),
               "gpu_memory": [e for e in events if e.get("event") == "gpu_memory"],
               "weights": next((e["placement"] for e in events if e.get("event") == "weights"), None),
               "regime": plan.regime, "loras": [e for e in events if e.get("event") == "lora"],
               "last_progress": progress[-1] if progress else None,
               "forward_s": {k: {"count": len(v), "first": v[0], "median_rest": sorted(v[1:])[len(v[1:]) // 2] if len(v) > 1 else None}
                             for k, v in per_model.items()}, "result": result, "argv": list(plan.argv)}
    print("SUMMARY", json.dumps(summary, indent=1), flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), f"e2e-{args.task}{'-' + args.label if args.label else ''}.json"), "w") as f:
        json.dump({**summary, "events": events}, f, indent=1)
    sys.exit(code)


if __name__ == "__main__":
    main()
