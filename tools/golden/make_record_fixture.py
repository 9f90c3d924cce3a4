#!/usr/bin/env python3
"""Golden fixture for pgolf's record stack (configs/rec-2026-04-09.toml): a tiny model with every switch of that
preset turned on, in plain PyTorch, float64 on CPU, written from ../shared/spec/TECHNIQUES.md alone (not from pgolf's
C++ model code; only parameter names/shapes and config key spellings were taken from pgolf).

Switches (TECHNIQUES.md section): U-Net skips over the virtual layer list with sigmoid skip gates (§5.5, §5.12),
depth recurrence with a 3-layer loop segment run 3 times (§5.12), layer-wise LN scale 1/sqrt(l+1) (§5.6), XSA on every
layer (§5.7), GPT-J parallel residuals from a given physical layer on (§5.13), partial RoPE (§5.2), q/k RMSNorm and
q-gain (§5.3), LeakyReLU(0.5)^2 MLP 4x (§5.4), GQA (§5.1), tied embedding + soft-cap 30 (§5.16); optimizer: Muon with
MuonEq-R row normalisation, Nesterov, NS5, shape scaling and decoupled weight decay (§6.1, §6.4), AdamW groups for the
embedding and the scalars (§6.3), global gradient-norm clipping (§6.5).

Self-contained (needs only torch; not pgolf, not numpy, not the safetensors package). It
  1. draws random weights (every tensor non-zero, gates away from 0, so every gradient path carries signal) and
     rounds them to f32,
  2. runs forward + backward on one fixed batch in float64 from those weights, with looping ON (the 13-slot virtual
     list) and again with looping OFF (the plain 7-slot list, the first 35 % of a record run),
  3. runs 3 optimizer steps (looping on) with the record's optimizer settings, constant LR and momentum,
and writes into tests/fixtures/golden/ (or --out):
  record_weights.safetensors  initial parameters, pgolf's tensor names, F32
  record_io.safetensors       ids, targets (I32, (B, T));
                              logits (F32, (B*T, V), AFTER the soft-cap), grad.<name> = d(mean CE)/d(parameter)  [loop on]
                              plain.logits, plain.grad.<name>                                                    [loop off]
                              final.<name>: every parameter after the 3 optimizer steps
  record_scalars.json         config, virtual layer lists, loss, loss_plain, optimizer settings, opt_losses (the loss
                              before step 1 and after each of the 3 steps), opt_grad_norms (global grad norm before
                              clipping at each step), opt_param_sumsq
Usage: python3 tools/golden/make_record_fixture.py [--out DIR]

Choices where the spec leaves something open (also listed in tools/golden/README.md):
  A1 XSA: v_hat = v / ||v||_2 with no epsilon (§5.7 writes none; random v is far from 0 here).
  A2 Plain (non-looped) path: decoder slot j uses skip vector / gate row j, i.e. the first rows of the tables that are
     sized for the looped list (§5.12 only says the plain path is trained before looping is enabled).
  A3 GPT-J parallel block: one RMSNorm of x_in feeds both sublayers (§5.13 formula); resid_mix still forms x_in.
     "layers >= start" is read as physical layer index, also inside the loop.
  A4 LN scale multiplies the weightless RMSNorm output feeding attention and MLP only; the embedding norm, the q/k
     norms and the final norm are not scaled (§5.6).
  A5 Partial RoPE: the rotated slice is the FIRST rope_dims dims of each head, pairing i with i + rope_dims/2, angle
     t * base^(-2i/rope_dims); applied after q/k RMSNorm, before q-gain (§5.2).
  A6 Gradient clipping: g <- g * min(1, clip / ||g||) with ||g|| the L2 norm over every parameter's gradient, no epsilon
     (§6.5 gives none; torch's clip_grad_norm_ adds 1e-6 to the norm, a ~1e-6 relative difference at norms ~1).
  A7 AdamW: decoupled weight decay before the update, p <- p * (1 - lr * wd) - lr * m_hat / (sqrt(v_hat) + eps), the same
     order as §6.1 writes for Muon; bias-corrected moments (§4.4 Adam). Scalar WD = 0 as in the preset.
  A8 Muon weight decay multiplies by (1 - lr * wd) with the matrix lr (§6.1); MuonEq-R divides each row of the Nesterov
     update by max(||row||_2, 1e-7) before the Frobenius normalisation (§6.1).
  A9 Gradient clipping is applied to the gradients before every optimizer (Muon and Adam), i.e. Muon's momentum buffer
     accumulates clipped gradients.
"""
import argparse
import json
import math
import os
import struct

