// GPU attention: dispatch to the tensor-core flash kernels (bf16, head_dim 64) or the plain fallback
// (f32 tensors, any head_dim up to 256). Kernels: forward attention_fwd.cuh (mma.sync) and attention_fwd_wgmma.cuh
// (Hopper wgmma, the default on compute capability 9.0); backward attention_bwd.cuh (v1, the default) and
// attention_bwd_wgmma.cuh (Hopper wgmma); attention_simple.cuh; fragment layouts and masking helpers:
// attention_mma.cuh, wgmma.cuh, wgmma_layout.h, attention_bwd_layout.h.
//
// Scratch: the flash backward needs fp32 dQ accumulators (B*T*Hq*64 floats, 200 MiB at B=48, T=2048,
// Hq=8) and the row sums Dsum (B*Hq*T floats). They come from one device buffer per GPU that grows on
// demand and is never freed; once the largest shape has run, the backward allocates nothing and can be
// captured in a CUDA graph. Growing synchronizes the device (the old buffer may still be in use).
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/cuda_check.h"
#include "core/memory.h"
#include "core/stream.h"
#include "ops/attention.h"
#include "ops/attention_bwd.cuh"
#include "ops/attention_bwd_wgmma.cuh"
#include "ops/attention_fwd.cuh"
#include "ops/attention_fwd_wgmma.cuh"
#include "ops/attention_simple.cuh"

namespace pgolf::ops::cuda {

namespace {

constexpr int kMaxDevices = 16;

struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
};
std::mutex g_scratch_mu;
std::array<Scratch, kMaxDevices> g_scratch{};

void* attention_scratch(size_t bytes) {
  int dev = 0;
  PG_CUDA_CHECK(cudaGetDevice(&dev), "querying the device for attention scratch");
  PG_CHECK(dev >= 0 && dev < kMaxDevices, "attention: device {} out of range", dev);
  std::lock_guard<std::mutex> lock(g_scratch_mu);
  Scratch& s = g_scratch[static_cast<size_t>(dev)];
  if (s.bytes < bytes) {
    if (s.ptr) {
      PG_CUDA_CHECK(cudaDeviceSynchronize(), "waiting before growing the attention scratch");
      mem_free(s.ptr, Device::CUDA);
      s.ptr = nullptr, s.bytes = 0;
    }
    s.ptr = mem_alloc(bytes, Device::CUDA, "attention backward scratch (fp32 dQ)");
    s.bytes = bytes;
  }
  return s.ptr;
}

cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

struct Dims {
  int B, T, Hq, Hkv, D;
};

Dims dims_of(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start) {
  PG_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, "{}: expected 4-D q, k, v, got {} {} {}", op, q.desc(),
           k.desc(), v.desc());
  Dims d{static_cast<int>(q.dim(0)), static_cast<int>(q.dim(1)), static_cast<int>(q.dim(2)),
         static_cast<int>(k.dim(2)), static_cast<int>(q.dim(3))};
  PG_CHECK(k.shape() == v.shape() && k.dim(0) == d.B && k.dim(1) == d.T && k.dim(3) == d.D && d.Hkv > 0 &&
               d.Hq % d.Hkv == 0,
           "{}: shapes do not agree: q {} k {} v {}", op, q.desc(), k.desc(), v.desc());
  PG_CHECK(d.D <= attn::kMaxSimpleDim, "{}: head_dim {} > {} is not supported on the GPU", op, d.D,
           attn::kMaxSimpleDim);
  PG_CHECK(d.B <= 65535 && d.Hq <= 65535, "{}: batch {} or heads {} too large for the launch grid", op, d.B, d.Hq);
  PG_CHECK(!doc_start.defined() || (doc_start.dtype() == DType::I32 && doc_start.ndim() == 2 &&
                                    doc_start.dim(0) == d.B && doc_start.dim(1) == d.T),
           "{}: doc_start must be i32 (B, T) = ({}, {}), got {}", op, d.B, d.T, doc_start.desc());
  return d;
}

bool flash_path(const Tensor& q, const Dims& d) { return q.dtype() == DType::BF16 && d.D == attn::kTile; }

float scale_of(const AttnParams& p, int D) { return p.scale > 0.f ? p.scale : 1.f / std::sqrt(static_cast<float>(D)); }

const int32_t* doc_ptr(const Tensor& doc_start) {
  return doc_start.defined() ? static_cast<const int32_t*>(doc_start.data()) : nullptr;
}

