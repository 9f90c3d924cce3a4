#pragma once
// `pgolf data encode`: documents -> challenge shards (TECHNIQUES.md §2.1-2.2), streaming and multi-threaded.
//
// One reader thread decompresses and splits records; worker threads parse, validate and encode batches of
// documents; a writer thread appends them IN INPUT ORDER (BOS before each document, no EOS) to
// <prefix>_val_NNNNNN.bin / <prefix>_train_NNNNNN.bin of at most shard_tokens tokens each. Memory is bounded by
// the number of batches in flight, and the output is byte-identical for any thread count.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "data/input.h"

namespace pgolf::data {

struct EncodeOptions {
  std::vector<std::string> inputs;      // files, folders, globs
  std::vector<std::string> val_inputs;  // if non-empty: every document of these goes to val (val_docs must be 0)
  int64_t val_docs = 0;                 // else: the first val_docs accepted documents go to val
  int64_t max_docs = -1;                // stop after this many accepted documents (< 0: all)
  std::string tokenizer;                // SentencePiece .model
  std::string out_dir;
  std::string prefix = "data";
  int64_t shard_tokens = 100'000'000;
  int threads = 0;  // 0 = hardware concurrency
  bool skip_bad = false;  // skip (and count) invalid/empty documents instead of failing
  bool progress = false;  // live progress line on stderr
  bool whole_documents = false;  // encode each document in one SentencePiece call (slow reference path)
  ReaderOptions reader;
};

struct ShardRecord {
  std::string file;  // name inside out_dir
  int64_t tokens = 0;
  std::string sha256;
};

struct SplitSummary {
  int64_t documents = 0;
  int64_t tokens = 0;  // including one BOS per document
  int64_t bytes = 0;   // UTF-8 bytes of the documents' text as read
  std::vector<ShardRecord> shards;
};

struct EncodeSummary {
  SplitSummary train, val;
  std::map<std::string, int64_t> skipped;  // by doc_status_name
  int64_t input_bytes = 0;                 // decompressed bytes read
  double seconds = 0;
  std::string manifest_path;
};

// Runs the whole job and writes <out_dir>/<prefix>_manifest.json atomically (after every shard).
EncodeSummary encode_corpus(const EncodeOptions& opt);

}  // namespace pgolf::data
