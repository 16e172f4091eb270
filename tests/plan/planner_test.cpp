// The planner on synthetic sensitivity files: budgets, --keep rules, the optimal DP against
// brute force, greedy against hand-worked decisions, the published points recipe, plan files.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "core/error.h"
#include "plan/plan_io.h"
#include "plan/planner.h"
#include "test_util.h"

namespace kllens {
namespace {

struct Spec {
  std::string name, role;
  int64_t params;
  std::vector<std::tuple<std::string, int64_t, double>> entries;  // scheme, bytes, kl
};

SensitivityReport make_report(const std::vector<Spec>& specs, int64_t extra_params,
                              std::vector<std::string> schemes) {
  SensitivityReport r;
  int64_t total = extra_params;
  for (const auto& s : specs) {
    total += s.params;
    for (const auto& [scheme, bytes, kl] : s.entries) {
      SweepEntry e;
      e.component = s.name;
      e.role = s.role;
      e.layer = 0;
      e.params = s.params;
      e.shape = {s.params};
      e.scheme = scheme;
      e.bytes = bytes;
      e.metrics.kl.mean = kl;
      e.metrics.rkl.mean = 2 * kl;
      e.metrics.mse.mean = 3 * kl;
      e.metrics.sqnr_db.mean = kl > 0 ? -10 * std::log10(kl) : 0;
      r.entries.push_back(e);
    }
  }
  r.model = {{"path", "synthetic"}, {"arch", "mamba"}, {"layers", 1}, {"params", total}};
  r.calibration = nlohmann::json::object();
  r.schemes = std::move(schemes);
  return r;
}

// Random instance: n components, keep + the given schemes, sizes decreasing with the scheme and
// damage increasing (not necessarily, to exercise everything: the random draw decides).
SensitivityReport random_report(std::mt19937& rng, int n, int schemes, int64_t max_bytes) {
  std::uniform_int_distribution<int64_t> pdist(10, max_bytes / 2);
  std::uniform_real_distribution<double> cdist(0.0, 1.0);
  std::vector<Spec> specs;
  std::vector<std::string> names = {"int8:g32", "int4:g32", "q4_0", "int2:g16"};
  for (int i = 0; i < n; ++i) {
    Spec s{fmt::format("layers.{}.mixer.in_proj.weight", i), "in_proj", pdist(rng), {}};
    for (int k = 0; k < schemes; ++k) {
      std::uniform_int_distribution<int64_t> bdist(1, 2 * s.params);
      s.entries.emplace_back(names[static_cast<size_t>(k)], bdist(rng), cdist(rng));
    }
    specs.push_back(s);
  }
  return make_report(specs, 7, std::vector<std::string>(names.begin(), names.begin() + schemes));
}

// Every choice of every component (free ones only vary).
void enumerate(const PlanProblem& p, const std::function<void(const Choice&)>& f) {
  Choice c = initial_choice(p);
  std::function<void(size_t)> rec = [&](size_t i) {
    if (i == c.size()) {
      f(c);
      return;
    }
    const auto& comp = p.components[i];
    if (!comp.is_free()) {
      c[i] = comp.forced;
      rec(i + 1);
      return;
    }
    for (size_t j = 0; j < comp.candidates.size(); ++j) {
      c[i] = static_cast<int>(j);
      rec(i + 1);
    }
  };
  rec(0);
}

double brute_optimum(const PlanProblem& p, int64_t budget) {
  double best = std::numeric_limits<double>::infinity();
  enumerate(p, [&](const Choice& c) {
    if (plan_bytes(p, c) <= budget) best = std::min(best, plan_cost(p, c));
  });
  return best;
}

TEST(PlanMetric, SqnrCostIsNoiseToSignalPower) {
  EntryMetrics m;
  m.sqnr_db.mean = 20;
  m.mse.mean = 1;
  EXPECT_DOUBLE_EQ(plan_metric_cost(m, "sqnr"), 0.01);
  m.sqnr_db.mean = 30;
  EXPECT_DOUBLE_EQ(plan_metric_cost(m, "sqnr"), 0.001);
  m.mse.mean = 0;  // nothing changed: no damage, whatever the empty SQNR mean reads
  EXPECT_EQ(plan_metric_cost(m, "sqnr"), 0.0);
  m.kl.mean = 0.5;
  m.rkl.mean = 0.25;
  EXPECT_EQ(plan_metric_cost(m, "kl"), 0.5);
  EXPECT_EQ(plan_metric_cost(m, "rkl"), 0.25);
  EXPECT_THROW(plan_metric_cost(m, "top1"), UsageError);
}

TEST(PlanProblem, CandidatesAccountingAndDefaults) {
  const auto r = make_report({{"embed.weight", "embed", 100, {{"int4:g32", 60, 0.3}}},
                              {"layers.0.conv1d.weight", "conv1d", 10, {{"int4:g32", 8, 0.9}}},
                              {"layers.0.in_proj.weight", "in_proj", 50, {{"int4:g32", 30, 0.2}}}},
                             40, {"int4:g32"});
  const PlanProblem p = build_problem(r, {});
  ASSERT_EQ(p.components.size(), 3u);
  EXPECT_EQ(p.total_params, 200);
  EXPECT_EQ(p.other_params, 40);
  EXPECT_EQ(p.components[0].candidates[0].scheme, "bf16");
  EXPECT_EQ(p.components[0].candidates[0].bytes, 200);
  EXPECT_EQ(p.components[0].candidates[0].cost, 0.0);
  EXPECT_TRUE(p.components[0].is_free());
  EXPECT_FALSE(p.components[1].is_free()) << "conv1d stays full precision by default";
  EXPECT_EQ(p.components[1].forced, 0);
  // Smallest plan: embed and in_proj at int4, conv1d bf16, 40 other params bf16.
  EXPECT_EQ(plan_bytes(p, smallest_choice(p)), 60 + 20 + 30 + 80);
  EXPECT_EQ(plan_bytes(p, initial_choice(p)), 2 * 200);
  EXPECT_DOUBLE_EQ(bits_per_weight(p, 400), 16.0);

  ProblemOptions opt;
  opt.keep = {parse_keep_rule("conv1d=int4:g32")};
  const PlanProblem q = build_problem(r, opt);
  EXPECT_EQ(q.components[1].forced, 1) << "an explicit rule overrides the conv1d default";
  ProblemOptions off;
  off.conv1d_full_precision = false;
  EXPECT_TRUE(build_problem(r, off).components[1].is_free());
}

// The components' parameters are summed against the model's total before they can overflow:
// 2^15 components of 2^48 parameters each (every one within the reader's bounds) under a model
// claiming INT64_MAX was a signed overflow, now one error naming where the sum passes the total.
TEST(PlanProblem, ComponentsBeyondTheModelsParametersAreOneError) {
  SensitivityReport r = make_report(
      {{"layers.0.in_proj.weight", "in_proj", int64_t{1} << 48, {{"int4:g32", int64_t{1} << 47, 0.1}}}},
      0, {"int4:g32"});
  for (int i = 1; i < (1 << 15); ++i) {
    SweepEntry e = r.entries.front();
    e.component = "layers." + std::to_string(i) + ".in_proj.weight";
    r.entries.push_back(e);
  }
  r.model["params"] = std::numeric_limits<int64_t>::max();
  try {
    build_problem(r, {});
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hold more than the model's 9223372036854775807 parameters"),
              std::string::npos)
        << e.what();
  }
  r.model["params"] = int64_t{1} << 48;  // fewer than the first two components
  EXPECT_THROW(build_problem(r, {}), Error);
}

TEST(PlanProblem, KeepRulesRoleRegexAndErrors) {
  const auto r = make_report({{"backbone.embeddings.weight", "embed", 100, {{"int4:g32", 60, 0.3}, {"int8:g32", 110, 0.1}}},
                              {"backbone.layers.0.mixer.in_proj.weight", "in_proj", 50, {{"int4:g32", 30, 0.2}, {"int8:g32", 55, 0.05}}},
                              {"backbone.layers.1.mixer.in_proj.weight", "in_proj", 50, {{"int4:g32", 30, 0.4}, {"int8:g32", 55, 0.07}}},
                              {"backbone.layers.1.mixer.out_proj.weight", "out_proj", 50, {{"int4:g32", 30, 0.1}}}},
                             0, {"int4:g32", "int8:g32"});
  ProblemOptions opt;
  opt.keep = {parse_keep_rule("in_proj=int8:g32"), parse_keep_rule("layers\\.1\\.=bf16")};
  const PlanProblem p = build_problem(r, opt);
  EXPECT_TRUE(p.components[0].is_free());
  EXPECT_EQ(p.components[1].candidates[static_cast<size_t>(p.components[1].forced)].scheme, "int8:g32");
  // Later rule wins over the role rule for layer 1.
  EXPECT_EQ(p.components[2].candidates[static_cast<size_t>(p.components[2].forced)].scheme, "bf16");
  EXPECT_EQ(p.components[3].candidates[static_cast<size_t>(p.components[3].forced)].scheme, "bf16");
  // Equal spellings of one scheme match.
  ProblemOptions canon;
  canon.keep = {parse_keep_rule("embed=INT4:g32:sym:s16")};
  EXPECT_EQ(build_problem(r, canon).components[0].forced, 1);

  // Every plan respects the rules, at every budget that admits them.
  for (int64_t budget = 200; budget <= 800; budget += 25) {
    try {
      const Choice c = solve_optimal(p, budget);
      EXPECT_LE(plan_bytes(p, c), budget);
      for (size_t i = 0; i < c.size(); ++i)
        if (!p.components[i].is_free()) { EXPECT_EQ(c[i], p.components[i].forced); }
    } catch (const Error&) {
      EXPECT_LT(budget, plan_bytes(p, smallest_choice(p)));
    }
  }

  ProblemOptions bad;
  bad.keep = {parse_keep_rule("in_proj=q4_0")};
  try {
    build_problem(r, bad);
    FAIL() << "a scheme outside the file must be refused";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("not in the sensitivity file"), std::string::npos) << e.what();
  }
  bad.keep = {parse_keep_rule("nothing_matches_this=bf16")};
  EXPECT_THROW(build_problem(r, bad), UsageError);
  bad.keep = {parse_keep_rule("out_proj=int8:g32")};  // in the file, but not for this component
  EXPECT_THROW(build_problem(r, bad), UsageError);
  EXPECT_THROW(parse_keep_rule("in_proj"), UsageError);
  EXPECT_THROW(parse_keep_rule("=bf16"), UsageError);
  EXPECT_THROW(parse_keep_rule("in_proj=int99"), UsageError);
  EXPECT_THROW(parse_keep_rule("layers.[=bf16"), UsageError);
  // A role with no component is not an error (scripts pass conv1d=... to attention models).
  ProblemOptions absent;
  absent.keep = {parse_keep_rule("q_proj=bf16")};
  EXPECT_NO_THROW(build_problem(r, absent));
}

