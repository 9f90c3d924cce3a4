#pragma once
// Which quantizer each parameter role gets (TECHNIQUES.md §7.1, §7.7): the defaults are the top
// record's — int6 GPTQ for block matrices with SDClip k = 13.0 (attention) / 11.5 (MLP), int7 GPTQ
// k = 14 for the tied embedding, int8 row-max for gates, fp16 passthrough for small tensors.
#include <cstdint>
#include <string>

#include "model/params.h"
#include "quant/clip_search.h"
#include "quant/quantize.h"

namespace pgolf::quant {

enum class QuantMethod : uint8_t {
  F16,         // fp16 passthrough
  Rtn,         // round-to-nearest with `clip`
  ClipSearch,  // GPTQ-lite: RTN with the best of the §7.4 percentiles (needs no Hessian)
  Gptq,        // full GPTQ with `clip` (falls back to Rtn when no Hessian was collected)
};
std::string_view quant_method_name(QuantMethod m);

struct RolePolicy {
  QuantMethod method = QuantMethod::F16;
  int bits = 8;
  ClipRule clip = ClipRule::row_max();
};

struct QuantPolicy {
  RolePolicy embed{QuantMethod::Gptq, 7, ClipRule::sd(14.0)};
  RolePolicy attn{QuantMethod::Gptq, 6, ClipRule::sd(13.0)};
  RolePolicy mlp{QuantMethod::Gptq, 6, ClipRule::sd(11.5)};
  RolePolicy gate{QuantMethod::Rtn, 8, ClipRule::row_max()};
  RolePolicy passthrough{QuantMethod::F16, 16, ClipRule::row_max()};
  double damp_percent = 0.01;
  int block_size = 128;
  bool act_order = true;
  // Clip search (quant/clip_search.h) for every Rtn / Gptq role; Off = the role's clip as is.
  ClipSearchOptions clip_search;

  RolePolicy for_role(model::QuantRole role) const;
};

std::string_view quant_role_name(model::QuantRole role);

}  // namespace pgolf::quant
