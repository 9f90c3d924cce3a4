#include "artifact/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "artifact/byte_io.h"
#include "artifact/tensor_codec.h"
#include "core/error.h"

namespace pgolf::artifact {

namespace {

struct PartRef {
  size_t tensor, part;
};

struct SectionPlan {
  std::string name;
  std::vector<PartRef> parts;
};

struct SectionResult {
  SectionReport report;
  std::vector<uint8_t> stored;
  uint64_t raw_hash = 0;
  std::vector<uint64_t> offsets;  // parallel to plan.parts, for the chosen order
};

std::vector<SectionPlan> plan_sections(const Artifact& a, const std::vector<std::vector<EncodedPart>>& enc,
                                       bool per_group) {
  SectionPlan aux{"aux", {}};
  std::map<int, SectionPlan> codes;
  for (size_t t = 0; t < enc.size(); ++t)
    for (size_t p = 0; p < enc[t].size(); ++p) {
      if (enc[t][p].kind != PartKind::Codes) {
        aux.parts.push_back({t, p});
        continue;
      }
      const int g = per_group ? a.tensors[t].group : -1;
      auto& s = codes[g];
      if (s.name.empty()) s.name = g < 0 ? "codes" : fmt::format("codes.g{}", g);
      s.parts.push_back({t, p});
    }
  std::vector<SectionPlan> out;
  for (auto& [g, s] : codes) out.push_back(std::move(s));
  if (!aux.parts.empty()) out.push_back(std::move(aux));
  return out;
}

std::vector<size_t> order_indices(const SectionPlan& s, const std::vector<std::vector<EncodedPart>>& enc, LayoutOrder o) {
  std::vector<size_t> idx(s.parts.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  if (o == LayoutOrder::SizeDescending)
    std::stable_sort(idx.begin(), idx.end(), [&](size_t x, size_t y) {
      return enc[s.parts[x].tensor][s.parts[x].part].bytes.size() > enc[s.parts[y].tensor][s.parts[y].part].bytes.size();
    });
  return idx;
}

struct Layout {
  LayoutOrder order;
  bool transposed;
  std::vector<uint8_t> raw;
  std::vector<uint64_t> offsets;  // parallel to the plan's parts
  std::vector<CodeMatrix> matrices;  // int8 code matrices in raw, as laid out (for the cm coder)
};

struct Trial {
  size_t layout;
  int stride;
  Compressor c;
};

// One section's candidate layouts and trials, and (after the pool ran) the winning trial.
struct SectionJob {
  const SectionPlan* plan = nullptr;
  std::vector<Layout> layouts;
  std::vector<Trial> trials;
  size_t best_trial = 0;
  bool have_best = false;
  std::vector<uint8_t> best;
};

SectionJob prepare_section(const SectionPlan& s, const Artifact& a, const std::vector<std::vector<EncodedPart>>& enc,
                           const SolverOptions& opt) {
  const bool can_transpose = std::any_of(s.parts.begin(), s.parts.end(), [&](const PartRef& r) {
    return enc[r.tensor][r.part].kind == PartKind::Codes && can_transpose_codes(a.tensors[r.tensor]);
  });
  std::vector<LayoutOrder> orders = opt.orders;
  std::vector<bool> transposes;
  for (bool t : opt.transposed_codes)
    if ((!t || can_transpose) && std::find(transposes.begin(), transposes.end(), t) == transposes.end())
      transposes.push_back(t);
  if (transposes.empty()) transposes.push_back(false);
  std::vector<int> strides = opt.shuffle_strides;
  std::vector<Compressor> compressors = opt.compressors;
  if (auto it = opt.pinned.find(s.name); it != opt.pinned.end()) {
    orders = {it->second.order};
    transposes = {it->second.transposed_codes && can_transpose};
    strides = {it->second.shuffle_stride};
    compressors = {it->second.compressor};
  }
  SectionJob job;
  job.plan = &s;
  for (LayoutOrder o : orders)
    for (bool tr : transposes) {
      Layout l{o, tr, {}, std::vector<uint64_t>(s.parts.size()), {}};
      for (size_t i : order_indices(s, enc, o)) {
        const PartRef& ref = s.parts[i];
        const EncodedPart& part = enc[ref.tensor][ref.part];
        const bool flip = tr && part.kind == PartKind::Codes && can_transpose_codes(a.tensors[ref.tensor]);
        const std::vector<uint8_t> t = flip ? transposed_codes(a.tensors[ref.tensor]) : std::vector<uint8_t>{};
        const std::vector<uint8_t>& bytes = flip ? t : part.bytes;
        l.offsets[i] = l.raw.size();
        const StoredTensor& st = a.tensors[ref.tensor];
        if (part.kind == PartKind::Codes && !st.pack_bits)
          l.matrices.push_back({l.raw.size(), static_cast<uint64_t>(flip ? st.q.cols : st.q.rows),
                                static_cast<uint64_t>(flip ? st.q.rows : st.q.cols)});
        l.raw.insert(l.raw.end(), bytes.begin(), bytes.end());
      }
      job.layouts.push_back(std::move(l));
    }
  const bool has_stride_1 = std::find(strides.begin(), strides.end(), 1) != strides.end();
  for (size_t l = 0; l < job.layouts.size(); ++l)
    for (int st : strides)
      for (Compressor c : compressors) {
        // cm models code matrices only unshuffled; shuffled, it would byte-model them (slowly, and worse).
        if (c == Compressor::Cm && st != 1 && has_stride_1 && !job.layouts[l].matrices.empty()) continue;
        job.trials.push_back({l, st, c});
      }
  return job;
}

// Runs every trial of every section on one thread pool (sections compress in parallel too, which
// matters when choices are pinned and each section has a single trial).
void run_trials(std::vector<SectionJob>& jobs, int threads) {
  std::vector<std::pair<size_t, size_t>> tasks;  // (job, trial)
  for (size_t j = 0; j < jobs.size(); ++j)
    for (size_t t = 0; t < jobs[j].trials.size(); ++t) tasks.emplace_back(j, t);
  std::mutex mu;
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  auto worker = [&] {
    for (size_t i = next++; i < tasks.size(); i = next++) {
      try {
        SectionJob& job = jobs[tasks[i].first];
        const size_t ti = tasks[i].second;
        const Trial& t = job.trials[ti];
        const std::vector<uint8_t>& raw = job.layouts[t.layout].raw;
        std::vector<uint8_t> out = t.stride == 1 ? compress(t.c, raw, job.layouts[t.layout].matrices)
                                                 : compress(t.c, shuffle_bytes(raw, t.stride));
        std::lock_guard<std::mutex> lock(mu);
        // Smallest wins; equal sizes go to the earlier trial so the result never depends on timing.
        if (!job.have_best || out.size() < job.best.size() || (out.size() == job.best.size() && ti < job.best_trial)) {
          job.best = std::move(out);
          job.best_trial = ti;
          job.have_best = true;
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure) failure = std::current_exception();
      }
    }
  };
  int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n = std::max(1, std::min<int>(n, static_cast<int>(tasks.size())));
  std::vector<std::thread> pool;
  for (int i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (failure) std::rethrow_exception(failure);
}

SectionResult finish_section(SectionJob& job) {
  PG_CHECK(job.have_best, "artifact solver: section '{}' produced no result", job.plan->name);
  const Trial& t = job.trials[job.best_trial];
  Layout& l = job.layouts[t.layout];
  SectionResult r;
  r.report = SectionReport{job.plan->name,
                           t.c,
                           t.stride,
                           l.order,
                           l.transposed,
                           l.raw.size(),
                           job.best.size(),
                           static_cast<int>(job.plan->parts.size()),
                           static_cast<int>(job.trials.size())};
  r.raw_hash = xxh64(l.raw);
  r.offsets = std::move(l.offsets);
  r.stored = std::move(job.best);
  return r;
}

void write_header(ByteWriter& w, const Artifact& a, const std::vector<SectionResult>& sections,
                  const std::vector<TensorEntry>& entries, uint64_t header_bytes, uint64_t file_bytes) {
  w.bytes(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kMagic), 8));
  uint32_t version = kMinReadVersion;  // the oldest version whose readers know every compressor used
  for (const SectionResult& s : sections) version = std::max(version, min_format_version(s.report.compressor));
  w.u32(version);
  w.u32(static_cast<uint32_t>(header_bytes));
  w.u64(file_bytes);
  w.u32(static_cast<uint32_t>(a.config_json.size()));
  w.str(a.config_json);
  w.u32(static_cast<uint32_t>(sections.size()));
  uint64_t offset = header_bytes;
  for (const SectionResult& s : sections) {
    w.u8(static_cast<uint8_t>(s.report.name.size()));
    w.str(s.report.name);
    w.u8(static_cast<uint8_t>(s.report.compressor));
    w.u8(static_cast<uint8_t>(s.report.shuffle_stride));
    w.u8(static_cast<uint8_t>(s.report.order));
    w.u8(0);
    w.u64(offset);
    w.u64(s.stored.size());
    w.u64(s.report.raw_bytes);
    w.u64(xxh64(s.stored));
    w.u64(s.raw_hash);
    offset += s.stored.size();
  }
  w.u32(static_cast<uint32_t>(entries.size()));
  for (const TensorEntry& e : entries) write_entry(w, e);
}

}  // namespace

std::string_view layout_order_name(LayoutOrder o) {
  return o == LayoutOrder::Given ? "given" : o == LayoutOrder::SizeDescending ? "size-desc" : "?";
}

std::vector<uint8_t> serialize_artifact(const Artifact& a, const SolverOptions& opt, WriteReport* report) {
  a.validate();
  PG_CHECK(!opt.compressors.empty() && !opt.shuffle_strides.empty() && !opt.orders.empty(),
           "artifact solver: compressors, shuffle strides and orders must each list at least one choice");
  PG_CHECK(a.config_json.size() < (1u << 31), "artifact config is too large ({} bytes)", a.config_json.size());
  PG_CHECK(a.config_json.empty() || nlohmann::json::accept(a.config_json),
           "artifact config is not valid JSON; readers would reject the file");
  std::vector<std::vector<EncodedPart>> enc;
  std::vector<TensorEntry> entries;
  for (const StoredTensor& t : a.tensors) {
    enc.push_back(encode_tensor(t));
    entries.push_back(entry_for(t));
  }
  const std::vector<SectionPlan> plans = plan_sections(a, enc, opt.codes_section_per_group);
  std::vector<SectionJob> jobs;
  for (const SectionPlan& plan : plans) jobs.push_back(prepare_section(plan, a, enc, opt));
  run_trials(jobs, opt.threads);
  std::vector<SectionResult> results;
  for (uint32_t si = 0; si < plans.size(); ++si) {
    results.push_back(finish_section(jobs[si]));
    for (size_t i = 0; i < plans[si].parts.size(); ++i) {
      const PartRef& ref = plans[si].parts[i];
      PartPlacement& p = entries[ref.tensor].parts[ref.part];
      p.section = si;
      p.offset = results.back().offsets[i];
      p.nbytes = enc[ref.tensor][ref.part].bytes.size();  // transposing keeps the size
      if (results.back().report.transposed_codes && p.kind == PartKind::Codes &&
          can_transpose_codes(a.tensors[ref.tensor]))
        entries[ref.tensor].flags |= kFlagTransposedCodes;
    }
  }
  // Two passes: the header's own size goes into it, and section offsets depend on it.
  ByteWriter probe;
  write_header(probe, a, results, entries, 0, 0);
  const uint64_t header_bytes = probe.size() + 8;  // + trailing xxh64
  uint64_t file_bytes = header_bytes;
  for (const auto& s : results) file_bytes += s.stored.size();
  ByteWriter w;
  write_header(w, a, results, entries, header_bytes, file_bytes);
  w.u64(xxh64(w.buffer()));
  PG_CHECK(w.size() == header_bytes, "artifact writer: header size changed between passes ({} vs {})", w.size(),
           header_bytes);
  std::vector<uint8_t>& out = w.buffer();
  out.reserve(file_bytes);
  for (const auto& s : results) out.insert(out.end(), s.stored.begin(), s.stored.end());
  if (report) {
    report->sections.clear();
    for (const auto& s : results) report->sections.push_back(s.report);
    report->header_bytes = header_bytes;
    report->file_bytes = file_bytes;
  }
  return std::move(out);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  PG_CHECK(fd >= 0, "cannot create '{}': {}", tmp, std::strerror(errno));
  size_t done = 0;
  bool ok = true;
  std::string err;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      err = std::strerror(errno);
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = std::strerror(errno);
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = std::strerror(errno);
  }
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = std::strerror(errno);
  }
  if (!ok) {
    std::remove(tmp.c_str());
    PG_FAIL("writing '{}' failed ({}); any previous file there is untouched", path, err);
  }
}

WriteReport write_artifact_file(const Artifact& a, const std::string& path, const SolverOptions& opt) {
  WriteReport report;
  const std::vector<uint8_t> bytes = serialize_artifact(a, opt, &report);
  write_file_atomic(path, bytes);
  return report;
}

SolverOptions pin_choices(SolverOptions base, const WriteReport& report) {
  for (const SectionReport& s : report.sections) base.pinned[s.name] = s.choice();
  return base;
}

uint64_t plain_brotli_bytes(const Artifact& a) {
  std::vector<uint8_t> all;
  for (const StoredTensor& t : a.tensors)
    for (const EncodedPart& p : encode_tensor(t)) all.insert(all.end(), p.bytes.begin(), p.bytes.end());
  return compress(Compressor::Brotli11, all).size();
}

}  // namespace pgolf::artifact