TEST(PlanOptimal, EqualsBruteForceOnRandomInstances) {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    const auto r = random_report(rng, 6, 2, 200);  // 6 components x 3 choices
    const PlanProblem p = build_problem(r, {});
    const int64_t lo = plan_bytes(p, smallest_choice(p));
    int64_t hi = 0;
    enumerate(p, [&](const Choice& c) { hi = std::max(hi, plan_bytes(p, c)); });
    std::uniform_int_distribution<int64_t> bdist(lo, hi + 10);
    for (int t = 0; t < 8; ++t) {
      const int64_t budget = t == 0 ? lo : bdist(rng);
      OptimalReport rep;
      const Choice c = solve_optimal(p, budget, {}, &rep);
      const int64_t bytes = plan_bytes(p, c);
      const double cost = plan_cost(p, c);
      ASSERT_TRUE(rep.exact) << "sizes below the grid: no rounding";
      EXPECT_LE(bytes, budget);
      EXPECT_DOUBLE_EQ(cost, brute_optimum(p, budget)) << "seed " << seed << " budget " << budget;
      EXPECT_DOUBLE_EQ(rep.lower_bound, cost);
      // No plan of equal or smaller size is better.
      enumerate(p, [&](const Choice& o) {
        if (plan_bytes(p, o) <= bytes) { EXPECT_GE(plan_cost(p, o), cost - 1e-12); }
      });
    }
  }
}

