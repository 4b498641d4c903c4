#!/usr/bin/env bash
# VideoX-Fun's requirements.txt on top of the inference stack: pins already satisfied there
# (torch, transformers==4.51.3, numpy<2) stay, through the torch constraints and these.
set -euo pipefail
python3 -m pip install -c /usr/local/share/wan22ctl/torch-constraints.txt -r /tmp/wan22ctl-build/requirements.txt \
    "transformers==4.51.3" "numpy<2"