import torch

# Tiny model with every switch of configs/rec-2026-04-09.toml on. 7 layers + a loop over 2..4 with 2 extra passes give
# the odd virtual list 0,1,2,3,4,2,3,4,2,3,4,5,6 (13 slots, encoder 6 / decoder 7, 6 skip vectors), so, as in the
# record's 17-slot list, the encoder/decoder boundary falls inside the loop and the last decoder slot has no skip.
CFG = dict(vocab_size=64, num_layers=7, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=4.0, seq_len=32, batch=2,
           activation="leaky_relu2", leaky_slope=0.5, rope_base=10000.0, rope_dims=4, logit_softcap=30.0,
           tie_embeddings=True, norm_eps=1.1920929e-07, ln_scale=True, skip_gates=True, xsa_layers="all",
           parallel_residual="gptj", parallel_start=5, loop_start=2, loop_end=4, loop_passes=2, loop_enable_frac=0.0,
           qk_gain_init=5.25)
# The record's optimizer settings (configs/rec-2026-04-09.toml [optim]) with constant LR, constant momentum (warm-up
# off) and the clip threshold 0.3 (lowered automatically, and recorded, should the initial gradient norm not exceed 0.6).
OPT = dict(matrix_lr=0.022, scalar_lr=0.02, tied_embed_lr=0.03, muon_momentum=0.99, nesterov=True, backend_steps=5,
           ns_coefficients=[3.4445, -4.7750, 2.0315], muon_row_normalize=True, beta1=0.9, beta2=0.95, adam_eps=1e-8,
           muon_weight_decay=0.095, embed_weight_decay=0.085, scalar_weight_decay=0.0, grad_clip_norm=0.3, steps=3,
           momentum_warmup=False, lr_schedule="constant")
F64 = torch.float64


def layer_schedule(looping):
    """§5.12: [0 .. ls-1] + (n+1) x [ls .. le] + [le+1 .. L-1]; without looping 0 .. L-1."""
    L = CFG["num_layers"]
    if not looping:
        return list(range(L))
    ls, le, n = CFG["loop_start"], CFG["loop_end"], CFG["loop_passes"]
    return list(range(ls)) + (n + 1) * list(range(ls, le + 1)) + list(range(le + 1, L))


def num_skips():
    # Sized for the longest (looped) list: one vector per decoder slot that can receive a skip (§5.5, §5.12).
    n = len(layer_schedule(True))
    return min(n // 2, n - n // 2)


# ----------------------------------------------------------------------------------------------
# Weights: name -> f64 tensor holding f32-representable values (pgolf's names and shapes).

def make_weights(gen):
    V, d, L = CFG["vocab_size"], CFG["model_dim"], CFG["num_layers"]
    H, Hkv = CFG["num_heads"], CFG["num_kv_heads"]
    D = d // H
    hidden = int(CFG["mlp_mult"] * d + 0.5)

    def uniform(rows, cols):  # nn.Linear's default bound 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(cols)
        return (torch.rand(rows, cols, generator=gen, dtype=F64) * 2 - 1) * bound

    def around(shape, center, spread):
        return center + spread * torch.randn(*shape, generator=gen, dtype=F64)

    w = {"tok_emb.weight": 0.1 * torch.randn(V, d, generator=gen, dtype=F64)}
    S = num_skips()
    w["skip_weights"] = around((S, d), 1.0, 0.1)
    w["skip_gates"] = around((S, d), 0.0, 0.5)  # zero in real training; random so sigma(g) != 1/2 is tested
    for i in range(L):
        b = f"blocks.{i}."
        w[b + "attn.c_q.weight"] = uniform(d, d)
        w[b + "attn.c_k.weight"] = uniform(Hkv * D, d)
        w[b + "attn.c_v.weight"] = uniform(Hkv * D, d)
        w[b + "attn.proj.weight"] = uniform(d, d)  # zero in real training; random so q/k/v get gradients
        w[b + "attn.q_gain"] = around((H,), CFG["qk_gain_init"], 0.1)
        w[b + "mlp.fc.weight"] = uniform(hidden, d)
        w[b + "mlp.proj.weight"] = uniform(d, hidden)
        w[b + "attn_scale"] = around((d,), 1.0, 0.1)
        w[b + "mlp_scale"] = around((d,), 1.0, 0.1)
        w[b + "resid_mix"] = torch.stack([around((d,), 1.0, 0.1), around((d,), 0.0, 0.3)])
    return {k: v.float().double() for k, v in w.items()}


# ----------------------------------------------------------------------------------------------
# The model, written from the spec as plainly as possible.

def rms_norm(x):  # weightless, over the last dim
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + CFG["norm_eps"])