TEST(PlanOptimal, CoarseGridKeepsBudgetAndStatedBounds) {
  for (unsigned seed = 100; seed < 130; ++seed) {
    std::mt19937 rng(seed);
    const auto r = random_report(rng, 6, 3, 5000);  // 6 x 4 choices, sizes in the thousands
    const PlanProblem p = build_problem(r, {});
    const int64_t lo = plan_bytes(p, smallest_choice(p));
    int64_t hi = 0;
    enumerate(p, [&](const Choice& c) { hi = std::max(hi, plan_bytes(p, c)); });
    std::uniform_int_distribution<int64_t> bdist(lo, hi);
    for (int t = 0; t < 5; ++t) {
      const int64_t budget = bdist(rng);
      OptimalOptions opt;
      opt.grid = 13;  // very coarse, to make rounding visible
      OptimalReport rep;
      const Choice c = solve_optimal(p, budget, opt, &rep);
      const double cost = plan_cost(p, c);
      const double opt_b = brute_optimum(p, budget);
      EXPECT_LE(plan_bytes(p, c), budget);
      EXPECT_LE(rep.cells, 14);
      EXPECT_LE(rep.lower_bound, opt_b + 1e-12) << "certified lower bound";
      EXPECT_GE(cost, opt_b - 1e-12);
      if (budget - rep.slack_bytes >= lo) {
        EXPECT_LE(cost, brute_optimum(p, budget - rep.slack_bytes) + 1e-12)
            << "as good as any plan slack_bytes below the budget; seed " << seed;
      }
    }
  }
}

