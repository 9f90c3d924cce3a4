#pragma once
// The GPT model family of the baseline and the records (TECHNIQUES.md §4, §5): the forward pass is
// written once; the backward comes from the tape. Contract used by the trainer, evaluator and
// quantizer (the model helper owns the implementation and may extend this header compatibly).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/tensor.h"
#include "model/gdn_layer.h"
#include "model/params.h"

namespace pgolf::model {

class Tape;
struct Var;

struct ModelConfig {
  int vocab_size = 1024;
  int num_layers = 9;
  int model_dim = 512;
  int num_heads = 8;
  int num_kv_heads = 4;
  float mlp_mult = 2.f;              // hidden = round(mlp_mult * d); non-integers allowed (§5.4)
  std::string activation = "relu2";  // relu2 | leaky_relu2
  float leaky_slope = 0.5f;
  float rope_base = 10000.f;
  int rope_dims = 0;                 // 0 = full head dim (§5.2 partial RoPE: 16)
  float qk_gain_init = 1.5f;
  float logit_softcap = 30.f;
  bool tie_embeddings = true;
  float tied_embed_init_std = 0.005f;
  // Record-stack switches (TECHNIQUES.md §5); the defaults are the baseline.
  bool ln_scale = false;             // §5.6: block l's normed inputs times 1/sqrt(l+1) (physical l)
  bool skip_gates = false;           // §5.5: x <- s(g) x + (1 - s(g)) (w skip), parameter "skip_gates"
  std::string xsa_layers;            // §5.7: "" none | "all" | "0,3,7" (physical layers)
  std::string parallel_residual = "none";  // §5.13: none | gptj (one lane) | two_lane (lanes A and M)
  int parallel_start = 0;            // §5.13: first physical layer with parallel residuals (two_lane:
                                     // lanes split at the first decoder slot whose layer is >= it)
  int loop_start = -1;               // §5.12: loop segment [loop_start, loop_end] (physical); -1 = no loop
  int loop_end = -1;
  int loop_passes = 0;               // §5.12: extra passes n (the segment runs n + 1 times)
  float loop_enable_frac = 0.f;      // §5.12: training fraction at which looping switches on
  std::string loop_pass_fracs;       // §5.12 progressive activation: "" (every pass at loop_enable_frac) or one
                                     // fraction per extra pass, non-decreasing ("0.5,0.65": pass 1 at 50 %, 2 at 65 %)
  bool loop_embeddings = false;      // §5.12 per-pass loop embeddings: a zero-init d-vector added at the start of each pass
  std::string smear_gate = "none";   // §5.8: none | v1 (static per-channel) | v2 (gated, BOS-masked)
  int smear_window = 12;             // §5.8 v2: GATE_WINDOW, the channels the gate reads
  bool doc_isolated = false;         // §5.15: no attention across BOS (doc_start from the batch's ids)
  int bos_id = 1;                    // the BOS token id doc_isolated / SmearGate v2 split documents at
  std::string attn_gate = "none";    // §5.14: none | out (2 s(W n[0:w])) | dense (s(W n)) | sparse (s(c W n[0:w]))
  int attn_gate_window = 12;         // §5.14: input channels the out/sparse gate reads (dense reads all d)
  float attn_gate_scale = 0.5f;      // §5.14 sparse: c (top record 0.5)
  bool value_residual = false;       // §5.11 VRL: v_l <- lerp(v_l, v_layer0, s(a_l)) for layers >= 1
  float vrl_init = -1.5f;            // §5.11: a_l init (s(-1.5) = 0.18)
  int ve_dim = 0;                    // §5.10 value embeddings: table width (0 = off; records 128)
  std::string ve_layers;             // §5.10: physical layers that add the value embedding ("9,10")
  int bigram_buckets = 0;            // §5.9 BigramHash: table rows N_b (0 = off)
  int bigram_dim = 128;              // §5.9: table width d_b (projected to d)
  bool bigram_trigram = false;       // §5.9: also look up the trigram hash in the same table (summed)
  // GatedDeltaNet hybrid of seed #1672 (§5.17, §5.18; docs/GDN.md, src/model/gdn_layer.h).
  std::string gdn_layers;            // physical layers whose token mixer is a GatedDeltaNet ("" none, "all", "0,1")
  int gdn_conv_size = 4;             // §5.18 kernel of the short causal convolutions
  int gdn_chunk = 64;                // §5.18 chunk C of the chunked (training) form
  bool gdn_neg_eigval = true;        // §5.18 allow_neg_eigval: beta = 2 sigmoid(W_b x) (false: sigmoid)
  bool share_attention = false;      // §5.17 every attention layer runs the first attention layer's module
  int attn_window = 0;               // sliding attention window in tokens (0 = full causal; §5.17)
  bool unet = true;                  // §4.2 U-Net skips (false: a plain stack, as seed #1672)
  float norm_eps = 1.1920929e-07f;   // torch.finfo(float32).eps, F.rms_norm's default for fp32
  DType act_dtype = DType::F32;      // activations between ops: F32 on CPU, BF16 on GPU
  // Implementation switch, not architecture: the sequential block's residual updates run fused with the
  // norms that read them (Tape::mix_rmsnorm / add_rmsnorm, ops/residual_norm.h). Same function (float
  // rounding only); false keeps the separate ops (the reference the fused path is tested against).
  bool fuse_residual_norm = true;
  // Implementation switch: keep each MLP's activation act(fc(x)) from the forward for the backward instead of
  // recomputing it there (one (N, hidden) buffer per MLP more; bit-identical results).
  bool mlp_keep_act = true;
  int head_dim() const { return model_dim / num_heads; }
  int mlp_hidden() const { return static_cast<int>(mlp_mult * model_dim + 0.5f); }
  bool has_loop() const { return loop_passes > 0 && loop_start >= 0; }
};

// The virtual layer list (§5.12): physical block index per virtual slot. With looping, the segment
// [loop_start, loop_end] appears loop_passes + 1 times; without, it is 0 .. num_layers-1.
std::vector<int> layer_schedule(const ModelConfig& cfg, bool looping);
// The same list with `passes` (0..loop_passes) of the extra passes on: the segment appears passes + 1 times.
std::vector<int> layer_schedule_passes(const ModelConfig& cfg, int passes);
// §5.12 progressive activation: the fractions of cfg.loop_pass_fracs (empty when unset); fails naming the key
// when the list is malformed, not non-decreasing, outside [0, 1] or not one entry per extra pass.
std::vector<double> parse_loop_pass_fracs(const ModelConfig& cfg);
// Extra passes on at training fraction `frac`: with loop_pass_fracs, the number of fractions <= frac; without,
// all of them once frac >= loop_enable_frac; 0 without a loop.
int loop_passes_at(const ModelConfig& cfg, double frac);
// A set of physical layers from "" (none), "all" or a comma list "0,3,7"; errors name `key`.
std::vector<bool> parse_layer_set(const std::string& spec, int num_layers, const char* key);
// Throws a clear error for an inconsistent or not-yet-implemented configuration.
void check_model_config(const ModelConfig& cfg);

class GPT {
 public:
  GPT(const ModelConfig& cfg, Device dev);
  const ModelConfig& config() const { return cfg_; }
  ParamTable& params() { return params_; }
  const ParamTable& params() const { return params_; }
  Device device() const { return dev_; }

