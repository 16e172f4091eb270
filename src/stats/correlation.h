// Rank correlations between two paired samples (e.g. per-tensor sensitivities measured two ways):
// Kendall's tau-b and Spearman's rho, both with ties handled. NaN when undefined (fewer than two
// pairs, or one sample constant). Inputs must not contain NaN (throws Error).
#pragma once

#include <span>
#include <vector>

namespace kllens {

// Kendall's tau-b = (n_c - n_d) / sqrt((n_0 - n_1)(n_0 - n_2)) with n_0 = n(n-1)/2, n_c / n_d the
// concordant / discordant pairs, n_1 = sum over tie groups of x of t(t-1)/2, n_2 likewise for y
// (a pair tied in x or in y is neither concordant nor discordant). O(n^2): meant for rankings of
// up to a few thousand items.
double kendall_tau(std::span<const double> x, std::span<const double> y);

// Spearman's rho: the Pearson correlation of the ranks, tied values getting the average of the
// ranks they span (1-based).
double spearman_rho(std::span<const double> x, std::span<const double> y);

// Average ranks (1-based; ties share the mean of their ranks), as used by spearman_rho.
std::vector<double> average_ranks(std::span<const double> v);

}  // namespace kllens
