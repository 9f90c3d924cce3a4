#include "artifact/tensor_codec.h"

#include "artifact/bitpack.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pgolf::artifact {

namespace {

std::vector<uint8_t> le16(std::span<const uint16_t> v) {
  std::vector<uint8_t> b(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    b[2 * i] = static_cast<uint8_t>(v[i]);
    b[2 * i + 1] = static_cast<uint8_t>(v[i] >> 8);
  }
  return b;
}

std::vector<uint16_t> from_le16(std::span<const uint8_t> b) {
  std::vector<uint16_t> v(b.size() / 2);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(b[2 * i] | (b[2 * i + 1] << 8));
  return v;
}

std::vector<uint8_t> int8_bytes(std::span<const int8_t> v) {
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), reinterpret_cast<const uint8_t*>(v.data()) + v.size());
}

std::vector<int8_t> bytes_int8(std::span<const uint8_t> b) {
  return std::vector<int8_t>(reinterpret_cast<const int8_t*>(b.data()), reinterpret_cast<const int8_t*>(b.data()) + b.size());
}

constexpr int64_t kMaxElements = int64_t{1} << 36;  // far above any 16 MB model; keeps sizes overflow-free

std::vector<PartKind> expected_parts(const TensorEntry& e) {
  if (e.kind != StorageKind::IntRow) return {PartKind::Values};
  std::vector<PartKind> k{PartKind::Codes, PartKind::RowScales};
  if (e.flags & kFlagLqer)
    k.insert(k.end(), {PartKind::LqerACodes, PartKind::LqerAScale, PartKind::LqerBCodes, PartKind::LqerBScales});
  return k;
}

}  // namespace

std::string_view part_kind_name(PartKind k) {
  switch (k) {
    case PartKind::Values: return "values";
    case PartKind::Codes: return "codes";
    case PartKind::RowScales: return "row-scales";
    case PartKind::LqerACodes: return "lqer-a-codes";
    case PartKind::LqerAScale: return "lqer-a-scale";
    case PartKind::LqerBCodes: return "lqer-b-codes";
    case PartKind::LqerBScales: return "lqer-b-scales";
  }
  return "?";
}

TensorEntry entry_for(const StoredTensor& t) {
  TensorEntry e;
  e.name = t.name;
  e.shape = t.shape;
  e.kind = t.kind;
  e.group = t.group;
  if (t.kind == StorageKind::IntRow) {
    e.bits = static_cast<uint8_t>(t.q.bits);
    if (t.pack_bits) e.flags |= kFlagPackedCodes;
    if (t.lqer) {
      e.flags |= kFlagLqer;
      e.lqer_rank = static_cast<uint16_t>(t.lqer->rank);
      e.lqer_group = static_cast<uint16_t>(t.lqer->group_size);
    }
  }
  for (PartKind k : expected_parts(e)) e.parts.push_back(PartPlacement{k, 0, 0, 0});
  return e;
}

std::vector<EncodedPart> encode_tensor(const StoredTensor& t) {
  t.validate();
  std::vector<EncodedPart> p;
  switch (t.kind) {
    case StorageKind::F32: {
      std::vector<uint8_t> b(t.f32.size() * 4);
      for (size_t i = 0; i < t.f32.size(); ++i) {
        const uint32_t u = pg_f32_bits(t.f32[i]);
        for (int k = 0; k < 4; ++k) b[4 * i + static_cast<size_t>(k)] = static_cast<uint8_t>(u >> (8 * k));
      }
      p.push_back({PartKind::Values, std::move(b)});
      break;
    }
    case StorageKind::F16:
    case StorageKind::BF16: p.push_back({PartKind::Values, le16(t.half)}); break;
    case StorageKind::Bytes: p.push_back({PartKind::Values, t.bytes}); break;
    case StorageKind::IntRow:
      p.push_back({PartKind::Codes, t.pack_bits ? pack_signed(t.q.codes, t.q.bits) : int8_bytes(t.q.codes)});
      p.push_back({PartKind::RowScales, le16(t.q.scales)});
      if (t.lqer) {
        p.push_back({PartKind::LqerACodes, int8_bytes(t.lqer->a_codes)});
        p.push_back({PartKind::LqerAScale, le16(std::span<const uint16_t>(&t.lqer->a_scale, 1))});
        p.push_back({PartKind::LqerBCodes, int8_bytes(t.lqer->b_codes)});
        p.push_back({PartKind::LqerBScales, le16(t.lqer->b_scales)});
      }
      break;
  }
  return p;
}

