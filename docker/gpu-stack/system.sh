#!/usr/bin/env bash
# System packages of the GPU stack (Debian/Ubuntu bases): Python with pip, venv and headers (a
# plain base has none; CUDA bases have some), git, ffmpeg (s2v merges audio with it), the
# libraries OpenCV and librosa load, and the compilers torch.compile's Triton launcher and a
# flash-attn build need. Then the one Python requirement no package states for us: 3.10+
# (flash-attn-4 requires it; torch 2.8 requires 3.9).
set -euo pipefail
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    python3 python3-pip python3-venv python3-dev gcc g++ ninja-build \
    git ca-certificates ffmpeg libgl1 libglib2.0-0 libsndfile1
rm -rf /var/lib/apt/lists/*
python3 - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"error: the base image's python3 is {sys.version.split()[0]}; the GPU stack needs 3.10+ "
             "(flash-attn-4; torch 2.8 needs 3.9). Use a newer BASE_IMAGE, e.g. debian:bookworm or ubuntu:22.04.")
print(f"python3 {sys.version.split()[0]}")
PY
