#!/usr/bin/env python3
"""Golden fixture for pgolf's baseline GPT (TECHNIQUES.md §4): a small model in plain PyTorch, float64 on CPU.

Self-contained (needs only torch; not pgolf, not numpy, not the safetensors package). It
  1. draws random weights (every tensor non-zero so every gradient path is exercised) and rounds them to f32,
  2. runs forward + backward on one fixed batch in float64 from those f32 weights,
  3. runs 3 optimizer steps (Muon NS5 for block matrices, Adam for the rest; constant LR and momentum),
and writes into tests/fixtures/golden/ (or --out):
  baseline_weights.safetensors  initial parameters, reference tensor names, F32
  baseline_io.safetensors       ids, targets (I32, (B, T)); logits (F32, (B*T, V), AFTER the soft-cap);
                                grad.<name> (F32) = d(mean CE)/d(parameter)
  baseline_scalars.json         config, loss, the 4 losses around the 3 optimizer steps, optimizer settings,
                                sum of squares of every parameter after the 3 steps
Usage: python3 tools/golden/make_baseline_fixture.py [--out DIR]
"""
import argparse
import json
import math
import os
import struct

import torch

CFG = dict(vocab_size=64, num_layers=3, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2, seq_len=32, batch=2,
           rope_base=10000.0, logit_softcap=30.0, norm_eps=1.1920929e-07)
OPT = dict(matrix_lr=0.04, scalar_lr=0.04, tied_embed_lr=0.05, muon_momentum=0.95, nesterov=True, backend_steps=5,
           ns_coefficients=[3.4445, -4.7750, 2.0315], beta1=0.9, beta2=0.95, adam_eps=1e-8, steps=3,
           momentum_warmup=False, lr_schedule="constant")
F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# Weights: name -> f64 tensor holding f32-representable values.

def make_weights(gen):
    V, d, L = CFG["vocab_size"], CFG["model_dim"], CFG["num_layers"]
    H, Hkv = CFG["num_heads"], CFG["num_kv_heads"]
    D = d // H
    hidden = CFG["mlp_mult"] * d
    n_skip = min(L // 2, L - L // 2)

    def uniform(rows, cols):  # nn.Linear's default bound 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(cols)
        return (torch.rand(rows, cols, generator=gen, dtype=F64) * 2 - 1) * bound

    def around(shape, center, spread):
        return center + spread * torch.randn(*shape, generator=gen, dtype=F64)

    # std 0.1: h . E[own id] reaches ~6 (tied head) and the cap bends it by ~1%; larger stds saturate the softmax
    w = {"tok_emb.weight": 0.1 * torch.randn(V, d, generator=gen, dtype=F64)}
    if n_skip:
        w["skip_weights"] = around((n_skip, d), 1.0, 0.1)
    for i in range(L):
        b = f"blocks.{i}."
        w[b + "attn.c_q.weight"] = uniform(d, d)
        w[b + "attn.c_k.weight"] = uniform(Hkv * D, d)
        w[b + "attn.c_v.weight"] = uniform(Hkv * D, d)
        w[b + "attn.proj.weight"] = uniform(d, d)  # zero in real training; random here so q/k/v get gradients
        w[b + "attn.q_gain"] = around((H,), 1.5, 0.1)
        w[b + "mlp.fc.weight"] = uniform(hidden, d)
        w[b + "mlp.proj.weight"] = uniform(d, hidden)
        w[b + "attn_scale"] = around((d,), 1.0, 0.1)
        w[b + "mlp_scale"] = around((d,), 1.0, 0.1)
        w[b + "resid_mix"] = torch.stack([around((d,), 1.0, 0.1), around((d,), 0.0, 0.3)])
    return {k: v.float().double() for k, v in w.items()}


# ----------------------------------------------------------------------------------------------
# The model, written from the spec as plainly as possible.

def rms_norm(x):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + CFG["norm_eps"])


def rope(x):  # x: (B, T, H, D); pair dim i with i + D/2, angle t * base^(-2i/D)
    T, D = x.shape[1], x.shape[3]
    half = D // 2
    inv_freq = CFG["rope_base"] ** (-2.0 * torch.arange(half, dtype=F64) / D)
    ang = torch.arange(T, dtype=F64)[:, None] * inv_freq[None, :]  # (T, half)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def causal_gqa_attention(q, k, v):  # q: (B, T, H, D); k, v: (B, T, Hkv, D)
    B, T, H, D = q.shape
    group = H // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(dim=-1), v)


def attention(w, b, n, B, T):
    H, Hkv = CFG["num_heads"], CFG["num_kv_heads"]
    D = CFG["model_dim"] // H
    q = (n @ w[b + "attn.c_q.weight"].T).reshape(B, T, H, D)
    k = (n @ w[b + "attn.c_k.weight"].T).reshape(B, T, Hkv, D)
    v = (n @ w[b + "attn.c_v.weight"].T).reshape(B, T, Hkv, D)
    q, k = rope(rms_norm(q)), rope(rms_norm(k))
    q = q * w[b + "attn.q_gain"][None, None, :, None]
    y = causal_gqa_attention(q, k, v).reshape(B, T, H * D)
    return y @ w[b + "attn.proj.weight"].T


