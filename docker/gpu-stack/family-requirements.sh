#!/usr/bin/env bash
# Wan2.2's extra requirement files, after its requirements.txt (wan-requirements.sh), with the
# same pins: transformers==4.51.3 (Wan2.2's cap), peft==0.17.1 (0.18+ needs transformers 4.52),
# numpy<2, torch from the constraints file.
# - requirements_animate.txt when WAN_ANIMATE_PREP=true (default): what `wan22ctl animate-prep`
#   runs (onnxruntime detectors, SAM-2 masks, loguru, ...). Its editable SAM-2 git line becomes
#   PyPI's sam2 1.1.0 (Meta's release of the same package), installed against the image's torch
#   without its optional CUDA extension; moviepy is added (the preprocessing imports it, upstream
#   does not list it).
# - requirements_s2v.txt when WAN_S2V_TTS=true (default false): CosyVoice's stack for s2v's
#   `--enable_tts` (`generate --tts-text`). Upstream clones CosyVoice's code at the first such run
#   (network); the model is CHECKPOINT_DIR's (`wan22ctl download cosyvoice`), linked in per run.
# A tree without the file (a stand-in, an older Wan2.2) skips that part and says so.
set -euo pipefail
dir=/tmp/wan22ctl-build
pins=("transformers==4.51.3" "peft==0.17.1" "numpy<2")
pip_install() { python3 -m pip install -c /usr/local/share/wan22ctl/torch-constraints.txt "$@" "${pins[@]}"; }
if [ "${WAN_ANIMATE_PREP:-true}" = "true" ]; then
    if [ -s "$dir/requirements_animate.txt" ]; then
        grep -viE '^[[:space:]]*-e[[:space:]]+git\+.*sam2' "$dir/requirements_animate.txt" > "$dir/animate.txt" || true
        pip_install -r "$dir/animate.txt" moviepy
        SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=1 pip_install --no-build-isolation "sam2==1.1.0"
    else
        echo "no requirements_animate.txt in the Wan2.2 tree: animate preprocessing not installed"
    fi
fi
if [ "${WAN_S2V_TTS:-false}" = "true" ]; then
    if [ -s "$dir/requirements_s2v.txt" ]; then
        pip_install -r "$dir/requirements_s2v.txt"
    else
        echo "no requirements_s2v.txt in the Wan2.2 tree: s2v text-to-speech not installed"
    fi
fi
