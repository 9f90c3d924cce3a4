#pragma once
// Kernel benches and checks of `pgolf bench` (bench_attention.cpp, bench_matmul.cpp).
#include <vector>

#include "cli/bench_util.h"

namespace pgolf::cli::bench {

struct AttnShape {
  int B = 48, T = 2048, Hq = 8, Hkv = 4, D = 64;
  bool causal = true;
};

// Forward, backward and forward+backward of bf16 attention at `s` (random inputs, no doc_start).
std::vector<Row> bench_attention(const Options& o, const AttnShape& s);
// GPU vs CPU op on small shapes covering the flash path (GQA, ragged T, window, doc_start, non-causal)
// and the fallback (f32, head_dim 32). Prints max relative errors; true when all are within tolerance.
bool check_attention_all();

// The matmul shapes of ANCHORS.md §3 (bf16 in, bf16 out), with the anchor rates.
std::vector<Row> bench_matmul(const Options& o);

}  // namespace pgolf::cli::bench