  // Deterministic init from `seed` (Philox), identical on CPU and GPU.
  void init(uint64_t seed);

  // ids, targets: (B, T) i32 on the model's device. Forward + backward of
  // loss = grad_scale * sum over rows of CE; grads ACCUMULATE into params().grad.
  // loss_sum: (1) f32 device tensor, receives += sum of per-token losses (nats) over the batch.
  // All temporaries come from `arena` (reset to its entry mark on return).
  void forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale, Arena& arena,
                        const Tensor& loss_sum);
  // Forward only: per-token losses (B*T) f32 (nats). Used by every evaluation path.
  void forward_losses(const Tensor& ids, const Tensor& targets, Arena& arena, const Tensor& losses);
  // Forward only, scoring just the last `tail` positions of every row: targets (B, tail) i32, losses (B*tail) f32.
  // The final norm, the head and the cross-entropy run on those rows only (sliding-window evaluation scores the
  // last `stride` positions of each window; the head is ≈6 % of the forward at vocab 8192, the logits' memory
  // traffic more). 0 < tail <= T.
  void forward_losses_tail(const Tensor& ids, const Tensor& targets, int64_t tail, Arena& arena, const Tensor& losses);
  // Forward only: the raw tied-head logits z = h E^T (B*T, V) in cfg.act_dtype (before the soft-cap).
  void forward_logits(const Tensor& ids, Arena& arena, const Tensor& logits);
  // Bytes the arena needs at (B, T) (measuring dry runs): with_backward, the larger of forward_backward's
  // and forward_losses' peaks (a training arena also serves forward-only passes); else forward_losses'.
  size_t plan_bytes(int64_t B, int64_t T, bool with_backward = true);
  // The training step's own peak at (B, T), without the forward-only pass plan_bytes also covers.
  size_t step_plan_bytes(int64_t B, int64_t T);

