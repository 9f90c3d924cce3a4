#pragma once
// Double-precision instantiations of the CPU op kernels on plain arrays. The tensor ops in
// src/ops/*.cpp run the very same templates with float compute; tests use these to check
// gradients by central finite differences without float rounding noise.
// All arrays are row-major contiguous with the shapes documented in the matching op header.
#include <cstdint>

#include "ops/activation.h"
#include "ops/attention.h"

namespace pgolf::ops::ref {

// elementwise.h: sigmoid gate; per_channel: g is (C), else g is (N, C) like x.
void sigmoid_gate_forward(const double* g, const double* x, double* out, int64_t N, int64_t C, bool per_channel);
void sigmoid_gate_backward(const double* g, const double* x, const double* dout, double* dx, double* dg, int64_t N,
                           int64_t C, bool per_channel);

// rmsnorm.h: gain and dgain may be null (weightless norm).
void rmsnorm_forward(const double* x, const double* gain, double* y, double* rstd, int64_t N, int64_t C,
                     double eps);
void rmsnorm_backward(const double* x, const double* gain, const double* rstd, const double* dy, double* dx,
                      double* dgain, int64_t N, int64_t C);

// rope.h: x, y (B, T, H, D).
void rope_forward(const double* x, double* y, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims,
                  double base, int64_t pos_offset);
void rope_backward(const double* dy, double* dx, int64_t B, int64_t T, int64_t H, int64_t D, int rot_dims,
                   double base, int64_t pos_offset);

// activation.h
void activation_forward(Act act, const double* x, double* y, int64_t n, double slope);
void activation_backward(Act act, const double* x, const double* dy, double* dx, int64_t n, double slope);

// cross_entropy.h: dlogits may be null.
void softcap_cross_entropy(const double* logits, const int32_t* targets, int64_t N, int64_t V, double cap,
                           double* losses, double* dlogits, double grad_scale);

// attention.h: doc_start may be null.
void attention_forward(const double* q, const double* k, const double* v, const int32_t* doc_start, double* out,
                       double* lse, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const AttnParams& p);
void attention_backward(const double* q, const double* k, const double* v, const int32_t* doc_start,
                        const double* out, const double* lse, const double* dout, double* dq, double* dk,
                        double* dv, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const AttnParams& p);

}  // namespace pgolf::ops::ref
