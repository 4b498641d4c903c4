#!/usr/bin/env bash
# Make the tests' base image without any registry: debootstrap Debian bookworm (minbase + python3),
# add this host's CA bundle (so pip inside containers trusts the same TLS chain as the host),
# and `docker import` it. The rootfs tarball is cached between runs on one machine.
set -euo pipefail
IMAGE=${WAN22CTL_TEST_BASE_IMAGE:-wan22ctl-test/debian:bookworm}
CACHE=${WAN22CTL_CI_CACHE:-/var/cache/wan22ctl-ci}
TARBALL="$CACHE/bookworm-rootfs.tar"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE present"; exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
    root=$(mktemp -d "$CACHE/rootfs.XXXX")
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,procps \
        bookworm "$root" http://deb.debian.org/debian
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"
fi
# The CA bundle is added at import time so a refreshed host bundle reaches the image.
work=$(mktemp -d)
cp "$TARBALL" "$work/rootfs.tar"
mkdir -p "$work/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$work/etc/ssl/certs/"
tar --delete -f "$work/rootfs.tar" ./etc/ssl/certs/ca-certificates.crt 2>/dev/null || true  # docker import refuses duplicates
tar -C "$work" -rf "$work/rootfs.tar" ./etc/ssl/certs/ca-certificates.crt
docker import "$work/rootfs.tar" "$IMAGE"
rm -rf "$work"
echo "base image $IMAGE imported"
