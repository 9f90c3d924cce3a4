// CUDA elementwise families. One grid-stride kernel per operation, operands type-erased
// (f32|bf16|f16 chosen by a uniform branch), 8 elements per step through 16-byte vectors when every
// pointer is aligned, a scalar tail otherwise. fp32 math throughout.
#include <cmath>

#include "ops/cuda_colsum.cuh"
#include "ops/cuda_common.cuh"
#include "ops/elementwise.h"

namespace pgolf::ops::cuda {

using namespace detail;

namespace {

enum class Ew : int { Fill, Copy, Add, Axpby, Mul, Scale, MulChannel, AddMulChannel, MixChannel, GateChannel, GateElem };

struct EwArgs {
  DevPtr a, b;    // full-size inputs (meaning depends on the op)
  DevPtr s0, s1;  // per-channel (C) vectors, or the elementwise gate for GateElem
  DevPtr out;
  float alpha, beta;
  int64_t n, C;
};

template <Ew op> constexpr int kInputs =
    op == Ew::Fill ? 0 : (op == Ew::Add || op == Ew::Axpby || op == Ew::Mul || op == Ew::AddMulChannel || op == Ew::MixChannel) ? 2 : 1;
template <Ew op> constexpr bool kChannel =
    op == Ew::MulChannel || op == Ew::AddMulChannel || op == Ew::MixChannel || op == Ew::GateChannel;

__device__ __forceinline__ float sigmoidf(float g) { return 1.f / (1.f + expf(-g)); }

template <Ew op> __device__ __forceinline__ float ew_apply(const EwArgs& p, float a, float b, float s0, float s1) {
  if constexpr (op == Ew::Fill) return p.alpha;
  else if constexpr (op == Ew::Copy) return a;
  else if constexpr (op == Ew::Add) return a + b;
  else if constexpr (op == Ew::Axpby) return p.alpha * a + p.beta * b;
  else if constexpr (op == Ew::Mul) return a * b;
  else if constexpr (op == Ew::Scale) return p.alpha * a;
  else if constexpr (op == Ew::MulChannel) return s0 * a;
  else if constexpr (op == Ew::AddMulChannel) return a + s0 * b;
  else if constexpr (op == Ew::MixChannel) return s0 * a + s1 * b;
  else return sigmoidf(s0) * a;  // GateChannel / GateElem (s0 = the gate value)
}

template <Ew op> __global__ void ew_kernel(EwArgs p, bool vec) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nvec = vec ? p.n / 8 : 0;
  for (int64_t v = tid; v < nvec; v += stride) {
    const int64_t i = v * 8;
    float a[8] = {}, b[8] = {}, g[8] = {}, r[8];
    if constexpr (kInputs<op> >= 1) load8(p.a, i, a);
    if constexpr (kInputs<op> >= 2) load8(p.b, i, b);
    if constexpr (op == Ew::GateElem) load8(p.s0, i, g);
    int64_t c = kChannel<op> ? i % p.C : 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      float s0 = 0.f, s1 = 0.f;
      if constexpr (kChannel<op>) {
        s0 = load1(p.s0, c);
        if constexpr (op == Ew::MixChannel) s1 = load1(p.s1, c);
        c = (c + 1 == p.C) ? 0 : c + 1;
      }
      if constexpr (op == Ew::GateElem) s0 = g[j];
      r[j] = ew_apply<op>(p, a[j], b[j], s0, s1);
    }
    store8(p.out, i, r);
  }
  for (int64_t i = nvec * 8 + tid; i < p.n; i += stride) {
    float a = 0.f, b = 0.f, s0 = 0.f, s1 = 0.f;
    if constexpr (kInputs<op> >= 1) a = load1(p.a, i);
    if constexpr (kInputs<op> >= 2) b = load1(p.b, i);
    if constexpr (kChannel<op>) {
      const int64_t c = i % p.C;
      s0 = load1(p.s0, c);
      if constexpr (op == Ew::MixChannel) s1 = load1(p.s1, c);
    }
    if constexpr (op == Ew::GateElem) s0 = load1(p.s0, i);
    store1(p.out, i, ew_apply<op>(p, a, b, s0, s1));
  }
}

