#!/usr/bin/env bash
# Installs the Debian packages kiln needs to build, test and benchmark. Idempotent: installs
# nothing when every package is present. Set KILN_DEPS_BENCH=1 to add the PyTorch peer.
# libonnx-testdata: ONNX's own test models (the ONNX parser's tests read all 1072 of them).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev zlib1g-dev libjson-c-dev
      dataset-fashion-mnist libonnx-testdata)
if [ "${KILN_DEPS_BENCH:-0}" = 1 ]; then
  pkgs+=(python3-torch python3-numpy)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "kiln deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
