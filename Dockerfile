# wan22ctl image: CUDA/PyTorch base + Wan2.2 at a pinned commit + the wan22ctl container side.
# Classic-builder compatible (no BuildKit features), so docker-py and `docker build` both work.
#
#   target "inference" (default): the Wan2.2 container (`wan22ctl up`)
#   target "videox-fun":          VideoX-Fun at a pinned commit on the same base (`wan22ctl up --stack videox-fun`)
#
# GPU_STACK=false skips every CUDA-only step, so tests build the same file's kit layers from a
# plain Debian base. No secret is ever a build argument: tokens reach containers at exec time.

ARG BASE_IMAGE=huggingface/transformers-pytorch-gpu:4.41.3

FROM ${BASE_IMAGE} AS inference
ARG GPU_STACK=true
ARG TORCH_CUDA_ARCH_LIST="8.9;9.0"
# flash-attn ignores TORCH_CUDA_ARCH_LIST; its sm_80 build serves sm_89 (L40S/4090).
ARG FLASH_ATTN_CUDA_ARCHS="80;90"
# auto: prebuilt wheel matching torch/CUDA/Python/ABI when one exists, else none (the kit's SDPA
# backend needs no flash-attn); wheel: wheel or fail; build: compile with ninja; none: skip
ARG FLASH_ATTN=auto
ARG FLASH_ATTN_VERSION=2.8.3
# FlashAttention-4 (CuTe DSL wheels, the fastest backend measured on Hopper); none: skip
ARG FLASH_ATTN4_VERSION=4.0.0b36
ARG CUTLASS_DSL_VERSION=4.8.1
ARG MAX_JOBS=4
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
# The CUDA runtime that torch wheel bundles (what the driver must support; `wan22ctl doctor` reads
# the label below). Change both together.
ARG TORCH_CUDA_VERSION=12.8
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG WAN22_REPO=https://github.com/Wan-Video/Wan2.2.git
ARG WAN22_REF=42bf4cfaa384bc21833865abc2f9e6c0e67233dc
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    PYTORCH_ALLOC_CONF=expandable_segments:True \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/opt/hf-home \
    WAN22_DIR=/workspace/wan2.2 \
    WAN22_REF=${WAN22_REF}
LABEL io.wan22ctl.cuda-version=${TORCH_CUDA_VERSION}
COPY docker/install-gpu-stack.sh /tmp/install-gpu-stack.sh
RUN if [ "$GPU_STACK" = "true" ]; then \
        FLASH_ATTN="$FLASH_ATTN" FLASH_ATTN_VERSION="$FLASH_ATTN_VERSION" \
        FLASH_ATTN_CUDA_ARCHS="$FLASH_ATTN_CUDA_ARCHS" MAX_JOBS="$MAX_JOBS" \
        FLASH_ATTN4_VERSION="$FLASH_ATTN4_VERSION" CUTLASS_DSL_VERSION="$CUTLASS_DSL_VERSION" \
        TORCH_VERSION="$TORCH_VERSION" TORCHVISION_VERSION="$TORCHVISION_VERSION" TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        WAN22_REPO="$WAN22_REPO" WAN22_REF="$WAN22_REF" bash /tmp/install-gpu-stack.sh; \
    else mkdir -p /workspace/wan2.2; fi && rm -f /tmp/install-gpu-stack.sh
# The kit's own layers: a venv keeps huggingface_hub 2.x apart from Wan2.2's transformers<=4.51.3.
COPY pyproject.toml README.md /opt/wan22ctl-src/
COPY wan22ctl /opt/wan22ctl-src/wan22ctl
RUN python3 -m venv /opt/wan22ctl-venv \
 && /opt/wan22ctl-venv/bin/pip install -q /opt/wan22ctl-src \
 && ln -sf /opt/wan22ctl-venv/bin/wan22ctl /usr/local/bin/wan22ctl \
 && ln -sf /opt/wan22ctl-venv/bin/wan22ctl-agent /usr/local/bin/wan22ctl-agent \
 && mkdir -p /opt/outputs /opt/checkpoints /opt/hf-home
COPY download_model.sh /usr/local/bin/download_model.sh
WORKDIR /workspace/wan2.2
HEALTHCHECK --interval=5s --timeout=20s --start-period=5s --retries=3 CMD ["wan22ctl-agent", "health"]
CMD ["/bin/bash"]

# --- target "videox-fun": the VideoX-Fun UI stack (`wan22ctl up --stack videox-fun`, VIDEOX_IMAGE_MODE=build).
# The inference image plus VideoX-Fun at a pinned commit and its requirements (already-satisfied
# pins such as transformers==4.51.3 stay). Its models/ is a host mount; the container's command,
# `python3 -m wan22ctl.agent.videox ui`, comes from wan22ctl/plan/videox.py.
FROM inference AS videox-fun
ARG GPU_STACK=true
ARG VIDEOX_REPO=https://github.com/aigc-apps/VideoX-Fun.git
ARG VIDEOX_REF=804a4258e2608f855ccaec8fffa279e75a3b89c6
ENV VIDEOX_DIR=/workspace/VideoX-Fun \
    VIDEOX_REF=${VIDEOX_REF} \
    PYTHONPATH=/opt/wan22ctl-src
RUN if [ "$GPU_STACK" = "true" ]; then \
        git clone --filter=blob:none "$VIDEOX_REPO" /workspace/VideoX-Fun \
     && git -C /workspace/VideoX-Fun checkout --detach "$VIDEOX_REF" \
     && python3 -m pip install -r /workspace/VideoX-Fun/requirements.txt; \
    fi && mkdir -p /workspace/VideoX-Fun/models/Diffusion_Transformer /workspace/VideoX-Fun/models/Personalized_Model
WORKDIR /workspace/VideoX-Fun
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s --retries=3 CMD ["python3", "-m", "wan22ctl.agent.videox", "ui-health"]
CMD ["python3", "-m", "wan22ctl.agent.videox", "ui"]
