"""Bootstrap that runs upstream Wan2.2 `generate.py` with the kit's attention backend and speedups.

    python3 -m wan22ctl.agent.wanrun <generate.py arguments>
    torchrun --nproc_per_node=N -m wan22ctl.agent.wanrun <generate.py arguments>

It runs inside Wan's own Python (system python3 with torch, not the kit's venv; the launcher puts
only the kit's source folder on PYTHONPATH), so it imports the standard library and torch alone.
Steps: validate WAN22_ATTENTION and the speedup switches (one line, exit 2, before anything
loads); install the attention backend and speedups as import hooks; refuse WAN22_DTYPE=fp8 on a GPU
without FP8 tensor cores (exit 3); pick the backend for this rank's GPU and announce it, with the
weight dtype and offload mode, as an `attention` event; then execute `generate.py` from WAN22_DIR
(default: the current folder) as `__main__` with the given arguments. On exit it reports this
process's peak GPU memory as a `gpu_memory` event. Where no GPU is visible, upstream's first CUDA
call (`import wan` evaluates `torch.cuda.current_device()`) ends the run with one line naming the
fix (exit 3) instead of torch's traceback.

`hand_typed()` gives a `python generate.py ...` typed by hand in the container the same backend
and speedups: the image's `wan22ctl-generate.pth` calls it at interpreter start when the script is
generate.py. It says so in one line on stderr, and when upstream saves to its default place (a
name in the current folder, no --save_file) it moves the video to the outputs folder the host
mounts, never overwriting. WAN22_BOOTSTRAP=0 leaves upstream as it is (and the launcher sets it
for plans that run generate.py directly), except that an image with FlashAttention-4 alone, where
upstream's own attention cannot run, is refused at once.

The kit's own flags, taken out before generate.py parses the rest (also when typed by hand):
    --lora PATH[:SCALE]        a LoRA for the one-DiT task, or a Lightning-layout folder (repeatable)
    --lora_high PATH[:SCALE]   a LoRA for the A14B high-noise expert (repeatable; also --lora-high)
    --lora_low PATH[:SCALE]    a LoRA for the A14B low-noise expert (repeatable; also --lora-low)
    --sample_solver euler      the Lightning sampler (`agent.euler`; generate.py itself knows unipc and dpm++)
Each LoRA is checked against the checkpoint's config.json from its header (`wan22ctl.loras`) before
generate.py starts; a bad one is refused with exit 2. `agent.lora` merges them at load.
"""

from __future__ import annotations

import atexit
import os
import re
import runpy
import sys
import time

EXIT_NO_GPU = 3
_CUDA_WORDS = re.compile(r"cuda|nvidia|gpu", re.IGNORECASE)


def _generate_py() -> str:
    wan_dir = os.environ.get("WAN22_DIR") or os.getcwd()
    path = os.path.join(wan_dir, "generate.py")
    if not os.path.isfile(path) and os.path.isfile("generate.py"):
        path = os.path.abspath("generate.py")
    return path


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _resolve_backend(attention_name: str) -> dict | None:
    """Pick this rank's backend; its facts (None without a GPU). RuntimeError: an explicit backend
    this machine lacks."""
    import torch

    from wan22ctl.agent import attention, fp8, fp8attn, streaming

    if not torch.cuda.is_available():
        return None
    # Under torchrun each rank owns GPU LOCAL_RANK: resolve there, never create a context on GPU 0.
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if fp8.requested():
        problem = fp8.device_problem(device)
        if problem:
            raise RuntimeError(problem)
        problem = fp8attn.missing()
        if problem:
            raise RuntimeError(problem)
    backend = attention.resolve(attention_name, device)
    attention._resolved[device.index] = backend
    cap = torch.cuda.get_device_capability(device)
    return {"backend": backend, "capability": f"sm_{cap[0]}{cap[1]}", "gpu": torch.cuda.get_device_name(device),
            "dtype": "fp8" if fp8.requested() else "bf16", "fp8_attention": fp8attn.resolve(device),
            "offload": "blocks" if streaming.requested() else None,
            "resident_blocks": streaming.resident_blocks() if streaming.requested() else None}


def peak_memory() -> dict | None:
    """This process's peak GPU memory as the `gpu_memory` event and the sidecars report it."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return {"rank": _rank(), "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def _report_memory() -> None:
    from wan22ctl.protocol import emit

    row = peak_memory()
    if row is not None:
        emit("gpu_memory", **row)


def _flag(argv: list[str], name: str) -> str | None:
    """The value of generate.py flag `name` (`--name V` or `--name=V`) when given."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _sample_steps(argv: list[str]) -> int | None:
    """generate.py's --sample_steps when given (None: the task's default, 40 or 50)."""
    try:
        return int(_flag(argv, "--sample_steps"))
    except (TypeError, ValueError):
        return None  # absent, or generate.py rejects it itself


