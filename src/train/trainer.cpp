#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <memory>

#include "core/arena.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/profile.h"
#include "core/stream.h"
#include "data/bpb.h"
#include "data/file_util.h"
#include "data/loader.h"
#include "data/train_loader.h"
#include "data/shard.h"
#include "dist/comm.h"
#include "model/gpt.h"
#include "model/safetensors.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "quant/qat.h"
#include "report/report.h"
#include "train/checkpoint.h"
#include "train/ema.h"
#include "train/evaluate.h"
#include "train/int8_export.h"
#include "train/optimizer.h"
#include "train/run_log.h"
#include "train/schedule.h"
#include "train/step_graph.h"

namespace pgolf::train {
namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers that only set a flag (the loop finishes its step, checkpoints
// and returns); restores the previous handlers on scope exit.
class SignalScope {
 public:
  SignalScope() {
    g_stop_signal.store(0);
    prev_int_ = std::signal(SIGINT, on_stop_signal);
    prev_term_ = std::signal(SIGTERM, on_stop_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, prev_int_);
    std::signal(SIGTERM, prev_term_);
  }

 private:
  void (*prev_int_)(int);
  void (*prev_term_)(int);
};

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

Device pick_device(const std::string& want) {
  if (want == "cpu") return Device::CPU;
  if (want == "cuda") {
    PG_CHECK(cuda_available(), "config: train.device = \"cuda\" but no CUDA device is available (this build: {})",
#if PGOLF_CUDA
             "with CUDA"
#else
             "CPU only"
#endif
    );
    return Device::CUDA;
  }
  return cuda_available() ? Device::CUDA : Device::CPU;
}

// Fails naming the shard when a token id does not fit the model's vocabulary.
void check_token_range(const std::vector<std::string>& shards, int vocab, const char* what) {
  for (const auto& path : shards) {
    const std::vector<uint16_t> toks = data::read_shard(path);
    if (toks.empty()) continue;
    const int mx = *std::max_element(toks.begin(), toks.end());
    PG_CHECK(mx < vocab, "{} shard {} holds token id {} but model.vocab_size is {} (shard from another tokenizer?)",
             what, path, mx, vocab);
  }
}

std::string fmt_eta(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60) : fmt::format("{}m{:02d}s", t / 60, t % 60);
}

NamedTensors checkpoint_tensors(model::GPT& gpt, Optimizer& opt, WeightAverages& avg) {
  NamedTensors t;
  for (auto& p : gpt.params().all()) t.emplace_back("param." + p.spec.name, p.value);
  for (auto& s : opt.state_tensors()) t.push_back(s);
  for (auto& s : avg.state_tensors()) t.push_back(s);
  return t;
}

}  // namespace

std::string checkpoint_path(const std::string& run_dir) { return run_dir + "/checkpoint.bin"; }
std::string config_path(const std::string& run_dir) { return run_dir + "/config.toml"; }
std::string final_weights_path(const std::string& run_dir) { return run_dir + "/final_model.safetensors"; }

double flops_per_token(const model::ModelConfig& m, int64_t n_params, int64_t seq_len) {
  return 6.0 * static_cast<double>(n_params) +
         6.0 * static_cast<double>(m.num_layers) * static_cast<double>(seq_len) * static_cast<double>(m.model_dim);
}

