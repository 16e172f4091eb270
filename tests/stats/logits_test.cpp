// LogitComparison and nll against straightforward long-double formulas on random logits (fixed
// seeds, odd vocabulary sizes, logits up to +-50), with tolerances derived below.
#include "stats/logits.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "stats/resample.h"

namespace kllens {
namespace {

constexpr double kU = 0x1p-53;  // unit roundoff of double

// The reference: the textbook definitions evaluated in long double (x86 80-bit: u = 2^-64, so its
// own error is negligible next to the double tolerances below).
struct Ref {
  long double kl_forward = 0, kl_reverse = 0, mse = 0, signal = 0, noise = 0;
  long double sum_p_absdiff = 0, sum_q_absdiff = 0;  // sum_i p_i |log p_i - log q_i| (and q)
  long double lse_ref = 0, lse_test = 0;
  long double nll_ref = 0, nll_test = 0, p_ref_target = 0, p_test_target = 0;
  int argmax_ref = 0, argmax_test = 0;
};

long double ref_lse(const float* x, int n) {
  long double m = x[0];
  for (int i = 1; i < n; ++i) m = std::max<long double>(m, x[i]);
  long double s = 0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<long double>(x[i]) - m);
  return m + std::log(s);
}

Ref reference(const float* r, const float* t, int vocab, int target) {
  Ref out;
  out.lse_ref = ref_lse(r, vocab);
  out.lse_test = ref_lse(t, vocab);
  for (int i = 0; i < vocab; ++i) {
    const long double lp = r[i] - out.lse_ref, lq = t[i] - out.lse_test;
    const long double p = std::exp(lp), q = std::exp(lq);
    out.kl_forward += p * (lp - lq);
    out.kl_reverse += q * (lq - lp);
    out.sum_p_absdiff += p * std::fabs(lp - lq);
    out.sum_q_absdiff += q * std::fabs(lp - lq);
    const long double d = static_cast<long double>(r[i]) - t[i];
    out.noise += d * d;
    out.signal += static_cast<long double>(r[i]) * r[i];
    if (r[i] > r[out.argmax_ref]) out.argmax_ref = i;
    if (t[i] > t[out.argmax_test]) out.argmax_test = i;
  }
  out.mse = out.noise / vocab;
  if (target >= 0) {
    out.nll_ref = out.lse_ref - r[target];
    out.nll_test = out.lse_test - t[target];
    out.p_ref_target = std::exp(-out.nll_ref);
    out.p_test_target = std::exp(-out.nll_test);
  }
  return out;
}

// Error bounds of the double computation in logits.cpp (first order in u, V = vocab):
// * S = sum_j exp(x_j - m) is a sum of V terms each with relative error <= 2u (the shift is a
//   float difference, exact or rounded once, and exp is within an ulp), so S has relative error
//   <= (V + 2)u and log S absolute error <= (V + 3)u. Hence c = (m_r - m_t) + (log S_r - log S_t)
//   is off by <= 2(V + 4)u + u(|lse_r| + |lse_t|).
// * diff_i = (r_i - t_i) - c: d_i is within u|d_i| and the subtraction adds u|diff_i|, so
//   |err diff_i| <= err(c) + 2u(|diff_i| + |lse_r| + |lse_t|) (using |d_i| <= |diff_i| + |c|).
// * KL = sum_i e_i diff_i / S: the weights e_i / S carry relative error <= (V + 4)u and the
//   recursive sum of V products adds <= (V + 1)u sum_i p_i |diff_i|.
// Together |KL - KL*| <= err(c) + (2V + 8)u (sum_i p_i |diff_i| + |lse_r| + |lse_t|); we
// allow 2x for second-order terms: tol = 4(V + 4)u (1 + sum p|diff| + |lse_r| + |lse_t|).
double kl_tolerance(int vocab, long double sum_abs, const Ref& ref) {
  return 4.0 * (vocab + 4) * kU *
         (1 + static_cast<double>(sum_abs + std::fabs(ref.lse_ref) + std::fabs(ref.lse_test)));
}
// MSE: each d_i^2 has relative error <= 3u (d_i rounded once, squared once), the sum of V
// non-negative terms adds (V - 1)u, the division u: tol = 2(V + 3)u mse.
double mse_tolerance(int vocab, const Ref& ref) {
  return 2.0 * (vocab + 3) * kU * static_cast<double>(ref.mse);
}
// SQNR: both sums of squares have relative error <= (V + 3)u, so the ratio has <= (2V + 7)u and
// 10 log10(.) absolute error <= (10 / ln 10)(2V + 7)u, plus the log's own rounding (u |dB|).
double sqnr_tolerance(int vocab, double db) {
  return 2 * (4.343 * (2 * vocab + 7) * kU + kU * std::fabs(db));
}
// NLL = (m - x_t) + log S: err <= u|m - x_t| + (V + 3)u + u nll; the difference of two adds u|d|.
// tol = 4(V + 4)u (1 + |lse_r| + |lse_t| + |r_t| + |t_t|).
double nll_tolerance(int vocab, const Ref& ref, float r_t, float t_t) {
  return 4.0 * (vocab + 4) * kU *
         (1 + static_cast<double>(std::fabs(ref.lse_ref) + std::fabs(ref.lse_test)) +
          std::fabs(r_t) + std::fabs(t_t));
}

struct Case {
  std::vector<float> ref, test;
  int vocab;
  int target;
};

// Random positions: logits uniform in +-range, the test logits the reference plus Gaussian noise
// of scale eps (0 = identical), some peaked (one logit 50 above a +-50 background).
std::vector<Case> make_cases(int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Case> cases;
  for (float range : {1.0f, 10.0f, 50.0f})
    for (float eps : {0.0f, 1e-6f, 1e-3f, 0.1f, 5.0f})
      for (bool peaked : {false, true}) {
        Case c;
        c.vocab = vocab;
        std::uniform_real_distribution<float> u(-range, range);
        std::normal_distribution<float> noise(0.0f, 1.0f);
        c.ref.resize(vocab);
        c.test.resize(vocab);
        for (int i = 0; i < vocab; ++i) c.ref[i] = u(rng);
        if (peaked) c.ref[rng() % vocab] = range + 50;
        for (int i = 0; i < vocab; ++i) c.test[i] = c.ref[i] + eps * noise(rng);
        c.target = static_cast<int>(rng() % (vocab + 1)) - 1;  // -1 sometimes: no target
        cases.push_back(std::move(c));
      }
  return cases;
}

TEST(LogitComparison, EachMetricMatchesTheLongDoubleReference) {
  for (int vocab : {1, 7, 33, 1023}) {
    for (const Case& c : make_cases(vocab, 1000 + vocab)) {
      LogitComparison one;
      one.add(c.ref.data(), c.test.data(), vocab, c.target);
      const LogitResults res = one.results();
      const Ref ref = reference(c.ref.data(), c.test.data(), vocab, c.target);
      ASSERT_EQ(res.positions, 1);
      EXPECT_NEAR(res.kl_forward.mean, static_cast<double>(ref.kl_forward),
                  kl_tolerance(vocab, ref.sum_p_absdiff, ref))
          << "vocab " << vocab;
      EXPECT_NEAR(res.kl_reverse.mean, static_cast<double>(ref.kl_reverse),
                  kl_tolerance(vocab, ref.sum_q_absdiff, ref))
          << "vocab " << vocab;
      EXPECT_GE(res.kl_forward.mean, 0.0);
      EXPECT_GE(res.kl_reverse.mean, 0.0);
      EXPECT_NEAR(res.logit_mse.mean, static_cast<double>(ref.mse), mse_tolerance(vocab, ref));
      EXPECT_EQ(res.top1.mean, ref.argmax_ref == ref.argmax_test ? 1.0 : 0.0);
      if (ref.noise > 0) {
        const double db = 10 * std::log10(static_cast<double>(ref.signal / ref.noise));
        EXPECT_NEAR(res.sqnr_db.mean, db, sqnr_tolerance(vocab, db));
        EXPECT_NEAR(res.sqnr_db_pooled, db, sqnr_tolerance(vocab, db));
        EXPECT_EQ(res.sqnr_identical_positions, 0);
      } else {
        EXPECT_EQ(res.sqnr_db.count, 0);
        EXPECT_EQ(res.sqnr_identical_positions, 1);
        EXPECT_TRUE(std::isinf(res.sqnr_db_pooled));
      }
      if (c.target >= 0) {
        ASSERT_EQ(res.targets, 1);
        const float rt = c.ref[c.target], tt = c.test[c.target];
        const double tol = nll_tolerance(vocab, ref, rt, tt);
        EXPECT_NEAR(res.nll_ref.mean, static_cast<double>(ref.nll_ref), tol);
        EXPECT_NEAR(res.nll_test.mean, static_cast<double>(ref.nll_test), tol);
        EXPECT_NEAR(res.delta_nll.mean, static_cast<double>(ref.nll_test - ref.nll_ref), 2 * tol);
        // p = exp(-nll): relative error <= |err nll| + u.
        const double dp = static_cast<double>(ref.p_test_target - ref.p_ref_target);
        EXPECT_NEAR(res.delta_p.mean, dp,
                    (tol + kU) * static_cast<double>(ref.p_ref_target + ref.p_test_target));
        EXPECT_NEAR(nll(c.ref.data(), vocab, c.target), static_cast<double>(ref.nll_ref), tol);
        EXPECT_NEAR(res.ppl_ref, std::exp(static_cast<double>(ref.nll_ref)),
                    2 * tol * std::exp(static_cast<double>(ref.nll_ref)));
      } else {
        EXPECT_EQ(res.targets, 0);
        EXPECT_EQ(res.delta_nll.count, 0);
      }
    }
  }
}

TEST(LogitComparison, MeansOverPositionsMatchTheReference) {
  // The mean of N per-position values: each within its own tolerance, plus Welford's update
  // (relative error <= 3u per step on the running mean, so <= 3N u max|x| overall).
  for (int vocab : {7, 1023}) {
    const std::vector<Case> cases = make_cases(vocab, 77 + vocab);
    LogitComparison all;
    long double kl_sum = 0, mse_sum = 0, dnll_sum = 0;
    double kl_tol = 0, mse_tol = 0, nll_tol = 0, kl_max = 0, mse_max = 0, dnll_max = 0;
    int targets = 0;
    for (const Case& c : cases) {
      all.add(c.ref.data(), c.test.data(), vocab, c.target);
      const Ref ref = reference(c.ref.data(), c.test.data(), vocab, c.target);
      kl_sum += ref.kl_forward;
      mse_sum += ref.mse;
      kl_tol = std::max(kl_tol, kl_tolerance(vocab, ref.sum_p_absdiff, ref));
      mse_tol = std::max(mse_tol, mse_tolerance(vocab, ref));
      kl_max = std::max(kl_max, static_cast<double>(ref.kl_forward));
      mse_max = std::max(mse_max, static_cast<double>(ref.mse));
      if (c.target >= 0) {
        ++targets;
        dnll_sum += ref.nll_test - ref.nll_ref;
        dnll_max = std::max(dnll_max, std::fabs(static_cast<double>(ref.nll_test - ref.nll_ref)));
        nll_tol = std::max(nll_tol, 2 * nll_tolerance(vocab, ref, c.ref[c.target], c.test[c.target]));
      }
    }
    const double n = static_cast<double>(cases.size());
    const LogitResults res = all.results();
    EXPECT_EQ(res.positions, static_cast<int64_t>(cases.size()));
    EXPECT_EQ(res.targets, targets);
    EXPECT_NEAR(res.kl_forward.mean, static_cast<double>(kl_sum) / n, kl_tol + 3 * n * kU * kl_max);
    EXPECT_NEAR(res.logit_mse.mean, static_cast<double>(mse_sum) / n, mse_tol + 3 * n * kU * mse_max);
    EXPECT_NEAR(res.delta_nll.mean, static_cast<double>(dnll_sum) / targets,
                nll_tol + 3 * targets * kU * dnll_max);
  }
}

TEST(LogitComparison, IdenticalLogitsGiveExactlyZeroKl) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> u(-50.0f, 50.0f);
  for (int vocab : {1, 7, 33, 1023, 50277}) {
    std::vector<float> x(vocab);
    for (auto& v : x) v = u(rng);
    LogitComparison cmp;
    cmp.add(x.data(), x.data(), vocab, vocab / 2);
    const LogitResults r = cmp.results();
    EXPECT_EQ(r.kl_forward.mean, 0.0) << vocab;
    EXPECT_EQ(r.kl_reverse.mean, 0.0) << vocab;
    EXPECT_EQ(r.logit_mse.mean, 0.0);
    EXPECT_EQ(r.delta_nll.mean, 0.0);
    EXPECT_EQ(r.delta_p.mean, 0.0);
    EXPECT_EQ(r.top1.mean, 1.0);
    EXPECT_EQ(r.kl_max, 0.0);
  }
}

