#include "dist/comm.h"

#include <cstring>

#include "core/error.h"
#include "ops/elementwise.h"

namespace pgolf::dist {

void Communicator::all_reduce_avg(const Tensor& buf) {
  all_reduce_sum(buf);
  if (world() > 1) ops::scale(buf, 1.f / static_cast<float>(world()), buf);
}

std::vector<uint64_t> Communicator::all_gather_u64(uint64_t v) {
  const Device dev = name() == "nccl" ? Device::CUDA : Device::CPU;
  // Carried as two f32-free u32 halves in an I32 tensor: all_gather moves bytes, no arithmetic.
  int32_t halves[2];
  std::memcpy(halves, &v, sizeof v);
  Tensor in = Tensor::empty(Shape{2}, DType::I32, dev);
  in.copy_from(Tensor::from_blob(halves, Shape{2}, DType::I32, Device::CPU));
  Tensor out = Tensor::empty(Shape{2 * static_cast<int64_t>(world())}, DType::I32, dev);
  all_gather(in, out);
  const std::vector<int32_t> all = out.to_int_vector();
  std::vector<uint64_t> res(static_cast<size_t>(world()));
  for (size_t r = 0; r < res.size(); ++r) std::memcpy(&res[r], all.data() + 2 * r, sizeof(uint64_t));
  return res;
}

std::vector<double> Communicator::all_gather_f64(const std::vector<double>& mine) {
  const Device dev = name() == "nccl" ? Device::CUDA : Device::CPU;
  // Two I32 per double: all_gather only copies bytes, so no value is rounded on the way.
  const auto n = static_cast<int64_t>(2 * mine.size());
  std::vector<double> res(mine.size() * static_cast<size_t>(world()));
  if (mine.empty()) return res;
  std::vector<int32_t> halves(static_cast<size_t>(n));
  std::memcpy(halves.data(), mine.data(), mine.size() * sizeof(double));
  Tensor in = Tensor::empty(Shape{n}, DType::I32, dev);
  in.copy_from(Tensor::from_blob(halves.data(), Shape{n}, DType::I32, Device::CPU));
  Tensor out = Tensor::empty(Shape{n * world()}, DType::I32, dev);
  all_gather(in, out);
  const std::vector<int32_t> all = out.to_int_vector();
  std::memcpy(res.data(), all.data(), res.size() * sizeof(double));
  return res;
}

double Communicator::broadcast_f64(double v, int root) {
  const Device dev = name() == "nccl" ? Device::CUDA : Device::CPU;
  int32_t halves[2];
  std::memcpy(halves, &v, sizeof v);
  Tensor buf = Tensor::empty(Shape{2}, DType::I32, dev);
  buf.copy_from(Tensor::from_blob(halves, Shape{2}, DType::I32, Device::CPU));
  broadcast(buf, root);
  const std::vector<int32_t> got = buf.to_int_vector();
  double out;
  std::memcpy(&out, got.data(), sizeof out);
  return out;
}

void Communicator::check_same(uint64_t hash, const std::string& what) {
  const std::vector<uint64_t> all = all_gather_u64(hash);
  std::string differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ += fmt::format("{}rank {} has {:016x}", differ.empty() ? "" : ", ", r, all[r]);
  PG_CHECK(differ.empty(), "ranks disagree on the {}: rank 0 has {:016x}, {} (every rank must run the same config)",
           what, all[0], differ);
}

namespace {
thread_local Communicator* t_comm = nullptr;
}
Communicator* thread_comm() { return t_comm; }
void set_thread_comm(Communicator* c) { t_comm = c; }

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace pgolf::dist
