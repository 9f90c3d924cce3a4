// Reading a run directory: metrics events (resume rewinds, bad lines), pack.json and eval JSON.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "report/report.h"
#include "report/run_data.h"
#include "report_test_util.h"

using namespace pgolf::report;
namespace fs = std::filesystem;

TEST(ReportRunData, TensorGroupAndLayer) {
  EXPECT_EQ(tensor_group("blocks.3.attn.c_q.weight"), (std::pair<std::string, int>{"blocks.*.attn.c_q.weight", 3}));
  EXPECT_EQ(tensor_group("tok_emb.weight"), (std::pair<std::string, int>{"tok_emb.weight", -1}));
  EXPECT_EQ(tensor_group("blocks.12.mlp.0"), (std::pair<std::string, int>{"blocks.*.mlp.0", 12}));  // only the first index
}

TEST(ReportRunData, ResumeReplacesRedoneSteps) {
  RunData r;
  for (int s = 1; s <= 5; ++s)
    ASSERT_TRUE(apply_metrics_line(r, fmt::format(R"({{"type":"train","step":{},"train_loss":{}}})", s, 10 - s)));
  ASSERT_TRUE(apply_metrics_line(r, R"({"type":"val","step":4,"val_loss":7.5,"val_bpb":null})"));
  // Resumed from the step-3 checkpoint: validation at 3 again, then steps 4.. again.
  ASSERT_TRUE(apply_metrics_line(r, R"({"type":"val","step":3,"val_loss":7.9})"));
  ASSERT_TRUE(apply_metrics_line(r, R"({"type":"train","step":4,"train_loss":1.0})"));
  ASSERT_EQ(r.train.size(), 4u);
  EXPECT_EQ(r.train.back().step, 4);
  EXPECT_EQ(r.train.back().train_loss, 1.0);
  ASSERT_EQ(r.val.size(), 1u);
  EXPECT_EQ(r.val[0].step, 3);
  EXPECT_TRUE(std::isnan(r.val[0].val_bpb));
  EXPECT_FALSE(apply_metrics_line(r, R"({"type":"train","step":)"));  // truncated last line
  EXPECT_FALSE(apply_metrics_line(r, "[1,2]"));
  EXPECT_TRUE(apply_metrics_line(r, ""));
  EXPECT_TRUE(apply_metrics_line(r, R"({"type":"something_new","x":1})"));  // unknown events are ignored
  ASSERT_TRUE(apply_metrics_line(r, R"({"type":"summary","step":4})"));
  EXPECT_TRUE(r.summary.is_object());
}

TEST(ReportRunData, PackJsonVariants) {
  const auto j = nlohmann::json::parse(R"({"artifact_bytes":100,"tensors":{
      "blocks.0.attn.q":{"stored_bytes":30,"codec":"zstd","quant_rel_error":0.1},
      "blocks.1.attn.q":{"bytes":20,"codec":"zstd","group":"Q","layer":7}},
      "sections":[{"name":"zstd","stored_bytes":40},{"name":"lzma","bytes":9},{"name":"zstd","bytes":1}]})");
  const PackInfo p = parse_pack_json(j);
  EXPECT_EQ(p.total_bytes, 100);
  ASSERT_EQ(p.tensors.size(), 2u);
  EXPECT_EQ(p.tensors[0].name, "blocks.0.attn.q");
  EXPECT_EQ(p.tensors[0].group, "blocks.*.attn.q");
  EXPECT_EQ(p.tensors[0].rel_error, 0.1);
  EXPECT_EQ(p.tensors[1].group, "Q");
  EXPECT_EQ(p.tensors[1].layer, 7);
  ASSERT_EQ(p.bytes_by_compressor.size(), 2u);  // from sections, summed by name
  EXPECT_EQ(p.bytes_by_compressor[0], (std::pair<std::string, double>{"zstd", 41}));
  EXPECT_EQ(p.bytes_by_compressor[1], (std::pair<std::string, double>{"lzma", 9}));
  const PackInfo q = parse_pack_json(nlohmann::json::parse(R"({"tensors":[{"name":"a","bytes":5,"compressor":"x"},{"name":"b","bytes":6,"compressor":"x"}]})"));
  ASSERT_EQ(q.bytes_by_compressor.size(), 1u);  // no sections: summed from the tensors
  EXPECT_EQ(q.bytes_by_compressor[0].second, 11);
  EXPECT_TRUE(std::isnan(q.total_bytes));
}