template <class E>
attn::SimpleArgs<E> simple_args(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& doc_start, const AttnParams& p) {
  attn::SimpleArgs<E> a{};
  a.q = static_cast<const E*>(q.data()), a.k = static_cast<const E*>(k.data()), a.v = static_cast<const E*>(v.data());
  a.doc = doc_ptr(doc_start);
  a.B = d.B, a.T = d.T, a.Hq = d.Hq, a.Hkv = d.Hkv, a.D = d.D;
  a.causal = p.causal, a.window = p.window, a.scale = scale_of(p, d.D);
  return a;
}

unsigned blocks_for_rows(int64_t rows, int warps_per_block) {
  return static_cast<unsigned>((rows + warps_per_block - 1) / warps_per_block);
}

template <class E>
void simple_forward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                    const Tensor& out, const Tensor& lse, const AttnParams& p) {
  auto a = simple_args<E>(d, q, k, v, doc_start, p);
  a.out_w = static_cast<E*>(out.data()), a.lse_w = static_cast<float*>(lse.data());
  const int64_t rows = static_cast<int64_t>(d.B) * d.T * d.Hq;
  attn::simple_fwd_kernel<E><<<blocks_for_rows(rows, 4), 128, 0, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_forward (simple kernel)");
}

template <class E>
void simple_backward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start,
                     const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                     const Tensor& dv, const AttnParams& p) {
  auto a = simple_args<E>(d, q, k, v, doc_start, p);
  a.out = static_cast<const E*>(out.data()), a.dout = static_cast<const E*>(dout.data());
  a.lse = static_cast<const float*>(lse.data());
  a.dq = static_cast<E*>(dq.data()), a.dk = static_cast<E*>(dk.data()), a.dv = static_cast<E*>(dv.data());
  attn::simple_bwd_dq_kernel<E><<<blocks_for_rows(static_cast<int64_t>(d.B) * d.T * d.Hq, 4), 128, 0, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_backward (simple dq kernel)");
  attn::simple_bwd_dkv_kernel<E>
      <<<blocks_for_rows(static_cast<int64_t>(d.B) * d.T * d.Hkv, 4), 128, 0, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_backward (simple dk/dv kernel)");
}

// Dynamic shared memory above 48 KiB needs an explicit opt-in per kernel (once per process).
bool opt_in_smem(void (*kernel)(attn::BwdArgs), int bytes) {
  PG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
                "attention backward: shared memory opt-in");
  return true;
}

// The wgmma kernels exist only as sm_90a machine code (their compute_90 PTX is a trap), so they run on
// compute capability 9.0 exactly.
bool device_runs_wgmma() {
  static std::array<signed char, kMaxDevices> cached = [] {
    std::array<signed char, kMaxDevices> c{};
    c.fill(-1);
    return c;
  }();
  int dev = 0;
  PG_CUDA_CHECK(cudaGetDevice(&dev), "querying the device for the attention kernel choice");
  if (dev < 0 || dev >= kMaxDevices) return false;
  if (cached[static_cast<size_t>(dev)] < 0) {
    int major = 0, minor = 0;
    PG_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "compute capability");
    PG_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "compute capability");
    cached[static_cast<size_t>(dev)] = major == 9 && minor == 0 ? 1 : 0;
  }
  return cached[static_cast<size_t>(dev)] == 1;
}

// Key block of the default wgmma forward. H200, B=48 T=2048 Hq=8 Hkv=4 causal (docs/BENCHMARKS.md):
// 64 keys 0.768 ms, 128 keys 0.934 ms (165 registers: one block of 8 warps per SM), mma.sync 0.863 ms.
constexpr AttnFwdKernel kDefaultWgmma = AttnFwdKernel::Wgmma64;

AttnFwdKernel env_fwd_kernel() {
  static const AttnFwdKernel k = [] {
    const char* v = std::getenv("PGOLF_ATTN_FWD");
    if (!v || !*v) return AttnFwdKernel::Auto;
    if (!std::strcmp(v, "mma")) return AttnFwdKernel::Mma;
    if (!std::strcmp(v, "wgmma")) return kDefaultWgmma;
    if (!std::strcmp(v, "wgmma64")) return AttnFwdKernel::Wgmma64;
    if (!std::strcmp(v, "wgmma128")) return AttnFwdKernel::Wgmma128;
    PG_CHECK(false, "PGOLF_ATTN_FWD={}: expected mma, wgmma, wgmma64 or wgmma128", v);
    return AttnFwdKernel::Auto;
  }();
  return k;
}