def mlp(w, b, n):
    h = torch.relu(n @ w[b + "mlp.fc.weight"].T).square()
    return h @ w[b + "mlp.proj.weight"].T


def block(w, i, x, x0, B, T):
    b = f"blocks.{i}."
    mix = w[b + "resid_mix"]
    x = mix[0] * x + mix[1] * x0
    x = x + w[b + "attn_scale"] * attention(w, b, rms_norm(x), B, T)
    return x + w[b + "mlp_scale"] * mlp(w, b, rms_norm(x))


def forward(w, ids, targets):
    """Returns (capped logits (B*T, V), mean cross-entropy)."""
    B, T = ids.shape
    L = CFG["num_layers"]
    n_enc = L // 2
    x = rms_norm(w["tok_emb.weight"][ids])  # (B, T, d)
    x0 = x
    skips = []
    for i in range(n_enc):
        x = block(w, i, x, x0, B, T)
        skips.append(x)
    for j in range(L - n_enc):
        if skips:
            x = x + w["skip_weights"][j] * skips.pop()
        x = block(w, n_enc + j, x, x0, B, T)
    z = rms_norm(x) @ w["tok_emb.weight"].T
    cap = CFG["logit_softcap"]
    logits = (cap * torch.tanh(z / cap)).reshape(B * T, -1)
    return logits, torch.nn.functional.cross_entropy(logits, targets.reshape(-1))


# ----------------------------------------------------------------------------------------------
# Optimizers (TECHNIQUES.md §4.4 / §6.1), constant LR and momentum.

def is_muon(name, t):
    return name.startswith("blocks.") and t.ndim == 2 and name.endswith(".weight")


def newton_schulz5(g):
    a, b, c = OPT["ns_coefficients"]
    x = g / (g.norm() + 1e-7)
    transposed = g.shape[0] > g.shape[1]
    if transposed:
        x = x.T
    for _ in range(OPT["backend_steps"]):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if transposed else x


def optimizer_step(w, grads, state, step):
    mu, b1, b2, eps = OPT["muon_momentum"], OPT["beta1"], OPT["beta2"], OPT["adam_eps"]
    for name, p in w.items():
        g = grads[name]
        if is_muon(name, p):
            buf = state.setdefault(name, torch.zeros_like(p))
            buf.mul_(mu).add_(g)
            u = g + mu * buf if OPT["nesterov"] else buf
            x = newton_schulz5(u) * max(1.0, p.shape[0] / p.shape[1]) ** 0.5
            p.sub_(OPT["matrix_lr"] * x)
        else:
            lr = OPT["tied_embed_lr"] if name == "tok_emb.weight" else OPT["scalar_lr"]
            m, v = state.setdefault(name, (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
            p.sub_(lr * m_hat / (v_hat.sqrt() + eps))


def loss_and_grads(w, ids, targets):
    leaves = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    logits, loss = forward(leaves, ids, targets)
    loss.backward()
    return logits.detach(), loss.item(), {k: v.grad.detach() for k, v in leaves.items()}


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

    gen = torch.Generator().manual_seed(20260317)
    w = make_weights(gen)
    B, T, V = CFG["batch"], CFG["seq_len"], CFG["vocab_size"]
    ids = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)

    save_safetensors(os.path.join(args.out, "baseline_weights.safetensors"), w)
    logits, loss, grads = loss_and_grads(w, ids, targets)
    io = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32), "logits": logits}
    io.update({"grad." + k: g for k, g in grads.items()})
    save_safetensors(os.path.join(args.out, "baseline_io.safetensors"), io)

    # 3 optimizer steps from the same weights; losses[s] is the loss before step s+1 (losses[3] after the last).
    w_opt = {k: v.clone() for k, v in w.items()}
    state, losses = {}, [loss]
    for step in range(1, OPT["steps"] + 1):
        _, l_before, g = loss_and_grads(w_opt, ids, targets)
        assert step > 1 or abs(l_before - loss) < 1e-12
        optimizer_step(w_opt, g, state, step)
        losses.append(forward(w_opt, ids, targets)[1].item())
    scalars = {"config": CFG, "optimizer": OPT, "loss": loss, "opt_losses": losses,
               "opt_param_sumsq": {k: float(v.square().sum()) for k, v in w_opt.items()},
               "torch_version": torch.__version__}
    path = os.path.join(args.out, "baseline_scalars.json")
    with open(path + ".tmp", "w") as f:
        json.dump(scalars, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"loss {loss:.10f}; losses over {OPT['steps']} steps: {losses}; written to {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
