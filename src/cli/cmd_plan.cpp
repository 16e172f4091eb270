// plan: one scheme per component from a sensitivity file (docs/planning.md).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <iostream>
#include <limits>
#include <map>
#include <set>

#include "cli/common.h"
#include "core/error.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "eval/quantized_eval.h"
#include "plan/plan_io.h"
#include "plan/planner.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

namespace {

using json = nlohmann::json;

// Components per role and scheme, for people.
std::string format_plan_table(const PlanProblem& problem, const Choice& choice) {
  std::vector<std::string> roles, schemes;
  std::map<std::string, std::map<std::string, int>> counts;
  for (size_t i = 0; i < choice.size(); ++i) {
    const auto& c = problem.components[i];
    const std::string& s = c.candidates[static_cast<size_t>(choice[i])].scheme;
    if (!counts.count(c.role)) roles.push_back(c.role);
    if (std::find(schemes.begin(), schemes.end(), s) == schemes.end()) schemes.push_back(s);
    ++counts[c.role][s];
  }
  std::sort(schemes.begin(), schemes.end(), [](const std::string& a, const std::string& b) {
    if (a == kKeepScheme || b == kKeepScheme) return a == kKeepScheme && b != kKeepScheme;
    return a < b;
  });
  size_t w = 4;
  for (const auto& r : roles) w = std::max(w, r.size());
  std::string out = fmt::format("{:<{}}", "role", w);
  for (const auto& s : schemes) out += fmt::format("  {:>{}}", s, std::max<size_t>(s.size(), 4));
  out += "\n";
  for (const auto& r : roles) {
    out += fmt::format("{:<{}}", r, w);
    for (const auto& s : schemes) {
      const int n = counts[r].count(s) ? counts[r][s] : 0;
      out += fmt::format("  {:>{}}", n ? std::to_string(n) : "-", std::max<size_t>(s.size(), 4));
    }
    out += "\n";
  }
  return out;
}

int count_changed(const Choice& c) {
  int n = 0;
  for (int j : c) n += j != 0;
  return n;
}

json point_json(const PlanProblem& problem, const PointPlan& pt) {
  return {{"name", pt.name},
          {"cutoff", pt.cutoff},
          {"bytes", plan_bytes(problem, pt.choice)},
          {"bits_per_weight", bits_per_weight(problem, plan_bytes(problem, pt.choice))},
          {"predicted_metric_sum", plan_cost(problem, pt.choice)},
          {"quantized", count_changed(pt.choice)},
          {"components", choice_schemes(problem, pt.choice)}};
}

}  // namespace

