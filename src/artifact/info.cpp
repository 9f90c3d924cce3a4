#include "artifact/info.h"

#include <fmt/format.h>

namespace pgolf::artifact {

std::string describe_artifact(const ArtifactFileInfo& info) {
  std::string out = fmt::format("pgolf artifact v{}: {} bytes (header {} bytes), {} sections, {} tensors\n",
                                info.version, info.file_bytes, info.header_bytes, info.sections.size(),
                                info.tensors.size());
  out += fmt::format("{:<3} {:<12} {:<10} {:>7} {:<10} {:>12} {:>12} {:>7}\n", "#", "section", "compressor", "shuffle",
                     "order", "raw", "stored", "ratio");
  for (size_t i = 0; i < info.sections.size(); ++i) {
    const SectionInfo& s = info.sections[i];
    const double ratio = s.stored_bytes ? static_cast<double>(s.raw_bytes) / static_cast<double>(s.stored_bytes) : 0.0;
    out += fmt::format("{:<3} {:<12} {:<10} {:>7} {:<10} {:>12} {:>12} {:>7.3f}\n", i, s.name,
                       compressor_name(s.compressor), s.shuffle_stride, layout_order_name(s.order), s.raw_bytes,
                       s.stored_bytes, ratio);
  }
  out += fmt::format("{:<40} {:<8} {:>4} {:<18} {:<14} {:>5} {:>10}\n", "tensor", "kind", "bits", "shape", "flags",
                     "group", "raw bytes");
  for (const TensorEntry& e : info.tensors) {
    std::string shape = "[";
    for (size_t i = 0; i < e.shape.size(); ++i) shape += fmt::format("{}{}", i ? ", " : "", e.shape[i]);
    shape += "]";
    std::string flags;
    if (e.flags & kFlagPackedCodes) flags += "packed ";
    if (e.flags & kFlagTransposedCodes) flags += "colmajor ";
    if (e.flags & kFlagLqer) flags += fmt::format("lqer{} ", e.lqer_rank);
    if (flags.empty()) flags = "-";
    uint64_t raw = 0;
    for (const PartPlacement& p : e.parts) raw += p.nbytes;
    out += fmt::format("{:<40} {:<8} {:>4} {:<18} {:<14} {:>5} {:>10}\n", e.name, storage_kind_name(e.kind),
                       e.kind == StorageKind::IntRow ? std::to_string(e.bits) : std::string("-"), shape, flags, e.group,
                       raw);
  }
  return out;
}

}  // namespace pgolf::artifact
