// `pgolf bench kernels --config FILE`: the op families of one training step, each timed alone through
// its ops:: API at the preset's micro-batch shapes, on the device the trainer would use. Every tensor is
// allocated before its op is timed; each row is the median of --reps runs after --warmup (CUDA events on
// the GPU, steady_clock on the CPU, see bench_util).
//
// Rates: matmuls and attention in TFLOP/s (2 M N K; attention as bench attention: causal forward
// 4 B Hq T^2 D / 2, backward 2.5x that), every other op in GB/s of the MINIMUM traffic it must move: each
// input read once, each output written once, an accumulated output read and written, per-channel (C)
// vectors and (N) row statistics included. Kernels that re-read a row from cache are not charged for it,
// so the GB/s is an effective rate, comparable with the copy ceiling. Element sizes: the f32 residual
// stream 4 bytes, activations `s` bytes (2 on the GPU, 4 on the CPU), as the tape stores them.
#include "cli/bench_preset_kernels.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/memory.h"
#include "data/file_util.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/channel_grad.h"
#include "ops/cross_entropy.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gdn.h"
#include "ops/matmul.h"
#include "ops/optim.h"
#include "ops/qk_prep.h"
#include "ops/residual_norm.h"
#include "ops/rmsnorm.h"
#include "ops/xsa.h"
#include "train/muon.h"

namespace pgolf::cli::bench {

PresetShapes preset_shapes(const train::Config& cfg) {
  train::validate(cfg, 1);
  model::check_model_config(cfg.model);
  const auto& m = cfg.model;
  const auto& t = cfg.train;
  PresetShapes s;
  const int64_t accum = t.grad_accum > 0 ? t.grad_accum : 8;  // the trainer's auto value on one rank
  s.T = t.seq_len;
  s.B = t.train_batch_tokens / (accum * t.seq_len);
  s.N = s.B * s.T;
  s.d = m.model_dim;
  s.H = m.num_heads;
  s.Hkv = m.num_kv_heads;
  s.D = m.head_dim();
  s.hidden = m.mlp_hidden();
  s.V = m.vocab_size;
  s.layers = m.num_layers;
  if (t.device == "cpu") {
    s.dev = Device::CPU;
  } else {
    PG_CHECK(t.device != "cuda" || cuda_available(), "bench kernels: train.device = \"cuda\" but no GPU is available");
    s.dev = cuda_available() ? Device::CUDA : Device::CPU;
  }
  s.act = cfg.model_compute_dtype == "bf16" ? DType::BF16
          : cfg.model_compute_dtype == "f32" ? DType::F32
          : s.dev == Device::CUDA            ? DType::BF16
                                             : DType::F32;
  return s;
}

MatmulCeiling matmul_ceiling(int64_t M, int64_t N, int64_t K, bool weight_gradient) {
  // ANCHORS.md §3, all at 98304 rows. Forward products (M x K)(K x N) are matched on (K, N), whatever M
  // is; weight gradients (M x rows)(rows x N) on (M, N).
  struct Anchor {
    int64_t a, b;
    double tflops;
    const char* shape;
  };
  static const Anchor kForward[] = {
      {512, 512, 557, "98304x512 @ 512x512"},   {512, 256, 413, "98304x512 @ 512x256"},
      {512, 1536, 576, "98304x512 @ 512x1536"}, {512, 2048, 608, "98304x512 @ 512x2048"},
      {2048, 512, 605, "98304x2048 @ 2048x512"}, {512, 8192, 548, "98304x512 @ 512x8192"},
  };
  static const Anchor kWeightGrad[] = {
      {512, 512, 560, "512x98304 @ 98304x512"},
      {2048, 512, 688, "2048x98304 @ 98304x512"},
  };
  if (weight_gradient) {
    for (const Anchor& a : kWeightGrad)
      if (a.a == M && a.b == N) return {a.tflops, a.shape};
  } else {
    for (const Anchor& a : kForward)
      if (a.a == K && a.b == N) return {a.tflops, a.shape};
  }
  return {kSquareMatmulTflops, "8192^3 (no listed shape)"};
}

namespace {

// Times ops and collects rows; ceilings are the H100's, so they are only attached on the GPU.
class Timer {
 public:
  Timer(const Options& o, const PresetShapes& s) : o_(o), s_(s) {}

