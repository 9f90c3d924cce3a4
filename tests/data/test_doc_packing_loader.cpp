// DocumentPackingLoader (data/doc_packing_loader.h, TECHNIQUES.md §2.5) and its use by the model and trainer:
// segment boundaries (BOS, and documents cut every seq_len tokens from their start) on hand-made rows and against
// the model's ops::doc_starts, the flat (1, local_tokens) layout of the sequential stream's span, determinism,
// checkpoint/resume through TrainLoader::State, bad inputs, and a tiny packed training run.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "data/doc_packing_loader.h"
#include "data/shard.h"
#include "data/train_loader.h"
#include "data_test_util.h"
#include "model/gpt.h"
#include "model/model_test_util.h"
#include "ops/documents.h"
#include "test_util.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace pgolf;
using namespace pgolf::data;
using pgolf::data::test::ScratchDir;
using pgolf::test::error_of;

namespace {

constexpr int kBos = 1;

// A shard of documents: BOS, then `len` tokens 2 + (k % 50) for each length in `lens`, repeated to n tokens.
void make_doc_shard(const std::string& path, const std::vector<int>& lens, int n) {
  std::vector<uint16_t> t;
  int k = 0;
  while (static_cast<int>(t.size()) < n) {
    for (int len : lens) {
      t.push_back(kBos);
      for (int i = 0; i < len; ++i) t.push_back(static_cast<uint16_t>(2 + (k++ % 50)));
    }
  }
  t.resize(static_cast<size_t>(n));
  write_shard(path, t.data(), n);
}

std::vector<int64_t> starts(const std::vector<int32_t>& x, int64_t max_len) {
  return segment_starts(x.data(), static_cast<int64_t>(x.size()), kBos, max_len);
}

// ops::doc_starts of one row (the model's per-position segment start).
std::vector<int32_t> doc_start_row(const std::vector<int32_t>& x, int64_t max_len) {
  const auto n = static_cast<int64_t>(x.size());
  const Tensor ids = Tensor::from_vector(x, Shape{1, n});
  Tensor out = Tensor::zeros(Shape{1, n}, DType::I32);
  ops::doc_starts(ids, kBos, out, max_len);
  return std::vector<int32_t>(out.ptr<int32_t>(), out.ptr<int32_t>() + n);
}

// Expands segment starts to the start of each position's segment.
std::vector<int32_t> expand(const std::vector<int64_t>& s, int64_t n) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  size_t k = 0;
  for (int64_t t = 0; t < n; ++t) {
    while (k + 1 < s.size() && s[k + 1] <= t) ++k;
    out[static_cast<size_t>(t)] = static_cast<int32_t>(s[k]);
  }
  return out;
}

}  // namespace

TEST(DocumentPacking, SegmentBoundariesByHand) {
  //                         0  1  2  3  4  5  6  7  8  9 10 11
  const std::vector<int32_t> x{5, 1, 7, 7, 7, 7, 7, 1, 9, 1, 4, 4};
  EXPECT_EQ(starts(x, 0), (std::vector<int64_t>{0, 1, 7, 9}));         // BOS only
  EXPECT_EQ(starts(x, 3), (std::vector<int64_t>{0, 1, 4, 7, 9}));      // the 6-token document cut at 1 + 3
  EXPECT_EQ(starts(x, 2), (std::vector<int64_t>{0, 1, 3, 5, 7, 9, 11}));  // from each document's BOS, not from 0
  // The span's first, partial document is cut from position 0.
  const std::vector<int32_t> y{7, 7, 7, 7, 7, 1, 3, 3};
  EXPECT_EQ(starts(y, 2), (std::vector<int64_t>{0, 2, 4, 5, 7}));
  // The model's per-position starts (ops::doc_starts with max_len) are the same segments.
  for (int64_t L : {0, 2, 3, 5}) {
    EXPECT_EQ(doc_start_row(x, L), expand(starts(x, L), 12)) << "max_len " << L;
    EXPECT_EQ(doc_start_row(y, L), expand(starts(y, L), 8)) << "max_len " << L;
  }
  EXPECT_THROW(segment_starts(x.data(), 12, kBos, -1), Error);
  const Tensor ids = Tensor::from_vector(x, Shape{1, 12});
  Tensor out = Tensor::zeros(Shape{1, 12}, DType::I32);
  EXPECT_THROW(ops::doc_starts(ids, kBos, out, -1), Error);
}

