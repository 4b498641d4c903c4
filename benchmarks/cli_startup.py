"""How long `wan22ctl` takes to start: `--help`, `config --json` and `python -c pass` for scale.

The CLI imports docker, huggingface_hub and rich inside the commands that need them (a test
checks that `--help` imports none of them); this measures what that buys. Each command runs
`--runs` times in a fresh process; the table gives the best and the median wall time.

    python3 benchmarks/cli_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "wan22ctl --help": [sys.executable, "-m", "wan22ctl", "--help"],
    "wan22ctl config --json": [sys.executable, "-m", "wan22ctl", "config", "--json"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    print(f"{'command':26} {'best s':>8} {'median s':>9}   runs={args.runs}")
    with tempfile.TemporaryDirectory() as cwd:  # no .env there: defaults only
        for name, argv in COMMANDS.items():
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                times.append(time.perf_counter() - start)
            print(f"{name:26} {min(times):8.3f} {statistics.median(times):9.3f}")


if __name__ == "__main__":
    main()
