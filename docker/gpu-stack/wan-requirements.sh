#!/usr/bin/env bash
# Wan2.2's requirements.txt (from its source tree) minus flash_attn (attention.sh decides that),
# plus what `import wan` needs and upstream does not list: decord, librosa, peft, einops (its
# pipelines are all imported eagerly). peft>=0.18 needs transformers>=4.52, Wan2.2 caps it at 4.51.3.
set -euo pipefail
grep -viE '^[[:space:]]*flash[-_]attn' /tmp/wan22ctl-build/requirements.txt > /tmp/wan22ctl-build/wan-requirements.txt || true
python3 -m pip install -c /usr/local/share/wan22ctl/torch-constraints.txt -r /tmp/wan22ctl-build/wan-requirements.txt \
    "transformers==4.51.3" "peft==0.17.1" "numpy<2" decord librosa einops ninja packaging psutil
