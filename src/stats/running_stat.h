// Running mean / variance / standard error in double (Welford's update, Chan et al.'s merge), the
// accumulator under every "mean +- stderr" that kllens reports. Depends on nothing but the
// standard library; safe to copy, not to share between threads (give each thread its own and
// merge()).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace kllens {

// A reported mean with its standard error (sample standard deviation / sqrt(count); 0 when
// count < 2) and the number of samples behind it.
struct MeanStd {
  double mean = 0;
  double stderr_ = 0;
  int64_t count = 0;
};

class RunningStat {
 public:
  void add(double x) {
    ++n_;
    const double delta = x - mean_;
    mean_ += delta / static_cast<double>(n_);
    m2_ += delta * (x - mean_);
  }

  // Equivalent to add()ing every sample of `other` (up to rounding).
  void merge(const RunningStat& other) {
    if (other.n_ == 0) return;
    if (n_ == 0) {
      *this = other;
      return;
    }
    const double n = static_cast<double>(n_ + other.n_);
    const double delta = other.mean_ - mean_;
    mean_ += delta * (static_cast<double>(other.n_) / n);
    m2_ += other.m2_ + delta * delta * (static_cast<double>(n_) * static_cast<double>(other.n_) / n);
    n_ += other.n_;
  }

  int64_t count() const { return n_; }
  double mean() const { return mean_; }  // 0 when empty
  // Sample variance (divisor n - 1); 0 when count < 2.
  double variance() const { return n_ < 2 ? 0.0 : std::max(0.0, m2_) / static_cast<double>(n_ - 1); }
  double stddev() const { return std::sqrt(variance()); }
  // Standard error of the mean: stddev / sqrt(n); 0 when count < 2.
  double std_error() const { return n_ < 2 ? 0.0 : stddev() / std::sqrt(static_cast<double>(n_)); }
  MeanStd summary() const { return {mean(), std_error(), n_}; }

 private:
  int64_t n_ = 0;
  double mean_ = 0;
  double m2_ = 0;  // sum of squared deviations from the running mean
};

}  // namespace kllens
