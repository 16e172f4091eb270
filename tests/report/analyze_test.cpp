// `kllens analyze` end to end on demo-mamba with tiny settings: every file, their agreement with
// the single-purpose commands, --resume, early usage errors, and the report in headless Chromium.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "eval/text.h"
#include "plan/plan_io.h"
#include "sensitivity/journal.h"
#include "sensitivity/sweep.h"
#include "test_util.h"

namespace kllens {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

class Analyze : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(test::fresh_temp_dir("analyze"));
    const std::string wiki = read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw"));
    test::write_file(path("calib.txt"), select_articles(wiki, 44, 44));
    test::write_file(path("eval.txt"), select_articles(wiki, 53, 53));
  }
  // The analysis every test but the usage-error one reads, run once per process (ctest runs
  // each test in its own process) on first use.
  static const test::CliResult& result() {
    if (!result_) result_ = new test::CliResult(test::run_cli(args(path("out"), {"--greedy", "--metrics", "kl,sqnr"})));
    return *result_;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete result_;
    result_ = nullptr;
  }
  static std::vector<std::string> args(const std::string& out, std::vector<std::string> extra = {},
                                       const std::string& budget = "6") {
    std::vector<std::string> a = {"analyze", test::repo_path("data/models/demo-mamba"), "--calib", path("calib.txt"),
                                  "--eval", path("eval.txt"), "--ctx", "64", "--windows", "2", "--eval-ctx", "64",
                                  "--eval-windows", "2", "--schemes", "int4:g0,int8:g32", "--budgets", "4.5,8",
                                  "--budget", budget, "--out", out, "--threads", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }
  static std::string out(const std::string& name) { return (*dir_ / "out" / name).string(); }
  static fs::path* dir_;
  static test::CliResult* result_;
};
fs::path* Analyze::dir_ = nullptr;
test::CliResult* Analyze::result_ = nullptr;

const json* find_row(const json& rows, const std::string& label) {
  for (const auto& r : rows)
    if (r["label"] == label) return &r;
  return nullptr;
}

