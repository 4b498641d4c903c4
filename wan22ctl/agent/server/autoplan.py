"""`--plan auto`: the server decides its GPUs and memory flags with `generate`'s own launch plan.

The container's GPU inventory (nvidia-smi) and free host RAM go through
`plan.launch.plan_launch()` for the server's task at its default size, the same decision a
`wan22ctl generate` of that task would get: how many GPUs, torchrun or one process, Ulysses,
FSDP, `offload_model`, `t5_cpu`, `convert_model_dtype`, CUDA_VISIBLE_DEVICES and the attention
backend. With several GPUs the server re-executes itself under `torchrun`.
"""

from __future__ import annotations

import os
import sys

from wan22ctl.errors import EnvError


def plan_for_server(task: str, inventory: dict, attention: str):
    """The LaunchPlan `generate` would make for this task at its default size on this machine."""
    from wan22ctl.plan.inventory import Gpu
    from wan22ctl.plan.launch import build_request, plan_launch

    gpus = [Gpu(**g) for g in inventory["gpus"]]
    if not gpus:
        raise EnvError(f"no GPU visible to the server ({inventory.get('error') or 'nvidia-smi lists none'})",
                       fix="start the container with GPUs (GPUS setting), or pass explicit flags instead of --plan auto")
    request = build_request(task, "(resident server)", seed=0)
    return plan_launch(request, gpus, inventory.get("host_ram_gb"), run_id="server", attention=attention)


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


def apply(args, argv: list[str]) -> dict:
    """Plan, then either re-exec under torchrun (several GPUs; does not return) or set args in place.

    Returns the plan as a dict for /v1/info.
    """
    from wan22ctl.agent.inventory import inventory

    plan = plan_for_server(args.task, inventory(), os.environ.get("WAN22_ATTENTION", "auto"))
    for line in plan.reasons:
        print(f"plan: {line}", flush=True)
    for line in plan.warnings:
        print(f"plan warning: {line}", flush=True)
    os.environ.update(plan.env)
    if plan.nproc > 1:
        torchrun = os.environ.get("WAN22_TORCHRUN", "torchrun")
        child = [torchrun, "--standalone", f"--nproc_per_node={plan.nproc}", "-m", "wan22ctl.agent",
                 *strip_plan_flag(argv), *server_flags(plan)]
        sys.stdout.flush()
        os.execvp(child[0], child)
    args.offload_model = plan.offload_model
    args.ulysses_size = plan.ulysses_size
    args.dit_fsdp, args.t5_fsdp = plan.dit_fsdp, plan.t5_fsdp
    args.convert_model_dtype, args.t5_cpu = plan.convert_model_dtype, plan.t5_cpu
    return {"gpus": list(plan.gpus), "nproc": plan.nproc, "reasons": list(plan.reasons),
            "warnings": list(plan.warnings), "est_peak_gpu_gb": plan.est_peak_gpu_gb}
