#include "plan/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "eval/quantized_eval.h"
#include "models/model.h"
#include "quant/scheme.h"

namespace kllens {

namespace {

bool is_role_name(const std::string& s) {
  for (int r = 0; r <= static_cast<int>(Role::kOther); ++r)
    if (role_name(static_cast<Role>(r)) == s) return true;
  return false;
}

bool same_scheme(const std::string& a, const std::string& b) {
  return QuantScheme::parse(a) == QuantScheme::parse(b);
}

std::string format_size(int64_t bytes, int64_t params) {
  return fmt::format("{} bytes ({:.4f} bits per weight)", bytes,
                     params > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0);
}

}  // namespace

const std::vector<std::string>& plan_metric_names() {
  static const std::vector<std::string> names = {"kl", "rkl", "mse", "sqnr"};
  return names;
}

double plan_metric_cost(const EntryMetrics& m, const std::string& metric) {
  if (metric == "kl") return m.kl.mean;
  if (metric == "rkl") return m.rkl.mean;
  if (metric == "mse") return m.mse.mean;
  if (metric == "sqnr") {
    // The sweep averages SQNR over the positions that changed; an entry that changed nothing has
    // logit MSE 0 and no SQNR samples (its mean reads 0 dB), but its damage is 0.
    if (m.mse.mean == 0) return 0;
    return std::pow(10.0, -m.sqnr_db.mean / 10.0);
  }
  throw UsageError(fmt::format("unknown metric '{}' (kl, rkl, mse, sqnr)", metric));
}

KeepRule parse_keep_rule(const std::string& text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    throw UsageError(fmt::format("--keep '{}': expected ROLE=SCHEME or REGEX=SCHEME", text));
  KeepRule r;
  r.text = text;
  r.pattern = text.substr(0, eq);
  r.scheme = text.substr(eq + 1);
  QuantScheme::parse(r.scheme);  // a malformed scheme is a usage error listing the forms
  r.is_role = is_role_name(r.pattern);
  if (!r.is_role) {
    try {
      std::regex re(r.pattern);
    } catch (const std::regex_error& e) {
      throw UsageError(fmt::format("--keep '{}': '{}' is neither a role name nor a valid regular "
                                   "expression ({})", text, r.pattern, e.what()));
    }
  }
  return r;
}

PlanProblem build_problem(const SensitivityReport& report, const ProblemOptions& options) {
  PlanProblem p;
  p.metric = options.metric;
  plan_metric_cost(EntryMetrics{}, p.metric);  // validates the name
  if (!report.model.is_object() || !report.model.contains("params") ||
      !report.model["params"].is_number_integer())
    fail("the sensitivity file's \"model\" has no integer \"params\" (total parameter count)");
  p.total_params = report.model["params"].get<int64_t>();
  if (p.total_params <= 0) fail("the sensitivity file's model has {} parameters", p.total_params);
  if (report.entries.empty()) fail("the sensitivity file has no entries");

  const QuantScheme keep = QuantScheme::parse(kKeepScheme);
  std::unordered_map<std::string, size_t> index;
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& e : report.entries) {
    auto [it, inserted] = index.emplace(e.component, p.components.size());
    if (inserted) {
      PlanComponent c;
      c.name = e.component;
      c.role = e.role;
      c.layer = e.layer;
      c.params = e.params;
      c.candidates.push_back({kKeepScheme, 2 * e.params, 0.0});
      p.components.push_back(std::move(c));
    }
    PlanComponent& c = p.components[it->second];
    if (c.params != e.params || c.role != e.role)
      fail("sensitivity entries for {} disagree on its role or parameter count", e.component);
    const QuantScheme scheme = QuantScheme::parse(e.scheme);
    if (!seen.insert({e.component, scheme.to_string()}).second)
      fail("the sensitivity file has two entries for {} at {}", e.component, e.scheme);
    const double cost = plan_metric_cost(e.metrics, p.metric);
    if (!std::isfinite(cost))
      fail("the sensitivity entry {} at {} has no finite {} value", e.component, e.scheme, p.metric);
    if (e.bytes <= 0) fail("the sensitivity entry {} at {} has {} bytes", e.component, e.scheme, e.bytes);
    if (scheme == keep) {
      // A measured bf16 entry (a wider checkpoint) replaces the assumed zero-damage keep.
      c.candidates[0] = {kKeepScheme, e.bytes, cost};
    } else {
      c.candidates.push_back({e.scheme, e.bytes, cost});
    }
  }
  int64_t component_params = 0;
  for (const auto& c : p.components) {
    // Checked before adding (params >= 1), so the running sum stays at most total_params.
    if (c.params > p.total_params - component_params)
      fail("the sensitivity file's components hold more than the model's {} parameters (at {})",
           p.total_params, c.name);
    component_params += c.params;
    if (c.candidates.size() > 255)
      fail("{} has {} candidate schemes; at most 255 are supported", c.name, c.candidates.size());
  }
  p.other_params = p.total_params - component_params;

