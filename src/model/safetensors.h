#pragma once
// The safetensors format (huggingface/safetensors): 8-byte little-endian header length N, N bytes
// of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__":
// {string: string}}, then the raw little-endian data (offsets relative to its start).
// Parameter files use the reference module's tensor names, so they interchange with PyTorch.
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/params.h"

namespace pgolf::model {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// Writes `tensors` in order (any device; copied to the host). Atomic: a temp file renamed over `path`.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Reads every tensor into a CPU tensor of the file's dtype, except F64 -> F32 and I64 -> I32 (pgolf
// has no 64-bit types; I64 values must fit in 32 bits). Errors name the file and the tensor.
std::vector<NamedTensor> read_safetensors(const std::string& path,
                                          std::map<std::string, std::string>* metadata = nullptr);

// The parameter values under their names, as f32 (or bf16 when dtype is BF16).
void export_params(const ParamTable& table, const std::string& path, DType dtype = DType::F32,
                   const std::map<std::string, std::string>& metadata = {});
// Loads every parameter value from `path` (F32/BF16/F16/F64 accepted) and refreshes the compute
// copies. The file must hold exactly the table's names with the table's shapes.
void import_params(ParamTable& table, const std::string& path);

}  // namespace pgolf::model