  Tensor rnd(const Shape& shape, DType dt) { return random_tensor(shape, dt, seed_++, s_.dev); }
  Tensor zeros(const Shape& shape, DType dt) const { return Tensor::zeros(shape, dt, s_.dev); }
  Tensor empty(const Shape& shape, DType dt) const { return Tensor::empty(shape, dt, s_.dev); }
  Tensor floats(const std::vector<float>& v) const {
    return Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())}, s_.dev);
  }

  void compute(const std::string& op, const std::string& shape, double flop, double ceiling,
               const std::string& source, const std::function<void()>& fn) {
    add(op, shape, flop, 0, ceiling, source, fn);
  }
  void memory(const std::string& op, const std::string& shape, double bytes, const std::function<void()>& fn) {
    add(op, shape, 0, bytes, kCopyCeilingGBps, "3.0 TB/s copy", fn);
  }
  std::vector<KernelRow> rows;

 private:
  void add(const std::string& op, const std::string& shape, double flop, double bytes, double ceiling,
           const std::string& source, const std::function<void()>& fn) {
    KernelRow r{op, shape, median_ms(o_, fn, s_.dev), flop, bytes, 0, ""};
    if (s_.dev == Device::CUDA) r.ceiling = ceiling, r.ceiling_source = source;
    rows.push_back(std::move(r));
  }
  const Options& o_;
  const PresetShapes& s_;
  uint64_t seed_ = 9001;
};

std::string dims(std::initializer_list<int64_t> v) {
  std::string out;
  for (int64_t x : v) {
    if (!out.empty()) out += 'x';
    out += std::to_string(x);
  }
  return out;
}

// A linear layer x (N, in) -> y (N, out) with weight (out, in): the forward and the two backward GEMMs of
// ops::linear_backward (dx = dy w in the activation dtype; dw += dy^T x accumulated in f32), timed apart.
void bench_linear(Timer& t, const PresetShapes& s, const std::string& name, int64_t in, int64_t out) {
  const int64_t N = s.N;
  Tensor x = t.rnd({N, in}, s.act), w = t.rnd({out, in}, s.act), dy = t.rnd({N, out}, s.act);
  Tensor y = t.empty({N, out}, s.act), dx = t.empty({N, in}, s.act), dw = t.zeros({out, in}, DType::F32);
  const double flop = 2.0 * static_cast<double>(N) * in * out;
  MatmulCeiling c = matmul_ceiling(N, out, in, false);
  t.compute("linear " + name + " fwd", dims({N, in}) + " @ " + dims({in, out}), flop, c.tflops, c.source,
            [&] { ops::linear_forward(x, w, y); });
  c = matmul_ceiling(N, in, out, false);
  t.compute("linear " + name + " dgrad", dims({N, out}) + " @ " + dims({out, in}), flop, c.tflops, c.source,
            [&] { ops::linear_backward(x, w, dy, dx, Tensor()); });
  c = matmul_ceiling(out, in, N, true);
  t.compute("linear " + name + " wgrad", dims({out, N}) + " @ " + dims({N, in}) + " f32+=", flop, c.tflops, c.source,
            [&] { ops::linear_backward(x, w, dy, Tensor(), dw); });
}

