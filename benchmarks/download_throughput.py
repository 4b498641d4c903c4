"""Download throughput: `wan22ctl download --local` against `hf download`, same server, same files.

    .venv/bin/python benchmarks/download_throughput.py [--mb 320] [--rounds 3] [--append]

Builds a Wan2.2-TI2V-5B-shaped repository (T5 .pth, VAE, three DiT shards, tokenizer folder;
about --mb MiB in all), serves it with olah offline on localhost (the test server, without the
test proxy), then runs both tools into fresh folders, alternating which goes first, `--rounds`
times. Both use 8 parallel workers. `wan22ctl` also hashes every file (sha256) and writes its
manifest inside the timed run; `hf download` does not verify. Prints a table; `--append` adds a
section to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hubserver import _json, _payload, build_repo, run_olah  # noqa: E402

REPO_ID = "Wan-AI/Wan2.2-TI2V-5B"


def fixture(total_mb: int) -> dict[str, bytes]:
    """Real TI2V-5B file names, sizes scaled so the whole repo is about `total_mb` MiB."""
    mib = 1024 * 1024
    shard = total_mb * mib * 22 // 100
    files = {
        "models_t5_umt5-xxl-enc-bf16.pth": _payload("bench-t5", total_mb * mib * 26 // 100),
        "Wan2.2_VAE.pth": _payload("bench-vae", total_mb * mib * 8 // 100),
        "google/umt5-xxl/spiece.model": _payload("bench-spiece", 4 * 1024 * 1024),
        "google/umt5-xxl/tokenizer.json": _json({"model": {"type": "Unigram"}}),
        "google/umt5-xxl/tokenizer_config.json": _json({}),
        "google/umt5-xxl/special_tokens_map.json": _json({}),
        "config.json": _json({"dim": 3072}),
        "diffusion_pytorch_model.safetensors.index.json": _json({"weight_map": {}}),
    }
    for i in range(1, 4):
        files[f"diffusion_pytorch_model-{i:05d}-of-00003.safetensors"] = _payload(f"bench-dit{i}", shard)
    return files


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return elapsed


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=320, help="approximate repo size in MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--append", action="store_true", help="append the result to BENCHMARKS.md")
    args = ap.parse_args()

    bin_dir = Path(sys.executable).parent
    hf_cli, wan = str(bin_dir / "hf"), [sys.executable, "-m", "wan22ctl"]
    work = Path(tempfile.mkdtemp(prefix="wan22ctl-bench-"))
    try:
        files = fixture(args.mb)
        build_repo(work / "mirrors", REPO_ID, files)
        with run_olah(work / "olah", work / "mirrors") as endpoint:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "WAN22", "CHECKPOINT_DIR"))}
            base.update(HF_ENDPOINT=endpoint, HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
            times: dict[str, list[float]] = {"hf download": [], "wan22ctl download --local": []}
            size = 0
            for rnd in range(args.rounds):
                order = list(times) if rnd % 2 == 0 else list(reversed(times))
                for tool in order:
                    dest = work / f"out-{rnd}-{tool.split()[0]}"
                    env = dict(base, HF_HOME=str(work / f"hf-home-{rnd}-{tool.split()[0]}"))
                    if tool == "hf download":
                        cmd = [hf_cli, "download", REPO_ID, "--local-dir", str(dest), "--max-workers", "8"]
                        target = dest
                    else:
                        env.update(CHECKPOINT_DIR=str(dest), VIDEOX_MODELS_DIR=str(dest / "videox"))
                        cmd = [*wan, "download", "ti2v-5b", "--local", "--workers", "8", "--json"]
                        target = dest / "Wan2.2-TI2V-5B"
                    times[tool].append(timed(cmd, env))
                    size = tree_bytes(target)
                    shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = size / 1024 / 1024
    rows = []
    for tool, ts in times.items():
        med = statistics.median(ts)
        rows.append((tool, med, mib / med, ", ".join(f"{t:.2f}" for t in ts)))
    ratio = statistics.median(times["hf download"]) / statistics.median(times["wan22ctl download --local"])
    header = f"{'tool':<28} {'median s':>9} {'MiB/s':>8}   runs (s)"
    lines = [header] + [f"{t:<28} {m:>9.2f} {r:>8.1f}   {runs}" for t, m, r, runs in rows]
    lines.append(f"throughput ratio wan22ctl / hf download = {ratio:.2f} (>= 1.00: no slower)")
    print(f"{mib:.0f} MiB in {len(files) + 1} files, olah offline on localhost, {args.rounds} rounds")
    print("\n".join(lines))

    if args.append:
        bench = REPO / "BENCHMARKS.md"
        if not bench.exists():
            bench.write_text("# Benchmarks\n\nMeasured numbers, each with its machine, date and command.\n")
        cpu = ""
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        section = [
            "", f"## Download throughput: wan22ctl download --local vs hf download ({time.strftime('%Y-%m-%d', time.gmtime())})",
            "",
            f"- machine: {platform.node() or 'host'}, {os.cpu_count()} CPUs ({cpu or platform.machine()}), "
            f"Linux {platform.release()}, Python {platform.python_version()}; other jobs shared the CPUs",
            f"- server: olah 0.5.4 offline on localhost serving a {mib:.0f} MiB TI2V-5B-shaped repo "
            f"({len(files) + 1} files); huggingface_hub {_hf_version()}",
            f"- command: `.venv/bin/python benchmarks/download_throughput.py --mb {args.mb} --rounds {args.rounds} --append`",
            "- wan22ctl's time includes sha256 of every file and the manifest; `hf download` does not verify",
            "", "```", *lines, "```", "",
        ]
        with open(bench, "a") as f:
            f.write("\n".join(section))
        print(f"appended to {bench}")


def _hf_version() -> str:
    try:
        import huggingface_hub

        return huggingface_hub.__version__
    except ImportError:
        return "?"


if __name__ == "__main__":
    main()