template <Ew op> void launch_ew(EwArgs p, const char* what) {
  if (p.n <= 0) return;
  bool vec = aligned16(p.out.p);
  if constexpr (kInputs<op> >= 1) vec = vec && aligned16(p.a.p);
  if constexpr (kInputs<op> >= 2) vec = vec && aligned16(p.b.p);
  if constexpr (op == Ew::GateElem) vec = vec && aligned16(p.s0.p);
  constexpr int kThreads = 256;
  const unsigned grid = grid_for(vec ? (p.n + 7) / 8 : p.n, kThreads);
  ew_kernel<op><<<grid, kThreads, 0, stream()>>>(p, vec);
  PG_CUDA_LAUNCH_CHECK(what);
}

EwArgs args(const Tensor& out, const char* op) {
  EwArgs p{};
  p.out = dev_ptr(op, "out", out);
  p.n = out.numel();
  p.C = 1;
  return p;
}

// Per-channel ops: x viewed as (numel / C, C) with C = the channel vector's length.
int64_t channels(const char* op, const Tensor& x, const Tensor& s) {
  const int64_t C = s.numel();
  PG_CHECK(C > 0 && x.numel() % C == 0, "{}: {} is not a whole number of rows of the {} channels of {}", op,
           x.desc(), C, s.desc());
  return C;
}

}  // namespace

void fill(const Tensor& x, float value) {
  if (x.numel() == 0) return;
  if (value == 0.f && !std::signbit(value)) {
    PG_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, x.nbytes(), stream()), "fill: zeroing");
    return;
  }
  EwArgs p = args(x, "fill");
  p.alpha = value;
  launch_ew<Ew::Fill>(p, "fill");
}

void copy(const Tensor& src, const Tensor& dst) {
  PG_CHECK(src.numel() == dst.numel(), "copy: {} and {} differ in size", src.desc(), dst.desc());
  if (src.dtype() == dst.dtype()) {
    if (src.data() != dst.data() && src.numel() > 0)
      PG_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream()),
                    "copy: device to device");
    return;
  }
  EwArgs p = args(dst, "copy");
  p.a = dev_ptr("copy", "src", src);
  launch_ew<Ew::Copy>(p, "copy");
}

void add(const Tensor& a, const Tensor& b, const Tensor& out) {
  EwArgs p = args(out, "add");
  p.a = dev_ptr("add", "a", a);
  p.b = dev_ptr("add", "b", b);
  launch_ew<Ew::Add>(p, "add");
}

void axpby(float alpha, const Tensor& x, float beta, const Tensor& y) {
  EwArgs p = args(y, "axpby");
  p.a = dev_ptr("axpby", "x", x);
  p.b = dev_ptr("axpby", "y", y);
  p.alpha = alpha;
  p.beta = beta;
  launch_ew<Ew::Axpby>(p, "axpby");
}

void mul(const Tensor& a, const Tensor& b, const Tensor& out) {
  EwArgs p = args(out, "mul");
  p.a = dev_ptr("mul", "a", a);
  p.b = dev_ptr("mul", "b", b);
  launch_ew<Ew::Mul>(p, "mul");
}

void scale(const Tensor& x, float alpha, const Tensor& out) {
  EwArgs p = args(out, "scale");
  p.a = dev_ptr("scale", "x", x);
  p.alpha = alpha;
  launch_ew<Ew::Scale>(p, "scale");
}

void mul_channel(const Tensor& x, const Tensor& s, const Tensor& out) {
  EwArgs p = args(out, "mul_channel");
  p.a = dev_ptr("mul_channel", "x", x);
  p.s0 = dev_ptr("mul_channel", "s", s);
  p.C = channels("mul_channel", x, s);
  launch_ew<Ew::MulChannel>(p, "mul_channel");
}

void add_mul_channel(const Tensor& x, const Tensor& s, const Tensor& f, const Tensor& out) {
  EwArgs p = args(out, "add_mul_channel");
  p.a = dev_ptr("add_mul_channel", "x", x);
  p.b = dev_ptr("add_mul_channel", "f", f);
  p.s0 = dev_ptr("add_mul_channel", "s", s);
  p.C = channels("add_mul_channel", x, s);
  launch_ew<Ew::AddMulChannel>(p, "add_mul_channel");
}

