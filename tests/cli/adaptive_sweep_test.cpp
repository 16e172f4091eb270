// `kllens sensitivity --adaptive N`: every entry on the first N windows, the uncertain ones on
// all. On demo-mamba (a CI-sized sweep) the refined entries equal the full sweep's bit for bit,
// the rest keep the first windows' estimate, fewer tokens are measured, and the plans made from
// both files choose the same scheme for every component at every budget.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/text.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

TEST(AdaptiveSweep, AgreesWithTheFullSweepWithFewerTokens) {
  const fs::path dir = test::fresh_temp_dir("adaptive");
  const std::string text = (dir / "calib.txt").string();
  test::write_file(text, select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 52));
  const std::string model = test::repo_path("data/models/demo-mamba");
  const auto sweep = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"sensitivity", model, "--calib", text, "--ctx", "96", "--windows", "8",
                                     "--schemes", "q3_K,q4_K,q8_0", "--threads", "2", "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(test::read_file(out));
  };
  const std::string full_path = (dir / "full.json").string(), adaptive_path = (dir / "adaptive.json").string();
  const json full = sweep(full_path, {});
  const json adaptive = sweep(adaptive_path, {"--adaptive", "2"});

  std::map<std::string, json> by_key;
  for (const json& e : full["entries"]) by_key[e["component"].get<std::string>() + "@" + e["scheme"].get<std::string>()] = e;
  ASSERT_EQ(adaptive["entries"].size(), full["entries"].size());
  int refined = 0;
  for (const json& e : adaptive["entries"]) {
    const json& f = by_key.at(e["component"].get<std::string>() + "@" + e["scheme"].get<std::string>());
    ASSERT_TRUE(e.contains("windows"));
    if (e["windows"] == 8) {
      ++refined;
      EXPECT_EQ(e["metrics"], f["metrics"]) << e["component"];  // the same windows in the same order
    } else {
      EXPECT_EQ(e["windows"], 2);
    }
    EXPECT_FALSE(f.contains("windows"));  // a full sweep's file is as before
  }
  const json& a = adaptive["sweep"]["adaptive"];
  EXPECT_EQ(a["first_windows"], 2);
  EXPECT_LT(a["tokens_measured"].get<int64_t>(), a["tokens_full"].get<int64_t>());
  std::cout << "adaptive: " << refined << " of " << adaptive["entries"].size() << " entries refined, "
            << a["tokens_measured"] << " of " << a["tokens_full"] << " tokens\n";

  for (const char* bits : {"4.5", "5", "5.5", "6.5"}) {
    SCOPED_TRACE(bits);
    const auto plan = [&](const std::string& sens) {
      const std::string out = (dir / (fs::path(sens).stem().string() + "." + bits + ".plan.json")).string();
      const auto r = test::run_cli({"plan", sens, "--avg-bits", bits, "--out", out});
      EXPECT_EQ(r.exit_code, 0) << r.err;
      return json::parse(test::read_file(out))["components"];
    };
    EXPECT_EQ(plan(adaptive_path), plan(full_path));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kllens
