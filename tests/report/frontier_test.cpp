// PlanEvaluator (full-precision logits cached across plans) against evaluate_quantized, and
// `kllens frontier` end to end on demo-mamba with tiny settings (2 windows of 64 tokens).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "eval/perplexity.h"
#include "eval/quantized_eval.h"
#include "eval/text.h"
#include "models/model.h"
#include "report/frontier.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

using json = nlohmann::json;

class Frontier : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(test::fresh_temp_dir("frontier"));
    const std::string wiki = read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw"));
    test::write_file(path("calib.txt"), select_articles(wiki, 44, 44));
    test::write_file(path("eval.txt"), select_articles(wiki, 53, 53));
    // int4:g0 (about 5.1 bits per weight of GGUF tensor data: F32 norms and conv1d) makes a 5.5-bit budget reachable for the plans.
    const auto r = test::run_cli({"sensitivity", model(), "--calib", path("calib.txt"), "--ctx", "64", "--windows", "2",
                                  "--schemes", "int4:g0,int4:g32,int8:g32", "--out", path("sens.json"), "--threads", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string model() { return test::repo_path("data/models/demo-mamba"); }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }
  static std::filesystem::path* dir_;
};
std::filesystem::path* Frontier::dir_ = nullptr;

TEST_F(Frontier, EvaluatorMatchesEvaluateQuantizedAndReusesFullPrecision) {
  auto m = load_model(model());
  const auto ids = Tokenizer::load(model() + "/tokenizer.json").encode(read_text_file(path("eval.txt")));
  const auto windows = make_windows(ids, 64, 2);
  ASSERT_EQ(windows.size(), 2u);
  const SchemeAssignment a4 = uniform_assignment(*m, QuantScheme::parse("int4:g32"), false);
  const SchemeAssignment a8 = uniform_assignment(*m, QuantScheme::parse("int8:g32"), false);
  const std::string probe = "backbone.layers.1.mixer.in_proj.weight";
  const std::vector<float> before = m->weights().get(probe).value;

  QuantEvalResult r4, r8, r4again, fp;
  {
    PlanEvaluator ev(*m, windows);
    r4 = ev.evaluate(a4);
    r8 = ev.evaluate(a8);
    bool reused = false;
    r4again = ev.evaluate(a4, &reused);
    EXPECT_TRUE(reused);
    fp = ev.evaluate({}, &reused);
    EXPECT_FALSE(reused);
    EXPECT_EQ(ev.fp_forward_passes(), 2) << "full precision runs once per window, whatever the number of plans";
    EXPECT_EQ(ev.quantized_forward_passes(), 4) << "two plans x two windows; the repeat and the identity are free";
    EXPECT_EQ(ev.cached_windows(), 2);
  }
  EXPECT_EQ(m->weights().get(probe).value, before) << "the evaluator puts the loaded weights back";
  EXPECT_EQ(r4again.ppl, r4.ppl);
  EXPECT_EQ(fp.ppl, fp.ppl_fp);
  EXPECT_EQ(fp.logits.kl_forward.mean, 0.0);
  EXPECT_EQ(fp.logits.top1.mean, 1.0);
  EXPECT_EQ(fp.bytes, assignment_bytes(*m, {}));
  EXPECT_GT(fp.bytes, 2 * m->weights().total_params()) << "F32 norms and conv1d in the file";

  for (const auto* pair : {&a4, &a8}) {
    const QuantEvalResult& got = pair == &a4 ? r4 : r8;
    const QuantEvalResult want = evaluate_quantized(*m, *pair, windows, false);
    // Same accumulation in the same order: equal to the last bit.
    EXPECT_EQ(got.ppl, want.ppl);
    EXPECT_EQ(got.ppl_fp, want.ppl_fp);
    EXPECT_EQ(got.logits.kl_forward.mean, want.logits.kl_forward.mean);
    EXPECT_EQ(got.logits.kl_forward.stderr_, want.logits.kl_forward.stderr_);
    EXPECT_EQ(got.logits.kl_p99, want.logits.kl_p99);
    EXPECT_EQ(got.logits.top1.mean, want.logits.top1.mean);
    EXPECT_EQ(got.bytes, want.bytes);
    EXPECT_EQ(got.changed, want.changed);
    EXPECT_EQ(got.tokens, want.tokens);
  }
  EXPECT_NE(r4.ppl, r8.ppl);
  EXPECT_GT(r4.logits.kl_forward.mean, r8.logits.kl_forward.mean);
  EXPECT_EQ(fp.ppl_fp, perplexity(*m, windows, false).ppl);

  // No room for cached logits: every evaluation recomputes full precision, same numbers.
  PlanEvaluator uncached(*m, windows, 0);
  const QuantEvalResult u4 = uncached.evaluate(a4);
  uncached.evaluate(a8);
  EXPECT_EQ(uncached.cached_windows(), 0);
  EXPECT_EQ(uncached.fp_forward_passes(), 4);
  EXPECT_EQ(u4.ppl, r4.ppl);
  EXPECT_EQ(u4.logits.kl_forward.mean, r4.logits.kl_forward.mean);
}