def partial_rope(x):
    """§5.2: x (B, T, H, D); rotate only the first r = rope_dims dims, pairing i with i + r/2 (rotate-half),
    angle t * base^(-2i/r); dims r .. D-1 pass through."""
    T, D = x.shape[1], x.shape[3]
    r = CFG["rope_dims"] or D
    half = r // 2
    inv_freq = CFG["rope_base"] ** (-2.0 * torch.arange(half, dtype=F64) / r)
    ang = torch.arange(T, dtype=F64)[:, None] * inv_freq[None, :]  # (T, half)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2, rest = x[..., :half], x[..., half:r], x[..., r:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def causal_gqa_attention(q, k, v):  # q: (B, T, H, D); k, v: (B, T, Hkv, D)
    B, T, H, D = q.shape
    group = H // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # query head h reads kv head h // group (§4.2: heads 2k, 2k+1 share k)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(dim=-1), v)


def xsa(y, v):
    """§5.7: remove from each head's output its component along the token's own value vector (of the head's KV head):
    y_{t,h} <- y_{t,h} - (y_{t,h} . v_hat_t) v_hat_t, v_hat = v / ||v|| (choice A1: no epsilon)."""
    group = y.shape[2] // v.shape[2]
    v_hat = v / v.norm(dim=-1, keepdim=True)
    v_hat = v_hat.repeat_interleave(group, dim=2)
    return y - (y * v_hat).sum(dim=-1, keepdim=True) * v_hat


def xsa_on(layer):
    spec = CFG["xsa_layers"]
    if spec == "all":
        return True
    return spec != "" and layer in [int(s) for s in spec.split(",")]


def attention(w, layer, n, B, T):
    b = f"blocks.{layer}."
    H, Hkv = CFG["num_heads"], CFG["num_kv_heads"]
    D = CFG["model_dim"] // H
    q = (n @ w[b + "attn.c_q.weight"].T).reshape(B, T, H, D)
    k = (n @ w[b + "attn.c_k.weight"].T).reshape(B, T, Hkv, D)
    v = (n @ w[b + "attn.c_v.weight"].T).reshape(B, T, Hkv, D)
    q, k = partial_rope(rms_norm(q)), partial_rope(rms_norm(k))  # §5.3 q/k RMSNorm over the head, then §5.2 RoPE
    q = q * w[b + "attn.q_gain"][None, None, :, None]  # §5.3 per-head gain after RoPE
    y = causal_gqa_attention(q, k, v)
    if xsa_on(layer):
        y = xsa(y, v)  # before W_o
    return y.reshape(B, T, H * D) @ w[b + "attn.proj.weight"].T


def mlp(w, layer, n):
    b = f"blocks.{layer}."
    u = n @ w[b + "mlp.fc.weight"].T
    if CFG["activation"] == "leaky_relu2":  # §5.4: (u if u > 0 else slope * u)^2
        h = torch.where(u > 0, u, CFG["leaky_slope"] * u).square()
    else:
        h = torch.relu(u).square()
    return h @ w[b + "mlp.proj.weight"].T


