#include "model/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "ops/elementwise.h"

namespace pgolf::model {

namespace {

using ordered_json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit

std::string st_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::U16: return "U16";
    case DType::U8: return "U8";
    case DType::I8: return "I8";
  }
  return "?";
}

// File dtype -> (pgolf dtype it loads as, bytes per element in the file).
bool parse_st_dtype(const std::string& s, DType* out, size_t* file_size) {
  static const struct {
    const char* name;
    DType dt;
    size_t size;
  } kTable[] = {{"F32", DType::F32, 4}, {"BF16", DType::BF16, 2}, {"F16", DType::F16, 2}, {"I32", DType::I32, 4},
                {"U16", DType::U16, 2}, {"U8", DType::U8, 1},     {"I8", DType::I8, 1},   {"F64", DType::F32, 8},
                {"I64", DType::I32, 8}};
  for (const auto& e : kTable)
    if (s == e.name) {
      *out = e.dt;
      *file_size = e.size;
      return true;
    }
  return false;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  for (const NamedTensor& nt : tensors) {
    PG_CHECK(!nt.name.empty() && nt.name != "__metadata__", "write_safetensors {}: invalid tensor name '{}'", path,
             nt.name);
    PG_CHECK(!header.contains(nt.name), "write_safetensors {}: duplicate tensor name {}", path, nt.name);
    PG_CHECK(nt.tensor.defined(), "write_safetensors {}: tensor {} is undefined", path, nt.name);
    std::vector<int64_t> shape(nt.tensor.shape().d.begin(), nt.tensor.shape().d.begin() + nt.tensor.ndim());
    const uint64_t bytes = nt.tensor.nbytes();
    header[nt.name] = {{"dtype", st_dtype_name(nt.tensor.dtype())}, {"shape", shape},
                       {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(nt.tensor.device() == Device::CPU ? nt.tensor : nt.tensor.to(Device::CPU));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  const uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));

  const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(getpid()));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    PG_CHECK(f.good(), "write_safetensors: cannot create {}: {}", tmp, std::strerror(errno));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : host) f.write(static_cast<const char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
    f.flush();
    if (!f.good()) {
      std::remove(tmp.c_str());
      PG_FAIL("write_safetensors: writing {} failed: {}", tmp, std::strerror(errno));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    PG_FAIL("write_safetensors: renaming {} to {} failed: {}", tmp, path, std::strerror(err));
  }
}

