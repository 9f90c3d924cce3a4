#include "quant/policy.h"

namespace pgolf::quant {

std::string_view quant_method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::F16: return "f16";
    case QuantMethod::Rtn: return "rtn";
    case QuantMethod::ClipSearch: return "clip-search";
    case QuantMethod::Gptq: return "gptq";
  }
  return "?";
}

std::string_view quant_role_name(model::QuantRole role) {
  using R = model::QuantRole;
  switch (role) {
    case R::Embed: return "embed";
    case R::AttnQ: return "attn_q";
    case R::AttnK: return "attn_k";
    case R::AttnV: return "attn_v";
    case R::AttnO: return "attn_o";
    case R::MlpUp: return "mlp_up";
    case R::MlpDown: return "mlp_down";
    case R::Gate: return "gate";
    case R::Passthrough: return "passthrough";
  }
  return "?";
}

RolePolicy QuantPolicy::for_role(model::QuantRole role) const {
  using R = model::QuantRole;
  switch (role) {
    case R::Embed: return embed;
    case R::AttnQ: case R::AttnK: case R::AttnV: case R::AttnO: return attn;
    case R::MlpUp: case R::MlpDown: return mlp;
    case R::Gate: return gate;
    case R::Passthrough: return passthrough;
  }
  return passthrough;
}

}  // namespace pgolf::quant
