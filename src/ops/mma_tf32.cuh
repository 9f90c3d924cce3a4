#pragma once
// tf32 tensor-core building blocks (mma.sync m16n8k8, sm_80+ PTX, used on sm_90a) and the swizzled 64-column
// fp32 shared-memory tile they read. The index functions are host+device so that tests/ops/test_gdn_tc.cpp can
// check them (and a CPU emulation of the kernels that use them) without a GPU; the instructions themselves are
// device-only. Stays C++17 (included from .cu files).
//
// Fragment layouts of mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, per lane (g = lane / 4, q = lane % 4;
// every register holds one 32-bit value: a tf32 in fp32 layout for A and B, an fp32 for C/D):
//   A (16 x 8, M x K):  a0 = A[g][q]     a1 = A[g+8][q]     a2 = A[g][q+4]     a3 = A[g+8][q+4]
//   B (8 x 8,  K x N):  b0 = B[q][g]     b1 = B[q+4][g]
//   C/D (16 x 8, f32):  c0 = C[g][2q]    c1 = C[g][2q+1]    c2 = C[g+8][2q]    c3 = C[g+8][2q+1]
// So an A load reads element (row g, col q) of an 8 x 4 block of its matrix ("pattern [g][q]") and a B load
// reads (row q, col g) ("pattern [q][g]") — unless the operand is a transposed view of the stored matrix, in
// which case the roles swap. The tile swizzle below makes both patterns conflict-free.
//
// tf32 inputs: cvt.rna.tf32.f32 rounds an fp32 to 10 mantissa bits (nearest, ties away from zero) and leaves the
// result in fp32 layout with the low 13 bits zero; products of two tf32 values are exact in fp32 and the
// accumulation is fp32. Relative error per rounded input <= 2^-11 (4.9e-4).
#include <cstdint>

#if defined(__CUDACC__)
#define PG_HD __host__ __device__ __forceinline__
#else
#define PG_HD inline
#endif

namespace pgolf::ops::tf32 {

// ---- fragment coordinates (row, col) inside the 16x8 / 8x8 / 16x8 operand of one mma ----------------------
PG_HD int frag_a_row(int lane, int i) { return (lane >> 2) + 8 * (i & 1); }  // i = 0..3
PG_HD int frag_a_col(int lane, int i) { return (lane & 3) + 4 * (i >> 1); }
PG_HD int frag_b_row(int lane, int i) { return (lane & 3) + 4 * i; }  // i = 0..1 (K index)
PG_HD int frag_b_col(int lane) { return lane >> 2; }                  // N index
PG_HD int frag_c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }  // i = 0..3
PG_HD int frag_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

// ---- the shared-memory tile ----------------------------------------------------------------------------------
// Rows of 64 fp32 (no padding); column c of row r is stored at c ^ tile_swz(r), with
//   tile_swz(r) = 8 (r mod 4) + 4 (floor(r / 4) mod 2)       (values 0, 4, ..., 28: bits 2..4 only)
// Bank of (r, c) = (c ^ tile_swz(r)) mod 32. For an A-type load (rows r0 + g, cols c0 + q; r0 % 8 == 0,
// c0 % 4 == 0) bits 0-1 of the bank are q and bits 2-4 are (c0 / 4) ^ sigma(g) with sigma(g) = 2 (g mod 4) +
// floor(g / 4) a bijection of 0..7: 32 different banks. For a B-type load (rows r0 + q, cols c0 + g; r0 % 4 == 0,
// c0 % 8 == 0) bits 0-2 are g ^ (a constant bit 2) and bits 3-4 are (c0 / 8) ^ q: 32 different banks again. A
// C-fragment pair (c0, c1) stays adjacent and 8-byte aligned (the swizzle never touches bit 0), and 4 columns
// 4j..4j+3 stay one aligned float4 in order (it never touches bits 0-1).
PG_HD int tile_swz(int r) { return ((r & 3) << 3) | (((r >> 2) & 1) << 2); }
PG_HD int tile_at(int r, int c) { return r * 64 + (c ^ tile_swz(r)); }
constexpr int kTileFloats = 64 * 64;

// tf32 rounding as cvt.rna.tf32.f32 does it, on the host (finite inputs): add half of the dropped range to
// the magnitude bits and clear them.
inline uint32_t tf32_round_bits(uint32_t bits) { return (bits + 0x1000u) & 0xffffe000u; }

#if defined(__CUDACC__)
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// d += a * b (m16n8k8, tf32 in, f32 accumulate); a, b hold tf32 bit patterns.
__device__ __forceinline__ void mma_tf32(float* d, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

}  // namespace pgolf::ops::tf32
