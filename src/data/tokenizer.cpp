#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "data/file_util.h"

namespace pgolf::data {

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_tokenizer(const std::string& model_path) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const std::string bytes = read_file(model_path);
  auto st = sp->LoadFromSerializedProto(bytes);
  PG_CHECK(st.ok(), "cannot load SentencePiece model {}: {}", model_path, st.ToString());
  PG_CHECK(sp->GetPieceSize() <= kMaxVocab + 1, "tokenizer {} has {} pieces: ids above 65535 do not fit uint16 shards",
           model_path, sp->GetPieceSize());
  return sp;
}

namespace {

// Feeds documents to the trainer one at a time (no temporary text file).
class DocIterator : public sentencepiece::SentenceIterator {
 public:
  explicit DocIterator(const std::function<bool(std::string&)>& next) : next_(next) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    if (!done_ && next_(value_)) ++count_;
    else done_ = true;
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }
  int64_t count() const { return count_; }

 private:
  const std::function<bool(std::string&)>& next_;
  std::string value_;
  bool done_ = false;
  int64_t count_ = 0;
};

}  // namespace

int64_t train_tokenizer(const std::function<bool(std::string&)>& next_doc, const std::string& out_prefix,
                        const TokenizerTrainOptions& opt) {
  PG_CHECK(opt.vocab_size >= kMinVocab && opt.vocab_size <= kMaxVocab,
           "vocab size {} is outside [{}, {}] (token ids are stored as uint16)", opt.vocab_size, kMinVocab, kMaxVocab);
  const int threads = opt.num_threads > 0 ? opt.num_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // The official exporter's settings (TECHNIQUES.md §2.3).
  std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"character_coverage", fmt::format("{}", opt.character_coverage)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "nmt_nfkc"},
      {"add_dummy_prefix", "false"},
      {"pad_id", std::to_string(kPadId)},
      {"bos_id", std::to_string(kBosId)},
      {"eos_id", std::to_string(kEosId)},
      {"unk_id", std::to_string(kUnkId)},
      {"hard_vocab_limit", "false"},
      {"max_sentence_length", std::to_string(opt.max_sentence_length)},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", opt.quiet ? "2" : "1"},
  };
  DocIterator it(next_doc);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  PG_CHECK(st.ok(), "SentencePiece training for {} failed after {} documents: {}", out_prefix, it.count(),
           st.ToString());

  sentencepiece::SentencePieceProcessor sp;
  auto lst = sp.LoadFromSerializedProto(proto);
  PG_CHECK(lst.ok(), "the trained model for {} does not load: {}", out_prefix, lst.ToString());
  std::string vocab;
  for (int i = 0; i < sp.GetPieceSize(); ++i) vocab += fmt::format("{}\t{}\n", sp.IdToPiece(i), sp.GetScore(i));
  write_file_atomic(out_prefix + ".model", proto);
  write_file_atomic(out_prefix + ".vocab", vocab);
  return it.count();
}

}  // namespace pgolf::data