TEST_F(Analyze, WritesEveryFileAndTheyAgree) {
  ASSERT_FALSE(result().signaled);
  ASSERT_EQ(result().exit_code, 0) << result().err;
  for (const char* f : {"sensitivity.json", "frontier.json", "frontier.csv", "frontier.md", "plan.json",
                        "chosen-eval.json", "report.html"})
    EXPECT_TRUE(fs::is_regular_file(out(f))) << f;
  EXPECT_FALSE(fs::exists(out("sensitivity.json.journal"))) << "the journal is removed once the sweep is written";
  EXPECT_NE(result().out.find("report: " + fs::absolute(out("report.html")).string()), std::string::npos)
      << result().out;

  const SensitivityReport sens = read_sensitivity_json(out("sensitivity.json"));
  EXPECT_EQ(sens.entries.size(), 21u * 2u);
  EXPECT_EQ(sens.schemes, (std::vector<std::string>{"int4:g0", "int8:g32"}));

  const Plan plan = read_plan_json(out("plan.json"));
  EXPECT_EQ(plan.method, "optimal");
  EXPECT_EQ(plan.metric, "kl");
  EXPECT_LE(plan.bytes, static_cast<int64_t>(std::floor(6.0 * static_cast<double>(plan.params) / 8)));
  // The same plan `kllens plan` makes from the same file.
  const auto p = test::run_cli({"plan", out("sensitivity.json"), "--avg-bits", "6", "--metric", "kl", "--dry-run",
                                "--json"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(json::parse(p.out)["components"], json(plan.components));

  const json frontier = json::parse(test::read_file(out("frontier.json")));
  const auto& rows = frontier["rows"];
  const json* chosen = find_row(rows, "optimal/kl @6");
  ASSERT_NE(chosen, nullptr) << "--budget is added to the frontier's budgets";
  EXPECT_EQ((*chosen)["components"], json(plan.components));
  for (const char* label : {"full precision", "uniform int8:g0", "uniform int8:g32", "uniform int4:g0",
                            "uniform int4:g32", "optimal/kl @4.5", "optimal/sqnr @8", "greedy/kl", "greedy/sqnr"})
    EXPECT_NE(find_row(rows, label), nullptr) << label;
  EXPECT_EQ(find_row(rows, "optimal/mse @8"), nullptr) << "--metrics kl,sqnr";

  const json ce = json::parse(test::read_file(out("chosen-eval.json")));
  EXPECT_EQ(ce["ppl"].get<double>(), (*chosen)["ppl"].get<double>());
  EXPECT_EQ(ce["bytes"].get<int64_t>(), plan.bytes);
  EXPECT_EQ(ce["source"]["method"], "optimal");
  // chosen-eval.json is what `kllens eval --plan` reports.
  const auto e = test::run_cli({"eval", test::repo_path("data/models/demo-mamba"), "--plan", out("plan.json"), "--text",
                                path("eval.txt"), "--ctx", "64", "--windows", "2", "--json", "--threads", "1"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json ej = json::parse(e.out);
  EXPECT_EQ(ce["ppl"].get<double>(), ej["ppl"].get<double>());
  EXPECT_EQ(ce["kl"]["mean"].get<double>(), ej["kl"]["mean"].get<double>());
  EXPECT_EQ(ce["top1"].get<double>(), ej["top1"].get<double>());
}

TEST_F(Analyze, ReportHasEverySectionAndFigure) {
  ASSERT_EQ(result().exit_code, 0) << result().err;
  const std::string html = test::read_file(out("report.html"));
  for (const char* h : {">Model</h2>", ">Sensitivity heatmap</h2>", ">Ranking</h2>", ">Size versus perplexity</h2>",
                        ">Chosen plan versus uniform INT8 / INT4 and full precision</h2>", ">Scheme per component</h2>"})
    EXPECT_NE(html.find(h), std::string::npos) << h;
  size_t svgs = 0;
  for (size_t p = html.find("<svg"); p != std::string::npos; p = html.find("<svg", p + 1)) ++svgs;
  EXPECT_EQ(svgs, 2u + 1u + 1u) << "a heatmap per scheme, the frontier, the plan grid";
  EXPECT_NE(html.find("aria-label=\"sensitivity heatmap int4:g0\""), std::string::npos);
  EXPECT_NE(html.find("aria-label=\"size versus perplexity frontier\""), std::string::npos);
  EXPECT_NE(html.find("backbone.layers.3.mixer.x_proj.weight"), std::string::npos);
  EXPECT_NE(html.find("mamba"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST_F(Analyze, ResumeReusesAFinishedSweepAndContinuesAJournal) {
  ASSERT_EQ(result().exit_code, 0) << result().err;
  // A finished run: --resume measures nothing again.
  const auto again = test::run_cli(args(path("out"), {"--greedy", "--metrics", "kl,sqnr", "--resume"}));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("reusing"), std::string::npos) << again.err;

  // A killed sweep: a journal with the header and the first five entries.
  const SensitivityReport sens = read_sensitivity_json(out("sensitivity.json"));
  const std::string dir2 = path("killed");
  fs::create_directories(dir2);
  const json header = {{"journal", "kllens-sensitivity"},
                       {"model", sens.model},
                       {"calibration", sens.calibration},
                       {"schemes", sens.schemes},
                       {"components", ""}};
  {
    SweepJournal journal(dir2 + "/sensitivity.json.journal", header, false);
    for (size_t i = 0; i < 5; ++i) journal.append(entry_to_json(sens.entries[i]));
  }

  const auto refused = test::run_cli(args(dir2, {"--methods", "optimal", "--metrics", "kl"}));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("--resume"), std::string::npos) << refused.err;

  const auto resumed = test::run_cli(args(dir2, {"--methods", "optimal", "--metrics", "kl", "--resume"}));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const SensitivityReport s2 = read_sensitivity_json(dir2 + "/sensitivity.json");
  EXPECT_EQ(s2.sweep["entries_resumed"].get<int>(), 5);
  ASSERT_EQ(s2.entries.size(), sens.entries.size());
  for (size_t i = 0; i < sens.entries.size(); ++i)
    EXPECT_DOUBLE_EQ(s2.entries[i].metrics.kl.mean, sens.entries[i].metrics.kl.mean) << sens.entries[i].component;
  EXPECT_TRUE(fs::is_regular_file(dir2 + "/report.html"));
}

TEST_F(Analyze, UsageErrorsComeBeforeAnyWork) {
  // 2 bits per weight is below the smallest plan: refused before the sweep starts.
  const std::string d = path("too-small");
  const auto r = test::run_cli(args(d, {}, "2"));
  EXPECT_FALSE(r.signaled);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("error: --budget 2", 0), 0u) << r.err;
  EXPECT_FALSE(fs::exists(d + "/sensitivity.json"));
  EXPECT_FALSE(fs::exists(d + "/sensitivity.json.journal"));
  for (const auto& extra : std::vector<std::vector<std::string>>{
           {"--schemes", "int4:g32,int99"}, {"--budgets", "x"}, {"--metrics", "nll"}, {"--methods", "greedy"}}) {
    const auto bad = test::run_cli(args(path("bad"), extra));
    EXPECT_EQ(bad.exit_code, 2) << extra[0] << "\n" << bad.err;
    EXPECT_EQ(bad.err.rfind("error: ", 0), 0u) << bad.err;
  }
  const auto zero = test::run_cli(args(path("bad"), {}, "0"));
  EXPECT_EQ(zero.exit_code, 2) << zero.err;
  const auto missing = test::run_cli({"analyze", test::repo_path("data/models/demo-mamba"), "--calib", path("nope.txt"),
                                      "--eval", path("eval.txt"), "--out", path("bad")});
  EXPECT_EQ(missing.exit_code, 1) << missing.err;
  EXPECT_EQ(missing.err.rfind("error: ", 0), 0u) << missing.err;
}

// The report renders in headless Chromium without console errors (scripts/check-report), when
// Chromium is installed (scripts/install-deps installs it).
TEST_F(Analyze, ReportRendersInHeadlessChromium) {
  ASSERT_EQ(result().exit_code, 0) << result().err;
  if (std::system("command -v chromium >/dev/null 2>&1") != 0) GTEST_SKIP() << "chromium is not installed";
  const std::string png = path("report.png");
  const std::string cmd =
      test::repo_path("scripts/check-report") + " '" + out("report.html") + "' '" + png + "' 2>&1";
  std::FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe)) output += buf;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  ASSERT_TRUE(fs::is_regular_file(png)) << output;
  EXPECT_GT(fs::file_size(png), 20000u) << "a blank page compresses to almost nothing";
  EXPECT_EQ(test::read_file(png).substr(1, 3), "PNG");

  // The checker must be able to fail: a page fetching from elsewhere (static check), and a
  // page whose script throws (console check, with the static checks off).
  const std::string check = test::repo_path("scripts/check-report");
  const std::string external = path("external.html");
  test::write_file(external, "<!DOCTYPE html><html><body><img src=\"https://example.invalid/x.png\"></body></html>");
  EXPECT_NE(std::system((check + " '" + external + "' '" + path("e.png") + "' >/dev/null 2>&1").c_str()), 0);
  const std::string throws = path("throws.html");
  test::write_file(throws, "<!DOCTYPE html><html><body><p>x</p><script>notDefined();</script></body></html>");
  EXPECT_NE(std::system((check + " --allow-scripts '" + throws + "' '" + path("t.png") + "' >/dev/null 2>&1").c_str()),
            0);
  EXPECT_EQ(std::system((check + " --allow-scripts '" + out("report.html") + "' '" + path("r.png") + "' >/dev/null 2>&1")
                            .c_str()),
            0);
}

}  // namespace
}  // namespace kllens
