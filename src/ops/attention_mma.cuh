#pragma once
// Tensor-core building blocks for the flash-attention kernels (sm_80+ PTX, used on sm_90a).
//
// Fragment layouts of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, per lane (g = lane / 4,
// q = lane % 4; "a pair" is two consecutive elements packed in one 32-bit register, low half first):
//   A (16 x 16, row-major, M x K): a0 = A[g][2q..2q+1]      a1 = A[g+8][2q..2q+1]
//                                  a2 = A[g][2q+8..2q+9]    a3 = A[g+8][2q+8..2q+9]
//   B (16 x 8, K x N, "col"):      b0 = B[2q..2q+1][g]      b1 = B[2q+8..2q+9][g]   (pairs run along K)
//   C/D (16 x 8, f32):             c0,c1 = C[g][2q..2q+1]   c2,c3 = C[g+8][2q..2q+1]
// Consequence used everywhere: the C fragments of two adjacent n-tiles (columns 16j..16j+15) hold,
// after packing to bf16, exactly the A fragment of k-step j: a0 = pack(c0,c1 of tile 2j),
// a1 = pack(c2,c3 of tile 2j), a2 = pack(c0,c1 of tile 2j+1), a3 = pack(c2,c3 of tile 2j+1).
//
// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i..8i+7 give the addresses of the 8 rows (16 bytes
// each) of matrix i; register ri of lane l receives matrix i's elements [l/4][2(l%4)..2(l%4)+1]
// (or, with .trans, elements [2(l%4)][l/4] and [2(l%4)+1][l/4]: the transposed pair).
//
// Shared-memory tiles are 64 rows x 64 bf16 (128 bytes per row = 8 chunks of 16 bytes). Chunk c of
// row r is stored at chunk position c ^ (r % 8) so that the 8 row addresses of one ldmatrix matrix
// (same chunk, 8 consecutive rows) fall in 8 different bank groups.
#include <cstdint>

namespace pgolf::ops::cuda::attn {

constexpr int kTile = 64;  // rows per tile (queries or keys) and head_dim of the fast path

// Element offset of (row, col) in a swizzled 64 x 64 bf16 tile.
__device__ __forceinline__ int swz(int row, int col) {
  return row * 64 + ((((col >> 3) ^ row) & 7) << 3) + (col & 7);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b (m16n8k16, bf16 in, f32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^x with the hardware approximation (2 ulp; exp2(-inf) = 0), as flash attention kernels use.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats to a bf16 pair (round to nearest even), `lo` in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// 16-byte async copy global -> shared; src_bytes = 0 fills the 16 bytes with zeros (rows past T).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Loads a 64 x 64 bf16 tile whose row r starts at base + r * row_stride (elements), rows >= valid
// zero-filled, into swizzled shared memory. All `nthreads` threads of the block take part.
template <int kThreads>
__device__ __forceinline__ void load_tile_async(uint16_t* smem, const uint16_t* base, int64_t row_stride, int valid,
                                                int tid) {
  // 64 rows x 8 chunks = 512 chunks of 16 bytes.
#pragma unroll
  for (int i = 0; i < 512 / kThreads; ++i) {
    int chunk = tid + i * kThreads;
    int row = chunk >> 3, c = chunk & 7;
    bool ok = row < valid;
    const uint16_t* src = base + (ok ? row : 0) * row_stride + c * 8;
    cp_async16(smem_addr(smem + swz(row, c * 8)), src, ok ? 16 : 0);
  }
}

// Visible key range [lo, hi] of query row i (inclusive); empty when lo > hi.
struct RowRange {
  int lo, hi;
};
__device__ __forceinline__ RowRange row_range(int i, int T, bool causal, int window, const int32_t* doc_start_b) {
  if (i >= T) return {1, 0};
  int lo = 0, hi = causal ? i : T - 1;
  if (window > 0) lo = max(lo, i - window + 1), hi = min(hi, i);  // attention.h: i - window < j <= i
  if (doc_start_b) lo = max(lo, static_cast<int>(doc_start_b[i]));
  return {lo, hi};
}

}  // namespace pgolf::ops::cuda::attn