TEST(LogitComparison, KlIsNonNegativeForNearlyEqualDistributions) {
  // The regime where rounding could push the computed KL below 0: perturbations of one ulp.
  std::mt19937_64 rng(6);
  std::uniform_real_distribution<float> u(-50.0f, 50.0f);
  LogitComparison cmp;
  for (int pos = 0; pos < 200; ++pos) {
    std::vector<float> r(257), t(257);
    for (int i = 0; i < 257; ++i) {
      r[i] = u(rng);
      t[i] = rng() % 2 ? std::nextafter(r[i], 100.0f) : r[i];
    }
    cmp.add(r.data(), t.data(), 257, -1);
  }
  for (float kl : cmp.kl_values()) EXPECT_GE(kl, 0.0f);
  EXPECT_GE(cmp.results().kl_reverse.mean, 0.0);
}

TEST(LogitComparison, Top1TiesGoToTheLowestIndex) {
  const float ref[] = {1, 3, 3};
  const float same[] = {0, 3, 3};     // argmax 1 (tie 1/2 -> 1): agrees
  const float other[] = {3, 1, 3};    // argmax 0 (tie 0/2 -> 0): disagrees
  LogitComparison a, b;
  a.add(ref, same, 3, -1);
  b.add(ref, other, 3, -1);
  EXPECT_EQ(a.results().top1.mean, 1.0);
  EXPECT_EQ(b.results().top1.mean, 0.0);
}