TEST(PlanOptimal, InfeasibleBudgetStatesTheMinimum) {
  std::mt19937 rng(7);
  const PlanProblem p = build_problem(random_report(rng, 6, 2, 200), {});
  const int64_t lo = plan_bytes(p, smallest_choice(p));
  try {
    solve_optimal(p, lo - 1);
    FAIL() << "an infeasible budget must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(lo) + " bytes"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(solve_optimal(p, lo));
}

// Greedy, worked by hand. Sizes: keep 100, int8 60, int4 35. Sorted by kl:
//   D int4 (.05), A int8 (.1), B int8 (.2), A int4 (.3), C int8 (.4), B int4 (.5), C int4 (.6),
//   D int8 (.7). The oracle's perplexity is 10 x the product of the applied entries' factors.
class GreedyByHand : public ::testing::Test {
 protected:
  void SetUp() override {
    auto comp = [](const std::string& n, double k8, double k4) {
      return Spec{n, "in_proj", 50, {{"int8:g32", 60, k8}, {"int4:g32", 35, k4}}};
    };
    problem = build_problem(make_report({comp("A", 0.1, 0.3), comp("B", 0.2, 0.5), comp("C", 0.4, 0.6),
                                         comp("D", 0.7, 0.05)},
                                        0, {"int8:g32", "int4:g32"}),
                            {});
    oracle = [this](const std::map<std::string, std::string>& s) {
      ++calls;
      const std::map<std::string, double> f = {{"A/int8:g32", 1.05}, {"A/int4:g32", 1.12},
                                               {"B/int8:g32", 1.08}, {"B/int4:g32", 1.20},
                                               {"C/int8:g32", 1.09}, {"C/int4:g32", 1.30},
                                               {"D/int8:g32", 1.00}, {"D/int4:g32", 1.00}};
      double ppl = 10;
      for (const auto& [name, scheme] : s) ppl *= f.at(name + "/" + scheme);
      return ppl;
    };
  }
  std::string scheme_of(const GreedyResult& g, const std::string& name) {
    return choice_schemes(problem, g.choice).at(name);
  }
  PlanProblem problem;
  PplOracle oracle;
  int calls = 0;
};

TEST_F(GreedyByHand, DriftingBase) {
  // D4: 10 <= 11 accept. A8: 10.5 <= 11 accept. B8: 11.34 <= 11.55 accept. A4: 12.096 <=
  // 12.474 accept. C8: 13.18464 <= 13.3056 accept. B4: 14.6496 > 14.5031 reject. C4: 15.7248
  // reject. D8: D already holds int4 (35 <= 60 bytes): skipped, not evaluated.
  const GreedyResult g = solve_greedy(problem, oracle, {1.10, false});
  ASSERT_EQ(g.steps.size(), 8u);
  const std::vector<std::string> want = {"D/int4:g32/a", "A/int8:g32/a", "B/int8:g32/a", "A/int4:g32/a",
                                         "C/int8:g32/a", "B/int4:g32/r", "C/int4:g32/r", "D/int8:g32/s"};
  for (size_t k = 0; k < want.size(); ++k) {
    const auto& s = g.steps[k];
    EXPECT_EQ(s.component + "/" + s.scheme + "/" + (s.skipped ? "s" : s.accepted ? "a" : "r"), want[k])
        << "step " << k;
  }
  EXPECT_DOUBLE_EQ(g.steps[5].ppl, 10 * 1.12 * 1.20 * 1.09);
  EXPECT_DOUBLE_EQ(g.steps[5].reference, 10 * 1.12 * 1.08 * 1.09);
  EXPECT_EQ(scheme_of(g, "A"), "int4:g32");
  EXPECT_EQ(scheme_of(g, "B"), "int8:g32");
  EXPECT_EQ(scheme_of(g, "C"), "int8:g32");
  EXPECT_EQ(scheme_of(g, "D"), "int4:g32");
  EXPECT_DOUBLE_EQ(g.start_ppl, 10);
  EXPECT_DOUBLE_EQ(g.final_ppl, 10 * 1.12 * 1.08 * 1.09);
  EXPECT_EQ(calls, 1 + 7);
}

TEST_F(GreedyByHand, FixedBase) {
  // Limit 11 throughout: D4 10 accept, A8 10.5 accept, B8 11.34 reject, A4 11.2 reject,
  // C8 11.445 reject, B4 12.6 reject, C4 13.65 reject, D8 skipped.
  const GreedyResult g = solve_greedy(problem, oracle, {1.10, true});
  std::string decisions;
  for (const auto& s : g.steps) decisions += s.skipped ? 's' : s.accepted ? 'a' : 'r';
  EXPECT_EQ(decisions, "aarrrrrs");
  for (const auto& s : g.steps) EXPECT_DOUBLE_EQ(s.reference, 10);
  EXPECT_EQ(scheme_of(g, "A"), "int8:g32");
  EXPECT_EQ(scheme_of(g, "B"), "bf16");
  EXPECT_EQ(scheme_of(g, "C"), "bf16");
  EXPECT_EQ(scheme_of(g, "D"), "int4:g32");
}

TEST_F(GreedyByHand, ForcedComponentsAreAppliedAndNeverWalked) {
  ProblemOptions opt;
  opt.keep = {parse_keep_rule("^A$=int4:g32")};
  PlanProblem p = build_problem(make_report({{"A", "in_proj", 50, {{"int4:g32", 35, 0.3}}},
                                             {"B", "in_proj", 50, {{"int4:g32", 35, 0.1}}}},
                                            0, {"int4:g32"}),
                                opt);
  std::vector<std::map<std::string, std::string>> seen;
  const auto g = solve_greedy(p, [&](const auto& s) {
    seen.push_back(s);
    return 10.0;
  }, {});
  ASSERT_EQ(g.steps.size(), 1u);
  EXPECT_EQ(g.steps[0].component, "B");
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], (std::map<std::string, std::string>{{"A", "int4:g32"}}));
  EXPECT_EQ(seen[1], (std::map<std::string, std::string>{{"A", "int4:g32"}, {"B", "int4:g32"}}));
}

