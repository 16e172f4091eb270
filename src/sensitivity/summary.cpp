#include "sensitivity/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace kllens {

std::vector<RoleRank> rank_roles(const std::vector<SweepEntry>& entries) {
  std::vector<std::string> scheme_order;
  std::map<std::pair<std::string, std::string>, RoleRank> acc;
  for (const auto& e : entries) {
    if (std::find(scheme_order.begin(), scheme_order.end(), e.scheme) == scheme_order.end())
      scheme_order.push_back(e.scheme);
    RoleRank& r = acc[{e.scheme, e.role}];
    r.role = e.role;
    r.scheme = e.scheme;
    r.mean_kl += e.metrics.kl.mean;
    if (r.components == 0 || e.metrics.kl.mean > r.max_kl) {
      r.max_kl = e.metrics.kl.mean;
      r.worst_component = e.component;
    }
    ++r.components;
  }
  std::vector<RoleRank> out;
  for (const auto& s : scheme_order) {
    std::vector<RoleRank> rows;
    for (auto& [key, r] : acc)
      if (key.first == s) {
        r.mean_kl /= r.components;
        rows.push_back(r);
      }
    std::sort(rows.begin(), rows.end(),
              [](const RoleRank& a, const RoleRank& b) { return a.mean_kl > b.mean_kl; });
    out.insert(out.end(), rows.begin(), rows.end());
  }
  return out;
}

std::string format_top_entries(const std::vector<SweepEntry>& entries, size_t top) {
  std::vector<const SweepEntry*> sorted;
  for (const auto& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const SweepEntry* a, const SweepEntry* b) {
    return a->metrics.kl.mean > b->metrics.kl.mean;
  });
  std::string out = fmt::format("{:<48} {:<14} {:>22} {:>22} {:>11} {:>9} {:>7} {:>11}\n",
                                "component", "scheme", "KL(fp||q) ± se", "KL(q||fp) ± se",
                                "logit MSE", "SQNR dB", "top-1", "dNLL");
  for (size_t i = 0; i < sorted.size() && i < top; ++i) {
    const auto& e = *sorted[i];
    const auto& m = e.metrics;
    out += fmt::format("{:<48} {:<14} {:>11.3e} ± {:<8.1e} {:>11.3e} ± {:<8.1e} {:>11.3e} {:>9.2f} {:>7.4f} {:>11.3e}\n",
                       e.component, e.scheme, m.kl.mean, m.kl.stderr_, m.rkl.mean, m.rkl.stderr_,
                       m.mse.mean, m.sqnr_db.mean, m.top1.mean, m.dnll.mean);
  }
  return out;
}

std::string format_role_ranking(const std::vector<RoleRank>& ranks) {
  std::string out = fmt::format("{:<14} {:<12} {:>5} {:>12} {:>12}  {}\n", "scheme", "role", "n",
                                "mean KL", "max KL", "most sensitive");
  for (const auto& r : ranks)
    out += fmt::format("{:<14} {:<12} {:>5} {:>12.3e} {:>12.3e}  {}\n", r.scheme, r.role,
                       r.components, r.mean_kl, r.max_kl, r.worst_component);
  return out;
}

}  // namespace kllens