void add_plan(CLI::App& app) {
  struct Opts {
    std::string sens, metric = "kl", method = "optimal", out, model, eval, point;
    std::vector<std::string> keep;
    double avg_bits = 0, gamma = 1.10;
    int64_t max_bytes = 0, ctx = 512, eval_windows = 4, grid = 20000;
    bool fixed_base = false, dry_run = false, json = false;
    ThreadsOption threads;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "plan",
      "choose a scheme per component from a sensitivity file: optimal (least summed damage within "
      "a size budget), greedy (the published perplexity-guarded walk) or points (the published "
      "p01..p10 sweep)");
  cmd->add_option("SENS", o->sens, "sensitivity file written by `kllens sensitivity`")->required();
  auto* avg = cmd->add_option("--avg-bits", o->avg_bits,
                              "budget in bits per weight over all weights (scales included)");
  auto* maxb = cmd->add_option("--max-bytes", o->max_bytes, "budget in bytes over all weights");
  avg->excludes(maxb);
  cmd->add_option("--metric", o->metric, "damage to minimise: kl, rkl, mse or sqnr (noise-to-signal power 10^(-SQNR/10))")
      ->capture_default_str()
      ->check(CLI::IsMember(plan_metric_names()));
  cmd->add_option("--method", o->method, "optimal, greedy or points")
      ->capture_default_str()
      ->check(CLI::IsMember({"optimal", "greedy", "points"}));
  cmd->add_option("--keep", o->keep,
                  "ROLE=SCHEME or REGEX=SCHEME: fix these components (bf16 = keep, or a scheme of "
                  "the file); later rules win; conv1d is bf16 unless a rule names it")
      ->take_all();
  auto* model_opt = cmd->add_option("--model", o->model, "greedy: the model folder the file was measured on");
  auto* eval_opt = cmd->add_option("--eval", o->eval, "greedy: text whose perplexity guards each step");
  auto* ctx_opt = cmd->add_option("--ctx", o->ctx, "greedy: window length")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  auto* win_opt = cmd->add_option("--eval-windows", o->eval_windows, "greedy: windows of --eval used (0 = all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  auto* gamma_opt = cmd->add_option("--gamma", o->gamma, "greedy: accept a step when ppl <= gamma x reference")
      ->capture_default_str()->check(CLI::PositiveNumber);
  auto* fixed_opt = cmd->add_flag("--fixed-base", o->fixed_base,
                                  "greedy: compare with the starting perplexity, not the last accepted one");
  auto* point_opt = cmd->add_option("--point", o->point, "points: the configuration for \"components\" (p01..p10)");
  auto* grid_opt = cmd->add_option("--grid", o->grid, "optimal: byte cells of the dynamic program")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{10000000}));
  cmd->add_option("--out", o->out, "PLAN.json to write");
  cmd->add_flag("--dry-run", o->dry_run, "print the plan, write nothing");
  cmd->add_flag("--json", o->json, "print the plan JSON instead of the table");
  o->threads.add(cmd);
  cmd->callback([o, avg, maxb, model_opt, eval_opt, ctx_opt, win_opt, gamma_opt, fixed_opt, point_opt,
                 grid_opt] {
    o->threads.apply();
    const bool has_budget = avg->count() || maxb->count();
    const bool greedy = o->method == "greedy", points = o->method == "points";
    if (o->out.empty() && !o->dry_run) throw UsageError("--out is required (or --dry-run)");
    if (o->method == "optimal" && !has_budget)
      throw UsageError("--method optimal needs a budget: --avg-bits X or --max-bytes N");
    if (greedy && has_budget)
      throw UsageError("--method greedy has no size budget (it stops where perplexity allows); "
                       "drop --avg-bits/--max-bytes");
    if (greedy && (o->model.empty() || o->eval.empty()))
      throw UsageError("--method greedy needs --model MODEL and --eval TEXT");
    for (auto* opt : {model_opt, eval_opt, ctx_opt, win_opt, gamma_opt, fixed_opt})
      if (!greedy && opt->count())
        throw UsageError(fmt::format("{} applies to --method greedy only", opt->get_name()));
    if (!points && point_opt->count()) throw UsageError("--point applies to --method points only");
    if (o->method != "optimal" && grid_opt->count()) throw UsageError("--grid applies to --method optimal only");
    if (avg->count() && !(o->avg_bits > 0)) throw UsageError("--avg-bits must be positive");
    if (maxb->count() && o->max_bytes <= 0) throw UsageError("--max-bytes must be positive");
    if (points && point_opt->count()) {
      const std::string& s = o->point;
      if (s.size() != 3 || s[0] != 'p' || !std::isdigit(static_cast<unsigned char>(s[1])) ||
          !std::isdigit(static_cast<unsigned char>(s[2])) || std::stoi(s.substr(1)) < 1 ||
          std::stoi(s.substr(1)) > 10)
        throw UsageError(fmt::format("--point '{}': expected p01..p10", s));
    }

    ProblemOptions popt;
    popt.metric = o->metric;
    for (const auto& k : o->keep) popt.keep.push_back(parse_keep_rule(k));
    const SensitivityReport report = read_sensitivity_json(o->sens);
    const PlanProblem problem = build_problem(report, popt);

    int64_t budget = 0;
    if (avg->count()) {
      const double b = std::floor(o->avg_bits * static_cast<double>(problem.total_params) / 8.0);
      if (b > 9e18) throw UsageError("--avg-bits is too large");
      budget = static_cast<int64_t>(b);
    } else if (maxb->count()) {
      budget = o->max_bytes;
    }
    if (has_budget) check_budget_feasible(problem, budget);

    Choice choice;
    json extra = json::object();
    std::string detail;
    if (o->method == "optimal") {
      OptimalOptions opt;
      opt.grid = o->grid;
      OptimalReport rep;
      choice = solve_optimal(problem, budget, opt, &rep);
      const double cost = plan_cost(problem, choice);
      extra["optimal"] = {{"grid", o->grid},
                          {"granularity_bytes", rep.granularity},
                          {"cells", rep.cells},
                          {"exact", rep.exact},
                          {"free_components", rep.free_components},
                          {"lower_bound", rep.lower_bound},
                          {"slack_bytes", rep.slack_bytes}};
      detail = fmt::format(
          "optimal: {} free components, {} cells of {} bytes ({}); certified lower bound on the "
          "best summed {} within the budget: {:.6g} (this plan {:.6g})\n",
          rep.free_components, rep.cells, rep.granularity,
          rep.exact ? "exact: no rounding" : fmt::format("rounded; optimal among plans up to {} bytes below the budget", rep.slack_bytes),
          problem.metric, rep.lower_bound, cost);
    } else if (greedy) {
      auto model = open_float_model(o->model, "plan");
      if (model->weights().total_params() != problem.total_params)
        fail("{} has {} parameters, but the sensitivity file was measured on a model with {}",
             o->model, model->weights().total_params(), problem.total_params);
      {
        SchemeAssignment names;
        for (const auto& c : problem.components) names[c.name] = QuantScheme::parse(kKeepScheme);
        validate_assignment(*model, names);
      }
      const auto calib = load_calibration(o->model, o->eval, o->ctx, o->eval_windows);
      WeightSwap swap(*model);
      int evaluated = 0;
      const PplOracle oracle = [&](const std::map<std::string, std::string>& schemes) {
        SchemeAssignment a;
        for (const auto& [name, s] : schemes) a[name] = QuantScheme::parse(s);
        swap.apply(a);
        ++evaluated;
        return perplexity(*model, calib.windows, false).ppl;
      };
      GreedyOptions gopt;
      gopt.gamma = o->gamma;
      gopt.fixed_base = o->fixed_base;
      const size_t total = sorted_entries(problem).size();
      size_t done = 0;
      const auto on_step = [&](const GreedyStep& s) {
        ++done;
        std::cerr << fmt::format("[{}/{}] {:<8} {} {}", done, total,
                                 s.skipped ? "skip" : s.accepted ? "accept" : "reject", s.component, s.scheme);
        if (!s.skipped) std::cerr << fmt::format("  ppl {:.4f} vs {:.4f} x {}", s.ppl, s.reference, o->gamma);
        std::cerr << "\n";
      };
      const GreedyResult g = solve_greedy(problem, oracle, gopt, on_step);
      swap.restore_all();
      choice = g.choice;
      json steps = json::array();
      for (const auto& s : g.steps)
        steps.push_back({{"component", s.component},
                         {"scheme", s.scheme},
                         {"cost", s.cost},
                         {"ppl", s.skipped ? json(nullptr) : json(s.ppl)},
                         {"reference", s.reference},
                         {"decision", s.skipped ? "skipped" : s.accepted ? "accepted" : "rejected"}});
      int accepted = 0;
      for (const auto& s : g.steps) accepted += s.accepted;
      extra["greedy"] = {{"gamma", o->gamma},
                         {"fixed_base", o->fixed_base},
                         {"eval", calib.description},
                         {"start_ppl", g.start_ppl},
                         {"final_ppl", g.final_ppl},
                         {"accepted", accepted},
                         {"steps", steps}};
      detail = fmt::format(
          "greedy: {} entries, {} accepted, {} perplexity evaluations on {} windows of {}; ppl {:.4f} "
          "-> {:.4f} ({} base, gamma {})\n",
          g.steps.size(), accepted, evaluated, calib.windows.size(), o->ctx, g.start_ppl,
          g.final_ppl, o->fixed_base ? "fixed" : "drifting", o->gamma);
    } else {
      const auto pts = solve_points(problem);
      size_t sel = 4;  // p05
      if (point_opt->count()) {
        sel = static_cast<size_t>(std::stoi(o->point.substr(1)) - 1);
        if (has_budget && plan_bytes(problem, pts[sel].choice) > budget)
          std::cerr << fmt::format("note: {} ({} bytes) exceeds the budget of {} bytes; --point wins\n",
                                   pts[sel].name, plan_bytes(problem, pts[sel].choice), budget);
      } else if (has_budget) {
        // The largest configuration that fits (the least damage the budget allows).
        int best = -1;
        for (size_t k = 0; k < pts.size(); ++k) {
          const int64_t b = plan_bytes(problem, pts[k].choice);
          if (b <= budget && (best < 0 || b > plan_bytes(problem, pts[static_cast<size_t>(best)].choice)))
            best = static_cast<int>(k);
        }
        if (best < 0) {
          size_t smallest = 0;
          for (size_t k = 1; k < pts.size(); ++k)
            if (plan_bytes(problem, pts[k].choice) < plan_bytes(problem, pts[smallest].choice)) smallest = k;
          const int64_t b = plan_bytes(problem, pts[smallest].choice);
          fail("no point fits the budget of {} bytes ({:.4f} bits per weight): the smallest is {} "
               "at {} bytes ({:.4f} bits per weight)",
               budget, bits_per_weight(problem, budget), pts[smallest].name, b, bits_per_weight(problem, b));
        }
        sel = static_cast<size_t>(best);
      }
      choice = pts[sel].choice;
      json configs = json::array();
      detail = fmt::format("points ({} sorted entries):\n  {:<5} {:>7} {:>12} {:>8} {:>10} {:>14}\n",
                           sorted_entries(problem).size(), "point", "entries", "bytes", "bits/w",
                           "quantized", "sum " + problem.metric);
      for (const auto& pt : pts) {
        configs.push_back(point_json(problem, pt));
        const int64_t b = plan_bytes(problem, pt.choice);
        detail += fmt::format("{} {:<5} {:>7} {:>12} {:>8.4f} {:>10} {:>14.6g}\n",
                              &pt == &pts[sel] ? "*" : " ", pt.name, pt.cutoff, b,
                              bits_per_weight(problem, b), count_changed(pt.choice),
                              plan_cost(problem, pt.choice));
      }
      extra["point"] = pts[sel].name;
      extra["points"] = configs;
    }

    Plan plan = make_plan(problem, choice);
    plan.model = report.model;
    plan.sensitivity = {{"path", o->sens}, {"sha256", sha256_file_hex(o->sens)}};
    plan.method = o->method;
    plan.budget = {{"avg_bits", avg->count() ? json(o->avg_bits) : json(nullptr)},
                   {"max_bytes", maxb->count() ? json(o->max_bytes) : json(nullptr)},
                   {"bytes", has_budget ? json(budget) : json(nullptr)}};
    json forced = json::object();
    for (const auto& c : problem.components)
      if (!c.is_free()) forced[c.name] = c.forced_by;
    extra["keep_rules"] = o->keep;
    extra["forced"] = forced;
    plan.extra = extra;

    if (o->json) {
      print_json(plan_to_json(plan));
    } else {
      std::cout << format_plan_table(problem, choice) << "\n" << detail;
      std::cout << fmt::format(
          "{}: {} of {} components quantized; {} bytes = {:.4f} bits per weight over {} "
          "parameters{}; predicted {} sum {:.6g}\n",
          o->method, count_changed(choice), problem.components.size(), plan.bytes,
          plan.bits_per_weight, plan.params,
          has_budget ? fmt::format(" (budget {} bytes = {:.4f} bits per weight)", budget,
                                   bits_per_weight(problem, budget))
                     : "",
          problem.metric, plan.predicted_metric_sum);
    }
    if (!o->dry_run) {
      write_plan_json(o->out, plan);
      if (!o->json) std::cout << "wrote " << o->out << "\n";
    }
  });
}

}  // namespace kllens::cli
