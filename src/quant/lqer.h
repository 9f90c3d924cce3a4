#pragma once
// LQER — low-rank quantization-error reconstruction (TECHNIQUES.md §7.10). After quantizing W to
// Ŵ, the error E = W − Ŵ of the worst few tensors is approximated by a rank-r product A·B (from the
// SVD), stored with tiny codes: A (rows, r) as INT2 in [−2, 1] with one fp16 scale max|A|/1.5, and
// B (r, cols) as INT4 in [−8, 7] with one fp16 scale max|B_g|/7.5 per group of `group_size`
// consecutive elements (row-major). Dequantized: W = Ŵ + (q_A s_A)(q_B s_B).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pgolf::quant {

struct LowRankCorrection {
  int64_t rows = 0, cols = 0;
  int rank = 0;
  std::vector<int8_t> a_codes;    // (rows, rank) in [-2, 1]
  uint16_t a_scale = 0;           // fp16 bits
  std::vector<int8_t> b_codes;    // (rank, cols) in [-8, 7]
  int group_size = 64;
  std::vector<uint16_t> b_scales; // ceil(rank*cols / group_size) fp16 bits

  static int64_t num_groups(int rank, int64_t cols, int group_size);
  void validate(const std::string& what) const;
  // w (rows, cols) += A·B, with a fixed float summation order so every reader gets identical bits.
  void add_to(std::span<float> w) const;
};

inline constexpr int kLqerDefaultRank = 4;
inline constexpr int kLqerDefaultGroup = 64;
inline constexpr int kLqerDefaultTopK = 3;

// Fits the correction to err = W − Ŵ (rows, cols) by a truncated SVD (LAPACKE_dgesdd).
LowRankCorrection lqer_fit(std::span<const float> err, int64_t rows, int64_t cols, int rank = kLqerDefaultRank,
                           int group_size = kLqerDefaultGroup);

// Indices of the k largest error norms (‖E‖_F), largest first; ties keep the lower index.
std::vector<size_t> lqer_pick_worst(std::span<const double> error_norms, int k = kLqerDefaultTopK);

}  // namespace pgolf::quant
