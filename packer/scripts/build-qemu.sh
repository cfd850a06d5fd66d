#!/bin/sh
# Builds the local qemu image with an SSH key pair made for this build only:
# cloud-init authorizes its public half, Packer logs in with it,
# scripts/seal.sh removes it from the image, and the private half is deleted
# when the build ends. Extra arguments go to `packer build`.
set -eu
cd "$(dirname "$0")/.."

keydir=$(mktemp -d)
trap 'rm -rf "$keydir"' EXIT
trap 'exit 130' INT TERM
ssh-keygen -q -t ed25519 -N '' -C oauthrelay-packer-build -f "$keydir/build-key"
packer build -only='qemu.debian' -var "build_ssh_key=$keydir/build-key" "$@" .
