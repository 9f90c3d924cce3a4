#!/usr/bin/env bash
# Installs the Debian packages pgolf needs (idempotent; uses sudo when not root) and builds it.
# Usage: scripts/setup.sh [--build-dir DIR] [--cpu-only] [--no-build] [--sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=build
# Explicit, so a build folder configured earlier with another choice follows this call's options.
CMAKE_ARGS=(-DPGOLF_CUDA=AUTO)
DO_BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --cpu-only) CMAKE_ARGS+=(-DPGOLF_CUDA=OFF); shift ;;
    --sanitize) CMAKE_ARGS+=(-DPGOLF_CUDA=OFF -DPGOLF_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug); shift ;;
    --no-build) DO_BUILD=0; shift ;;
    *) echo "setup.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

PACKAGES=(build-essential cmake ninja-build pkg-config ccache git xz-utils zstd
  libsentencepiece-dev sentencepiece libbrotli-dev liblzma-dev libzstd-dev zlib1g-dev
  libopenblas-dev liblapacke-dev libgtest-dev libgmock-dev libbenchmark-dev libtomlplusplus-dev libcli11-dev
  libfmt-dev nlohmann-json3-dev libxxhash-dev
  jargon-text dict-devil)
# Headless Chromium for the report's browser test (tests/report); opt-in locally, always on CI.
if [ "${PGOLF_WITH_BROWSER:-0}" = 1 ] || [ "${CI:-}" = true ]; then PACKAGES+=(chromium); fi
if [ -n "${PGOLF_EXTRA_PACKAGES:-}" ]; then
  # shellcheck disable=SC2206
  PACKAGES+=(${PGOLF_EXTRA_PACKAGES})
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$DO_BUILD" = 1 ]; then
  # ccache keys relative to the checkout, so any clone of the repo (CI's included) reuses the cache.
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
  # CUDA is used when the toolkit is installed (nvcc), GPU or not; PGOLF_CUDA=OFF forces a CPU-only build.
  if [ -x /usr/local/cuda/bin/nvcc ] && [ -z "${CUDACXX:-}" ]; then export CUDACXX=/usr/local/cuda/bin/nvcc; fi
  cmake -G Ninja -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${PGOLF_BUILD_TYPE:-Release}" ${CMAKE_ARGS[@]+"${CMAKE_ARGS[@]}"} >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)"
fi
