#include "stats/resample.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"

namespace kllens {

double percentile_sorted(std::span<const double> v, double p) {
  KLLENS_CHECK(p >= 0 && p <= 100, "percentile {} outside [0, 100]", p);
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double h = static_cast<double>(v.size() - 1) * p / 100;
  const size_t lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= v.size()) return v[v.size() - 1];
  return v[lo] + (h - static_cast<double>(lo)) * (v[lo + 1] - v[lo]);
}

double percentile(std::span<const double> values, double p) {
  std::vector<double> sorted(values.begin(), values.end());
  for (double x : sorted)
    if (std::isnan(x)) fail("percentile of a sample that contains NaN");
  std::sort(sorted.begin(), sorted.end());
  return percentile_sorted(sorted, p);
}

BootstrapCI bootstrap_ci(const std::function<double(std::span<const int64_t>)>& statistic, int64_t n,
                         int resamples, uint64_t seed, double confidence) {
  KLLENS_CHECK(n >= 1, "bootstrap of {} samples", n);
  KLLENS_CHECK(resamples >= 1, "bootstrap with {} resamples", resamples);
  KLLENS_CHECK(confidence > 0 && confidence < 1, "confidence {} outside (0, 1)", confidence);
  BootstrapCI ci;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  ci.estimate = statistic(idx);

  std::mt19937_64 rng(seed);
  std::vector<double> values;
  values.reserve(static_cast<size_t>(resamples));
  const unsigned __int128 range = static_cast<uint64_t>(n);
  for (int b = 0; b < resamples; ++b) {
    // Index = floor(u * n / 2^64) for a uniform 64-bit u (bias below n / 2^64).
    for (auto& i : idx) i = static_cast<int64_t>((static_cast<unsigned __int128>(rng()) * range) >> 64);
    const double s = statistic(idx);
    if (!std::isnan(s)) values.push_back(s);
  }
  ci.resamples = static_cast<int>(values.size());
  std::sort(values.begin(), values.end());
  ci.lo = percentile_sorted(values, 50 * (1 - confidence));
  ci.hi = percentile_sorted(values, 50 * (1 + confidence));
  return ci;
}

}  // namespace kllens
