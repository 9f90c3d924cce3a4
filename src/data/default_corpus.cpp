#include "data/default_corpus.h"

#include <chrono>
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"

namespace pgolf::data {

const std::vector<DefaultCorpusFile>& default_corpus_files() {
  static const std::vector<DefaultCorpusFile> files = {
      {"/usr/share/doc/jargon-text/jargon.txt.gz", "jargon-text", "The Jargon File 4.4.7 (public domain)"},
      {"/usr/share/dictd/devil.dict.dz", "dict-devil", "Ambrose Bierce, The Devil's Dictionary (public domain)"},
  };
  return files;
}

void check_default_corpus() {
  for (const auto& f : default_corpus_files()) {
    std::error_code ec;
    PG_CHECK(std::filesystem::is_regular_file(f.path, ec),
             "default corpus file {} ({}) is missing: run `sudo apt-get install --no-install-recommends jargon-text "
             "dict-devil`",
             f.path, f.title);
  }
}

namespace {
// Paragraphs merged into ~2 KB documents: long enough for useful context, short enough that SentencePiece's
// trainer sees every one of them (it skips sentences longer than max_sentence_length).
ReaderOptions default_reader() {
  ReaderOptions r;
  r.format = InputFormat::Text;
  r.text_split = TextSplit::Paragraph;
  r.txt_chunk_bytes = 2048;
  return r;
}
}  // namespace

DefaultJobResult build_default_dataset(const DefaultJobOptions& opt) {
  check_default_corpus();
  std::vector<std::string> inputs;
  for (const auto& f : default_corpus_files()) inputs.push_back(f.path);
  std::filesystem::create_directories(opt.out_dir);

  DefaultJobResult res;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string prefix = (std::filesystem::path(opt.out_dir) / fmt::format("default_{}_bpe", opt.vocab_size)).string();
  RecordReader reader(inputs, default_reader());
  RawRecord rec;
  auto next_doc = [&](std::string& text) {
    while (reader.next(rec)) {
      ExtractedDoc d = extract_document(std::move(rec), reader.sources()[rec.source], "text");
      if (d.status != DocStatus::Ok) continue;  // the corpus is known-clean; nothing to report
      text = std::move(d.text);
      return true;
    }
    return false;
  };
  TokenizerTrainOptions topt;
  topt.vocab_size = opt.vocab_size;
  topt.max_sentence_length = 16384;
  topt.num_threads = opt.threads;
  topt.quiet = true;  // the corpus has a few long tables of contents that the trainer skips; that is expected
  train_tokenizer(next_doc, prefix, topt);
  res.tokenizer_model = prefix + ".model";
  res.tokenizer_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  EncodeOptions eopt;
  eopt.inputs = inputs;
  eopt.val_docs = opt.val_docs;
  eopt.tokenizer = res.tokenizer_model;
  eopt.out_dir = opt.out_dir;
  eopt.prefix = "default";
  eopt.threads = opt.threads;
  eopt.progress = opt.progress;
  eopt.reader = default_reader();
  res.encode = encode_corpus(eopt);
  return res;
}

}  // namespace pgolf::data
