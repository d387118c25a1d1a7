#!/usr/bin/env bash
# Installs Debian's CUDA 11.8 toolkit (nvcc, cuda.h, the driver library to
# link against) from the non-free component, if nvcc is missing. CI runs it;
# it needs root (or sudo) and Debian bookworm. About 90 s.
set -euo pipefail
if command -v nvcc >/dev/null && [ -f /usr/include/cuda.h ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
. /etc/os-release
# Always add our own entry: matching existing ones is fragile (non-free-
# firmware is not non-free, disabled files are not read), and a component
# listed twice only makes apt warn.
src=/etc/apt/sources.list.d/mixq-cuda-nonfree.sources
{
  $SUDO tee "$src" >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit nvidia-cuda-dev >/dev/null
nvcc --version | tail -1
