// Readable summaries of a sweep for the terminal: the most sensitive entries, and roles ranked
// by their KL aggregated over layers.
#pragma once

#include <string>
#include <vector>

#include "sensitivity/sweep.h"

namespace kllens {

struct RoleRank {
  std::string role, scheme;
  int components = 0;
  double mean_kl = 0, max_kl = 0;
  std::string worst_component;
};
// One row per (scheme, role), sorted by scheme (as first seen) then mean KL, descending.
std::vector<RoleRank> rank_roles(const std::vector<SweepEntry>& entries);

std::string format_top_entries(const std::vector<SweepEntry>& entries, size_t top);
std::string format_role_ranking(const std::vector<RoleRank>& ranks);

}  // namespace kllens
