#pragma once
// Streaming document readers for `pgolf data encode` / `tokenizer`.
//
// Formats (chosen from the file name unless forced):
//   *.jsonl, *.json       one JSON object per line; the document is a string field (default "text")
//   *.txt, *.text         plain UTF-8 text, documents = paragraphs separated by blank lines (or the whole file, see
//                         TextSplit), optionally merged into documents of about txt_chunk_bytes
// each optionally compressed: .gz (also dictzip .dz), .xz, .zst. Lines split on '\n' only.
// Reading (decompression + line splitting) is sequential and constant-memory; parsing the JSON and validating
// UTF-8 happen in extract_document(), which the encoder runs on its worker threads.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace pgolf::data {

enum class InputFormat { Auto, Text, Jsonl };
enum class TextSplit { Paragraph, File };

struct ReaderOptions {
  std::string field = "text";
  InputFormat format = InputFormat::Auto;
  TextSplit text_split = TextSplit::Paragraph;
  int64_t txt_chunk_bytes = 0;  // > 0: merge consecutive paragraphs until a document reaches this many bytes
};

// One unit read from an input: a JSON line, or a text document. `line` is the 1-based line where it starts.
struct RawRecord {
  std::string data;
  bool is_json = false;
  uint32_t source = 0;  // index into RecordReader::sources()
  int64_t line = 0;
};

// Expands files, folders (recursively: every file with a recognised extension) and globs, each pattern's matches
// sorted, in the order given. Fails naming a pattern that matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns, InputFormat forced = InputFormat::Auto);
InputFormat detect_format(const std::string& path);  // Auto when unrecognised

// A source of decompressed bytes.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual size_t read(char* buf, size_t n) = 0;  // 0 at end of input; throws on corrupt data naming the file
};
std::unique_ptr<ByteSource> open_input(const std::string& path);  // by extension: .gz/.dz, .xz, .zst, else plain

class RecordReader {
 public:
  RecordReader(std::vector<std::string> files, ReaderOptions opt);
  ~RecordReader();
  bool next(RawRecord& out);
  const std::vector<std::string>& sources() const { return files_; }
  int64_t bytes_read() const { return bytes_read_; }  // decompressed bytes consumed so far

 private:
  bool next_line(std::string& line);  // false at end of the current file
  bool open_next_file();

  std::vector<std::string> files_;
  ReaderOptions opt_;
  size_t file_index_ = 0;
  bool open_ = false;
  InputFormat cur_format_ = InputFormat::Auto;
  std::unique_ptr<ByteSource> src_;
  std::string buf_;
  size_t buf_pos_ = 0;
  bool eof_ = false;
  int64_t line_no_ = 0;
  int64_t bytes_read_ = 0;
};

// Turns a record into document text, or says why it is bad.
enum class DocStatus { Ok, BadJson, MissingField, BadUtf8, Empty };
struct ExtractedDoc {
  DocStatus status = DocStatus::Ok;
  std::string text;
  std::string error;  // "file:line: what", set when status != Ok
};
ExtractedDoc extract_document(RawRecord&& rec, const std::string& source_name, const std::string& field);
const char* doc_status_name(DocStatus s);

bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

}  // namespace pgolf::data
