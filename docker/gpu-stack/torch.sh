#!/usr/bin/env bash
# torch, torchvision and torchaudio at fixed versions from TORCH_INDEX_URL, whatever the base
# image carries: Wan2.2 needs >= 2.4 and the cuDNN SDPA backend >= 2.5. The wheels bring the CUDA
# runtime, cuDNN, cuBLAS and NCCL (nvidia-* wheels), so no CUDA base image is needed; the NVIDIA
# Container Toolkit adds the driver at run time. The constraints file keeps these versions through
# the later pip steps.
set -euo pipefail
python3 -m pip install --index-url "$TORCH_INDEX_URL" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "torchaudio==$TORCH_VERSION"
mkdir -p /usr/local/share/wan22ctl
printf 'torch==%s\ntorchvision==%s\ntorchaudio==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" "$TORCH_VERSION" \
    > /usr/local/share/wan22ctl/torch-constraints.txt
python3 - "$TORCH_CUDA_VERSION" <<'PY'
import sys, torch
want = sys.argv[1]
if torch.version.cuda != want:
    sys.exit(f"error: torch {torch.__version__} bundles CUDA {torch.version.cuda}, but TORCH_CUDA_VERSION={want}; "
             "set TORCH_CUDA_VERSION to the CUDA runtime of the wheels TORCH_INDEX_URL serves")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
