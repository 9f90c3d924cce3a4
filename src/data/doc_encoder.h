#pragma once
// Fast, exact document encoding with a SentencePiece model.
//
// SentencePiece encodes a whole document at about 1 MB/s per thread. Most of that work is repeated for every
// occurrence of a common word, so we cut the raw document at single ASCII spaces between two printable ASCII
// characters ("x y"). There the normalized text is exactly "x▁y", and when no vocabulary piece holds "▁" after
// its first character (checked at construction), no BPE merge can cross that point: encoding each chunk alone
// (every chunk after the first in the context "x <chunk>", whose "x" ids are then dropped) and concatenating gives the same ids as encoding the document.
// Each thread keeps a cache from chunk to ids. Models that break the invariant fall back to whole documents.
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pgolf::data {

// True when no normal or user-defined piece contains "▁" after its first character.
bool chunking_is_exact(const sentencepiece::SentencePieceProcessor& sp);

class DocEncoder {
 public:
  // chunked = false forces whole-document encoding (the reference path, used by tests).
  DocEncoder(const sentencepiece::SentencePieceProcessor& sp, bool chunked);
  // Appends the ids of `doc` (no BOS) to out; fails naming `what` when SentencePiece fails.
  void encode(std::string_view doc, std::vector<uint16_t>& out, const std::string& what);
  bool chunked() const { return chunked_; }

 private:
  void encode_chunk(std::string_view chunk, bool leading_space, std::vector<uint16_t>& out, const std::string& what);

  const sentencepiece::SentencePieceProcessor& sp_;
  bool chunked_;
  std::unordered_map<std::string, std::vector<uint16_t>> cache_;
  std::string key_;
  std::vector<int> ids_;
  size_t context_ids_ = 0;  // number of ids of the context prefix "x"
};

}  // namespace pgolf::data