// The field names pgolf pack and pgolf eval --json write today (from a 2026-12-02 device run).
TEST(ReportRunData, ReadsPgolfPackAndEvalJson) {
  const PackInfo p = parse_pack_json(nlohmann::json::parse(R"({"artifact":"runs/x/final_model.pgolf",
      "artifact_bytes":7439764,"code_bytes":250851,"counted_bytes":7690615,"limit":16000000,"within_limit":true,
      "sections":[{"name":"codes","compressor":"brotli-11","raw_bytes":17039360,"stored_bytes":7362590},
                  {"name":"aux","compressor":"brotli-11","raw_bytes":117078,"stored_bytes":68944}],
      "tensors":[{"name":"tok_emb.weight","role":"embed","bits":7,"numel":524288,"rel_error":0.0779,
                  "rel_proxy_error":0.0175}]})"));
  EXPECT_EQ(p.total_bytes, 7439764);
  EXPECT_EQ(p.code_bytes, 250851);
  EXPECT_EQ(p.counted_bytes, 7690615);
  EXPECT_EQ(p.limit_bytes, 16000000);
  ASSERT_EQ(p.tensors.size(), 1u);
  EXPECT_EQ(p.tensors[0].bits, 7);
  EXPECT_DOUBLE_EQ(p.tensors[0].proxy_error, 0.0175);
  ASSERT_EQ(p.bytes_by_compressor.size(), 1u);
  EXPECT_EQ(p.bytes_by_compressor[0].second, 7362590 + 68944);
  // pgolf pack's tensors carry no stored bytes: the codes section is shared out by numel x bits.
  const PackInfo shared = parse_pack_json(nlohmann::json::parse(R"({"sections":[{"name":"codes","stored_bytes":300},
      {"name":"aux","stored_bytes":7}],"tensors":[{"name":"a","numel":100,"bits":6},{"name":"b","numel":100,"bits":12}]})"));
  EXPECT_TRUE(shared.tensor_bytes_estimated);
  EXPECT_DOUBLE_EQ(shared.tensors[0].bytes, 100);
  EXPECT_DOUBLE_EQ(shared.tensors[1].bytes, 200);
  EXPECT_TRUE(p.tensor_bytes_estimated);
  EXPECT_DOUBLE_EQ(p.tensors[0].bytes, 7362590);  // the only tensor listed takes the whole codes section
  // Without counted_bytes (older pack.json): artifact + code.
  EXPECT_EQ(parse_pack_json(nlohmann::json::parse(R"({"artifact_bytes":10,"code_bytes":5})")).counted_bytes, 15);

  const EvalInfo e = parse_eval_json(nlohmann::json::parse(R"({"mode":"sliding","context":1024,"stride":64,
      "val_bpb":1.548946,"phase_seconds":{"adapt":0.0,"load":0.333,"prepare":0.0018,"score":3.297}})"), "eval-artifact.json");
  ASSERT_EQ(e.phases.size(), 4u);
  EXPECT_EQ(e.phases[3].name, "score");
  EXPECT_DOUBLE_EQ(e.phases[3].seconds, 3.297);
  bool has_bpb = false;
  for (const auto& [k, v] : e.scalars) has_bpb |= k == "val_bpb";
  EXPECT_TRUE(has_bpb);
}

