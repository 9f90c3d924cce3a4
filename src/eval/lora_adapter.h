#pragma once
// The adapters of per-document LoRA TTT (TECHNIQUES.md §8.4): for every virtual layer slot a pair (A, B) on
// Q, K, V, O and the MLP, plus one on the head, each with a separate copy per document of a batch (row g of
// every factor belongs to the document in batch row g). Delta W x = (alpha / r) B (A x), A (r, in) drawn
// U(+-1/sqrt(in)), B (out, r) zero. AdamW state per element; a step only touches the first n documents.
#include <cstdint>
#include <vector>

#include "eval/lora_ttt.h"
#include "model/gpt.h"
#include "model/tape.h"

namespace pgolf::eval {

class LoraAdapters final : public model::GPT::Adapter {
 public:
  LoraAdapters(const model::GPT& model, const LoraTttOptions& opt, int64_t max_docs);
  int64_t max_docs() const { return max_docs_; }
  int num_slots() const { return slots_; }
  size_t bytes() const { return bytes_; }
  // The next forward's batch rows are documents first .. first + count - 1.
  void use_rows(int64_t first, int64_t count);
  // A new batch of n documents: B <- 0, AdamW state <- 0, step count <- 0; A <- its init, unless warm_a and a
  // batch ran before (then A stays where the previous batch left it).
  void begin_batch(int64_t n);
  void zero_grad(int64_t n);  // gradients of documents [0, n)
  void step(int64_t n);       // one AdamW step on documents [0, n) (they must have fresh gradients)
  model::Var apply(model::Tape& tp, model::GPT::AdapterSite site, int slot, const model::Var& in,
                   const model::Var& out) override;

  // Every factor, for tests: f32 values (edit them, then sync_compute()) and gradients, (max_docs, rows, cols).
  struct Factor {
    model::GPT::AdapterSite site;
    int slot;  // -1: head
    bool is_b;
    Tensor value, grad;
  };
  std::vector<Factor> factors() const;
  void sync_compute(int64_t n);  // refresh the matmul copies of documents [0, n)

 private:
  struct Mat {
    Tensor value, grad, m, v, compute, init;  // (max_docs, rows, cols); compute undefined on f32 models
  };
  struct Entry {
    model::GPT::AdapterSite site;
    int slot;
    Mat a, b;
  };
  Entry* find(model::GPT::AdapterSite site, int slot);

  LoraTttOptions opt_;
  DType act_;
  Device dev_;
  int64_t max_docs_;
  int slots_;
  float scale_;
  std::vector<Entry> entries_;
  std::vector<int> index_;  // (slots + 1) * 6 -> entry or -1
  int64_t first_ = 0, count_ = 0;
  int64_t steps_ = 0;
  bool started_ = false;
  Tensor hp_;  // (8) f32 AdamW hyperparameters (ops/optim.h)
  size_t bytes_ = 0;
};

}  // namespace pgolf::eval
