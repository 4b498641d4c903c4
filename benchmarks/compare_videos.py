"""Frame-by-frame agreement of two videos (e.g. the same seed on 1 GPU and under torchrun).

    python3 benchmarks/compare_videos.py a.mp4 b.mp4

Prints frame count, PSNR (dB) over all frames and the worst frame, mean absolute difference in
8-bit levels, and the same figures for `a` against itself reversed in time: a control that shows
what "different content" reads as on these videos (random-weight videos are noise-like). Writes
compare-videos.json under $OUT (or /tmp). Needs imageio with its ffmpeg plugin.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np


def frames(path: str) -> np.ndarray:
    import imageio.v2 as imageio

    reader = imageio.get_reader(path, "ffmpeg")
    try:
        return np.stack([np.asarray(f, dtype=np.float64) for f in reader])
    finally:
        reader.close()


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    psnr = [99.0 if m == 0 else 10 * math.log10(255.0**2 / m) for m in mse]
    return {"psnr_db": round(10 * math.log10(255.0**2 / max(mse.mean(), 1e-12)), 2), "worst_frame_psnr_db": round(min(psnr), 2),
            "mean_abs_diff": round(float(np.abs(a - b).mean()), 3)}


def main() -> None:
    a, b = frames(sys.argv[1]), frames(sys.argv[2])
    if a.shape != b.shape:
        raise SystemExit(f"shapes differ: {a.shape} vs {b.shape}")
    result = {"a": sys.argv[1], "b": sys.argv[2], "frames": len(a), "shape": list(a.shape[1:]),
              "a_vs_b": agreement(a, b), "control_a_vs_a_reversed": agreement(a, a[::-1])}
    print(json.dumps(result, indent=1))
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "compare-videos.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