void bench_attention_ops(Timer& t, const PresetShapes& s, const train::Config& cfg) {
  const int64_t B = s.B, T = s.T, H = s.H, Hkv = s.Hkv, D = s.D;
  Tensor q = t.rnd({B, T, H, D}, s.act), k = t.rnd({B, T, Hkv, D}, s.act), v = t.rnd({B, T, Hkv, D}, s.act);
  Tensor dout = t.rnd({B, T, H, D}, s.act), out = t.empty({B, T, H, D}, s.act);
  Tensor dq = t.empty(q.shape(), s.act), dk = t.empty(k.shape(), s.act), dv = t.empty(v.shape(), s.act);
  Tensor lse = t.empty({B, H, T}, DType::F32);
  ops::AttnParams p;
  p.window = cfg.model.attn_window;
  // bench attention's convention (the causal half of 4 B H T^2 D), also with a window or packed documents:
  // the rows then overstate the work done, and the shape says so.
  const double fwd = 4.0 * B * H * static_cast<double>(T) * T * D / 2;
  std::string shape = fmt::format("B={} T={} H={}/{} D={}", B, T, H, Hkv, D);
  if (p.window > 0) shape += fmt::format(" win={}", p.window);
  ops::attention_forward(q, k, v, Tensor(), out, lse, p);  // the backward reads a real out and lse
  t.compute("attention fwd", shape, fwd, kAttnFwdTflops, "B=48 T=2048 8/4 D=64",
            [&] { ops::attention_forward(q, k, v, Tensor(), out, lse, p); });
  t.compute("attention bwd", shape, 2.5 * fwd, kAttnBwdTflops, "B=48 T=2048 8/4 D=64 (derived)",
            [&] { ops::attention_backward(q, k, v, Tensor(), out, lse, dout, dq, dk, dv, p); });
  if (cfg.model.xsa_layers.empty()) return;
  // XSA (§5.7) on the attention output: reads y (H heads) and v (Hkv heads), writes out (H heads);
  // the backward reads y, v, dout and writes dy, dv.
  const double se = static_cast<double>(dtype_size(s.act)), rows = static_cast<double>(B * T);
  Tensor xo = t.empty(out.shape(), s.act), dy = t.empty(out.shape(), s.act), dvx = t.empty(v.shape(), s.act);
  const std::string xs = dims({B * T, H, D}) + " v " + dims({B * T, Hkv, D});
  t.memory("xsa fwd", xs, rows * D * (2 * H + Hkv) * se, [&] { ops::xsa_forward(out, v, xo); });
  t.memory("xsa bwd", xs, rows * D * (3 * H + 2 * Hkv) * se, [&] { ops::xsa_backward(out, v, dout, dy, dvx); });
}

// The GatedDeltaNet ops of one GDN layer (docs/GDN.md), with each CUDA kernel of the chunked form forced (the
// row the training run uses says "auto"): bytes = the minimum traffic, q, k, v, o (forward) or q, k, v, dout,
// dq, dk, dv (backward) at s bytes, the f32 chunk-start states once, g and beta (and dg, dbeta) per (token, head).
// Inputs as the layer makes them: |k| ~ 1, |q| ~ 1/8, g = -0.1, beta = 1.
void bench_gdn_ops(Timer& t, const PresetShapes& s, const train::Config& cfg) {
  const auto& m = cfg.model;
  const int64_t B = s.B, T = s.T, H = s.H, D = s.D, C = m.gdn_chunk, NC = ops::gdn_num_chunks(T, m.gdn_chunk);
  const double se = static_cast<double>(dtype_size(s.act)), tok = static_cast<double>(B * T * H);
  const Shape sq{B, T, H, D}, sg{B, T, H};
  Tensor q = t.rnd(sq, s.act), k = t.rnd(sq, s.act), v = t.rnd(sq, s.act), dout = t.rnd(sq, s.act);
  ops::scale(q, 0.022f, q);  // U(-1, 1) has |x| ~ sqrt(D / 3)
  ops::scale(k, 0.18f, k);
  Tensor g = t.empty(sg, DType::F32), beta = t.empty(sg, DType::F32);
  ops::fill(g, -0.1f);
  ops::fill(beta, 1.f);
  Tensor o = t.empty(sq, s.act), st = t.empty({B, H, NC, D, D}, DType::F32);
  Tensor dq = t.empty(sq, s.act), dk = t.empty(sq, s.act), dv = t.empty(sq, s.act);
  Tensor dg = t.empty(sg, DType::F32), dbeta = t.empty(sg, DType::F32);
  const double states = static_cast<double>(st.numel()) * 4;
  const std::string shape = fmt::format("B={} T={} H={} D={} C={}", B, T, H, D, C);
  ops::gdn_chunk_forward(q, k, v, g, beta, Tensor(), o, st, Tensor(), m.gdn_chunk);  // real states for the bwd
  // The CPU op has one implementation: only its auto row.
  const std::vector<ops::GdnKernel> kernels =
      s.dev == Device::CUDA ? std::vector<ops::GdnKernel>{ops::GdnKernel::Auto, ops::GdnKernel::Tc, ops::GdnKernel::Loop}
                            : std::vector<ops::GdnKernel>{ops::GdnKernel::Auto};
  for (ops::GdnKernel kern : kernels) {
    const std::string tag = std::string(" [") + ops::gdn_kernel_name(kern) + "]";
    ops::set_gdn_kernel(kern);
    t.memory("gdn_chunk fwd" + tag, shape, tok * D * 4 * se + states + tok * 8,
             [&] { ops::gdn_chunk_forward(q, k, v, g, beta, Tensor(), o, st, Tensor(), m.gdn_chunk); });
    t.memory("gdn_chunk bwd" + tag, shape, tok * D * 7 * se + states + tok * 16, [&] {
      ops::gdn_chunk_backward(q, k, v, g, beta, st, dout, Tensor(), dq, dk, dv, dg, dbeta, Tensor(), m.gdn_chunk);
    });
  }
  ops::set_gdn_kernel(ops::GdnKernel::Auto);
  // The short convolutions (three per layer) on (B, T, H D): fwd reads x, writes y; bwd reads x, dy, writes dx.
  {
    const int64_t Cc = H * D;
    Tensor x = t.rnd({B, T, Cc}, s.act), y = t.empty({B, T, Cc}, s.act), dy = t.rnd({B, T, Cc}, s.act);
    Tensor dx = t.empty({B, T, Cc}, s.act), w = t.rnd({Cc, m.gdn_conv_size}, DType::F32),
           dw = t.zeros({Cc, m.gdn_conv_size}, DType::F32);
    const double el = static_cast<double>(B * T * Cc);
    const std::string sh = dims({B, T, Cc}) + fmt::format(" K={} silu", m.gdn_conv_size);
    t.memory("short_conv fwd", sh, el * 2 * se, [&] { ops::short_conv_forward(x, w, y, true); });
    t.memory("short_conv bwd", sh, el * 3 * se, [&] { ops::short_conv_backward(x, w, dy, dx, dw, true); });
  }
  // The gates: fwd reads a, bb (s), writes g, beta (f32); bwd reads a, bb, dg, dbeta, writes da, dbb.
  {
    Tensor a = t.rnd(sg, s.act), bb = t.rnd(sg, s.act), da = t.empty(sg, s.act), dbb = t.empty(sg, s.act);
    Tensor al = t.rnd({H}, DType::F32), dtb = t.rnd({H}, DType::F32), dal = t.zeros({H}, DType::F32),
           ddt = t.zeros({H}, DType::F32);
    const std::string sh = dims({B, T, H});
    t.memory("gdn_gates fwd", sh, tok * (2 * se + 8), [&] { ops::gdn_gates_forward(a, bb, al, dtb, g, beta); });
    t.memory("gdn_gates bwd", sh, tok * (4 * se + 8),
             [&] { ops::gdn_gates_backward(a, bb, al, dtb, dg, dbeta, da, dbb, dal, ddt); });
  }
}

