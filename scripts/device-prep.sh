#!/usr/bin/env bash
# Prepares what a run on the lent GPU machine needs, in the git-ignored folder .carry/:
#   .carry/bin   the Release CUDA build of pgolf (+ pgolf_tests) and the shared libraries the GPU
#                machine lacks (Debian's sentencepiece, fmt, openblas, toml++, ...);
#   .carry/data  the benchmark corpus inputs of ../shared/ANCHORS.md (compressed text, tokenizers, val prefix).
# Then call the device tool with carry [".carry"] and a command like: bash scripts/device-run.sh <task>
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PGOLF_SHARED_DIR:-$(cd .. && pwd)/shared}
BUILD=${PGOLF_DEVICE_BUILD:-build-dev}  # e.g. PGOLF_DEVICE_BUILD=build to reuse the main build
export CUDACXX=/usr/local/cuda/bin/nvcc
cmake -G Ninja -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPGOLF_CUDA=ON >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target pgolf pgolf_tests
rm -rf .carry/bin && mkdir -p .carry/bin .carry/data
cp "$BUILD/pgolf" "$BUILD/pgolf_tests" .carry/bin/
strip .carry/bin/pgolf .carry/bin/pgolf_tests
# Libraries that are not part of glibc/libstdc++/CUDA/the driver travel with the binary.
ldd "$BUILD/pgolf" "$BUILD/pgolf_tests" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
    libcuda.so*|libcudart*|libcublas*|libcusolver*|libnccl*|libnvJitLink*|libcusparse*) ;;
    *) cp -L "$lib" .carry/bin/ ;;
  esac
done
# The carry limit is 64 MiB: compress anything big (device-run.sh unpacks it).
find .carry/bin -maxdepth 1 -type f -size +1M -exec xz -T0 -6 {} \;
if [ ! -f .carry/data/.done ]; then
  (cd "$SHARED/data" && find . -name '*.jsonl.xz' ! -path './fineweb/pg-val-prefix-sp1024/*' | sort) > .carry/data/train-files.txt
  mkdir -p .carry/data/train .carry/data/val .carry/data/tokenizers
  while read -r f; do cp "$SHARED/data/$f" ".carry/data/train/$(echo "${f#./}" | tr / _)"; done < .carry/data/train-files.txt
  cp "$SHARED/data/fineweb/pg-val-prefix-sp1024/"* .carry/data/val/
  cp "$SHARED/data/tokenizers/fineweb_1024_bpe.model" "$SHARED/data/tokenizers/community/pg-pr1922-sp8192-jpcr/fineweb_8192_bpe.model" .carry/data/tokenizers/
  touch .carry/data/.done
fi
du -sh .carry/bin .carry/data
