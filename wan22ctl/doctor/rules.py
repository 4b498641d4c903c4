"""Pure verdicts: measured facts in, a status with its reason out. No Docker, no network.

Every function here judges one fact against the catalog (compute capability against the image's
architecture list, driver against the image's CUDA, GPU memory and host RAM against the task's
plan, free disk against what is still to download, /dev/shm, memlock) and returns a `Verdict`.
The checks in `wan22ctl.doctor.checks` gather the facts and wrap verdicts into results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wan22ctl import catalog
from wan22ctl.doctor.result import FAIL, PASS, WARN
from wan22ctl.plan.inventory import Gpu


@dataclass(frozen=True)
class Verdict:
    """A status, the requirement it was judged against, and the fix when it is not PASS."""

    status: str
    requirement: str
    fix: str | None = None
    note: str = ""  # added to the measured value ("runs the 8.0 kernels")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


# ------------------------------------------------------------------------------ architecture


def parse_arch_list(value: str) -> list[tuple[str, bool]]:
    """'8.9;9.0+PTX' -> [('8.9', False), ('9.0', True)]; spaces or ';' separate entries."""
    out = []
    for item in re.split(r"[;\s]+", value.strip().strip('"')):
        if item:
            out.append((item.removesuffix("+PTX"), item.endswith("+PTX")))
    return out


def arch_verdict(compute_cap: str, arch_list: str) -> Verdict:
    """Whether the image has kernels for a GPU of this compute capability.

    A cubin built for X.Y runs on X.Z with Z >= Y (same major); PTX for an older arch is
    JIT-compiled on first use (slow start, works); anything else has no kernels at all.
    """
    archs = parse_arch_list(arch_list)
    requirement = f"compute capability >= {catalog.MIN_COMPUTE_CAPABILITY} and in the image's list {arch_list}"
    cap = version_tuple(compute_cap)
    rebuild = (f'set TORCH_CUDA_ARCH_LIST="{_with_arch(arch_list, compute_cap)}" in .env, '
               "then `wan22ctl build`")
    if cap < version_tuple(catalog.MIN_COMPUTE_CAPABILITY):
        return Verdict(FAIL, requirement,
                       f"use a GPU of compute capability {catalog.MIN_COMPUTE_CAPABILITY} or newer "
                       "(A100, L40S, RTX 4090, H100); flash-attn and bf16 need Ampere or newer")
    if any(version_tuple(a) == cap for a, _ in archs):
        return Verdict(PASS, requirement)
    same_major = [a for a, _ in archs if version_tuple(a)[0] == cap[0] and version_tuple(a) < cap]
    if same_major:
        return Verdict(PASS, requirement, note=f"runs the {max(same_major, key=version_tuple)} kernels")
    ptx = [a for a, is_ptx in archs if is_ptx and version_tuple(a) < cap]
    if ptx:
        return Verdict(WARN, requirement, rebuild, note=f"only {max(ptx, key=version_tuple)}+PTX: JIT-compiled on first use")
    return Verdict(FAIL, requirement, rebuild, note=f"no sm_{compute_cap.replace('.', '')} kernels in the image")


def _with_arch(arch_list: str, compute_cap: str) -> str:
    items = [a + ("+PTX" if p else "") for a, p in parse_arch_list(arch_list)]
    items.append(compute_cap)
    return ";".join(sorted(set(items), key=lambda s: version_tuple(s.removesuffix("+PTX"))))


# ------------------------------------------------------------------------------ driver


def driver_verdict(driver: str, cuda: str) -> Verdict:
    """The host driver against the CUDA version the image was built with."""
    major_minor = ".".join(cuda.split(".")[:2])
    needed = catalog.CUDA_MIN_DRIVER.get(major_minor)
    floor = catalog.CUDA_MAJOR_MIN_DRIVER.get(cuda.split(".")[0])
    if needed is None:
        known = sorted(catalog.CUDA_MIN_DRIVER, key=version_tuple)
        # A newer toolkit than the table knows needs at least the newest driver we know of.
        newer = version_tuple(major_minor) > version_tuple(known[-1])
        needed = catalog.CUDA_MIN_DRIVER[known[-1]] if newer else (floor or "")
    requirement = f"driver >= {needed} for CUDA {major_minor}"
    fix = f"upgrade the NVIDIA driver to {needed} or newer (e.g. `sudo apt install nvidia-driver-{needed.split('.')[0]}`)"
    if not needed:
        return Verdict(WARN, f"a driver table entry for CUDA {cuda}", "rebuild on a CUDA 12.x base image")
    if version_tuple(driver) >= version_tuple(needed):
        return Verdict(PASS, requirement)
    if floor and version_tuple(driver) >= version_tuple(floor) and cuda.split(".")[0] == major_minor.split(".")[0]:
        return Verdict(WARN, requirement, fix,
                       note=f"runs through CUDA minor-version compatibility (>= {floor}); PTX JIT will fail")
    return Verdict(FAIL, requirement, fix)


# ------------------------------------------------------------------------------ GPU memory and host RAM
# Judged against the launch plan `generate` would use (`wan22ctl.plan.launch`), not a rule of our own.


def doctor_request(task: str, dtype: str = "bf16"):
    """A representative request for `task`: its default size and frames (an i2v image, s2v's audio and
    animate's folder are assumed)."""
    from wan22ctl.plan.launch import build_request, placeholder_inputs

    prompt = "doctor" if catalog.TASKS[task].takes_prompt else None
    dtype = dtype if catalog.TASKS[task].moe else "bf16"
    return build_request(task, prompt, seed=0, dtype=dtype, file_exists=lambda _path: True, probe_inputs=False,
                         **placeholder_inputs(task))


def launch_plan(task: str, gpus: list[Gpu], host_ram_gb: float | None, dtype: str = "bf16"):
    """The plan `generate --task T` would make on these GPUs and this much free host RAM."""
    from wan22ctl.plan.launch import plan_launch

    return plan_launch(doctor_request(task, dtype), gpus, host_ram_gb, run_id="doctor")


def _same_card(gpu: Gpu, count: int) -> list[Gpu]:
    return [Gpu(i, gpu.name, gpu.memory_gb, gpu.compute_cap, gpu.driver) for i in range(count)]


def vram_verdict(plan) -> Verdict:
    """The plan's per-GPU peak estimate against the smallest GPU it uses; on failure, what would fit."""
    mode = "one GPU" if plan.nproc == 1 else f"each of {plan.nproc} GPUs (torchrun, FSDP + Ulysses)"
    requirement = f"about {plan.est_peak_gpu_gb:g} GB on {mode} for {plan.task} at {plan.request['size']}"
    if plan.fits:
        return Verdict(PASS, requirement)
    # The plan's smallest card, as the plan recorded it (the inventory may be gone by now).
    card = Gpu(0, plan.gpu_names[0] if plan.gpu_names else "GPU", plan.gpu_memory_gb, "", "")
    fix = "use GPUs with more memory"
    # The smallest count of this card (up to one 8-GPU host) whose plan fits.
    for n in catalog.ulysses_degrees(catalog.TASKS[plan.task].num_heads, 8):
        bigger = launch_plan(plan.task, _same_card(card, n), None) if n > plan.nproc else None
        if bigger is not None and bigger.fits:
            fix = (f"run it on several GPUs: {n} x {card.name} (about {bigger.est_peak_gpu_gb:g} GB each) fits "
                   "(torchrun --dit_fsdp --t5_fsdp --ulysses_size N; GPUS=all)")
            break
    if catalog.TASKS[plan.task].moe:
        from wan22ctl.plan import lowmem

        if lowmem.placement(card.memory_gb, "832*480", plan.dtype).fits:
            fix += "; or a 480P size (--size 832*480), which fits this GPU with the DiT blocks streamed"
        if launch_plan("ti2v-5B", [card], None).fits:
            fix += "; or --task ti2v-5B, which fits this GPU"
    return Verdict(FAIL, requirement, fix)


def host_ram_verdict(plan, total_gb: float, available_gb: float) -> Verdict:
    """Host RAM against what the plan's ranks load on the CPU; FAIL below total, WARN below available."""
    requirement = (f"about {plan.host_ram_need_gb:g} GB for {plan.nproc} rank(s) of {plan.task} "
                   "(each loads the weights on the CPU first)")
    if total_gb < plan.host_ram_need_gb:
        fix = "add host RAM (or swap), use fewer GPUs (--gpus N), or a smaller task (ti2v-5B)"
        return Verdict(FAIL, requirement, fix)
    if available_gb < plan.host_ram_need_gb:
        return Verdict(WARN, requirement, "stop other memory users before generating")
    return Verdict(PASS, requirement)


# Left beside the page-locked copies for the OS, the Python processes and the page cache.
PINNED_SPARE_GB = 8.0


def pinned_ram_verdict(plan, total_gb: float, available_gb: float) -> Verdict:
    """The plan's page-locked host copies (experts, T5; they cannot be swapped out) against host RAM."""
    need = getattr(plan, "pinned_host_gb", 0.0) or 0.0
    if not need:
        return Verdict(PASS, f"none: {plan.task}'s weights stay on the GPU(s)")
    requirement = (f"about {need:g} GB page-locked for the run ({plan.dtype} experts, "
                   f"offload {plan.offload_mode}) + {PINNED_SPARE_GB:g} GB spare; memlock unlimited")
    if total_gb < need + PINNED_SPARE_GB:
        fix = "add host RAM" + (", or --dtype fp8 (halves the expert copies; sm_89/sm_90)" if plan.dtype == "bf16" else "")
        return Verdict(FAIL, requirement, fix)
    if available_gb < need:
        return Verdict(WARN, requirement, "stop other memory users before generating")
    return Verdict(PASS, requirement)


# ------------------------------------------------------------------------------ disk, shm, memlock


def disk_verdict(free_gb: float, still_needed_gb: float, path: str) -> Verdict:
    requirement = f"{still_needed_gb:g} GB free for the models still to download"
    if free_gb >= still_needed_gb:
        return Verdict(PASS, requirement)
    return Verdict(FAIL, requirement,
                   f"free {still_needed_gb - free_gb:.1f} GB at {path}, or point CHECKPOINT_DIR at a larger disk")


def shm_verdict(shm_gb: float, ranks: int) -> Verdict:
    requirement = f">= {catalog.MIN_SHM_GB:g} GB (NCCL between GPUs, torch workers)"
    if shm_gb >= catalog.MIN_SHM_GB:
        return Verdict(PASS, requirement)
    # The kit container shares the host's IPC namespace, so Docker's --shm-size does not apply.
    fix = "enlarge the host's /dev/shm: `sudo mount -o remount,size=16G /dev/shm`"
    return Verdict(FAIL if ranks > 1 else WARN, requirement, fix)


def memlock_verdict(limit_kb: str) -> Verdict:
    """`ulimit -l` output: 'unlimited' passes; a cap makes NCCL/pinned memory fall back (slower)."""
    requirement = "unlimited (pinned memory for NCCL and CUDA host transfers)"
    if limit_kb.strip() == "unlimited":
        return Verdict(PASS, requirement)
    return Verdict(WARN, requirement,
                   "set MEMLOCK=unlimited in .env and `wan22ctl up --recreate` (the host must allow it: "
                   "LimitMEMLOCK=infinity in docker.service)")