def block(w, layer, x, x0, B, T):
    b = f"blocks.{layer}."
    mix = w[b + "resid_mix"]
    x_in = mix[0] * x + mix[1] * x0  # §5.6 resid_mix
    c = 1.0 / math.sqrt(layer + 1) if CFG["ln_scale"] else 1.0  # §5.6: physical layer, also inside the loop (A4)
    if CFG["parallel_residual"] == "gptj" and layer >= CFG["parallel_start"]:  # §5.13 GPT-J form (A3)
        n = rms_norm(x_in) * c
        return x_in + w[b + "attn_scale"] * attention(w, layer, n, B, T) + w[b + "mlp_scale"] * mlp(w, layer, n)
    x1 = x_in + w[b + "attn_scale"] * attention(w, layer, rms_norm(x_in) * c, B, T)
    return x1 + w[b + "mlp_scale"] * mlp(w, layer, rms_norm(x1) * c)


def forward(w, ids, targets, looping=True):
    """Returns (capped logits (B*T, V), mean cross-entropy)."""
    B, T = ids.shape
    layers = layer_schedule(looping)
    n_enc = len(layers) // 2  # §5.5/§5.12: split over the virtual list
    x = rms_norm(w["tok_emb.weight"][ids])  # (B, T, d)
    x0 = x
    skips = []
    for layer in layers[:n_enc]:
        x = block(w, layer, x, x0, B, T)
        skips.append(x)
    for j, layer in enumerate(layers[n_enc:]):
        if skips:  # LIFO; decoder slot j uses skip vector j and gate row j (A2 for the plain list)
            s = w["skip_weights"][j] * skips.pop()
            if CFG["skip_gates"]:  # §5.5: x <- sigma(g) x + (1 - sigma(g)) (w skip)
                g = torch.sigmoid(w["skip_gates"][j])
                x = g * x + (1 - g) * s
            else:
                x = x + s
        x = block(w, layer, x, x0, B, T)
    z = rms_norm(x) @ w["tok_emb.weight"].T  # §5.16 tied head
    cap = CFG["logit_softcap"]
    logits = (cap * torch.tanh(z / cap)).reshape(B * T, -1)
    return logits, torch.nn.functional.cross_entropy(logits, targets.reshape(-1))


# ----------------------------------------------------------------------------------------------
# Optimizers (TECHNIQUES.md §6.1, §6.3, §6.4, §6.5), constant LR and momentum.

def is_muon(name, t):  # §4.4/§6.1: every 2-D block matrix
    return name.startswith("blocks.") and t.ndim == 2 and name.endswith(".weight")


def newton_schulz5(u):
    a, b, c = OPT["ns_coefficients"]
    x = u / (u.norm() + 1e-7)
    transposed = u.shape[0] > u.shape[1]
    if transposed:
        x = x.T
    for _ in range(OPT["backend_steps"]):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if transposed else x


def clip_gradients(grads):
    """§6.5: global L2 norm over all parameters; returns the norm before clipping (choice A6: no epsilon)."""
    norm = math.sqrt(sum(float(g.square().sum()) for g in grads.values()))
    clip = OPT["grad_clip_norm"]
    if clip > 0 and norm > clip:
        for g in grads.values():
            g.mul_(clip / norm)
    return norm


def optimizer_step(w, grads, state, step):
    mu, b1, b2, eps = OPT["muon_momentum"], OPT["beta1"], OPT["beta2"], OPT["adam_eps"]
    for name, p in w.items():
        g = grads[name]
        if is_muon(name, p):
            lr, wd = OPT["matrix_lr"], OPT["muon_weight_decay"]
            buf = state.setdefault(name, torch.zeros_like(p))
            buf.mul_(mu).add_(g)
            u = g + mu * buf if OPT["nesterov"] else buf.clone()
            if OPT["muon_row_normalize"]:  # MuonEq-R (A8)
                u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-7)
            x = newton_schulz5(u) * max(1.0, p.shape[0] / p.shape[1]) ** 0.5
            p.mul_(1 - lr * wd).sub_(lr * x)  # decoupled WD before the update
        else:
            if name == "tok_emb.weight":
                lr, wd = OPT["tied_embed_lr"], OPT["embed_weight_decay"]
            else:
                lr, wd = OPT["scalar_lr"], OPT["scalar_weight_decay"]
            m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
            p.mul_(1 - lr * wd).sub_(lr * m_hat / (v_hat.sqrt() + eps))  # AdamW (A7)


