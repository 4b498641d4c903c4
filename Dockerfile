# wan22ctl image: a base image + the GPU stack (system libraries, torch, Wan2.2's requirements,
# attention kernels) + Wan2.2 at a pinned commit + the wan22ctl container side.
# Classic-builder compatible (no BuildKit features), so docker-py and `docker build` both work.
#
#   target "inference" (default): the Wan2.2 container (`wan22ctl up`)
#   target "videox-fun":          VideoX-Fun at a pinned commit on the same stack (`wan22ctl up --stack videox-fun`)
#
# Every input can come from a reachable source: BASE_IMAGE (a CUDA image, or plain Debian/Ubuntu:
# the torch wheels bring the CUDA runtime), TORCH_INDEX_URL (PyTorch's cu128 index or PyPI, the
# same build), WAN22_SOURCE / VIDEOX_SOURCE (a folder or tarball inside the build context instead
# of a git clone). GPU_STACK=false skips the GPU stack, so tests build the kit layers from a plain
# Debian base. Each build argument is declared just before the step that uses it, so changing it
# rebuilds only from there. No secret is ever a build argument: tokens reach containers at exec time.

ARG BASE_IMAGE=huggingface/transformers-pytorch-gpu:4.41.3

# --- Wan2.2's source tree: WAN22_SOURCE when given, else a clone of WAN22_REPO at WAN22_REF.
FROM ${BASE_IMAGE} AS wan22-source
ARG GPU_STACK=true
ARG WAN22_SOURCE=
ARG WAN22_REPO=https://github.com/Wan-Video/Wan2.2.git
ARG WAN22_REF=42bf4cfaa384bc21833865abc2f9e6c0e67233dc
COPY docker/get-source.sh /tmp/get-source.sh
# Without WAN22_SOURCE this adds the script again, a placeholder that get-source.sh ignores.
ADD ${WAN22_SOURCE:-docker/get-source.sh} /tmp/local-source/
RUN bash /tmp/get-source.sh Wan2.2 generate.py "$WAN22_SOURCE" "$WAN22_REPO" "$WAN22_REF"

# --- target "inference"
FROM ${BASE_IMAGE} AS inference
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video \
    PYTORCH_ALLOC_CONF=expandable_segments:True \
    HF_HOME=/opt/hf-home
ARG GPU_STACK=true

# System packages: Python 3.10+ with pip and headers (plain Debian/Ubuntu bases have none), git,
# ffmpeg, OpenCV's and librosa's runtime libraries, and the compilers torch.compile needs.
COPY docker/gpu-stack/system.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/system.sh; fi && rm -rf /tmp/wan22ctl-build

# torch, torchvision, torchaudio pinned, from TORCH_INDEX_URL (PyPI serves the same cu128 build).
# TORCH_CUDA_VERSION is the CUDA runtime those wheels bundle (what the driver must support;
# `wan22ctl doctor` reads the label). Change it together with the versions.
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ARG TORCH_CUDA_VERSION=12.8
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
LABEL io.wan22ctl.cuda-version=${TORCH_CUDA_VERSION} \
      io.wan22ctl.torch-version=${TORCH_VERSION}
COPY docker/gpu-stack/torch.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/torch.sh; fi && rm -rf /tmp/wan22ctl-build

# Wan2.2's requirements.txt as its source tree has it, plus what upstream forgets for `import wan`.
# Only the file is copied here, so a change elsewhere in the tree does not reinstall packages.
COPY --from=wan22-source /opt/wan22ctl-source.requirements.txt /tmp/wan22ctl-build/requirements.txt
COPY docker/gpu-stack/wan-requirements.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/wan-requirements.sh; fi && rm -rf /tmp/wan22ctl-build

# Wan2.2's requirements_animate.txt (animate-prep) and, on request, requirements_s2v.txt (TTS).
ARG WAN_ANIMATE_PREP=true
ARG WAN_S2V_TTS=false
COPY --from=wan22-source /opt/wan22ctl-source.requirements_animate.txt /tmp/wan22ctl-build/requirements_animate.txt
COPY --from=wan22-source /opt/wan22ctl-source.requirements_s2v.txt /tmp/wan22ctl-build/requirements_s2v.txt
COPY docker/gpu-stack/family-requirements.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/family-requirements.sh; fi && rm -rf /tmp/wan22ctl-build
# What the agent's inventory reports: `generate --tts-text` is refused up front without these packages.
ENV WAN22_S2V_TTS=${WAN_S2V_TTS}

# Attention kernels: flash-attn 2 (optional: the kit's default backends need none of it),
# FlashAttention-4 (CuTe DSL wheels, the fastest bf16 backend measured on Hopper) and cuDNN's
# Python frontend (the FP8 self-attention of `--dtype fp8` on Hopper; "none" skips it).
#   FLASH_ATTN=auto: the prebuilt wheel matching torch/CUDA/Python/ABI when one exists, else none;
#   wheel: that wheel or fail; build: compile with ninja (needs nvcc: a CUDA devel base); none: skip.
# flash-attn ignores TORCH_CUDA_ARCH_LIST; its sm_80 build serves sm_89 (L40S/4090).
ARG FLASH_ATTN=auto
ARG FLASH_ATTN_VERSION=2.8.3
ARG FLASH_ATTN_CUDA_ARCHS="80;90"
ARG MAX_JOBS=4
ARG FLASH_ATTN4_VERSION=4.0.0b36
ARG CUTLASS_DSL_VERSION=4.8.1
ARG CUDNN_FRONTEND_VERSION=1.32.0
COPY docker/gpu-stack/attention.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/attention.sh; fi && rm -rf /tmp/wan22ctl-build

