#include "artifact/entropy_coder.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include <xxhash.h>

#include "core/error.h"

namespace pgolf::artifact {

namespace {

constexpr uint8_t kStreamVersion = 1;

// ---------------------------------------------------------------------------------------------
// Logistic helpers: probabilities are 12-bit (0..4095 = P(bit = 1) · 4096), logits ("stretch")
// are 8.8 fixed point in [-2047, 2047]. squash is the logistic function sampled every 128 logit
// units and interpolated linearly; stretch is its inverse by table. Integers only.

constexpr std::array<int, 33> kSquashKnots = {1,    2,    4,    6,    10,   17,   27,   45,   74,   120,  194,
                                              311,  488,  747,  1102, 1546, 2048, 2550, 2994, 3349, 3608, 3785,
                                              3902, 3976, 4022, 4051, 4069, 4079, 4086, 4090, 4092, 4094, 4095};

int squash_calc(int d) {
  if (d > 2047) d = 2047;
  if (d < -2047) d = -2047;
  const int w = d & 127;
  const int i = (d >> 7) + 16;
  return (kSquashKnots[static_cast<size_t>(i)] * (128 - w) + kSquashKnots[static_cast<size_t>(i) + 1] * w + 64) >> 7;
}

struct Tables {
  std::array<int16_t, 4096> squash{};   // index d + 2048, d in [-2048, 2047]
  std::array<int16_t, 4096> stretch{};  // index p
  std::array<int32_t, 1024> dt{};       // counter adaptation rate 1/(n + 1.5) in 1/8192 units
  Tables() {
    for (int d = -2048; d < 2048; ++d) squash[static_cast<size_t>(d + 2048)] = static_cast<int16_t>(squash_calc(d));
    // stretch(p) = the smallest d with squash(d) >= p (monotone inverse).
    int pi = 0;
    for (int d = -2047; d <= 2047; ++d) {
      const int v = squash_calc(d);
      for (int p = pi; p <= v; ++p) stretch[static_cast<size_t>(p)] = static_cast<int16_t>(d);
      pi = std::max(pi, v + 1);
    }
    for (int p = pi; p < 4096; ++p) stretch[static_cast<size_t>(p)] = 2047;
    for (int n = 0; n < 1024; ++n) dt[static_cast<size_t>(n)] = 16384 / (2 * n + 3);
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

inline int squash(int d) {
  if (d > 2047) d = 2047;
  if (d < -2047) d = -2047;
  return tables().squash[static_cast<size_t>(d + 2048)];
}
inline int stretch(int p) { return tables().stretch[static_cast<size_t>(p)]; }

// Adaptive bit model: high 22 bits P(1), low 10 bits a hit count that slows adaptation to 1/(n+1.5)
// until `limit`.
constexpr uint32_t kCounterInit = (uint32_t{1} << 31);  // p = 0.5, n = 0
inline int counter_p(uint32_t t) { return static_cast<int>(t >> 20); }
inline void counter_update(uint32_t& t, int bit, int limit) {
  const int n = static_cast<int>(t & 1023);
  const int64_t p = t >> 10;
  const int64_t target = bit ? (int64_t{1} << 22) - 1 : 0;
  const int64_t np = p + (((target - p) * tables().dt[static_cast<size_t>(n)]) >> 13);
  t = (static_cast<uint32_t>(np) << 10) | static_cast<uint32_t>(n < limit ? n + 1 : limit);
}

// Adaptive probability map (secondary estimation): per context, 33 probabilities over the stretched
// input, interpolated; the nearer knot learns.
class Apm {
 public:
  void init(size_t contexts) {
    t_.assign(contexts * 33, 0);
    for (size_t c = 0; c < contexts; ++c)
      for (int j = 0; j < 33; ++j) t_[c * 33 + static_cast<size_t>(j)] = static_cast<uint16_t>(squash((j - 16) * 128) * 16);
  }
  int p(int pr, size_t cx) {
    const int s = stretch(pr) + 2048;  // 1 .. 4095
    const int w = s & 127;
    idx_ = (static_cast<size_t>(s) >> 7) + cx * 33;
    const int out = (t_[idx_] * (128 - w) + t_[idx_ + 1] * w) >> 11;
    if (w >= 64) ++idx_;
    return std::clamp(out, 1, 4095);
  }
  void update(int bit) {
    const int g = (bit << 16) + (bit << 5) - bit - bit;
    t_[idx_] = static_cast<uint16_t>(t_[idx_] + ((g - t_[idx_]) >> 6));
  }

 private:
  std::vector<uint16_t> t_;
  size_t idx_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Binary arithmetic coder (carry-less range coder, 32-bit state). P(bit = 1) = p / 4096.

class Encoder {
 public:
  explicit Encoder(std::vector<uint8_t>* out) : out_(out) {}
  int code(int bit, int p) {
    const uint32_t xmid = x1_ + ((x2_ - x1_) >> 12) * static_cast<uint32_t>(p);
    if (bit)
      x2_ = xmid;
    else
      x1_ = xmid + 1;
    while (((x1_ ^ x2_) & 0xff000000u) == 0) {
      out_->push_back(static_cast<uint8_t>(x2_ >> 24));
      x1_ <<= 8;
      x2_ = (x2_ << 8) | 255;
    }
    return bit;
  }
  void flush() {
    for (int i = 0; i < 4; ++i) {
      out_->push_back(static_cast<uint8_t>(x1_ >> 24));
      x1_ <<= 8;
    }
  }

 private:
  std::vector<uint8_t>* out_;
  uint32_t x1_ = 0, x2_ = 0xffffffffu;
};

class Decoder {
 public:
  explicit Decoder(std::span<const uint8_t> in) : in_(in) {
    for (int i = 0; i < 4; ++i) x_ = (x_ << 8) | next();
  }
  int code(int /*bit*/, int p) {
    const uint32_t xmid = x1_ + ((x2_ - x1_) >> 12) * static_cast<uint32_t>(p);
    const int bit = x_ <= xmid ? 1 : 0;
    if (bit)
      x2_ = xmid;
    else
      x1_ = xmid + 1;
    while (((x1_ ^ x2_) & 0xff000000u) == 0) {
      x1_ <<= 8;
      x2_ = (x2_ << 8) | 255;
      x_ = (x_ << 8) | next();
    }
    return bit;
  }
  // Bytes the decoder asked for (a valid stream: exactly its length; more means truncated).
  uint64_t consumed() const { return pos_; }

 private:
  uint32_t next() { return pos_ < in_.size() ? in_[pos_++] : (++pos_, 0u); }
  std::span<const uint8_t> in_;
  uint64_t pos_ = 0;
  uint32_t x1_ = 0, x2_ = 0xffffffffu, x_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Models.

constexpr int kCounterLimit = 1023;  // bit models: adaptation rate 1/(n + 1.5), at most 1/1024.5
constexpr int kMixerLr = 1;          // mixer: Δw = x · err / 2^15 (16.16 weights, 8.8 logits, 12-bit err)
constexpr int kMixerShift = 15;

// Mixer: per weight set, N weights in 16.16; output squash(Σ w·x); learns err · x.
template <int N>
class Mixer {
 public:
  // Every set starts at w0 for the first `models` inputs and 0 for the rest (the bias).
  void init(size_t sets, int32_t w0, int models = N) {
    w_.assign(sets * N, 0);
    for (size_t s = 0; s < sets; ++s)
      for (int i = 0; i < models; ++i) w_[s * N + static_cast<size_t>(i)] = w0;
  }
  int mix(const int* x, size_t set) {
    x_ = x;
    w_cur_ = &w_[set * N];
    int64_t dot = 0;
    for (int i = 0; i < N; ++i) dot += static_cast<int64_t>(x[i]) * w_cur_[i];
    p_ = squash(static_cast<int>(dot >> 16));
    return p_;
  }
  void update(int bit, int lr) {
    const int err = ((bit << 12) - p_) * lr;
    // Rounded, not floored: a floor would drift every weight down by half a unit per update.
    for (int i = 0; i < N; ++i) w_cur_[i] += (x_[i] * err + (1 << (kMixerShift - 1))) >> kMixerShift;
  }

 private:
  std::vector<int32_t> w_;
  const int* x_ = nullptr;
  int32_t* w_cur_ = nullptr;
  int p_ = 2048;
};

// Bitwise order-0 + order-1 byte model for bytes outside code matrices.
class ByteModel {
 public:
  void init() {
    o0_.assign(256, kCounterInit);
    o1_.assign(256 * 256, kCounterInit);
    mixer_.init(8 * 256, 1 << 15, 2);
  }
  template <class C>
  uint8_t code(C& ac, uint8_t byte) {
    int partial = 1;
    for (int b = 7; b >= 0; --b) {
      uint32_t& a = o0_[static_cast<size_t>(partial)];
      uint32_t& c = o1_[static_cast<size_t>(prev_) * 256 + static_cast<size_t>(partial)];
      int x[3] = {stretch(counter_p(a)), stretch(counter_p(c)), 256};
      const int p = std::clamp(mixer_.mix(x, static_cast<size_t>(b) * 256 + prev_), 1, 4095);
      const int bit = ac.code((byte >> b) & 1, p);
      counter_update(a, bit, 255);
      counter_update(c, bit, 255);
      mixer_.update(bit, 4);
      partial = (partial << 1) | bit;
    }
    prev_ = static_cast<uint8_t>(partial & 255);
    return prev_;
  }

 private:
  std::vector<uint32_t> o0_, o1_;
  Mixer<3> mixer_;
  uint8_t prev_ = 0;
};

// Magnitude buckets: average |code| (×256 fixed point) on a log-like scale.
constexpr int kBuckets = 20;
constexpr std::array<int, kBuckets - 1> kBucketEdges = {77,  128, 179, 230, 282, 333,  397,  461,  538,  627,
                                                        730, 845, 998, 1203, 1485, 1792, 2176, 2688, 3328};
struct BucketTable {
  std::array<uint8_t, 1024> b{};  // index avg256 >> 2, avg256 < 4096
  BucketTable() {
    for (int i = 0; i < 1024; ++i) {
      int k = 0;
      while (k < kBuckets - 1 && (i << 2) >= kBucketEdges[static_cast<size_t>(k)]) ++k;
      b[static_cast<size_t>(i)] = static_cast<uint8_t>(k);
    }
  }
};
inline int bucket(uint32_t avg256) {
  static const BucketTable t;
  return avg256 >= 4096 ? kBuckets - 1 : t.b[avg256 >> 2];
}

// kRecip[i] = 65536 / (i + 1): a running mean over the first 64 samples, then an EMA.
constexpr std::array<int32_t, 64> make_recip() {
  std::array<int32_t, 64> r{};
  for (int i = 0; i < 64; ++i) r[static_cast<size_t>(i)] = 65536 / (i + 1);
  return r;
}
constexpr std::array<int32_t, 64> kRecip = make_recip();

// Signed column mean (×256) in 11 levels: 0 near zero, then ±0.02, ±0.06, ±0.12, ±0.25, ±0.5 codes.
constexpr int kMeanLevels = 11;
inline int mean_level(int32_t m256) {
  const int a = m256 < 0 ? -m256 : m256;
  const int k = a < 5 ? 0 : a < 15 ? 1 : a < 31 ? 2 : a < 64 ? 3 : a < 128 ? 4 : 5;
  return k == 0 ? 0 : m256 < 0 ? 5 + k : k;
}

constexpr int kNodes = 32;     // 0 zero flag, 1 unused (sign has its own model), 2.. unary |v| > k
constexpr int kSmall = 4;      // min(|v|, 3) for the previous code / the code above
constexpr int kInputs = 5;     // four bit models + bias

// One int8 code at a time: zero flag, sign, truncated unary magnitude (ends at the matrix max).
class CodeModel {
 public:
  explicit CodeModel(uint32_t features) : f_(features) { reset(); }

  void reset() {
    t1_.assign(static_cast<size_t>(kNodes * 4 * kBuckets * kSmall), kCounterInit);
    t2_.assign(static_cast<size_t>(kNodes * 4 * kBuckets * kSmall), kCounterInit);
    t3_.assign(static_cast<size_t>(kNodes * 4 * kBuckets * kBuckets), kCounterInit);
    t4_.assign(static_cast<size_t>(kNodes * kSmall * kSmall * 4 * kMeanLevels * 3), kCounterInit);
    sign_.assign(static_cast<size_t>(9 * 4 * kMeanLevels), kCounterInit);
    mixer_.init(static_cast<size_t>(kNodes * 4), (1 << 16) / (kInputs - 1), kInputs - 1);  // the average logit
    apm_.init(static_cast<size_t>(kNodes * kBuckets));
  }

  // Codes a rows × cols matrix in place: the encoder reads `data`, the decoder writes it.
  template <bool kEnc, class C>
  void code_matrix(C& ac, uint8_t* data, uint64_t rows, uint64_t cols, int maxabs) {
    if (!(f_ & kCmShare)) reset();
    if (maxabs == 0) {
      if (!kEnc) std::memset(data, 0, rows * cols);
      return;
    }
    col_.assign(cols, global_);
    colm_.assign(cols, 0);
    for (uint64_t r = 0; r < rows; ++r) {
      uint8_t* row = data + r * cols;
      const uint8_t* above = r > 0 ? row - cols : nullptr;
      uint32_t row_fast = global_, row_slow = global_;
      uint64_t row_sum = 0;
      int32_t row_m = 0;  // signed mean code of the row so far ×256
      int prev = 0;
      const int col_rate_i = static_cast<int>(std::min<uint64_t>(r, 63));
      for (uint64_t c = 0; c < cols; ++c) {
        const int up = above ? static_cast<int8_t>(above[c]) : 0;
        const int cb = (f_ & kCmColumn) ? bucket(col_[c]) : 0;
        const int rbf = (f_ & kCmRow) ? bucket(row_fast) : 0;
        const int rbs = (f_ & kCmRow) ? bucket(row_slow) : 0;
        const int pm = (f_ & kCmPrev) ? std::min(std::abs(prev), kSmall - 1) : 0;
        const int am = (f_ & kCmPrev) ? std::min(std::abs(up), kSmall - 1) : 0;
        const int mclass = maxabs <= 15 ? 0 : maxabs <= 31 ? 1 : maxabs <= 63 ? 2 : 3;
        const size_t b1 = static_cast<size_t>(((mclass * kBuckets + cb) * kSmall + pm) * kNodes);
        const size_t b2 = static_cast<size_t>(((mclass * kBuckets + rbf) * kSmall + pm) * kNodes);
        const size_t b3 = static_cast<size_t>(((mclass * kBuckets + cb) * kBuckets + rbs) * kNodes);
        const int smb = (f_ & kCmRowMean) ? mean_level(row_m) : (f_ & kCmColMean) ? mean_level(colm_[c]) : 0;
        // Model 4 also sees the sign once it is known (0 before: the zero flag).
        const size_t b4_base = static_cast<size_t>((((mclass * kSmall + am) * kSmall + pm) * kMeanLevels + smb) * 3);
        size_t b4 = b4_base * kNodes;
        const size_t apm_base = static_cast<size_t>(cb * kNodes);
        const int v = kEnc ? static_cast<int8_t>(row[c]) : 0;
        const int mag = v < 0 ? -v : v;

        auto bit_at = [&](int node, int bit) {
          uint32_t& a = t1_[b1 + static_cast<size_t>(node)];
          uint32_t& b = t2_[b2 + static_cast<size_t>(node)];
          uint32_t& d = t3_[b3 + static_cast<size_t>(node)];
          uint32_t& e = t4_[b4 + static_cast<size_t>(node)];
          int x[kInputs] = {stretch(counter_p(a)), stretch(counter_p(b)), stretch(counter_p(d)),
                            stretch(counter_p(e)), 256};
          int p = mixer_.mix(x, static_cast<size_t>(node * 4 + mclass));
          if (f_ & kCmApm) p = (p + 3 * apm_.p(std::clamp(p, 1, 4095), apm_base + static_cast<size_t>(node))) >> 2;
          p = std::clamp(p, 1, 4095);
          const int y = ac.code(bit, p);
          counter_update(a, y, kCounterLimit);
          counter_update(b, y, kCounterLimit);
          counter_update(d, y, kCounterLimit);
          counter_update(e, y, kCounterLimit);
          mixer_.update(y, kMixerLr);
          if (f_ & kCmApm) apm_.update(y);
          return y;
        };

        int m = 0;
        if (bit_at(0, mag != 0)) {
          const int sctx = (f_ & kCmSignCtx) ? (prev > 0 ? 1 : prev < 0 ? 2 : 0) * 3 + (up > 0 ? 1 : up < 0 ? 2 : 0) : 0;
          uint32_t& sc = sign_[static_cast<size_t>((sctx * 4 + mclass) * kMeanLevels + smb)];
          const int neg = ac.code(v < 0, std::clamp(counter_p(sc), 1, 4095));
          counter_update(sc, neg, kCounterLimit);
          if (f_ & (kCmColMean | kCmRowMean)) b4 = (b4_base + 1 + static_cast<size_t>(neg)) * kNodes;
          m = 1;
          while (m < maxabs && bit_at(1 + std::min(m, kNodes - 2), mag > m)) ++m;
          if (!kEnc) row[c] = static_cast<uint8_t>(neg ? -m : m);
          prev = neg ? -m : m;
        } else {
          if (!kEnc) row[c] = 0;
          prev = 0;
        }
        row_m += static_cast<int32_t>((static_cast<int64_t>(prev) * 256 - row_m) * kRecip[std::min<uint64_t>(c, 63)] >> 16);
        colm_[c] += static_cast<int32_t>((static_cast<int64_t>(prev) * 256 - colm_[c]) * kRecip[static_cast<size_t>(col_rate_i)] >> 16);
        const uint32_t m256 = static_cast<uint32_t>(m) << 8;
        col_[c] = static_cast<uint32_t>(static_cast<int64_t>(col_[c]) +
                                        ((static_cast<int64_t>(m256) - col_[c]) * kRecip[static_cast<size_t>(col_rate_i)] >> 16));
        row_fast = static_cast<uint32_t>(static_cast<int64_t>(row_fast) + ((static_cast<int64_t>(m256) - row_fast) >> 2));
        row_sum += static_cast<uint32_t>(m);
        const uint64_t n = c + 1;
        if (n < 64) row_slow = static_cast<uint32_t>(static_cast<int64_t>(row_slow) +
                                                     ((static_cast<int64_t>(m256) - row_slow) * kRecip[n] >> 16));
        else row_slow = static_cast<uint32_t>(static_cast<int64_t>(row_slow) + ((static_cast<int64_t>(m256) - row_slow) >> 6));
      }
      if (cols > 0) {
        const uint32_t mean = static_cast<uint32_t>((static_cast<uint64_t>(row_sum) << 8) / cols);
        global_ = static_cast<uint32_t>(static_cast<int64_t>(global_) + ((static_cast<int64_t>(mean) - global_) >> 3));
      }
    }
  }

 private:
  uint32_t f_;
  std::vector<uint32_t> t1_, t2_, t3_, t4_, sign_;
  Mixer<kInputs> mixer_;
  Apm apm_;
  std::vector<uint32_t> col_;
  std::vector<int32_t> colm_;  // signed mean code of each column ×256 (same averaging as col_)
  uint32_t global_ = 2 << 8;  // running mean |code| ×256, carried across rows and matrices
};

// ---------------------------------------------------------------------------------------------
// Stream: u8 version, varint features, u32 check (low 32 bits of xxh64(raw)), varint segment count,
// segments (u8 kind 0 bytes: varint n | kind 1 matrix: varint rows, varint cols, u8 max |code|),
// then the arithmetic-coded payload.

struct Segment {
  uint8_t kind = 0;  // 0 bytes, 1 code matrix
  uint64_t offset = 0, bytes = 0, rows = 0, cols = 0;
  int maxabs = 0;
};

void put_varint(std::vector<uint8_t>& out, uint64_t v) {
  while (v >= 128) {
    out.push_back(static_cast<uint8_t>(v | 128));
    v >>= 7;
  }
  out.push_back(static_cast<uint8_t>(v));
}

struct HeaderReader {
  std::span<const uint8_t> in;
  size_t pos = 0;
  const std::string& what;
  uint8_t u8(const char* field) {
    PG_CHECK(pos < in.size(), "{}: cm stream is truncated inside its header ({})", what, field);
    return in[pos++];
  }
  uint64_t varint(const char* field) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const uint8_t b = u8(field);
      v |= static_cast<uint64_t>(b & 127) << shift;
      if (!(b & 128)) return v;
    }
    PG_FAIL("{}: cm stream header has an overlong number ({})", what, field);
  }
};

uint32_t check32(std::span<const uint8_t> raw) { return static_cast<uint32_t>(XXH64(raw.data(), raw.size(), 0)); }

template <bool kEnc, class C>
void code_segments(C& ac, const std::vector<Segment>& segs, uint8_t* data, uint32_t features) {
  CodeModel codes(features);
  ByteModel bytes;
  bytes.init();
  for (const Segment& s : segs) {
    if (s.kind == 1) {
      codes.code_matrix<kEnc>(ac, data + s.offset, s.rows, s.cols, s.maxabs);
    } else {
      for (uint64_t i = 0; i < s.bytes; ++i) data[s.offset + i] = bytes.code(ac, kEnc ? data[s.offset + i] : 0);
    }
  }
}

}  // namespace

std::vector<uint8_t> cm_compress(std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices, uint32_t features) {
  PG_CHECK((features & ~kCmAllFeatures) == 0, "cm: unknown feature bits {:#x}", features);
  std::vector<Segment> segs;
  uint64_t at = 0;
  for (const CodeMatrix& m : matrices) {
    PG_CHECK(m.offset >= at, "cm: code matrices must be sorted and disjoint (offset {} before {})", m.offset, at);
    PG_CHECK(m.rows <= raw.size() && m.cols <= raw.size() && m.rows * m.cols <= raw.size() - m.offset &&
                 m.offset <= raw.size(),
             "cm: code matrix {}x{} at offset {} lies outside the {} raw bytes", m.rows, m.cols, m.offset, raw.size());
    if (m.rows * m.cols == 0) continue;
    if (m.offset > at) segs.push_back({0, at, m.offset - at, 0, 0, 0});
    int maxabs = 0;
    for (uint64_t i = 0; i < m.rows * m.cols; ++i) {
      const int v = static_cast<int8_t>(raw[m.offset + i]);
      maxabs = std::max(maxabs, v < 0 ? -v : v);
    }
    segs.push_back({1, m.offset, m.rows * m.cols, m.rows, m.cols, maxabs});
    at = m.offset + m.rows * m.cols;
  }
  if (at < raw.size()) segs.push_back({0, at, raw.size() - at, 0, 0, 0});

  std::vector<uint8_t> out;
  out.push_back(kStreamVersion);
  put_varint(out, features);
  const uint32_t chk = check32(raw);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(chk >> (8 * i)));
  put_varint(out, segs.size());
  for (const Segment& s : segs) {
    out.push_back(s.kind);
    if (s.kind == 0) {
      put_varint(out, s.bytes);
    } else {
      put_varint(out, s.rows);
      put_varint(out, s.cols);
      out.push_back(static_cast<uint8_t>(s.maxabs));
    }
  }
  out.reserve(out.size() + raw.size() / 2);
  std::vector<uint8_t> copy(raw.begin(), raw.end());  // the coder reads data in place
  Encoder enc(&out);
  code_segments<true>(enc, segs, copy.data(), features);
  enc.flush();
  return out;
}

std::vector<uint8_t> cm_compress_best(std::span<const uint8_t> raw, std::span<const CodeMatrix> matrices) {
  std::vector<uint8_t> best;
  for (uint32_t f : kCmCandidateFeatures) {
    std::vector<uint8_t> z = cm_compress(raw, matrices, f);
    if (best.empty() || z.size() < best.size()) best = std::move(z);
    if (matrices.empty()) break;  // the byte model ignores the features
  }
  return best;
}

std::vector<uint8_t> cm_decompress(std::span<const uint8_t> packed, size_t raw_size, const std::string& what) {
  HeaderReader h{packed, 0, what};
  const uint8_t version = h.u8("version");
  PG_CHECK(version == kStreamVersion, "{}: cm stream version {} is not the {} this build reads (corrupt data?)", what,
           version, kStreamVersion);
  const uint64_t features = h.varint("features");
  PG_CHECK((features & ~uint64_t{kCmAllFeatures}) == 0, "{}: cm stream uses unknown feature bits {:#x}", what, features);
  uint32_t chk = 0;
  for (int i = 0; i < 4; ++i) chk |= static_cast<uint32_t>(h.u8("checksum")) << (8 * i);
  const uint64_t nseg = h.varint("segment count");
  PG_CHECK(nseg <= raw_size, "{}: cm stream declares {} segments for {} raw bytes", what, nseg, raw_size);
  std::vector<Segment> segs;
  uint64_t at = 0;
  for (uint64_t i = 0; i < nseg; ++i) {
    Segment s;
    s.kind = h.u8("segment kind");
    s.offset = at;
    if (s.kind == 0) {
      s.bytes = h.varint("segment size");
    } else if (s.kind == 1) {
      s.rows = h.varint("matrix rows");
      s.cols = h.varint("matrix cols");
      s.maxabs = h.u8("matrix max |code|");
      PG_CHECK(s.maxabs <= 128, "{}: cm matrix segment {} has max |code| {} (> 128)", what, i, s.maxabs);
      PG_CHECK(s.rows <= raw_size && s.cols <= raw_size && (s.cols == 0 || s.rows <= raw_size / s.cols),
               "{}: cm matrix segment {} is {}x{}, more than the {} raw bytes", what, i, s.rows, s.cols, raw_size);
      s.bytes = s.rows * s.cols;
    } else {
      PG_FAIL("{}: cm stream segment {} has unknown kind {} (known: 0 bytes, 1 code matrix)", what, i, s.kind);
    }
    PG_CHECK(s.bytes > 0 && s.bytes <= raw_size - at, "{}: cm segment {} ({} bytes at {}) does not fit {} raw bytes",
             what, i, s.bytes, at, raw_size);
    at += s.bytes;
    segs.push_back(s);
  }
  PG_CHECK(at == raw_size, "{}: cm segments cover {} bytes but the section has {}", what, at, raw_size);
  std::vector<uint8_t> out(raw_size);
  const std::span<const uint8_t> payload = std::span<const uint8_t>(packed).subspan(h.pos);
  Decoder dec(payload);
  code_segments<false>(dec, segs, out.data(), static_cast<uint32_t>(features));
  PG_CHECK(dec.consumed() <= payload.size(), "{}: cm data is truncated ({} payload bytes, the decoder needed {})", what,
           payload.size(), dec.consumed());
  PG_CHECK(dec.consumed() == payload.size(), "{}: cm data is corrupt ({} unexpected trailing payload bytes)", what,
           payload.size() - dec.consumed());
  const uint32_t got = check32(out);
  PG_CHECK(got == chk, "{}: cm data is corrupt (decoded checksum {:08x}, stored {:08x})", what, got, chk);
  return out;
}

}  // namespace pgolf::artifact
