#!/bin/sh
# The local Debian base image for `make image`, where no image registry is reachable:
# debootstrap bookworm (python3, python3-venv, CA certificates) from the machine's own
# Debian mirror, then `docker import`. Cached: nothing is done while the image exists.
#   docker/base.sh IMAGE_NAME
set -eu
name=$1
if docker image inspect "$name" >/dev/null 2>&1; then
  exit 0
fi
# The first Debian archive in apt's sources (deb822 or one-line format), not -security.
mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | grep -o -E 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ')}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 20 "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# What no process reads: package caches, manuals, translations (the licences stay).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "$name" >/dev/null
echo "imported $name"