TEST_F(Frontier, CliRowsForEveryConfigurationWithinBudget) {
  const std::string prefix = path("fr");
  const auto r = test::run_cli({"frontier", model(), "--sens", path("sens.json"), "--text", path("eval.txt"), "--ctx",
                                "64", "--windows", "2", "--budgets", "5.5,8", "--greedy", "--points", "p05", "--out-prefix", prefix,
                                "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_FALSE(r.signaled);
  EXPECT_NE(r.out.find("| label | method | metric | budget | bytes | bits/weight | perplexity"), std::string::npos)
      << r.out;
  const json doc = json::parse(test::read_file(prefix + ".json"));
  EXPECT_EQ(doc["format"], "kllens-frontier");
  const auto& rows = doc["rows"];
  const int64_t params = doc["model"]["params"].get<int64_t>();

  const auto ppl = test::run_cli({"ppl", model(), "--text", path("eval.txt"), "--ctx", "64", "--windows", "2", "--json",
                                  "--threads", "1"});
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const double fp_ppl = json::parse(ppl.out)["ppl"].get<double>();

  std::map<std::string, json> by_label;
  for (const auto& row : rows) {
    const std::string label = row["label"].get<std::string>();
    EXPECT_TRUE(by_label.emplace(label, row).second) << "duplicate row " << label;
    if (row["feasible"].get<bool>()) {
      EXPECT_EQ(row["ppl_fp"].get<double>(), fp_ppl) << label;
    }
  }
  ASSERT_TRUE(by_label.count("full precision"));
  EXPECT_EQ(by_label["full precision"]["ppl"].get<double>(), fp_ppl) << "the same windows as `kllens ppl`";
  {
    // The bf16 checkpoint's GGUF tensor data: bf16 components, F32 conv1d (llama.cpp's layout) and
    // F32 for every other tensor.
    const auto m = load_model(model());
    int64_t want = 0;
    for (const auto& p : m->weights().all())
      want += (p->is_component() && p->role != Role::kConv1d ? 2 : 4) * p->numel();
    EXPECT_EQ(by_label["full precision"]["bytes"].get<int64_t>(), want);
  }
  EXPECT_EQ(by_label["full precision"]["kl"]["mean"].get<double>(), 0.0);
  for (const char* s : {"int8:g0", "int8:g32", "int4:g0", "int4:g32"})
    ASSERT_TRUE(by_label.count(std::string("uniform ") + s)) << s;
  // Precondition of the feasibility checks below: a plan as small as uniform int4:g0 exists.
  ASSERT_LT(by_label["uniform int4:g0"]["bits_per_weight"].get<double>(), 5.5);

  int budgeted = 0, greedy = 0;
  for (const std::string metric : {"kl", "rkl", "mse", "sqnr"}) {
    for (const double b : {5.5, 8.0}) {
      const int64_t budget_bytes = static_cast<int64_t>(std::floor(b * static_cast<double>(params) / 8));
      for (const std::string method : {"optimal", "points"}) {
        int found = 0;
        for (const auto& row : rows) {
          if (row["method"] != method || row["metric"] != metric || row["budget"].is_null() ||
              row["budget"].get<double>() != b)
            continue;
          ++found;
          ++budgeted;
          EXPECT_EQ(row["budget_bytes"].get<int64_t>(), budget_bytes);
          if (method == "optimal") {
            EXPECT_TRUE(row["feasible"].get<bool>()) << row["label"] << ": uniform int4:g0 fits, so a plan exists";
          }
          if (!row["feasible"].get<bool>()) {
            EXPECT_NE(row["note"].get<std::string>().find("infeasible"), std::string::npos);
            continue;
          }
          EXPECT_LE(row["bytes"].get<int64_t>(), budget_bytes) << row["label"];
          EXPECT_LE(row["bits_per_weight"].get<double>(), b) << row["label"];
          EXPECT_EQ(row["components"].size(), 21u) << "every component of demo-mamba";
          if (method == "points") {
            EXPECT_EQ(row["point"].get<std::string>()[0], 'p');
          }
        }
        EXPECT_EQ(found, 1) << method << "/" << metric << " @" << b;
      }
    }
    for (const auto& row : rows) greedy += row["method"] == "greedy" && row["metric"] == metric;
  }
  EXPECT_EQ(budgeted, 16);
  EXPECT_EQ(greedy, 4);
  // fp, 4 uniform, 16 budgeted, 4 greedy, 4 points p05, and per default mix (Q3_K_M, Q4_K_M,
  // Q5_K_M) the mix and one optimal plan per metric at its bytes.
  EXPECT_EQ(rows.size(), 1u + 4u + 16u + 4u + 4u + 3u * (1u + 4u));
  for (const std::string mix : {"Q3_K_M", "Q4_K_M", "Q5_K_M"}) {
    ASSERT_TRUE(by_label.count("mix " + mix)) << mix;
    const json& m = by_label["mix " + mix];
    for (const std::string metric : {"kl", "rkl", "mse", "sqnr"}) {
      ASSERT_TRUE(by_label.count("optimal/" + metric + " @" + mix)) << metric << " " << mix;
      const json& o = by_label["optimal/" + metric + " @" + mix];
      if (!o["feasible"].get<bool>()) continue;
      EXPECT_LE(o["bytes"].get<int64_t>(), m["bytes"].get<int64_t>()) << "at the mix's bytes";
    }
  }
  // --points p05: the paper's configuration, whatever the budget.
  ASSERT_TRUE(by_label.count("points/mse p05"));
  EXPECT_EQ(by_label["points/mse p05"]["point"], "p05");
  EXPECT_TRUE(by_label["points/mse p05"]["budget"].is_null());
  EXPECT_TRUE(by_label["points/mse p05"]["feasible"].get<bool>());
  // The optimal plan at 5.5 bits quantizes more than the one at 8 (more damage, fewer bytes).
  const auto& o45 = by_label["optimal/kl @5.5"];
  const auto& o8 = by_label["optimal/kl @8"];
  EXPECT_LT(o45["bytes"].get<int64_t>(), o8["bytes"].get<int64_t>());
  EXPECT_GE(o45["predicted_metric_sum"].get<double>(), o8["predicted_metric_sum"].get<double>());

  // A uniform row is exactly what `kllens eval --uniform` measures.
  const auto e = test::run_cli({"eval", model(), "--uniform", "int4:g32", "--text", path("eval.txt"), "--ctx", "64",
                                "--windows", "2", "--json", "--threads", "1"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json ej = json::parse(e.out);
  EXPECT_EQ(by_label["uniform int4:g32"]["ppl"].get<double>(), ej["ppl"].get<double>());
  EXPECT_EQ(by_label["uniform int4:g32"]["bytes"].get<int64_t>(), ej["bytes"].get<int64_t>());
  EXPECT_EQ(by_label["uniform int4:g32"]["kl"]["mean"].get<double>(), ej["kl"]["mean"].get<double>());

  const std::string csv = test::read_file(prefix + ".csv");
  EXPECT_EQ(csv.rfind("label,method,metric,budget,", 0), 0u);
  EXPECT_EQ(static_cast<size_t>(std::count(csv.begin(), csv.end(), '\n')), rows.size() + 1);
  const std::string md = test::read_file(prefix + ".md");
  EXPECT_NE(md.find("| optimal/kl @5.5 | optimal | kl | 5.5 |"), std::string::npos) << md;
}

TEST_F(Frontier, BadInputIsOneClearError) {
  const std::vector<std::string> base = {"frontier", model(), "--sens", path("sens.json"), "--text", path("eval.txt"),
                                         "--ctx", "64", "--windows", "1", "--threads", "1"};
  auto with = [&](std::vector<std::string> extra) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_cli(args);
  };
  for (const auto& [extra, code] : std::vector<std::pair<std::vector<std::string>, int>>{
           {{"--budgets", "4,abc"}, 2},
           {{"--budgets", "-1"}, 2},
           {{"--metrics", "kl,entropy"}, 2},
           {{"--methods", "greedy"}, 2},
           {{"--uniform", "int9"}, 2},
           {{"--fixed-base"}, 2},
           {{"--points", "p11"}, 2},
           {{"--points", "p05", "--methods", "optimal"}, 2},
           {{"--no-such-flag"}, 2}}) {
    const auto r = with(extra);
    EXPECT_FALSE(r.signaled);
    EXPECT_EQ(r.exit_code, code) << extra[0] << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  }
  // A sensitivity file of another model.
  const auto other = test::run_cli({"frontier", test::repo_path("data/models/demo-mamba2"), "--sens", path("sens.json"),
                                    "--text", path("eval.txt"), "--ctx", "64", "--windows", "1", "--threads", "1"});
  EXPECT_EQ(other.exit_code, 1) << other.err;
  EXPECT_NE(other.err.find("error: "), std::string::npos) << other.err;
  const auto missing = test::run_cli({"frontier", model(), "--sens", path("nope.json"), "--text", path("eval.txt")});
  EXPECT_EQ(missing.err.rfind("error: ", 0), 0u) << missing.err;
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_FALSE(missing.signaled);
}

}  // namespace
}  // namespace kllens
