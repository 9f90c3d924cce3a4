// `pgolf launch --loopback N -- eval ...` end to end: a tiny run trained on loopback ranks, then scored by `pgolf eval`
// on one process and on 2 and 3 loopback ranks; rank 0's JSON must report the same NLL sum bit for bit.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "tiny_run.h"

using namespace pgolf;

namespace {

void run_cli(const std::vector<std::string>& args) {
  CLI::App app;
  app.require_subcommand(1);
  cli::add_launch_command(app);
  cli::add_eval_command(app);
  std::vector<const char*> argv{"pgolf"};
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(DistEvalCli, LoopbackEvalEqualsOneProcess) {
  const std::string tok = std::string(PGOLF_SOURCE_DIR) + "/../shared/data/tokenizers/fineweb_1024_bpe.model";
  if (!std::filesystem::exists(tok)) GTEST_SKIP() << "tokenizer absent: " << tok;
  test::TinyData d("evalcli");
  train::Config c = d.cfg;
  c.train.iterations = 2;
  c.model.vocab_size = 1024;  // the SentencePiece tokenizer's pieces (byte accounting)
  d.run(2, false, "run", c);
  const std::string run_dir = d.dir + "/run";
  const std::vector<std::string> common{"eval",         "--run-dir", run_dir, "--val",          c.data.val,
                                        "--tokenizer",  tok,         "--device", "cpu",       "--context",
                                        "16",           "--stride",  "4",      "--batch-tokens", "48"};
  for (const bool ttt : {false, true}) {
    std::vector<std::string> args = common;
    if (ttt)
      for (const char* a : {"--ttt", "--ttt-chunk", "128", "--ttt-epochs", "1", "--ttt-batch", "3", "--ttt-lr", "0.02"})
        args.push_back(a);
    std::vector<std::string> one = args;
    one.insert(one.end(), {"--json", d.dir + "/one.json"});
    run_cli(one);
    const nlohmann::json ref = read_json(d.dir + "/one.json");
    EXPECT_EQ(ref["world"].get<int>(), 1);
    for (int world : {2, 3}) {
      const std::string out = d.dir + "/w" + std::to_string(world) + ".json";
      std::vector<std::string> many{"launch", "--gpus", std::to_string(world), "--loopback", "--timeout", "20", "--"};
      many.insert(many.end(), args.begin(), args.end());
      many.insert(many.end(), {"--json", out});
      run_cli(many);
      const nlohmann::json got = read_json(out);
      EXPECT_EQ(got["world"].get<int>(), world);
      EXPECT_EQ(got["scored_tokens"], ref["scored_tokens"]);
      EXPECT_EQ(got["scored_bytes"], ref["scored_bytes"]);
      if (!ttt) {
        EXPECT_EQ(got["nll_nats"].get<double>(), ref["nll_nats"].get<double>()) << "world " << world;  // bit for bit
        EXPECT_EQ(got["val_bpb"].get<double>(), ref["val_bpb"].get<double>()) << "world " << world;
      } else {
        EXPECT_NEAR(got["val_bpb"].get<double>(), ref["val_bpb"].get<double>(), 1e-7 * ref["val_bpb"].get<double>())
            << "world " << world;
      }
    }
  }
  // Modes that cannot be split refuse, naming the reason.
  std::vector<std::string> ngram{"launch", "--gpus", "2", "--loopback", "--timeout", "20", "--"};
  ngram.insert(ngram.end(), common.begin(), common.end());
  ngram.push_back("--ngram");
  const std::string err = test::error_of([&] { run_cli(ngram); });
  EXPECT_NE(err.find("cannot be split over ranks"), std::string::npos) << err;
}
