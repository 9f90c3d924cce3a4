#include "train/int8_export.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <zlib.h>

#include "core/error.h"

namespace pgolf::train {
namespace {

constexpr char kMagic[4] = {'P', 'G', 'I', '8'};
enum class Kind : uint8_t { Int8PerRow = 0, Int8PerTensor = 1, F16 = 2, F32 = 3 };

bool is_control(const std::string& name) {
  for (const char* pat : {"attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight"})
    if (name.find(pat) != std::string::npos) return true;
  return false;
}

template <class T> void put(std::string& out, T v) { out.append(reinterpret_cast<const char*>(&v), sizeof(T)); }

struct Reader {
  const std::string& s;
  size_t pos = 0;
  template <class T> T get() {
    PG_CHECK(pos + sizeof(T) <= s.size(), "int8 blob: truncated at byte {}", pos);
    T v;
    std::memcpy(&v, s.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  const char* take(size_t n) {
    PG_CHECK(pos + n <= s.size(), "int8 blob: truncated at byte {} (need {} more)", pos, n);
    const char* p = s.data() + pos;
    pos += n;
    return p;
  }
};

int8_t quantize(float w, float clip, float scale) {
  const float c = std::min(std::max(w, -clip), clip);
  return static_cast<int8_t>(std::clamp(std::nearbyint(c / scale), -127.f, 127.f));
}

}  // namespace

float quantile_linear(std::vector<float>& x, double q) {
  PG_CHECK(!x.empty(), "quantile of an empty tensor");
  const double pos = q * static_cast<double>(x.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, x.size() - 1);
  std::nth_element(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(lo), x.end());
  const float vlo = x[lo];
  // After nth_element, the next order statistic is the minimum of the upper part.
  const float vhi = hi == lo ? vlo : *std::min_element(x.begin() + static_cast<std::ptrdiff_t>(hi), x.end());
  return static_cast<float>(vlo + (static_cast<double>(vhi) - vlo) * (pos - static_cast<double>(lo)));
}

std::string int8_serialize(const model::ParamTable& params) {
  std::string out(kMagic, 4);
  put<uint32_t>(out, static_cast<uint32_t>(params.all().size()));
  for (const auto& p : params.all()) {
    std::vector<float> w = p.value.to_float_vector();
    const Shape& sh = p.value.shape();
    put<uint16_t>(out, static_cast<uint16_t>(p.spec.name.size()));
    out += p.spec.name;
    Kind kind = Kind::F16;
    if (static_cast<int64_t>(w.size()) > kInt8KeepFloatMaxNumel) kind = sh.size() == 2 ? Kind::Int8PerRow : Kind::Int8PerTensor;
    else if (is_control(p.spec.name)) kind = Kind::F32;
    put<uint8_t>(out, static_cast<uint8_t>(kind));
    put<uint8_t>(out, static_cast<uint8_t>(sh.size()));
    for (int d = 0; d < sh.size(); ++d) put<int64_t>(out, sh[d]);
    switch (kind) {
      case Kind::Int8PerRow: {
        const int64_t R = sh[0], C = sh[1];
        std::vector<int8_t> q(w.size());
        std::vector<uint16_t> scales(static_cast<size_t>(R));
        for (int64_t r = 0; r < R; ++r) {
          const float* row = w.data() + r * C;
          std::vector<float> a(static_cast<size_t>(C));
          for (int64_t c = 0; c < C; ++c) a[static_cast<size_t>(c)] = std::fabs(row[c]);
          const float clip = quantile_linear(a, kInt8ClipQuantile);
          const float scale_f = std::max(clip / 127.f, 1.f / 127.f);
          scales[static_cast<size_t>(r)] = f32_to_f16_bits(scale_f);
          // The reference divides by the fp32 scale before storing it as fp16.
          for (int64_t c = 0; c < C; ++c) q[static_cast<size_t>(r * C + c)] = quantize(row[c], clip, scale_f);
        }
        out.append(reinterpret_cast<const char*>(scales.data()), scales.size() * 2);
        out.append(reinterpret_cast<const char*>(q.data()), q.size());
        break;
      }
      case Kind::Int8PerTensor: {
        std::vector<float> a(w.size());
        for (size_t i = 0; i < w.size(); ++i) a[i] = std::fabs(w[i]);
        const float clip = quantile_linear(a, kInt8ClipQuantile);
        const float scale = clip > 0 ? clip / 127.f : 1.f;
        put<float>(out, scale);
        for (float v : w) put<int8_t>(out, quantize(v, clip, scale));
        break;
      }
      case Kind::F16:
        for (float v : w) put<uint16_t>(out, f32_to_f16_bits(v));
        break;
      case Kind::F32:
        out.append(reinterpret_cast<const char*>(w.data()), w.size() * 4);
        break;
    }
  }
  return out;
}

void int8_deserialize_into(const std::string& blob, model::ParamTable& params) {
  Reader r{blob};
  PG_CHECK(std::memcmp(r.take(4), kMagic, 4) == 0, "int8 blob: bad magic");
  const auto n = r.get<uint32_t>();
  PG_CHECK(n == params.all().size(), "int8 blob: {} tensors, the model has {}", n, params.all().size());
  for (uint32_t t = 0; t < n; ++t) {
    const auto name_len = r.get<uint16_t>();
    std::string name(r.take(name_len), name_len);
    model::Param* p = params.find(name);
    PG_CHECK(p, "int8 blob: tensor '{}' is not a parameter of the model", name);
    const auto kind = static_cast<Kind>(r.get<uint8_t>());
    const auto nd = r.get<uint8_t>();
    Shape sh;
    for (int d = 0; d < nd; ++d) sh.push(r.get<int64_t>());
    PG_CHECK(sh == p->value.shape(), "int8 blob: tensor '{}' has shape {}, the model's is {}", name, sh.str(),
             p->value.shape().str());
    const auto N = static_cast<size_t>(sh.numel());
    std::vector<float> w(N);
    switch (kind) {
      case Kind::Int8PerRow: {
        const auto R = static_cast<size_t>(sh[0]), C = static_cast<size_t>(sh[1]);
        const auto* scales = reinterpret_cast<const uint16_t*>(r.take(R * 2));
        const auto* q = reinterpret_cast<const int8_t*>(r.take(N));
        for (size_t i = 0; i < R; ++i) {
          uint16_t sbits;
          std::memcpy(&sbits, scales + i, 2);
          const float s = f16_bits_to_f32(sbits);
          for (size_t c = 0; c < C; ++c) w[i * C + c] = static_cast<float>(q[i * C + c]) * s;
        }
        break;
      }
      case Kind::Int8PerTensor: {
        const float s = r.get<float>();
        const auto* q = reinterpret_cast<const int8_t*>(r.take(N));
        for (size_t i = 0; i < N; ++i) w[i] = static_cast<float>(q[i]) * s;
        break;
      }
      case Kind::F16: {
        const char* b = r.take(N * 2);
        for (size_t i = 0; i < N; ++i) {
          uint16_t h;
          std::memcpy(&h, b + 2 * i, 2);
          w[i] = f16_bits_to_f32(h);
        }
        break;
      }
      case Kind::F32:
        std::memcpy(w.data(), r.take(N * 4), N * 4);
        break;
      default:
        PG_FAIL("int8 blob: tensor '{}' has unknown kind {}", name, static_cast<int>(kind));
    }
    p->value.copy_from(Tensor::from_vector(w, sh, Device::CPU));
  }
  PG_CHECK(r.pos == blob.size(), "int8 blob: {} trailing bytes", blob.size() - r.pos);
}

std::string zlib_compress(const std::string& data, int level) {
  uLongf cap = compressBound(static_cast<uLong>(data.size()));
  std::string out(cap, '\0');
  int rc = compress2(reinterpret_cast<Bytef*>(out.data()), &cap, reinterpret_cast<const Bytef*>(data.data()),
                     static_cast<uLong>(data.size()), level);
  PG_CHECK(rc == Z_OK, "zlib compress failed (code {})", rc);
  out.resize(cap);
  return out;
}

std::string zlib_decompress(const std::string& data) {
  z_stream zs{};
  PG_CHECK(inflateInit(&zs) == Z_OK, "zlib inflateInit failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[1 << 16];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      PG_FAIL("zlib decompress failed (code {})", rc);
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  } while (rc != Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

}  // namespace pgolf::train
