#!/usr/bin/env bash
# Attention kernels for Wan2.2's DiT. The kit routes Wan's attention through
# wan22ctl.agent.attention (PyTorch SDPA/cuDNN, or FlashAttention-4 on Hopper), so flash-attn 2
# is optional: a prebuilt wheel is cheap, an hour-long compile only when asked for
# (FLASH_ATTN=build, for WAN22_ATTENTION=flash2; needs nvcc, i.e. a CUDA devel base image).
set -euo pipefail

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
    # GitHub may be out of reach (firewalls): fail fast, and `auto` goes on without it.
    python3 -m pip install --timeout 30 --retries 1 "$(cat /tmp/fa-wheel-url)"
}

case "$FLASH_ATTN" in
  none) echo "flash-attn: skipped (WAN22_ATTENTION=auto uses PyTorch SDPA)";;
  wheel) install_flash_attn_wheel;;
  auto) install_flash_attn_wheel || echo "flash-attn: no matching prebuilt wheel; skipped (SDPA serves every GPU)";;
  build)
    command -v nvcc >/dev/null || { echo "error: FLASH_ATTN=build needs nvcc: use a CUDA devel BASE_IMAGE, or FLASH_ATTN=auto|none" >&2; exit 2; }
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
    python3 -m pip install -c /usr/local/share/wan22ctl/torch-constraints.txt \
        "flash-attn-4==$FLASH_ATTN4_VERSION" "nvidia-cutlass-dsl==$CUTLASS_DSL_VERSION"
fi

# cuDNN's FP8 attention, what `--dtype fp8` runs its self-attention with on Hopper
# (WAN22_FP8_ATTENTION=auto; 7.36 s against 8.94 s a 720P A14B forward, BENCHMARKS.md). Its Python
# binds the cuDNN that torch's wheels bring. --no-deps: its requirements (nvidia-cutlass-dsl,
# apache-tvm-ffi) came with FlashAttention-4 above, and its `[cu13]` extra would add CUDA 13
# libraries to this CUDA 12.8 stack; the graph API used here needs neither.
if [ "$CUDNN_FRONTEND_VERSION" != "none" ] && [ "$FLASH_ATTN4_VERSION" != "none" ]; then
    python3 -m pip install --no-deps "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION"
fi
