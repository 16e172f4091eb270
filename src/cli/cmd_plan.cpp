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
#include "plan/llama_mix.h"
#include "plan/llama_mix_model.h"
#include "plan/plan_io.h"
#include "plan/planner.h"
#include "report/frontier.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

namespace {

using json = nlohmann::json;

// Components per role and scheme, for people: (role, scheme) per component.
std::string format_role_table(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::vector<std::string> roles, schemes;
  std::map<std::string, std::map<std::string, int>> counts;
  for (const auto& [role, s] : rows) {
    if (!counts.count(role)) roles.push_back(role);
    if (std::find(schemes.begin(), schemes.end(), s) == schemes.end()) schemes.push_back(s);
    ++counts[role][s];
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

std::string format_plan_table(const PlanProblem& problem, const Choice& choice) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (size_t i = 0; i < choice.size(); ++i) {
    const auto& c = problem.components[i];
    rows.emplace_back(c.role, c.candidates[static_cast<size_t>(choice[i])].scheme);
  }
  return format_role_table(rows);
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

// `plan --mix NAME`: the types llama-quantize gives every component of the sensitivity file's
// model under that mix (plan/llama_mix.h), as a plan. Components llama-quantize never quantizes
// (conv1d, the MoE router) keep f32, the type of kllens' F32 export they are copied from.
// The model a sensitivity file was measured on (its recorded path, or --model), checked against
// the file's parameter count. Plans need its tensor table for exact GGUF sizes.
std::unique_ptr<Model> open_sensitivity_model(const SensitivityReport& report, const std::string& sens,
                                              const std::string& model_override) {
  std::string model_path = model_override;
  if (model_path.empty()) {
    if (!report.model.contains("path") || !report.model["path"].is_string())
      fail("{}: the sensitivity file names no model path; give --model MODEL", sens);
    model_path = report.model["path"].get<std::string>();
  }
  auto model = open_float_model(model_path, "plan");
  const int64_t params = model->weights().total_params();
  if (report.model.contains("params") && report.model["params"].is_number_integer() &&
      report.model["params"].get<int64_t>() != params)
    fail("{} has {} parameters, but the sensitivity file was measured on a model with {}", model_path,
         params, report.model["params"].get<int64_t>());
  const std::string have = model->info().detail("gated_norm");
  const std::string measured =
      report.model.contains("gated_norm") && report.model["gated_norm"].is_string()
          ? report.model["gated_norm"].get<std::string>()
          : "";
  if (!measured.empty() && have != measured)
    fail("{} was measured on the model with the gated norm '{}', but it loads now with '{}' "
         "(give the same --mamba2-norm as the sweep)",
         sens, measured, have);
  return model;
}

void run_mix_plan(const std::string& sens, const std::string& model_override, const std::string& mix_name,
                  bool imatrix_rules, const std::string& metric, const std::string& out, bool dry_run,
                  bool as_json) {
  const SensitivityReport report = read_sensitivity_json(sens);
  auto model = open_sensitivity_model(report, sens, model_override);
  const int64_t params = model->weights().total_params();
  // llama-quantize's rules differ with --imatrix (q4_0 / iq4 mixes): a sensitivity file measured
  // with an importance matrix stands for a file quantized with it.
  const bool imatrix = imatrix_rules || !sensitivity_imatrix(report).is_null();

  const LlamaMixInput in = llama_mix_input(*model);
  const LlamaMixResult mix = llama_mix(in.tensors, in.facts, {mix_name, imatrix});

  // Damage of each (component, scheme) the sensitivity file measured.
  std::map<std::string, std::vector<const SweepEntry*>> measured;
  for (const auto& e : report.entries) measured[e.component].push_back(&e);

  Plan plan;
  plan.model = report.model;
  plan.sensitivity = {{"path", sens}, {"sha256", sha256_file_hex(sens)}};
  plan.method = "mix:" + mix.mix;
  plan.metric = metric;
  plan.budget = {{"avg_bits", nullptr}, {"max_bytes", nullptr}, {"bytes", nullptr}};
  SchemeAssignment assignment;
  std::vector<std::pair<std::string, std::string>> rows;
  json tensors = json::array();
  int quantized = 0, covered = 0;
  double predicted = 0;
  for (const LlamaMixDecision& d : mix.tensors) {
    const Param* p = model->weights().find(d.hf_name);
    if (!p || !p->is_component()) continue;
    const QuantScheme scheme = QuantScheme::parse(d.type);
    plan.components[d.hf_name] = scheme.to_string();
    assignment[d.hf_name] = scheme;
    rows.emplace_back(std::string(role_name(d.role)), scheme.to_string());
    tensors.push_back({{"component", d.hf_name},
                       {"gguf_name", d.gguf_name},
                       {"category", d.quantized ? json(d.category) : json(nullptr)},
                       {"rule_type", d.rule_type},
                       {"type", d.type},
                       {"fallback", d.fallback},
                       {"reason", d.reason}});
    if (scheme.is_keep()) continue;
    ++quantized;
    for (const SweepEntry* e : measured[d.hf_name]) {
      if (QuantScheme::parse(e->stored.empty() ? e->scheme : e->stored) == scheme) {
        predicted += plan_metric_cost(e->metrics, metric);
        ++covered;
        break;
      }
    }
  }
  plan.predicted_metric_sum = predicted;
  plan.bytes = assignment_bytes(*model, assignment);
  plan.params = params;
  plan.bits_per_weight = 8.0 * static_cast<double>(plan.bytes) / static_cast<double>(params);
  plan.extra["imatrix"] = sensitivity_imatrix(report);
  plan.extra["mix"] = {{"name", mix.mix},
                       {"base_type", mix.base_type},
                       {"imatrix", mix.imatrix},
                       {"llama_cpp_commit", mix.commit},
                       {"llama_cpp_layout", in.facts.llama_cpp_layout},
                       {"tied_embeddings", mix.tied_embeddings},
                       {"n_attention_wv", mix.n_attention_wv},
                       {"fallbacks", mix.n_fallback},
                       {"notes", mix.notes},
                       {"predicted_covers", covered},
                       {"quantized", quantized},
                       {"tensors", tensors}};

  if (as_json) {
    print_json(plan_to_json(plan));
  } else {
    std::cout << format_role_table(rows) << "\n";
    std::cout << fmt::format("llama-quantize {} ({}base type {}, rules of llama.cpp {}):\n", mix.mix,
                             imatrix ? "with an imatrix, " : "", mix.base_type, mix.commit);
    for (const auto& note : mix.notes) std::cout << "  note: " << note << "\n";
    for (const LlamaMixDecision& d : mix.tensors)
      if (d.fallback) std::cout << fmt::format("  fallback: {} {}\n", d.gguf_name, d.reason);
    std::cout << fmt::format(
        "{}: {} of {} components quantized; {} bytes = {:.4f} bits per weight over {} parameters; "
        "predicted {} sum {:.6g} over the {} of them the sensitivity file measured\n",
        plan.method, quantized, plan.components.size(), plan.bytes, plan.bits_per_weight, params, metric,
        predicted, covered);
  }
  if (!dry_run) {
    write_plan_json(out, plan);
    if (!as_json) std::cout << "wrote " << out << "\n";
  }
}

}  // namespace

void add_plan(CLI::App& app) {
  struct Opts {
    std::string sens, metric = "kl", method = "optimal", out, model, eval, point, mix;
    std::vector<std::string> keep;
    double avg_bits = 0, gamma = 1.10;
    int64_t max_bytes = 0, ctx = 512, eval_windows = 4, grid = 20000;
    bool fixed_base = false, dry_run = false, json = false, with_imatrix = false;
    int refine = 0, refine_per_round = 4;
    std::string calib;
    int64_t calib_windows = 4;
    RunOptions run;
    ImatrixOption imatrix;
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
  auto* maxb = cmd->add_option("--max-bytes", o->max_bytes, "budget: bytes of tensor data in the GGUF file `kllens quantize` writes (every tensor, exact)");
  avg->excludes(maxb);
  cmd->add_option("--metric", o->metric, "damage to minimise: kl, rkl, mse or sqnr (noise-to-signal power 10^(-SQNR/10))")
      ->capture_default_str()
      ->check(CLI::IsMember(plan_metric_names()));
  auto* method_opt = cmd->add_option("--method", o->method, "optimal, greedy or points")
      ->capture_default_str()
      ->check(CLI::IsMember({"optimal", "greedy", "points"}));
  auto* mix_opt = cmd->add_option(
      "--mix", o->mix,
      "instead of planning: the types llama-quantize's mix NAME gives every component of the "
      "sensitivity file's model (Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, IQ4_NL, IQ4_XS, ...; "
      "its rules as of llama.cpp " + std::string(kLlamaQuantCommit) + "); method \"mix:NAME\"");
  auto* imatrix_opt = cmd->add_flag("--with-imatrix", o->with_imatrix,
                                    "--mix: the rules as llama-quantize applies them with --imatrix");
  auto* keep_opt = cmd->add_option("--keep", o->keep,
                  "ROLE=SCHEME or REGEX=SCHEME: fix these components (bf16 = keep, or a scheme of "
                  "the file); later rules win; conv1d is bf16 unless a rule names it")
      ->take_all();
  auto* model_opt = cmd->add_option("--model", o->model, "the model folder the file was measured on (default: the path the sensitivity file records); plans are sized as its GGUF file");
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
  auto* refine_opt = cmd->add_option(
      "--refine", o->refine,
      "optimal: up to N rounds of measured refinement (the sum of single-component damages "
      "ignores interactions: each round measures the whole plan's KL on --calib for the best "
      "neighbouring plans and keeps the best measured one; needs --calib)")
      ->check(CLI::Range(0, 100));
  auto* per_round_opt = cmd->add_option("--refine-per-round", o->refine_per_round,
                                        "--refine: neighbouring plans measured per round")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  auto* calib_opt = cmd->add_option("--calib", o->calib,
                                    "--refine: calibration text the plans are measured on (the "
                                    "sweep's, never the evaluation text)");
  auto* calib_win_opt = cmd->add_option("--calib-windows", o->calib_windows,
                                        "--refine: windows of --calib (of --ctx tokens; 0 = all)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  o->imatrix.add(cmd);
  cmd->add_option("--out", o->out, "PLAN.json to write");
  cmd->add_flag("--dry-run", o->dry_run, "print the plan, write nothing");
  cmd->add_flag("--json", o->json, "print the plan JSON instead of the table");
  o->run.add(cmd);
  cmd->callback([o, avg, maxb, model_opt, eval_opt, ctx_opt, win_opt, gamma_opt, fixed_opt, point_opt,
                 grid_opt, method_opt, mix_opt, imatrix_opt, keep_opt, refine_opt, per_round_opt,
                 calib_opt, calib_win_opt] {
    const bool refining = o->refine > 0;
    for (auto* opt : {per_round_opt, calib_opt, calib_win_opt})
      if (opt->count() && !refining)
        throw UsageError(fmt::format("{} applies with --refine only", opt->get_name()));
    if (refining && (o->method != "optimal" || mix_opt->count()))
      throw UsageError("--refine refines an optimal plan: --method optimal with a budget");
    if (refining && o->calib.empty()) throw UsageError("--refine needs --calib TEXT");
    o->run.apply();
    const bool has_budget = avg->count() || maxb->count();
    const bool greedy = o->method == "greedy", points = o->method == "points";
    if (o->out.empty() && !o->dry_run) throw UsageError("--out is required (or --dry-run)");
    if (mix_opt->count()) {
      for (auto* opt : {avg, maxb, method_opt, keep_opt, eval_opt, ctx_opt, win_opt, gamma_opt, fixed_opt,
                        point_opt, grid_opt})
        if (opt->count())
          throw UsageError(fmt::format("{} does not apply to --mix (the mix decides every type)",
                                       opt->get_name()));
      run_mix_plan(o->sens, o->model, llama_mix_canonical(o->mix), o->with_imatrix, o->metric, o->out,
                   o->dry_run, o->json);
      return;
    }
    if (imatrix_opt->count()) throw UsageError("--with-imatrix applies to --mix only");
    if (o->method == "optimal" && !has_budget)
      throw UsageError("--method optimal needs a budget: --avg-bits X or --max-bytes N");
    if (greedy && has_budget)
      throw UsageError("--method greedy has no size budget (it stops where perplexity allows); "
                       "drop --avg-bits/--max-bytes");
    if (greedy && (o->model.empty() || o->eval.empty()))
      throw UsageError("--method greedy needs --model MODEL and --eval TEXT");
    for (auto* opt : {eval_opt, win_opt, gamma_opt, fixed_opt})
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
    PlanProblem problem = build_problem(report, popt);
    // Every size from here on is the GGUF file's tensor data (eval/quantized_eval.h).
    auto model = open_sensitivity_model(report, o->sens, o->model);
    use_gguf_sizes(problem, *model);

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
      if (refining) {
        o->imatrix.load(*model);
        check_same_imatrix(sensitivity_imatrix(report), o->imatrix, o->sens);
        const auto calib = load_calibration(model->info().folder, o->calib, o->ctx, o->calib_windows);
        if (calib.windows.empty()) fail("{}: too short for one window of {} tokens", o->calib, o->ctx);
        PlanEvaluator evaluator(*model, calib.windows, int64_t{1} << 30, false);
        evaluator.set_importance(o->imatrix.fn());
        const auto measure = [&](const Choice& c) {
          SchemeAssignment a;
          for (const auto& [name, sc] : choice_schemes(problem, c)) a[name] = QuantScheme::parse(sc);
          const QuantEvalResult r = evaluator.evaluate(a);
          return problem.metric == "rkl" ? r.logits.kl_reverse.mean : r.logits.kl_forward.mean;
        };
        if (problem.metric != "kl" && problem.metric != "rkl")
          throw UsageError("--refine measures KL: use --metric kl or rkl");
        const RefineResult rr = refine_optimal(problem, budget, choice, measure, o->refine,
                                               o->refine_per_round, opt);
        evaluator.restore();
        choice = rr.choice;
        json steps = json::array();
        for (const auto& st : rr.steps)
          steps.push_back({{"round", st.round}, {"component", st.component}, {"scheme", st.scheme},
                           {"predicted", st.predicted}, {"measured", st.measured},
                           {"accepted", st.accepted}});
        extra["refine"] = {{"calibration", calib.description},
                           {"rounds", o->refine},
                           {"per_round", o->refine_per_round},
                           {"measurements", rr.measurements},
                           {"start", {{"predicted", rr.start_predicted}, {"measured", rr.start_measured}}},
                           {"final", {{"predicted", rr.final_predicted}, {"measured", rr.final_measured}}},
                           {"steps", steps}};
        detail += fmt::format(
            "refine: {} measurements on {} windows of {}; the optimal plan's {} predicted {:.6g}, "
            "measured {:.6g} (ratio {:.3f}); refined plan predicted {:.6g}, measured {:.6g} "
            "({:+.2f}% measured)\n",
            rr.measurements, calib.windows.size(), o->ctx, problem.metric, rr.start_predicted,
            rr.start_measured, rr.start_measured / rr.start_predicted, rr.final_predicted,
            rr.final_measured, 100.0 * (rr.final_measured / rr.start_measured - 1.0));
      }
    } else if (greedy) {
      {
        SchemeAssignment names;
        for (const auto& c : problem.components) names[c.name] = QuantScheme::parse(kKeepScheme);
        validate_assignment(*model, names);
      }
      const auto calib = load_calibration(model->info().folder, o->eval, o->ctx, o->eval_windows);
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
    extra["imatrix"] = sensitivity_imatrix(report);
    plan.extra = extra;
    {
      // The planner's sizes are the exporter's: check rather than trust it.
      SchemeAssignment a;
      for (const auto& [name, sc] : plan.components) a[name] = QuantScheme::parse(sc);
      KLLENS_CHECK(assignment_bytes(*model, a) == plan.bytes, "plan {} bytes, GGUF tensor data {} bytes",
                   plan.bytes, assignment_bytes(*model, a));
    }

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
