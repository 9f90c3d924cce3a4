// Gradient-ready reporting for data-parallel overlap (gpt.h set_grad_ready, issue 10): the trainer starts
// each block's gradient reduction while the backward is still working on the blocks below it.
//
// A block's tensors are final once the backward has run every closure recorded after the block's first
// forward visit; Tape::on_backward places that point. The guarantee needs every use of a block tensor to come
// after its marker, which GPT::p() checks while the forward runs: a block used earlier (a cross-layer module)
// is "unsafe" from then on and waits for the end of the backward with the tensors outside any block.
#include <charconv>

#include "model/gpt.h"
#include "model/tape.h"

namespace pgolf::model {

namespace {

// "blocks.<l>.<...>" -> l, else -1.
int block_of_name(const std::string& name, int num_layers) {
  constexpr std::string_view kPrefix = "blocks.";
  if (name.rfind(kPrefix, 0) != 0) return -1;
  const char* first = name.data() + kPrefix.size();
  const char* last = name.data() + name.size();
  int l = -1;
  auto [end, ec] = std::from_chars(first, last, l);
  if (ec != std::errc() || end == last || *end != '.' || l < 0 || l >= num_layers) return -1;
  return l;
}

}  // namespace

void GPT::mark_block(Tape& tp, int layer) {
  if (!track_uses_ || layer < 0 || static_cast<size_t>(layer) >= bucket_marked_.size() ||
      bucket_marked_[static_cast<size_t>(layer)])
    return;
  bucket_marked_[static_cast<size_t>(layer)] = 1;
  tp.on_backward([this, layer] { report_bucket(layer); });
}

void GPT::note_use(size_t index) {
  const int b = index < bucket_of_.size() ? bucket_of_[index] : -1;
  if (b >= 0 && !bucket_marked_[static_cast<size_t>(b)]) bucket_unsafe_[static_cast<size_t>(b)] = 1;
}

void GPT::report_bucket(int bucket) {
  if (!grad_ready_) return;
  if (bucket >= 0 && bucket_unsafe_[static_cast<size_t>(bucket)]) return;
  std::vector<size_t> ready;
  for (size_t i = 0; i < bucket_of_.size(); ++i) {
    if (param_reported_[i] || (bucket >= 0 && bucket_of_[i] != bucket)) continue;
    param_reported_[i] = 1;
    ready.push_back(i);
  }
  if (!ready.empty()) grad_ready_(ready);
}

void GPT::begin_grad_ready(bool active) {
  track_uses_ = active && static_cast<bool>(grad_ready_);
  if (!track_uses_) return;
  const auto& all = params_.all();
  if (bucket_of_.size() != all.size()) {
    bucket_of_.assign(all.size(), -1);
    for (size_t i = 0; i < all.size(); ++i) bucket_of_[i] = block_of_name(all[i].spec.name, cfg_.num_layers);
    bucket_unsafe_.assign(static_cast<size_t>(cfg_.num_layers), 0);
  }
  bucket_marked_.assign(static_cast<size_t>(cfg_.num_layers), 0);
  param_reported_.assign(all.size(), 0);
}

void GPT::end_grad_ready_forward() { track_uses_ = false; }

}  // namespace pgolf::model