  // Forced assignments: the default first, then the rules in order (later rules win).
  auto force = [&](PlanComponent& c, const std::string& scheme, const std::string& why) {
    for (size_t j = 0; j < c.candidates.size(); ++j) {
      if (same_scheme(c.candidates[j].scheme, scheme)) {
        c.forced = static_cast<int>(j);
        c.forced_by = why;
        return;
      }
    }
    throw UsageError(fmt::format("{}: the sensitivity file has no {} entry for {} (the sweep "
                                 "skipped it: its row length cannot be stored in that scheme?)",
                                 why, scheme, c.name));
  };
  if (options.conv1d_full_precision)
    for (auto& c : p.components)
      if (c.role == "conv1d") force(c, kKeepScheme, "default (conv1d stays bf16)");
  for (const auto& rule : options.keep) {
    const QuantScheme s = QuantScheme::parse(rule.scheme);
    if (!(s == keep)) {
      bool in_file = false;
      for (const auto& fs : report.schemes) in_file = in_file || QuantScheme::parse(fs) == s;
      if (!in_file) {
        std::string have = kKeepScheme;
        for (const auto& fs : report.schemes) have += ", " + fs;
        throw UsageError(fmt::format("--keep '{}': scheme {} is not in the sensitivity file "
                                     "(choose from: {})", rule.text, rule.scheme, have));
      }
    }
    std::optional<std::regex> re;
    if (!rule.is_role) re.emplace(rule.pattern);
    int matched = 0;
    for (auto& c : p.components) {
      const bool hit = rule.is_role ? c.role == rule.pattern : std::regex_search(c.name, *re);
      if (!hit) continue;
      force(c, rule.scheme, "--keep " + rule.text);
      ++matched;
    }
    if (matched == 0 && !rule.is_role)
      throw UsageError(fmt::format("--keep '{}': no component of the sensitivity file matches '{}'",
                                   rule.text, rule.pattern));
  }
  return p;
}

void use_gguf_sizes(PlanProblem& problem, const Model& model) {
  problem.other_bytes_exact = non_component_gguf_bytes(model);
  for (PlanComponent& c : problem.components) {
    const Param* p = model.weights().find(c.name);
    if (!p || !p->is_component())
      fail("the sensitivity file names {}, which this model does not have as a component", c.name);
    for (Candidate& cand : c.candidates)
      cand.bytes = component_gguf_bytes(model, *p, QuantScheme::parse(cand.scheme));
  }
  problem.gguf_sizes = true;
}

RefineResult refine_optimal(const PlanProblem& p, int64_t budget_bytes, const Choice& start,
                            const std::function<double(const Choice&)>& measure, int rounds,
                            int per_round, const OptimalOptions& options) {
  KLLENS_CHECK(start.size() == p.components.size(), "refine: choice size {} != {}", start.size(),
               p.components.size());
  RefineResult r;
  r.choice = start;
  r.start_predicted = r.final_predicted = plan_cost(p, start);
  r.start_measured = r.final_measured = measure(start);
  r.measurements = 1;
  std::set<Choice> measured = {start};
  PlanProblem fixed = p;  // accepted moves become forced choices
  for (int round = 1; round <= rounds; ++round) {
    struct Neighbour {
      double predicted;
      Choice choice;
      int component, candidate;
    };
    std::vector<Neighbour> neighbours;
    for (size_t i = 0; i < fixed.components.size(); ++i) {
      if (!fixed.components[i].is_free()) continue;
      for (size_t c = 0; c < fixed.components[i].candidates.size(); ++c) {
        if (static_cast<int>(c) == r.choice[i]) continue;
        PlanProblem q = fixed;
        q.components[i].forced = static_cast<int>(c);
        if (plan_bytes(q, smallest_choice(q)) > budget_bytes) continue;
        Choice n = solve_optimal(q, budget_bytes, options);
        if (measured.count(n)) continue;
        neighbours.push_back({plan_cost(q, n), std::move(n), static_cast<int>(i), static_cast<int>(c)});
      }
    }
    std::sort(neighbours.begin(), neighbours.end(),
              [](const Neighbour& a, const Neighbour& b) { return a.predicted < b.predicted; });
    // Several moves can lead to the same plan: measure each plan once.
    std::vector<Neighbour> chosen;
    std::set<Choice> seen;
    for (auto& n : neighbours) {
      if (static_cast<int>(chosen.size()) >= per_round) break;
      if (seen.insert(n.choice).second) chosen.push_back(std::move(n));
    }
    if (chosen.empty()) break;
    int best = -1;
    double best_measured = r.final_measured;
    for (size_t k = 0; k < chosen.size(); ++k) {
      const double m = measure(chosen[k].choice);
      ++r.measurements;
      measured.insert(chosen[k].choice);
      const PlanComponent& c = fixed.components[static_cast<size_t>(chosen[k].component)];
      r.steps.push_back({round, c.name, c.candidates[static_cast<size_t>(chosen[k].candidate)].scheme,
                         chosen[k].predicted, m, false});
      if (m < best_measured) {
        best_measured = m;
        best = static_cast<int>(k);
      }
    }
    if (best < 0) break;
    const Neighbour& b = chosen[static_cast<size_t>(best)];
    r.steps[r.steps.size() - chosen.size() + static_cast<size_t>(best)].accepted = true;
    fixed.components[static_cast<size_t>(b.component)].forced = b.candidate;
    fixed.components[static_cast<size_t>(b.component)].forced_by = "refinement";
    r.choice = b.choice;
    r.final_measured = best_measured;
    r.final_predicted = plan_cost(p, b.choice);
  }
  return r;
}