TEST(LogitComparison, MergeEqualsSequential) {
  // Chan's merge and the per-sample update round differently. Both means are within a few N u
  // max|x| of the exact mean (N = positions), and max|x| <= |mean| + sqrt(N) * stddev =
  // |mean| + N * stderr; both M2 (sum of squared deviations) are within a few N u sum x^2, and
  // stderr = sqrt(M2 / (N (N - 1))) moves by dM2 / (2 N (N - 1) stderr). We allow 8 N u.
  const std::vector<Case> cases = make_cases(33, 9);
  LogitComparison sequential, parts[3];
  for (size_t i = 0; i < cases.size(); ++i) {
    sequential.add(cases[i].ref.data(), cases[i].test.data(), 33, cases[i].target);
    parts[i * 3 / cases.size()].add(cases[i].ref.data(), cases[i].test.data(), 33, cases[i].target);
  }
  LogitComparison merged;
  for (const auto& p : parts) merged.merge(p);
  const LogitResults s = sequential.results(), m = merged.results();
  auto near = [&](const MeanStd& a, const MeanStd& b, const char* what) {
    ASSERT_EQ(a.count, b.count) << what;
    const double n = static_cast<double>(a.count);
    const double max_abs = std::fabs(a.mean) + n * a.stderr_;
    EXPECT_NEAR(a.mean, b.mean, 8 * n * kU * max_abs) << what;
    if (a.count >= 2 && a.stderr_ > 0) {
      const double sum_sq = n * (n - 1) * a.stderr_ * a.stderr_ + n * a.mean * a.mean;
      EXPECT_NEAR(a.stderr_, b.stderr_, 8 * n * kU * sum_sq / (2 * n * (n - 1) * a.stderr_))
          << what;
    }
  };
  near(s.kl_forward, m.kl_forward, "kl_forward");
  near(s.kl_reverse, m.kl_reverse, "kl_reverse");
  near(s.logit_mse, m.logit_mse, "mse");
  near(s.top1, m.top1, "top1");
  near(s.sqnr_db, m.sqnr_db, "sqnr");
  near(s.delta_nll, m.delta_nll, "delta_nll");
  near(s.delta_p, m.delta_p, "delta_p");
  EXPECT_EQ(s.positions, m.positions);
  EXPECT_EQ(s.targets, m.targets);
  EXPECT_EQ(s.sqnr_identical_positions, m.sqnr_identical_positions);
  EXPECT_NEAR(s.sqnr_db_pooled, m.sqnr_db_pooled, 1e-12 * std::fabs(s.sqnr_db_pooled));
  EXPECT_EQ(sequential.kl_values(), merged.kl_values());
  EXPECT_EQ(s.kl_median, m.kl_median);
  EXPECT_EQ(s.kl_p99, m.kl_p99);
  EXPECT_EQ(s.kl_max, m.kl_max);
}