TEST(DocumentPacking, OneFlatRowOfTheSequentialSpan) {
  ScratchDir dir;
  make_doc_shard(dir / "d_train_000000.bin", {5, 40, 3, 90, 17}, 3000);
  make_doc_shard(dir / "d_train_000001.bin", {200, 9}, 2000);
  const std::string pat = dir / "d_train_*.bin";
  // 2 ranks x 2 micro-steps x 64 tokens per micro-step, seq_len 16.
  for (int rank = 0; rank < 2; ++rank) {
    DocumentPackingLoader packed(pat, 16, kBos);
    DistributedTokenLoader seq(pat);
    for (int step = 0; step < 40; ++step) {  // crosses into the second shard and wraps around
      const Batch p = packed.next_batch(256, 16, rank, 2, 2);
      const Batch s = seq.next_batch(256, 16, rank, 2, 2);
      ASSERT_EQ(p.rows, 1);
      ASSERT_EQ(p.seq_len, 64);
      EXPECT_EQ(s.rows, 4);
      EXPECT_EQ(p.x, s.x) << "the same tokens as the sequential loader";
      EXPECT_EQ(p.y, s.y);
      for (size_t i = 0; i + 1 < p.x.size(); ++i) EXPECT_EQ(p.y[i], p.x[i + 1]);
      // Every segment is at most seq_len tokens and starts at a BOS, a cut or the span start.
      const auto seg = starts(p.x, 16);
      for (size_t k = 0; k < seg.size(); ++k) {
        const int64_t end = k + 1 < seg.size() ? seg[k + 1] : 64;
        EXPECT_LE(end - seg[k], 16);
      }
    }
  }
}

TEST(DocumentPacking, DeterministicAndResumesThroughTrainLoaderState) {
  ScratchDir dir;
  make_doc_shard(dir / "d_train_000000.bin", {30, 7, 120}, 5000);
  const std::string pat = dir / "d_train_*.bin";
  TrainLoader a("document_packing", pat, 8, 0, 1, 1, kBos), b("document_packing", pat, 8, 0, 1, 99, kBos);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next_batch(32, 8, 0, 1, 1).x, b.next_batch(32, 8, 0, 1, 1).x);
  const TrainLoader::State s = a.state();
  std::vector<std::vector<int32_t>> next;
  for (int i = 0; i < 5; ++i) next.push_back(a.next_batch(32, 8, 0, 1, 1).x);
  TrainLoader c("document_packing", pat, 8, 0, 1, 1, kBos);
  c.restore(s);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(c.next_batch(32, 8, 0, 1, 1).x, next[static_cast<size_t>(i)]);
  // The sequential loader reads the same stream: its position resumes a packed run (and back).
  TrainLoader seq("sequential", pat, 8, 0, 1, 1);
  seq.restore(s);
  EXPECT_EQ(seq.next_batch(32, 8, 0, 1, 1).x, next[0]);
  // A shuffled loader's state does not.
  TrainLoader shuf("shuffled", pat, 8, 0, 1, 1);
  shuf.next_batch(32, 8, 0, 1, 1);
  EXPECT_NE(error_of([&] { c.restore(shuf.state()); }).find("shuffled loader"), std::string::npos);
  EXPECT_NE(error_of([&] { shuf.restore(s); }).find("sequential"), std::string::npos);
}

TEST(DocumentPacking, BadInputsFailClearly) {
  ScratchDir dir;
  make_doc_shard(dir / "d_train_000000.bin", {30, 7}, 1000);
  const std::string pat = dir / "d_train_*.bin";
  EXPECT_NE(error_of([&] { DocumentPackingLoader(pat, 8, 70000); }).find("not a token id"), std::string::npos);
  EXPECT_NE(error_of([&] { DocumentPackingLoader(pat, 0, kBos); }).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { DocumentPackingLoader(pat, 8, 60); }).find("no BOS"), std::string::npos);  // wrong bos
  DocumentPackingLoader l(pat, 8, kBos);
  EXPECT_NE(error_of([&] { l.next_batch(32, 16, 0, 1, 1); }).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { l.next_batch(36, 8, 0, 1, 1); }).find("multiple of seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { l.next_batch(32, 8, 2, 2, 1); }).find("rank"), std::string::npos);
  EXPECT_NE(error_of([&] { TrainLoader("packed", pat, 8, 0, 1, 1); }).find("document_packing"), std::string::npos);
  // The trainer's config: packing needs document-isolated attention.
  train::Config cfg;
  cfg.data.loader = "document_packing";
  EXPECT_NE(error_of([&] { train::validate(cfg, 1); }).find("doc_isolated"), std::string::npos);
  cfg.model.doc_isolated = true;
  EXPECT_NO_THROW(train::validate(cfg, 1));
  // The model's segment length is a packing setting of doc_isolated models only.
  model::ModelConfig mc;
  mc.vocab_size = 32;
  mc.num_layers = 1;
  mc.model_dim = 16;
  mc.num_heads = 2;
  mc.num_kv_heads = 1;
  model::GPT m(mc, Device::CPU);
  EXPECT_THROW(m.set_doc_segment_len(16), Error);
}

