#pragma once
// The GPT model family of the baseline and the records (TECHNIQUES.md §4, §5): the forward pass is
// written once; the backward comes from the tape. Contract used by the trainer, evaluator and
// quantizer (the model helper owns the implementation and may extend this header compatibly).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "model/params.h"

namespace pgolf::model {

class Tape;
struct Var;

struct ModelConfig {
  int vocab_size = 1024;
  int num_layers = 9;
  int model_dim = 512;
  int num_heads = 8;
  int num_kv_heads = 4;
  float mlp_mult = 2.f;
  std::string activation = "relu2";  // relu2 | leaky_relu2
  float leaky_slope = 0.5f;
  float rope_base = 10000.f;
  int rope_dims = 0;                 // 0 = full head dim
  float qk_gain_init = 1.5f;
  float logit_softcap = 30.f;
  bool tie_embeddings = true;
  float tied_embed_init_std = 0.005f;
  float norm_eps = 1.1920929e-07f;   // torch.finfo(float32).eps, F.rms_norm's default for fp32
  DType act_dtype = DType::F32;      // activations between ops: F32 on CPU, BF16 on GPU
  int head_dim() const { return model_dim / num_heads; }
  int mlp_hidden() const { return static_cast<int>(mlp_mult * model_dim + 0.5f); }
};

class GPT {
 public:
  GPT(const ModelConfig& cfg, Device dev);
  const ModelConfig& config() const { return cfg_; }
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }
  Device device() const { return dev_; }

  // Deterministic init from `seed` (Philox), identical on CPU and GPU.
  void init(uint64_t seed);

  // ids, targets: (B, T) i32 on the model's device. Forward + backward of
  // loss = grad_scale * sum over rows of CE; grads ACCUMULATE into params().grad.
  // loss_sum: (1) f32 device tensor, receives += sum of per-token losses (nats) over the batch.
  // All temporaries come from `arena` (reset to its entry mark on return).
  void forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale, Arena& arena,
                        const Tensor& loss_sum);
  // Forward only: per-token losses (B*T) f32 (nats). Used by every evaluation path.
  void forward_losses(const Tensor& ids, const Tensor& targets, Arena& arena, const Tensor& losses);
  // Forward only: the raw tied-head logits z = h E^T (B*T, V) in cfg.act_dtype (before the soft-cap).
  void forward_logits(const Tensor& ids, Arena& arena, const Tensor& logits);
  // Bytes the arena needs for forward_backward at (B, T) (a measuring dry run); with_backward=false
  // measures forward_losses instead.
  size_t plan_bytes(int64_t B, int64_t T, bool with_backward = true);

  int num_encoder_layers() const { return cfg_.num_layers / 2; }
  int num_decoder_layers() const { return cfg_.num_layers - num_encoder_layers(); }
  int num_skip_weights() const { return std::min(num_encoder_layers(), num_decoder_layers()); }

 private:
  // Indices into params_ of one block's tensors (indices, not pointers, so a GPT can be copied).
  struct BlockParams {
    size_t c_q, c_k, c_v, attn_proj, q_gain, fc, mlp_proj, attn_scale, mlp_scale, resid_mix;
  };
  void build_params();
  Param& p(size_t index) { return params_.all()[index]; }
  // The whole network up to the raw logits (B*T, V); written once for training and evaluation.
  Var forward(Tape& tp, const Tensor& ids);
  Var block(Tape& tp, const BlockParams& bp, const Var& x, const Var& x0, int64_t B, int64_t T);
  Var attention(Tape& tp, const BlockParams& bp, const Var& n, int64_t B, int64_t T);
  Var mlp(Tape& tp, const BlockParams& bp, const Var& n);

  ModelConfig cfg_;
  Device dev_;
  ParamTable params_;
  size_t tok_emb_ = 0, skip_weights_ = 0;
  std::vector<BlockParams> blocks_;
  Tensor head_expand_;  // (H, H*D) f32 0/1: broadcasts a per-head gain to channels
};

}  // namespace pgolf::model