def loss_and_grads(w, ids, targets, looping=True):
    leaves = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    logits, loss = forward(leaves, ids, targets, looping)
    loss.backward()
    grads = {}
    for k, v in leaves.items():  # a parameter no path reaches would have grad None; report it as zeros
        grads[k] = v.grad.detach() if v.grad is not None else torch.zeros_like(v.detach())
    return logits.detach(), loss.item(), grads


# ----------------------------------------------------------------------------------------------
# Output (safetensors written by hand: 8-byte LE header length, JSON header, raw LE data).

def save_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous().reshape(-1)
        if t.dtype == torch.int32:
            dtype, data = "I32", struct.pack(f"<{t.numel()}i", *t.tolist())
        else:
            dtype, data = "F32", struct.pack(f"<{t.numel()}f", *t.float().tolist())
        header[name] = {"dtype": dtype, "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "fixtures", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_grad_enabled(True)

    gen = torch.Generator().manual_seed(20260409)
    w = make_weights(gen)
    B, T, V = CFG["batch"], CFG["seq_len"], CFG["vocab_size"]
    ids = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)

    logits, loss, grads = loss_and_grads(w, ids, targets, looping=True)
    logits_plain, loss_plain, grads_plain = loss_and_grads(w, ids, targets, looping=False)
    for k, g in grads.items():  # every parameter must be reached by the looped forward
        assert float(g.abs().max()) > 0, f"no gradient reaches {k}"

    # Clip threshold: the record's 0.3 unless the gradient is too small for it to clip (then half the initial norm).
    norm0 = math.sqrt(sum(float(g.square().sum()) for g in grads.values()))
    if norm0 <= 2 * OPT["grad_clip_norm"]:
        OPT["grad_clip_norm"] = float(torch.tensor(norm0 / 2).float())
        print(f"note: initial grad norm {norm0:.4f}: grad_clip_norm lowered to {OPT['grad_clip_norm']:.6f}")

    # 3 optimizer steps from the same weights (looping on); opt_losses[s] is the loss before step s+1.
    w_opt = {k: v.clone() for k, v in w.items()}
    state, losses, norms = {}, [loss], []
    for step in range(1, OPT["steps"] + 1):
        _, l_before, g = loss_and_grads(w_opt, ids, targets, looping=True)
        assert step > 1 or abs(l_before - loss) < 1e-12
        norms.append(clip_gradients(g))
        optimizer_step(w_opt, g, state, step)
        with torch.no_grad():
            losses.append(forward(w_opt, ids, targets, looping=True)[1].item())
    if not all(n > OPT["grad_clip_norm"] for n in norms):
        print(f"WARNING: clipping inactive at some step: norms {norms}, clip {OPT['grad_clip_norm']}")

    save_safetensors(os.path.join(args.out, "record_weights.safetensors"), w)
    io = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32), "logits": logits,
          "plain.logits": logits_plain}
    io.update({"grad." + k: g for k, g in grads.items()})
    io.update({"plain.grad." + k: g for k, g in grads_plain.items()})
    io.update({"final." + k: v for k, v in w_opt.items()})
    save_safetensors(os.path.join(args.out, "record_io.safetensors"), io)

    layers = layer_schedule(True)
    scalars = {"config": CFG, "optimizer": OPT,
               "schedule": layers, "schedule_plain": layer_schedule(False), "num_skip_weights": num_skips(),
               "num_encoder_slots": len(layers) // 2,
               "loss": loss, "loss_plain": loss_plain, "opt_losses": losses, "opt_grad_norms": norms,
               "opt_param_sumsq": {k: float(v.square().sum()) for k, v in w_opt.items()},
               "torch_version": torch.__version__}
    path = os.path.join(args.out, "record_scalars.json")
    with open(path + ".tmp", "w") as f:
        json.dump(scalars, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"loss {loss:.10f} (plain {loss_plain:.10f}); grad norms {norms}; losses over {OPT['steps']} steps: {losses}; "
          f"written to {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
