#pragma once
// GPTQ calibration (TECHNIQUES.md §7.5): H = XᵀX / n for every linear weight, where X (n, in) are
// the inputs that weight sees in GPT::forward_losses over calibration batches. The tied embedding
// gets the LM-head input (the final-RMSNorm output), since the head is tp.linear(x, tok_emb).
// Inputs shared by several weights (Q/K/V read the same normed activations) are accumulated once.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/gpt.h"
#include "quant/gptq.h"

namespace pgolf::data {
class TokenStream;
}

namespace pgolf::quant {

enum class GramPath : uint8_t {
  Auto,    // Host on CPU models, Device on CUDA models
  Host,    // X copied to host f32, HessianAccumulator (double, exact): small models and tests
  Device,  // XᵀX by ops::matmul into an f32 (in, in) tensor on the model's device, beta = 1
};

struct LinearHessian {
  std::vector<double> h;  // (cols, cols) row-major, symmetric, = Σ XᵀX / rows
  int64_t cols = 0;
  int64_t rows = 0;       // activation rows accumulated
  std::string shared_with;  // the weight whose input this is when it was accumulated once for both
};

// Installs the Tape's linear-input hook while alive and accumulates every linear's input Gram.
// Feed it forward passes (collect_hessians does), then call finish().
class HessianCollector {
 public:
  explicit HessianCollector(GramPath path = GramPath::Auto);
  ~HessianCollector();
  HessianCollector(const HessianCollector&) = delete;
  HessianCollector& operator=(const HessianCollector&) = delete;

  // Marks a new forward pass: input sharing is detected among the calls of one pass.
  void begin_pass();
  // The hook body (public for tests): x is (N, in) on any device, any float dtype.
  void on_linear(const std::string& weight, const Tensor& x);
  // Hessians by weight name; uninstalls the hook.
  std::map<std::string, LinearHessian> finish();

 private:
  struct Group;
  GramPath path_;
  std::map<std::string, std::unique_ptr<Group>> groups_;  // keyed by the first weight that saw the input
  std::map<std::string, std::string> alias_;              // weight -> owning group's weight
  std::map<const void*, std::string> pass_inputs_;         // input data pointer -> weight, this pass
  bool installed_ = false;
};

struct CalibrationOptions {
  std::string train_pattern;  // token shards (data::TokenStream pattern)
  int64_t batches = 16;
  int64_t batch_seqs = 8;     // sequences per batch
  int64_t seq_len = 1024;
  GramPath path = GramPath::Auto;
};

struct CalibrationStats {
  int64_t batches = 0, tokens = 0;
  double seconds = 0;
};

// Runs `opt.batches` forward passes of (batch_seqs, seq_len) tokens read from `tokens` and returns
// the Hessians of every linear weight by name.
std::map<std::string, LinearHessian> collect_hessians(model::GPT& gpt, data::TokenStream& tokens,
                                                      const CalibrationOptions& opt, CalibrationStats* stats = nullptr);
// Same, opening opt.train_pattern.
std::map<std::string, LinearHessian> collect_hessians(model::GPT& gpt, const CalibrationOptions& opt,
                                                      CalibrationStats* stats = nullptr);

}  // namespace pgolf::quant
