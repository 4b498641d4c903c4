#!/usr/bin/env bash
# CUDA-only layer of the inference image: system libraries, Wan2.2's Python requirements with
# the pins upstream forgets, flash-attn (prebuilt wheel when one matches, else compiled),
# FlashAttention-4 (wheels), and
# Wan2.2 cloned at the pinned commit. Run by the Dockerfile when GPU_STACK=true.
set -euo pipefail

apt-get update
# gcc + python3-dev: torch.compile (WAN22_COMPILE, on by default for long runs) builds Triton's
# launcher against Python.h at first use; flash-attn builds need them too.
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    git ffmpeg libgl1 libglib2.0-0 libsndfile1 python3-venv python3-dev gcc g++ ninja-build
rm -rf /var/lib/apt/lists/*

git clone --filter=blob:none "$WAN22_REPO" /workspace/wan2.2
git -C /workspace/wan2.2 checkout --detach "$WAN22_REF"

# A pinned torch: Wan2.2 needs >= 2.4 and the cuDNN SDPA backend (the kit's default attention on
# Hopper) >= 2.5, whatever the base image carries. The constraints keep it through the next step.
python3 -m pip install --index-url "$TORCH_INDEX_URL" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "torchaudio==$TORCH_VERSION"
printf 'torch==%s\ntorchvision==%s\ntorchaudio==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" "$TORCH_VERSION" \
    > /tmp/torch-constraints.txt

# Wan2.2's requirements minus flash_attn, plus what `import wan` needs but upstream does not list
# (decord, librosa, peft, einops); peft>=0.18 needs transformers>=4.52, Wan2.2 caps it at 4.51.3.
grep -v '^flash_attn' /workspace/wan2.2/requirements.txt > /tmp/wan-requirements.txt
python3 -m pip install -c /tmp/torch-constraints.txt -r /tmp/wan-requirements.txt \
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

# Wan2.2's DiT runs on PyTorch SDPA through wan22ctl.agent.attention (cuDNN on Hopper measured
# 1.5x faster than the FA2 kernels), so flash-attn is optional: a prebuilt wheel is cheap, an
# hour-long compile only when asked for (FLASH_ATTN=build), e.g. for WAN22_ATTENTION=flash2.
case "$FLASH_ATTN" in
  none) echo "flash-attn: skipped (WAN22_ATTENTION=auto uses PyTorch SDPA)";;
  wheel) install_flash_attn_wheel;;
  auto) install_flash_attn_wheel || echo "flash-attn: no matching prebuilt wheel; skipped (SDPA serves every GPU)";;
  build)
    echo "flash-attn: compiling with MAX_JOBS=$MAX_JOBS FLASH_ATTN_CUDA_ARCHS=$FLASH_ATTN_CUDA_ARCHS"
    FLASH_ATTENTION_FORCE_BUILD=TRUE MAX_JOBS="$MAX_JOBS" NVCC_THREADS=2 \
    FLASH_ATTN_CUDA_ARCHS="$FLASH_ATTN_CUDA_ARCHS" \
        python3 -m pip install --no-build-isolation "flash-attn==$FLASH_ATTN_VERSION";;
  *) echo "unknown FLASH_ATTN=$FLASH_ATTN (auto|wheel|build|none)" >&2; exit 2;;
esac

# FlashAttention-4: Python on NVIDIA's CuTe DSL (wheels only, kernels compiled at first use, no
# build step). WAN22_ATTENTION=auto picks it on Hopper, where it measured 670 TFLOP/s against 572
# for cuDNN (BENCHMARKS.md); where it cannot load, auto falls back to cuDNN SDPA.
if [ "$FLASH_ATTN4_VERSION" != "none" ]; then
    python3 -m pip install -c /tmp/torch-constraints.txt \
        "flash-attn-4==$FLASH_ATTN4_VERSION" "nvidia-cutlass-dsl==$CUTLASS_DSL_VERSION"
fi
