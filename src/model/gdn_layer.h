#pragma once
// The GatedDeltaNet token mixer of the hybrid model of seed #1672 (TECHNIQUES.md §5.17, §5.18; docs/GDN.md
// "The layer"). In a GDN block it takes the place of attention: the block's norms, residual mixes, scales and
// MLP are the GPT's own (src/model/gpt_forward.cpp), only the token mixer differs. Per layer, with n the
// block's normed input (N = B*T rows of d), H = num_heads and D = head_dim (d_k = d_v = D, H*D = d):
//   q = L2norm_head(SiLU(conv(W_q n))) / sqrt(D),  k = L2norm_head(SiLU(conv(W_k n))),  v = SiLU(conv(W_v n))
//   g = -exp(A_log) softplus(W_a n + dt_bias),  beta = 2 sigmoid(W_b n)   (1 sigmoid without gdn_neg_eigval)
//   o = gated delta rule (chunked form, ops/gdn.h) ;  out = W_o (RMSNorm_head(o) * SiLU(W_g n))
// The head RMSNorm has no weight (the §5.18 formula; FLA's has a D-vector initialised to ones).
#include <cstddef>
#include <cstdint>
#include <functional>

#include "model/params.h"

namespace pgolf::model {

class Tape;
struct Var;
struct ModelConfig;

// Indices into the parameter table of one GDN layer's tensors (names "blocks.{l}.gdn.*").
struct GdnParams {
  size_t q = 0, k = 0, v = 0, a = 0, b = 0, g = 0, o = 0;  // projections
  size_t conv_q = 0, conv_k = 0, conv_v = 0;                 // (H*D, K) short-convolution weights
  size_t A_log = 0, dt_bias = 0;                             // (H) decay parameters
};

// Appends layer `layer`'s GDN parameters to `t` (name, shape, optimizer group, weight decay, quantizer role, init).
GdnParams add_gdn_params(ParamTable& t, const ModelConfig& cfg, int layer);

// The token mixer on the tape: n (B*T, d) in the activation dtype -> (B*T, d). `param` resolves a table
// index (the GPT passes its own accessor, which also notes the use for gradient-ready reporting).
using ParamAt = std::function<Param&(size_t)>;
Var gdn_mixer(Tape& tp, const ParamAt& param, const GdnParams& gp, const ModelConfig& cfg, const Var& n, int64_t B,
              int64_t T);

// The hybrid's configuration checks (called by check_model_config): clear errors naming the key.
void check_gdn_config(const ModelConfig& cfg);

}  // namespace pgolf::model
