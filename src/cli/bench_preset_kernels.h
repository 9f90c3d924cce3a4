#pragma once
// `pgolf bench kernels --config FILE`: every op family of a preset's training step, timed alone at the
// shapes of that preset's micro-batch, with its rate as a fraction of the ceilings of ANCHORS.md §3
// (PyTorch on an H100). The implementation and the byte count of each op are in bench_preset_kernels.cpp.
#include <cstdint>
#include <string>
#include <vector>

#include "cli/bench_util.h"
#include "train/config.h"

namespace pgolf::cli::bench {

// ANCHORS.md §3: device-to-device copy (read + write) and the bf16 8192^3 matmul, on the H100.
constexpr double kCopyCeilingGBps = 3000;
constexpr double kSquareMatmulTflops = 737;
// Attention, B=48 T=2048 8/4 heads d=64: forward 388 TFLOP/s, forward+backward 319 TFLOP/s; the backward
// alone is derived from those two with the FLOP convention of bench attention (backward = 2.5x forward):
// time(bwd) = time(fwd+bwd) - time(fwd), so its rate is 2.5 / (3.5 / 319 - 1 / 388) = 297.8 TFLOP/s.
constexpr double kAttnFwdTflops = 388;
constexpr double kAttnBwdTflops = 2.5 / (3.5 / 319.0 - 1.0 / 388.0);

// The sizes the training step runs at, derived as the trainer derives them (train/trainer.cpp): one
// micro-batch of B = train_batch_tokens / (grad_accum x seq_len) sequences of T tokens, N = B T rows.
struct PresetShapes {
  int64_t B = 0, T = 0, N = 0;
  int64_t d = 0, H = 0, Hkv = 0, D = 0, hidden = 0, V = 0, layers = 0;
  Device dev = Device::CPU;
  DType act = DType::F32;  // activations: bf16 on the GPU, f32 on the CPU (model.compute_dtype may force one)
};
// Validates the config (one rank) and picks the device from train.device (auto: the GPU when present).
PresetShapes preset_shapes(const train::Config& cfg);

// The anchor a matmul is compared with: the ANCHORS.md §3 row of the same weight shape and kind
// (forward-like products by (K, N), weight gradients by the (M, N) of the gradient), else the 8192^3 rate.
struct MatmulCeiling {
  double tflops = 0;
  std::string source;  // the ANCHORS.md shape, or "8192^3 (no listed shape)"
};
MatmulCeiling matmul_ceiling(int64_t M, int64_t N, int64_t K, bool weight_gradient);

// One timed op. Exactly one of flop and bytes is > 0: compute-bound rows report TFLOP/s, memory-bound
// rows GB/s of the minimum traffic the op must move.
struct KernelRow {
  std::string op, shape;
  double ms = 0, flop = 0, bytes = 0;
  double ceiling = 0;  // TFLOP/s or GB/s (ANCHORS.md §3); 0 = none printed
  std::string ceiling_source;
  double rate() const { return flop > 0 ? flop / ms / 1e9 : bytes / ms / 1e6; }  // TFLOP/s or GB/s
};

std::vector<KernelRow> bench_preset_kernels(const train::Config& cfg, const Options& o);

// The table (op, shape, ms, rate, % of ceiling) and the JSON document of --json.
void print_kernel_table(const std::string& title, const std::vector<KernelRow>& rows);
std::string kernel_rows_json(const std::string& config, const PresetShapes& s, const std::vector<KernelRow>& rows);

}  // namespace pgolf::cli::bench