def _offload_model(argv: list[str]) -> bool | None:
    """generate.py's --offload_model as its str2bool reads it (None: not given or not a boolean)."""
    value = (_flag(argv, "--offload_model") or "").lower()
    return True if value in ("yes", "true", "t", "y", "1") else False if value in ("no", "false", "f", "n", "0") else None


LORA_FLAGS = {"--lora": None, "--lora_high": "high", "--lora_low": "low", "--lora-high": "high", "--lora-low": "low"}


def split_kit_flags(argv: list[str]) -> tuple[list[str], list, bool]:
    """(generate.py's argv, the LoRA specs, whether --sample_solver euler was asked)."""
    from wan22ctl.loras import LoraError, LoraSpec

    rest, specs, euler = [], [], False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in LORA_FLAGS:
            if not eq:
                if i + 1 >= len(argv):
                    raise LoraError(f"{name} needs a value: PATH[:SCALE]")
                value, i = argv[i + 1], i + 1
            specs.append(LoraSpec.parse(value, LORA_FLAGS[name]))
        elif name == "--sample_solver" and (value if eq else (argv[i + 1] if i + 1 < len(argv) else "")) == "euler":
            euler = True
            rest += ["--sample_solver", "unipc"]
            i += 0 if eq else 1
        else:
            rest.append(arg)
        i += 1
    return rest, specs, euler


def _install_loras(specs: list, argv: list[str]) -> None:
    from wan22ctl import catalog, loras
    from wan22ctl.agent import lora

    if not specs:
        return
    ckpt_dir = _flag(argv, "--ckpt_dir") or ""
    task = catalog.TASKS.get(_flag(argv, "--task") or "t2v-A14B")  # generate.py's default task
    checked = loras.prepare(specs, ckpt_dir, moe=task is not None and task.moe, flag="--lora")
    lora.install(checked)


def install(argv: list[str]) -> tuple[str, dict[str, bool], list[str]]:
    """Install the attention backend, speedups, Euler sampler and LoRA merge for the generate.py run
    `argv` describes; returns the requested backend, the speedup switches and generate.py's own
    arguments (the kit's flags taken out). ValueError: a bad switch or LoRA (before anything loads)."""
    from wan22ctl.agent import attention, euler, fp8, fp8attn, speedups, streaming

    argv, specs, use_euler = split_kit_flags(argv)
    name = attention.install()
    fp8.requested(), fp8attn.mode(), streaming.requested()  # validate WAN22_DTYPE / _FP8_ATTENTION / _OFFLOAD
    flags = speedups.install(steps=_sample_steps(argv), offload=_offload_model(argv))
    if flags["WAN22_STREAM_SAVE"] and _flag(argv, "--save_file"):
        from wan22ctl.agent import videosave

        videosave.use_directory(os.path.dirname(os.path.abspath(_flag(argv, "--save_file"))))
    euler.install(force=use_euler)
    _install_loras(specs, argv)
    return name, flags, argv


def no_gpu_message(exc: BaseException) -> str | None:
    """The kit's one line when `exc` is torch failing for want of a visible GPU, else None."""
    if not isinstance(exc, (RuntimeError, AssertionError)) or not _CUDA_WORDS.search(str(exc)):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"error: Wan2.2 needs a CUDA GPU and this container sees none (torch {torch.__version__}: {first}). "
            "Start the container with GPUs: GPUS=all (or device=0,1) on a host with the NVIDIA driver and "
            "the NVIDIA Container Toolkit; `wan22ctl doctor` checks both.")


def _run_generate(generate: str, argv: list[str]) -> None:
    sys.path.insert(0, os.path.dirname(generate))
    sys.argv = [generate, *argv]
    try:
        runpy.run_path(generate, run_name="__main__")
    except (RuntimeError, AssertionError) as exc:
        message = no_gpu_message(exc)
        if message is None:
            raise
        print(message, file=sys.stderr, flush=True)
        sys.exit(EXIT_NO_GPU)


def main(argv: list[str] | None = None) -> None:
    """Install the backend and speedups, then run generate.py with `argv` as its arguments."""
    from wan22ctl.protocol import emit

    argv = sys.argv[1:] if argv is None else argv
    try:
        name, flags, argv = install(argv)
    except ValueError as exc:  # a bad switch or LoRA: say which, before any weights load
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    generate = _generate_py()
    if not os.path.isfile(generate):
        print(f"error: {generate} not found; set WAN22_DIR to a Wan2.2 checkout", file=sys.stderr)
        sys.exit(3)
    try:
        backend = _resolve_backend(name)
    except RuntimeError as exc:  # an explicit backend, or FP8 tensor cores, that this machine lacks
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    if backend is not None and _rank() == 0:
        emit("attention", requested=name, speedups=flags, **backend)
    atexit.register(_report_memory)
    _run_generate(generate, argv)


# --------------------------------------------------------------------------- typed by hand