int64_t plan_bytes(const PlanProblem& p, const Choice& c) {
  KLLENS_CHECK(c.size() == p.components.size(), "choice size {} != {}", c.size(), p.components.size());
  int64_t b = p.other_bytes();
  for (size_t i = 0; i < c.size(); ++i) b += p.components[i].candidates[static_cast<size_t>(c[i])].bytes;
  return b;
}

double plan_cost(const PlanProblem& p, const Choice& c) {
  double s = 0;
  for (size_t i = 0; i < c.size(); ++i) s += p.components[i].candidates[static_cast<size_t>(c[i])].cost;
  return s;
}

double bits_per_weight(const PlanProblem& p, int64_t bytes) {
  return 8.0 * static_cast<double>(bytes) / static_cast<double>(p.total_params);
}

Choice smallest_choice(const PlanProblem& p) {
  Choice c(p.components.size(), 0);
  for (size_t i = 0; i < c.size(); ++i) {
    const auto& comp = p.components[i];
    if (!comp.is_free()) {
      c[i] = comp.forced;
      continue;
    }
    // Smallest bytes; among equal sizes the least damage.
    for (size_t j = 1; j < comp.candidates.size(); ++j) {
      const auto& a = comp.candidates[j];
      const auto& b = comp.candidates[static_cast<size_t>(c[i])];
      if (a.bytes < b.bytes || (a.bytes == b.bytes && a.cost < b.cost)) c[i] = static_cast<int>(j);
    }
  }
  return c;
}

Choice initial_choice(const PlanProblem& p) {
  Choice c(p.components.size(), 0);
  for (size_t i = 0; i < c.size(); ++i)
    if (!p.components[i].is_free()) c[i] = p.components[i].forced;
  return c;
}

void check_budget_feasible(const PlanProblem& p, int64_t budget_bytes) {
  const int64_t least = plan_bytes(p, smallest_choice(p));
  if (budget_bytes < least)
    fail("the budget of {} cannot be met: the smallest plan this sensitivity file allows is {} "
         "(every component at its smallest scheme, --keep and conv1d rules applied, other tensors "
         "{})",
         format_size(budget_bytes, p.total_params), format_size(least, p.total_params),
         p.gguf_sizes ? "F32 as in the GGUF file" : "at bf16");
}