// The memory-bound ops of the block, the norms, the loss and the embedding, as the tape calls them.
void bench_memory_ops(Timer& t, const PresetShapes& s, const train::Config& cfg) {
  const auto& m = cfg.model;
  const int64_t N = s.N, d = s.d;
  const double se = static_cast<double>(dtype_size(s.act)), Nd = static_cast<double>(N) * d, n = static_cast<double>(N);
  const float eps = m.norm_eps, g = 1.f;
  const std::string nd = dims({N, d});
  Tensor x32 = t.rnd({N, d}, DType::F32), y32 = t.empty({N, d}, DType::F32), dy32 = t.rnd({N, d}, DType::F32);
  Tensor xa = t.rnd({N, d}, s.act), f = t.rnd({N, d}, s.act), na = t.empty({N, d}, s.act), dn = t.rnd({N, d}, s.act);
  Tensor df = t.empty({N, d}, s.act), dx0 = t.zeros({N, d}, s.act), dx32 = t.zeros({N, d}, DType::F32);
  Tensor rstd = t.empty({N}, DType::F32);
  Tensor sa = t.rnd({d}, DType::F32), sb = t.rnd({d}, DType::F32), ds = t.zeros({d}, DType::F32),
         db = t.zeros({d}, DType::F32);

  // rmsnorm (the final norm: the f32 stream in, activations out) fwd: x 4 + y s per element, rstd 4 per row.
  t.memory("rmsnorm fwd", nd + " f32->act", Nd * (4 + se) + 4 * n, [&] { ops::rmsnorm_forward(x32, Tensor(), na, rstd, eps); });
  // bwd from the output: reads y s, dy s, rstd; adds into the stream's f32 gradient (read 4 + write 4).
  t.memory("rmsnorm bwd", nd + " +=f32", Nd * (2 * se + 8) + 4 * n,
           [&] { ops::rmsnorm_backward_from_output(na, rstd, dn, dx32, true); });

  // mix_rmsnorm fwd (block entry): reads x 4, x0 s, a and b; writes y 4, n s, rstd.
  t.memory("mix_rmsnorm fwd", nd, Nd * (8 + 2 * se) + 4 * n + 8.0 * d,
           [&] { ops::mix_rmsnorm_forward(sa, x32, sb, xa, y32, na, rstd, g, eps); });
  // bwd: reads n s, dn s, x 4, x0 s, dy 4, rstd, a, b; writes dx 4 (overwritten); dx0 s read and written
  // (x0's gradient accumulates over the blocks); da, db read and written.
  t.memory("mix_rmsnorm bwd", nd, Nd * (12 + 5 * se) + 4 * n + 24.0 * d, [&] {
    ops::mix_rmsnorm_backward(na, rstd, dn, g, sa, x32, sb, xa, dy32, ds, db, dx32, false, dx0, true);
  });
  // add_rmsnorm fwd (mid-block): reads x 4, f s, s; writes y 4, n s, rstd.
  t.memory("add_rmsnorm fwd", nd, Nd * (8 + 2 * se) + 4 * n + 4.0 * d,
           [&] { ops::add_rmsnorm_forward(x32, sa, f, y32, na, rstd, g, eps); });
  // bwd: reads n s, dn s, f s, dy 4, rstd, s; writes dy 4 (the total gradient), df s; ds read and written.
  t.memory("add_rmsnorm bwd", nd, Nd * (8 + 4 * se) + 4 * n + 12.0 * d,
           [&] { ops::add_rmsnorm_backward(na, rstd, dn, g, sa, f, dy32, ds, df, false); });
  // add_mul_channel fwd (block exit, y = x + s f): reads x 4, f s, s; writes y 4.
  t.memory("add_mul_channel fwd", nd, Nd * (8 + se) + 4.0 * d, [&] { ops::add_mul_channel(x32, sa, f, y32); });
  // its bwd (channel_scale_backward): reads dy 4, f s, s; writes df s; ds read and written.
  t.memory("add_mul_channel bwd", nd, Nd * (4 + 2 * se) + 12.0 * d,
           [&] { ops::channel_scale_backward(dy32, sa, f, ds, df, false); });
  if (m.skip_gates || m.loop_embeddings || !m.fuse_residual_norm) {
    // mix_channel fwd (skip gates: two f32 streams): reads x0 4, x1 4, s0, s1; writes y 4.
    t.memory("mix_channel fwd", nd, Nd * 12 + 8.0 * d, [&] { ops::mix_channel(sa, x32, sb, dy32, y32); });
  }

  // qk_prep (per-head norm + partial RoPE + gain) of q (with q_gain) and k: fwd reads x s, writes y s and
  // rstd per (row, head); bwd reads x s, dy s, rstd, writes dx s; q's dgain read and written.
  const int rot = m.rope_dims > 0 ? m.rope_dims : static_cast<int>(s.D);
  for (const auto& [name, heads] : {std::pair{"q", s.H}, std::pair{"k", s.Hkv}}) {
    const bool gained = std::string(name) == "q";  // q carries the QK gain (§5.3), k has none
    Tensor x = t.rnd({s.B, s.T, heads, s.D}, s.act), y = t.empty(x.shape(), s.act), dy = t.rnd(x.shape(), s.act);
    Tensor dx = t.empty(x.shape(), s.act), r = t.empty({N * heads}, DType::F32);
    Tensor gain = gained ? t.rnd({heads}, DType::F32) : Tensor(), dgain = gained ? t.zeros({heads}, DType::F32) : Tensor();
    const double el = Nd / d * heads * s.D, hv = gained ? 4.0 * heads : 0;
    const std::string sh = dims({s.B, s.T, heads, s.D}) + fmt::format(" rot={}", rot);
    t.memory(std::string("qk_prep ") + name + " fwd", sh, el * 2 * se + 4 * n * heads + hv,
             [&] { ops::qk_prep_forward(x, gain, y, r, rot, m.rope_base, eps); });
    t.memory(std::string("qk_prep ") + name + " bwd", sh, el * 3 * se + 4 * n * heads + 3 * hv,
             [&] { ops::qk_prep_backward(x, gain, r, dy, dx, dgain, rot, m.rope_base); });
  }

  // act_linear's activation on (N, hidden): fwd reads h, writes a(h); bwd reads h and da, writes dh.
  {
    const ops::Act act = m.activation == "leaky_relu2" ? ops::Act::LeakyRelu2 : ops::Act::Relu2;
    Tensor h = t.rnd({N, s.hidden}, s.act), a = t.empty(h.shape(), s.act), da = t.rnd(h.shape(), s.act);
    Tensor dh = t.empty(h.shape(), s.act);
    const double el = static_cast<double>(N) * s.hidden;
    t.memory("activation " + m.activation + " fwd", dims({N, s.hidden}), el * 2 * se,
             [&] { ops::activation_forward(act, h, a, m.leaky_slope); });
    t.memory("activation " + m.activation + " bwd", dims({N, s.hidden}), el * 3 * se,
             [&] { ops::activation_backward(act, h, da, dh, m.leaky_slope); });
  }

  // Embedding ids: any spread over the vocabulary will do (gathers and scatters by row).
  std::vector<int32_t> id(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) id[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919 + 13) % s.V);
  const Tensor ids = Tensor::from_vector(id, Shape{N}, s.dev);
  const double vrows = static_cast<double>(std::min(s.V, N));  // table rows touched at least once

  // softcap cross-entropy, loss and gradient in one pass: reads the (N, V) logits s and targets, writes
  // dlogits s and the losses. (The tape writes dlogits over the logits; a separate buffer keeps the inputs
  // the same from one run to the next, at the same traffic.)
  {
    Tensor logits = t.rnd({N, s.V}, s.act), dlogits = t.empty({N, s.V}, s.act), losses = t.empty({N}, DType::F32);
    const double el = static_cast<double>(N) * s.V;
    t.memory("softcap cross_entropy", dims({N, s.V}) + fmt::format(" cap={}", m.logit_softcap), el * 2 * se + 8 * n,
             [&] { ops::softcap_cross_entropy(logits, ids, m.logit_softcap, losses, dlogits, 1.f / static_cast<float>(N)); });
  }
  // embedding fwd: reads the ids and each touched table row once (s), writes (N, d) s.
  {
    Tensor table = t.rnd({s.V, d}, s.act), out = t.empty({N, d}, s.act), dtable = t.zeros({s.V, d}, DType::F32);
    t.memory("embedding fwd", dims({s.V, d}) + " gather " + std::to_string(N), 4 * n + (vrows + n) * d * se,
             [&] { ops::embedding_forward(ids, table, out); });
    // bwd: reads the ids and dout (N, d) s; each touched f32 gradient row read and written once.
    t.memory("embedding bwd", dims({s.V, d}) + " scatter " + std::to_string(N), 4 * n + Nd * se + vrows * d * 8,
             [&] { ops::embedding_backward(ids, f, dtable); });
  }
}

