// Does a calibration metric rank quantization damage the way perplexity on other text does?
// validate-metrics runs the one-component sweep twice: on calibration windows (the metrics a
// plan would be built from) and on separate evaluation windows, where the sweep's dNLL is
// exactly ln(ppl_q / ppl_fp) (every window has ctx - 1 scored tokens, so the mean over tokens is
// the difference of the two mean NLLs), hence the measured perplexity change
//   delta_ppl = ppl_fp * (exp(dnll_eval) - 1).
// Each calibration metric is then oriented so that larger means more damage (kl, rkl, mse,
// dnll as they are; SQNR and top-1 agreement negated) and its ranking of the entries is compared
// with delta_ppl's by Kendall's tau-b and Spearman's rho, each with a percentile-bootstrap
// interval over the entries (pairs resampled with replacement; the same seed, hence the same
// resamples, for every metric, so intervals of different metrics are comparable).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sensitivity/sweep.h"
#include "stats/resample.h"

namespace kllens {

// A calibration metric as a damage score: score = sign * metric_value(metric).
struct DamageMetric {
  std::string name;   // as printed: "kl", "rkl", "mse", "-sqnr", "-top1", "dnll"
  std::string metric; // metric_value() name
  double sign = 1;
};
const std::vector<DamageMetric>& damage_metrics();

struct ValidatedEntry {
  SweepEntry calib;       // the calibration sweep's entry
  MeanStd eval_dnll;      // ln(ppl_q / ppl_fp) on the evaluation windows, with its stderr
  MeanStd eval_kl;        // KL(fp || q) on the evaluation windows (for reference)
  double eval_ppl = 0;    // ppl_q on the evaluation windows
  double delta_ppl = 0;   // ppl_q - ppl_fp
};

struct RankAgreement {
  std::string scope;      // "all" or a scheme
  std::string metric;     // DamageMetric::name
  int64_t n = 0;          // entries ranked
  BootstrapCI tau, rho;   // estimate NaN when undefined (a constant column); lo/hi NaN without
                          // bootstrap resamples
};

struct ValidationOptions {
  int resamples = 1000;   // 0: estimates only
  uint64_t seed = 20240521;
  double confidence = 0.95;
};

struct Validation {
  double eval_fp_ppl = 0;
  std::vector<ValidatedEntry> entries;      // calibration order
  std::vector<RankAgreement> agreements;    // scope "all" first, then each scheme (>= 3 entries)
  ValidationOptions options;
};

// Pairs the two sweeps' entries by (component, scheme) — both must cover the same entries —
// and computes the rank agreements. Throws Error when fewer than 3 entries can be paired.
Validation validate_metrics(const std::vector<SweepEntry>& calib,
                            const std::vector<SweepEntry>& eval, double eval_fp_ppl,
                            const ValidationOptions& options);

// {"bootstrap": {...}, "agreement": [...], "entries": [...]} (documented in validate-metrics
// --help).
nlohmann::json validation_json(const Validation& v);

std::string format_agreements(const Validation& v);
// The entries with the largest measured delta_ppl first.
std::string format_validated_entries(const Validation& v, size_t top);

}  // namespace kllens
