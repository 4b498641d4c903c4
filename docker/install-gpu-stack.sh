#!/usr/bin/env bash
# CUDA-only layer of the inference image: system libraries, Wan2.2's Python requirements with
# the pins upstream forgets, flash-attn (prebuilt wheel when one matches, else compiled), and
# Wan2.2 cloned at the pinned commit. Run by the Dockerfile when GPU_STACK=true.
set -euo pipefail

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    git ffmpeg libgl1 libglib2.0-0 libsndfile1 python3-venv ninja-build
rm -rf /var/lib/apt/lists/*

git clone --filter=blob:none "$WAN22_REPO" /workspace/wan2.2
git -C /workspace/wan2.2 checkout --detach "$WAN22_REF"

# Wan2.2's requirements minus flash_attn, plus what `import wan` needs but upstream does not list
# (decord, librosa, peft, einops); peft>=0.18 needs transformers>=4.52, Wan2.2 caps it at 4.51.3.
grep -v '^flash_attn' /workspace/wan2.2/requirements.txt > /tmp/wan-requirements.txt
python3 -m pip install -r /tmp/wan-requirements.txt \
    "transformers==4.51.3" "peft==0.17.1" "numpy<2" decord librosa einops ninja packaging psutil

install_flash_attn_wheel() {
    python3 - "$FLASH_ATTN_VERSION" <<'PY' > /tmp/fa-wheel-url
import sys, torch, platform
ver = sys.argv[1]
cuda_major = torch.version.cuda.split(".")[0]
torch_mm = ".".join(torch.__version__.split("+")[0].split(".")[:2])
abi = "TRUE" if torch._C._GLIBCXX_USE_CXX11_ABI else "FALSE"
py = f"cp{sys.version_info.major}{sys.version_info.minor}"
name = f"flash_attn-{ver}+cu{cuda_major}torch{torch_mm}cxx11abi{abi}-{py}-{py}-linux_{platform.machine()}.whl"
print(f"https://github.com/Dao-AILab/flash-attention/releases/download/v{ver}/{name}")
PY
    echo "flash-attn: trying prebuilt wheel $(cat /tmp/fa-wheel-url)"
    python3 -m pip install "$(cat /tmp/fa-wheel-url)"
}

case "$FLASH_ATTN" in
  none) echo "flash-attn: skipped (WAN22_ATTENTION=sdpa serves every GPU)";;
  wheel) install_flash_attn_wheel;;
  auto)
    if ! install_flash_attn_wheel; then
        echo "flash-attn: no matching wheel; compiling with MAX_JOBS=$MAX_JOBS FLASH_ATTN_CUDA_ARCHS=$FLASH_ATTN_CUDA_ARCHS"
        FLASH_ATTENTION_FORCE_BUILD=TRUE MAX_JOBS="$MAX_JOBS" NVCC_THREADS=2 \
        FLASH_ATTN_CUDA_ARCHS="$FLASH_ATTN_CUDA_ARCHS" \
            python3 -m pip install --no-build-isolation "flash-attn==$FLASH_ATTN_VERSION"
    fi;;
  *) echo "unknown FLASH_ATTN=$FLASH_ATTN (auto|wheel|none)" >&2; exit 2;;
esac
