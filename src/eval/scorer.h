#pragma once
// The one scorer every evaluation mode goes through: windows (windows.h) batched into forward
// passes, NLL summed over each window's scored rows, bytes from data::count_scored_bytes (the
// shared §3.2 accounting), optionally score-first TTT between chunks (ttt.h), a time budget, and
// "probes" that capture the full scoring distribution at chosen positions for the audit (audit.h).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "data/bpb.h"
#include "eval/lora_ttt.h"
#include "eval/mixer.h"
#include "eval/ttt.h"
#include "eval/windows.h"
#include "model/gpt.h"

namespace pgolf::eval {

// Deliberately illegal scorers, for testing the auditor only (the CLI never sets them).
enum class TestLeak {
  None,
  InputSeesTarget,    // row i is fed tokens[t] instead of tokens[t - 1]: the model reads its own target
  MixTarget,          // p'(k) = (p(k) + 1[k = target]) / 2: normalised but depends on the target
  UnnormalizedBlend,  // target-keyed cache (seed #915): p'(y) = p(y)/2 + 1/2 evaluated only at the target
  TrainBeforeScore,   // TTT that adapts on a chunk before scoring it (pre-scoring TTT, table (e))
  NgramCountsTarget,  // the n-gram cache counts x_t before mixing at t (update before score)
};

struct EvalOptions {
  Mode mode = Mode::Sliding;
  int64_t context = 2048;
  int64_t stride = 64;
  int64_t batch_tokens = 65536;  // rows per forward = max(1, batch_tokens / context)
  double time_budget_s = 0;      // 0 = none; else stop after the batch that crosses it (partial result)
  TttOptions ttt;
  PhasedTttOptions phased;       // phased global TTT (§8.4), with or without chunk TTT
  NgramOptions ngram;            // legal n-gram mixture (§8.7, mixer.h)
  TapInOptions tapin;            // Tap-In (§8.6, mixer.h)
  LoraTttOptions lora;           // per-document LoRA TTT (§8.4, lora_ttt.h): its own document scorer
  bool keep_token_nll = false;   // fill EvalResult::token_nll / score_count (tests, audits)
  std::vector<int64_t> probes;   // target positions whose full distribution is captured
  bool stop_after_probes = false;  // end as soon as every probe is captured (audit reruns)
  TestLeak leak = TestLeak::None;
  // Split over ranks (docs/DISTRIBUTED.md): null or world 1 = one process. With world W > 1 every rank calls
  // evaluate() with the same model, tokens and options; the forward batches are dealt round-robin (batch k of
  // a group to rank k mod W, the same batches one rank would run), per-window NLL sums are all-gathered as
  // doubles and added in window order, so the result equals one rank's bit for bit (every rank returns it).
  // TTT steps run data parallel (SgdAdapter). Mixing (n-gram, Tap-In), phased TTT, probes, keep_token_nll
  // and test leaks refuse world > 1.
  dist::Communicator* comm = nullptr;
};

struct Probe {
  int64_t position = 0;
  std::vector<float> logprobs;  // (V) the log-distribution that scored this position
  double scored_nll = 0;        // the NLL actually added to the total for this position
};

struct ChunkScore {
  int64_t first_target = 0, end_target = 0;  // scored target range of the chunk's windows
  data::BpbAccumulator acc;
};

struct EvalResult {
  data::BpbAccumulator acc;
  int64_t windows = 0;          // windows scored
  int64_t total_windows = 0;
  int64_t stream_targets = 0;   // n - 1
  int world = 1;                // ranks the scoring was split over
  bool partial = false;         // time budget exceeded (or stopped after probes): not the full stream
  std::vector<std::pair<std::string, double>> phase_seconds;  // prepare, score, mix, adapt, global_ttt
  std::vector<ChunkScore> chunks;
  int64_t ttt_steps = 0;         // SGD steps of chunk TTT, or AdamW steps (chunk rounds) of LoRA TTT
  int64_t phased_steps = 0;      // SGD steps of the phased global TTT
  std::vector<int64_t> phase_ends;  // target ends where a global phase ran
  int64_t ngram_fired = 0;       // scored targets where an n-gram order fired
  int64_t tapin_fired = 0;       // scored targets with a Tap-In hint (after the gate)
  size_t ngram_entries = 0;      // table entries at the end
  std::vector<float> token_nll;       // keep_token_nll: (n) NaN where not scored
  std::vector<uint8_t> score_count;   // keep_token_nll: (n) times each target was scored
  std::vector<Probe> probes;
};

// Scores `tokens` (all ids < vocab) with `model`. With TTT the model is adapted during the pass and
// restored to its entry weights before returning.
EvalResult evaluate(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                    const EvalOptions& opt);

}  // namespace pgolf::eval
