#!/usr/bin/env bash
# Inside the image: fetch Wan2.2 checkpoints into /opt/checkpoints with the kit's download code.
#   download_model.sh t2v | i2v | ti2va | ti2v-5b | fun-control | cogvideox-fun  [more selectors]
# Same code path as `wan22ctl download` on the host (resumable, verified, disk preflight).
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: download_model.sh SELECTOR... (t2v, i2v, ti2va, ti2v-5b, fun-control, cogvideox-fun)" >&2
    exit 2
fi
exec wan22ctl-agent download "$@"
