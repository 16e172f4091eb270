#include "stats/correlation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace kllens {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_pairs(std::span<const double> x, std::span<const double> y, const char* what) {
  KLLENS_CHECK(x.size() == y.size(), "{}: {} x values but {} y values", what, x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i)
    if (std::isnan(x[i]) || std::isnan(y[i])) fail("{}: pair {} contains NaN", what, i);
}

}  // namespace

double kendall_tau(std::span<const double> x, std::span<const double> y) {
  check_pairs(x, y, "kendall_tau");
  const size_t n = x.size();
  if (n < 2) return kNaN;
  // Integer counts: exact for any n that fits the O(n^2) loop.
  int64_t concordant = 0, discordant = 0, tied_x = 0, tied_y = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      const int sx = (x[i] < x[j]) - (x[i] > x[j]);
      const int sy = (y[i] < y[j]) - (y[i] > y[j]);
      if (sx == 0) ++tied_x;  // = n_1 (each tied pair once)
      if (sy == 0) ++tied_y;  // = n_2
      if (sx * sy > 0) ++concordant;
      if (sx * sy < 0) ++discordant;
    }
  const double n0 = static_cast<double>(n) * static_cast<double>(n - 1) / 2;
  const double denom = std::sqrt((n0 - static_cast<double>(tied_x)) * (n0 - static_cast<double>(tied_y)));
  if (denom == 0) return kNaN;
  return static_cast<double>(concordant - discordant) / denom;
}

std::vector<double> average_ranks(std::span<const double> v) {
  const size_t n = v.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(n);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && v[order[j + 1]] == v[order[i]]) ++j;
    const double rank = (static_cast<double>(i + 1) + static_cast<double>(j + 1)) / 2;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

double spearman_rho(std::span<const double> x, std::span<const double> y) {
  check_pairs(x, y, "spearman_rho");
  const size_t n = x.size();
  if (n < 2) return kNaN;
  const std::vector<double> rx = average_ranks(x), ry = average_ranks(y);
  const double mean = (static_cast<double>(n) + 1) / 2;  // average rank, ties or not
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dx = rx[i] - mean, dy = ry[i] - mean;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx == 0 || syy == 0) return kNaN;
  return sxy / std::sqrt(sxx * syy);
}

}  // namespace kllens