TEST(PlanPoints, PublishedCutsByHand) {
  // 11 entries -> segment (11 - 1) / 10 = 1, cutoffs 1..10, the 11th never applied. Sorted:
  //  0 A8 .01  1 B8 .02  2 C8 .03  3 A4 .04  4 D8 .05  5 E8 .06  6 B4 .07  7 F8 .08
  //  8 C4 .09  9 D4 .10  10 E4 .11
  auto comp = [](const std::string& n, double k8, double k4) {
    return Spec{n, "x_proj", 50, {{"int8:g32", 60, k8}, {"int4:g32", 35, k4}}};
  };
  std::vector<Spec> specs = {comp("A", .01, .04), comp("B", .02, .07), comp("C", .03, .09),
                             comp("D", .05, .10), comp("E", .06, .11),
                             {"F", "x_proj", 50, {{"int8:g32", 60, .08}}}};
  const PlanProblem p = build_problem(make_report(specs, 0, {"int8:g32", "int4:g32"}), {});
  const auto pts = solve_points(p);
  ASSERT_EQ(pts.size(), 10u);
  auto config = [&](size_t k) {
    std::string s;
    for (const auto& [name, scheme] : choice_schemes(p, pts[k].choice))
      s += name + (scheme == "bf16" ? "-" : scheme == "int8:g32" ? "8" : "4");
    return s;
  };
  EXPECT_EQ(pts[0].name, "p01");
  EXPECT_EQ(pts[9].name, "p10");
  EXPECT_EQ(config(0), "A8B-C-D-E-F-");
  EXPECT_EQ(config(2), "A8B8C8D-E-F-");
  EXPECT_EQ(config(3), "A4B8C8D-E-F-") << "a later entry overrides (last wins)";
  EXPECT_EQ(config(6), "A4B4C8D8E8F-");
  EXPECT_EQ(config(9), "A4B4C4D4E8F8") << "E int4, the most damaging entry, is never applied";
  for (size_t k = 0; k < 10; ++k) EXPECT_EQ(pts[k].cutoff, static_cast<int64_t>(k + 1));
  for (size_t k = 1; k < 10; ++k)
    EXPECT_LE(plan_bytes(p, pts[k].choice), plan_bytes(p, pts[k - 1].choice)) << "ordered by size";
}

