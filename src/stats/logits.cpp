#include "stats/logits.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "stats/resample.h"

namespace kllens {

namespace {

// Index of the largest logit, the lowest index on ties (strict '>').
int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

// Fills e[i] = exp(x[i] - x[max]) and returns their sum (>= 1: the max term is exp(0) = 1).
double shifted_exp_sum(const float* x, int n, double max, double* e) {
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    e[i] = std::exp(static_cast<double>(x[i]) - max);
    sum += e[i];
  }
  return sum;
}

}  // namespace

double log_sum_exp(const float* logits, int vocab) {
  KLLENS_CHECK(vocab >= 1, "log_sum_exp over {} logits", vocab);
  const double max = logits[argmax(logits, vocab)];
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return max + std::log(sum);
}

double nll(const float* logits, int vocab, int target) {
  KLLENS_CHECK(target >= 0 && target < vocab, "target {} outside the vocabulary of {}", target,
               vocab);
  const double max = logits[argmax(logits, vocab)];
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  // (max - x_t) + log(sum): both terms >= 0, no cancellation.
  return (max - static_cast<double>(logits[target])) + std::log(sum);
}

void LogitComparison::add(const float* ref, const float* test, int vocab, int target) {
  KLLENS_CHECK(vocab >= 1, "LogitComparison::add with vocab {}", vocab);
  KLLENS_CHECK(target >= -1 && target < vocab, "target {} outside [-1, {})", target, vocab);
  exp_ref_.resize(static_cast<size_t>(vocab));
  exp_test_.resize(static_cast<size_t>(vocab));

  // log p_ref,i = (r_i - m_r) - log S_r with S_r = sum_j exp(r_j - m_r) (max-shifted: no
  // overflow, S_r >= 1); likewise for test.
  const int arg_ref = argmax(ref, vocab), arg_test = argmax(test, vocab);
  const double m_ref = ref[arg_ref], m_test = test[arg_test];
  const double s_ref = shifted_exp_sum(ref, vocab, m_ref, exp_ref_.data());
  const double s_test = shifted_exp_sum(test, vocab, m_test, exp_test_.data());
  const double log_s_ref = std::log(s_ref), log_s_test = std::log(s_test);

  // log p_ref,i - log p_test,i = d_i - c with d_i = r_i - t_i and
  // c = (m_r + log S_r) - (m_t + log S_t), grouped to keep the terms small. For identical
  // logits every d_i and c is exactly 0, so both KLs are exactly 0.
  const double c = (m_ref - m_test) + (log_s_ref - log_s_test);
  double fwd = 0, rev = 0, sse = 0, signal = 0;
  for (int i = 0; i < vocab; ++i) {
    const double r = ref[i], t = test[i];
    const double d = r - t;
    const double diff = d - c;  // log p_ref,i - log p_test,i
    fwd += exp_ref_[i] * diff;
    rev -= exp_test_[i] * diff;
    sse += d * d;
    signal += r * r;
  }
  // KL >= 0 exactly; rounding can leave about -1e-16 * sum_i p_i |diff_i| when the
  // distributions nearly coincide, which is clamped (docs/numerics.md).
  fwd = std::max(0.0, fwd / s_ref);
  rev = std::max(0.0, rev / s_test);
  const double mse = sse / vocab;
  if (!std::isfinite(fwd) || !std::isfinite(rev) || !std::isfinite(mse) || !std::isfinite(signal))
    fail("logit comparison: non-finite logits (NaN or infinity) at position {}", positions());

  kl_forward_.add(fwd);
  kl_reverse_.add(rev);
  mse_.add(mse);
  top1_.add(arg_ref == arg_test ? 1.0 : 0.0);
  if (sse > 0) sqnr_db_.add(10 * std::log10(signal / sse));
  else ++sqnr_identical_;
  signal_sq_sum_ += signal;
  noise_sq_sum_ += sse;
  kl_values_.push_back(static_cast<float>(fwd));

  if (target >= 0) {
    const double nll_r = (m_ref - static_cast<double>(ref[target])) + log_s_ref;
    const double nll_t = (m_test - static_cast<double>(test[target])) + log_s_test;
    nll_ref_.add(nll_r);
    nll_test_.add(nll_t);
    delta_nll_.add(nll_t - nll_r);
    const double dp = exp_test_[target] / s_test - exp_ref_[target] / s_ref;
    delta_p_.add(dp);
    delta_p_sq_sum_ += dp * dp;
  }
}

void LogitComparison::merge(const LogitComparison& other) {
  kl_forward_.merge(other.kl_forward_);
  kl_reverse_.merge(other.kl_reverse_);
  mse_.merge(other.mse_);
  top1_.merge(other.top1_);
  sqnr_db_.merge(other.sqnr_db_);
  nll_ref_.merge(other.nll_ref_);
  nll_test_.merge(other.nll_test_);
  delta_nll_.merge(other.delta_nll_);
  delta_p_.merge(other.delta_p_);
  delta_p_sq_sum_ += other.delta_p_sq_sum_;
  sqnr_identical_ += other.sqnr_identical_;
  signal_sq_sum_ += other.signal_sq_sum_;
  noise_sq_sum_ += other.noise_sq_sum_;
  kl_values_.insert(kl_values_.end(), other.kl_values_.begin(), other.kl_values_.end());
}

LogitResults LogitComparison::results() const {
  LogitResults r;
  r.positions = positions();
  r.targets = nll_ref_.count();
  r.kl_forward = kl_forward_.summary();
  r.kl_reverse = kl_reverse_.summary();
  r.logit_mse = mse_.summary();
  r.top1 = top1_.summary();
  r.sqnr_db = sqnr_db_.summary();
  r.sqnr_identical_positions = sqnr_identical_;
  r.sqnr_db_pooled = noise_sq_sum_ > 0 ? 10 * std::log10(signal_sq_sum_ / noise_sq_sum_)
                                       : std::numeric_limits<double>::infinity();
  r.nll_ref = nll_ref_.summary();
  r.nll_test = nll_test_.summary();
  r.delta_nll = delta_nll_.summary();
  r.delta_p = delta_p_.summary();
  if (r.targets > 0) {
    r.delta_p_rms = std::sqrt(delta_p_sq_sum_ / static_cast<double>(r.targets));
    r.ppl_ref = perplexity(r.nll_ref.mean);
    r.ppl_test = perplexity(r.nll_test.mean);
  }
  std::vector<double> kl(kl_values_.begin(), kl_values_.end());
  std::sort(kl.begin(), kl.end());
  r.kl_median = percentile_sorted(kl, 50);
  r.kl_p90 = percentile_sorted(kl, 90);
  r.kl_p99 = percentile_sorted(kl, 99);
  r.kl_max = percentile_sorted(kl, 100);
  return r;
}

}  // namespace kllens
