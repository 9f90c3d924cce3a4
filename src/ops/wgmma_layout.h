#pragma once
// Index maps of the Hopper warpgroup MMA (wgmma) operands, as plain host + device functions: the
// kernels (wgmma.cuh and its users) compute their fragment positions, swizzled shared-memory offsets and
// matrix descriptors with them, and tests/ops/test_wgmma_layout.cpp checks them on the CPU.
//
// Accumulator of m64nNk16 (f32), thread t (0..127) of the warpgroup, register r (0..N/2-1): the mma.sync
// m16n8 C fragment per warp (rows 16 * warp ..), repeated over N / 8 column tiles:
//   row = 16 (t / 32) + (t % 32) / 4 + 8 [r % 4 >= 2],   col = 8 (r / 4) + 2 (t % 4) + r % 2.
// Register A fragment of one k-step (64 x 16, bf16 pairs), register i (0..3), half h (0 = low 16 bits):
//   row = 16 (t / 32) + (t % 32) / 4 + 8 (i % 2),         col = 8 (i / 2) + 2 (t % 4) + h,
// so accumulator register 8 kk + 2 i + h is A element (i, h) of k-step kk (columns 16kk..16kk+15).
//
// Shared-memory tiles: rows of 128 bytes (64 bf16) with the 128-byte swizzle: the 16-byte chunk c of row r
// sits at chunk c ^ (r % 8). Eight rows form a 1024-byte swizzle atom; tiles start on 1024-byte boundaries
// because the hardware applies the XOR to address bits [4,7) ^= [7,10) of the final address.
//
// sw128_operand_addr() is this file's model of which shared byte the wgmma reads for an operand element
// given its descriptor (PTX ISA, "Shared Memory Matrix Layout" and "Matrix Descriptor"): it is only used by
// the tests, which check that every operand the kernels feed (including the layouts the forward kernel
// has run on the GPU) reads the intended matrix element under that model.
#include <cstdint>

#include "core/dtype.h"  // PG_HD

namespace pgolf::ops::cuda::wgmma {

PG_HD int acc_row(int t, int r) { return 16 * (t >> 5) + ((t & 31) >> 2) + 8 * ((r & 3) >> 1); }
PG_HD int acc_col(int t, int r) { return 8 * (r >> 2) + 2 * (t & 3) + (r & 1); }
PG_HD int afrag_row(int t, int i, int h) { return 16 * (t >> 5) + ((t & 31) >> 2) + 8 * (i & 1); }
PG_HD int afrag_col(int t, int i, int h) { return 8 * (i >> 1) + 2 * (t & 3) + h; }
// The accumulator register that holds A element (register i, half h) of k-step kk.
PG_HD int afrag_acc_reg(int kk, int i, int h) { return 8 * kk + 2 * i + h; }

// Byte offset of bf16 element (row, col < 64) in a tile of 128-byte swizzled rows (= 2 * attn::swz).
PG_HD uint32_t sw128_byte(int row, int col) {
  return static_cast<uint32_t>(row * 128 + ((((col >> 3) ^ row) & 7) << 4) + (col & 7) * 2);
}

// Matrix descriptor (PTX ISA): bits 0-13 start address >> 4, 16-29 leading-dimension byte offset >> 4,
// 32-45 stride-dimension byte offset >> 4, 49-51 base offset (0: atoms 1024-byte aligned), 62-63 swizzle
// mode (1 = 128-byte swizzle).
PG_HD uint64_t desc_encode(uint32_t bytes) { return static_cast<uint64_t>((bytes & 0x3FFFF) >> 4); }
PG_HD uint64_t make_desc_sw128(uint32_t smem_addr, uint32_t lead_bytes, uint32_t stride_bytes) {
  return desc_encode(smem_addr) | (desc_encode(lead_bytes) << 16) | (desc_encode(stride_bytes) << 32) |
         (uint64_t{1} << 62);
}
// K-major: rows are M/N, the contraction runs along the 128-byte row; the stride offset (next 8 rows) is
// 1024 and the leading offset is unused with the swizzle.
PG_HD uint64_t desc_k_major(uint32_t smem_addr) { return make_desc_sw128(smem_addr, 16, 1024); }
// MN-major (imm-trans = 1): rows are the contraction index, 64 M/N elements run along the row (one atom
// wide); the 8-row groups along K are 1024 bytes apart. Both offsets are 1024: N (or M) never spans a
// second atom here, so whichever of the two the hardware reads for K, it is right.
PG_HD uint64_t desc_mn_major(uint32_t smem_addr) { return make_desc_sw128(smem_addr, 1024, 1024); }

// Descriptors of k-step kk (16 contraction elements) of a 64-wide swizzled tile starting at `tile`:
// K-major: 32 bytes further along every row (the swizzle applies to the final address, so this stays
// consistent); MN-major: 16 rows (two atoms, 2048 bytes) further down.
PG_HD uint64_t desc_k_major_kstep(uint32_t tile, int kk) { return desc_k_major(tile + 32u * kk); }
PG_HD uint64_t desc_mn_major_kstep(uint32_t tile, int kk) { return desc_mn_major(tile + 2048u * kk); }

struct DescFields {
  uint32_t start, lead, stride;
  int base_offset, swizzle;
};
PG_HD DescFields desc_decode(uint64_t d) {
  return DescFields{static_cast<uint32_t>(d & 0x3FFF) << 4, static_cast<uint32_t>((d >> 16) & 0x3FFF) << 4,
                    static_cast<uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<int>((d >> 49) & 7),
                    static_cast<int>(d >> 62)};
}

// Model (tests only): the shared byte address a wgmma reads for element (mn, k) of a bf16 operand of one
// k-step (k < 16) described by a 128-byte-swizzle descriptor. K-major: 8-row groups of M/N at the stride
// offset, k along the row. MN-major: 8-row groups of K at the stride offset, M/N along the row, further
// 64-element groups of M/N at the leading offset. Then the swizzle XOR of address bits [7,10) into [4,7).
PG_HD uint32_t sw128_operand_addr(uint64_t desc, bool mn_major, int mn, int k) {
  const DescFields f = desc_decode(desc);
  const uint32_t a = mn_major ? f.start + (k >> 3) * f.stride + (k & 7) * 128u + (mn & 63) * 2u + (mn >> 6) * f.lead
                              : f.start + (mn >> 3) * f.stride + (mn & 7) * 128u + k * 2u;
  return a ^ (((a >> 7) & 7u) << 4);
}

}  // namespace pgolf::ops::cuda::wgmma