  // The parameter table of `cfg` with specs only (nothing allocated): counts and names of big models.
  static ParamTable describe(const ModelConfig& cfg);

  // Depth recurrence (§5.12): the trainer reports the fraction of training done (0..1) before each
  // step; the extra passes on are loop_passes_at(cfg, frac) (all at loop_enable_frac, or one by one at
  // loop_pass_fracs). A newly constructed model runs every pass (its final trained state, what evaluation
  // of a checkpoint needs). set_looping forces all or none, set_loop_passes a given number.
  void set_training_fraction(double frac);
  void set_looping(bool on);
  void set_loop_passes(int passes);
  bool looping() const { return loop_passes_on_ > 0; }
  int loop_passes_on() const { return loop_passes_on_; }
  std::vector<int> schedule() const { return layer_schedule_passes(cfg_, loop_passes_on_); }

  // Document packing (§2.5, data.loader = "document_packing"): the trainer feeds one flat row per micro-step and
  // cuts documents longer than `len` tokens into segments of `len` (ops::doc_starts' max_len) for doc_isolated
  // attention; 0 (the default, and every evaluation path) cuts only at BOS.
  void set_doc_segment_len(int64_t len);
  int64_t doc_segment_len() const { return doc_segment_len_; }

  // Data-parallel overlap (issue 10): while forward_backward runs, `fn(params)` is called with parameter indices
  // whose gradients are final: the tensors of block l ("blocks.l.*") as soon as the backward is past the block's
  // first use, the rest after the backward. A block whose tensors are read before the block starts (a
  // cross-layer module) is reported with the rest. Every parameter is reported exactly once per call. Null = off.
  using GradReadyFn = std::function<void(const std::vector<size_t>& params)>;
  void set_grad_ready(GradReadyFn fn) { grad_ready_ = std::move(fn); }

  // Test-time adapters (per-document LoRA TTT, eval/lora_ttt.h; TECHNIQUES.md §8.4), off unless set. When set,
  // the forward passes each adapted projection's output through `apply` together with the input the adapter
  // reads: Q, K, V and O all read the normed attention input, the MLP (as a whole) reads its normed input, the
  // head the final normed state. `slot` is the virtual layer slot (-1 for the head); a GatedDeltaNet layer
  // gets the MLP site only. Code: gpt_lora.cpp (and one call per site in gpt_forward.cpp).
  enum class AdapterSite : uint8_t { Q, K, V, O, Mlp, Head };
  class Adapter {
   public:
    virtual ~Adapter() = default;
    virtual Var apply(Tape& tp, AdapterSite site, int slot, const Var& in, const Var& out) = 0;
  };
  void set_adapter(Adapter* a) { adapter_ = a; }
  Adapter* adapter() const { return adapter_; }
  // forward_backward that also writes the per-token losses (B*T) f32: score and train in one pass.
  void forward_backward_losses(const Tensor& ids, const Tensor& targets, float grad_scale, Arena& arena,
                               const Tensor& losses);

  // U-Net split of the current virtual layer list (§4.2, §5.5).
  int num_encoder_layers() const { return cfg_.unet ? static_cast<int>(schedule().size()) / 2 : 0; }
  int num_decoder_layers() const { return static_cast<int>(schedule().size()) - num_encoder_layers(); }
  // Skip vectors: enough for the longest (looped) list; the plain list uses the first ones.
  int num_skip_weights() const;

