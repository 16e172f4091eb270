// Statistics of next-token distributions: NLL / perplexity of a target, and LogitComparison, the
// accumulator that compares a reference model's logits with a perturbed (quantized) model's,
// position by position. Everything is computed in double from the float32 logits with a
// max-shifted (numerically stable) log-softmax over the full vocabulary — no truncation of small
// probabilities as in llama.cpp's base-logits file. Definitions and error bounds:
// docs/numerics.md ("logit statistics").
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "stats/running_stat.h"

namespace kllens {

// log(sum_i exp(logits[i])), max-shifted. vocab >= 1.
double log_sum_exp(const float* logits, int vocab);
// -log softmax(logits)[target] = log_sum_exp(logits) - logits[target], in nats.
double nll(const float* logits, int vocab, int target);
// exp(mean NLL in nats).
inline double perplexity(double mean_nll) { return std::exp(mean_nll); }

struct LogitResults {
  int64_t positions = 0;  // positions added
  int64_t targets = 0;    // positions that had a target (>= 0)

  // Per position, averaged over positions (mean +- standard error):
  MeanStd kl_forward;  // KL(P_ref || P_test) = sum_i p_ref,i (log p_ref,i - log p_test,i), nats
  MeanStd kl_reverse;  // KL(P_test || P_ref), nats
  MeanStd logit_mse;   // mean over the vocabulary of (ref_i - test_i)^2
  MeanStd top1;        // 1 when argmax ref == argmax test (ties -> lowest index), else 0
  // Per-position SQNR 10 log10(sum_i ref_i^2 / sum_i (ref_i - test_i)^2) in dB, averaged over
  // the positions where test != ref (an identical position has infinite SQNR and is only
  // counted in sqnr_identical_positions).
  MeanStd sqnr_db;
  int64_t sqnr_identical_positions = 0;
  // The same ratio pooled over all positions (sums of squares added first); +inf when every
  // position is identical.
  double sqnr_db_pooled = 0;

  // Over positions with a target only:
  MeanStd nll_ref;    // -log p_ref(target)
  MeanStd nll_test;   // -log p_test(target)
  MeanStd delta_nll;  // nll_test - nll_ref (ln(PPL_test / PPL_ref) is its mean)
  MeanStd delta_p;    // p_test(target) - p_ref(target)
  double delta_p_rms = 0;
  double ppl_ref = 0;   // exp(nll_ref.mean); 0 without targets
  double ppl_test = 0;  // exp(nll_test.mean); 0 without targets

  // Distribution of the per-position forward KL (percentiles: linear interpolation, see
  // percentile() in stats/resample.h); NaN when there are no positions.
  double kl_median = 0, kl_p90 = 0, kl_p99 = 0, kl_max = 0;
};

// Accumulates per-position comparisons. Not thread-safe: give each thread its own and merge().
class LogitComparison {
 public:
  // One position: ref_logits and test_logits hold `vocab` float32 logits each; target is the
  // next-token id or -1 when there is none (the NLL metrics then skip this position). Throws
  // Error when a logit is NaN or infinite (the metrics would be NaN).
  void add(const float* ref_logits, const float* test_logits, int vocab, int target);
  // Adds every position of `other` (its per-position KL values are appended after ours).
  void merge(const LogitComparison& other);

  int64_t positions() const { return kl_forward_.count(); }
  // Forward KL of every position, in the order added (float: for percentiles only; the means
  // above use the double values).
  const std::vector<float>& kl_values() const { return kl_values_; }
  LogitResults results() const;

 private:
  RunningStat kl_forward_, kl_reverse_, mse_, top1_, sqnr_db_;
  RunningStat nll_ref_, nll_test_, delta_nll_, delta_p_;
  double delta_p_sq_sum_ = 0;
  int64_t sqnr_identical_ = 0;
  double signal_sq_sum_ = 0, noise_sq_sum_ = 0;  // pooled SQNR
  std::vector<float> kl_values_;
  std::vector<double> exp_ref_, exp_test_;  // scratch: exp(logit - max), reused across add()
};

}  // namespace kllens