TEST(PlanPoints, OrderedBySizeOnRandomInstances) {
  for (unsigned seed = 1; seed <= 10; ++seed) {
    std::mt19937 rng(seed);
    std::vector<Spec> specs;
    std::uniform_real_distribution<double> u(0, 1);
    for (int i = 0; i < 30; ++i) {
      const double k8 = u(rng);
      specs.push_back({fmt::format("c{}", i), "in_proj", 64, {{"int8:g32", 68, k8}, {"int4:g32", 36, k8 + u(rng)}}});
    }
    const PlanProblem p = build_problem(make_report(specs, 3, {"int8:g32", "int4:g32"}), {});
    const auto pts = solve_points(p);
    ASSERT_EQ(pts.size(), 10u);
    EXPECT_EQ(pts[9].cutoff, 10 * ((60 - 1) / 10));
    for (size_t k = 1; k < 10; ++k) EXPECT_LT(plan_bytes(p, pts[k].choice), plan_bytes(p, pts[k - 1].choice));
  }
}

TEST(PlanPoints, FewerThanElevenEntriesQuantizeNothing) {
  const PlanProblem p = build_problem(
      make_report({{"A", "in_proj", 50, {{"int4:g32", 35, 0.1}}}, {"B", "in_proj", 50, {{"int4:g32", 35, 0.2}}}}, 0,
                  {"int4:g32"}),
      {});
  for (const auto& pt : solve_points(p)) EXPECT_EQ(pt.choice, initial_choice(p));
}

