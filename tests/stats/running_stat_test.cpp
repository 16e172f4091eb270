#include "stats/running_stat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kllens {
namespace {

TEST(RunningStat, KnownSequence) {
  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, squared deviations 9+1+1+1+0+0+4+16 = 32, sample variance
  // 32/7, standard error sqrt(32/7 / 8) = sqrt(4/7). Every intermediate here is a small dyadic
  // or a single rounding away from one: 4 ulps suffice.
  RunningStat s;
  for (double x : {2, 4, 4, 4, 5, 5, 7, 9}) s.add(x);
  EXPECT_EQ(s.count(), 8);
  EXPECT_DOUBLE_EQ(s.mean(), 5.0);
  EXPECT_DOUBLE_EQ(s.variance(), 32.0 / 7);
  EXPECT_DOUBLE_EQ(s.std_error(), std::sqrt(4.0 / 7));
  const MeanStd m = s.summary();
  EXPECT_DOUBLE_EQ(m.mean, 5.0);
  EXPECT_DOUBLE_EQ(m.stderr_, std::sqrt(4.0 / 7));
  EXPECT_EQ(m.count, 8);
}

TEST(RunningStat, FewerThanTwoSamples) {
  RunningStat s;
  EXPECT_EQ(s.count(), 0);
  EXPECT_EQ(s.mean(), 0.0);
  EXPECT_EQ(s.std_error(), 0.0);
  s.add(3.5);
  EXPECT_EQ(s.mean(), 3.5);
  EXPECT_EQ(s.variance(), 0.0);
  EXPECT_EQ(s.std_error(), 0.0);
}

TEST(RunningStat, BinaryProportionMatchesLlamaCppFormula) {
  // 0/1 samples with p = 3/10: stderr = sqrt(p (1 - p) / (n - 1)) (llama-perplexity's
  // "same top" uncertainty).
  RunningStat s;
  for (int i = 0; i < 10; ++i) s.add(i < 3 ? 1.0 : 0.0);
  EXPECT_DOUBLE_EQ(s.std_error(), std::sqrt(0.3 * 0.7 / 9));
}

TEST(RunningStat, MergeEqualsSequential) {
  // Chan's merge vs Welford's update: both means are within a few n u max|x| of the exact mean,
  // and both M2 within a few n u sum x^2, i.e. the variances within a few n u (mean^2 + var)
  // (n = 1000 samples of N(100, 3^2)). We allow 8 n u; stderr = sqrt(var / n) moves by
  // dvar / (2 sqrt(var n)).
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal(100.0, 3.0);
  RunningStat all, a, b, c, empty;
  for (int i = 0; i < 1000; ++i) {
    const double x = normal(rng);
    all.add(x);
    (i < 100 ? a : i < 700 ? b : c).add(x);
  }
  RunningStat merged;
  merged.merge(empty);
  merged.merge(a);
  merged.merge(b);
  merged.merge(empty);
  merged.merge(c);
  EXPECT_EQ(merged.count(), all.count());
  const double n = 1000, u = 0x1p-53, max_abs = 120;  // |x| < 100 + 6.7 sigma for these draws
  const double var_tol = 8 * n * u * (all.mean() * all.mean() + all.variance());
  EXPECT_NEAR(merged.mean(), all.mean(), 8 * n * u * max_abs);
  EXPECT_NEAR(merged.variance(), all.variance(), var_tol);
  EXPECT_NEAR(merged.std_error(), all.std_error(), var_tol / (2 * std::sqrt(all.variance() * n)));
}

}  // namespace
}  // namespace kllens
