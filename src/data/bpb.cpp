#include "data/bpb.h"

#include <sentencepiece_processor.h>

#include <cmath>
#include <limits>
#include <string_view>

#include "core/error.h"
#include "data/tokenizer.h"

namespace pgolf::data {

ByteLuts build_byte_luts(const std::string& sp_model_path, int vocab_size) {
  auto sp = load_tokenizer(sp_model_path);
  const int sp_vocab = sp->GetPieceSize();
  if (vocab_size <= 0) vocab_size = sp_vocab;
  PG_CHECK(vocab_size >= sp_vocab,
           "tokenizer {} has {} pieces but the model vocabulary is only {}: its ids would not all be scorable",
           sp_model_path, sp_vocab, vocab_size);
  const size_t n = static_cast<size_t>(vocab_size);
  ByteLuts luts;
  luts.sp_vocab = sp_vocab;
  luts.base_bytes.assign(n, 0);
  luts.has_leading_space.assign(n, 0);
  luts.is_boundary.assign(n, 1);  // ids >= sp_vocab stay boundaries
  constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁"
  for (int i = 0; i < sp_vocab; ++i) {
    if (sp->IsControl(i) || sp->IsUnknown(i) || sp->IsUnused(i)) continue;
    luts.is_boundary[i] = 0;
    if (sp->IsByte(i)) {
      luts.base_bytes[i] = 1;
      continue;
    }
    std::string_view piece = sp->IdToPiece(i);
    if (piece.substr(0, kSpace.size()) == kSpace) {
      luts.has_leading_space[i] = 1;
      piece.remove_prefix(kSpace.size());
    }
    luts.base_bytes[i] = static_cast<int32_t>(piece.size());
  }
  return luts;
}

double BpbAccumulator::bpb() const {
  if (bytes == 0) return std::numeric_limits<double>::quiet_NaN();
  return nll_nats / (std::log(2.0) * static_cast<double>(bytes));
}

int64_t count_scored_bytes(const ByteLuts& luts, const uint16_t* tokens, int64_t first, int64_t last) {
  PG_CHECK(first >= 1 && first <= last, "count_scored_bytes: invalid target range [{}, {}) (first must be >= 1)",
           first, last);
  const size_t table = luts.base_bytes.size();
  PG_CHECK(table > 0, "count_scored_bytes: empty byte tables");
  int64_t total = 0;
  for (int64_t t = first; t < last; ++t) {
    const uint16_t prev = tokens[t - 1], target = tokens[t];
    if (target >= table || prev >= table)
      PG_FAIL("count_scored_bytes: token id {} at position {} is outside the {}-entry byte table",
              std::max(prev, target), target >= table ? t : t - 1, table);
    total += luts.bytes(prev, target);
  }
  return total;
}

}  // namespace pgolf::data