AttnFwdKernel choose_fwd_kernel() {
  AttnFwdKernel k = attention_fwd_kernel_override();
  if (k == AttnFwdKernel::Auto) k = env_fwd_kernel();
  const bool wgmma_ok = device_runs_wgmma();
  if (k == AttnFwdKernel::Auto) k = wgmma_ok ? kDefaultWgmma : AttnFwdKernel::Mma;
  return wgmma_ok ? k : AttnFwdKernel::Mma;
}

template <int kN> void launch_fwd_wgmma(const attn::FwdArgs& a, const Dims& d) {
  constexpr int smem = attn::wgmma_fwd_smem_bytes<kN>();
  static const bool smem_opt_in = [] {  // > 48 KiB of dynamic shared memory needs an explicit opt-in
    PG_CUDA_CHECK(
        cudaFuncSetAttribute(attn::flash_fwd_wgmma_kernel<kN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
        "attention forward (wgmma): shared memory opt-in");
    return true;
  }();
  (void)smem_opt_in;
  dim3 grid((d.T + attn::kWgRows - 1) / attn::kWgRows, d.Hq, d.B);
  attn::flash_fwd_wgmma_kernel<kN><<<grid, attn::kWgThreads, smem, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_forward (wgmma flash kernel)");
}

// The wgmma backward PGOLF_ATTN_BWD=wgmma and Auto mean. H200, B=48 T=2048 Hq=8 Hkv=4 causal (docs/BENCHMARKS.md):
// wgmma64 2.340 ms (220 TFLOP/s), wgmma128 2.393 ms, v1 2.888 ms.
constexpr AttnBwdKernel kDefaultBwdWgmma = AttnBwdKernel::Wgmma64;

AttnBwdKernel env_bwd_kernel() {
  static const AttnBwdKernel k = [] {
    const char* v = std::getenv("PGOLF_ATTN_BWD");
    if (!v || !*v) return AttnBwdKernel::Auto;
    if (!std::strcmp(v, "v1")) return AttnBwdKernel::V1;
    if (!std::strcmp(v, "wgmma")) return kDefaultBwdWgmma;
    if (!std::strcmp(v, "wgmma128")) return AttnBwdKernel::Wgmma128;
    if (!std::strcmp(v, "wgmma64")) return AttnBwdKernel::Wgmma64;
    if (!std::strcmp(v, "wgmma-dqmma")) return AttnBwdKernel::WgmmaDqMma;
    PG_CHECK(false, "PGOLF_ATTN_BWD={}: expected v1, wgmma, wgmma128, wgmma64 or wgmma-dqmma", v);
    return AttnBwdKernel::Auto;
  }();
  return k;
}

// Auto: the wgmma backward on compute capability 9.0, else v1 (a wgmma kernel asked for elsewhere falls back
// to v1 too).
AttnBwdKernel choose_bwd_kernel() {
  AttnBwdKernel k = attention_bwd_kernel_override();
  if (k == AttnBwdKernel::Auto) k = env_bwd_kernel();
  if (k == AttnBwdKernel::Auto) k = device_runs_wgmma() ? kDefaultBwdWgmma : AttnBwdKernel::V1;
  return k == AttnBwdKernel::V1 || device_runs_wgmma() ? k : AttnBwdKernel::V1;
}

template <int kWgs, bool kDqWgmma> void launch_bwd_wgmma(const attn::BwdArgs& a, const Dims& d) {
  using P = attn::BwdWgPlan<kWgs>;
  static const bool opted_in = opt_in_smem(attn::flash_bwd_wgmma_kernel<kWgs, kDqWgmma>, P::kSmemBytes);
  (void)opted_in;
  dim3 grid((d.T + P::kKeys - 1) / P::kKeys, d.Hkv, d.B);
  attn::flash_bwd_wgmma_kernel<kWgs, kDqWgmma><<<grid, P::kThreads, P::kSmemBytes, stream()>>>(a);
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start, const Tensor& out,
                       const Tensor& lse, const AttnParams& p) {
  const Dims d = dims_of("attention_forward", q, k, v, doc_start);
  if (d.B == 0 || d.T == 0 || d.Hq == 0) return;
  if (flash_path(q, d)) {
    attn::FwdArgs a{};
    a.q = static_cast<const uint16_t*>(q.data()), a.k = static_cast<const uint16_t*>(k.data());
    a.v = static_cast<const uint16_t*>(v.data()), a.doc = doc_ptr(doc_start);
    a.out = static_cast<uint16_t*>(out.data()), a.lse = static_cast<float*>(lse.data());
    a.T = d.T, a.Hq = d.Hq, a.Hkv = d.Hkv, a.causal = p.causal, a.window = p.window;
    a.scale_log2 = scale_of(p, d.D) * 1.4426950408889634f;
    switch (choose_fwd_kernel()) {
      case AttnFwdKernel::Wgmma64: launch_fwd_wgmma<64>(a, d); break;
      case AttnFwdKernel::Wgmma128: launch_fwd_wgmma<128>(a, d); break;
      default: {
        dim3 grid((d.T + attn::kTile - 1) / attn::kTile, d.Hq, d.B);
        attn::flash_fwd_kernel<<<grid, 128, 0, stream()>>>(a);
        PG_CUDA_LAUNCH_CHECK("attention_forward (flash kernel)");
      }
    }
  } else if (q.dtype() == DType::BF16) {
    simple_forward<uint16_t>(d, q, k, v, doc_start, out, lse, p);
  } else {
    simple_forward<float>(d, q, k, v, doc_start, out, lse, p);
  }
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& doc_start, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                        const AttnParams& p) {
  const Dims d = dims_of("attention_backward", q, k, v, doc_start);
  if (d.B == 0 || d.T == 0 || d.Hq == 0) return;
  if (!flash_path(q, d)) {
    if (q.dtype() == DType::BF16)
      simple_backward<uint16_t>(d, q, k, v, doc_start, out, lse, dout, dq, dk, dv, p);
    else
      simple_backward<float>(d, q, k, v, doc_start, out, lse, dout, dq, dk, dv, p);
    return;
  }
  const size_t rows = static_cast<size_t>(d.B) * d.T * d.Hq;
  const size_t dsum_bytes = (rows * sizeof(float) + 255) / 256 * 256;
  const size_t dq_bytes = rows * attn::kTile * sizeof(float);
  char* scratch = static_cast<char*>(attention_scratch(dsum_bytes + dq_bytes));

  attn::BwdArgs a{};
  a.q = static_cast<const uint16_t*>(q.data()), a.k = static_cast<const uint16_t*>(k.data());
  a.v = static_cast<const uint16_t*>(v.data()), a.out = static_cast<const uint16_t*>(out.data());
  a.dout = static_cast<const uint16_t*>(dout.data()), a.doc = doc_ptr(doc_start);
  a.lse = static_cast<const float*>(lse.data());
  a.dsum = reinterpret_cast<float*>(scratch), a.dq_acc = reinterpret_cast<float*>(scratch + dsum_bytes);
  a.dk = static_cast<uint16_t*>(dk.data()), a.dv = static_cast<uint16_t*>(dv.data());
  a.dq = static_cast<uint16_t*>(dq.data());
  a.B = d.B, a.T = d.T, a.Hq = d.Hq, a.Hkv = d.Hkv, a.causal = p.causal, a.window = p.window;
  a.scale = scale_of(p, d.D), a.scale_log2 = a.scale * 1.4426950408889634f;

  PG_CUDA_CHECK(cudaMemsetAsync(a.dq_acc, 0, dq_bytes, stream()), "zeroing the attention dQ accumulators");
  attn::flash_bwd_prep_kernel<<<blocks_for_rows(static_cast<int64_t>(rows), 8), 256, 0, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_backward (flash prep kernel)");
  switch (choose_bwd_kernel()) {
    case AttnBwdKernel::Wgmma128: launch_bwd_wgmma<2, true>(a, d); break;
    case AttnBwdKernel::Wgmma64: launch_bwd_wgmma<1, true>(a, d); break;
    case AttnBwdKernel::WgmmaDqMma: launch_bwd_wgmma<2, false>(a, d); break;
    default: {
      dim3 grid((d.T + attn::kTile - 1) / attn::kTile, d.Hkv, d.B);
      static const bool opted_in = opt_in_smem(attn::flash_bwd_kernel, attn::kBwdSmemBytes);
      (void)opted_in;
      attn::flash_bwd_kernel<<<grid, 128, attn::kBwdSmemBytes, stream()>>>(a);
    }
  }
  PG_CUDA_LAUNCH_CHECK("attention_backward (flash kernel)");
  const int64_t n4 = static_cast<int64_t>(rows) * attn::kTile / 4;
  const unsigned conv_blocks = static_cast<unsigned>(std::min<int64_t>((n4 + 255) / 256, 132 * 16));
  attn::flash_bwd_dq_kernel<<<conv_blocks, 256, 0, stream()>>>(a);
  PG_CUDA_LAUNCH_CHECK("attention_backward (flash dq conversion kernel)");
}

}  // namespace pgolf::ops::cuda
