#pragma once
// Model <-> artifact: the model config as JSON (the artifact's config text) and rebuilding a GPT
// from an artifact (every tensor dequantized into the parameter table) or from a training run
// directory (final weights or the trainer's checkpoint). Everything the evaluator needs to score
// a shipped artifact goes through load_model_from_artifact; nothing is read from the run dir.
#include <memory>
#include <string>

#include "artifact/format.h"
#include "model/gpt.h"

namespace pgolf::artifact {

// The architecture under "model" plus {"arch": "pgolf-gpt", "config_version": 1}. act_dtype is not
// stored: it is a property of the device that runs the model, not of the weights.
std::string model_config_to_json(const model::ModelConfig& cfg);
// Parses text written by model_config_to_json. Unknown keys, a different arch/version, and
// configs this build cannot run (bad divisibility, unknown activation, ...) are errors naming
// `source` and the key. Missing keys keep the ModelConfig defaults.
model::ModelConfig model_config_from_json(const std::string& json, const std::string& source);
// Throws naming `source` unless this build can build and run `cfg`.
void check_model_config(const model::ModelConfig& cfg, const std::string& source);

// The activation dtype a model on `dev` computes in (bf16 on CUDA, f32 on CPU), as the trainer picks it.
DType default_act_dtype(Device dev);

// A GPT from an in-memory artifact: every parameter must be present exactly once with the table's
// shape; extra tensors are errors (a model this build does not know). `source` names it in errors.
std::unique_ptr<model::GPT> model_from_artifact(const Artifact& a, Device dev, const std::string& source);
// Reads + validates the file (reader.h) then model_from_artifact.
std::unique_ptr<model::GPT> load_model_from_artifact(const std::string& path, Device dev);

// A trained model from a run directory: the config from RUN_DIR/config.toml, the weights from
// RUN_DIR/final_model.safetensors if present, else from RUN_DIR/checkpoint.bin (parameters only;
// optimizer state is read and dropped). Errors name the folder and what is missing.
std::unique_ptr<model::GPT> load_model_from_run(const std::string& run_dir, Device dev);
std::string final_weights_path(const std::string& run_dir);  // RUN_DIR/final_model.safetensors

}  // namespace pgolf::artifact