RunResult run_training(const Config& cfg_in, const RunOptions& opt) {
  Config cfg = cfg_in;
  dist::Communicator* comm = opt.comm;
  const int world = comm ? comm->world() : 1;
  const int rank = comm ? comm->rank() : 0;
  const bool lead = rank == 0;  // the one rank that writes files and decides time-based stops
  validate(cfg, world);
  PG_CHECK(!opt.run_dir.empty(), "train: no run directory");
  if (comm) comm->check_same(dist::fnv1a64(to_toml(cfg)), "resolved config");
  if (lead) std::filesystem::create_directories(opt.run_dir);
  const Device dev = pick_device(cfg.train.device);
  cfg.model.act_dtype = cfg.model_compute_dtype == "bf16"  ? DType::BF16
                        : cfg.model_compute_dtype == "f32" ? DType::F32
                        : dev == Device::CUDA             ? DType::BF16
                                                          : DType::F32;
  if (lead) data::write_file_atomic(config_path(opt.run_dir), to_toml(cfg));
  RunLog log(lead ? opt.run_dir : std::string(), opt.resume, opt.quiet || !lead);
  if (comm) log.line(fmt::format("data parallel: {} rank(s) over {}", world, comm->name()));
  log.line(fmt::format("pgolf train: run dir {} ({}), device {}, activations {}", opt.run_dir,
                       opt.resume ? "resumed" : "new", device_name(dev), dtype_name(cfg.model.act_dtype)));
  log.line("resolved config:\n" + to_toml(cfg));

  // ---- data: shards, tokenizer, mismatch checks
  const int V = cfg.model.vocab_size;
  const int64_t T = cfg.train.seq_len;
  const auto train_shards = data::list_shards(cfg.data.train);
  check_token_range(train_shards, V, "train");
  std::vector<uint16_t> val_tokens = data::load_val_tokens(cfg.data.val, T);
  if (cfg.train.val_max_tokens > 0 && static_cast<int64_t>(val_tokens.size()) > cfg.train.val_max_tokens + 1)
    val_tokens.resize(static_cast<size_t>((cfg.train.val_max_tokens / T) * T + 1));
  {
    const int mx = val_tokens.empty() ? 0 : *std::max_element(val_tokens.begin(), val_tokens.end());
    PG_CHECK(mx < V, "val data {} holds token id {} but model.vocab_size is {} (val shard from another tokenizer?)",
             cfg.data.val, mx, V);
  }
  data::ByteLuts luts;
  const bool have_tokenizer = !cfg.data.tokenizer.empty();
  if (have_tokenizer) {
    luts = data::build_byte_luts(cfg.data.tokenizer, V);
    PG_CHECK(luts.sp_vocab == V, "tokenizer {} has {} pieces but model.vocab_size is {}", cfg.data.tokenizer,
             luts.sp_vocab, V);
  } else {
    // No tokenizer: every token counts one byte, so val_bpb is not meaningful (tests only).
    luts.base_bytes.assign(static_cast<size_t>(V), 1);
    luts.has_leading_space.assign(static_cast<size_t>(V), 0);
    luts.is_boundary.assign(static_cast<size_t>(V), 0);
    luts.sp_vocab = V;
    log.line("warning: data.tokenizer is empty: val_bpb below counts one byte per token and is NOT a real bpb");
  }

  // ---- batch geometry (grad_accum = 8 / world unless set)
  const int64_t accum = cfg.train.grad_accum > 0 ? cfg.train.grad_accum : std::max<int64_t>(1, 8 / world);
  const int64_t micro_tokens = cfg.train.train_batch_tokens / (world * accum);
  const int64_t B = micro_tokens / T;
  const int64_t val_rows = std::max<int64_t>(1, cfg.train.val_batch_tokens / (world * accum) / T);

  // Document packing (§2.5): each micro-step is one flat row of B x T tokens whose documents are cut into
  // T-token segments for the isolated attention; every other loader trains on (B, T) rows. Same token count, so
  // the loss and gradient scales below are unchanged.
  const bool packed = cfg.data.loader == "document_packing";
  const Shape step_shape = packed ? Shape{1, B * T} : Shape{B, T};

  // ---- model, memory plan, optimizer
  model::GPT gpt(cfg.model, dev);
  gpt.init(cfg.train.seed);
  if (packed) gpt.set_doc_segment_len(T);
  const int64_t n_params = gpt.params().count_elements();
  const double fpt = flops_per_token(cfg.model, n_params, T);
  Arena arena(dev, "train");
  // A forward-only pass keeps its activations to the end (the step frees them as it goes), so at the
  // training batch it can need more than the step: validation takes fewer rows per pass, halving until its
  // pass fits in the step's own plan (the same tokens are scored; only the pass size changes).
  const size_t step_plan = gpt.step_plan_bytes(step_shape[0], step_shape[1]);
  int64_t val_pass_rows = val_rows;
  while (val_pass_rows > 1 && gpt.plan_bytes(val_pass_rows, T, false) > step_plan) val_pass_rows = (val_pass_rows + 1) / 2;
  arena.reserve(std::max(step_plan, gpt.plan_bytes(val_pass_rows, T, false)));
  Optimizer optimizer(gpt.params(), cfg.optim, dev, dev == Device::CUDA ? DType::BF16 : DType::F32, comm);
  WeightAverages averages(gpt.params(), cfg.optim, dev);  // EMA / SWA (§6.7, §6.8); no state when off
  Validator validator(std::move(val_tokens), luts, T, val_pass_rows, dev);
  log.line(fmt::format("model: {} parameters, {:.1f} MFLOP/token; batch {} tokens = {} micro-steps x {} x {}; arena {:.1f} MiB; "
                       "val {} rows ({} tokens, {} bytes), {} rows per pass",
                       n_params, fpt / 1e6, cfg.train.train_batch_tokens, accum, B, T,
                       static_cast<double>(arena.capacity()) / (1 << 20), validator.rows(), validator.rows() * T,
                       validator.scored_bytes(), val_pass_rows));

  data::TrainLoader loader(cfg.data.loader, cfg.data.train, T, rank, world, cfg.train.seed, cfg.model.bos_id);
  const data::TrainLoader::State loader_start = loader.state();
  Tensor ids = Tensor::empty(step_shape, DType::I32, dev);
  Tensor targets = Tensor::empty(step_shape, DType::I32, dev);
  // Whole-step CUDA graphs (step_graph.h) on one GPU: a step's micro-batches are staged in device buffers
  // first, so the captured work reads the same addresses every step. Host-side per-step work rules them
  // out: data parallel collectives and exact accumulation. Grad-norm clipping runs on the device
  // (Optimizer::apply); late QAT's per-step on/off decision picks the graph (see train_step).
  const bool graphs = dev == Device::CUDA && cfg.train.cuda_graph && comm == nullptr && !opt.exact_accumulation;
  Tensor ids_all = graphs ? Tensor::empty(Shape{accum, step_shape[0], step_shape[1]}, DType::I32, dev) : Tensor();
  Tensor targets_all = graphs ? Tensor::empty(Shape{accum, step_shape[0], step_shape[1]}, DType::I32, dev) : Tensor();
  std::unique_ptr<Stream> train_stream;
  std::unique_ptr<StreamGuard> on_train_stream;
  if (graphs) {
    device_synchronize();  // set-up work queued on the default stream is done before the step stream starts
    train_stream = std::make_unique<Stream>();
    on_train_stream = std::make_unique<StreamGuard>(train_stream->handle());
  }
  StepGraph step_graph(graphs ? train_stream->handle() : nullptr, graphs);
  if (dev == Device::CUDA)
    log.line(graphs ? std::string("cuda graphs: whole steps are captured and replayed")
                    : std::string("cuda graphs: off (train.cuda_graph = false, data parallel or exact accumulation)"));
  Tensor loss_sum = Tensor::zeros(Shape{1}, DType::F32, dev);
  // Mean over the step's global tokens; ranks' contributions are then summed, so a sum is the global mean.
  const float grad_scale = 1.f / static_cast<float>(B * T * accum * world);

  const bool overlap_reduce = comm && !opt.exact_accumulation && cfg.train.overlap_grad_reduce;
  // Parallel Muon (optim.muon_shard_momentum, docs/DISTRIBUTED.md): only a Muon matrix's owner needs its summed
  // gradient, so the all-reduces below leave the matrices out. With the overlap each matrix is reduced to its owner
  // (in place) as soon as the backward has finished it; otherwise the optimizer reduce-scatters them after the
  // backward. Exact accumulation still sums every gradient (each owner then reads its own).
  const bool muon_sharded = optimizer.muon().shards_momentum();
  const bool muon_to_owners = muon_sharded && overlap_reduce;
  optimizer.set_muon_grads_summed(opt.exact_accumulation || muon_to_owners);
  const bool skip_muon = muon_sharded && !opt.exact_accumulation;
  if (muon_sharded)
    log.line(fmt::format("parallel muon: gradients {}, momentum sharded: {} of {} matrices, {:.2f} MiB of momentum on "
                         "this rank",
                         muon_to_owners ? "reduced to their owners during the backward"
                         : opt.exact_accumulation ? "summed by the exact accumulation"
                                                  : "reduce-scattered after the backward",
                         optimizer.muon().owned_count(), optimizer.muon().size(),
                         static_cast<double>(optimizer.muon().momentum_bytes()) / (1 << 20)));
  auto reduced_here = [&](size_t i) { return !skip_muon || gpt.params().all()[i].spec.group != model::OptGroup::Muon; };

  // Every gradient plus the loss sum in one flat f32 buffer: one collective per reduction.
  const int64_t flat_n = n_params + 1;
  Tensor flat = ((comm && !overlap_reduce) || opt.exact_accumulation) ? Tensor::zeros(Shape{flat_n}, DType::F32, dev) : Tensor();
  Tensor flat_acc = opt.exact_accumulation ? Tensor::zeros(Shape{flat_n}, DType::F32, dev) : Tensor();
  auto pack = [&](const Tensor& dst) -> int64_t {  // returns the elements used
    int64_t o = 0;
    for (size_t i = 0; i < gpt.params().all().size(); ++i) {
      if (!reduced_here(i)) continue;
      const Tensor& g = gpt.params().all()[i].grad;
      dst.slice(o, o + g.numel()).view(g.shape()).copy_from(g);
      o += g.numel();
    }
    dst.slice(o, o + 1).copy_from(loss_sum);
    return o + 1;
  };
  auto unpack = [&](const Tensor& src) {
    int64_t o = 0;
    for (size_t i = 0; i < gpt.params().all().size(); ++i) {
      if (!reduced_here(i)) continue;
      const Tensor& g = gpt.params().all()[i].grad;
      g.copy_from(src.slice(o, o + g.numel()).view(g.shape()));
      o += g.numel();
    }
    loss_sum.copy_from(src.slice(o, o + 1));
  };

  // Overlapped reduction (see the micro-step loop): runs of consecutive parameters are contiguous in the table's
  // flat gradient buffer (params.h), so each run is one in-place all-reduce; with Parallel Muon each Muon matrix
  // is instead reduced in place to its owner (the other ranks' copies keep partial sums that nobody reads). The
  // calls of one report form one group (NCCL launches them together).
  const model::ParamTable& table = gpt.params();
  auto reduce_ready = [&](const std::vector<size_t>& ready) {
    const Tensor& gflat = table.grad_flat();
    const size_t n = table.all().size();
    comm->group_begin();
    for (size_t i = 0; i < ready.size();) {
      const int root = muon_to_owners ? optimizer.muon_grad_owner(ready[i]) : -1;
      if (root >= 0) comm->reduce_sum_async(table.all()[ready[i]].grad, root);
      if (root >= 0 || !reduced_here(ready[i])) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j + 1 < ready.size() && ready[j + 1] == ready[j] + 1 && reduced_here(ready[j + 1])) ++j;
      const int64_t begin = table.grad_range(ready[i]).first;
      const int64_t end = ready[j] + 1 < n ? table.grad_range(ready[j] + 1).first : gflat.numel();
      if (end > begin) comm->all_reduce_sum_async(gflat.slice(begin, end));
      i = j + 1;
    }
    comm->group_end();
  };

  quant::QatConfig qat;
  qat.enabled = cfg.qat.enabled;
  qat.lr_threshold = cfg.qat.lr_threshold;
  qat.spec.bits = static_cast<int>(cfg.qat.bits);
  qat.spec.min_scale = 1.f / static_cast<float>((1 << (qat.spec.bits - 1)) - 1);  // §7.3's 1/31 at 6 bits
  qat.clipped_ste = cfg.qat.clipped_ste;
  quant::QatStash qat_stash;

  // One optimizer step over `accum` micro-batches; returns the mean train loss (one host read). `fake_quant`: this
  // step's forward reads fake-quantized block matrices (late QAT, quant::qat_active for the step's lr multiplier).
  auto train_step = [&](int64_t step, double lr_mult, bool fake_quant) -> double {
    if (graphs && !prof::enabled()) {
      for (int64_t m = 0; m < accum; ++m) {
        data::Batch b = loader.next_batch(cfg.train.train_batch_tokens, T, rank, world, static_cast<int>(accum));
        ids_all.slice(m, m + 1).view(ids.shape()).copy_from(Tensor::from_blob(b.x.data(), ids.shape(), DType::I32, Device::CPU));
        targets_all.slice(m, m + 1).view(ids.shape()).copy_from(Tensor::from_blob(b.y.data(), ids.shape(), DType::I32, Device::CPU));
      }
      optimizer.set_hyperparameters(step, lr_mult);  // device scalars the graph reads
      // One graph per layer schedule (§5.12) and QAT state: fake quantization is work in the graph, not a value.
      step_graph.run(2 * gpt.loop_passes_on() + (fake_quant ? 1 : 0), [&] {
        gpt.params().zero_grads();
        loss_sum.zero_();
        if (fake_quant) quant::apply_fake_quant(gpt.params(), qat, qat_stash);
        for (int64_t m = 0; m < accum; ++m)
          gpt.forward_backward(ids_all.slice(m, m + 1).view(ids.shape()), targets_all.slice(m, m + 1).view(ids.shape()),
                               grad_scale, arena, loss_sum);
        quant::finish_fake_quant(gpt.params(), qat, qat_stash);  // empties the host-side stash; replays skip that
        optimizer.apply();
        gpt.params().sync_compute();
      });
      return static_cast<double>(loss_sum.to_float_vector()[0]) / static_cast<double>(B * T * accum * world);
    }
    gpt.params().zero_grads();
    loss_sum.zero_();
    if (opt.exact_accumulation) flat_acc.zero_();
    // The forward of this step's micro-batches reads fake-quantized block matrices (the STE: their
    // gradients land on the masters, which finish_fake_quant restores before the optimizer step).
    if (fake_quant) quant::apply_fake_quant(gpt.params(), qat, qat_stash);
    for (int64_t m = 0; m < accum; ++m) {
      {
        const prof::Scope timer("step:data");
        data::Batch b = loader.next_batch(cfg.train.train_batch_tokens, T, rank, world, static_cast<int>(accum));
        ids.copy_from(Tensor::from_blob(b.x.data(), ids.shape(), DType::I32, Device::CPU));
        targets.copy_from(Tensor::from_blob(b.y.data(), targets.shape(), DType::I32, Device::CPU));
      }
      if (opt.exact_accumulation && m > 0) {
        gpt.params().zero_grads();
        loss_sum.zero_();
      }
      // Data parallel: the last micro-step's backward hands each block's finished gradients to the
      // communicator while it works on the blocks below (train.overlap_grad_reduce).
      const bool overlap = overlap_reduce && m == accum - 1;
      if (overlap) gpt.set_grad_ready(reduce_ready);
      {
        const prof::Scope timer("step:forward_backward");
        gpt.forward_backward(ids, targets, grad_scale, arena, loss_sum);
      }
      if (overlap) {
        gpt.set_grad_ready(nullptr);
        comm->all_reduce_sum(loss_sum);
        comm->wait_async();
      }
      if (opt.exact_accumulation) {
        pack(flat);
        if (comm)
          comm->accumulate_sum(flat_acc, flat);
        else
          ops::add(flat_acc, flat, flat_acc);
      }
    }
    if (opt.exact_accumulation) {
      unpack(flat_acc);
    } else if (comm && !overlap_reduce) {
      comm->all_reduce_sum(flat.slice(0, pack(flat)));
      unpack(flat);
    }
    quant::finish_fake_quant(gpt.params(), qat, qat_stash);  // a no-op when nothing was fake-quantized
    {
      const prof::Scope timer("step:optimizer");
      optimizer.step(step, lr_mult);
    }
    {
      const prof::Scope timer("step:sync_compute");
      gpt.params().sync_compute();
    }
    return static_cast<double>(loss_sum.to_float_vector()[0]) / static_cast<double>(B * T * accum * world);
  };
  // Rank 0's value of a time-derived quantity, so every rank takes the same decision.
  auto from_lead = [&](double v) { return comm ? comm->broadcast_f64(v, 0) : v; };

  // ---- compile warm-up: run steps, then restore the initial state (no LR warm-up; §6.6). The plain steps
  // run the graph of step 0; a looped model then runs loop_warmup_steps with looping on (§5.12), so both
  // graphs are exercised before the clock starts. With progressive activation (model.loop_pass_fracs) every
  // intermediate pass count is a graph of its own: loop_warmup_steps run at each count the run will use.
  // Late QAT's steps are a graph of their own too: with graphs on, two warm-up steps (the eager first call, then
  // the capture) fake-quantize, at the last pass count above (late QAT starts in the warmdown, after looping).
  const int64_t loop_warmup = cfg.model.has_loop() ? cfg.train.loop_warmup_steps : 0;
  const int64_t qat_warmup =
      graphs && cfg.train.warmup_steps > 0 && qat.enabled && !quant::qat_active(qat, 1.0) ? 2 : 0;
  std::vector<int> loop_stages;  // extra-pass counts the run switches to (ascending)
  if (cfg.model.has_loop()) {
    for (double f : model::parse_loop_pass_fracs(cfg.model))
      if (const int n = model::loop_passes_at(cfg.model, f); loop_stages.empty() || n > loop_stages.back())
        loop_stages.push_back(n);
    if (loop_stages.empty()) loop_stages.push_back(cfg.model.loop_passes);
  }
  if (cfg.train.warmup_steps > 0 || loop_warmup > 0) {
    const bool warm_qat = quant::qat_active(qat, 1.0);  // whole-run QAT fake-quantizes every step
    std::vector<Tensor> saved;
    for (auto& p : gpt.params().all()) saved.push_back(p.value.to(Device::CPU));
    auto t = Clock::now();
    gpt.set_training_fraction(0.0);
    int64_t ws = 0;
    for (int64_t s = 0; s < cfg.train.warmup_steps; ++s) train_step(ws++, 1.0, warm_qat);
    for (const int passes : loop_warmup > 0 ? loop_stages : std::vector<int>{}) {
      gpt.set_loop_passes(passes);
      for (int64_t s = 0; s < loop_warmup; ++s) train_step(ws++, 1.0, warm_qat);
    }
    const int64_t looped = ws - cfg.train.warmup_steps;
    for (int64_t s = 0; s < qat_warmup; ++s) train_step(ws++, 1.0, true);
    for (size_t i = 0; i < saved.size(); ++i) gpt.params().all()[i].value.copy_from(saved[i]);
    gpt.params().sync_compute();
    optimizer.reset_state();
    loader.restore(loader_start);
    device_synchronize();
    log.line(fmt::format("warm-up: {} steps + {} looped + {} with QAT in {:.0f} ms, state restored",
                         cfg.train.warmup_steps, looped, qat_warmup, ms_since(t)));
  }
  averages.reset();  // the EMA starts at the initial weights (a resume overwrites it below)

  // ---- resume
  TrainState st;
  st.seed = cfg.train.seed;
  const std::string ckpt = checkpoint_path(opt.run_dir);
  if (opt.resume) {
    optimizer.stage_state();  // sharded Muon momentum: read the full momenta, keep this rank's shard
    st = load_checkpoint(ckpt, checkpoint_tensors(gpt, optimizer, averages));
    optimizer.commit_state();
    averages.set_swa_count(st.swa_count);
    gpt.params().sync_compute();
    loader.restore({st.loader_shard, st.loader_pos});
    log.line(fmt::format("resumed from {} at step {} ({:.1f} s of training)", ckpt, st.step, st.elapsed_ms / 1000));
  }
  Tensor norm_scratch = Tensor::zeros(Shape{1}, DType::F32, dev);
  auto save = [&](const char* why) {
    optimizer.gather_state();  // sharded Muon momentum: every rank sends its shard (a collective)
    if (!lead) {
      optimizer.release_state();
      return;
    }
    // Never replace a good checkpoint with non-finite weights (a diverged step writes NaN params
    // before its loss shows it).
    bool first = true;
    for (auto& p : gpt.params().all()) {
      ops::sum_squares(p.value, norm_scratch, !first);
      first = false;
    }
    const float sq = norm_scratch.to_float_vector()[0];
    PG_CHECK(std::isfinite(sq), "parameters are not finite after step {}: stopping without writing a checkpoint. {}",
             st.step,
             std::filesystem::exists(ckpt) ? "The last good checkpoint " + ckpt + " is kept"
                                           : std::string("No earlier checkpoint exists"));
    auto s = loader.state();
    st.loader_shard = s.shard;
    st.loader_pos = s.pos;
    st.swa_count = averages.swa_count();
    save_checkpoint(ckpt, st, checkpoint_tensors(gpt, optimizer, averages));
    optimizer.release_state();
    log.line(fmt::format("checkpoint: step {} -> {} ({})", st.step, ckpt, why));
    log.event({{"type", "checkpoint"}, {"step", st.step}, {"wallclock_s", st.elapsed_ms / 1000}, {"why", why}});
  };

  const ScheduleParams sched = ScheduleParams::from(cfg);
  const double cap_ms = cfg.train.max_wallclock_seconds * 1000.0;
  const int64_t iters = cfg.train.iterations;
  RunResult res;
  SignalScope signals;
  int64_t stop_after = -1;
  int64_t steps_this_process = 0;
  double steady_ms = 0;
  int64_t steady_tokens = 0;
  double log_ms = st.elapsed_ms;
  int64_t log_step = st.step;

  auto validate_now = [&](const char* type) {
    auto t = Clock::now();
    data::BpbAccumulator acc = validator.run(gpt, arena, comm);  // split over the ranks
    res.val_loss = acc.loss();
    res.val_bpb = have_tokenizer ? acc.bpb() : std::numeric_limits<double>::quiet_NaN();
    log.line(fmt::format("step:{}/{} val_loss:{:.4f} val_bpb:{:.4f} train_time:{:.0f}ms eval:{:.0f}ms", st.step, iters,
                         res.val_loss, res.val_bpb, st.elapsed_ms, ms_since(t)));
    nlohmann::json e = {{"type", type}, {"step", st.step}, {"wallclock_s", st.elapsed_ms / 1000},
                        {"val_loss", res.val_loss}, {"eval_ms", ms_since(t)}};
    e["val_bpb"] = have_tokenizer ? nlohmann::json(res.val_bpb) : nlohmann::json(nullptr);
    log.event(e);
  };

  auto t0 = Clock::now();
  double base_ms = st.elapsed_ms;  // training time accumulated before t0
  while (true) {
    const bool last = st.step >= iters || (stop_after >= 0 && st.step >= stop_after);
    if (last || (cfg.train.val_loss_every > 0 && st.step % cfg.train.val_loss_every == 0)) {
      device_synchronize();
      base_ms += ms_since(t0);
      st.elapsed_ms = base_ms;
      if (last) break;  // the final validation runs after the loop, on the averaged weights
      validate_now("val");
      t0 = Clock::now();
    }

    const double elapsed = from_lead(base_ms + ms_since(t0));
    const double lr_mult = lr_multiplier(sched, st.step, elapsed);
    // Depth recurrence switches on at a fraction of training (§5.12): of the wallclock budget when capped.
    // A pure function of (step, elapsed), so a resumed run picks up the pass count where it was.
    const int passes_before = gpt.loop_passes_on();
    gpt.set_training_fraction(cap_ms > 0 ? elapsed / cap_ms
                                         : static_cast<double>(st.step) / static_cast<double>(std::max<int64_t>(iters, 1)));
    if (cfg.model.has_loop() && (gpt.loop_passes_on() != passes_before || steps_this_process == 0)) {
      log.line(fmt::format("loop: {} of {} extra passes from step {} ({} virtual layers)", gpt.loop_passes_on(),
                           cfg.model.loop_passes, st.step, gpt.schedule().size()));
      log.event({{"type", "loop"}, {"step", st.step}, {"passes", gpt.loop_passes_on()},
                 {"wallclock_s", elapsed / 1000}});
    }
    const bool profiling = opt.profile_steps > 0 && steps_this_process >= opt.profile_from &&
                           steps_this_process < opt.profile_from + opt.profile_steps;
    if (profiling && steps_this_process == opt.profile_from) {
      prof::reset();
      prof::set_enabled(true);
    }
    optimizer.set_muon_wd_multiplier(muon_wd_multiplier(cfg.optim, training_progress(sched, st.step, elapsed)));
    auto step_t = Clock::now();
    const double loss = train_step(st.step, lr_mult, quant::qat_active(qat, lr_mult));  // reading the loss syncs
    averages.after_step(st.step + 1, lr_mult);         // EMA / SWA of the new weights (device work only)
    const double step_ms = ms_since(step_t);
    if (profiling) {
      res.profile_wall_ms += step_ms;
      ++res.profile_steps;
      if (steps_this_process + 1 == opt.profile_from + opt.profile_steps) {
        res.profile = prof::collect();
        prof::set_enabled(false);
        log.line(fmt::format("profile of {} steps ({:.1f} ms/step wall):\n{}", res.profile_steps,
                             res.profile_wall_ms / static_cast<double>(res.profile_steps),
                             prof::table(res.profile, res.profile_wall_ms, res.profile_steps)));
      }
    }
    ++st.step;
    ++steps_this_process;
    st.tokens_seen += cfg.train.train_batch_tokens;
    st.elapsed_ms = from_lead(base_ms + ms_since(t0));
    if (steps_this_process > 10 && !profiling) {  // profiled steps carry event overhead
      steady_ms += step_ms;
      steady_tokens += cfg.train.train_batch_tokens;
    }
    if (opt.on_step) opt.on_step(st.step, loss);

    if (!std::isfinite(loss)) {
      log.event({{"type", "error"}, {"step", st.step}, {"train_loss", loss}, {"wallclock_s", st.elapsed_ms / 1000}});
      const bool have_ckpt = std::filesystem::exists(ckpt);
      PG_FAIL("training loss is {} at step {}: stopping. {}", loss, st.step,
              have_ckpt ? "The last good checkpoint " + ckpt + " is kept (resume with --resume " + opt.run_dir + ")"
                        : std::string("No checkpoint was written before it (use --checkpoint-every)."));
    }

    const double tok_s = static_cast<double>(cfg.train.train_batch_tokens) / (step_ms / 1000.0);
    const bool log_line = cfg.train.train_log_every > 0 && (st.step <= 10 || st.step % cfg.train.train_log_every == 0);
    // The clip's grad norm stays on the device; read back for logged lines only (-1 without clipping).
    const double grad_norm = log_line ? optimizer.grad_norm() : -1.0;
    nlohmann::json ev = {{"type", "train"}, {"step", st.step}, {"wallclock_s", st.elapsed_ms / 1000},
                         {"train_loss", loss}, {"lr_mult", lr_mult}, {"step_ms", step_ms}, {"tokens_per_s", tok_s}};
    if (dev == Device::CUDA) ev["gpu_mem_gib"] = static_cast<double>(cuda_bytes_in_use()) / (1 << 30);
    if (grad_norm >= 0) ev["grad_norm"] = grad_norm;
    log.event(ev);

    if (log_line) {
      const double int_ms = st.elapsed_ms - log_ms;
      const double rate = static_cast<double>((st.step - log_step) * cfg.train.train_batch_tokens) / (int_ms / 1000.0);
      const double avg_ms = st.elapsed_ms / static_cast<double>(st.step);
      const double eta_steps = static_cast<double>(iters - st.step) * avg_ms / 1000.0;
      const double eta = cap_ms > 0 ? std::min(eta_steps, (cap_ms - st.elapsed_ms) / 1000.0) : eta_steps;
      std::string mem = dev == Device::CUDA ? fmt::format(" mem:{:.2f}GiB peak:{:.2f}GiB",
                                                          static_cast<double>(cuda_bytes_in_use()) / (1 << 30),
                                                          static_cast<double>(cuda_peak_bytes()) / (1 << 30))
                                            : std::string();
      const std::string gn = grad_norm >= 0 ? fmt::format(" grad_norm:{:.4f}", grad_norm) : std::string();
      log.line(fmt::format("step:{}/{} train_loss:{:.4f}{} lr_mult:{:.4f} tok/s:{:.0f} step_ms:{:.1f} avg_ms:{:.1f} "
                           "mfu:{:.1f}%{} train_time:{:.0f}ms eta:{}",
                           st.step, iters, loss, gn, lr_mult, rate, int_ms / static_cast<double>(st.step - log_step),
                           avg_ms, 100.0 * rate * fpt / cfg.train.peak_flops, mem, st.elapsed_ms, fmt_eta(eta)));
      log_ms = st.elapsed_ms;
      log_step = st.step;
    }
    const double frac = std::max(static_cast<double>(st.step) / static_cast<double>(std::max<int64_t>(iters, 1)),
                                 cap_ms > 0 ? st.elapsed_ms / cap_ms : 0.0);
    log.progress(st.step, iters, frac, fmt::format("loss {:.4f} {:.0f} tok/s", loss, tok_s));

    if (cfg.train.checkpoint_every > 0 && st.step % cfg.train.checkpoint_every == 0) {
      const double ck_base = base_ms + ms_since(t0);
      save("periodic");
      base_ms = ck_base;  // checkpoint time is not training time
      t0 = Clock::now();
    }
    const bool interrupt = from_lead(g_stop_signal.load() != 0 || (opt.interrupt_after_steps >= 0 &&
                                                                   steps_this_process >= opt.interrupt_after_steps)
                                         ? 1.0
                                         : 0.0) != 0;
    if (interrupt) {
      log.end_progress();
      const int sig = g_stop_signal.load();
      save(sig == SIGTERM ? "SIGTERM" : "interrupt");
      log.line(fmt::format("interrupted{}: checkpoint written at step {}; continue with: pgolf train --resume {}",
                           sig ? fmt::format(" by signal {}", sig) : "", st.step, opt.run_dir));
      res.steps = st.step;
      res.interrupted = true;
      res.train_ms = st.elapsed_ms;
      return res;
    }
    if (stop_after < 0 && cap_ms > 0 && st.elapsed_ms >= cap_ms) {
      stop_after = st.step;
      log.line(fmt::format("stopping early: train_time:{:.0f}ms step:{}/{}", st.elapsed_ms, st.step, iters));
    }
  }
  log.end_progress();
  if (prof::enabled()) {  // the run ended inside the profiled window
    res.profile = prof::collect();
    prof::set_enabled(false);
  }
  res.steps = st.step;
  res.train_ms = st.elapsed_ms;
  // Steady rate skips this process's first 10 steps (warm-up effects); short runs fall back to the average.
  res.tokens_per_s = steady_ms > 0 ? static_cast<double>(steady_tokens) / (steady_ms / 1000.0)
                     : st.elapsed_ms > 0 ? static_cast<double>(st.tokens_seen) / (st.elapsed_ms / 1000.0)
                                         : 0;
  res.peak_gpu_bytes = dev == Device::CUDA ? cuda_peak_bytes() : 0;
  save("final");  // live weights + optimizer + averaging state: resumable

  // ---- the final weights (§6.7, §6.8): EMA / SWA replace the live weights for validation and export
  if (averages.resolve_final() != "live") {
    validate_now("val");  // the live weights, for comparison with runs that do not average
    const std::string what = averages.apply_final();
    log.line("final weights: " + what);
    if (lead) model::export_params(gpt.params(), final_weights_path(opt.run_dir));
  } else if (lead) {
    std::filesystem::remove(final_weights_path(opt.run_dir));  // a stale file from an earlier process
  }
  validate_now("final");
  const double final_loss = res.val_loss, final_bpb = res.val_bpb;

  // ---- int8 + zlib round trip: the score of the dequantized model (§4.5)
  if (cfg.train.int8_roundtrip && lead) {
    auto t = Clock::now();
    const std::string blob = zlib_compress(int8_serialize(gpt.params()), 9);
    const std::string path = opt.run_dir + "/final_model.int8.zlib";
    data::write_file_atomic(path, blob);
    int8_deserialize_into(zlib_decompress(data::read_file(path)), gpt.params());
    gpt.params().sync_compute();
    res.int8_zlib_bytes = static_cast<int64_t>(blob.size());
    data::BpbAccumulator acc = validator.run(gpt, arena);
    res.int8_val_loss = acc.loss();
    res.int8_val_bpb = have_tokenizer ? acc.bpb() : std::numeric_limits<double>::quiet_NaN();
    log.line(fmt::format("final_int8_zlib_roundtrip val_loss:{:.4f} val_bpb:{:.4f} bytes:{} ({}) in {:.0f} ms",
                         res.int8_val_loss, res.int8_val_bpb, res.int8_zlib_bytes, path, ms_since(t)));
  }
  res.val_loss = final_loss;
  res.val_bpb = final_bpb;
  nlohmann::json fin = {{"type", "summary"}, {"step", res.steps}, {"wallclock_s", res.train_ms / 1000},
                        {"val_loss", res.val_loss}, {"tokens_per_s", res.tokens_per_s},
                        {"int8_zlib_bytes", res.int8_zlib_bytes}, {"int8_val_loss", res.int8_val_loss},
                        {"peak_gpu_bytes", res.peak_gpu_bytes}, {"n_params", n_params},
                        {"mfu", res.tokens_per_s * fpt / cfg.train.peak_flops}, {"peak_flops", cfg.train.peak_flops}};
  fin["val_bpb"] = std::isfinite(res.val_bpb) ? nlohmann::json(res.val_bpb) : nlohmann::json(nullptr);
  fin["int8_val_bpb"] = std::isfinite(res.int8_val_bpb) ? nlohmann::json(res.int8_val_bpb) : nlohmann::json(nullptr);
  log.event(fin);
  log.line(fmt::format("done: {} steps, {:.1f} s training, steady {:.0f} tok/s (MFU {:.1f}% of {:.0f} TFLOP/s), "
                       "peak GPU memory {:.2f} GiB",
                       res.steps, res.train_ms / 1000, res.tokens_per_s,
                       100.0 * res.tokens_per_s * fpt / cfg.train.peak_flops, cfg.train.peak_flops / 1e12,
                       static_cast<double>(res.peak_gpu_bytes) / (1 << 30)));
  // The HTML report is a convenience: failing to write it must not fail a finished run.
  if (lead) try { log.line("report: " + report::write_run_report(opt.run_dir)); } catch (const std::exception& e) { log.line(fmt::format("warning: report not written: {}", e.what())); }
  return res;
}

}  // namespace pgolf::train
