#pragma once
// The default corpus: public-domain English prose from Debian packages that the README's set-up installs
// (apt-get install --no-install-recommends jargon-text dict-devil). See docs/DATA.md for sources and licenses.
#include <string>
#include <vector>

#include "data/encode.h"

namespace pgolf::data {

struct DefaultCorpusFile {
  std::string path;
  std::string package;
  std::string title;
};

const std::vector<DefaultCorpusFile>& default_corpus_files();
// Fails with the apt-get command to run when a file is missing.
void check_default_corpus();

struct DefaultJobOptions {
  std::string out_dir = "data-local/default";
  int vocab_size = 1024;
  int64_t val_docs = 50;
  int threads = 0;
  bool progress = false;
};

struct DefaultJobResult {
  std::string tokenizer_model;
  EncodeSummary encode;
  double tokenizer_seconds = 0;
};

// Trains <out>/default_<vocab>_bpe.model on the corpus, then encodes it into <out>/default_{val,train}_*.bin.
DefaultJobResult build_default_dataset(const DefaultJobOptions& opt);

}  // namespace pgolf::data
