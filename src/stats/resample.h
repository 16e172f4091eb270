// Order statistics and resampling: percentiles (linear interpolation) and percentile-bootstrap
// confidence intervals over paired samples with a fixed-seed generator (reproducible across
// runs and platforms: std::mt19937_64 with a multiply-shift index draw, not
// std::uniform_int_distribution, whose algorithm is implementation-defined).
#pragma once

#include <cstdint>
#include <functional>
#include <span>

namespace kllens {

// The p-th percentile (p in [0, 100]) of a sample sorted ascending, by linear interpolation
// between closest ranks (numpy's default, Hyndman & Fan type 7):
//   h = (n - 1) p / 100, result = v[floor(h)] + (h - floor(h)) (v[floor(h) + 1] - v[floor(h)]),
// so p = 0 gives the minimum, p = 100 the maximum, p = 50 the usual median. NaN when empty.
double percentile_sorted(std::span<const double> sorted, double p);
// Same for an unsorted sample (sorts a copy). Throws Error when a value is NaN.
double percentile(std::span<const double> values, double p);

struct BootstrapCI {
  double estimate = 0;   // the statistic on the original sample (indices 0..n-1 in order)
  double lo = 0, hi = 0; // percentile interval of the resampled statistics
  int resamples = 0;     // resampled statistics used (NaN results are dropped)
};

// Percentile bootstrap for a statistic of n paired samples. `statistic` receives the indices of
// one resample (n draws with replacement from 0..n-1; the same index selects both members of a
// pair, so pairs stay together) and returns the statistic. lo/hi are the (1 - confidence)/2 and
// (1 + confidence)/2 percentiles of `resamples` resampled values. Deterministic for a seed.
BootstrapCI bootstrap_ci(const std::function<double(std::span<const int64_t>)>& statistic, int64_t n,
                         int resamples, uint64_t seed, double confidence = 0.95);

}  // namespace kllens