TEST(ReportRunData, EvalPhasesAsArrayOrObject) {
  const EvalInfo a = parse_eval_json(nlohmann::json::parse(
      R"({"val_bpb":1.2,"mode":"sliding","phases":[{"name":"load","seconds":2},{"phase":"score","ms":500}]})"), "eval.json");
  ASSERT_EQ(a.phases.size(), 2u);
  EXPECT_EQ(a.phases[1].name, "score");
  EXPECT_DOUBLE_EQ(a.phases[1].seconds, 0.5);
  EXPECT_EQ(a.scalars, (std::vector<std::pair<std::string, std::string>>{{"mode", "sliding"}, {"val_bpb", "1.2"}}));
  const EvalInfo b = parse_eval_json(nlohmann::json::parse(
      R"({"timings":{"load_ms":1500,"ttt_s":30,"score":{"seconds":4}},"stats":{"tokens":10}})"), "eval2.json");
  ASSERT_EQ(b.phases.size(), 3u);
  EXPECT_EQ(b.phases[0].name, "load");
  EXPECT_DOUBLE_EQ(b.phases[0].seconds, 1.5);
  EXPECT_EQ(b.phases[2].name, "ttt");
  EXPECT_DOUBLE_EQ(b.phases[2].seconds, 30);
  EXPECT_EQ(b.scalars, (std::vector<std::pair<std::string, std::string>>{{"stats.tokens", "10"}}));
}

TEST(ReportRunData, LoadsASyntheticRun) {
  const std::string dir = test_util::make_synthetic_run("load", 40);
  {
    std::ofstream f(dir + "/metrics.jsonl", std::ios::app);
    f << R"({"type":"train","st)";  // a run killed mid-write
  }
  const RunData r = load_run(dir);
  EXPECT_EQ(r.train.size(), 40u);
  ASSERT_EQ(r.val.size(), 5u);
  EXPECT_TRUE(r.val.back().final);
  EXPECT_EQ(r.checkpoints.size(), 1u);
  EXPECT_TRUE(r.summary.is_object());
  EXPECT_EQ(r.momentum, 0.95);
  EXPECT_EQ(r.momentum_warmup_steps, 20);
  EXPECT_EQ(r.pack.tensors.size(), 17u);
  EXPECT_EQ(r.pack.limit_bytes, 16000000);
  ASSERT_EQ(r.evals.size(), 1u);
  ASSERT_EQ(r.evals[0].phases.size(), 3u);
  EXPECT_DOUBLE_EQ(r.evals[0].phases[2].seconds, 120);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("unreadable"), std::string::npos);
  fs::remove_all(dir);
}

TEST(ReportRunData, EmptyDirGivesAReportWithNotes) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("pgolf_report_empty_{}", ::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  const RunData r = load_run(dir.string());
  EXPECT_EQ(r.warnings.size(), 2u);  // no metrics.jsonl, no config.toml
  const std::string html = build_run_report(r);
  EXPECT_NE(html.find("no metrics.jsonl"), std::string::npos);
  EXPECT_NE(html.find("no data"), std::string::npos);
  EXPECT_THROW(load_run((dir / "missing").string()), pgolf::Error);
  fs::remove_all(dir);
}

TEST(ReportRunData, WritesReportAtomicallyAndEscapes) {
  const std::string dir = test_util::make_synthetic_run("write", 30);
  const std::string path = write_run_report(dir);
  EXPECT_EQ(path, dir + "/report.html");
  std::ifstream f(path);
  const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(html.find("<script"), std::string::npos);  // the config's <script> is text, not markup
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;not bold&lt;/b&gt; &amp; done"), std::string::npos);
  EXPECT_GE(std::count(html.begin(), html.end(), '\n'), 10);
  for (const char* id : {"summary", "loss", "schedules", "throughput", "artifact", "eval", "config", "log"})
    EXPECT_NE(html.find(fmt::format("<section id=\"{}\">", id)), std::string::npos) << id;
  for (const auto& e : fs::directory_iterator(dir))  // no temporary left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  const std::string dir2 = test_util::make_synthetic_run("write2", 50, 0.9);
  const std::string out = dir + "/compare.html";
  write_comparison_report({dir, dir2}, out);
  std::ifstream g(out);
  const std::string cmp((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  EXPECT_NE(cmp.find("2 runs compared"), std::string::npos);
  EXPECT_NE(cmp.find("pgolf_report_write2_"), std::string::npos);
  EXPECT_EQ(cmp.find("<script"), std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(dir2);
}
