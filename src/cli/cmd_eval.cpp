// pgolf eval: score a model on the validation stream with the legal evaluation modes of
// docs/EVAL.md (plain / sliding / doc-isolated, optional score-first TTT, the legality audit).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "artifact/model_io.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/memory.h"
#include "data/bpb.h"
#include "data/file_util.h"
#include "data/loader.h"
#include "dist/comm.h"
#include "dist/env.h"
#include "eval/audit.h"
#include "eval/hash_embed.h"
#include "eval/scorer.h"

namespace pgolf::cli {

namespace {

struct EvalArgs {
  std::string artifact, run_dir, val, tokenizer, json_path;
  std::string mode = "sliding", device = "auto";
  int64_t context = 2048, stride = 64, batch_tokens = 131072, max_tokens = 0;
  bool no_trim = false;
  double time_budget = 0;
  eval::TttOptions ttt;
  eval::PhasedTttOptions phased;
  eval::NgramOptions ngram;
  std::string ngram_alpha = "entropy";
  eval::TapInOptions tapin;
  bool tapin_no_cross = false;
  eval::HashEmbedOptions hash_embed;
  eval::LoraTttOptions lora;
  bool mode_given = false;  // --mode was on the command line (LoRA TTT needs doc)
  bool audit = false;
  int audit_samples = 8;
  int64_t audit_tokens = 0;
  double audit_tol = 0;
};

Device pick_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") {
    PG_CHECK(cuda_available(), "pgolf eval --device cuda: no CUDA device is available");
    return Device::CUDA;
  }
  PG_CHECK(name == "auto", "pgolf eval: --device {} is not auto, cpu or cuda", name);
  return cuda_available() ? Device::CUDA : Device::CPU;
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// What every rank must agree on (checked through the rendezvous / communicator, docs/DISTRIBUTED.md).
std::string eval_signature(const EvalArgs& a) {
  nlohmann::json j = {{"artifact", a.artifact}, {"run_dir", a.run_dir}, {"val", a.val},
                      {"mode", a.mode},         {"context", a.context}, {"stride", a.stride},
                      {"batch_tokens", a.batch_tokens}, {"max_tokens", a.max_tokens}, {"no_trim", a.no_trim},
                      {"ttt", a.ttt.enabled},   {"ttt_chunk", a.ttt.chunk_tokens}, {"ttt_lr", a.ttt.lr},
                      {"ttt_momentum", a.ttt.momentum}, {"ttt_epochs", a.ttt.epochs}, {"ttt_clip", a.ttt.grad_clip},
                      {"ttt_batch", a.ttt.batch_seqs}, {"ttt_seq_len", a.ttt.seq_len},
                      {"phased", a.phased.enabled}, {"ngram", a.ngram.enabled}, {"tapin", a.tapin.enabled},
                      {"hash_embed", a.hash_embed.enabled}, {"hash_buckets", a.hash_embed.buckets},
                      {"hash_lr_mult", a.hash_embed.lr_mult}, {"time_budget", a.time_budget}, {"device", a.device},
                      {"lora", a.lora.enabled}};
  return j.dump();
}

void run_eval(const EvalArgs& a) {
  PG_CHECK(a.artifact.empty() != a.run_dir.empty(), "pgolf eval needs exactly one of --artifact FILE or --run-dir DIR");
  // Split over ranks like `pgolf train`: a loopback rank of `pgolf launch --loopback`, or NCCL when launched as a
  // rank (torchrun / mpirun variables). Set up before the model loads: NCCL picks GPU LOCAL_RANK.
  std::unique_ptr<dist::Communicator> nccl;
  dist::Communicator* comm = dist::thread_comm();
  const uint64_t sig = dist::fnv1a64(eval_signature(a));
  if (!comm) {
    const dist::RankInfo info = dist::rank_info_from_env();
    if (info.source != "single") {
      nccl = dist::make_nccl_comm(info, sig);
      comm = nccl.get();
    }
  }
  const int world = comm ? comm->world() : 1;
  if (comm) comm->check_same(sig, "pgolf eval arguments");
  if (world > 1) {
    PG_CHECK(!a.ngram.enabled && !a.tapin.enabled, "pgolf eval: --ngram / --tapin cannot be split over ranks yet "
             "(the mixing walk runs in stream order on one process); run with one rank (world is {})", world);
    PG_CHECK(!a.phased.enabled, "pgolf eval: --phased-ttt cannot be split over ranks yet; run with one rank "
             "(world is {})", world);
    PG_CHECK(!a.lora.enabled, "pgolf eval: --lora-ttt cannot be split over ranks yet; run with one rank (world is {})",
             world);
  }
  if (a.lora.enabled) {
    PG_CHECK(!a.mode_given || a.mode == "doc",
             "pgolf eval --lora-ttt scores documents (its own chunked windows); --mode {} does not apply (use doc or "
             "leave it out)", a.mode);
    PG_CHECK(!a.ttt.enabled && !a.phased.enabled && !a.ngram.enabled && !a.tapin.enabled && !a.hash_embed.enabled,
             "pgolf eval --lora-ttt does not combine with --ttt, --phased-ttt, --ngram, --tapin or --hash-embed yet");
    eval::check_lora_options(a.lora, a.context);
  }
  const bool lead = !comm || comm->rank() == 0;  // only rank 0 prints and writes JSON
  const Device dev = pick_device(a.device);
  const auto t_load = Clock::now();
  std::unique_ptr<model::GPT> model = a.artifact.empty() ? artifact::load_model_from_run(a.run_dir, dev)
                                                         : artifact::load_model_from_artifact(a.artifact, dev);
  // LoRA TTT never updates the base weights: free their gradient buffer for good (evaluate_lora would free it
  // for its own scope anyway; freezing here saves giving it back zeroed at the end).
  if (a.lora.enabled && a.lora.frozen_base) model->params().set_frozen(true);
  const int V = model->config().vocab_size;
  const data::ByteLuts luts = data::build_byte_luts(a.tokenizer, V);
  std::vector<uint16_t> tokens = data::load_val_tokens(a.val, a.no_trim ? 1 : a.context);
  if (a.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > a.max_tokens + 1)
    tokens.resize(static_cast<size_t>(a.max_tokens + 1));
  const double load_s = since(t_load);

  eval::EvalOptions opt;
  opt.mode = a.lora.enabled ? eval::Mode::Doc : eval::parse_mode(a.mode);
  opt.lora = a.lora;
  opt.context = a.context;
  opt.stride = opt.mode == eval::Mode::Plain ? a.context : std::min(a.stride, a.context);
  opt.batch_tokens = a.batch_tokens;
  opt.time_budget_s = a.time_budget;
  opt.ttt = a.ttt;
  opt.phased = a.phased;
  opt.ngram = a.ngram;
  if (a.ngram.enabled) {
    if (a.ngram_alpha == "entropy") {
      opt.ngram.alpha_entropy = true;
    } else {
      size_t used = 0;
      double v = -1;
      try {
        v = std::stod(a.ngram_alpha, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      PG_CHECK(used == a.ngram_alpha.size() && v > 0 && v < 1,
               "pgolf eval: --ngram-alpha '{}' is neither 'entropy' nor a number in (0, 1)", a.ngram_alpha);
      opt.ngram.alpha_entropy = false;
      opt.ngram.alpha_fixed = static_cast<float>(v);
    }
  }
  opt.tapin = a.tapin;
  opt.tapin.cross_window = !a.tapin_no_cross;
  if (opt.ttt.enabled)
    PG_CHECK(opt.ttt.lr > 0 && opt.ttt.epochs >= 1 && opt.ttt.chunk_tokens > 0,
             "pgolf eval: --ttt-lr {} must be > 0, --ttt-epochs {} >= 1, --ttt-chunk {} > 0", opt.ttt.lr,
             opt.ttt.epochs, opt.ttt.chunk_tokens);
  if (opt.phased.enabled) {
    PG_CHECK(opt.phased.lr > 0 && opt.phased.epochs >= 1 && opt.phased.chunk_tokens > 0 && opt.phased.batch_seqs > 0,
             "pgolf eval: --phased-ttt-lr {} must be > 0, --phased-ttt-epochs {} >= 1, --phased-ttt-chunk {} > 0, "
             "--phased-ttt-batch {} > 0",
             opt.phased.lr, opt.phased.epochs, opt.phased.chunk_tokens, opt.phased.batch_seqs);
    PG_CHECK(opt.phased.phases >= 1 && opt.phased.prefix_docs >= opt.phased.phases,
             "pgolf eval: --phased-ttt-phases {} must be >= 1 and <= --phased-ttt-docs {}", opt.phased.phases,
             opt.phased.prefix_docs);
    PG_CHECK(opt.phased.momentum >= 0 && opt.phased.momentum < 1, "pgolf eval: --phased-ttt-momentum {} must be in [0, 1)",
             opt.phased.momentum);
  }
  eval::check_ngram_options(opt.ngram);
  eval::check_tapin_options(opt.tapin);
  if (a.hash_embed.enabled) {
    PG_CHECK(opt.ttt.enabled, "pgolf eval --hash-embed: the table starts at zero and only chunk TTT trains it; add --ttt");
    model = eval::with_hash_embedding(*model, a.hash_embed);
    opt.ttt = eval::hash_embed_ttt(opt.ttt, a.hash_embed);
  }

  nlohmann::json audit_json;
  double audit_s = 0;
  bool audit_passed = true;
  if (a.audit) {
    eval::AuditOptions ao;
    ao.samples = a.audit_samples;
    ao.tolerance = a.audit_tol > 0 ? a.audit_tol : (dev == Device::CUDA ? 5e-2 : 1e-4);
    const int64_t prefix = a.audit_tokens > 0 ? a.audit_tokens : 4 * a.context;
    std::vector<uint16_t> head(tokens.begin(), tokens.begin() + std::min<int64_t>(prefix + 1, tokens.size()));
    eval::EvalOptions aopt = opt;
    if (aopt.ttt.enabled) aopt.ttt.chunk_tokens = std::min<int64_t>(aopt.ttt.chunk_tokens, std::max<int64_t>(1, prefix / 4));
    if (aopt.phased.enabled) {  // phases that fall inside the audited prefix
      const int bos = model->config().bos_id;
      const int64_t docs = 1 + std::count(head.begin() + 1, head.end(), static_cast<uint16_t>(bos));
      aopt.phased.prefix_docs = std::max<int64_t>(aopt.phased.phases, std::min(aopt.phased.prefix_docs, docs - 1));
      aopt.phased.chunk_tokens = std::min<int64_t>(aopt.phased.chunk_tokens, std::max<int64_t>(1, prefix / 4));
    }
    if (aopt.lora.enabled) {  // several batches inside the audited prefix, so batch resets are audited too
      const int bos = model->config().bos_id;
      const int64_t docs = 1 + std::count(head.begin() + 1, head.end() - 1, static_cast<uint16_t>(bos));
      aopt.lora.docs_per_batch = std::max<int64_t>(1, std::min(aopt.lora.docs_per_batch, docs / 3));
    }
    // Every rank runs the (unsplit) audit on its own copy: same result, no collectives.
    const eval::AuditReport r = eval::audit(*model, head, luts, aopt, ao);
    audit_s = r.seconds;
    audit_passed = r.passed;
    if (lead) std::printf("audit: %s (%d positions over %zu tokens; max |sum p - 1| %.2e, max |scored - used| %.2e, "
                "max causal change %.2e, tolerance %.1e)\n",
                r.passed ? "PASS" : "FAIL", r.positions, head.size(), r.max_sum_error, r.max_consistency,
                r.max_causal_diff, ao.tolerance);
    if (lead)
      for (const auto& f : r.failures) std::printf("audit:   %s\n", f.c_str());
    audit_json = {{"passed", r.passed},           {"positions", r.positions},
                  {"prefix_tokens", head.size()}, {"max_sum_error", r.max_sum_error},
                  {"max_consistency", r.max_consistency}, {"max_causal_diff", r.max_causal_diff},
                  {"tolerance", ao.tolerance},    {"failures", r.failures}};
  }

  // The budget covers the whole command: what loading and the audit used is gone from it.
  if (a.time_budget > 0) opt.time_budget_s = std::max(1e-9, a.time_budget - load_s - audit_s);
  opt.comm = comm;
  const eval::EvalResult r = eval::evaluate(*model, tokens, luts, opt);
  if (!lead) {
    PG_CHECK(audit_passed, "pgolf eval --audit: the legality audit FAILED on rank {}", comm->rank());
    return;
  }
  double eval_s = 0;
  nlohmann::json phases = {{"load", load_s}};
  for (const auto& [name, s] : r.phase_seconds) {
    phases[name] = s;
    eval_s += s;
  }
  if (a.audit) phases["audit"] = audit_s;

  std::printf("pgolf eval: mode %s, context %lld, stride %lld%s%s%s%s%s%s on %s%s\n", eval::mode_name(opt.mode),
              static_cast<long long>(opt.context), static_cast<long long>(opt.stride),
              opt.lora.enabled ? ", per-document LoRA TTT" : "", opt.ttt.enabled ? ", score-first TTT" : "", opt.phased.enabled ? ", phased global TTT" : "",
              opt.ngram.enabled ? ", n-gram mixture" : "", opt.tapin.enabled ? ", Tap-In" : "",
              a.hash_embed.enabled ? ", eval-time hash embedding" : "",
              std::string(device_name(dev)).c_str(),
              world > 1 ? (", split over " + std::to_string(world) + " " + comm->name() + " ranks").c_str() : "");
  if (opt.ngram.enabled || opt.tapin.enabled)
    std::printf("mixing: n-gram fired at %lld targets (%zu table entries), Tap-In hints at %lld targets\n",
                static_cast<long long>(r.ngram_fired), r.ngram_entries, static_cast<long long>(r.tapin_fired));
  if (opt.lora.enabled)
    std::printf("LoRA TTT: rank %d, alpha %g, chunk %lld, %lld docs per batch, lr %g, wd %g, %s A, sites %s: %lld AdamW "
                "steps\n", opt.lora.rank, opt.lora.alpha, static_cast<long long>(opt.lora.chunk),
                static_cast<long long>(opt.lora.docs_per_batch), opt.lora.lr, opt.lora.weight_decay,
                opt.lora.warm_a ? "warm" : "fresh", opt.lora.sites.c_str(), static_cast<long long>(r.ttt_steps));
  if (opt.phased.enabled)
    std::printf("phased TTT: %zu global phases, %lld SGD steps\n", r.phase_ends.size(),
                static_cast<long long>(r.phased_steps));
  std::printf("val_loss %.6f  val_bpb %.6f  scored %lld of %lld targets, %lld bytes, %lld of %lld windows%s\n",
              r.acc.loss(), r.acc.bpb(), static_cast<long long>(r.acc.tokens),
              static_cast<long long>(r.stream_targets), static_cast<long long>(r.acc.bytes),
              static_cast<long long>(r.windows), static_cast<long long>(r.total_windows),
              r.partial ? "  PARTIAL (time budget exceeded)" : "");
  std::printf("time: load %.2fs", load_s);
  for (const auto& [name, s] : r.phase_seconds) std::printf(", %s %.2fs", name.c_str(), s);
  if (a.audit) std::printf(", audit %.2fs", audit_s);
  std::printf("  (%.2f s per 1M scored tokens)\n", r.acc.tokens ? eval_s * 1e6 / static_cast<double>(r.acc.tokens) : 0.0);

  if (!a.json_path.empty()) {
    nlohmann::json j = {
        {"model", a.artifact.empty() ? a.run_dir : a.artifact},
        {"device", std::string(device_name(dev))},
        {"mode", eval::mode_name(opt.mode)},
        {"context", opt.context},
        {"stride", opt.stride},
        {"val_loss", r.acc.loss()},
        {"val_bpb", r.acc.bpb()},
        {"nll_nats", r.acc.nll_nats},
        {"scored_tokens", r.acc.tokens},
        {"scored_bytes", r.acc.bytes},
        {"stream_targets", r.stream_targets},
        {"windows", r.windows},
        {"total_windows", r.total_windows},
        {"partial", r.partial},
        {"world", world},
        {"time_budget_s", a.time_budget},
        {"phase_seconds", phases},
        {"seconds_per_million_tokens", r.acc.tokens ? eval_s * 1e6 / static_cast<double>(r.acc.tokens) : 0.0},
    };
    if (opt.ttt.enabled)
      j["ttt"] = {{"chunk_tokens", opt.ttt.chunk_tokens}, {"lr", opt.ttt.lr},
                  {"momentum", opt.ttt.momentum},         {"epochs", opt.ttt.epochs},
                  {"grad_clip", opt.ttt.grad_clip},       {"batch_seqs", opt.ttt.batch_seqs},
                  {"steps", r.ttt_steps}};
    if (opt.phased.enabled)
      j["phased_ttt"] = {{"prefix_docs", opt.phased.prefix_docs}, {"phases", opt.phased.phases},
                         {"lr", opt.phased.lr},                   {"chunk_tokens", opt.phased.chunk_tokens},
                         {"epochs", opt.phased.epochs},           {"momentum", opt.phased.momentum},
                         {"phase_ends", r.phase_ends},            {"steps", r.phased_steps}};
    if (opt.lora.enabled)
      j["lora_ttt"] = {{"rank", opt.lora.rank},   {"alpha", opt.lora.alpha},   {"chunk", opt.lora.chunk},
                       {"docs_per_batch", opt.lora.docs_per_batch}, {"forward_tokens", opt.lora.forward_tokens}, {"lr", opt.lora.lr},
                       {"beta1", opt.lora.beta1}, {"beta2", opt.lora.beta2}, {"eps", opt.lora.eps},
                       {"weight_decay", opt.lora.weight_decay},     {"warm_a", opt.lora.warm_a},
                       {"sites", opt.lora.sites}, {"steps", r.ttt_steps}};
    if (a.hash_embed.enabled)
      j["hash_embed"] = {{"buckets", a.hash_embed.buckets}, {"lr_mult", a.hash_embed.lr_mult}};
    if (opt.ngram.enabled)
      j["ngram"] = {{"min_order", opt.ngram.min_order}, {"max_order", opt.ngram.max_order},
                    {"min_count", opt.ngram.min_count}, {"alpha", a.ngram_alpha},
                    {"fired", r.ngram_fired},           {"entries", r.ngram_entries}};
    if (opt.tapin.enabled)
      j["tapin"] = {{"min_match", opt.tapin.min_match}, {"max_match", opt.tapin.max_match},
                    {"top_k", opt.tapin.top_k},         {"w_window", opt.tapin.w_window},
                    {"w_cross", opt.tapin.w_cross},     {"w_max", opt.tapin.w_max},
                    {"cross_window", opt.tapin.cross_window}, {"fired", r.tapin_fired}};
    if (a.audit) j["audit"] = audit_json;
    data::write_file_atomic(a.json_path, j.dump(2) + "\n");
  }
  PG_CHECK(audit_passed, "pgolf eval --audit: the legality audit FAILED (see the lines above)");
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand("eval", "Score a model on validation data (see docs/EVAL.md)");
  sub->add_option("--artifact", a->artifact, "Packed artifact file to score");
  sub->add_option("--run-dir", a->run_dir, "Training run folder to score (final weights or checkpoint)");
  sub->add_option("--val", a->val, "Validation shards: file, folder or glob")->required();
  sub->add_option("--tokenizer", a->tokenizer, "SentencePiece model (byte accounting)")->required();
  sub->add_option("--mode", a->mode, "plain | sliding | doc")->capture_default_str()->each([a](const std::string&) {
    a->mode_given = true;
  });
  sub->add_option("--context", a->context, "Context length T of every window")->capture_default_str();
  sub->add_option("--stride", a->stride, "Sliding stride s (sliding and doc modes)")->capture_default_str();
  sub->add_option("--batch-tokens", a->batch_tokens, "Tokens per forward pass")->capture_default_str();
  sub->add_option("--max-tokens", a->max_tokens, "Score only the first N targets (0 = all)");
  sub->add_flag("--no-trim", a->no_trim, "Score every val token (default: trim to k*context+1 like the reference)");
  sub->add_option("--time-budget", a->time_budget, "Seconds for the whole evaluation; past it the result is PARTIAL");
  sub->add_flag("--ttt", a->ttt.enabled, "Score-first chunked TTT (SGD on already-scored chunks)");
  sub->add_option("--ttt-chunk", a->ttt.chunk_tokens, "TTT chunk size in targets")->capture_default_str();
  sub->add_option("--ttt-lr", a->ttt.lr, "TTT base lr (cosine over chunks)")->capture_default_str();
  sub->add_option("--ttt-momentum", a->ttt.momentum, "TTT SGD momentum")->capture_default_str();
  sub->add_option("--ttt-epochs", a->ttt.epochs, "TTT epochs per chunk")->capture_default_str();
  sub->add_option("--ttt-clip", a->ttt.grad_clip, "TTT global grad-norm clip (0 = off)")->capture_default_str();
  sub->add_option("--ttt-batch", a->ttt.batch_seqs, "TTT sequences per SGD step")->capture_default_str();
  sub->add_option("--ttt-seq-len", a->ttt.seq_len, "TTT training row length (0 = --context)");
  auto* phased = sub->add_flag("--phased-ttt", a->phased.enabled,
                               "Phased global TTT: SGD on the whole scored prefix at document-count boundaries");
  sub->add_option("--phased-ttt-docs", a->phased.prefix_docs, "Documents covered by the phases")
      ->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-phases", a->phased.phases, "Number of phases")->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-lr", a->phased.lr, "Global SGD lr (cosine over the prefix's chunks)")
      ->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-chunk", a->phased.chunk_tokens, "Targets per global SGD chunk")
      ->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-epochs", a->phased.epochs, "Passes over the prefix per phase")
      ->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-momentum", a->phased.momentum, "Global SGD momentum")->capture_default_str()->needs(phased);
  sub->add_option("--phased-ttt-batch", a->phased.batch_seqs, "Global SGD rows per step")->capture_default_str()->needs(phased);
  auto* hash = sub->add_flag("--hash-embed", a->hash_embed.enabled,
                              "Eval-time hash embedding (zero table on the bigram hash) trained by --ttt");
  sub->add_option("--hash-embed-buckets", a->hash_embed.buckets, "Hash table rows")->capture_default_str()->needs(hash);
  sub->add_option("--hash-embed-lr-mult", a->hash_embed.lr_mult, "Table lr = this x --ttt-lr")
      ->capture_default_str()->needs(hash);
  auto* lora = sub->add_flag("--lora-ttt", a->lora.enabled,
                             "Per-document LoRA TTT (score each 48-target chunk, then one AdamW step on it)");
  sub->add_option("--lora-rank", a->lora.rank, "LoRA rank r")->capture_default_str()->needs(lora);
  sub->add_option("--lora-alpha", a->lora.alpha, "LoRA alpha (Delta W = alpha/r B A)")->capture_default_str()->needs(lora);
  sub->add_option("--lora-chunk", a->lora.chunk, "Targets per chunk (<= --context)")->capture_default_str()->needs(lora);
  sub->add_option("--lora-docs-per-batch", a->lora.docs_per_batch, "Documents per batch (grouped by length)")
      ->capture_default_str()->needs(lora);
  sub->add_option("--lora-forward-tokens", a->lora.forward_tokens,
                  "Tokens per forward of a chunk round (rows = this / window length, fixed per round so a document's "
                  "scores do not depend on its batch; 1 = one document per forward)")
      ->capture_default_str()->needs(lora);
  sub->add_option("--lora-lr", a->lora.lr, "AdamW lr")->capture_default_str()->needs(lora);
  sub->add_option("--lora-beta1", a->lora.beta1, "AdamW beta1")->capture_default_str()->needs(lora);
  sub->add_option("--lora-beta2", a->lora.beta2, "AdamW beta2")->capture_default_str()->needs(lora);
  sub->add_option("--lora-eps", a->lora.eps, "AdamW epsilon")->capture_default_str()->needs(lora);
  sub->add_option("--lora-wd", a->lora.weight_decay, "AdamW decoupled weight decay")->capture_default_str()->needs(lora);
  sub->add_flag("--lora-warm-a", a->lora.warm_a,
                "Keep A from the previous batch's document in the same row (the record's; not stream-causal, see "
                "docs/EVAL.md)")->needs(lora);
  sub->add_option("--lora-sites", a->lora.sites, "Adapted projections: any of q,k,v,o,mlp,head")
      ->capture_default_str()->needs(lora);
  sub->add_option("--lora-seed", a->lora.seed, "Seed of A's init")->needs(lora);
  sub->add_flag("--lora-full-backward{false}", a->lora.frozen_base,
                "Also compute the frozen base weights' gradients (the old, slower path; same scores; for A/B timing)")
      ->needs(lora);
  auto* ngram = sub->add_flag("--ngram", a->ngram.enabled,
                              "Mix a causal n-gram distribution (full, normalised, scored tokens only) into the model's");
  sub->add_option("--ngram-min-order", a->ngram.min_order, "Lowest n-gram order")->capture_default_str()->needs(ngram);
  sub->add_option("--ngram-max-order", a->ngram.max_order, "Highest n-gram order (backoff from it)")
      ->capture_default_str()->needs(ngram);
  sub->add_option("--ngram-min-count", a->ngram.min_count, "Context occurrences before an order fires")
      ->capture_default_str()->needs(ngram);
  sub->add_option("--ngram-alpha", a->ngram_alpha, "Mixture weight: 'entropy' (0.05 + 0.55 s(2(H-4))) or a number")
      ->capture_default_str()->needs(ngram);
  auto* tapin = sub->add_flag("--tapin", a->tapin.enabled, "Tap-In: mix in the continuation of the longest earlier match");
  sub->add_option("--tapin-min-match", a->tapin.min_match, "Shortest match")->capture_default_str()->needs(tapin);
  sub->add_option("--tapin-max-match", a->tapin.max_match, "Match length cap")->capture_default_str()->needs(tapin);
  sub->add_option("--tapin-top-k", a->tapin.top_k, "Gate: hint must be in the model's top k (0 = no gate)")
      ->capture_default_str()->needs(tapin);
  sub->add_option("--tapin-w-window", a->tapin.w_window, "Base weight of a match in the window")
      ->capture_default_str()->needs(tapin);
  sub->add_option("--tapin-w-cross", a->tapin.w_cross, "Base weight of a match earlier in the document")
      ->capture_default_str()->needs(tapin);
  sub->add_option("--tapin-w-max", a->tapin.w_max, "Weight cap")->capture_default_str()->needs(tapin);
  sub->add_flag("--tapin-no-cross", a->tapin_no_cross, "Only matches inside the window (no V6 cross-window search)")
      ->needs(tapin);
  sub->add_flag("--audit", a->audit, "Run the legality audit first (fails the command if it fails)");
  sub->add_option("--audit-samples", a->audit_samples, "Audited positions")->capture_default_str();
  sub->add_option("--audit-tokens", a->audit_tokens, "Prefix the audit runs on (0 = 4 * context)");
  sub->add_option("--audit-tol", a->audit_tol, "Audit log-prob tolerance (0 = 1e-4 on CPU, 5e-2 on CUDA)");
  sub->add_option("--device", a->device, "auto | cpu | cuda")->capture_default_str();
  sub->add_option("--json", a->json_path, "Write the result as JSON to FILE");
  sub->callback([a] { run_eval(*a); });
}

}  // namespace pgolf::cli