void mix_channel(const Tensor& s0, const Tensor& x0, const Tensor& s1, const Tensor& x1, const Tensor& out) {
  PG_CHECK(s0.numel() == s1.numel(), "mix_channel: s0 {} and s1 {} differ", s0.desc(), s1.desc());
  EwArgs p = args(out, "mix_channel");
  p.a = dev_ptr("mix_channel", "x0", x0);
  p.b = dev_ptr("mix_channel", "x1", x1);
  p.s0 = dev_ptr("mix_channel", "s0", s0);
  p.s1 = dev_ptr("mix_channel", "s1", s1);
  p.C = channels("mix_channel", x0, s0);
  launch_ew<Ew::MixChannel>(p, "mix_channel");
}

void sigmoid_gate_forward(const Tensor& g, const Tensor& x, const Tensor& out) {
  EwArgs p = args(out, "sigmoid_gate_forward");
  p.a = dev_ptr("sigmoid_gate_forward", "x", x);
  p.s0 = dev_ptr("sigmoid_gate_forward", "g", g);
  if (g.numel() == x.numel()) {
    launch_ew<Ew::GateElem>(p, "sigmoid_gate_forward");
  } else {
    p.C = channels("sigmoid_gate_forward", x, g);
    launch_ew<Ew::GateChannel>(p, "sigmoid_gate_forward");
  }
}

// ---------------------------------------------------------------------------------------------
namespace {

// channel_dot_accum term: a[n, c] * b[n, c].
struct DotTerm {
  DevPtr a, b;
  __device__ float operator()(int64_t, int64_t, int64_t i) const { return load1(a, i) * load1(b, i); }
};

// Per-channel gate backward: writes dx and returns the dg contribution.
struct GateBackTerm {
  DevPtr g, x, dout, dx;
  __device__ float operator()(int64_t, int64_t c, int64_t i) const {
    const float s = sigmoidf(load1(g, c));
    const float d = load1(dout, i), xv = load1(x, i);
    store1(dx, i, s * d);
    return d * xv * s * (1.f - s);
  }
};

// Elementwise gate backward: dx[i] = s dout[i] ; dg[i] += dout[i] x[i] s (1 - s) (dg may be null).
__global__ void gate_back_elem_kernel(DevPtr g, DevPtr x, DevPtr dout, DevPtr dx, float* __restrict__ dg, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float s = sigmoidf(load1(g, i));
    const float d = load1(dout, i), xv = load1(x, i);
    store1(dx, i, s * d);
    if (dg) dg[i] += d * xv * s * (1.f - s);
  }
}

}  // namespace

void channel_dot_accum(const Tensor& a, const Tensor& b, const Tensor& ds) {
  require_dtype("channel_dot_accum", "ds", ds, DType::F32);
  const int64_t C = channels("channel_dot_accum", a, ds);
  DotTerm t{dev_ptr("channel_dot_accum", "a", a), dev_ptr("channel_dot_accum", "b", b)};
  launch_column_reduce(a.numel() / C, C, t, ds.ptr<float>(), "channel_dot_accum");
}

void sigmoid_gate_backward(const Tensor& g, const Tensor& x, const Tensor& dout, const Tensor& dx,
                           const Tensor& dg) {
  const char* op = "sigmoid_gate_backward";
  const DevPtr gp = dev_ptr(op, "g", g), xp = dev_ptr(op, "x", x), dp = dev_ptr(op, "dout", dout),
               dxp = dev_ptr(op, "dx", dx);
  if (dg.defined()) {
    require_dtype(op, "dg", dg, DType::F32);
    PG_CHECK(dg.numel() == g.numel(), "{}: dg {} does not match g {}", op, dg.desc(), g.desc());
  }
  if (g.numel() == x.numel()) {
    const int64_t n = x.numel();
    if (n == 0) return;
    gate_back_elem_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(gp, xp, dp, dxp,
                                                                   dg.defined() ? dg.ptr<float>() : nullptr, n);
    PG_CUDA_LAUNCH_CHECK(op);
    return;
  }
  PG_CHECK(dg.defined(), "{}: per-channel gate needs dg (the kernel writes dx while reducing dg)", op);
  const int64_t C = channels(op, x, g);
  launch_column_reduce(x.numel() / C, C, GateBackTerm{gp, xp, dp, dxp}, dg.ptr<float>(), op);
}

}  // namespace pgolf::ops::cuda
