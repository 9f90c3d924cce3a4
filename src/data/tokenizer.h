#pragma once
// SentencePiece tokenizers: loading (with errors naming the file) and training with the official
// exporter's settings (TECHNIQUES.md §2.3).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pgolf::data {

constexpr int kPadId = 0, kBosId = 1, kEosId = 2, kUnkId = 3;
constexpr int kMinVocab = 256, kMaxVocab = 65535;  // ids must fit uint16 shards

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_tokenizer(const std::string& model_path);

struct TokenizerTrainOptions {
  int vocab_size = 1024;
  double character_coverage = 0.999;
  int64_t max_sentence_length = 4192;  // SentencePiece's default, as the official exporter (longer docs skipped)
  int num_threads = 0;                 // 0 = hardware concurrency
  bool quiet = false;                  // hide SentencePiece's warnings (e.g. "too long line ... skipped")
};

// Pulls documents from next_doc until it returns false and trains a BPE model; writes <prefix>.model and
// <prefix>.vocab atomically. Returns the number of documents fed.
int64_t train_tokenizer(const std::function<bool(std::string&)>& next_doc, const std::string& out_prefix,
                        const TokenizerTrainOptions& opt);

}  // namespace pgolf::data