def _outputs_dir() -> str:
    from wan22ctl import paths

    return os.environ.get("WAN22_OUTPUT_DIR") or paths.CONTAINER_OUTPUT_DIR


def default_saves(folder: str, task: str, since: float) -> list[str]:
    """Videos upstream saved at its default place during this run: `{task}_{size}_...mp4` in `folder`
    (generate.py's name when --save_file is absent), written at or after `since`."""
    found = []
    for entry in os.scandir(folder):
        if (entry.is_file(follow_symlinks=False) and entry.name.startswith(task + "_") and entry.name.endswith(".mp4")
                and entry.stat().st_mtime >= since):
            found.append(entry.path)
    return sorted(found)


def move_to_outputs(path: str, outputs: str) -> str:
    """Move `path` into `outputs` under its own name (name-2, name-3, ... when taken); the new path."""
    import shutil

    from wan22ctl.agent import outputs as out

    stem = os.path.splitext(os.path.basename(path))[0]
    partial = os.path.join(outputs, f".partial-{os.getpid()}-{os.path.basename(path)}")
    shutil.copyfile(path, partial)  # another filesystem: copy, then the no-overwrite publish
    try:
        final = out.publish(partial, outputs, stem)
    except BaseException:
        os.unlink(partial)
        raise
    os.unlink(path)
    return final


def _place_default_saves(folder: str, task: str, since: float) -> None:
    outputs = _outputs_dir()
    if not os.path.isdir(outputs) or os.path.realpath(folder) == os.path.realpath(outputs):
        return
    for path in default_saves(folder, task, since):
        try:
            final = move_to_outputs(path, outputs)
        except OSError as exc:
            print(f"wan22ctl: could not move {path} to {outputs} ({exc}); it stays where upstream saved it",
                  file=sys.stderr, flush=True)
            continue
        print(f"wan22ctl: moved the video to {final} (OUTPUT_DIR on the host)", file=sys.stderr, flush=True)


def _excepthook_for_no_gpu(previous):
    def hook(kind, exc, tb):
        message = no_gpu_message(exc)
        if message is None:
            previous(kind, exc, tb)
        else:
            print(message, file=sys.stderr, flush=True)
    return hook


def only_flash_attn4() -> bool:
    """True when `flash_attn` is the bare namespace flash-attn-4 leaves (flash_attn.cute) without
    flash-attn 2: upstream's probe `import flash_attn` then succeeds, yet its first attention call
    (and `from flash_attn import flash_attn_varlen_func` in wan/utils/prompt_extend.py) fails."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("flash_attn")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin in (None, "namespace")


def hand_typed() -> None:
    """What `python generate.py ...` typed in the container gets from wan22ctl-generate.pth."""
    if getattr(sys, "_wan22ctl_hand_typed", False):
        return
    sys._wan22ctl_hand_typed = True
    if os.environ.get("WAN22_BOOTSTRAP") == "0":
        if only_flash_attn4():  # fail now, not after the weights have loaded
            print("error: WAN22_BOOTSTRAP=0 runs Wan2.2's own attention, which needs flash-attn 2; this image "
                  "has FlashAttention-4 only (flash_attn.cute). Leave WAN22_BOOTSTRAP unset (the kit's "
                  "backends), or build the image with FLASH_ATTN=wheel or FLASH_ATTN=build.", file=sys.stderr, flush=True)
            os._exit(3)
        return
    argv = sys.argv[1:]
    try:
        name, flags, argv = install(argv)
        sys.argv[1:] = argv  # generate.py's parser sees its own flags only
        backend = _resolve_backend(name)
    except ImportError:  # no torch in this Python (the kit's test image): nothing to install
        name = None
    except (ValueError, RuntimeError) as exc:  # a bad switch (2) or an explicit backend not here (3)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        # SystemExit is fatal while site runs .pth files ("Failed to import the site module");
        # nothing has started yet that would need a cleaner exit.
        os._exit(2 if isinstance(exc, ValueError) else 3)
    if name is not None:
        sys.excepthook = _excepthook_for_no_gpu(sys.excepthook)
    if _rank() != 0:
        return
    if name is not None:
        on = [k.removeprefix("WAN22_").lower() for k, v in flags.items() if v]
        where = f"{backend['backend']} on {backend['gpu']} ({backend['capability']})" if backend else "picked per GPU at first use"
        print(f"wan22ctl: attention {where}, WAN22_ATTENTION={name}; speedups: {', '.join(on) or 'none'} "
              "(WAN22_BOOTSTRAP=0 runs upstream unchanged)", file=sys.stderr, flush=True)
    if _flag(argv, "--save_file") is None:
        task = _flag(argv, "--task") or "t2v-A14B"  # generate.py's default task
        atexit.register(_place_default_saves, os.getcwd(), task, time.time() - 1)


if __name__ == "__main__":
    main()
