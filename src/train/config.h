#pragma once
// The training configuration: a typed schema read from TOML (toml++), overridable by
// `--set section.key=value`. Every key has a default equal to the reference baseline
// (TECHNIQUES.md table (d1)); unknown keys are errors that list the closest known keys.
#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt.h"

namespace pgolf::train {

struct TrainSection {
  uint64_t seed = 1337;
  int64_t iterations = 20000;
  double max_wallclock_seconds = 600;   // 0 = no cap
  int64_t train_batch_tokens = 524288;  // global tokens per optimizer step
  int64_t seq_len = 1024;
  int64_t grad_accum = 0;               // 0 = auto: 8 / world_size
  int64_t warmup_steps = 20;            // compile warm-up steps, run then undone (no LR warm-up)
  int64_t warmdown_iters = 1200;
  double warmdown_frac = 0;             // > 0 selects the WARMDOWN_FRAC schedule (§6.6)
  double min_lr = 0;                    // floor of the warm-down multiplier (MIN_LR, §6.6)
  std::string lr_schedule = "wallclock";  // wallclock | step: what the progress fraction counts
  std::string warmdown_shape = "linear";  // linear | cosine (0.5 (1 + cos(pi q)), q = warm-down progress)
  int64_t lr_warmup_steps = 0;          // linear LR warm-up over the first N steps (GDN seed, §6.6); 0 = none
  int64_t loop_warmup_steps = 0;        // extra compile warm-up steps with looping on (§5.12); undone like warmup_steps
  int64_t val_loss_every = 1000;        // 0 = only at the end
  int64_t val_batch_tokens = 524288;    // tokens per validation step (split into micro-batches)
  int64_t val_max_tokens = 0;           // 0 = the whole val stream; else a prefix (quick runs)
  int64_t train_log_every = 200;
  int64_t checkpoint_every = 0;         // 0 = only on signal
  std::string device = "auto";          // cpu | cuda | auto
  double peak_flops = 989e12;           // MFU denominator: H100 SXM bf16 dense
  bool int8_roundtrip = true;           // final int8+zlib export and its val_bpb (§4.5)
  bool cuda_graph = true;               // replay whole steps from CUDA graphs (one GPU, no profiling)
  bool overlap_grad_reduce = true;      // data parallel: reduce each block's gradients while the backward goes on
};

struct OptimSection {
  double matrix_lr = 0.04;
  double scalar_lr = 0.04;
  double tied_embed_lr = 0.05;
  double muon_momentum = 0.95;
  double muon_momentum_warmup_start = 0.85;
  int64_t muon_momentum_warmup_steps = 500;
  int64_t muon_backend_steps = 5;
  bool nesterov = true;
  std::string muon_coefficients = "baseline";  // baseline (3.4445, -4.7750, 2.0315) | polar_express
  bool muon_row_normalize = false;             // MuonEq-R (§6.1)
  bool muon_sharded = true;                    // data parallel: each rank orthogonalises its share (§6.2)
  // Data parallel "Parallel Muon" (§6.2, docs/DISTRIBUTED.md): the Muon gradients are reduce-scattered instead of
  // all-reduced and each rank keeps the momentum of the matrices it owns only (1/world of the memory). Needs
  // muon_sharded; a no-op with one rank.
  bool muon_shard_momentum = false;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip_norm = 0;  // 0 = off
  double muon_weight_decay = 0;
  double embed_weight_decay = 0;
  double scalar_weight_decay = 0;
  // Muon WD taper (§6.4): full WD until progress muon_wd_taper_start, then linear to
  // muon_wd_taper_final x WD at the end of training; final = 1 is no taper.
  double muon_wd_taper_start = 0.7;
  double muon_wd_taper_final = 1.0;
  // Weight averaging (§6.7, §6.8), see train/ema.h.
  double ema_decay = 0;               // > 0: EMA of the weights after every step from step 0
  int64_t swa_every = 0;              // > 0: SWA snapshot every K steps while lr_mult < swa_lr_threshold
  double swa_lr_threshold = 0.5;
  std::string final_weights = "auto";  // auto | live | ema | swa | ema_swa: the weights evaluated and exported
};

struct DataSection {
  std::string train = "data-local/default/default_train_*.bin";
  std::string val = "data-local/default/default_val_*.bin";
  std::string tokenizer = "data-local/default/default_1024_bpe.model";
  // sequential: the baseline's stream in file order (§2.5 TokenStream); shuffled: random T-token windows
  // drawn over the whole corpus (§2.5 ShuffledSequenceLoader, the records of 2026-04-05 … 04-09), seeded by
  // train.seed; document_packing: the stream's span as one flat row per micro-step with attention inside
  // documents (§2.5 DocumentPackingLoader, R:2026-04-10 … top).
  std::string loader = "sequential";
};

// Late QAT (TECHNIQUES.md §7.3, quant/qat.h): the block matrices are fake-quantized in the forward
// (straight-through gradient) while the lr multiplier is below lr_threshold.
struct QatSection {
  bool enabled = false;
  double lr_threshold = 0.15;  // > 1: the whole run
  int64_t bits = 6;
  bool clipped_ste = false;    // zero the gradient where a code saturated (the spec: identity)
};

struct OutputSection {
  std::string run_dir = "runs/latest";
};

struct Config {
  model::ModelConfig model;
  std::string model_compute_dtype = "auto";  // auto (bf16 on cuda, f32 on cpu) | f32 | bf16
  TrainSection train;
  OptimSection optim;
  DataSection data;
  QatSection qat;
  OutputSection output;
};

// Reads `path` over the defaults. Errors name the file, the key and the expected type.
Config load_config_file(const std::string& path);
// Parses TOML text (`origin` names it in errors) over `base`.
Config parse_config_text(const std::string& text, const std::string& origin, Config base = Config{});
// Applies "section.key=value" (value parsed by the key's type).
void apply_override(Config& cfg, const std::string& assignment);
// The resolved config as TOML (every key, stable order); parse_config_text(to_toml(c)) == c.
std::string to_toml(const Config& cfg);
// Keys in "section.key" form, for suggestions and docs.
std::vector<std::string> known_keys();
// Up to `n` known keys closest to `key` (edit distance), best first.
std::vector<std::string> closest_keys(const std::string& key, size_t n = 3);
// Cross-field checks (positive sizes, divisibility, enum values). Throws with a clear message.
void validate(const Config& cfg, int world_size = 1);

size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace pgolf::train
