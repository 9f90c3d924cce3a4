// Per-document LoRA TTT (TECHNIQUES.md §8.4, src/eval/lora_ttt.*): documents and chunk windows, exact agreement
// with document-isolated scoring when nothing adapts, score-first behaviour, that adapting helps, the LoRA
// gradient against finite differences, and clear errors for bad settings.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/memory.h"
#include "eval/lora_adapter.h"
#include "eval/scorer.h"
#include "eval_test_util.h"
#include "ops/random.h"

namespace pgolf::eval {
namespace {

using testing::doc_stream;
using testing::kBos;
using testing::synthetic_luts;
using testing::tiny_model;

EvalOptions lora_opts(float lr = 0.01f) { return testing::lora_test_options(64, lr); }

EvalOptions doc_opts() {  // plain document-isolated scoring; documents of doc_stream fit in one window
  EvalOptions o = lora_opts();
  o.lora.enabled = false;
  return o;
}

TEST(EvalLora, DocumentsChunksAndBatches) {
  const auto toks = doc_stream(300, 32, 5);
  const int64_t n = static_cast<int64_t>(toks.size());
  const auto docs = find_documents(toks.data(), n, kBos);
  ASSERT_GE(docs.size(), 5u);
  std::vector<int> scored(static_cast<size_t>(n), 0);
  for (const LoraDoc& d : docs) {
    for (int64_t c = 0; c < lora_num_chunks(d, 8); ++c) {
      const Window w = lora_chunk_window(d, c, 8, 12);
      EXPECT_GE(w.start, d.begin);  // inside the document only
      EXPECT_LE(w.len, 12);
      EXPECT_LE(w.scored(), 8);
      EXPECT_EQ(w.end_target(), std::min(d.begin + (c + 1) * 8, d.end) + 1);  // the window ends at the chunk's last target
      for (int64_t t = w.first_target(); t < w.end_target(); ++t) ++scored[static_cast<size_t>(t)];
    }
  }
  for (int64_t t = 1; t < n; ++t) EXPECT_EQ(scored[static_cast<size_t>(t)], 1) << "target " << t;
  const auto batches = lora_batches(docs, 3);
  int64_t prev = std::numeric_limits<int64_t>::max();
  size_t count = 0;
  for (const auto& b : batches) {
    EXPECT_LE(b.size(), 3u);
    for (size_t i : b) {
      EXPECT_LE(docs[i].targets(), prev);  // longest first, within and across batches
      prev = docs[i].targets();
      ++count;
    }
  }
  EXPECT_EQ(count, docs.size());
}

TEST(EvalLora, ZeroLrEqualsDocumentScoring) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(400, 32, 11);
  const auto ref = evaluate(m, toks, luts, doc_opts());
  const auto got = evaluate(m, toks, luts, lora_opts(0.f));
  EXPECT_EQ(got.acc.tokens, ref.acc.tokens);
  EXPECT_EQ(got.acc.tokens, static_cast<int64_t>(toks.size()) - 1);
  EXPECT_EQ(got.acc.bytes, ref.acc.bytes);
  // Every target as doc scoring gives it, up to f32 rounding: OpenBLAS picks kernels by shape, and a chunk's
  // window is a prefix of the document's window (doc mode itself differs this much between batch sizes).
  for (size_t t = 1; t < toks.size(); ++t)
    ASSERT_NEAR(got.token_nll[t], ref.token_nll[t], 1e-5 * std::max(1.f, ref.token_nll[t])) << "target " << t;
  EXPECT_NEAR(got.acc.nll_nats, ref.acc.nll_nats, 1e-7 * ref.acc.nll_nats);
  EXPECT_GT(got.ttt_steps, 0);
  EXPECT_FALSE(got.partial);
}

TEST(EvalLora, FirstChunkOfEachDocumentIsUnadapted) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(400, 32, 12);
  const auto ref = evaluate(m, toks, luts, doc_opts());
  const auto got = evaluate(m, toks, luts, lora_opts(0.05f));
  const auto docs = find_documents(toks.data(), static_cast<int64_t>(toks.size()), kBos);
  int changed = 0;
  for (const LoraDoc& d : docs) {
    for (int64_t t = d.begin + 1; t <= d.end; ++t) {
      const size_t i = static_cast<size_t>(t);
      const double diff = std::abs(got.token_nll[i] - ref.token_nll[i]);
      if (t <= d.begin + 8) EXPECT_LT(diff, 1e-5 * std::max(1.f, ref.token_nll[i])) << "target " << t;  // B = 0
      else changed += diff > 1e-3;
    }
  }
  EXPECT_GT(changed, 100);  // later chunks are scored with adapted weights
  // The model comes back as it was: no adapter, zero gradients.
  EXPECT_EQ(m.adapter(), nullptr);
  for (const auto& p : m.params().all())
    for (float g : p.grad.to_float_vector()) ASSERT_EQ(g, 0.f) << p.spec.name;
}

