#!/usr/bin/env bash
# Put an upstream source tree at /opt/wan22ctl-source (and its requirements files beside it), for the
# Dockerfile's *-source stages:
#   get-source.sh NAME MARKER LOCAL REPO REF
# LOCAL (WAN22_SOURCE / VIDEOX_SOURCE) non-empty: the folder or tarball the Dockerfile ADDed to
# /tmp/local-source (a tarball arrives unpacked; one top folder, as `git archive --prefix` and
# GitHub's archives make, is stepped into). Else a clone of REPO at REF, but only for the GPU
# stack: GPU_STACK=false builds (the tests' kit images) get an empty tree. MARKER is a path the
# tree must contain, so a wrong folder fails here with its name, not later at import.
set -euo pipefail
name=$1 marker=$2 local=$3 repo=$4 ref=$5
dest=/opt/wan22ctl-source
rm -rf "$dest"
if [ -n "$local" ]; then
    src=/tmp/local-source
    entries=("$src"/*)
    if [ ! -e "$src/$marker" ] && [ ${#entries[@]} -eq 1 ] && [ -d "${entries[0]}" ]; then
        src=${entries[0]}
    fi
    if [ ! -e "$src/$marker" ]; then
        echo "error: $local is not a $name source tree (no $marker in it); give a folder or a .tar/.tar.gz of one, inside the build context" >&2
        exit 2
    fi
    mv "$src" "$dest"
    echo "$name: local source $local"
elif [ "${GPU_STACK:-true}" = "true" ]; then
    if ! command -v git >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git ca-certificates >/dev/null
    fi
    git clone --filter=blob:none "$repo" "$dest"
    git -C "$dest" checkout --detach "$ref"
else
    mkdir -p "$dest"
fi
rm -rf /tmp/local-source
for req in requirements requirements_animate requirements_s2v; do  # an absent file is left empty
    if [ -f "$dest/$req.txt" ]; then cp "$dest/$req.txt" "/opt/wan22ctl-source.$req.txt"; else : > "/opt/wan22ctl-source.$req.txt"; fi
done
