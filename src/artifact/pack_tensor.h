#pragma once
// One parameter -> one StoredTensor under a QuantPolicy: the per-tensor step of `pgolf pack`.
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "artifact/format.h"
#include "quant/gptq.h"
#include "quant/policy.h"

namespace pgolf::artifact {

struct PackTensorReport {
  quant::QuantMethod method = quant::QuantMethod::F16;  // what was actually done
  int bits = 16;
  bool hessian_missing = false;  // policy asked for GPTQ but no Hessian was given: RTN instead
  double sse = 0;                // ||W − dequant||² (Frobenius)
  std::optional<quant::GptqReport> gptq;
  // Clip search (policy.clip_search.mode != Off): rows that left the base rule, and the
  // (Hessian-weighted when GPTQ) error without / with the search.
  bool clip_searched = false;
  int clip_rows_changed = 0;
  double clip_base_error = 0, clip_error = 0;
};

// `values` is the f32 master (row-major, shape `shape`). Matrix roles need rank >= 2 (rows =
// shape[0]); `hessian` is (cols, cols) for GPTQ roles. The tensor's group is the role's number.
StoredTensor pack_tensor(const std::string& name, const std::vector<int64_t>& shape, std::span<const float> values,
                         model::QuantRole role, const quant::QuantPolicy& policy,
                         const std::vector<double>* hessian = nullptr, PackTensorReport* report = nullptr);

}  // namespace pgolf::artifact
