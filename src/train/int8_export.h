#pragma once
// The reference baseline's export (TECHNIQUES.md §4.5): every float tensor with more than 65,536
// elements is int8 per row (clip = 99.99984th percentile of |w| of the row, scale = clip/127 stored
// fp16 and floored at 1/127); smaller tensors are kept fp16, control tensors (scales, mixes, gains,
// skip weights) fp32. The serialization is a simple tagged binary, compressed with zlib level 9.
// The real quantization pipeline is the issue "Quantization"; this is the training-time round trip.
#include <cstdint>
#include <string>
#include <vector>

#include "model/params.h"

namespace pgolf::train {

constexpr int64_t kInt8KeepFloatMaxNumel = 65536;
constexpr double kInt8ClipQuantile = 0.9999984;

// torch.quantile(x, q) with linear interpolation (x is reordered).
float quantile_linear(std::vector<float>& x, double q);

// Quantizes every parameter (values read to host) into the uncompressed blob.
std::string int8_serialize(const model::ParamTable& params);
// Parses a blob and writes the dequantized values into the matching parameters (f32 masters;
// call sync_compute() after). Fails naming any missing or mismatched tensor.
void int8_deserialize_into(const std::string& blob, model::ParamTable& params);

std::string zlib_compress(const std::string& data, int level = 9);
std::string zlib_decompress(const std::string& data);

}  // namespace pgolf::train
