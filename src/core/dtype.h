#pragma once
// Element types and devices, plus a portable bfloat16 that converts the same way on host and GPU.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__CUDACC__)
#define PG_HD __host__ __device__ __forceinline__
#else
#define PG_HD inline
#endif

namespace pgolf {

enum class DType : uint8_t { F32, BF16, F16, I32, U16, U8, I8 };
enum class Device : uint8_t { CPU, CUDA };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: case DType::U16: return 2;
    case DType::U8: case DType::I8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::U16: return "u16";
    case DType::U8: return "u8";
    case DType::I8: return "i8";
  }
  return "?";
}

constexpr std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

bool parse_dtype(std::string_view s, DType* out);

// bfloat16 as raw bits; round-to-nearest-even on the way in (NaN stays NaN).
struct bf16 {
  uint16_t bits;
};

PG_HD uint32_t pg_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
PG_HD float pg_bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

PG_HD bf16 f32_to_bf16(float f) {
  uint32_t u = pg_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
PG_HD float bf16_to_f32(bf16 b) { return pg_bits_f32(static_cast<uint32_t>(b.bits) << 16); }

// IEEE half conversions (host reference; GPU code uses cuda_fp16).
uint16_t f32_to_f16_bits(float f);
float f16_bits_to_f32(uint16_t h);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int8_t>() { return DType::I8; }

}  // namespace pgolf
