"""What a fork costs a process that holds page-locked weights (the expert swap's host copies).

upstream's save_video writes the MP4 through imageio-ffmpeg, which starts ffmpeg with a
`preexec_fn`, i.e. fork() then exec(). Linux copies DMA-pinned pages into the child at fork time.
This times one such spawn (`true`, as imageio-ffmpeg starts it) with `--gb` GB of registered host
memory made two ways, in one process:

    torch-empty     torch.empty + cudaHostRegister (the kit's host copies before this benchmark)
    kit             agent.hostmem.host_buffer: anonymous mmap with MADV_DONTFORK, then registered

    python3 benchmarks/fork_bench.py --gb 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wan22ctl.agent import hostmem  # noqa: E402


def spawn_seconds() -> float:
    start = time.perf_counter()
    subprocess.run(["true"], preexec_fn=os.setpgrp, check=True)  # imageio-ffmpeg's way (prevent_sigint)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=30.0)
    args = parser.parse_args()
    nbytes = int(args.gb * 1e9)
    torch.cuda.init()
    rows = [("none", 0.0, spawn_seconds())]
    for name in ("torch-empty", "kit"):
        if name == "kit":
            flat, pinned = hostmem.host_buffer(nbytes)
        else:
            flat = torch.empty(nbytes, dtype=torch.uint8)
            pinned = hostmem.register(flat)
        flat.fill_(1)
        rows.append((name + ("" if pinned else " (not pinned)"), args.gb, spawn_seconds()))
        torch.cuda.cudart().cudaHostUnregister(flat.data_ptr())
        del flat
    print(f"{'host buffer':<24} {'GB':>6} {'fork+exec s':>12}")
    for name, gb, secs in rows:
        print(f"{name:<24} {gb:>6.1f} {secs:>12.3f}")


if __name__ == "__main__":
    main()
