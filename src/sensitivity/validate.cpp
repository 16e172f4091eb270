#include "sensitivity/validate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "stats/correlation.h"

namespace kllens {

using json = nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

json number_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

json ci_json(const BootstrapCI& ci) {
  return {{"estimate", number_or_null(ci.estimate)},
          {"lo", number_or_null(ci.lo)},
          {"hi", number_or_null(ci.hi)},
          {"resamples", ci.resamples}};
}

BootstrapCI rank_ci(const std::vector<double>& x, const std::vector<double>& y, bool kendall,
                    const ValidationOptions& o) {
  auto stat = [&](std::span<const int64_t> idx) {
    std::vector<double> xs(idx.size()), ys(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      xs[i] = x[static_cast<size_t>(idx[i])];
      ys[i] = y[static_cast<size_t>(idx[i])];
    }
    return kendall ? kendall_tau(xs, ys) : spearman_rho(xs, ys);
  };
  if (o.resamples <= 0) {
    std::vector<int64_t> all(x.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    BootstrapCI ci;
    ci.estimate = stat(all);
    ci.lo = ci.hi = kNaN;
    return ci;
  }
  return bootstrap_ci(stat, static_cast<int64_t>(x.size()), o.resamples, o.seed, o.confidence);
}

std::string fmt_num(double x, const char* spec) {
  return std::isfinite(x) ? fmt::format(fmt::runtime(spec), x) : std::string("n/a");
}

}  // namespace

const std::vector<DamageMetric>& damage_metrics() {
  static const std::vector<DamageMetric> m = {{"kl", "kl", 1},         {"rkl", "rkl", 1},
                                              {"mse", "mse", 1},       {"-sqnr", "sqnr_db", -1},
                                              {"-top1", "top1", -1},   {"dnll", "dnll", 1}};
  return m;
}

Validation validate_metrics(const std::vector<SweepEntry>& calib,
                            const std::vector<SweepEntry>& eval, double eval_fp_ppl,
                            const ValidationOptions& options) {
  Validation v;
  v.eval_fp_ppl = eval_fp_ppl;
  v.options = options;
  std::map<std::string, const SweepEntry*> by_key;
  for (const auto& e : eval) by_key[e.component + "\n" + e.scheme] = &e;
  if (by_key.size() != calib.size())
    fail("the calibration sweep has {} entries but the evaluation sweep {}", calib.size(),
         by_key.size());
  for (const auto& c : calib) {
    auto it = by_key.find(c.component + "\n" + c.scheme);
    if (it == by_key.end())
      fail("{} ({}) is missing from the evaluation sweep", c.component, c.scheme);
    ValidatedEntry ve;
    ve.calib = c;
    ve.eval_dnll = it->second->metrics.dnll;
    ve.eval_kl = it->second->metrics.kl;
    ve.eval_ppl = eval_fp_ppl * std::exp(ve.eval_dnll.mean);
    // expm1: for int8-sized changes exp(dnll) - 1 would lose most of its digits.
    ve.delta_ppl = eval_fp_ppl * std::expm1(ve.eval_dnll.mean);
    v.entries.push_back(std::move(ve));
  }
  if (v.entries.size() < 3)
    fail("only {} (component, scheme) entries: ranking needs at least 3 (widen --components or "
         "add --schemes)", v.entries.size());

  std::vector<std::string> scopes = {"all"};
  for (const auto& e : v.entries)
    if (std::find(scopes.begin(), scopes.end(), e.calib.scheme) == scopes.end())
      scopes.push_back(e.calib.scheme);
  // A single scheme's "per scheme" row would repeat the "all" row.
  if (scopes.size() == 2) scopes.resize(1);

  struct Task {
    std::string scope;
    const DamageMetric* metric;
    std::vector<double> x, y;
  };
  std::vector<Task> tasks;
  for (const auto& scope : scopes)
    for (const auto& m : damage_metrics()) {
      Task t{scope, &m, {}, {}};
      for (const auto& e : v.entries) {
        if (scope != "all" && e.calib.scheme != scope) continue;
        t.x.push_back(m.sign * metric_value(e.calib.metrics, m.metric));
        t.y.push_back(e.delta_ppl);
      }
      if (t.x.size() < 3) continue;
      tasks.push_back(std::move(t));
    }
  v.agreements.resize(tasks.size());
  // Rank statistics are O(n^2) per resample: spread the (metric, scope) tasks over threads.
  // Each task is deterministic on its own, so the result does not depend on the schedule.
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < tasks.size(); ++i) {
    const Task& t = tasks[i];
    RankAgreement& a = v.agreements[i];
    a.scope = t.scope;
    a.metric = t.metric->name;
    a.n = static_cast<int64_t>(t.x.size());
    bool finite = true;
    for (size_t k = 0; k < t.x.size(); ++k)
      finite = finite && std::isfinite(t.x[k]) && std::isfinite(t.y[k]);
    if (!finite) {  // a metric the sweep could not compute (e.g. NaN SQNR): no ranking
      a.tau.estimate = a.tau.lo = a.tau.hi = kNaN;
      a.rho = a.tau;
      continue;
    }
    a.tau = rank_ci(t.x, t.y, true, v.options);
    a.rho = rank_ci(t.x, t.y, false, v.options);
  }
  return v;
}

