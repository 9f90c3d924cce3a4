// pgolf data tokenizer | encode | inspect | bytes | default
#include <sentencepiece_processor.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "data/bpb.h"
#include "data/default_corpus.h"
#include "data/encode.h"
#include "data/input.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace pgolf::cli {

namespace {

using namespace pgolf::data;

struct ReaderFlags {
  std::string field = "text";
  std::string format = "auto";
  std::string txt_split = "paragraph";
  int64_t txt_chunk = 0;

  void add(CLI::App* sub) {
    sub->add_option("--field", field, "JSON field holding the document text")->capture_default_str();
    sub->add_option("--format", format, "Input format: auto (by extension), jsonl or txt")
        ->check(CLI::IsMember({"auto", "jsonl", "txt"}))
        ->capture_default_str();
    sub->add_option("--txt-split", txt_split, "Text documents: paragraph (blank-line separated) or file")
        ->check(CLI::IsMember({"paragraph", "file"}))
        ->capture_default_str();
    sub->add_option("--txt-chunk", txt_chunk, "Merge consecutive paragraphs into documents of at least this many bytes")
        ->capture_default_str();
  }
  ReaderOptions get() const {
    ReaderOptions r;
    r.field = field;
    r.format = format == "jsonl" ? InputFormat::Jsonl : format == "txt" ? InputFormat::Text : InputFormat::Auto;
    r.text_split = txt_split == "file" ? TextSplit::File : TextSplit::Paragraph;
    r.txt_chunk_bytes = txt_chunk;
    return r;
  }
};

void print_split(const char* name, const SplitSummary& s) {
  std::printf("%-5s %9lld docs %12lld tokens %13lld bytes  %zu shard(s)\n", name, static_cast<long long>(s.documents),
              static_cast<long long>(s.tokens), static_cast<long long>(s.bytes), s.shards.size());
}

void print_encode_summary(const EncodeSummary& s) {
  print_split("val", s.val);
  print_split("train", s.train);
  for (const auto& [what, n] : s.skipped) std::printf("skipped %lld %s document(s)\n", static_cast<long long>(n), what.c_str());
  const double mb = static_cast<double>(s.input_bytes) / 1e6;
  std::printf("encoded %.1f MB in %.2f s (%.1f MB/s); manifest %s\n", mb, s.seconds, mb / s.seconds,
              s.manifest_path.c_str());
}

void add_tokenizer(CLI::App& data) {
  auto* sub = data.add_subcommand("tokenizer", "Train a SentencePiece BPE tokenizer with the official settings");
  struct Args {
    std::vector<std::string> inputs;
    std::string out;
    TokenizerTrainOptions topt;
    int64_t max_docs = 1'000'000;
    bool skip_bad = false;
    ReaderFlags reader;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("inputs", a->inputs, "Input files, folders or globs")->required();
  sub->add_option("--out", a->out, "Output prefix: writes PREFIX.model and PREFIX.vocab")->required();
  sub->add_option("--vocab", a->topt.vocab_size, "Vocabulary size (256..65535)")->capture_default_str();
  sub->add_option("--max-docs", a->max_docs, "Train on the first N documents")->capture_default_str();
  sub->add_option("--max-sentence-length", a->topt.max_sentence_length,
                  "Documents longer than this many bytes are skipped by the trainer (official: 4192)")
      ->capture_default_str();
  sub->add_option("--threads", a->topt.num_threads, "Trainer threads (0 = all cores)");
  sub->add_flag("--skip-bad", a->skip_bad, "Skip invalid or empty documents instead of failing");
  a->reader.add(sub);
  sub->callback([a] {
    PG_CHECK(a->topt.vocab_size >= kMinVocab && a->topt.vocab_size <= kMaxVocab,
             "--vocab {} is outside [{}, {}]: token ids are stored as uint16", a->topt.vocab_size, kMinVocab, kMaxVocab);
    RecordReader reader(expand_inputs(a->inputs, a->reader.get().format), a->reader.get());
    RawRecord rec;
    int64_t fed = 0, skipped = 0;
    auto next_doc = [&](std::string& text) {
      while (fed < a->max_docs && reader.next(rec)) {
        const uint32_t src = rec.source;
        ExtractedDoc d = extract_document(std::move(rec), reader.sources()[src], a->reader.field);
        if (d.status != DocStatus::Ok) {
          PG_CHECK(a->skip_bad, "{} (use --skip-bad to skip such documents)", d.error);
          ++skipped;
          continue;
        }
        text = std::move(d.text);
        ++fed;
        return true;
      }
      return false;
    };
    const auto t0 = std::chrono::steady_clock::now();
    train_tokenizer(next_doc, a->out, a->topt);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("trained %s.model (vocab %d) on %lld documents in %.1f s", a->out.c_str(), a->topt.vocab_size,
                static_cast<long long>(fed), s);
    if (skipped) std::printf(", %lld skipped", static_cast<long long>(skipped));
    std::printf("\n");
  });
}

void add_encode(CLI::App& data) {
  auto* sub = data.add_subcommand("encode", "Encode documents into challenge shards (BOS before each document)");
  struct Args {
    EncodeOptions opt;
    ReaderFlags reader;
    bool no_progress = false;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("inputs", a->opt.inputs, "Input files, folders or globs (.jsonl/.txt, optionally .gz/.xz/.zst)");
  sub->add_option("--tokenizer", a->opt.tokenizer, "SentencePiece model")->required();
  sub->add_option("--out", a->opt.out_dir, "Output folder")->required();
  sub->add_option("--prefix", a->opt.prefix, "Shard name prefix: PREFIX_train_000000.bin")->capture_default_str();
  sub->add_option("--val", a->opt.val_inputs, "Separate validation inputs (every document goes to val)");
  sub->add_option("--val-docs", a->opt.val_docs, "The first N documents go to val (as the official export)");
  sub->add_option("--max-docs", a->opt.max_docs, "Stop after N documents");
  sub->add_option("--shard-tokens", a->opt.shard_tokens, "At most this many tokens per shard")->capture_default_str();
  sub->add_option("--threads", a->opt.threads, "Encoding threads (0 = all cores)");
  sub->add_flag("--skip-bad", a->opt.skip_bad, "Skip (and count) invalid or empty documents instead of failing");
  sub->add_flag("--no-progress", a->no_progress, "No progress line even on a terminal");
  a->reader.add(sub);
  sub->callback([a] {
    a->opt.reader = a->reader.get();
    a->opt.progress = !a->no_progress && ::isatty(2);
    print_encode_summary(encode_corpus(a->opt));
  });
}

void add_inspect(CLI::App& data) {
  auto* sub = data.add_subcommand("inspect", "Print a shard's header, token count, id range and a decoded sample");
  struct Args {
    std::string file, tokenizer;
    int sample = 64;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("file", a->file, "Shard file")->required();
  sub->add_option("--tokenizer", a->tokenizer, "SentencePiece model to decode a sample with");
  sub->add_option("--sample", a->sample, "Tokens to decode")->capture_default_str();
  sub->callback([a] {
    ShardInfo info = read_shard_header(a->file);
    std::printf("file      %s\nheader    magic %d, version %d\ntokens    %lld\n", a->file.c_str(), kShardMagic,
                kShardVersion, static_cast<long long>(info.n_tokens));
    auto tokens = read_shard(a->file);
    if (tokens.empty()) return;
    int lo = 65535, hi = 0;
    int64_t bos = 0;
    for (uint16_t t : tokens) {
      lo = std::min<int>(lo, t);
      hi = std::max<int>(hi, t);
      bos += t == kBosId;
    }
    std::printf("id range  [%d, %d]\nid 1      %lld occurrences (documents, if BOS = 1)\n", lo, hi,
                static_cast<long long>(bos));
    if (!a->tokenizer.empty()) {
      auto sp = load_tokenizer(a->tokenizer);
      PG_CHECK(hi < sp->GetPieceSize(), "shard {} holds id {} but tokenizer {} has {} pieces", a->file, hi,
               a->tokenizer, sp->GetPieceSize());
      const size_t n = std::min(tokens.size(), static_cast<size_t>(std::max(a->sample, 0)));
      std::vector<int> ids(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n));
      std::string text;
      auto st = sp->Decode(ids, &text);
      PG_CHECK(st.ok(), "decoding {} failed: {}", a->file, st.ToString());
      std::printf("sample    (first %zu tokens)\n%s\n", n, text.c_str());
    }
  });
}

void add_bytes(CLI::App& data) {
  auto* sub = data.add_subcommand("bytes", "Scored targets and scored bytes of a shard (exact BPB accounting)");
  struct Args {
    std::vector<std::string> shards;
    std::string tokenizer;
    int vocab = 0;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("shards", a->shards, "Shard file(s), folder or glob; concatenated in sorted order")->required();
  sub->add_option("--tokenizer", a->tokenizer, "SentencePiece model")->required();
  sub->add_option("--vocab", a->vocab, "Model vocabulary size (default: the tokenizer's)");
  sub->callback([a] {
    std::vector<uint16_t> all;
    for (const auto& pat : a->shards)
      for (const auto& path : list_shards(pat)) {
        auto t = read_shard(path);
        all.insert(all.end(), t.begin(), t.end());
      }
    ByteLuts luts = build_byte_luts(a->tokenizer, a->vocab);
    const auto n = static_cast<int64_t>(all.size());
    const int64_t bytes = n >= 2 ? count_scored_bytes(luts, all.data(), 1, n) : 0;
    std::printf("tokens %lld\nscored_targets %lld\nscored_bytes %lld\n", static_cast<long long>(n),
                static_cast<long long>(std::max<int64_t>(n - 1, 0)), static_cast<long long>(bytes));
  });
}

void add_default(CLI::App& data) {
  auto* sub = data.add_subcommand("default", "Build the default corpus: tokenizer + shards (see docs/DATA.md)");
  auto a = std::make_shared<DefaultJobOptions>();
  sub->add_option("--out", a->out_dir, "Output folder")->capture_default_str();
  sub->add_option("--vocab", a->vocab_size, "Tokenizer vocabulary size")->capture_default_str();
  sub->add_option("--val-docs", a->val_docs, "Documents held out for validation")->capture_default_str();
  sub->add_option("--threads", a->threads, "Threads (0 = all cores)");
  sub->callback([a] {
    a->progress = ::isatty(2);
    DefaultJobResult r = build_default_dataset(*a);
    std::printf("tokenizer %s (%.1f s)\n", r.tokenizer_model.c_str(), r.tokenizer_seconds);
    print_encode_summary(r.encode);
  });
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto* sub = app.add_subcommand("data", "Tokenizers, shards and byte accounting");
  sub->require_subcommand(1);
  add_tokenizer(*sub);
  add_encode(*sub);
  add_inspect(*sub);
  add_bytes(*sub);
  add_default(*sub);
}

}  // namespace pgolf::cli
