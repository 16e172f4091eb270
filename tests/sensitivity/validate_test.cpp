// validate-metrics: the rank agreement between calibration metrics and the measured perplexity
// change, on constructed entries (known answers) and end to end on demo-mamba.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/text.h"
#include "sensitivity/validate.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

SweepEntry entry(const std::string& component, const std::string& scheme, double kl, double sqnr,
                 double dnll) {
  SweepEntry e;
  e.component = component;
  e.scheme = scheme;
  e.metrics.kl.mean = kl;
  e.metrics.rkl.mean = kl;
  e.metrics.mse.mean = kl;
  e.metrics.sqnr_db.mean = sqnr;
  e.metrics.top1.mean = 1 - kl;
  e.metrics.dnll.mean = dnll;
  return e;
}

const RankAgreement& find(const Validation& v, const std::string& scope, const std::string& metric) {
  for (const auto& a : v.agreements)
    if (a.scope == scope && a.metric == metric) return a;
  throw std::runtime_error(fmt::format("no agreement row {} {}", scope, metric));
}

TEST(ValidateMetrics, PerfectAndReversedRankings) {
  std::vector<SweepEntry> calib, eval;
  for (int i = 0; i < 8; ++i) {
    const std::string c = fmt::format("c{}", i);
    // Damage grows with i: KL up, SQNR down; calibration dNLL runs the other way.
    calib.push_back(entry(c, "int4", 0.01 * (i + 1), 40.0 - i, -0.001 * i));
    eval.push_back(entry(c, "int4", 0, 0, 0.002 * (i + 1)));
  }
  // The evaluation sweep may list entries in another order: they pair by (component, scheme).
  std::reverse(eval.begin(), eval.end());
  const Validation v = validate_metrics(calib, eval, 500.0, {.resamples = 200, .seed = 7});
  ASSERT_EQ(v.entries.size(), 8u);
  for (const auto& e : v.entries) {
    const double dnll = e.eval_dnll.mean;
    EXPECT_DOUBLE_EQ(e.eval_ppl, 500.0 * std::exp(dnll));
    EXPECT_NEAR(e.delta_ppl, 500.0 * (std::exp(dnll) - 1), 1e-9);
  }
  // One scheme: only the pooled scope.
  EXPECT_EQ(v.agreements.size(), damage_metrics().size());
  for (const char* m : {"kl", "rkl", "mse", "-sqnr", "-top1"}) {
    SCOPED_TRACE(m);
    const auto& a = find(v, "all", m);
    EXPECT_EQ(a.n, 8);
    EXPECT_DOUBLE_EQ(a.tau.estimate, 1.0);
    EXPECT_DOUBLE_EQ(a.rho.estimate, 1.0);
    // Every resample with two distinct entries ranks perfectly too.
    EXPECT_DOUBLE_EQ(a.tau.lo, 1.0);
    EXPECT_GT(a.tau.resamples, 150);
  }
  EXPECT_DOUBLE_EQ(find(v, "all", "dnll").tau.estimate, -1.0);
  EXPECT_DOUBLE_EQ(find(v, "all", "dnll").rho.estimate, -1.0);
}

TEST(ValidateMetrics, PerSchemeScopesAndJson) {
  std::vector<SweepEntry> calib, eval;
  const double eval_dnll[] = {0.03, 0.01, 0.02, 0.05, 0.002, 0.001, 0.004, 0.003};
  for (int i = 0; i < 8; ++i) {
    const std::string c = fmt::format("c{}", i % 4), s = i < 4 ? "int4" : "int8";
    calib.push_back(entry(c, s, 0.01 * (i % 4 + 1) / (i < 4 ? 1 : 16), 30, 0));
    eval.push_back(entry(c, s, 0, 0, eval_dnll[i]));
  }
  const Validation v = validate_metrics(calib, eval, 100.0, {.resamples = 100});
  // kl within int4: calib order c0<c1<c2<c3, eval order c1<c2<c0<c3: 4 of 6 pairs concordant.
  EXPECT_NEAR(find(v, "int4", "kl").tau.estimate, (4.0 - 2.0) / 6.0, 1e-12);
  EXPECT_EQ(find(v, "int8", "kl").n, 4);
  EXPECT_EQ(find(v, "all", "kl").n, 8);
  // A constant column (SQNR 30 everywhere) has no ranking.
  EXPECT_TRUE(std::isnan(find(v, "all", "-sqnr").tau.estimate));
  const json j = validation_json(v);
  EXPECT_EQ(j["bootstrap"]["resamples"], 100);
  EXPECT_EQ(j["entries"].size(), 8u);
  EXPECT_TRUE(j["entries"][0]["eval"].contains("delta_ppl"));
  bool saw_null = false;
  for (const auto& a : j["agreement"])
    if (a["metric"] == "-sqnr") saw_null = saw_null || a["kendall_tau"]["estimate"].is_null();
  EXPECT_TRUE(saw_null);
}

TEST(ValidateMetrics, MismatchedOrTooFewEntriesAreErrors) {
  std::vector<SweepEntry> calib = {entry("a", "int4", 1, 1, 1), entry("b", "int4", 2, 1, 1),
                                   entry("c", "int4", 3, 1, 1)};
  auto eval = calib;
  eval[2].component = "d";
  EXPECT_THROW(validate_metrics(calib, eval, 10, {}), Error);
  calib.pop_back();
  eval.resize(2);
  EXPECT_THROW(validate_metrics(calib, eval, 10, {}), Error);
}

// ---- end to end ---------------------------------------------------------------------------------

class ValidateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(KLLENS_CLI)) << "build the kllens target first: " << KLLENS_CLI;
    dir = test::fresh_temp_dir("validate");
    const std::string text = read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw"));
    // Calibration on held-out articles, evaluation on articles the demo model was trained on
    // (0..43): disjoint texts. On held-out text this small, overfit model's perplexity (~700)
    // barely measures damage — int4 noise sometimes lowers it — so with a few hundred tokens
    // the ground truth would be mostly noise; on the text it was fit to, a perturbation's
    // perplexity change is a clean damage signal. (Measured while writing this test: KL's
    // tau-b with delta_ppl is ~0.5, 95% interval ~[0.24, 0.69], with 8 evaluation windows
    // here; ~0.3 [0.06, 0.55] with 16 held-out windows.)
    test::write_file(dir / "calib.txt", select_articles(text, 44, 47));
    test::write_file(dir / "eval.txt", select_articles(text, 0, 3));
  }
  void TearDown() override { fs::remove_all(dir); }
  std::vector<std::string> args(const fs::path& calib, const fs::path& eval,
                                const std::string& bootstrap = "300") const {
    return {"validate-metrics", test::repo_path("data/models/demo-mamba"),
            "--calib", calib.string(), "--eval", eval.string(),
            "--ctx", "64", "--windows", "2", "--eval-windows", "8",
            "--bootstrap", bootstrap, "--threads", "1"};
  }
  fs::path dir;
};

TEST_F(ValidateCli, ReportStructureAndKlAgreesWithPerplexity) {
  auto a = args(dir / "calib.txt", dir / "eval.txt");
  a.push_back("--json");
  a.push_back("--out");
  a.push_back((dir / "v.json").string());
  const auto r = test::run_cli(a);
  ASSERT_FALSE(r.signaled);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j, json::parse(test::read_file(dir / "v.json")));
  EXPECT_EQ(j["format"], "kllens-validate-metrics");
  EXPECT_EQ(j["calibration"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_EQ(j["eval"]["sha256"].get<std::string>().size(), 64u);
  EXPECT_NE(j["calibration"]["sha256"], j["eval"]["sha256"]);
  EXPECT_EQ(j["calibration"]["windows"], 2);
  EXPECT_GT(j["eval"]["fp_ppl"].get<double>(), 1.0);
  EXPECT_EQ(j["overlap"]["eval_fraction_shared"], 0.0);
  const size_t n = j["entries"].size();
  EXPECT_EQ(n, 42u);  // 21 components x 2 schemes
  const double ppl = j["eval"]["fp_ppl"];
  for (const auto& e : j["entries"]) {
    const double dnll = e["eval"]["dnll"];
    EXPECT_NEAR(e["eval"]["delta_ppl"].get<double>(), ppl * std::expm1(dnll), 1e-9 * ppl);
    EXPECT_GE(e["calibration"]["kl"].get<double>(), 0.0);
  }
  int rows = 0;
  for (const auto& ag : j["agreement"]) {
    SCOPED_TRACE(ag.dump());
    ++rows;
    for (const char* stat : {"kendall_tau", "spearman_rho"}) {
      const auto& s = ag[stat];
      ASSERT_TRUE(s["estimate"].is_number());
      const double est = s["estimate"], lo = s["lo"], hi = s["hi"];
      EXPECT_GE(est, -1.0);
      EXPECT_LE(est, 1.0);
      EXPECT_LE(lo, est);
      EXPECT_GE(hi, est);
      EXPECT_GE(lo, -1.0);
      EXPECT_LE(hi, 1.0);
      EXPECT_GT(s["resamples"].get<int>(), 250);
    }
    if (ag["scope"] == "all") {
      EXPECT_EQ(ag["n"].get<size_t>(), n);
    }
  }
  EXPECT_EQ(rows, 18);  // 6 metrics x (all, int4:g32, int8:g32)
  for (const auto& ag : j["agreement"])
    if (ag["scope"] == "all" && ag["metric"] == "kl") {
      // The property under test: components whose quantization moves the next-token
      // distributions more on calibration text also raise perplexity more on other text.
      EXPECT_GT(ag["kendall_tau"]["estimate"].get<double>(), 0.0);
      EXPECT_GT(ag["spearman_rho"]["estimate"].get<double>(), 0.0);
    }
}

TEST_F(ValidateCli, TablesByDefault) {
  auto a = args(dir / "calib.txt", dir / "eval.txt", "50");
  a.insert(a.end(), {"--components", R"(layers\.[01]\.mixer\.(in_proj|out_proj))"});
  const auto r = test::run_cli(a);
  ASSERT_FALSE(r.signaled);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("sha256"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tau-b"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("backbone.layers.0.mixer.in_proj.weight"), std::string::npos) << r.out;
}

TEST_F(ValidateCli, SameOrOverlappingTextsAreRejected) {
  const auto same = test::run_cli(args(dir / "calib.txt", dir / "calib.txt"));
  ASSERT_FALSE(same.signaled);
  EXPECT_EQ(same.exit_code, 2);
  EXPECT_NE(same.err.find("same text"), std::string::npos) << same.err;

  // A different file that contains the calibration text.
  test::write_file(dir / "both.txt", test::read_file(dir / "calib.txt") + "\n");
  const auto overlap = test::run_cli(args(dir / "calib.txt", dir / "both.txt"));
  ASSERT_FALSE(overlap.signaled);
  EXPECT_EQ(overlap.exit_code, 1);
  EXPECT_NE(overlap.err.find("overlap"), std::string::npos) << overlap.err;
}

TEST_F(ValidateCli, TooFewEntriesIsAUsageError) {
  auto a = args(dir / "calib.txt", dir / "eval.txt");
  a.insert(a.end(), {"--components", R"(layers\.0\.mixer\.in_proj)", "--schemes", "int4:g32"});
  const auto r = test::run_cli(a);
  ASSERT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("at least 3"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kllens
