#!/usr/bin/env bash
# Builds bench/device_check (standalone attention + matmul check/timing, see its header) into .carry/attn,
# with libfmt beside it so the folder can be carried to a GPU machine. Run there:
#   LD_LIBRARY_PATH=.carry/attn .carry/attn/device_check [--time]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.carry/attn
O=$OUT/obj
mkdir -p "$O" build-attn/generated
[ -f build-attn/generated/build_info.h ] || { echo "configure build-attn first (cmake -G Ninja -S . -B build-attn)"; exit 1; }
CXXF="-std=c++20 -O2 -DPGOLF_CUDA=1 -DFMT_SHARED -Isrc -Ibuild-attn/generated -I/usr/local/cuda/include"
for f in src/core/*.cpp; do g++ $CXXF -c "$f" -o "$O/$(basename "$f" .cpp).o" & done
wait
NV="/usr/local/cuda/bin/nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -DPGOLF_CUDA=1 -DFMT_SHARED -Isrc -Ibuild-attn/generated"
$NV -c src/ops/attention.cu -o "$O/attention.o" &
$NV -c src/ops/matmul.cu -o "$O/matmul.o" &
$NV -c bench/device_check.cu -o "$O/device_check.o" &
wait
/usr/local/cuda/bin/nvcc -o "$OUT/device_check" "$O"/*.o -lcublasLt -lfmt
cp -L /usr/lib/x86_64-linux-gnu/libfmt.so.9 "$OUT/"
echo "built $OUT/device_check"
