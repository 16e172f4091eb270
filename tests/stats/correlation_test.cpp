// Rank correlations and percentiles on hand-worked examples; bootstrap determinism and coverage.
#include "stats/correlation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "stats/resample.h"

namespace kllens {
namespace {

// The hand-worked values below are ratios of small integers, computed in double with one or two
// roundings: 4 ulps (EXPECT_DOUBLE_EQ) hold them.

TEST(KendallTau, TiesInBothSamples) {
  // x = [1, 2, 2, 3], y = [1, 3, 2, 2]. Pairs (i < j):
  //   (0,1) C, (0,2) C, (0,3) C, (1,2) tied in x, (1,3) x up / y down: D, (2,3) tied in y.
  // n_c = 3, n_d = 1, n_0 = 6, n_1 = 1 (x: one tie pair), n_2 = 1 (y: one tie pair):
  // tau_b = (3 - 1) / sqrt((6 - 1)(6 - 1)) = 0.4.
  const std::vector<double> x = {1, 2, 2, 3}, y = {1, 3, 2, 2};
  EXPECT_DOUBLE_EQ(kendall_tau(x, y), 0.4);
}

TEST(KendallTau, HeavyTies) {
  // x = [1, 1, 1, 2, 2], y = [1, 2, 1, 2, 2]. Concordant: (0,3), (0,4), (2,3), (2,4) -> 4; no
  // discordant pair. Tied in x: (0,1), (0,2), (1,2), (3,4) -> n_1 = 4 (= 3 + 1 from groups of
  // 3 and 2); tied in y: (0,2), (1,3), (1,4), (3,4) -> n_2 = 4. tau_b = 4 / sqrt(6 * 6) = 2/3.
  const std::vector<double> x = {1, 1, 1, 2, 2}, y = {1, 2, 1, 2, 2};
  EXPECT_DOUBLE_EQ(kendall_tau(x, y), 2.0 / 3);
}

TEST(KendallTau, NoTies) {
  // x = [1..5], y = [3, 1, 2, 5, 4]: discordant (0,1), (0,2), (3,4); the other 7 concordant.
  // tau = (7 - 3) / 10 = 0.4.
  const std::vector<double> x = {1, 2, 3, 4, 5}, y = {3, 1, 2, 5, 4};
  EXPECT_DOUBLE_EQ(kendall_tau(x, y), 0.4);
  const std::vector<double> rev = {5, 4, 3, 2, 1};
  EXPECT_DOUBLE_EQ(kendall_tau(x, rev), -1.0);
  EXPECT_DOUBLE_EQ(kendall_tau(x, x), 1.0);
}

TEST(KendallTau, PairsTiedInBothAreIgnored) {
  // x = [1, 1, 2], y = [5, 5, 6]: (0,1) tied in both; (0,2), (1,2) concordant.
  // n_0 = 3, n_1 = n_2 = 1: tau_b = 2 / sqrt(2 * 2) = 1.
  const std::vector<double> x = {1, 1, 2}, y = {5, 5, 6};
  EXPECT_DOUBLE_EQ(kendall_tau(x, y), 1.0);
}

TEST(KendallTau, UndefinedCases) {
  const std::vector<double> constant = {2, 2, 2}, x = {1, 2, 3}, one = {1};
  EXPECT_TRUE(std::isnan(kendall_tau(x, constant)));
  EXPECT_TRUE(std::isnan(kendall_tau(one, one)));
  const std::vector<double> nan = {1, NAN, 3};
  EXPECT_THROW(kendall_tau(x, nan), Error);
}

TEST(SpearmanRho, TiesGetAverageRanks) {
  // x = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 2] -> ranks [1, 4, 2.5, 2.5].
  // Deviations from the mean rank 2.5: dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 1.5, 0, 0];
  // sum dx dy = 2.25, sum dx^2 = sum dy^2 = 4.5: rho = 2.25 / 4.5 = 0.5.
  const std::vector<double> x = {1, 2, 2, 3}, y = {1, 3, 2, 2};
  EXPECT_EQ(average_ranks(x), (std::vector<double>{1, 2.5, 2.5, 4}));
  EXPECT_DOUBLE_EQ(spearman_rho(x, y), 0.5);
}

TEST(SpearmanRho, HeavyTies) {
  // x = [1, 1, 1, 2, 2] -> ranks [2, 2, 2, 4.5, 4.5]; y = [1, 2, 1, 2, 2] -> [1.5, 4, 1.5, 4, 4].
  // Mean rank 3: dx = [-1, -1, -1, 1.5, 1.5], dy = [-1.5, 1, -1.5, 1, 1];
  // sum dx dy = 1.5 - 1 + 1.5 + 1.5 + 1.5 = 5, sum dx^2 = sum dy^2 = 7.5: rho = 2/3.
  const std::vector<double> x = {1, 1, 1, 2, 2}, y = {1, 2, 1, 2, 2};
  EXPECT_DOUBLE_EQ(spearman_rho(x, y), 2.0 / 3);
}

TEST(SpearmanRho, NoTiesMatchesTheClassicFormula) {
  // y = [3, 1, 2, 5, 4] against ranks 1..5: d = [-2, 1, 1, -1, 1], sum d^2 = 8,
  // rho = 1 - 6 * 8 / (5 * 24) = 0.6.
  const std::vector<double> x = {10, 20, 30, 40, 50}, y = {3, 1, 2, 5, 4};
  EXPECT_DOUBLE_EQ(spearman_rho(x, y), 0.6);
  const std::vector<double> constant = {1, 1, 1, 1, 1};
  EXPECT_TRUE(std::isnan(spearman_rho(x, constant)));
}

TEST(Percentile, LinearInterpolation) {
  // v = [1, 2, 3, 4] (given unsorted): h = 3 p / 100. p50: h = 1.5 -> 2 + 0.5 = 2.5;
  // p90: h = 2.7 -> 3 + 0.7 = 3.7; p25: h = 0.75 -> 1.75; p0 = min, p100 = max.
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(percentile(v, 25), 1.75);
  EXPECT_EQ(percentile(v, 0), 1.0);
  EXPECT_EQ(percentile(v, 100), 4.0);
  const std::vector<double> one = {7};
  EXPECT_EQ(percentile(one, 99), 7.0);
  EXPECT_TRUE(std::isnan(percentile(std::vector<double>{}, 50)));
  EXPECT_THROW(percentile(std::vector<double>{1, NAN}, 50), Error);
}

TEST(Bootstrap, DeterministicPairedAndCalibrated) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t n = 400;
  std::vector<double> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = normal(rng);
    y[i] = 2 * x[i] + 1;  // paired: y - 2x == 1 exactly for every pair
  }
  auto mean_x = [&](std::span<const int64_t> idx) {
    double s = 0;
    for (int64_t i : idx) s += x[i];
    return s / static_cast<double>(idx.size());
  };
  const BootstrapCI a = bootstrap_ci(mean_x, n, 2000, 42);
  const BootstrapCI b = bootstrap_ci(mean_x, n, 2000, 42);
  const BootstrapCI c = bootstrap_ci(mean_x, n, 2000, 43);
  EXPECT_EQ(a.lo, b.lo);
  EXPECT_EQ(a.hi, b.hi);
  EXPECT_NE(a.lo, c.lo);
  EXPECT_EQ(a.resamples, 2000);
  EXPECT_DOUBLE_EQ(a.estimate, mean_x(std::vector<int64_t>([&] {
                     std::vector<int64_t> idx(n);
                     for (int64_t i = 0; i < n; ++i) idx[i] = i;
                     return idx;
                   }())));
  EXPECT_LT(a.lo, a.estimate);
  EXPECT_GT(a.hi, a.estimate);
  // Normal theory: the 95% interval of a mean is +-1.96 s / sqrt(n). The bootstrap's own Monte
  // Carlo error with B = 2000: each 2.5% quantile has sd ~ sqrt(0.025 * 0.975 / B) / phi(1.96)
  // = 0.06 bootstrap sd, i.e. ~2% of the width (3.92 sd) for the two ends together; 10% is
  // about 4.5 of those sds.
  double s2 = 0;
  for (double v : x) s2 += (v - a.estimate) * (v - a.estimate);
  const double width = 2 * 1.96 * std::sqrt(s2 / (n - 1)) / std::sqrt(static_cast<double>(n));
  EXPECT_NEAR(a.hi - a.lo, width, 0.10 * width);
  // Pairs stay together: y_i - 2 x_i is 1 in every resample.
  auto paired = [&](std::span<const int64_t> idx) {
    double s = 0;
    for (int64_t i : idx) s += y[i] - 2 * x[i];
    return s / static_cast<double>(idx.size());
  };
  const BootstrapCI p = bootstrap_ci(paired, n, 200, 1);
  EXPECT_NEAR(p.lo, 1.0, 1e-12);
  EXPECT_NEAR(p.hi, 1.0, 1e-12);
}

TEST(Bootstrap, KendallTauOfPairedRankings) {
  // A monotone relation: every resample (ties included, as resampling repeats pairs) has
  // tau_b = 1, so the interval is [1, 1].
  const int64_t n = 30;
  std::vector<double> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<double>(i);
    y[i] = std::exp(0.1 * static_cast<double>(i));
  }
  auto tau = [&](std::span<const int64_t> idx) {
    std::vector<double> a, b;
    for (int64_t i : idx) {
      a.push_back(x[i]);
      b.push_back(y[i]);
    }
    return kendall_tau(a, b);
  };
  const BootstrapCI ci = bootstrap_ci(tau, n, 100, 3);
  EXPECT_DOUBLE_EQ(ci.estimate, 1.0);
  EXPECT_DOUBLE_EQ(ci.lo, 1.0);
  EXPECT_DOUBLE_EQ(ci.hi, 1.0);
}

}  // namespace
}  // namespace kllens
