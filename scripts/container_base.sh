#!/usr/bin/env bash
# A Debian 12 base image with Python, made here without a registry: mmdebstrap fetches the
# packages from Debian's mirror, `podman import` turns the tree into an image. The images of
# deploy/ build FROM it (deploy/Dockerfile with --build-arg BASE=...).
#   bash scripts/container_base.sh [IMAGE]     (default localhost/marionette-base:bookworm)
# The host's CA bundle goes in, so that containers trust what the host trusts (a proxy's CA).
set -euo pipefail
IMAGE="${1:-localhost/marionette-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install $tool" >&2; exit 2; }
done
tar="$(mktemp -d)/base.tar"
trap 'rm -rf "$(dirname "$tar")"' EXIT
mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    --customize-hook='copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/' \
    --customize-hook='chroot "$1" apt-get clean' \
    bookworm "$tar" "$MIRROR"
podman import --quiet --change 'CMD ["/bin/bash"]' "$tar" "$IMAGE" >/dev/null
echo "built $IMAGE"