// Multiple-choice knapsack by dynamic programming. Sizes are measured above each component's
// smallest candidate (so the smallest choice weighs 0 and every cell is reachable), on a grid
// of g bytes: g = d * ceil(E / (d * grid)) with d the gcd of all size differences and E the
// spare budget. Weights are rounded up (ceil(e / g)) and the capacity down (floor(E / g)), so
// every plan the DP can pick fits the budget. A second DP with weights rounded down gives a
// certified lower bound on the true optimum (see docs/planning.md).
Choice solve_optimal(const PlanProblem& p, int64_t budget_bytes, const OptimalOptions& options,
                     OptimalReport* report_out) {
  if (options.grid < 1) throw UsageError("--grid must be at least 1");
  check_budget_feasible(p, budget_bytes);
  OptimalReport report;
  Choice choice = smallest_choice(p);
  const int64_t least = plan_bytes(p, choice);
  int64_t spare = budget_bytes - least;

  // Components with a real choice, and each candidate's size above the component's smallest.
  std::vector<size_t> free;
  int64_t max_extra = 0;
  int64_t d = 0;
  for (size_t i = 0; i < p.components.size(); ++i) {
    const auto& comp = p.components[i];
    if (!comp.is_free() || comp.candidates.size() < 2) continue;
    free.push_back(i);
    const int64_t base = comp.candidates[static_cast<size_t>(choice[i])].bytes;
    int64_t top = 0;
    for (const auto& cand : comp.candidates) {
      top = std::max(top, cand.bytes - base);
      if (cand.bytes > base) d = std::gcd(d, cand.bytes - base);
    }
    max_extra += top;
  }
  report.free_components = static_cast<int>(free.size());
  spare = std::min(spare, max_extra);  // a larger spare changes nothing but coarsens the grid
  if (d == 0) d = 1;
  const int64_t per_cell = std::max<int64_t>(1, (spare + d * options.grid - 1) / (d * options.grid));
  const int64_t g = d * per_cell;
  const int64_t C = spare / g;
  report.granularity = g;
  report.cells = C + 1;
  report.exact = per_cell == 1;
  report.slack_bytes = report.exact ? 0 : static_cast<int64_t>(free.size()) * (g - 1);

  const size_t cells = static_cast<size_t>(C + 1);
  if (static_cast<double>(cells) * static_cast<double>(free.size()) > 1e9)
    throw UsageError(fmt::format("--grid {} with {} components needs more than 1 GB of choice "
                                 "table; use a smaller grid", options.grid, free.size()));
  std::vector<double> cost(cells, 0.0), next_cost(cells);
  std::vector<int64_t> extra(cells, 0), next_extra(cells);
  std::vector<double> low(cells, 0.0), next_low(cells);
  std::vector<std::vector<uint8_t>> pick(free.size(), std::vector<uint8_t>(cells, 0));
  for (size_t k = 0; k < free.size(); ++k) {
    const auto& comp = p.components[free[k]];
    const int64_t base = comp.candidates[static_cast<size_t>(choice[free[k]])].bytes;
    for (size_t c = 0; c < cells; ++c) {
      double best = std::numeric_limits<double>::infinity(), best_low = best;
      int64_t best_extra = std::numeric_limits<int64_t>::max();
      uint8_t best_j = 0;
      for (size_t j = 0; j < comp.candidates.size(); ++j) {
        const auto& cand = comp.candidates[j];
        const int64_t e = cand.bytes - base;
        const int64_t up = e <= 0 ? 0 : (e + g - 1) / g;
        const int64_t down = e <= 0 ? 0 : e / g;
        if (up <= static_cast<int64_t>(c)) {
          const double v = cost[c - static_cast<size_t>(up)] + cand.cost;
          const int64_t x = extra[c - static_cast<size_t>(up)] + std::max<int64_t>(e, 0);
          // Ties in damage go to the smaller plan.
          if (v < best || (v == best && x < best_extra)) {
            best = v;
            best_extra = x;
            best_j = static_cast<uint8_t>(j);
          }
        }
        if (down <= static_cast<int64_t>(c))
          best_low = std::min(best_low, low[c - static_cast<size_t>(down)] + cand.cost);
      }
      next_cost[c] = best;
      next_extra[c] = best_extra;
      next_low[c] = best_low;
      pick[k][c] = best_j;
    }
    std::swap(cost, next_cost);
    std::swap(extra, next_extra);
    std::swap(low, next_low);
  }
  // Backtrack from the full capacity.
  size_t c = static_cast<size_t>(C);
  for (size_t k = free.size(); k-- > 0;) {
    const auto& comp = p.components[free[k]];
    const int64_t base = comp.candidates[static_cast<size_t>(choice[free[k]])].bytes;
    const int j = pick[k][c];
    const int64_t e = comp.candidates[static_cast<size_t>(j)].bytes - base;
    const int64_t up = e <= 0 ? 0 : (e + g - 1) / g;
    choice[free[k]] = j;
    c -= static_cast<size_t>(up);
  }
  double constant = 0;  // damage of the components without a choice
  for (size_t i = 0; i < p.components.size(); ++i)
    if (std::find(free.begin(), free.end(), i) == free.end())
      constant += p.components[i].candidates[static_cast<size_t>(choice[i])].cost;
  report.lower_bound = constant + low[static_cast<size_t>(C)];
  KLLENS_CHECK(plan_bytes(p, choice) <= budget_bytes, "optimal plan {} bytes over budget {}",
               plan_bytes(p, choice), budget_bytes);
  if (report_out) *report_out = report;
  return choice;
}