json validation_json(const Validation& v) {
  json agreement = json::array();
  for (const auto& a : v.agreements)
    agreement.push_back({{"scope", a.scope},
                         {"metric", a.metric},
                         {"n", a.n},
                         {"kendall_tau", ci_json(a.tau)},
                         {"spearman_rho", ci_json(a.rho)}});
  json entries = json::array();
  for (const auto& e : v.entries) {
    json calib = json::object();
    for (const auto& m : metric_names())
      calib[m] = number_or_null(metric_value(e.calib.metrics, m));
    entries.push_back({{"component", e.calib.component},
                       {"layer", e.calib.layer},
                       {"role", e.calib.role},
                       {"scheme", e.calib.scheme},
                       {"params", e.calib.params},
                       {"bytes", e.calib.bytes},
                       {"calibration", calib},
                       {"eval",
                        {{"dnll", number_or_null(e.eval_dnll.mean)},
                         {"dnll_stderr", number_or_null(e.eval_dnll.stderr_)},
                         {"kl", number_or_null(e.eval_kl.mean)},
                         {"ppl", number_or_null(e.eval_ppl)},
                         {"delta_ppl", number_or_null(e.delta_ppl)}}}});
  }
  return {{"bootstrap",
           {{"resamples", v.options.resamples},
            {"seed", v.options.seed},
            {"confidence", v.options.confidence}}},
          {"agreement", agreement},
          {"entries", entries}};
}

std::string format_agreements(const Validation& v) {
  const bool ci = v.options.resamples > 0;
  std::string out = fmt::format("{:<14} {:<7} {:>5}  {:>8} {:<18}  {:>8} {:<18}\n", "scope",
                                "metric", "n", "tau-b", ci ? fmt::format(" [{:g}% CI]",
                                                                         100 * v.options.confidence)
                                                           : "",
                                "rho", ci ? fmt::format(" [{:g}% CI]", 100 * v.options.confidence)
                                          : "");
  for (const auto& a : v.agreements) {
    auto interval = [&](const BootstrapCI& c) {
      if (!ci) return std::string();
      return fmt::format(" [{}, {}]", fmt_num(c.lo, "{:+.3f}"), fmt_num(c.hi, "{:+.3f}"));
    };
    out += fmt::format("{:<14} {:<7} {:>5}  {:>8} {:<18}  {:>8} {:<18}\n", a.scope, a.metric, a.n,
                       fmt_num(a.tau.estimate, "{:+.3f}"), interval(a.tau),
                       fmt_num(a.rho.estimate, "{:+.3f}"), interval(a.rho));
  }
  return out;
}

std::string format_validated_entries(const Validation& v, size_t top) {
  std::vector<const ValidatedEntry*> sorted;
  for (const auto& e : v.entries) sorted.push_back(&e);
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return a->delta_ppl > b->delta_ppl;
  });
  std::string out = fmt::format("{:<48} {:<14} {:>11} {:>11} {:>22} {:>11} {:>11}\n", "component",
                                "scheme", "calib KL", "calib dNLL", "eval dNLL ± se",
                                "eval ppl", "eval Δppl");
  for (size_t i = 0; i < sorted.size() && i < top; ++i) {
    const auto& e = *sorted[i];
    out += fmt::format("{:<48} {:<14} {:>11.3e} {:>11.3e} {:>11.3e} ± {:<8.1e} {:>11.4f} {:>+11.4f}\n",
                       e.calib.component, e.calib.scheme, e.calib.metrics.kl.mean,
                       e.calib.metrics.dnll.mean, e.eval_dnll.mean, e.eval_dnll.stderr_,
                       e.eval_ppl, e.delta_ppl);
  }
  return out;
}

}  // namespace kllens
