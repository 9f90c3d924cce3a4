#pragma once
// Thin wrappers over the Hopper warpgroup MMA instructions (PTX `wgmma`, sm_90a only) used by
// attention_fwd_wgmma.cuh and attention_bwd_wgmma.cuh. Everything here must be executed by all 128
// threads of a warpgroup (4 consecutive warps starting at a warp index divisible by 4), converged. The
// index maps described below are written as code in wgmma_layout.h (descriptors included), where the CPU
// tests check them.
//
// Shared-memory operands are described by a 64-bit matrix descriptor (PTX ISA, "matrix descriptor
// format"): bits 0-13 start address >> 4, bits 16-29 leading-dimension byte offset >> 4, bits 32-45
// stride-dimension byte offset >> 4, bits 49-51 base offset (0: swizzle atoms are 1024-byte aligned),
// bits 62-63 swizzle mode (1 = 128-byte swizzle).
//
// The only layout used: tiles whose rows are 128 bytes (64 bf16) with the 128-byte swizzle, i.e. the
// 16-byte chunk c of row r sits at chunk c ^ (r % 8) -- the same layout as attn::swz(), so cp.async
// stores and ldmatrix readers already agree with it. The hardware applies the XOR on address bits
// [4,7) ^= [7,10), which is why every tile must start on a 1024-byte boundary. Eight rows (1024 bytes)
// form one swizzle atom; consecutive atoms are 1024 bytes apart, which is what both byte offsets say.
//   K-major operand (Q as A, K as B of Q.K^T): rows are M/N, the 64 contraction elements run along
//     the row. The k-th 16-wide slice starts 32*k bytes into the row: advance the start address by
//     32*k (the swizzle is applied to the final address, so this stays consistent). The leading
//     offset is unused for swizzled K-major tiles; the stride offset (next 8 rows) is 1024.
//   MN-major operand (V as B of P.V, with imm-trans-b = 1): rows are the contraction index (keys),
//     the 64 N elements (head dims) run along the row, exactly one swizzle-atom wide. A 16-key slice
//     is two atoms stacked along K, 1024 bytes apart; N never spans a second atom, so the other
//     offset is never used. Both offsets are set to 1024, which is right whichever of the two the
//     hardware reads for the K direction.
//   MN-major A (imm-trans-a = 1; PTX allows the transpose for .f16/.bf16 operands read from shared
//     memory): the same layout with M along the row -- the backward's dS^T tile (rows = keys, the
//     contraction of dQ = dS K; 64 queries along the row) read as dS.
//
// Accumulator fragment of m64nNk16 (f32), thread t of the warpgroup, w = t / 32, g = (t % 32) / 4,
// q = t % 4: register d[4j + e] holds D[16w + g + 8 * (e >= 2)][8j + 2q + (e & 1)] -- per warp, the
// mma.sync m16n8 C fragment repeated over N / 8 column tiles. Register A fragment (bf16, 16 x 16 per
// warp, rows offset by 16w): a0 = A[g][2q, 2q+1], a1 = A[g+8][2q, 2q+1], a2 = A[g][2q+8, 2q+9],
// a3 = A[g+8][2q+8, 2q+9], as for mma.sync m16n8k16. So the accumulator columns 16k..16k+15 packed to
// bf16 pairs are exactly the A fragment of k-step k: {pack(d[8k], d[8k+1]), pack(d[8k+2], d[8k+3]),
// pack(d[8k+4], d[8k+5]), pack(d[8k+6], d[8k+7])}.
//
// Asynchrony: wgmma reads its register operands and writes its accumulators behind the compiler's
// back. wgmma_fence() must precede the first wgmma after registers they use were written; after
// wgmma_wait<N>() the accumulators are valid, and wgmma_fence_operand() on each of them keeps the
// compiler from moving their uses above the wait.
#include <cstdint>

#include "ops/wgmma_layout.h"  // fragment maps, swizzle offsets, descriptors (host + device, CPU-tested)

namespace pgolf::ops::cuda::wgmma {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PGOLF_WGMMA_AVAILABLE 1
#else
#define PGOLF_WGMMA_AVAILABLE 0
#endif

#if PGOLF_WGMMA_AVAILABLE

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wait_group() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes ordinary shared-memory writes (cp.async included) visible to the async proxy that wgmma
// reads through; each writing thread runs it after its writes land, before the barrier.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void fence_operand(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N> __device__ __forceinline__ void fence_operand(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// d (64 x 64) {+}= A (desc, K-major) * B (desc, K-major); `accumulate` == 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d (64 x 128) {+}= A (desc, K-major) * B (desc, K-major); `accumulate` == 0 overwrites d.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39,"
      "%40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55,"
      "%56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d (64 x 64) {+}= A (desc, MN-major: imm-trans-a = 1) * B (desc, MN-major: imm-trans-b = 1).
__device__ __forceinline__ void wgmma_m64n64k16_ss_tt(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                                      int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

// d (64 x 64) += A (registers, bf16 A fragments) * B (desc, MN-major: transposed, imm-trans-b = 1).
__device__ __forceinline__ void wgmma_m64n64k16_rs_tb(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7,"
      "%8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23,"
      "%24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

#endif  // PGOLF_WGMMA_AVAILABLE

}  // namespace pgolf::ops::cuda::wgmma