std::vector<std::pair<int, int>> sorted_entries(const PlanProblem& p) {
  std::vector<std::pair<int, int>> s;
  for (size_t i = 0; i < p.components.size(); ++i) {
    if (!p.components[i].is_free()) continue;
    for (size_t j = 1; j < p.components[i].candidates.size(); ++j)
      s.emplace_back(static_cast<int>(i), static_cast<int>(j));
  }
  std::stable_sort(s.begin(), s.end(), [&](const auto& a, const auto& b) {
    return p.components[static_cast<size_t>(a.first)].candidates[static_cast<size_t>(a.second)].cost <
           p.components[static_cast<size_t>(b.first)].candidates[static_cast<size_t>(b.second)].cost;
  });
  return s;
}

namespace {
// The oracle's view: only components away from keep.
std::map<std::string, std::string> applied_schemes(const PlanProblem& p, const Choice& c) {
  std::map<std::string, std::string> m;
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i] != 0) m[p.components[i].name] = p.components[i].candidates[static_cast<size_t>(c[i])].scheme;
  return m;
}
}  // namespace

GreedyResult solve_greedy(const PlanProblem& p, const PplOracle& ppl, const GreedyOptions& options,
                          const std::function<void(const GreedyStep&)>& on_step) {
  if (!(options.gamma > 0)) throw UsageError("--gamma must be positive");
  GreedyResult r;
  r.choice = initial_choice(p);
  r.start_ppl = ppl(applied_schemes(p, r.choice));
  if (!std::isfinite(r.start_ppl))
    fail("the starting perplexity of greedy is {} (not finite)", r.start_ppl);
  double reference = r.start_ppl;
  r.final_ppl = r.start_ppl;
  for (const auto& [i, j] : sorted_entries(p)) {
    const auto& comp = p.components[static_cast<size_t>(i)];
    const auto& cand = comp.candidates[static_cast<size_t>(j)];
    GreedyStep step;
    step.component = comp.name;
    step.scheme = cand.scheme;
    step.cost = cand.cost;
    step.reference = reference;
    step.ppl = std::numeric_limits<double>::quiet_NaN();
    const int current = r.choice[static_cast<size_t>(i)];
    // A component that already holds a scheme only moves to a smaller one: a later (more
    // damaging) entry for it is worth trying only if it saves bytes.
    if (current != 0 && comp.candidates[static_cast<size_t>(current)].bytes <= cand.bytes) {
      step.skipped = true;
    } else {
      Choice trial = r.choice;
      trial[static_cast<size_t>(i)] = j;
      step.ppl = ppl(applied_schemes(p, trial));
      step.accepted = step.ppl <= options.gamma * reference;  // NaN rejects
      if (step.accepted) {
        r.choice = std::move(trial);
        r.final_ppl = step.ppl;
        if (!options.fixed_base) reference = step.ppl;
      }
    }
    r.steps.push_back(step);
    if (on_step) on_step(step);
  }
  return r;
}

// pareto.py: segment = (len(S) - 1) // 10, cutoff_i = i * segment; S[:cutoff] applied in order,
// a later entry for a component overriding an earlier one. cutoff_10 <= len(S) - 1, so the most
// damaging entry is never applied.
std::vector<PointPlan> solve_points(const PlanProblem& p) {
  const auto s = sorted_entries(p);
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t segment = n > 0 ? (n - 1) / 10 : 0;
  std::vector<PointPlan> out;
  for (int k = 1; k <= 10; ++k) {
    PointPlan pt;
    pt.name = fmt::format("p{:02d}", k);
    pt.cutoff = k * segment;
    pt.choice = initial_choice(p);
    for (int64_t e = 0; e < pt.cutoff; ++e)
      pt.choice[static_cast<size_t>(s[static_cast<size_t>(e)].first)] = s[static_cast<size_t>(e)].second;
    out.push_back(std::move(pt));
  }
  return out;
}

std::map<std::string, std::string> choice_schemes(const PlanProblem& p, const Choice& c) {
  std::map<std::string, std::string> m;
  for (size_t i = 0; i < c.size(); ++i)
    m[p.components[i].name] = p.components[i].candidates[static_cast<size_t>(c[i])].scheme;
  return m;
}

}  // namespace kllens
