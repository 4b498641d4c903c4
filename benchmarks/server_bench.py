"""The resident server on real GPUs: load once, then first vs later job latency, memory, cancel.

Starts `python3 -m wan22ctl.agent server --plan auto` (Wan2.2's own classes from WAN22_DIR, the
GPUs and flags `generate` would pick; several GPUs: torchrun) on checkpoints such as
benchmarks/synth_checkpoints.py writes, then over HTTP:

1. waits for /readyz and reads the load time;
2. queues --jobs jobs at once and follows them: per job the time from dequeue to the first
   denoising step (the issue asks < 2 s for every job after the first), denoise, decode+save,
   and GPU memory used (nvidia-smi) after it ended: flat across jobs means nothing leaks;
3. cancels a long job after its second step: seconds until it is cancelled, memory after,
   and the next job's start latency (the GPU is free for it).

    python3 benchmarks/server_bench.py --task ti2v-5B --ckpt-dir /tmp/ckpt/Wan2.2-TI2V-5B --size 1280*704 \\
        --steps 4 --frames 17 --jobs 5

WAN22_DIR must name the Wan2.2 checkout. Writes server-bench-<task>.json under $OUT (or /tmp)
and prints a table; the server's log is server-bench-<task>.log beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def api(base: str, method: str, path: str, body=None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def gpu_memory_mib() -> list[int]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    try:
        return [int(x) for x in out.split()]
    except ValueError:  # the CPU stand-in of nvidia-smi answers another query
        return []


def wait_job(base: str, job_id: str, until=None, timeout: float = 3600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, job = api(base, "GET", f"/v1/videos/{job_id}")
        if job["state"] in ("succeeded", "failed", "cancelled") or (until and until(job)):
            return job
        time.sleep(0.05)
    raise TimeoutError(job_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--size", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--output-dir", default=None, help="server outputs (default $OUT/server-outputs)")
    parser.add_argument("--preset", help="start the server with this preset (its LoRAs merged at load); jobs take its steps")
    parser.add_argument("--no-cancel", action="store_true", help="skip the cancel measurement")
    parser.add_argument("--shim", action="store_true", help="stub Wav2Vec2 for a transformers 5.x machine")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more server flags")
    args = parser.parse_args()

    out = os.environ.get("OUT") or "/tmp"
    outputs = args.output_dir or os.path.join(out, "server-outputs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(out, f"server-bench-{args.task}.log")
    shim = os.path.join(REPO, "benchmarks", "device_shim") if args.shim else None  # harness only
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (shim, REPO, os.environ.get("PYTHONPATH")) if p))
    argv = [sys.executable, "-m", "wan22ctl.agent", "server", "--task", args.task, "--ckpt-dir", args.ckpt_dir,
            "--output-dir", outputs, "--port", str(port), "--plan", "auto", *(["--preset", args.preset] if args.preset else []), *args.extra]
    started = time.time()
    with open(log_path, "ab") as log:
        server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    result: dict = {"task": args.task, "size": args.size, "steps": args.steps, "frames": args.frames,
                    "gpus_before_mib": gpu_memory_mib()}
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited {server.returncode}; see {log_path}")
            try:
                if api(base, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        _, info = api(base, "GET", "/v1/info")
        result.update(ready_after_s=time.time() - started, load_s=info["load_seconds"], plan=info["plan"],
                      world_size=info["world_size"], gpus=info["gpus"], gpus_loaded_mib=gpu_memory_mib())

        body = {"prompt": "a cat walking in the rain at night, cinematic close up shot", "size": args.size,
                "frame_num": args.frames, "seed": 42} | ({} if args.preset else {"sample_steps": args.steps})
        ids = [api(base, "POST", "/v1/videos", body)[1]["id"] for _ in range(args.jobs)]
        jobs = []
        for job_id in ids:
            job = wait_job(base, job_id)
            jobs.append({"id": job_id, "state": job["state"], "error": (job["error"] or {}).get("message"), **(job["timings"] or {}),
                         "gpu_mib_after": gpu_memory_mib()})
        result["jobs"] = jobs
        if not args.no_cancel:
            long = api(base, "POST", "/v1/videos", body | {"sample_steps": max(args.steps * 10, 40)})[1]["id"]
            wait_job(base, long, until=lambda j: j["progress_detail"]["step"] >= 2)
            t0 = time.time()
            api(base, "POST", f"/v1/videos/{long}/cancel")
            cancelled = wait_job(base, long)
            cancel_s = time.time() - t0
            after = wait_job(base, api(base, "POST", "/v1/videos", body)[1]["id"])
            result["cancel"] = {"state": cancelled["state"], "stopped_at_step": cancelled["progress_detail"]["step"],
                                "seconds_to_cancelled": cancel_s, "gpu_mib_after_cancel": gpu_memory_mib(),
                                "next_job": {"state": after["state"], **(after["timings"] or {})}}
        _, metrics = 200, urllib.request.urlopen(base + "/metrics").read().decode()
        result["metrics"] = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    path = os.path.join(out, f"server-bench-{args.task}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"load {result['load_s']:.1f} s, world size {result['world_size']}, plan {result['plan'].get('auto')}")
    print(f"{'job':>3} {'state':>9} {'start s':>8} {'denoise s':>9} {'s/step':>7} {'dec+save s':>10} {'total s':>8}  GPU MiB after")
    for n, j in enumerate(result["jobs"], 1):
        f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{n:>3} {j['state']:>9} {f(j.get('start_latency_s')):>8} {f(j.get('denoise_s')):>9} "
              f"{f(j.get('seconds_per_step')):>7} {f(j.get('decode_save_s')):>10} {f(j.get('total_s')):>8}  {j['gpu_mib_after']}")
    c = result.get("cancel")
    if c:
        print(f"cancel: {c['state']} at step {c['stopped_at_step']} after {c['seconds_to_cancelled']:.2f} s, "
              f"GPU MiB {c['gpu_mib_after_cancel']}; next job {c['next_job']['state']}, "
              f"start {c['next_job'].get('start_latency_s')}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