bool can_transpose_codes(const StoredTensor& t) { return t.kind == StorageKind::IntRow && !t.pack_bits; }

std::vector<uint8_t> transposed_codes(const StoredTensor& t) {
  PG_CHECK(can_transpose_codes(t), "tensor '{}': only unpacked int-row codes can be stored transposed", t.name);
  const size_t rows = static_cast<size_t>(t.q.rows), cols = static_cast<size_t>(t.q.cols);
  std::vector<uint8_t> b(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) b[c * rows + r] = static_cast<uint8_t>(t.q.codes[r * cols + c]);
  return b;
}

StoredTensor decode_tensor(const TensorEntry& e, const std::vector<std::span<const uint8_t>>& part_bytes) {
  const std::string what = fmt::format("tensor '{}'", e.name);
  PG_CHECK(part_bytes.size() == e.parts.size(), "{}: {} part buffers for {} parts", what, part_bytes.size(), e.parts.size());
  StoredTensor t;
  t.name = e.name;
  t.shape = e.shape;
  t.kind = e.kind;
  t.group = e.group;
  const int64_t n = t.numel();
  auto need = [&](size_t i, uint64_t bytes) {
    PG_CHECK(part_bytes[i].size() == bytes, "{}: part '{}' has {} bytes, expected {}", what,
             part_kind_name(e.parts[i].kind), part_bytes[i].size(), bytes);
    return part_bytes[i];
  };
  switch (e.kind) {
    case StorageKind::F32: {
      auto b = need(0, static_cast<uint64_t>(n) * 4);
      t.f32.resize(static_cast<size_t>(n));
      for (size_t i = 0; i < t.f32.size(); ++i)
        t.f32[i] = pg_bits_f32(static_cast<uint32_t>(b[4 * i]) | static_cast<uint32_t>(b[4 * i + 1]) << 8 |
                               static_cast<uint32_t>(b[4 * i + 2]) << 16 | static_cast<uint32_t>(b[4 * i + 3]) << 24);
      break;
    }
    case StorageKind::F16:
    case StorageKind::BF16: t.half = from_le16(need(0, static_cast<uint64_t>(n) * 2)); break;
    case StorageKind::Bytes: {
      auto b = need(0, static_cast<uint64_t>(n));
      t.bytes.assign(b.begin(), b.end());
      break;
    }
    case StorageKind::IntRow: {
      PG_CHECK(e.bits >= 2 && e.bits <= 8, "{}: int-row bits {} not in [2, 8]", what, e.bits);
      PG_CHECK(e.shape[0] > 0 || n == 0, "{}: int-row tensor with zero rows", what);
      t.q.rows = e.shape[0];
      t.q.cols = t.q.rows ? n / t.q.rows : 0;
      t.q.bits = e.bits;
      t.pack_bits = (e.flags & kFlagPackedCodes) != 0;
      const size_t count = static_cast<size_t>(n);
      t.q.codes = t.pack_bits ? unpack_signed(need(0, packed_size(count, e.bits)), e.bits, count, what)
                              : bytes_int8(need(0, count));
      if (e.flags & kFlagTransposedCodes) {
        PG_CHECK(!t.pack_bits, "{}: codes cannot be both packed and transposed", what);
        const std::vector<int8_t> colmajor = std::move(t.q.codes);
        const size_t rows = static_cast<size_t>(t.q.rows), cols = static_cast<size_t>(t.q.cols);
        t.q.codes.resize(rows * cols);
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) t.q.codes[r * cols + c] = colmajor[c * rows + r];
      }
      t.q.scales = from_le16(need(1, static_cast<uint64_t>(t.q.rows) * 2));
      if (e.flags & kFlagLqer) {
        quant::LowRankCorrection c;
        c.rows = t.q.rows;
        c.cols = t.q.cols;
        c.rank = e.lqer_rank;
        c.group_size = e.lqer_group;
        PG_CHECK(c.rank > 0 && c.group_size > 0, "{}: LQER rank {} / group {} must be > 0", what, c.rank, c.group_size);
        c.a_codes = bytes_int8(need(2, static_cast<uint64_t>(c.rows) * c.rank));
        c.a_scale = from_le16(need(3, 2))[0];
        c.b_codes = bytes_int8(need(4, static_cast<uint64_t>(c.rank) * static_cast<uint64_t>(c.cols)));
        c.b_scales = from_le16(need(5, static_cast<uint64_t>(quant::LowRankCorrection::num_groups(c.rank, c.cols, c.group_size)) * 2));
        t.lqer = std::move(c);
      }
      break;
    }
  }
  t.validate();
  return t;
}

