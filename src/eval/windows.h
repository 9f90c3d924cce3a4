#pragma once
// Which positions each forward pass sees and scores (TECHNIQUES.md §3.3, §8.1). Every evaluation
// mode is a list of windows over the token stream; one scorer (scorer.h) runs them all.
//
// Positions: tokens[0..N). Target position t (1 <= t < N) is tokens[t] predicted from tokens[0..t).
// A window feeds ids = tokens[start, start+len) and targets = tokens[start+1, start+len+1); its rows
// [score_from, len) are scored, i.e. the target positions [first_target(), end_target()).
#include <cstdint>
#include <string>
#include <vector>

namespace pgolf::eval {

enum class Mode { Plain, Sliding, Doc };
Mode parse_mode(const std::string& name);  // "plain" | "sliding" | "doc"
const char* mode_name(Mode m);

struct Window {
  int64_t start = 0;       // first input position
  int64_t len = 0;         // rows fed (<= context)
  int64_t score_from = 0;  // first scored row
  int64_t first_target() const { return start + score_from + 1; }
  int64_t end_target() const { return start + len + 1; }  // exclusive
  int64_t scored() const { return len - score_from; }
};

// Sliding windows over the sub-stream whose inputs are positions [begin, end) (targets begin+1..end):
// window starts ws = 0, s, 2s, ... (relative to begin) while ws == 0 or ws + T - s < end - begin; the
// first window scores all its rows, later ones only rows [T - s, len). stride == context gives the
// non-overlapping rows of the baseline. Every target begin+1..end is scored exactly once.
void append_sliding_windows(int64_t begin, int64_t end, int64_t context, int64_t stride, std::vector<Window>& out);

// The windows of one mode over a stream of n tokens (n >= 2).
//   plain:   rows of `context`, every target scored once with 0..T-1 context (stride ignored).
//   sliding: append_sliding_windows over the whole stream.
//   doc:     the stream cut before every BOS (a document's targets run to and include the next BOS,
//            §3.2 note ii); sliding windows inside each document, so no window crosses a document start.
std::vector<Window> build_windows(Mode mode, const uint16_t* tokens, int64_t n, int64_t context, int64_t stride,
                                  int bos_id);

}  // namespace pgolf::eval
