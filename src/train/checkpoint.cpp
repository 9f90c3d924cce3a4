#include "train/checkpoint.h"

#include <cstring>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "core/error.h"
#include "data/file_util.h"

namespace pgolf::train {
namespace {
constexpr char kMagic[4] = {'P', 'G', 'C', 'K'};
constexpr uint32_t kVersion = 1;
}  // namespace

void save_checkpoint(const std::string& path, const TrainState& s, const NamedTensors& tensors) {
  nlohmann::json h;
  h["step"] = s.step;
  h["elapsed_ms"] = s.elapsed_ms;
  h["loader_shard"] = s.loader_shard;
  h["loader_pos"] = s.loader_pos;
  h["seed"] = s.seed;
  h["rng_counter"] = s.rng_counter;
  h["tokens_seen"] = s.tokens_seen;
  h["swa_count"] = s.swa_count;
  std::vector<std::string> blobs;
  uint64_t offset = 0;
  uLong crc = crc32(0L, Z_NULL, 0);
  auto& list = h["tensors"] = nlohmann::json::array();
  for (const auto& [name, t] : tensors) {
    Tensor host = t.device() == Device::CPU ? t : t.to(Device::CPU);
    std::string bytes(static_cast<const char*>(host.data()), host.nbytes());
    std::vector<int64_t> dims(t.shape().d.begin(), t.shape().d.begin() + t.ndim());
    list.push_back({{"name", name}, {"dtype", std::string(dtype_name(t.dtype()))}, {"shape", dims},
                    {"offset", offset}, {"bytes", bytes.size()}});
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size()));
    offset += bytes.size();
    blobs.push_back(std::move(bytes));
  }
  h["payload_bytes"] = offset;
  h["crc32"] = static_cast<uint64_t>(crc);
  const std::string header = h.dump();

  data::AtomicFile f(path);
  f.write(kMagic, 4);
  f.write(&kVersion, 4);
  const uint64_t hlen = header.size();
  f.write(&hlen, 8);
  f.write(header);
  for (const auto& b : blobs) f.write(b);
  f.commit();
}

TrainState load_checkpoint(const std::string& path, const NamedTensors& tensors) {
  const std::string file = data::read_file(path);
  PG_CHECK(file.size() >= 16 && std::memcmp(file.data(), kMagic, 4) == 0, "{}: not a pgolf checkpoint", path);
  uint32_t version;
  uint64_t hlen;
  std::memcpy(&version, file.data() + 4, 4);
  std::memcpy(&hlen, file.data() + 8, 8);
  PG_CHECK(version == kVersion, "{}: checkpoint version {} (this pgolf reads {})", path, version, kVersion);
  PG_CHECK(16 + hlen <= file.size(), "{}: truncated checkpoint header", path);
  nlohmann::json h = nlohmann::json::parse(file.substr(16, hlen));
  const size_t payload_at = 16 + hlen;
  const uint64_t payload = h.at("payload_bytes").get<uint64_t>();
  PG_CHECK(file.size() == payload_at + payload, "{}: checkpoint has {} bytes, its header says {}", path, file.size(),
           payload_at + payload);
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(file.data() + payload_at),
                          static_cast<uInt>(payload));
  PG_CHECK(crc == h.at("crc32").get<uint64_t>(), "{}: checkpoint payload is corrupt (crc mismatch)", path);

  std::map<std::string, nlohmann::json> entries;
  for (const auto& e : h.at("tensors")) entries[e.at("name").get<std::string>()] = e;
  std::set<std::string> wanted;
  for (const auto& nt : tensors) wanted.insert(nt.first);
  auto optional = [](const std::string& n) { return n.rfind("ema.", 0) == 0 || n.rfind("swa.", 0) == 0; };
  for (const auto& nt : tensors)
    PG_CHECK(entries.count(nt.first) != 0, "{}: checkpoint has no tensor '{}' (different config?)", path, nt.first);
  size_t required = 0;
  for (const auto& [name, e] : entries) required += wanted.count(name) || !optional(name);
  PG_CHECK(required == tensors.size(), "{}: checkpoint holds {} tensors, this run expects {} (different config?)", path,
           required, tensors.size());
  for (const auto& [name, t] : tensors) {
    auto it = entries.find(name);
    PG_CHECK(it != entries.end(), "{}: checkpoint has no tensor '{}' (different model config?)", path, name);
    const auto& e = it->second;
    auto dims = e.at("shape").get<std::vector<int64_t>>();
    Shape sh = Shape::from(dims.begin(), dims.end());
    PG_CHECK(sh == t.shape() && e.at("dtype").get<std::string>() == dtype_name(t.dtype()),
             "{}: tensor '{}' is {}{} in the checkpoint, {} in this run", path, name, e.at("dtype").get<std::string>(),
             sh.str(), t.desc());
    const auto off = e.at("offset").get<uint64_t>();
    PG_CHECK(off + t.nbytes() <= payload, "{}: tensor '{}' lies outside the payload", path, name);
    t.copy_from(Tensor::from_blob(const_cast<char*>(file.data() + payload_at + off), t.shape(), t.dtype(), Device::CPU));
  }
  TrainState s;
  s.step = h.at("step").get<int64_t>();
  s.elapsed_ms = h.at("elapsed_ms").get<double>();
  s.loader_shard = h.at("loader_shard").get<int64_t>();
  s.loader_pos = h.at("loader_pos").get<int64_t>();
  s.seed = h.at("seed").get<uint64_t>();
  s.rng_counter = h.at("rng_counter").get<uint64_t>();
  s.tokens_seen = h.at("tokens_seen").get<int64_t>();
  s.swa_count = h.value("swa_count", int64_t{0});  // absent in checkpoints written before SWA existed
  return s;
}

}  // namespace pgolf::train