TEST(EvalLora, AdaptingHelpsOnARepetitiveDocument) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  std::vector<uint16_t> toks(321);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(2 + (i * 7) % 13);
  toks[0] = kBos;  // one document of 320 targets: 40 chunks, 39 AdamW steps
  const auto base = evaluate(m, toks, luts, lora_opts(0.f));
  auto o = lora_opts(0.02f);
  o.lora.rank = 8;
  const auto adapted = evaluate(m, toks, luts, o);
  EXPECT_EQ(adapted.ttt_steps, 39);
  EXPECT_LT(adapted.acc.loss(), base.acc.loss() - 0.2) << adapted.acc.loss() << " vs " << base.acc.loss();
  // The same call again gives the same numbers: nothing of the adaptation survives in the model.
  EXPECT_EQ(evaluate(m, toks, luts, o).acc.nll_nats, adapted.acc.nll_nats);
}

TEST(EvalLora, WarmAChangesOnlyLaterBatches) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  const auto toks = doc_stream(400, 32, 13);
  auto cold = lora_opts(0.05f), warm = cold;
  warm.lora.warm_a = true;
  const auto a = evaluate(m, toks, luts, cold), b = evaluate(m, toks, luts, warm);
  const auto docs = find_documents(toks.data(), static_cast<int64_t>(toks.size()), kBos);
  const auto batches = lora_batches(docs, 3);
  ASSERT_GE(batches.size(), 2u);
  for (size_t i : batches[0])
    for (int64_t t = docs[i].begin + 1; t <= docs[i].end; ++t)
      EXPECT_EQ(a.token_nll[static_cast<size_t>(t)], b.token_nll[static_cast<size_t>(t)]);
  EXPECT_NE(a.acc.nll_nats, b.acc.nll_nats);
}

// B = 0 adds exactly nothing: the same batch scores bit for bit as the bare model, whatever A is.
TEST(EvalLora, ZeroBLeavesTheModelBitForBit) {
  auto m = tiny_model(4);
  LoraTttOptions lo;
  lo.rank = 3;
  LoraAdapters ad(m, lo, 2);
  ad.begin_batch(2);
  const int64_t B = 2, T = 12;
  const Tensor ids = model::testing::random_ids(B, T, 32, 6), targets = model::testing::random_ids(B, T, 32, 7);
  Arena arena(Device::CPU, "lora zero B");
  arena.reserve(m.plan_bytes(B, T) * 2);
  Tensor bare = Tensor::empty(Shape{B * T}, DType::F32), with = Tensor::empty(Shape{B * T}, DType::F32);
  m.forward_losses(ids, targets, arena, bare);
  m.set_adapter(&ad);
  ad.use_rows(0, 2);
  m.forward_losses(ids, targets, arena, with);
  m.set_adapter(nullptr);
  EXPECT_EQ(with.to_float_vector(), bare.to_float_vector());
}

// Analytic gradients of the adapters (two documents, every factor random) against central differences of the
// mean token loss. The ops are f32, so the step is large and the tolerance loose; a wrong term (a missing scale,
// a transposed factor, another document's rows) is off by far more.
TEST(EvalLora, GradientMatchesFiniteDifferences) {
  auto m = tiny_model(3);
  LoraTttOptions lo;
  lo.rank = 3;
  lo.alpha = 6;
  LoraAdapters ad(m, lo, 2);
  ad.begin_batch(2);
  auto fs = ad.factors();
  for (size_t i = 0; i < fs.size(); ++i) ops::fill_uniform(fs[i].value, 99, i << 20, -0.3f, 0.3f);
  ad.sync_compute(2);
  m.set_adapter(&ad);
  ad.use_rows(0, 2);
  const int64_t B = 2, T = 6;
  const Tensor ids = model::testing::random_ids(B, T, 32, 4), targets = model::testing::random_ids(B, T, 32, 5);
  Arena arena(Device::CPU, "lora fd");
  arena.reserve(m.plan_bytes(B, T) * 2);
  Tensor losses = Tensor::empty(Shape{B * T}, DType::F32);
  auto mean_loss = [&] {
    m.forward_losses(ids, targets, arena, losses);
    double s = 0;
    for (float l : losses.to_float_vector()) s += l;
    return s / static_cast<double>(B * T);
  };
  ad.zero_grad(2);
  m.params().zero_grads();
  m.forward_backward_losses(ids, targets, 1.f / static_cast<float>(B * T), arena, losses);
  int checked = 0, bad = 0, big = 0;
  for (size_t f = 0; f < fs.size(); f += 3) {  // a spread of factors: every site appears
    std::vector<float> val = fs[f].value.to_float_vector();
    const std::vector<float> grad = fs[f].grad.to_float_vector();
    const size_t stride = val.size() / 2;  // document 0, then document 1
    for (size_t i : {size_t{0}, stride / 2 + 1, stride + 3, val.size() - 1}) {
      const float saved = val[i], h = 2e-2f;
      auto at = [&](float x) {
        val[i] = x;
        fs[f].value.copy_from(Tensor::from_vector(val, fs[f].value.shape()));
        return mean_loss();
      };
      const double fd = (8.0 * (at(saved + h) - at(saved - h)) - (at(saved + 2 * h) - at(saved - 2 * h))) / (12.0 * h);
      at(saved);
      const double an = grad[i];
      ++checked;
      big += std::abs(an) > 1e-3;
      if (std::abs(fd - an) > 3e-4 + 2e-2 * std::abs(fd)) {
        ++bad;
        ADD_FAILURE() << "factor " << f << (fs[f].is_b ? " B" : " A") << " slot " << fs[f].slot << " element " << i
                      << ": analytic " << an << " vs finite difference " << fd;
      }
    }
  }
  m.set_adapter(nullptr);
  EXPECT_GE(checked, 40);
  EXPECT_GE(big, checked / 2);  // the check is not vacuous
  EXPECT_EQ(bad, 0);
}

