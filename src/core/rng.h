#pragma once
// Counter-based RNG (Philox-4x32-10, Salmon et al. 2011). The value for element i of a draw is a
// pure function of (seed, offset + i), so CPU and GPU produce identical numbers and any slice can
// be regenerated independently.
#include <cmath>
#include <cstdint>

#include "core/dtype.h"

namespace pgolf::rng {

struct U4 {
  uint32_t x, y, z, w;
};

PG_HD void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// 10 rounds of Philox4x32 on counter c with key k.
PG_HD U4 philox(U4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c.x, &hi0, &lo0);
    mulhilo(0xCD9E8D57u, c.z, &hi1, &lo1);
    c = U4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Four 32-bit words for counter `n` under `seed`.
PG_HD U4 bits(uint64_t seed, uint64_t n) {
  return philox(U4{static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32), 0u, 0u}, static_cast<uint32_t>(seed),
                static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1]: never 0, so log() is safe.
PG_HD float u01(uint32_t v) { return (static_cast<float>(v >> 8) + 1.0f) * (1.0f / 16777216.0f); }

// Element i of a uniform draw in [lo, hi).
PG_HD float uniform(uint64_t seed, uint64_t i, float lo, float hi) {
  U4 r = bits(seed, i);
  return lo + (hi - lo) * (u01(r.x) - (1.0f / 16777216.0f));
}

// Element i of a standard normal draw (Box-Muller on the first two words of counter i).
PG_HD float normal(uint64_t seed, uint64_t i) {
  U4 r = bits(seed, i);
  // Double precision inside so host libm and device math round to the same float.
  double u1 = (static_cast<double>(r.x >> 8) + 1.0) * (1.0 / 16777216.0);
  double u2 = static_cast<double>(r.y >> 8) * (1.0 / 16777216.0);
  return static_cast<float>(sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2));
}

}  // namespace pgolf::rng
