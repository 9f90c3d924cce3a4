#pragma once
// Loading the PyTorch golden fixtures of tools/golden/ (tests/fixtures/golden/<prefix>_{weights,io}.safetensors and
// <prefix>_scalars.json). PGOLF_GOLDEN_DIR overrides the folder (a fixture just generated elsewhere).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"

namespace pgolf::model::testing {

struct GoldenFixture {
  nlohmann::json scalars;
  std::map<std::string, Tensor> io;  // ids, targets, logits, grad.<name>, ...
  std::string weights_path;
};

// Fills `g` and returns true when the three files exist; otherwise the caller skips.
inline bool load_golden_fixture(const std::string& prefix, GoldenFixture* g) {
  const char* env = std::getenv("PGOLF_GOLDEN_DIR");
  const std::filesystem::path dir = env != nullptr && *env != '\0'
                                        ? std::filesystem::path(env)
                                        : std::filesystem::path(PGOLF_SOURCE_DIR) / "tests/fixtures/golden";
  const auto weights = dir / (prefix + "_weights.safetensors"), io = dir / (prefix + "_io.safetensors"),
             scalars = dir / (prefix + "_scalars.json");
  if (!std::filesystem::exists(weights) || !std::filesystem::exists(io) || !std::filesystem::exists(scalars))
    return false;
  g->weights_path = weights.string();
  for (auto& nt : read_safetensors(io.string())) g->io[nt.name] = nt.tensor;
  std::ifstream f(scalars);
  g->scalars = nlohmann::json::parse(f);
  return true;
}

}  // namespace pgolf::model::testing