 private:
  // Indices into params_ of one block's tensors (indices, not pointers, so a GPT can be copied).
  struct BlockParams {
    size_t c_q, c_k, c_v, attn_proj, q_gain, fc, mlp_proj, attn_scale, mlp_scale, resid_mix;
    bool xsa = false;  // §5.7 on this physical layer
    // Second batch of record modules (gpt_extra2.cpp; 0 = absent): the layer's index, its attention
    // output gate (§5.14), VRL mix logit (§5.11) and value-embedding scale (§5.10).
    int index = 0;
    size_t attn_gate = 0, vrl = 0, ve_scale = 0;
    int gdn = -1;  // index into gdn_ when this layer's token mixer is a GatedDeltaNet (§5.18)
  };
  struct SpecsOnly {};
  GPT(const ModelConfig& cfg, Device dev, SpecsOnly);
  // The gate of one U-Net skip (§5.5) as two per-channel mixes: x <- s_keep x + s_skip skip with
  // s_keep = sigmoid(g), s_skip = sigmoid(-g) w. Their gradients land in scratch vectors and are
  // folded into g and w after the tape's backward (apply_skip_gate_grads).
  struct SkipGateMix {
    int slot;
    Tensor keep, keep_grad, skip, skip_grad;  // (d) f32 each
  };
  void build_params();
  SkipGateMix skip_gate_mix(Tape& tp, int slot);
  void apply_skip_gate_grads(const std::vector<SkipGateMix>& mixes, Arena& arena);
  // The scale 1/sqrt(l+1) of physical layer l applied to a normed block input (identity when off).
  Var ln_scaled(Tape& tp, const Var& n, int layer);
  // That scale as a number (1 when off): the gain the fused residual norms fold in.
  float ln_gain(int layer) const { return cfg_.ln_scale ? ln_scale_value(layer) : 1.f; }
  static float ln_scale_value(int layer) { return 1.f / std::sqrt(static_cast<float>(layer + 1)); }
  Param& p(size_t index) {
    if (track_uses_) note_use(index);
    return params_.all()[index];
  }
  // Gradient-ready reporting (set_grad_ready): a backward marker at the first forward visit of block `layer`.
  void mark_block(Tape& tp, int layer);
  void note_use(size_t index);
  void report_bucket(int bucket);  // bucket = layer, or -1 for everything not reported yet
  void begin_grad_ready(bool active);  // before the forward of forward_backward (active: not measuring)
  void end_grad_ready_forward();       // after it: uses are no longer tracked
  // The whole network up to the raw logits (B*T, V); written once for training and evaluation.
  // gates receives the skip-gate mixes whose gradients backward() must fold in.
  Var forward(Tape& tp, const Tensor& ids, std::vector<SkipGateMix>* gates);
  Var block(Tape& tp, int layer, const Var& x, const Var& x0, int64_t B, int64_t T);
  // block() through the fused residual norms (cfg.fuse_residual_norm); gptj: the GPT-J form of the layer.
  Var fused_block(Tape& tp, int layer, const BlockParams& bp, Param& mix, bool gptj, const Var& x, const Var& x0,
                  int64_t B, int64_t T);
  // §5.12 per-pass loop embeddings: x + e_pass (identity when cfg.loop_embeddings is off or `layer` is not the
  // loop's first layer); *pass counts the visits of the loop's first layer in this forward.
  Var loop_embed(Tape& tp, const Var& x, int layer, int* pass);
  Var attention(Tape& tp, const BlockParams& bp, const Var& n, int64_t B, int64_t T);
  Var mlp(Tape& tp, const BlockParams& bp, const Var& n);
  // The arena peak of one measuring dry run at (B, T): the training step, or a forward-only pass.
  size_t measure_peak(int64_t B, int64_t T, bool step);
  // Record-stack pieces (gpt_extra.cpp). Parameters of the optional modules (called by build_params).
  void build_extra_params();
  // doc_start_ for this batch when doc_isolated (an Arena buffer), else undefined.
  void prepare_documents(Tape& tp, const Tensor& ids);
  // SmearGate on the raw embedding (v2) / on the normed embedding (v1); identity otherwise.
  Var smear_raw(Tape& tp, const Var& e, const Tensor& ids);
  Var smear_normed(Tape& tp, const Var& x, int64_t T);
  bool two_lane() const { return cfg_.parallel_residual == "two_lane"; }
  // One two-lane block (§5.13): reads lane A (with the x0 mix) and lane M, returns the new A and
  // replaces *m with the new M.
  Var two_lane_block(Tape& tp, int layer, const Var& a, Var* m, const Var& x0, int64_t B, int64_t T);
  Var merge_lanes(Tape& tp, const Var& a, const Var& m);  // (A + M) / 2
  // Second batch (gpt_extra2.cpp): parameters, then the forward hooks. embed_extras adds the
  // BigramHash term to the raw embedding and prepares the batch's value embedding; value_extras
  // applies VE and VRL to a layer's values (N, kv); out_gate gates the attention output (N, H, D).
  void build_extra2_params();
  Var embed_extras(Tape& tp, const Var& e, const Tensor& ids);
  Var value_extras(Tape& tp, const BlockParams& bp, const Var& v);
  Var out_gate(Tape& tp, const BlockParams& bp, const Var& n, const Var& y);