# The resident server's HTTP stack (FastAPI, uvicorn, ...), in Wan2.2's Python: the server imports
# `wan` in-process. None of it requires or replaces a package Wan2.2 pins.
COPY docker/requirements-server.txt /tmp/wan22ctl-build/
RUN python3 -m pip install -q -r /tmp/wan22ctl-build/requirements-server.txt && rm -rf /tmp/wan22ctl-build

# Wan2.2 itself, last of the GPU stack: it changes more often than the packages above.
COPY --from=wan22-source /opt/wan22ctl-source/ /workspace/wan2.2/
ARG TORCH_CUDA_ARCH_LIST="8.9;9.0"
ARG WAN22_REF=42bf4cfaa384bc21833865abc2f9e6c0e67233dc
ENV TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    WAN22_DIR=/workspace/wan2.2 \
    WAN22_REF=${WAN22_REF}

# The kit's own layers: a venv keeps huggingface_hub 2.x apart from Wan2.2's transformers<=4.51.3.
COPY pyproject.toml README.md /opt/wan22ctl-src/
COPY wan22ctl /opt/wan22ctl-src/wan22ctl
RUN python3 -m venv /opt/wan22ctl-venv \
 && /opt/wan22ctl-venv/bin/pip install -q /opt/wan22ctl-src \
 && rm -rf /opt/wan22ctl-src/build /opt/wan22ctl-src/*.egg-info \
 && ln -sf /opt/wan22ctl-venv/bin/wan22ctl /usr/local/bin/wan22ctl \
 && ln -sf /opt/wan22ctl-venv/bin/wan22ctl-agent /usr/local/bin/wan22ctl-agent \
 && mkdir -p /opt/outputs /opt/checkpoints /opt/hf-home
# The interactive flow of Wan2.2's guides, typed after `docker attach`: `python generate.py ...
# --ckpt_dir ./checkpoints/<model>` in /workspace/wan2.2 finds what `download` put in
# /opt/checkpoints, outputs/ is the host's OUTPUT_DIR, and a .pth hook in Wan's Python gives a
# hand-typed generate.py the kit's attention backend and speedups and moves its video there.
COPY download_model.sh /workspace/download_model.sh
COPY docker/wan22ctl-generate.pth /tmp/wan22ctl-generate.pth
RUN ln -sf /workspace/download_model.sh /usr/local/bin/download_model.sh \
 && ln -sfn /opt/checkpoints /workspace/wan2.2/checkpoints \
 && ln -sfn /opt/outputs /workspace/wan2.2/outputs \
 && { command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python; } \
 && mv /tmp/wan22ctl-generate.pth "$(python3 -c 'import site; print(site.getsitepackages()[0])')/"
WORKDIR /workspace/wan2.2
HEALTHCHECK --interval=5s --timeout=20s --start-period=5s --retries=3 CMD ["wan22ctl-agent", "health"]
CMD ["/bin/bash"]

# --- VideoX-Fun's source tree: VIDEOX_SOURCE when given, else a clone of VIDEOX_REPO at VIDEOX_REF.
FROM ${BASE_IMAGE} AS videox-source
ARG GPU_STACK=true
ARG VIDEOX_SOURCE=
ARG VIDEOX_REPO=https://github.com/aigc-apps/VideoX-Fun.git
ARG VIDEOX_REF=804a4258e2608f855ccaec8fffa279e75a3b89c6
COPY docker/get-source.sh /tmp/get-source.sh
ADD ${VIDEOX_SOURCE:-docker/get-source.sh} /tmp/local-source/
RUN bash /tmp/get-source.sh VideoX-Fun videox_fun "$VIDEOX_SOURCE" "$VIDEOX_REPO" "$VIDEOX_REF"

# --- target "videox-fun": the VideoX-Fun UI stack (`wan22ctl up --stack videox-fun`, VIDEOX_IMAGE_MODE=build).
# The inference image plus VideoX-Fun at a pinned commit and its requirements (already-satisfied
# pins such as transformers==4.51.3 stay). Its models/ is a host mount; the container's command,
# `python3 -m wan22ctl.agent.videox ui`, comes from wan22ctl/plan/videox.py.
FROM inference AS videox-fun
ARG GPU_STACK=true
COPY --from=videox-source /opt/wan22ctl-source.requirements.txt /tmp/wan22ctl-build/requirements.txt
COPY docker/gpu-stack/videox-requirements.sh /tmp/wan22ctl-build/
RUN if [ "$GPU_STACK" = "true" ]; then bash /tmp/wan22ctl-build/videox-requirements.sh; fi && rm -rf /tmp/wan22ctl-build
COPY --from=videox-source /opt/wan22ctl-source/ /workspace/VideoX-Fun/
ARG VIDEOX_REF=804a4258e2608f855ccaec8fffa279e75a3b89c6
ENV VIDEOX_DIR=/workspace/VideoX-Fun \
    VIDEOX_REF=${VIDEOX_REF} \
    PYTHONPATH=/opt/wan22ctl-src
RUN mkdir -p /workspace/VideoX-Fun/models/Diffusion_Transformer /workspace/VideoX-Fun/models/Personalized_Model
WORKDIR /workspace/VideoX-Fun
EXPOSE 7860
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s --retries=3 CMD ["python3", "-m", "wan22ctl.agent.videox", "ui-health"]
CMD ["python3", "-m", "wan22ctl.agent.videox", "ui"]