// The optimizer: Adam on the tied embedding table, Muon's elementwise kernels over all block matrices at
// once (the step launches them per matrix; this is the rate one kernel can reach), and Newton–Schulz per
// bank of same-shape matrices, as Muon stacks them.
void bench_optimizer(Timer& t, const PresetShapes& s, const train::Config& cfg) {
  const int64_t d = s.d, qd = s.H * s.D, kd = s.Hkv * s.D;
  std::map<std::pair<int64_t, int64_t>, int64_t> banks;  // (R, C) -> matrices
  for (int64_t l = 0; l < s.layers; ++l)
    for (auto rc : {std::pair{qd, d}, std::pair{kd, d}, std::pair{kd, d}, std::pair{d, qd}, std::pair{s.hidden, d},
                    std::pair{d, s.hidden}})
      ++banks[rc];
  int64_t P = 0;  // every block matrix element; each matrix has d as one side, so P / d rows of d
  for (const auto& [rc, k] : banks) P += rc.first * rc.second * k;
  const double se = static_cast<double>(dtype_size(s.act)), p = static_cast<double>(P);
  {
    // adam_step: reads p, g, m, v (f32), writes p, m, v.
    Tensor w = t.rnd({s.V, d}, DType::F32), g = t.rnd({s.V, d}, DType::F32), m = t.zeros({s.V, d}, DType::F32),
           v = t.zeros({s.V, d}, DType::F32);
    const Tensor hp = t.floats({1e-3f, 0.9f, 0.95f, 1e-8f, 0.f, 0.1f, 0.05f, 1.f});
    t.memory("adam_step (tied embedding)", dims({s.V, d}), 28.0 * s.V * d,
             [&] { ops::adam_step(w, g, m, v, hp); });
  }
  Tensor g = t.rnd({P / d, d}, DType::F32), buf = t.zeros({P / d, d}, DType::F32), u = t.empty({P / d, d}, s.act);
  Tensor w = t.rnd({P / d, d}, DType::F32);
  const Tensor hp_mom = t.floats({0.95f, 1.f}), hp_apply = t.floats({0.02f, 0.f, 1.f});
  const std::string all = fmt::format("{} block matrices, {} values", s.layers * 6, P);
  // muon_momentum: reads g 4, buf 4; writes buf 4, u s.
  t.memory("muon_momentum", all, p * (12 + se), [&] { ops::muon_momentum(g, buf, u, hp_mom, cfg.optim.nesterov); });
  // row_normalize, in place: reads and writes x s.
  t.memory("row_normalize", all, p * 2 * se, [&] { ops::row_normalize(u, 1e-7f); });
  // muon_apply: reads p 4 and x s, writes p 4.
  t.memory("muon_apply", all, p * (8 + se), [&] { ops::muon_apply(w, u, hp_apply); });

  // Newton–Schulz: per iteration and matrix, with a = min(R, C) and b = max(R, C): A = X X^T (2 a^2 b),
  // A A (2 a^3), B X (2 a^2 b); the scale and normalise passes are not counted.
  const std::vector<train::NsCoeffs> coeffs = cfg.optim.muon_coefficients == "polar_express"
                                                  ? train::ns_coefficients_polar_express()
                                                  : train::ns_coefficients_baseline();
  const int steps = static_cast<int>(cfg.optim.muon_backend_steps);
  for (const auto& [rc, k] : banks) {
    const double a = static_cast<double>(std::min(rc.first, rc.second)), b = static_cast<double>(std::max(rc.first, rc.second));
    train::NsScratch sc = train::NsScratch::make(rc.first, rc.second, s.act, s.dev, k);
    sc.x0.copy_from(t.rnd(sc.x0.shape(), s.act));
    t.compute("newton_schulz", fmt::format("{} x {} steps={}", k, dims({rc.first, rc.second}), steps),
              static_cast<double>(k) * steps * (4 * a * a * b + 2 * a * a * a), kSquareMatmulTflops,
              "8192^3 (no listed shape)", [&] { train::newton_schulz(sc.x0, sc, coeffs, steps); });
  }
}

}  // namespace