  // Test-time adapter hook (gpt_lora.cpp): `out` unchanged when no adapter is set.
  Var adapt(Tape& tp, AdapterSite site, const Var& in, const Var& out);
  Adapter* adapter_ = nullptr;
  int adapter_slot_ = -1;  // the virtual slot of the block in flight (counted by attention())

  ModelConfig cfg_;
  Device dev_;
  ParamTable params_;
  size_t tok_emb_ = 0, skip_weights_ = 0, skip_gates_ = 0, loop_emb_ = 0;
  Tensor loop_unit_, loop_unit_grad_, loop_ones_;  // loop_embed's constants of the current forward (arena)
  std::vector<BlockParams> blocks_;
  std::vector<GdnParams> gdn_;  // the GatedDeltaNet layers' parameters (BlockParams::gdn)
  Tensor head_expand_;  // (H, H*D) f32 0/1: broadcasts a per-head gain to channels
  Tensor ones_d_;       // (d) f32 ones
  Tensor row_expand_;   // (1, d) f32 ones: broadcasts a per-layer scalar to channels
  // Constant per-layer LN scales as (1)-element pseudo-parameters (not in params_): their value is
  // 1/sqrt(l+1); their grad is undefined, so mul_head computes none.
  std::vector<Param> ln_scales_;
  int loop_passes_on_ = 0;  // extra loop passes in the current schedule (0 = plain)
  GradReadyFn grad_ready_;
  bool track_uses_ = false;
  std::vector<int> bucket_of_;         // per parameter: its block, or -1
  std::vector<char> bucket_marked_;    // per block: marker recorded in this forward
  std::vector<char> bucket_unsafe_;    // per block: a tensor was used before the block's marker (sticky)
  std::vector<char> param_reported_;   // per parameter, this call
  // Optional modules (0 = absent; index into params_).
  size_t smear_gate_ = 0, smear_w_ = 0, smear_lambda_ = 0, lane_resid_ = 0, lane_route_ = 0;
  Tensor half_;      // (1) f32 0.5, the constant weight of merge_lanes
  Tensor doc_start_;  // (B, T) i32 of the batch in flight (doc_isolated), else undefined
  int64_t doc_segment_len_ = 0;  // set_doc_segment_len
  int64_t head_tail_ = 0;        // forward_losses_tail: rows per sequence kept for the head (0 = all)
  size_t bigram_table_ = 0, bigram_proj_ = 0, bigram_scale_ = 0, ve_table_ = 0, ve_proj_ = 0, ve_gain_ = 0;
  // Tape values of the batch in flight, as (tensor, node) pairs (Var is incomplete here): the value
  // embedding scale * P_v E_v[ids] (N, kv) and layer 0's values for VRL (node -2: not set yet).
  Tensor ve_t_, v0_t_;
  int ve_node_ = -2, v0_node_ = -2;
};

}  // namespace pgolf::model
