"""Build time and layer size per stage of the image with its GPU stack.

    python3 benchmarks/image_build.py [--no-cache] [--tag TAG] [--target inference] [--build-arg K=V ...]

Builds ./Dockerfile with the classic builder (`docker build` with DOCKER_BUILDKIT=0, what docker-py
uses), timestamps every output line, and prints a table: each stage of the build (the source
stage, system packages, torch, Wan2.2's requirements, attention kernels, Wan2.2's tree, the kit's
layers), its seconds (from its first step to the next stage's first step, the layer commit
included) and the size of the layers it left. Defaults are CI's configuration: the Debian test base
(no CUDA image), torch from PyPI, the stand-in Wan2.2 tree, FLASH_ATTN=none. Cold: --no-cache
(every layer rebuilt, every package downloaded: the image keeps no pip cache). Warm: the same
command again (every layer from Docker's cache). The load average is printed beside the numbers,
because the build shares its CPUs with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CI_ARGS = {
    "BASE_IMAGE": "wan22ctl-test/debian:bookworm", "GPU_STACK": "true", "FLASH_ATTN": "none",
    "TORCH_INDEX_URL": "https://pypi.org/simple", "WAN22_SOURCE": "tests/standins/wan2.2",
}
# (stage, words that mark its steps: in the build's instruction or in `docker history`), in build
# order; unmatched steps join the stage before.
STAGES = (
    ("source stages (clone or local)", ("get-source.sh",)),
    ("system packages (apt)", ("system.sh",)),
    ("torch + CUDA wheels", ("torch.sh",)),
    ("Wan2.2 requirements", ("wan-requirements.sh",)),
    ("attention (FlashAttention-4)", ("attention.sh",)),
    ("Wan2.2 tree", ("COPY --from=wan22-source /opt/wan22ctl-source/", " in /workspace/wan2.2/ ")),
    ("kit (venv, hook, links)", ("wan22ctl-venv",)),
    ("VideoX-Fun requirements", ("videox-requirements.sh",)),
    ("VideoX-Fun tree", ("COPY --from=videox-source /opt/wan22ctl-source/", " in /workspace/VideoX-Fun/ ")),
)
STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def stage_of(instruction: str, current: str) -> str:
    for name, words in STAGES:
        if any(word in instruction for word in words):
            return name
    return current


def build(tag: str, target: str, args: dict[str, str], no_cache: bool) -> list[tuple[float, str]]:
    """Run the build; (timestamp, line) for every output line. Exits on a failed build."""
    cmd = ["docker", "build", "-t", tag, "--target", target]
    cmd += ["--no-cache"] if no_cache else []
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    proc = subprocess.Popen(cmd + [str(REPO)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DOCKER_BUILDKIT": "0"})
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    if proc.wait() != 0:
        sys.stderr.write("\n".join(text for _, text in lines[-30:]) + "\n")
        sys.exit(f"docker build failed (exit {proc.returncode})")
    lines.append((time.time(), "(end)"))
    return lines


def stage_times(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per stage: each step runs from its `Step N/M` line to the next one (or the end)."""
    steps = [(t, m.group(3)) for t, text in lines if (m := STEP_RE.match(text))]
    times: dict[str, float] = {}
    current = STAGES[0][0]
    for i, (start, instruction) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else lines[-1][0]
        current = stage_of(instruction, current)
        times[current] = times.get(current, 0.0) + (end - start)
    return times


def stage_sizes(tag: str) -> tuple[dict[str, int], int]:
    """Bytes per stage from `docker history` of the final image (its own stage's layers) and the base's."""
    out = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{json .}}", tag],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()][::-1]  # oldest first
    image = json.loads(subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True,
                                      check=True).stdout)[0]
    sizes: dict[str, int] = {}
    base = 0
    current = None
    for row in rows:
        created = row["CreatedBy"]
        size = _bytes(row["Size"])
        named = stage_of(created, "")
        if named:
            current = named
        if current is None:
            base += size
        else:
            sizes[current] = sizes.get(current, 0) + size
    return sizes, base if base else image["Size"] - sum(sizes.values())


def _bytes(text: str) -> int:
    m = re.match(r"([\d.]+)\s*([kMG]?B)", text)
    if not m:
        return 0
    return int(float(m.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cache", action="store_true", help="cold: rebuild every layer")
    parser.add_argument("--tag", default="wan22ctl-bench/gpu:latest")
    parser.add_argument("--target", default="inference")
    parser.add_argument("--build-arg", action="append", default=[], help="K=V, over CI's defaults")
    opts = parser.parse_args()
    args = dict(CI_ARGS)
    args.update(kv.split("=", 1) for kv in opts.build_arg)
    load_before = os.getloadavg()
    started = time.time()
    lines = build(opts.tag, opts.target, args, opts.no_cache)
    total = time.time() - started
    load_after = os.getloadavg()
    times = stage_times(lines)
    sizes, base = stage_sizes(opts.tag)
    print(f"{'cold (--no-cache)' if opts.no_cache else 'warm'} build of {opts.tag} (target {opts.target}), "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print(f"build arguments: {' '.join(f'{k}={v}' for k, v in args.items())}")
    print(f"{'stage':32} {'seconds':>8} {'layers MB':>10}")
    for name, _ in STAGES:
        print(f"{name:32} {times.get(name, 0.0):8.1f} {sizes.get(name, 0) / 1e6:10.0f}")
    print(f"{'base image':32} {'':>8} {base / 1e6:10.0f}")
    image_size = sum(sizes.values()) + base
    print(f"{'total':32} {total:8.1f} {image_size / 1e6:10.0f}")


if __name__ == "__main__":
    main()