std::vector<KernelRow> bench_preset_kernels(const train::Config& cfg, const Options& o) {
  const PresetShapes s = preset_shapes(cfg);
  Timer t(o, s);
  const int64_t qd = s.H * s.D, kd = s.Hkv * s.D;
  bench_linear(t, s, "q", s.d, qd);
  bench_linear(t, s, "k", s.d, kd);
  bench_linear(t, s, "v", s.d, kd);
  bench_linear(t, s, "attn proj", qd, s.d);
  bench_linear(t, s, "mlp fc", s.d, s.hidden);
  bench_linear(t, s, "mlp proj", s.hidden, s.d);
  bench_linear(t, s, "head", s.d, s.V);
  bench_attention_ops(t, s, cfg);
  if (!cfg.model.gdn_layers.empty()) bench_gdn_ops(t, s, cfg);
  bench_memory_ops(t, s, cfg);
  bench_optimizer(t, s, cfg);
  return std::move(t.rows);
}

void print_kernel_table(const std::string& title, const std::vector<KernelRow>& rows) {
  std::printf("\n%s\n", title.c_str());
  std::printf("%-28s %-38s %9s %14s %7s  %s\n", "op", "shape", "ms", "rate", "% ceil", "ceiling");
  for (const KernelRow& r : rows) {
    const std::string rate = fmt::format("{:.4g} {}", r.rate(), r.flop > 0 ? "TFLOP/s" : "GB/s");
    const std::string pct = r.ceiling > 0 ? fmt::format("{:.0f}%", 100 * r.rate() / r.ceiling) : "-";
    const std::string ceil = r.ceiling > 0 ? fmt::format("{:.0f} {}", r.ceiling, r.ceiling_source) : "";
    std::printf("%-28s %-38s %9.4f %14s %7s  %s\n", r.op.c_str(), r.shape.c_str(), r.ms, rate.c_str(), pct.c_str(),
                ceil.c_str());
  }
}

