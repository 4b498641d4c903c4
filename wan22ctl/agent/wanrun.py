"""Bootstrap that runs upstream Wan2.2 `generate.py` with the kit's attention backend and speedups.

    python3 -m wan22ctl.agent.wanrun <generate.py arguments>
    torchrun --nproc_per_node=N -m wan22ctl.agent.wanrun <generate.py arguments>

It runs inside Wan's own Python (system python3 with torch, not the kit's venv; the launcher puts
only the kit's source folder on PYTHONPATH), so it imports the standard library and torch alone.
Steps: validate WAN22_ATTENTION and the speedup switches (one line, exit 2, before anything
loads); install the attention backend and speedups as import hooks; pick the backend for this
rank's GPU and announce it as an `attention` event; then execute `generate.py` from WAN22_DIR
(default: the current folder) as `__main__` with the given arguments. On exit it reports this
process's peak GPU memory as a `gpu_memory` event.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def _generate_py() -> str:
    wan_dir = os.environ.get("WAN22_DIR") or os.getcwd()
    path = os.path.join(wan_dir, "generate.py")
    if not os.path.isfile(path) and os.path.isfile("generate.py"):
        path = os.path.abspath("generate.py")
    return path


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _announce(attention_name: str, flags: dict[str, bool]) -> None:
    import torch

    from wan22ctl.agent import attention
    from wan22ctl.agent.events import emit

    if not torch.cuda.is_available():
        return
    # Under torchrun each rank owns GPU LOCAL_RANK: resolve there, never create a context on GPU 0.
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    backend = attention.resolve(attention_name, device)
    attention._resolved[device.index] = backend
    if _rank() == 0:
        cap = torch.cuda.get_device_capability(device)
        emit("attention", requested=attention_name, backend=backend, capability=f"sm_{cap[0]}{cap[1]}",
             gpu=torch.cuda.get_device_name(device), speedups=flags)


def peak_memory() -> dict | None:
    """This process's peak GPU memory as the `gpu_memory` event and the sidecars report it."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return {"rank": _rank(), "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def _report_memory() -> None:
    from wan22ctl.agent.events import emit

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


def main(argv: list[str] | None = None) -> None:
    """Install the backend and speedups, then run generate.py with `argv` as its arguments."""
    argv = sys.argv[1:] if argv is None else argv
    from wan22ctl.agent import attention, speedups

    try:
        name = attention.install()
        flags = speedups.install(steps=_sample_steps(argv), offload=_offload_model(argv))
    except ValueError as exc:  # a bad switch: say which, before any weights load
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    generate = _generate_py()
    if not os.path.isfile(generate):
        print(f"error: {generate} not found; set WAN22_DIR to a Wan2.2 checkout", file=sys.stderr)
        sys.exit(3)
    try:
        _announce(name, flags)
    except RuntimeError as exc:  # an explicit backend that this machine lacks
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    atexit.register(_report_memory)
    wan_dir = os.path.dirname(generate)
    sys.path.insert(0, wan_dir)
    sys.argv = [generate, *argv]
    runpy.run_path(generate, run_name="__main__")


if __name__ == "__main__":
    main()