// The model on one flat row whose documents are cut every T tokens equals the model on (B, T) rows with
// document isolation when every row starts a document: the same segments, RoPE is relative, so the per-token
// losses agree to rounding.
TEST(DocumentPacking, FlatRowMatchesRowsWhenSegmentsAlign) {
  model::ModelConfig mc;
  mc.vocab_size = 32;
  mc.num_layers = 2;
  mc.model_dim = 32;
  mc.num_heads = 4;
  mc.num_kv_heads = 2;
  mc.doc_isolated = true;
  mc.bos_id = kBos;
  model::GPT rows(mc, Device::CPU), flat(mc, Device::CPU);
  model::testing::randomize(rows, 3);  // random W_o / W_2 too, so attention reaches the losses
  model::testing::randomize(flat, 3);
  flat.set_doc_segment_len(8);
  // 3 rows of 8: row 0 a document of 8 tokens, row 1 two documents, row 2 the start of a long document that
  // continues past the row (cut at 8 in the flat layout too).
  std::vector<int32_t> x{1, 5, 6, 7, 8, 9, 10, 11, 1, 3, 3, 1, 4, 4, 4, 4, 1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<int32_t> y(x.begin() + 1, x.end());
  y.push_back(9);
  auto losses = [](model::GPT& m, const std::vector<int32_t>& ids, const std::vector<int32_t>& tg, const Shape& s) {
    Arena arena(Device::CPU);
    arena.reserve(m.plan_bytes(s[0], s[1], false));
    Tensor out = Tensor::zeros(Shape{s[0] * s[1]}, DType::F32);
    m.forward_losses(Tensor::from_vector(ids, s), Tensor::from_vector(tg, s), arena, out);
    return out.to_float_vector();
  };
  const auto a = losses(rows, x, y, Shape{3, 8}), b = losses(flat, x, y, Shape{1, 24});
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 2e-5) << "token " << i;
  // Without the BOS at 16 the document of 11 runs on: packed, it is cut 8 tokens after ITS start (segments
  // [11, 19) and [19, 24)), so tokens 16..18 still see 11..15 — where the row layout cuts at 16 — and the cut at
  // 19 is what separates the cut flat row from the uncut one.
  x[16] = 2;
  const auto c = losses(rows, x, y, Shape{3, 8});
  const auto e = losses(flat, x, y, Shape{1, 24});
  flat.set_doc_segment_len(0);
  const auto d = losses(flat, x, y, Shape{1, 24});
  auto max_diff = [](const std::vector<float>& p, const std::vector<float>& q, size_t lo, size_t hi) {
    double m = 0;
    for (size_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(double(p[i]) - q[i]));
    return m;
  };
  EXPECT_EQ(max_diff(e, d, 0, 19), 0.0) << "the same segments up to the cut at 19";
  EXPECT_GT(max_diff(e, d, 19, 24), 1e-6) << "the cut at 19 changes what 19..23 see";
  EXPECT_GT(max_diff(e, c, 16, 19), 1e-6) << "rows cut the document at 16, packing does not";
  EXPECT_LT(max_diff(e, c, 0, 16), 2e-5);
}

// A tiny packed training run: learns, and a run resumed mid-way is bit-identical.
TEST(DocumentPacking, TrainerRunsPackedAndResumes) {
  namespace fs = std::filesystem;
  const std::string dir = (fs::temp_directory_path() / fmt::format("pgolf_packtrain_{}", ::getpid())).string();
  fs::remove_all(dir);
  fs::create_directories(dir + "/data");
  train::Config cfg = pgolf::test::tiny_training(dir, "t", 5, 7, 3, {4000, 1500}, 500);
  cfg.data.loader = "document_packing";
  cfg.model.doc_isolated = true;
  cfg.model.bos_id = kBos;  // the tiny corpus holds id 1 about once in 48 tokens
  cfg.train.train_batch_tokens = 128;
  cfg.train.grad_accum = 2;
  cfg.train.iterations = 6;
  cfg.train.warmdown_iters = 3;
  cfg.train.val_batch_tokens = 128;
  cfg.train.int8_roundtrip = false;
  auto opts = [&](const std::string& run, std::vector<double>* l) {
    train::RunOptions o;
    o.run_dir = dir + "/" + run;
    o.quiet = true;
    o.on_step = [l](int64_t, double v) { l->push_back(v); };
    return o;
  };
  std::vector<double> full, part, seq;
  const train::RunResult a = train::run_training(cfg, opts("full", &full));
  ASSERT_EQ(full.size(), 6u);
  EXPECT_LT(full.back(), full.front());
  train::RunOptions o = opts("split", &part);
  o.interrupt_after_steps = 3;
  train::run_training(cfg, o);
  o.interrupt_after_steps = -1;
  o.resume = true;
  const train::RunResult c = train::run_training(cfg, o);
  ASSERT_EQ(part.size(), 6u);
  EXPECT_EQ(full, part);
  EXPECT_EQ(a.val_loss, c.val_loss);
  // The same tokens as rows (sequential + doc_isolated) give a different model: documents crossing rows.
  train::Config rows = cfg;
  rows.data.loader = "sequential";
  train::run_training(rows, opts("rows", &seq));
  ASSERT_EQ(seq.size(), 6u);
  EXPECT_NE(seq, full);
  fs::remove_all(dir);
}