void write_entry(ByteWriter& w, const TensorEntry& e) {
  w.u16(static_cast<uint16_t>(e.name.size()));
  w.str(e.name);
  w.u8(static_cast<uint8_t>(e.kind));
  w.u8(e.bits);
  w.u8(e.flags);
  w.u8(e.group);
  w.u8(static_cast<uint8_t>(e.shape.size()));
  for (int64_t d : e.shape) w.i64(d);
  if (e.flags & kFlagLqer) {
    w.u16(e.lqer_rank);
    w.u16(e.lqer_group);
  }
  w.u8(static_cast<uint8_t>(e.parts.size()));
  for (const PartPlacement& p : e.parts) {
    w.u8(static_cast<uint8_t>(p.kind));
    w.u32(p.section);
    w.u64(p.offset);
    w.u64(p.nbytes);
  }
}

TensorEntry read_entry(ByteReader& r, const std::string& source) {
  TensorEntry e;
  const uint16_t name_len = r.u16("tensor name length");
  e.name = r.str(name_len, "tensor name");
  const std::string what = fmt::format("{}: tensor '{}'", source, e.name);
  const uint8_t kind = r.u8("storage kind");
  PG_CHECK(kind >= 1 && kind <= kMaxStorageKind,
           "{} has storage kind {} which this build does not know (known: 1=f32 2=f16 3=bf16 4=int-row 5=bytes); "
           "the artifact needs a newer pgolf",
           what, kind);
  e.kind = static_cast<StorageKind>(kind);
  e.bits = r.u8("bits");
  e.flags = r.u8("flags");
  PG_CHECK((e.flags & ~kKnownFlags) == 0, "{} has unknown flag bits 0x{:02x} (known: 0x{:02x})", what, e.flags, kKnownFlags);
  PG_CHECK(e.kind == StorageKind::IntRow || e.flags == 0, "{}: flags 0x{:02x} on a {} tensor", what, e.flags,
           storage_kind_name(e.kind));
  e.group = r.u8("group");
  const uint8_t ndim = r.u8("rank");
  PG_CHECK(ndim >= 1 && ndim <= 8, "{}: rank {} not in [1, 8]", what, ndim);
  int64_t numel = 1;
  for (uint8_t i = 0; i < ndim; ++i) {
    const int64_t d = r.i64("dimension");
    PG_CHECK(d >= 0 && d < kMaxElements, "{}: dimension {} out of range", what, d);
    // Saturating product of the nonzero dims, so no prefix product can overflow later either.
    if (d > 0) numel = numel > kMaxElements / d ? kMaxElements : numel * d;
    e.shape.push_back(d);
  }
  PG_CHECK(numel < kMaxElements, "{}: a shape of rank {} with too many elements", what, e.shape.size());
  if (e.flags & kFlagLqer) {
    e.lqer_rank = r.u16("LQER rank");
    e.lqer_group = r.u16("LQER group");
  }
  const uint8_t nparts = r.u8("part count");
  const std::vector<PartKind> expected = expected_parts(e);
  PG_CHECK(nparts == expected.size(), "{}: {} parts, a {} tensor with flags 0x{:02x} has {}", what, nparts,
           storage_kind_name(e.kind), e.flags, expected.size());
  for (uint8_t i = 0; i < nparts; ++i) {
    PartPlacement p;
    const uint8_t k = r.u8("part kind");
    PG_CHECK(k == static_cast<uint8_t>(expected[i]), "{}: part {} has kind {}, expected {} ({})", what, i, k,
             static_cast<int>(expected[i]), part_kind_name(expected[i]));
    p.kind = static_cast<PartKind>(k);
    p.section = r.u32("part section");
    p.offset = r.u64("part offset");
    p.nbytes = r.u64("part size");
    e.parts.push_back(p);
  }
  return e;
}

}  // namespace pgolf::artifact
