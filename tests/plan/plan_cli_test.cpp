// `kllens plan` end to end on a real sensitivity file of demo-mamba (1 window of 64 tokens),
// and the plans it writes evaluated by `kllens eval`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/text.h"
#include "io/gguf.h"
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

TEST_F(PlanCli, RefineMeasuresThePlanAndNeverWorsensIt) {
  const std::string out = path("refined.json");
  const auto r = test::run_cli({"plan", sens_, "--avg-bits", "8", "--refine", "2", "--refine-per-round", "2",
                                "--calib", text_, "--ctx", "64", "--calib-windows", "2", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(test::read_file(out));
  const json& ref = j.at("refine");
  EXPECT_GE(ref["measurements"].get<int>(), 1);
  EXPECT_GT(ref["start"]["measured"].get<double>(), 0.0);
  EXPECT_LE(ref["final"]["measured"].get<double>(), ref["start"]["measured"].get<double>());
  EXPECT_DOUBLE_EQ(ref["final"]["predicted"].get<double>(), j["predicted_metric_sum"].get<double>());
  EXPECT_NE(r.out.find("refine: "), std::string::npos) << r.out;
  test::expect_cli_error(test::run_cli({"plan", sens_, "--avg-bits", "8", "--refine", "2", "--out", out}), 2,
                         "--calib");
  test::expect_cli_error(test::run_cli({"plan", sens_, "--avg-bits", "8", "--calib", text_, "--out", out}), 2,
                         "--refine");
}

TEST_F(PlanCli, KeepRulesAndMaxBytes) {
  const std::string out = path("keep.json");
  const auto r = test::run_cli({"plan", sens_, "--max-bytes", "3600000", "--keep", "embed=bf16", "--keep",
                                "layers\\.0\\.=int8:g32", "--keep", "conv1d=int4:g32", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Plan plan = read_plan_json(out);
  EXPECT_LE(plan.bytes, 3600000);
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

// --mix: llama-quantize's Q4_K_M (with an imatrix) as a plan of the sensitivity file's model:
// every component gets the type llama.cpp's own file of the same model holds
// (data/fixtures/llamacpp, written by llama-quantize), conv1d stays f32 as llama-quantize copies it.
TEST_F(PlanCli, MixIsWhatLlamaQuantizeWrites) {
  const std::string out = path("mix.json");
  const auto r = test::run_cli({"plan", sens_, "--mix", "q4_k_m", "--with-imatrix", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mix:Q4_K_M"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fallback: blk.0.ssm_dt.weight"), std::string::npos) << r.out;
  const Plan plan = read_plan_json(out);
  EXPECT_EQ(plan.method, "mix:Q4_K_M");
  EXPECT_EQ(plan.metric, "kl");
  EXPECT_EQ(plan.params, params_json()["params"].get<int64_t>());
  ASSERT_EQ(plan.components.size(), 21u);
  const json& mix = plan.extra.at("mix");
  EXPECT_EQ(mix["name"], "Q4_K_M");
  EXPECT_EQ(mix["base_type"], "q4_K");
  EXPECT_EQ(mix["imatrix"], true);
  EXPECT_EQ(mix["llama_cpp_commit"], "3f545becc");
  EXPECT_EQ(mix["llama_cpp_layout"], true);
  // Block types: the embedding and 4 x (in_proj, x_proj, out_proj); dt_proj fell back to f16.
  EXPECT_EQ(mix["quantized"], 13);
  EXPECT_EQ(mix["fallbacks"], 4);
  const gguf::File file(test::repo_path("data/fixtures/llamacpp/demo-mamba.Q4_K_M.imatrix.gguf"));
  ASSERT_EQ(mix["tensors"].size(), 21u);
  for (const json& t : mix["tensors"]) {
    const std::string name = t["component"].get<std::string>();
    const gguf::TensorInfo& ft = file.tensor(t["gguf_name"].get<std::string>());
    EXPECT_EQ(plan.components.at(name), std::string(gguf::type_name(ft.type))) << name;
  }
  EXPECT_EQ(plan.components.at("backbone.embeddings.weight"), "q6_K");
  EXPECT_EQ(plan.components.at("backbone.layers.0.mixer.conv1d.weight"), "f32");
  EXPECT_EQ(plan.components.at("backbone.layers.0.mixer.dt_proj.weight"), "f16");
  EXPECT_EQ(plan.components.at("backbone.layers.0.mixer.in_proj.weight"), "q4_K");
  EXPECT_EQ(plan.predicted_metric_sum, 0.0);  // the file measured int4:g32 / int8:g32 only
  EXPECT_EQ(mix["predicted_covers"], 0);
  // kllens evaluates the plan (fake quantization in those formats) and sizes it the same way.
  const auto e = test::run_cli({"eval", model(), "--plan", out, "--text", text_, "--ctx", "64",
                                "--windows", "1", "--json"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_EQ(json::parse(e.out)["bytes"].get<int64_t>(), plan.bytes);
  // `kllens quantize --plan` of the mix writes the same type for every tensor as llama-quantize.
  const std::string gguf_out = path("mix.gguf");
  const auto q = test::run_cli({"quantize", model(), "--plan", out, "--out", gguf_out});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  const gguf::File ours(gguf_out);
  ASSERT_EQ(ours.tensors().size(), file.tensors().size());
  for (const auto& t : file.tensors())
    EXPECT_EQ(gguf::type_name(ours.tensor(t.name).type), gguf::type_name(t.type)) << t.name;

  // Q8_0: every quantized component q8_0 except dt_proj (16 columns: no fallback for q8_0, so
  // llama-quantize itself stops, and so does the plan).
  const auto q8 = test::run_cli({"plan", sens_, "--mix", "Q8_0", "--dry-run"});
  EXPECT_EQ(q8.exit_code, 1);
  EXPECT_NE(q8.err.find("ssm_dt.weight"), std::string::npos) << q8.err;
  const auto q6 = test::run_cli({"plan", sens_, "--mix", "Q6_K", "--dry-run", "--json"});
  ASSERT_EQ(q6.exit_code, 0) << q6.err;
  const json j = json::parse(q6.out);
  EXPECT_EQ(j["method"], "mix:Q6_K");
  EXPECT_EQ(j["components"]["backbone.layers.3.mixer.out_proj.weight"], "q6_K");
  EXPECT_EQ(j["components"]["backbone.layers.3.mixer.dt_proj.weight"], "f16");
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
  expect_error({"plan", sens_, "--mix", "Q4_K_M", "--avg-bits", "4", "--dry-run"}, 2, "--mix");
  expect_error({"plan", sens_, "--mix", "Q4_K_M", "--method", "greedy", "--dry-run"}, 2, "--mix");
  expect_error({"plan", sens_, "--mix", "Q4_K_M", "--keep", "embed=bf16", "--dry-run"}, 2, "--mix");
  expect_error({"plan", sens_, "--mix", "Q9_K", "--dry-run"}, 2, "Q9_K");
  expect_error({"plan", sens_, "--avg-bits", "4", "--with-imatrix", "--dry-run"}, 2, "--mix");
  EXPECT_FALSE(std::filesystem::exists(path("x.json")));
  EXPECT_EQ(test::run_cli({"plan", "--help"}).exit_code, 0);
}

}  // namespace
}  // namespace kllens