std::vector<NamedTensor> read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  PG_CHECK(f.good(), "read_safetensors: cannot open {}: {}", path, std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(f.tellg());
  f.seekg(0);
  PG_CHECK(file_size >= 8, "read_safetensors {}: file of {} bytes has no header", path, file_size);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(len[i]) << (8 * i);
  PG_CHECK(n <= kMaxHeaderBytes && n <= file_size - 8, "read_safetensors {}: header length {} invalid (file {} bytes)",
           path, n, file_size);
  std::string text(n, '\0');
  f.read(text.data(), static_cast<std::streamsize>(n));
  PG_CHECK(f.good(), "read_safetensors {}: truncated header", path);
  ordered_json header;
  try {
    header = ordered_json::parse(text);
  } catch (const std::exception& e) {
    PG_FAIL("read_safetensors {}: header is not valid JSON: {}", path, e.what());
  }
  PG_CHECK(header.is_object(), "read_safetensors {}: header is not a JSON object", path);
  const uint64_t data_start = 8 + n, data_size = file_size - data_start;

  std::vector<NamedTensor> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const auto& e = it.value();
    if (name == "__metadata__") {
      if (metadata)
        for (auto m = e.begin(); m != e.end(); ++m)
          (*metadata)[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    DType dt;
    size_t esize = 0;
    Shape shape;
    uint64_t begin = 0, end = 0;
    try {
      const std::string ds = e.at("dtype").get<std::string>();
      PG_CHECK(parse_st_dtype(ds, &dt, &esize), "read_safetensors {}: tensor {} has unsupported dtype {}", path, name,
               ds);
      const auto& sh = e.at("shape");
      PG_CHECK(sh.is_array() && sh.size() <= static_cast<size_t>(Shape::kMaxDims),
               "read_safetensors {}: tensor {} has an invalid shape {}", path, name, sh.dump());
      for (const auto& d : sh) {
        PG_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, "read_safetensors {}: tensor {} has dim {}", path,
                 name, d.dump());
        shape.push(d.get<int64_t>());
      }
      begin = e.at("data_offsets").at(0).get<uint64_t>();
      end = e.at("data_offsets").at(1).get<uint64_t>();
    } catch (const nlohmann::json::exception& ex) {
      PG_FAIL("read_safetensors {}: tensor {} has a malformed entry: {}", path, name, ex.what());
    }
    const uint64_t numel = static_cast<uint64_t>(shape.nd == 0 ? 1 : shape.numel());
    if (shape.nd == 0) shape.push(1);  // scalars load as (1)
    PG_CHECK(begin <= end && end <= data_size && end - begin == numel * esize,
             "read_safetensors {}: tensor {} has data_offsets [{}, {}] that do not fit {} values of {} bytes in {} "
             "data bytes",
             path, name, begin, end, numel, esize, data_size);
    std::vector<unsigned char> raw(end - begin);
    f.seekg(static_cast<std::streamoff>(data_start + begin));
    f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    PG_CHECK(f.good(), "read_safetensors {}: reading tensor {} failed", path, name);
    Tensor t = Tensor::empty(shape, dt, Device::CPU);
    const std::string ds = e.at("dtype").get<std::string>();
    if (ds == "F64") {
      float* dst = t.ptr<float>();
      for (uint64_t i = 0; i < numel; ++i) {
        double v;
        std::memcpy(&v, raw.data() + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
    } else if (ds == "I64") {
      int32_t* dst = t.ptr<int32_t>();
      for (uint64_t i = 0; i < numel; ++i) {
        int64_t v;
        std::memcpy(&v, raw.data() + 8 * i, 8);
        PG_CHECK(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
                 "read_safetensors {}: tensor {} value {} does not fit in i32", path, name, v);
        dst[i] = static_cast<int32_t>(v);
      }
    } else if (!raw.empty()) {
      std::memcpy(t.data(), raw.data(), raw.size());
    }
    out.push_back(NamedTensor{name, t});
  }
  return out;
}

void export_params(const ParamTable& table, const std::string& path, DType dtype,
                   const std::map<std::string, std::string>& metadata) {
  PG_CHECK(dtype == DType::F32 || dtype == DType::BF16, "export_params {}: dtype must be f32 or bf16, got {}", path,
           dtype_name(dtype));
  std::vector<NamedTensor> tensors;
  for (const Param& p : table.all()) {
    PG_CHECK(p.value.defined(), "export_params {}: parameter {} is not allocated", path, p.spec.name);
    Tensor host = p.value.to(Device::CPU);
    if (dtype == DType::BF16) {
      Tensor b = Tensor::empty(host.shape(), DType::BF16, Device::CPU);
      ops::copy(host, b);
      host = b;
    }
    tensors.push_back(NamedTensor{p.spec.name, host});
  }
  write_safetensors(path, tensors, metadata);
}

void import_params(ParamTable& table, const std::string& path) {
  std::vector<NamedTensor> file = read_safetensors(path);
  for (const NamedTensor& nt : file)
    PG_CHECK(table.find(nt.name) != nullptr, "import_params {}: tensor {} {} is not a parameter of this model", path,
             nt.name, nt.tensor.desc());
  for (Param& p : table.all()) {
    auto it = std::find_if(file.begin(), file.end(), [&](const NamedTensor& nt) { return nt.name == p.spec.name; });
    PG_CHECK(it != file.end(), "import_params {}: parameter {} {} is missing from the file", path, p.spec.name,
             p.spec.shape.str());
    const Tensor& t = it->tensor;
    PG_CHECK(t.shape() == p.spec.shape, "import_params {}: tensor {} has shape {}, the model expects {}", path,
             p.spec.name, t.shape().str(), p.spec.shape.str());
    PG_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
             "import_params {}: tensor {} is {}, expected a float dtype (F32/BF16/F16/F64)", path, p.spec.name,
             t.desc());
    PG_CHECK(p.value.defined(), "import_params {}: parameter {} is not allocated", path, p.spec.name);
    Tensor f32 = Tensor::empty(t.shape(), DType::F32, Device::CPU);
    ops::copy(t, f32);
    p.value.copy_from(f32);
  }
  table.sync_compute();
}

}  // namespace pgolf::model
