// `kllens plan` end to end on a real sensitivity file of demo-mamba (1 window of 64 tokens),
// and the plans it writes evaluated by `kllens eval`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/text.h"
#include "plan/plan_io.h"
#include "test_util.h"

namespace kllens {
namespace {

using json = nlohmann::json;

class PlanCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(test::fresh_temp_dir("plan-cli"));
    text_ = (*dir_ / "text.txt").string();
    sens_ = (*dir_ / "sens.json").string();
    const std::string wiki = read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw"));
    test::write_file(text_, select_articles(wiki, 44, 44));
    const auto r = test::run_cli({"sensitivity", model(), "--calib", text_, "--ctx", "64", "--windows", "1",
                                  "--schemes", "int4:g32,int8:g32", "--out", sens_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string model() { return test::repo_path("data/models/demo-mamba"); }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }
  static json params_json() { return json::parse(test::read_file(sens_))["model"]; }

  static std::filesystem::path* dir_;
  static std::string text_, sens_;
};
std::filesystem::path* PlanCli::dir_ = nullptr;
std::string PlanCli::text_, PlanCli::sens_;

TEST_F(PlanCli, OptimalWithinBudgetAndEvalAgreesOnSize) {
  const std::string out = path("optimal.json");
  const auto r = test::run_cli({"plan", sens_, "--avg-bits", "7", "--metric", "kl", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("optimal:"), std::string::npos) << r.out;
  const Plan plan = read_plan_json(out);
  const int64_t params = params_json()["params"].get<int64_t>();
  EXPECT_EQ(plan.params, params);
  EXPECT_LE(plan.bytes, static_cast<int64_t>(std::floor(7.0 * static_cast<double>(params) / 8)));
  EXPECT_LE(plan.bits_per_weight, 7.0);
  EXPECT_EQ(plan.method, "optimal");
  EXPECT_EQ(plan.budget["bytes"].get<int64_t>(), static_cast<int64_t>(std::floor(7.0 * params / 8)));
  EXPECT_EQ(plan.sensitivity["sha256"].get<std::string>().size(), 64u);
  ASSERT_EQ(plan.components.size(), 21u);  // embedding + 4 layers x 5
  int quantized = 0;
  for (const auto& [name, scheme] : plan.components) {
    if (name.find("conv1d") != std::string::npos) { EXPECT_EQ(scheme, "bf16") << name; }
    quantized += scheme != "bf16";
  }
  EXPECT_GT(quantized, 0);

  const auto e = test::run_cli({"eval", model(), "--plan", out, "--text", text_, "--ctx", "64",
                                "--windows", "2", "--json"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json j = json::parse(e.out);
  EXPECT_EQ(j["bytes"].get<int64_t>(), plan.bytes) << "the sensitivity file covers every component";
  EXPECT_DOUBLE_EQ(j["bits_per_weight"].get<double>(), plan.bits_per_weight);
  EXPECT_GT(j["kl"]["mean"].get<double>(), 0.0);
  EXPECT_EQ(j["components_changed"].get<int>(), quantized);
}

TEST_F(PlanCli, KeepRulesAndMaxBytes) {
  const std::string out = path("keep.json");
  const auto r = test::run_cli({"plan", sens_, "--max-bytes", "3500000", "--keep", "embed=bf16", "--keep",
                                "layers\\.0\\.=int8:g32", "--keep", "conv1d=int4:g32", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Plan plan = read_plan_json(out);
  EXPECT_LE(plan.bytes, 3500000);
  for (const auto& [name, scheme] : plan.components) {
    // Later rules win: the conv1d rule overrides the layer-0 regex for layer 0's conv1d.
    if (name.find("conv1d") != std::string::npos) {
      EXPECT_EQ(scheme, "int4:g32") << name;
    } else if (name.find("layers.0.") != std::string::npos) {
      EXPECT_EQ(scheme, "int8:g32") << name;
    } else if (name.find("embeddings") != std::string::npos) {
      EXPECT_EQ(scheme, "bf16") << name;
    }
  }
}

TEST_F(PlanCli, PointsWritesTenConfigurations) {
  const auto r = test::run_cli({"plan", sens_, "--method", "points", "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["points"].size(), 10u);
  EXPECT_EQ(j["point"], "p05");
  EXPECT_EQ(j["components"], j["points"][4]["components"]);
  // 17 free components x 2 schemes = 34 entries: segment 3.
  EXPECT_EQ(j["points"][0]["cutoff"], 3);
  EXPECT_EQ(j["points"][9]["cutoff"], 30);
  EXPECT_EQ(j["points"][0]["name"], "p01");

  // With a budget, the largest point that fits.
  const int64_t b3 = j["points"][2]["bytes"].get<int64_t>();
  const auto f = test::run_cli({"plan", sens_, "--method", "points", "--max-bytes", std::to_string(b3),
                                "--dry-run", "--json"});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const json k = json::parse(f.out);
  EXPECT_LE(k["bytes"].get<int64_t>(), b3);
  for (const auto& p : k["points"])
    if (p["bytes"].get<int64_t>() <= b3) { EXPECT_LE(p["bytes"].get<int64_t>(), k["bytes"].get<int64_t>()); }
}

TEST_F(PlanCli, GreedyStepsRespectGamma) {
  const auto r = test::run_cli({"plan", sens_, "--method", "greedy", "--model", model(), "--eval", text_,
                                "--ctx", "64", "--eval-windows", "1", "--gamma", "1.02", "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  const json& g = j["greedy"];
  ASSERT_EQ(g["steps"].size(), 34u);
  double reference = g["start_ppl"].get<double>();
  for (const auto& s : g["steps"]) {
    EXPECT_DOUBLE_EQ(s["reference"].get<double>(), reference);
    if (s["decision"] == "accepted") {
      EXPECT_LE(s["ppl"].get<double>(), 1.02 * reference);
      reference = s["ppl"].get<double>();
    } else if (s["decision"] == "rejected") {
      EXPECT_GT(s["ppl"].get<double>(), 1.02 * reference);
    }
  }
  EXPECT_TRUE(j["budget"]["bytes"].is_null());
}

TEST_F(PlanCli, BadInput) {
  auto expect_error = [](const std::vector<std::string>& args, int code, const std::string& text) {
    const auto r = test::run_cli(args);
    ASSERT_FALSE(r.signaled);
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
  };
  expect_error({"plan", path("missing.json"), "--avg-bits", "4", "--out", path("x.json")}, 1, "missing.json");
  expect_error({"plan", sens_, "--avg-bits", "0.5", "--out", path("x.json")}, 1, "smallest plan");
  expect_error({"plan", sens_, "--avg-bits", "4", "--keep", "in_proj=q4_0", "--out", path("x.json")}, 2,
               "not in the sensitivity file");
  expect_error({"plan", sens_, "--avg-bits", "4", "--keep", "nomatch[0-9]=bf16", "--out", path("x.json")}, 2,
               "no component");
  expect_error({"plan", sens_, "--out", path("x.json")}, 2, "budget");
  expect_error({"plan", sens_, "--method", "greedy", "--out", path("x.json")}, 2, "--model");
  expect_error({"plan", sens_, "--avg-bits", "4", "--max-bytes", "10", "--out", path("x.json")}, 2, "excludes");
  expect_error({"plan", sens_, "--avg-bits", "4", "--metric", "top1", "--out", path("x.json")}, 2, "metric");
  expect_error({"plan", sens_, "--avg-bits", "4"}, 2, "--out");
  expect_error({"plan", sens_, "--avg-bits", "4", "--gamma", "1.1", "--out", path("x.json")}, 2, "greedy");
  expect_error({"plan", sens_, "--method", "points", "--point", "p11", "--dry-run"}, 2, "p01..p10");
  EXPECT_FALSE(std::filesystem::exists(path("x.json")));
  EXPECT_EQ(test::run_cli({"plan", "--help"}).exit_code, 0);
}

}  // namespace
}  // namespace kllens
