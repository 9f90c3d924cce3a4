#include "data/doc_encoder.h"

#include <sentencepiece_processor.h>

#include "core/error.h"

namespace pgolf::data {

namespace {
constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581
constexpr size_t kMaxCacheEntries = 1 << 20;          // bounded memory per thread (cleared when full)

constexpr const char* kContext = "x ";

inline bool printable_ascii(char c) { return c >= 0x21 && c <= 0x7E; }
}  // namespace

bool chunking_is_exact(const sentencepiece::SentencePieceProcessor& sp) {
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    if (sp.IsControl(i) || sp.IsUnknown(i) || sp.IsUnused(i) || sp.IsByte(i)) continue;
    const std::string& piece = sp.IdToPiece(i);
    if (piece.find(kSpace, 1) != std::string::npos) return false;
  }
  return true;
}

DocEncoder::DocEncoder(const sentencepiece::SentencePieceProcessor& sp, bool chunked)
    : sp_(sp), chunked_(chunked && chunking_is_exact(sp)) {
  context_ids_ = sp_.EncodeAsIds(std::string_view(kContext, 1)).size();
}

void DocEncoder::encode_chunk(std::string_view chunk, bool leading_space, std::vector<uint16_t>& out,
                              const std::string& what) {
  // A chunk that follows a space is encoded in the context "x <chunk>" (normalized "x▁<chunk>"), and the ids of
  // "x" are dropped: SentencePiece strips a leading space, so the chunk alone would lose its "▁".
  key_.clear();
  if (leading_space) key_ += kContext;
  key_ += chunk;
  auto it = cache_.find(key_);
  if (it == cache_.end()) {
    auto st = sp_.Encode(key_, &ids_);
    PG_CHECK(st.ok(), "{}: SentencePiece failed: {}", what, st.ToString());
    const size_t skip = leading_space ? context_ids_ : 0;
    PG_CHECK(ids_.size() >= skip, "{}: unexpected SentencePiece output for a chunk", what);
    std::vector<uint16_t> ids(ids_.begin() + static_cast<std::ptrdiff_t>(skip), ids_.end());
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    it = cache_.emplace(key_, std::move(ids)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

void DocEncoder::encode(std::string_view doc, std::vector<uint16_t>& out, const std::string& what) {
  if (!chunked_) {
    auto st = sp_.Encode(doc, &ids_);
    PG_CHECK(st.ok(), "{}: SentencePiece failed: {}", what, st.ToString());
    out.insert(out.end(), ids_.begin(), ids_.end());
    return;
  }
  size_t start = 0;
  bool leading = false;
  for (size_t p = 1; p + 1 < doc.size(); ++p) {
    if (doc[p] != ' ' || !printable_ascii(doc[p - 1]) || !printable_ascii(doc[p + 1])) continue;
    encode_chunk(doc.substr(start, p - start), leading, out, what);
    start = p + 1;
    leading = true;
  }
  encode_chunk(doc.substr(start), leading, out, what);
}

}  // namespace pgolf::data
