#include "eval/windows.h"

#include <algorithm>

#include "core/error.h"

namespace pgolf::eval {

Mode parse_mode(const std::string& name) {
  if (name == "plain") return Mode::Plain;
  if (name == "sliding") return Mode::Sliding;
  if (name == "doc") return Mode::Doc;
  PG_FAIL("eval: unknown mode '{}' (expected plain, sliding or doc)", name);
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Plain: return "plain";
    case Mode::Sliding: return "sliding";
    case Mode::Doc: return "doc";
  }
  return "?";
}

void append_sliding_windows(int64_t begin, int64_t end, int64_t context, int64_t stride, std::vector<Window>& out) {
  PG_CHECK(context > 0 && stride > 0 && stride <= context, "eval: stride {} must be in [1, context {}]", stride,
           context);
  const int64_t total = end - begin;  // targets in the sub-stream
  if (total <= 0) return;
  for (int64_t ws = 0; ws == 0 || ws + context - stride < total; ws += stride) {
    Window w;
    w.start = begin + ws;
    w.len = std::min(context, total - ws);
    w.score_from = ws == 0 ? 0 : context - stride;
    out.push_back(w);
  }
}

std::vector<Window> build_windows(Mode mode, const uint16_t* tokens, int64_t n, int64_t context, int64_t stride,
                                  int bos_id) {
  PG_CHECK(n >= 2, "eval: a stream of {} tokens has no target to score", n);
  std::vector<Window> out;
  switch (mode) {
    case Mode::Plain:
      append_sliding_windows(0, n - 1, context, context, out);
      break;
    case Mode::Sliding:
      append_sliding_windows(0, n - 1, context, stride, out);
      break;
    case Mode::Doc: {
      // Document starts: every BOS position, plus position 0 when the stream does not open with BOS.
      int64_t doc_begin = 0;
      for (int64_t i = 1; i < n - 1; ++i) {
        if (tokens[i] != bos_id) continue;
        append_sliding_windows(doc_begin, i, context, stride, out);  // targets doc_begin+1..i (the next BOS)
        doc_begin = i;
      }
      append_sliding_windows(doc_begin, n - 1, context, stride, out);
      break;
    }
  }
  return out;
}

}  // namespace pgolf::eval
