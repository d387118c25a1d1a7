#!/usr/bin/env bash
# Install what the GGUF export checks need, for `make test` (the gguf-py
# test) and `make llama-perplexity`:
#   - Debian's python3-numpy and python3-yaml (what `import gguf` needs);
#   - llama.cpp's source, which carries gguf-py: the npm package
#     node-llama-cpp@3.22.1 ships it as llama/gitRelease.bundle, a git
#     bundle, cloned here into $MIXQ_LLAMA_CPP (default
#     ~/.cache/mixq/llama.cpp, where the Go test looks for gguf-py).
# Idempotent: an existing clone is kept. Needs root for apt-get (or sudo).
set -euo pipefail
DEST="${MIXQ_LLAMA_CPP:-$HOME/.cache/mixq/llama.cpp}"
PKG="node-llama-cpp@3.22.1"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! /usr/bin/python3 -c 'import numpy, yaml' 2>/dev/null; then
  echo "install-gguf-py: apt-get install python3-numpy python3-yaml"
  apt_install python3-numpy python3-yaml
fi

if [ -f "$DEST/gguf-py/gguf/gguf_reader.py" ]; then
  echo "install-gguf-py: llama.cpp already at $DEST"
  exit 0
fi
command -v git >/dev/null || apt_install git
command -v npm >/dev/null || { echo "install-gguf-py: apt-get install npm"; apt_install npm; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-gguf-py: npm pack $PKG"
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null && tar xzf node-llama-cpp-*.tgz package/llama/gitRelease.bundle)
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.tmp"
git clone -q "$tmp/package/llama/gitRelease.bundle" "$DEST.tmp" 2>/dev/null
mv "$DEST.tmp" "$DEST"
echo "install-gguf-py: llama.cpp $(git -C "$DEST" log -1 --format=%h) at $DEST"