std::string kernel_rows_json(const std::string& config, const PresetShapes& s, const std::vector<KernelRow>& rows) {
  nlohmann::json j = {{"bench", "kernels"},
                      {"config", config},
                      {"device", std::string(device_name(s.dev))},
                      {"act_dtype", dtype_name(s.act)},
                      {"shapes", {{"B", s.B}, {"T", s.T}, {"N", s.N}, {"d", s.d}, {"H", s.H}, {"Hkv", s.Hkv},
                                  {"D", s.D}, {"hidden", s.hidden}, {"V", s.V}, {"layers", s.layers}}}};
  nlohmann::json out = nlohmann::json::array();
  for (const KernelRow& r : rows)
    out.push_back({{"op", r.op}, {"shape", r.shape}, {"ms", r.ms}, {"flop", r.flop}, {"bytes", r.bytes},
                   {"tflops", r.flop > 0 ? r.rate() : 0.0}, {"gbps", r.bytes > 0 ? r.rate() : 0.0},
                   {"ceiling", r.ceiling}, {"ceiling_source", r.ceiling_source}});
  j["rows"] = out;
  return j.dump(2) + "\n";
}

}  // namespace pgolf::cli::bench

namespace pgolf::cli {

void add_bench_kernels_command(CLI::App* bench_cmd) {
  struct Args {
    std::string config_file;
    std::vector<std::string> sets;
    bench::Options o;
  };
  auto a = std::make_shared<Args>();
  auto* sub = bench_cmd->add_subcommand(
      "kernels", "Every op family of a preset's training step, alone at the preset's micro-batch shapes: ms, "
                 "TFLOP/s or GB/s, % of the ANCHORS.md ceilings (GPU when present, else CPU)");
  sub->add_option("--config,-c", a->config_file, "TOML config (e.g. configs/baseline-300s.toml)")->required();
  sub->add_option("--set", a->sets, "Override a key: section.key=value (repeatable; train.device=cpu forces the CPU)")
      ->take_all();
  sub->add_option("--warmup", a->o.warmup, "Untimed runs before timing")->capture_default_str();
  sub->add_option("--reps", a->o.reps, "Timed runs; the median is reported")->capture_default_str();
  sub->add_option("--json", a->o.json, "Also write the results to this JSON file");
  sub->callback([a] {
    train::Config cfg = train::load_config_file(a->config_file);
    for (const auto& s : a->sets) train::apply_override(cfg, s);
    const bench::PresetShapes s = bench::preset_shapes(cfg);
    const std::vector<bench::KernelRow> rows = bench::bench_preset_kernels(cfg, a->o);
    bench::print_kernel_table(
        fmt::format("pgolf bench kernels: {} on {} ({} activations), micro-batch B={} x T={} (N={} rows), d={}, "
                    "{}/{} heads of {}, MLP {}, vocab {}; median of {} runs after {} warm-up{}",
                    a->config_file, device_name(s.dev), dtype_name(s.act), s.B, s.T, s.N, s.d, s.H, s.Hkv, s.D,
                    s.hidden, s.V, a->o.reps, a->o.warmup,
                    s.dev == Device::CUDA ? "; ceilings: ANCHORS.md §3 (PyTorch, H100)" : "; no ceilings on the CPU"),
        rows);
    // Switches whose ops have no row yet: said, so the table is not read as the whole step.
    const auto& m = cfg.model;
    std::string missing;
    if (m.bigram_buckets > 0) missing += " BigramHash";
    if (m.ve_dim > 0) missing += " value-embeddings";
    if (m.smear_gate != "none") missing += " SmearGate";
    if (m.attn_gate != "none") missing += " attn-gate";
    if (m.value_residual) missing += " value-residual";
    if (!m.gdn_layers.empty()) missing += " GDN projections W_g, W_a, W_b (the linear rows have the attention shapes)";
    if (!missing.empty()) std::printf("not timed (no rows yet):%s\n", missing.c_str());
    if (!a->o.json.empty()) data::write_file_atomic(a->o.json, bench::kernel_rows_json(a->config_file, s, rows));
  });
}

}  // namespace pgolf::cli