// A document's per-token NLLs under LoRA TTT are a function of its own tokens alone, bit for bit. Every forward of
// chunk round c has the shape lora_round_shape(c) wherever the document lands, so the other documents (their
// lengths, their number, whether later ones change) cannot reach its rounding. Before that (one forward per round
// over the active documents, padded to the longest window) 41 of these 51 targets differed by up to 4e-5 here, and
// the AdamW steps (beta1 = 0, tiny eps) turn such rounding into full-size differences on bf16 GPUs (the audit
// failed by 0.06 nats). OpenBLAS also rounds a row differently by its position inside a larger matrix of the same
// shape, so on the CPU the document's batch row must match too: one row per forward (forward_tokens 1) gives the
// same numbers in every batch; with several rows per forward, in every batch that puts it in the same row.
TEST(EvalLora, DocumentScoresDoNotDependOnItsBatch) {
  auto m = tiny_model();
  const auto luts = synthetic_luts(32);
  auto doc = [](int64_t len, uint64_t seed) {  // BOS then len - 1 ids in [2, 32)
    std::vector<uint16_t> d(static_cast<size_t>(len));
    d[0] = kBos;
    for (int64_t i = 1; i < len; ++i)
      d[static_cast<size_t>(i)] = static_cast<uint16_t>(2 + rng::bits(seed, static_cast<uint64_t>(i)).x % 30);
    return d;
  };
  const std::vector<uint16_t> x = doc(51, 1);  // 51 targets (its own 50 ids and the next BOS): 7 chunks of 8
  struct Case {
    const char* name;
    std::vector<std::vector<uint16_t>> before, after;
  };
  auto scores_of_x = [&](const Case& c, const EvalOptions& o) {
    std::vector<uint16_t> toks;
    for (const auto& d : c.before) toks.insert(toks.end(), d.begin(), d.end());
    const auto begin = static_cast<std::ptrdiff_t>(toks.size());
    toks.insert(toks.end(), x.begin(), x.end());
    for (const auto& d : c.after) toks.insert(toks.end(), d.begin(), d.end());
    toks.push_back(kBos);  // the last document's closing BOS
    const auto r = evaluate(m, toks, luts, o);
    EXPECT_FALSE(r.partial);
    return std::vector<float>(r.token_nll.begin() + begin + 1, r.token_nll.begin() + begin + 1 + 51);
  };
  auto expect_same = [](const std::vector<float>& got, const std::vector<float>& ref, const std::string& what) {
    int differ = 0;
    float worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      differ += got[i] != ref[i];
      worst = std::max(worst, std::abs(got[i] - ref[i]));
    }
    EXPECT_EQ(differ, 0) << what << ": " << differ << " of " << got.size() << " targets differ, by up to " << worst;
  };
  auto o = lora_opts(0.05f);  // 3 documents per batch, context 64, chunks of 8

  // One row per forward: the same numbers alone, in any batch row, with any partners, whatever comes later.
  o.lora.forward_tokens = 1;
  const std::vector<Case> anywhere = {
      {"alone", {}, {}},
      {"row 2, longer partners, shorter documents later", {}, {doc(70, 2), doc(47, 3), doc(13, 4), doc(90, 5)}},
      {"row 2, other partners and later documents", {}, {doc(53, 6), doc(29, 7), doc(120, 8), doc(6, 9)}},
      {"row 1, after other documents", {doc(58, 10), doc(40, 11), doc(9, 12)}, {doc(33, 13)}},
      {"row 0 of the second batch", {doc(58, 10), doc(52, 14), doc(60, 15)}, {doc(33, 13)}},
  };
  const std::vector<float> ref = scores_of_x(anywhere[0], o);
  for (size_t i = 1; i < anywhere.size(); ++i) expect_same(scores_of_x(anywhere[i], o), ref, anywhere[i].name);

  // All of a batch's rows in one forward (3 rows, every window padded to the round's length): the same numbers
  // whenever the document is in the same row, whatever the other documents' lengths (and so the rounds where
  // they stop) and contents, and whatever comes later.
  o.lora.forward_tokens = 1 << 20;
  const std::vector<Case> row1 = {
      {"70, x, 45 (then 20, 10)", {doc(70, 16)}, {doc(20, 17), doc(45, 18), doc(10, 19)}},
      {"58, x, 30 (then 13, 9, 6)", {}, {doc(58, 20), doc(13, 21), doc(9, 22), doc(30, 23), doc(6, 24)}},
      {"52, x, 17 (then 8)", {doc(17, 25)}, {doc(52, 26), doc(8, 27)}},
  };
  const std::vector<float> ref1 = scores_of_x(row1[0], o);
  for (size_t i = 1; i < row1.size(); ++i) expect_same(scores_of_x(row1[i], o), ref1, row1[i].name);

  // The check is not vacuous: later chunks are adapted (they differ from lr 0).
  auto o0 = o;
  o0.lora.lr = 0;
  const std::vector<float> base = scores_of_x(anywhere[0], o0);
  int changed = 0;
  for (size_t i = 8; i < ref.size(); ++i) changed += std::abs(base[i] - ref[i]) > 1e-3;
  EXPECT_GT(changed, 20);
}

