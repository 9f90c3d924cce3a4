#pragma once
// Per-document LoRA test-time training (TECHNIQUES.md §8.4, the top record's version; docs/EVAL.md).
// Documents are cut at BOS (a document's targets run to and include the next BOS), grouped by length into
// batches (longest batch first) and scored in chunks of `chunk` targets; every chunk is scored with a window of
// up to `context` tokens of its own document ending at its last target, its NLL committed FIRST, and only then
// (when the document has more chunks) one AdamW step on the mean loss of exactly those targets updates that
// document's own adapters. Base weights never change. Adapters: lora_adapter.h. Every forward of chunk round c
// has a shape fixed by c and the settings (lora_round_shape), so a document's computation does not depend on
// which other documents share its batch (the lengths that decide the batching are later tokens).
#include <cstdint>
#include <string>
#include <vector>

#include "data/bpb.h"
#include "eval/windows.h"
#include "model/gpt.h"

namespace pgolf::eval {

struct EvalOptions;
struct EvalResult;

struct LoraTttOptions {
  bool enabled = false;
  int rank = 80;                   // r
  float alpha = 144.f;             // Delta W x = (alpha / r) B (A x)
  int64_t chunk = 48;              // targets per chunk (<= the eval context)
  int64_t docs_per_batch = 64;
  // Rows of one forward in a chunk round whose windows are L long: clamp(forward_tokens / L, 1, docs_per_batch).
  // The forward's shape is a function of the round alone, never of the other documents (see lora_round_shape).
  // Default 1 (one document per forward): on the H200 larger groups still failed the audit (a document's row in
  // the group moves the bf16 rounding); 8192 adapts ~4x faster but is not batch-independent there (docs/EVAL.md).
  int64_t forward_tokens = 1;
  float lr = 1e-4f;                // AdamW
  float beta1 = 0.f, beta2 = 0.99f, eps = 1e-10f, weight_decay = 0.5f;
  // false: every document starts from the same A (strictly causal, audited). true: A carries over from the
  // document that used the same batch row in the previous batch (PR #1767; see docs/EVAL.md on legality).
  bool warm_a = false;
  std::string sites = "q,k,v,o,mlp,head";  // adapted projections, any subset
  uint64_t seed = 0x5eed10aULL;   // A's init U(+-1/sqrt(in))
  // true: the base weights are frozen for the evaluation (model::ParamTable::set_frozen), so the backward skips
  // their gradients (every dW GEMM, the embedding scatter, the scalar reductions). false: the old full backward,
  // whose base gradients are thrown away; kept for the tests and A/B timings, which get the same losses.
  bool frozen_base = true;
};

// Clear errors for bad settings (also checks the sites list).
void check_lora_options(const LoraTttOptions& o, int64_t context);
// Which of Q, K, V, O, MLP, head (model::GPT::AdapterSite order) are adapted; errors name the bad entry.
std::vector<bool> parse_lora_sites(const std::string& spec);

// A document: inputs [begin, end), targets begin+1 .. end (end = the next BOS, or the last position).
struct LoraDoc {
  int64_t begin = 0, end = 0;
  int64_t targets() const { return end - begin; }
};
// Documents start at 0 and at every BOS in [1, n-1) (the same cut as the doc mode's windows).
std::vector<LoraDoc> find_documents(const uint16_t* tokens, int64_t n, int bos_id);
int64_t lora_num_chunks(const LoraDoc& d, int64_t chunk);
// The window scoring chunk c of d: targets begin + c*chunk + 1 .. min(begin + (c+1)*chunk, end), inputs from
// max(begin, begin + (c+1)*chunk - context) (inside the document only; where a full chunk's window would start,
// so a short last chunk's context does not depend on where the document ends).
Window lora_chunk_window(const LoraDoc& d, int64_t c, int64_t chunk, int64_t context);
// The shape of every forward of chunk round c (rows, L): L = min((c+1) * chunk, context), the longest window a
// chunk c can have, and rows = clamp(forward_tokens / L, 1, docs_per_batch). A round's active documents run in
// groups of `rows` batch rows (the last group padded with empty rows), every window right-padded to L. Being a
// function of c and the settings alone, a document's computation at its chunk c has the same shape whatever its
// batch, so on shape-dependent kernels (cuBLASLt, OpenBLAS) its results do not depend on the other documents.
struct LoraRoundShape {
  int64_t rows = 0, len = 0;
};
LoraRoundShape lora_round_shape(const LoraTttOptions& o, int64_t c, int64_t context);
// Document indices in batches of at most per_batch: sorted by target count, longest first (ties: stream order),
// so inside a batch the documents still to be scored at any chunk are a prefix of it.
std::vector<std::vector<size_t>> lora_batches(const std::vector<LoraDoc>& docs, int64_t per_batch);

// The scorer of EvalOptions::lora (called by evaluate(); one rank; probes and keep_token_nll supported).
EvalResult evaluate_lora(model::GPT& model, const std::vector<uint16_t>& tokens, const data::ByteLuts& luts,
                         const EvalOptions& opt);

}  // namespace pgolf::eval