TEST(PlanIo, JsonRoundTrip) {
  std::mt19937 rng(3);
  const PlanProblem p = build_problem(random_report(rng, 5, 2, 300), {});
  const Choice c = solve_optimal(p, plan_bytes(p, smallest_choice(p)) + 100);
  Plan plan = make_plan(p, c);
  plan.model = {{"path", "x"}, {"params", p.total_params}};
  plan.sensitivity = {{"path", "s.json"}, {"sha256", "00"}};
  plan.method = "optimal";
  plan.budget = {{"avg_bits", nullptr}, {"max_bytes", 12345}, {"bytes", 12345}};
  plan.extra = {{"optimal", {{"grid", 20000}}}, {"keep_rules", {"in_proj=bf16"}}};
  const auto dir = test::fresh_temp_dir("plan-io");
  const std::string path = (dir / "plan.json").string();
  write_plan_json(path, plan);
  const Plan back = read_plan_json(path);
  EXPECT_EQ(plan_to_json(back), plan_to_json(plan));
  EXPECT_EQ(back.components, plan.components);
  EXPECT_EQ(back.bytes, plan_bytes(p, c));

  auto j = plan_to_json(plan);
  j["components"]["layers.0.mixer.in_proj.weight"] = "int99";
  EXPECT_THROW(plan_from_json(j), Error);
  j = plan_to_json(plan);
  j["format"] = "something-else";
  EXPECT_THROW(plan_from_json(j), Error);
  j = plan_to_json(plan);
  j.erase("bytes");
  EXPECT_THROW(plan_from_json(j), Error);
  EXPECT_THROW(read_plan_json((dir / "missing.json").string()), Error);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kllens

namespace kllens {
namespace {

// Refinement against a measured damage with an interaction the sum cannot see: quantizing
// components 0 and 1 together costs a large extra amount. The refined plan is never worse than
// the optimal one by the measure, stays within the budget, and on instances where the optimal
// plan pays the interaction it finds a plan that measures lower (checked against brute force).
TEST(PlanRefine, FindsWhatTheSumMissesAndNeverGetsWorse) {
  int improved = 0;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    std::mt19937 rng(seed);
    const auto r = random_report(rng, 5, 2, 200);
    const PlanProblem p = build_problem(r, {});
    const auto measure = [&](const Choice& c) {
      const bool both = c[0] != 0 && c[1] != 0;  // candidate 0 is keep
      return plan_cost(p, c) + (both ? 10.0 : 0.0);
    };
    const int64_t lo = plan_bytes(p, smallest_choice(p));
    int64_t hi = 0;
    enumerate(p, [&](const Choice& c) { hi = std::max(hi, plan_bytes(p, c)); });
    const int64_t budget = (lo + hi) / 2;
    const Choice start = solve_optimal(p, budget);
    const RefineResult rr = refine_optimal(p, budget, start, measure, 5, 1000);
    EXPECT_LE(plan_bytes(p, rr.choice), budget);
    EXPECT_DOUBLE_EQ(rr.start_measured, measure(start));
    EXPECT_DOUBLE_EQ(rr.final_measured, measure(rr.choice));
    EXPECT_LE(rr.final_measured, rr.start_measured);
    double best = std::numeric_limits<double>::infinity();
    enumerate(p, [&](const Choice& c) {
      if (plan_bytes(p, c) <= budget) best = std::min(best, measure(c));
    });
    if (rr.start_measured > best + 1e-9) {
      EXPECT_LT(rr.final_measured, rr.start_measured) << "seed " << seed;
      ++improved;
    }
    if (rr.final_measured < rr.start_measured) {
      EXPECT_TRUE(std::any_of(rr.steps.begin(), rr.steps.end(), [](const RefineStep& s) { return s.accepted; }));
    }
  }
  EXPECT_GT(improved, 0) << "some instance must pay the interaction";
}

// Malformed plans the fuzzer (fuzz/plan_fuzz.cpp) found: each is one Error naming the source,
// never an exception of the JSON library or undefined behaviour.
TEST(PlanIo, MalformedFieldsAreOneError) {
  using json = nlohmann::json;
  const json base = {{"format", "kllens-plan"}, {"version", 1}, {"model", json::object()},
                     {"method", "optimal"}, {"metric", "kl"}, {"components", {{"a.weight", "q8_0"}}},
                     {"predicted_metric_sum", 0.0}, {"bytes", 0}, {"bits_per_weight", 0.0},
                     {"params", 0}};
  EXPECT_NO_THROW(plan_from_json(base, "p.json"));
  const auto expect_error = [](const json& j, const std::string& part) {
    test::expect_error([&] { plan_from_json(j, "p.json"); }, {"p.json", part},
                       "accepted " + j.dump());
  };
  json j = base;
  j["format"] = 0;  // was nlohmann::type_error from j.value("format", "")
  expect_error(j, "not a kllens plan");
  for (const char* key : {"bytes", "params"}) {
    for (const json& bad : {json(1e300), json(0.5), json(18446744073709551615ull)}) {
      j = base;
      j[key] = bad;  // 1e300 was a float -> int64 cast: undefined behaviour
      expect_error(j, key);
    }
  }
  j = base;
  j["version"] = (int64_t{1} << 32) + 1;  // was wrapped to the int 1 and accepted
  expect_error(j, "version");
  // Sizes are never negative (0: a hand-written plan that states none, as base does).
  for (const char* key : {"bytes", "params"}) {
    j = base;
    j[key] = -1;
    expect_error(j, std::string("\"") + key + "\" must be an integer from 0");
  }
}

}  // namespace
}  // namespace kllens