TEST(EvalLora, BadSettingsGiveClearErrors) {
  auto expect_error = [](LoraTttOptions o, const char* what) {
    try {
      check_lora_options(o, 64);
      ADD_FAILURE() << "no error for " << what;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  LoraTttOptions o;
  o.rank = 0;
  expect_error(o, "--lora-rank");
  o = {};
  o.chunk = 65;
  expect_error(o, "--lora-chunk");
  o = {};
  o.docs_per_batch = 0;
  expect_error(o, "--lora-docs-per-batch");
  o = {};
  o.lr = -1;
  expect_error(o, "--lora-lr");
  o = {};
  o.beta2 = 1;
  expect_error(o, "--lora-beta2");
  o = {};
  o.sites = "q,x";
  expect_error(o, "'x'");
  o = {};
  o.alpha = 0;
  expect_error(o, "--lora-alpha");
  auto m = tiny_model();
  auto bad = lora_opts();
  bad.ttt.enabled = true;
  EXPECT_THROW(evaluate(m, doc_stream(100, 32, 1), synthetic_luts(32), bad), std::exception);
}

// The CUDA path (bf16 activations, cuBLASLt batched matmuls for the adapters, the AdamW kernel) against the CPU:
// the same weights and stream, the score and the gain from adapting close to the CPU's.
TEST(EvalLoraGpu, MatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto cpu = tiny_model();
  model::ModelConfig cfg = testing::tiny_eval_config();
  cfg.act_dtype = DType::BF16;
  model::GPT gpu(cfg, Device::CUDA);
  for (size_t i = 0; i < cpu.params().all().size(); ++i)
    gpu.params().all()[i].value.copy_from(cpu.params().all()[i].value);
  gpu.params().sync_compute();
  const auto luts = synthetic_luts(32);
  std::vector<uint16_t> toks(641);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint16_t>(2 + (i * 7) % 13);
  for (size_t i = 0; i < toks.size(); i += 160) toks[i] = kBos;  // four repetitive documents
  auto o = lora_opts(0.02f);
  o.lora.rank = 8;
  const auto base_c = evaluate(cpu, toks, luts, lora_opts(0.f)), base_g = evaluate(gpu, toks, luts, lora_opts(0.f));
  const auto a = evaluate(cpu, toks, luts, o), b = evaluate(gpu, toks, luts, o);
  EXPECT_EQ(b.acc.tokens, a.acc.tokens);
  EXPECT_EQ(b.acc.bytes, a.acc.bytes);
  EXPECT_NEAR(base_g.acc.loss(), base_c.acc.loss(), 2e-2 * base_c.acc.loss());
  EXPECT_NEAR(b.acc.loss(), a.acc.loss(), 3e-2 * a.acc.loss());
  const double gain_c = base_c.acc.loss() - a.acc.loss(), gain_g = base_g.acc.loss() - b.acc.loss();
  EXPECT_GT(gain_c, 0.2);
  EXPECT_NEAR(gain_g, gain_c, 0.25 * gain_c);
}

}  // namespace
}  // namespace pgolf::eval
