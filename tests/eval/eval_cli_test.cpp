// `kllens eval` through the CLI: --uniform bf16 on bf16 weights equals `kllens ppl`, a plan file
// is read and checked against the model, bad input fails with one error line.
#include <gtest/gtest.h>

#include "models/model.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/text.h"
#include "test_util.h"

namespace kllens {
namespace {

using json = nlohmann::json;

class EvalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = test::fresh_temp_dir("eval-cli");
    text = (dir / "text.txt").string();
    test::write_file(text, select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44));
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write_plan(const json& components) {
    const json plan = {{"format", "kllens-plan"},
                       {"version", 1},
                       {"model", {{"params", 2800896}}},
                       {"method", "optimal"},
                       {"metric", "kl"},
                       {"budget", json::object()},
                       {"components", components},
                       {"predicted_metric_sum", 0.0},
                       {"bytes", 0},
                       {"bits_per_weight", 0.0},
                       {"params", 2800896}};
    const std::string path = (dir / "plan.json").string();
    test::write_file(path, plan.dump());
    return path;
  }
  std::vector<std::string> eval_args(std::vector<std::string> extra) {
    std::vector<std::string> a = {"eval", model, "--text", text, "--ctx", "64", "--windows", "2"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  std::filesystem::path dir;
  std::string text, model = test::repo_path("data/models/demo-mamba");
};

// The GGUF tensor data of the bf16 demo checkpoint in llama.cpp's layout: bf16 components, F32
// for conv1d and every tensor that is not a component.
int64_t bf16_file_bytes(const std::string& folder) {
  const auto m = load_model(folder);
  int64_t bytes = 0;
  for (const auto& p : m->weights().all())
    bytes += (p->is_component() && p->role != Role::kConv1d ? 2 : 4) * p->numel();
  return bytes;
}

TEST_F(EvalCli, UniformBf16MatchesPpl) {
  const auto e = test::run_cli(eval_args({"--uniform", "bf16", "--uniform-all", "--json"}));
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json j = json::parse(e.out);
  const auto p = test::run_cli({"ppl", model, "--text", text, "--ctx", "64", "--windows", "2", "--json"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const json q = json::parse(p.out);
  EXPECT_EQ(j["kl"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(j["kl"]["max"].get<double>(), 0.0);
  EXPECT_EQ(j["top1"].get<double>(), 1.0);
  EXPECT_EQ(j["ppl"].get<double>(), q["ppl"].get<double>());
  EXPECT_EQ(j["ppl_fp"].get<double>(), q["ppl"].get<double>());
  EXPECT_EQ(j["tokens"], q["tokens"]);
  EXPECT_EQ(j["bytes"].get<int64_t>(), bf16_file_bytes(model));
  EXPECT_GT(j["bits_per_weight"].get<double>(), 16.0);
  for (const char* k : {"stderr", "median", "p90", "p99"}) EXPECT_TRUE(j["kl"].contains(k)) << k;
}

TEST_F(EvalCli, PlanAndUniformHappyPaths) {
  const std::string plan = write_plan({{"backbone.layers.0.mixer.in_proj.weight", "int4:g32"},
                                       {"backbone.layers.1.mixer.x_proj.weight", "q8_0"}});
  const auto e = test::run_cli(eval_args({"--plan", plan, "--json"}));
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json j = json::parse(e.out);
  EXPECT_GT(j["kl"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(j["components_changed"], 2);
  // The bf16 file's tensor data, less what the two components save.
  const int64_t want = bf16_file_bytes(model) - 2 * 1024 * 256 + 1024 * 256 * 9 / 16 - 2 * 48 * 512 + 48 * 512 / 32 * 34;
  EXPECT_EQ(j["bytes"].get<int64_t>(), want);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);

  const auto h = test::run_cli(eval_args({"--uniform", "q4_0"}));
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_NE(h.out.find("Final estimate: PPL = "), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("conv1d components stay bf16"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("backbone.layers.0.mixer.dt_proj.weight"), std::string::npos)
      << "rows of 16 cannot be q4_0 and are listed (stored f16)";
}

TEST_F(EvalCli, BadInput) {
  auto expect_error = [](const std::vector<std::string>& args, int code, const std::string& text) {
    const auto r = test::run_cli(args);
    ASSERT_FALSE(r.signaled);
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
  };
  const std::string plan = write_plan({{"backbone.layers.7.mixer.in_proj.weight", "int4:g32"}});
  expect_error(eval_args({"--plan", plan}), 1, "backbone.layers.7.mixer.in_proj.weight");
  expect_error(eval_args({"--plan", (dir / "none.json").string()}), 1, "none.json");
  test::write_file(dir / "bad.json", "{\"format\": \"kllens-plan\", \"version\": 1,");
  expect_error(eval_args({"--plan", (dir / "bad.json").string()}), 1, "malformed JSON");
  expect_error(eval_args({"--uniform", "int33"}), 2, "int33");
  expect_error(eval_args({"--uniform-all"}), 2, "--uniform");
  expect_error(eval_args({"--plan", plan, "--uniform", "bf16"}), 2, "excludes");
  expect_error({"eval", model, "--uniform", "bf16"}, 2, "--text");
  EXPECT_EQ(test::run_cli({"eval", "--help"}).exit_code, 0);
}

}  // namespace
}  // namespace kllens
