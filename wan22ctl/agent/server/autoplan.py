"""`--plan auto`: the server decides its GPUs and memory flags with `generate`'s own launch plan.

The container's GPU inventory (nvidia-smi) and free host RAM go through
`plan.launch.plan_launch()` for the server's task at its default size, the same decision a
`wan22ctl generate` of that task would get: how many GPUs, torchrun or one process, Ulysses,
FSDP, `offload_model`, `t5_cpu`, `convert_model_dtype`, CUDA_VISIBLE_DEVICES and the attention
backend. With several GPUs the server runs itself under `torchrun` and restarts it when a
failed job ended the ranks (`supervise`).
"""

from __future__ import annotations

import os
import sys

from wan22ctl.errors import EnvError


def plan_for_server(task: str, inventory: dict, attention: str, compile_mode: str = "auto", dtype: str = "bf16"):
    """The LaunchPlan `generate` would make for this task at its default size on this machine
    (its env carries the weight dtype and, below 80 GB, block streaming, for the pipeline's load)."""
    from wan22ctl import catalog
    from wan22ctl.plan.inventory import Inventory
    from wan22ctl.plan.launch import plan_launch, server_request

    machine = Inventory.from_dict(inventory)
    if not machine.gpus:
        raise EnvError(f"no GPU visible to the server ({machine.error or 'nvidia-smi lists none'})",
                       fix="start the container with GPUs (GPUS setting), or pass explicit flags instead of --plan auto")
    # WAN22_DTYPE is about the A14B experts: other tasks keep bf16
    request = server_request(task, dtype=dtype if catalog.TASKS[task].moe else "bf16")
    return plan_launch(request, machine.gpus, machine.host_ram_gb, run_id="server", attention=attention,
                       compile_mode=compile_mode, runtime=machine.runtime)


def server_flags(plan) -> list[str]:
    """The server's own options that carry the plan's decisions."""
    flags = ["--offload-model", str(plan.offload_model).lower(), "--ulysses-size", str(plan.ulysses_size)]
    if plan.dit_fsdp:
        flags.append("--dit-fsdp")
    if plan.t5_fsdp:
        flags.append("--t5-fsdp")
    if plan.convert_model_dtype:
        flags.append("--convert-model-dtype")
    if plan.t5_cpu:
        flags.append("--t5-cpu")
    return flags


def strip_plan_flag(argv: list[str]) -> list[str]:
    """argv without `--plan auto` / `--plan=auto`, for the re-executed ranks."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--plan":
            skip = True
            continue
        if a.startswith("--plan="):
            continue
        out.append(a)
    return out


MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


def supervise(child: list[str]) -> int:
    """Run the torchrun server and start it again when it dies; its exit code once it stops for good.

    A job that fails under torchrun ends every rank (service.run_on_rank); a fresh torchrun (a
    fresh rendezvous) is more dependable than torchrun's own --max-restarts, and the queue's
    interrupted-job policy then retries or fails the job. More than MAX_RESTARTS deaths within
    RESTART_WINDOW_S, or a SIGTERM/SIGINT, end the loop.
    """
    import signal
    import subprocess
    import time
    from collections import deque

    stopping = False
    proc: subprocess.Popen | None = None

    def forward(signum, frame):
        nonlocal stopping
        stopping = True
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    deaths: deque[float] = deque()
    while True:
        sys.stdout.flush()
        proc = subprocess.Popen(child)
        code = proc.wait()
        if stopping or code == 0:
            return code
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > RESTART_WINDOW_S:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            print(f"server: torchrun died {len(deaths)} times in {RESTART_WINDOW_S / 60:.0f} min; giving up", flush=True)
            return code
        print(f"server: torchrun exited {code}; starting it again ({len(deaths)} of {MAX_RESTARTS})", flush=True)


def apply(args, argv: list[str]) -> dict:
    """Plan, then either run the server under torchrun (several GPUs; exits when it ends) or set args in place.

    Returns the plan as a dict for /v1/info.
    """
    from wan22ctl.agent.inventory import inventory

    plan = plan_for_server(args.task, inventory().to_dict(), os.environ.get("WAN22_ATTENTION", "auto"),
                           os.environ.get("WAN22_COMPILE", "auto"), os.environ.get("WAN22_DTYPE", "bf16"))
    for line in plan.reasons:
        print(f"plan: {line}", flush=True)
    for line in plan.warnings:
        print(f"plan warning: {line}", flush=True)
    os.environ.update(plan.env)
    if plan.nproc > 1:
        torchrun = os.environ.get("WAN22_TORCHRUN", "torchrun")
        child = [torchrun, "--standalone", f"--nproc_per_node={plan.nproc}", "-m", "wan22ctl.agent",
                 *strip_plan_flag(argv), *server_flags(plan)]
        raise SystemExit(supervise(child))
    args.offload_model = plan.offload_model
    args.ulysses_size = plan.ulysses_size
    args.dit_fsdp, args.t5_fsdp = plan.dit_fsdp, plan.t5_fsdp
    args.convert_model_dtype, args.t5_cpu = plan.convert_model_dtype, plan.t5_cpu
    return {"gpus": list(plan.gpus), "nproc": plan.nproc, "reasons": list(plan.reasons),
            "warnings": list(plan.warnings), "est_peak_gpu_gb": plan.est_peak_gpu_gb, "dtype": plan.dtype,
            "offload_mode": plan.offload_mode, "resident_blocks": plan.resident_blocks}