TEST(LogitComparison, PercentilesComeFromThePerPositionKl) {
  const std::vector<Case> cases = make_cases(7, 10);
  LogitComparison cmp;
  for (const Case& c : cases) cmp.add(c.ref.data(), c.test.data(), 7, c.target);
  std::vector<double> kl(cmp.kl_values().begin(), cmp.kl_values().end());
  const LogitResults r = cmp.results();
  EXPECT_EQ(r.kl_median, percentile(kl, 50));
  EXPECT_EQ(r.kl_p90, percentile(kl, 90));
  EXPECT_EQ(r.kl_p99, percentile(kl, 99));
  EXPECT_EQ(r.kl_max, *std::max_element(kl.begin(), kl.end()));
  EXPECT_TRUE(std::isnan(LogitComparison().results().kl_median));
}

TEST(LogitComparison, NonFiniteLogitsThrow) {
  const float good[] = {1, 2, 3};
  const float bad[] = {1, NAN, 3};
  const float inf[] = {1, INFINITY, 3};
  LogitComparison cmp;
  EXPECT_THROW(cmp.add(good, bad, 3, 0), Error);
  EXPECT_THROW(cmp.add(inf, good, 3, 0), Error);
}

TEST(Nll, StableForLargeLogits) {
  // log(e^1000 + e^999) - 1000 = log(1 + e^-1); a naive exp would overflow.
  const float x[] = {1000.0f, 999.0f};
  EXPECT_NEAR(nll(x, 2, 0), std::log1p(std::exp(-1.0)), 4 * kU * 1000);
  EXPECT_NEAR(log_sum_exp(x, 2), 1000 + std::log1p(std::exp(-1.0)), 4 * kU * 1000);
  EXPECT_DOUBLE_EQ(perplexity(std::log(42.0)), 42.0);
  const float one[] = {-3.0f};
  EXPECT_EQ(nll(one, 1, 0), 0.0);
}

}  // namespace
}  // namespace kllens
