// analyze: the whole study in one command: sensitivity sweep on a calibration text, plans of
// every method and metric, their evaluation on a separate text against the uniform baselines,
// the chosen plan, and report.html (docs/report.md).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "plan/llama_mix.h"
#include "core/error.h"
#include "core/sha256.h"
#include "plan/plan_io.h"
#include "plan/planner.h"
#include "report/frontier.h"
#include "report/report.h"
#include "sensitivity/summary.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

// Defined in cmd_frontier.cpp (common.h belongs to every command; these two only to these).
std::vector<double> parse_budgets(const std::string& text, const std::string& option);
std::vector<std::string> parse_names(const std::string& text, const std::vector<std::string>& accepted,
                                     const std::string& option);
void print_frontier_row(const FrontierRow& r);

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// The size side of the plan can be checked before the sweep runs: the candidate sizes depend
// only on the model and the schemes. A budget below the smallest plan fails here, not after
// minutes of measuring.
void check_budget_before_sweep(Model& model, const SweepOptions& options, double budget) {
  SensitivityReport sizes;
  sizes.model = {{"params", model.weights().total_params()}};
  for (const Param* p : sweep_components(model, options)) {
    for (const auto& text : options.schemes) {
      const QuantScheme s = QuantScheme::parse(text);
      if (!s.supports(p->cols())) continue;
      SweepEntry e;
      e.component = p->name;
      e.layer = p->layer;
      e.role = std::string(role_name(p->role));
      e.shape = p->shape;
      e.params = p->numel();
      e.scheme = text;
      e.bytes = s.storage_bytes(p->rows(), p->cols());
      sizes.entries.push_back(std::move(e));
    }
  }
  if (sizes.entries.empty()) throw UsageError("--schemes: no scheme can store any component of this model");
  ProblemOptions po;
  po.metric = "kl";
  PlanProblem problem = build_problem(sizes, po);
  use_gguf_sizes(problem, model);
  try {
    check_budget_feasible(problem, budget_bytes_for(budget, problem.total_params));
  } catch (const Error& e) {
    throw UsageError(fmt::format("--budget {}: {}; raise --budget or add a smaller scheme to --schemes "
                                 "(int4:g0 stores 4 bits plus one scale per row)",
                                 budget, e.what()));
  }
}

// A finished sensitivity.json in DIR that was measured with exactly these inputs.
// An adaptive request accepts a full sweep's file (every entry at least as precise), or an
// adaptive one of the same settings; a full request only a full sweep's.
bool reusable_sensitivity(const std::string& path, const SensitivityReport& want,
                          const SweepOptions& sweep) {
  if (!fs::exists(path)) return false;
  try {
    const SensitivityReport have = read_sensitivity_json(path);
    const json wanted = adaptive_settings(sweep);
    const auto same = [&](const char* key) {
      return have.sweep["adaptive"].value(key, json()) == wanted[key];
    };
    const bool precise_enough = !have.sweep.contains("adaptive") ||
                                (sweep.adaptive_windows > 0 && same("first_windows") && same("rse"));
    return have.model == want.model && have.calibration == want.calibration && have.schemes == want.schemes &&
           precise_enough && !have.entries.empty();
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void add_analyze(CLI::App& app) {
  struct Opts {
    // int4:g0 (one scale per row, the paper's per-channel INT4) is in the default set because
    // int4:g32 alone costs 4.5 bits per weight, so with the bf16 norms and conv1d no plan could
    // meet the default 4.5-bit budget.
    std::string model, calib, eval, out, schemes = "int4:g0,int4:g32,int8:g32", budgets = "3.5,4,4.5,5,6,8",
                                         metrics = "kl,rkl,mse,sqnr", methods = "optimal,points";
    double budget = 4.5, gamma = 1.10;
    int64_t ctx = 256, windows = 16, eval_ctx = 512, eval_windows = 0, cache_mb = 4096, greedy_windows = 4;
    // Off by default: on demo-hymba an adaptive sweep's plan at 6 bits measured 1.76x the full
    // sweep's KL (README, "Adaptive sweep").
    AdaptiveOption adaptive;
    bool resume = false, greedy = false, no_imatrix = false;
    std::string mixes = "Q3_K_M,Q4_K_M,Q5_K_M";
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "analyze",
      "the whole study: sensitivity sweep on --calib, plans of every method and metric, their "
      "evaluation on --eval against uniform int8/int4 and full precision, the chosen plan, and "
      "DIR/report.html");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--calib", o->calib, "calibration text (the sweep)")->required();
  cmd->add_option("--eval", o->eval, "evaluation text (the frontier; keep it disjoint from --calib)")->required();
  cmd->add_option("--out", o->out, "output folder DIR")->required();
  cmd->add_option("--budget", o->budget, "bits per weight of the chosen plan (optimal, kl)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--schemes", o->schemes, "schemes the sweep measures and plans choose from")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "calibration window length")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "calibration windows (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-ctx", o->eval_ctx, "evaluation window length")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--eval-windows", o->eval_windows, "evaluation windows (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--budgets", o->budgets, "frontier budgets, bits per weight (--budget is always added)")
      ->capture_default_str();
  cmd->add_option("--metrics", o->metrics, "frontier metrics (kl is always included)")->capture_default_str();
  cmd->add_option("--methods", o->methods, "frontier methods: optimal, points (optimal is always included)")
      ->capture_default_str();
  cmd->add_flag("--greedy", o->greedy, "also run the published greedy walk per metric (guarded on --calib)");
  cmd->add_option("--gamma", o->gamma, "greedy: accept a step when ppl <= gamma x reference")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--greedy-windows", o->greedy_windows, "greedy: calibration windows guarding each step")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--mixes", o->mixes,
                  "llama-quantize's stock mixes in the frontier and the report, each beside the "
                  "optimal plans at exactly its bytes (\"\" for none)")
      ->capture_default_str();
  cmd->add_flag("--no-imatrix", o->no_imatrix,
                "do not compute an importance matrix from --calib (by default DIR/imatrix.gguf is "
                "collected first and every ggml block format is quantized with it, as "
                "llama-quantize --imatrix does)");
  cmd->add_flag("--resume", o->resume,
                "continue a killed run: the sweep resumes from DIR's journal, a finished "
                "sensitivity.json of the same inputs is reused");
  cmd->add_option("--cache-mb", o->cache_mb, "memory for cached states (sweep) and full-precision logits (frontier)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  o->adaptive.add(cmd);
  o->run.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    // Usage errors first, before any work.
    SweepOptions sweep;
    o->adaptive.apply(sweep);
    sweep.schemes = split_list(o->schemes);
    if (sweep.schemes.empty()) throw UsageError("--schemes: give at least one scheme");
    for (const auto& s : sweep.schemes) QuantScheme::parse(s);
    std::vector<double> budgets = parse_budgets(o->budgets, "--budgets");
    if (std::find(budgets.begin(), budgets.end(), o->budget) == budgets.end()) budgets.push_back(o->budget);
    std::sort(budgets.begin(), budgets.end());
    std::vector<std::string> metrics = parse_names(o->metrics, plan_metric_names(), "--metrics");
    if (std::find(metrics.begin(), metrics.end(), "kl") == metrics.end()) metrics.insert(metrics.begin(), "kl");
    std::vector<std::string> methods = parse_names(o->methods, frontier_method_names(), "--methods");
    std::vector<std::string> mixes;
    for (const auto& m : split_list(o->mixes)) mixes.push_back(llama_mix_canonical(m));
    if (std::find(methods.begin(), methods.end(), "optimal") == methods.end()) methods.insert(methods.begin(), "optimal");

    std::error_code ec;
    fs::create_directories(o->out, ec);
    if (ec || !fs::is_directory(o->out)) fail("{}: cannot create the output folder ({})", o->out, ec.message());
    const fs::path dir(o->out);
    const std::string sens_path = (dir / "sensitivity.json").string();

    auto model = open_float_model(o->model, "analyze");
    const auto calib = load_calibration(o->model, o->calib, o->ctx, o->windows);
    if (calib.windows.empty()) fail("{}: too short for one window of {} tokens", o->calib, o->ctx);
    const auto evalset = load_calibration(o->model, o->eval, o->eval_ctx, o->eval_windows);
    if (evalset.windows.empty()) fail("{}: too short for one window of {} tokens", o->eval, o->eval_ctx);
    if (calib.description["sha256"] == evalset.description["sha256"])
      std::cerr << "warning: the calibration and evaluation texts are identical: the evaluation is not held out\n";
    check_budget_before_sweep(*model, sweep, o->budget);

    // 0. The importance matrix of the calibration text (what llama-imatrix computes), used by
    // every ggml block format of the sweep, the plans and the frontier.
    std::optional<ImportanceMatrix> imatrix;
    json imatrix_identity = nullptr;
    if (!o->no_imatrix) {
      const std::string imatrix_path = (dir / "imatrix.gguf").string();
      imatrix = collect_imatrix(*model, calib.windows, o->calib, false);
      write_imatrix(*imatrix, *model, imatrix_path);
      // The name relative to DIR: a journal or sensitivity file moved with its folder still
      // matches (the sha256 is what identifies the matrix).
      imatrix_identity = {{"file", "imatrix.gguf"}, {"sha256", imatrix->sha256}};
      sweep.importance = importance_fn(*imatrix);
      std::cerr << fmt::format("imatrix: {} matrices, wrote {}\n", imatrix->entries.size(), imatrix_path);
    }

    // 1. Sensitivity (the same header as `kllens sensitivity`, so the files are interchangeable).
    SensitivityReport sens;
    sens.model = model_description(o->model, *model);
    sens.calibration = calib.description;
    sens.calibration["imatrix"] = imatrix_identity;
    sens.schemes = sweep.schemes;
    double sweep_seconds = 0;
    bool sweep_reused = false;
    if (o->resume && reusable_sensitivity(sens_path, sens, sweep)) {
      sens = read_sensitivity_json(sens_path);
      sweep_reused = true;
      std::cerr << "sensitivity: reusing " << sens_path << " (same model, calibration and schemes)\n";
    } else {
      sweep.journal_path = sens_path + ".journal";
      sweep.resume = o->resume;
      sweep.cache_budget_bytes = o->cache_mb << 20;
      const json header = sweep_journal_header(sens, "", sweep);
      std::cerr << fmt::format("sensitivity: {} windows of {} tokens{}, schemes {}\n", calib.windows.size(), o->ctx,
                               sweep.adaptive_windows > 0 && static_cast<size_t>(sweep.adaptive_windows) < calib.windows.size()
                                   ? fmt::format(" (adaptive: every entry on the first {}, the uncertain ones on all)",
                                                 sweep.adaptive_windows)
                                   : "",
                               o->schemes);
      SweepStats stats;
      sweep.on_complete = [&](const std::vector<SweepEntry>& entries, const SweepStats& done) {
        sens.entries = entries;
        sens.sweep = sweep_summary(sweep, done, "");
        write_sensitivity_json(sens_path, sens);
      };
      run_sweep(*model, calib.windows, sweep, header, &stats);
      report_journal_recovery(sweep.journal_path, stats);
      if (stats.tokens_measured < stats.tokens_full)
        std::cerr << fmt::format("sensitivity: measured {} of a full sweep's {} tokens ({:.0f}%)\n",
                                 stats.tokens_measured, stats.tokens_full,
                                 100.0 * static_cast<double>(stats.tokens_measured) /
                                     static_cast<double>(stats.tokens_full));
      sweep_seconds = stats.total_seconds;
    }

    // 2. The chosen plan: optimal, kl, at --budget.
    ProblemOptions po;
    po.metric = "kl";
    PlanProblem problem = build_problem(sens, po);
    use_gguf_sizes(problem, *model);
    const int64_t budget_bytes = budget_bytes_for(o->budget, problem.total_params);
    check_budget_feasible(problem, budget_bytes);
    OptimalReport rep;
    const Choice choice = solve_optimal(problem, budget_bytes, {}, &rep);
    Plan plan = make_plan(problem, choice);
    plan.model = sens.model;
    plan.sensitivity = {{"path", sens_path}, {"sha256", sha256_file_hex(sens_path)}};
    plan.method = "optimal";
    plan.budget = {{"avg_bits", o->budget}, {"max_bytes", nullptr}, {"bytes", budget_bytes}};
    json forced = json::object();
    for (const auto& c : problem.components)
      if (!c.is_free()) forced[c.name] = c.forced_by;
    plan.extra = {{"keep_rules", json::array()},
                  {"forced", forced},
                  {"imatrix", imatrix_identity},
                  {"optimal",
                   {{"grid", OptimalOptions{}.grid},
                    {"granularity_bytes", rep.granularity},
                    {"cells", rep.cells},
                    {"exact", rep.exact},
                    {"free_components", rep.free_components},
                    {"lower_bound", rep.lower_bound},
                    {"slack_bytes", rep.slack_bytes}}}};
    const std::string plan_path = (dir / "plan.json").string();
    write_plan_json(plan_path, plan);

    // 3. Frontier on the evaluation text (the chosen plan is one of its rows).
    FrontierOptions fo;
    fo.mixes = mixes;
    fo.mix_imatrix = imatrix.has_value();
    fo.budgets = budgets;
    fo.metrics = metrics;
    fo.methods = methods;
    // The configuration the paper reports (its Table 4: KL-MP p05), next to the budgeted ones.
    if (std::find(methods.begin(), methods.end(), "points") != methods.end()) fo.fixed_points = {"p05"};
    fo.greedy = o->greedy;
    fo.greedy_options.gamma = o->gamma;
    if (o->greedy) {
      const size_t n = std::min<size_t>(calib.windows.size(), static_cast<size_t>(o->greedy_windows));
      fo.greedy_windows.assign(calib.windows.begin(), calib.windows.begin() + static_cast<std::ptrdiff_t>(n));
    }
    fo.on_row = print_frontier_row;
    std::cerr << fmt::format("frontier: {} windows of {} tokens of {}\n", evalset.windows.size(), o->eval_ctx,
                             o->eval);
    PlanEvaluator evaluator(*model, evalset.windows, o->cache_mb << 20, true);
    if (imatrix) evaluator.set_importance(importance_fn(*imatrix));
    FrontierResult frontier = run_frontier(evaluator, sens, fo);
    const json frontier_header = {
        {"model", sens.model},
        {"sensitivity", plan.sensitivity},
        {"text", evalset.description},
        {"budgets", budgets},
        {"metrics", metrics},
        {"methods", methods},
        {"uniform", fo.uniform},
        {"mixes", fo.mixes},
        {"imatrix", imatrix_identity},
        {"fixed_points", fo.fixed_points},
        {"keep_rules", json::array()},
        {"greedy", o->greedy ? json{{"gamma", o->gamma}, {"fixed_base", false}, {"text", calib.description},
                                    {"windows", fo.greedy_windows.size()}}
                             : json(nullptr)}};
    write_frontier_files((dir / "frontier").string(), frontier_document(frontier, frontier_header), frontier.rows);

    // 4. The chosen plan's evaluation (the same numbers as its frontier row: the evaluator
    // reuses the result) in the format of `kllens eval --json`.
    SchemeAssignment chosen;
    for (const auto& [name, s] : plan.components) chosen[name] = QuantScheme::parse(s);
    const QuantEvalResult chosen_eval = evaluator.evaluate(chosen);
    evaluator.restore();
    json ce = eval_result_json(chosen_eval);
    ce["unsupported"] = json::array();
    ce["source"] = {{"plan", plan_path}, {"method", plan.method}, {"metric", plan.metric}};
    ce["model"] = sens.model;
    ce["text"] = evalset.description;
    write_text_file((dir / "chosen-eval.json").string(), ce.dump(2) + "\n");
    const std::string chosen_label = fmt::format("optimal/kl @{}", o->budget);

    // 5. The report.
    ReportInputs in;
    in.title = fmt::format("kllens analysis: {}", fs::path(o->model).filename().string().empty()
                                                      ? o->model
                                                      : fs::path(o->model).filename().string());
    in.model = model_summary_json(*model, o->model);
    in.sensitivity = sens;
    in.frontier = frontier.rows;
    in.chosen_label = chosen_label;
    in.budget = o->budget;
    in.settings = {
        {"calibration text", fmt::format("{} (sha256 {}…)", o->calib, calib.description["sha256"].get<std::string>().substr(0, 16))},
        {"calibration windows", fmt::format("{} × {} tokens", calib.windows.size(), o->ctx)},
        {"evaluation text", fmt::format("{} (sha256 {}…)", o->eval, evalset.description["sha256"].get<std::string>().substr(0, 16))},
        {"evaluation windows", fmt::format("{} × {} tokens", evalset.windows.size(), o->eval_ctx)},
        {"schemes", o->schemes},
        {"sweep", sweep_reused ? std::string("reused from an earlier run") : fmt::format("{:.1f} s", sweep_seconds)},
        {"sensitivity entries", sens.entries.size()},
        {"budgets (bits per weight)", o->budgets},
        {"chosen plan", fmt::format("optimal, kl, {} bits per weight ({} bytes budget)", o->budget, budget_bytes)},
        {"frontier", fmt::format("{} rows, {} distinct configurations, {:.1f} s", frontier.rows.size(),
                                 frontier.evaluations, frontier.seconds)},
        {"greedy", o->greedy ? fmt::format("gamma {}, guarded on {} calibration windows", o->gamma,
                                           fo.greedy_windows.size())
                             : std::string("not run (--greedy)")}};
    const std::string report_path = (dir / "report.html").string();
    write_text_file(report_path, render_report_html(in));

    std::cout << frontier_markdown(frontier.rows) << "\n";
    std::cout << fmt::format(
        "chosen plan ({}): {} bytes = {:.4f} bits per weight, perplexity {:.4f} (full precision {:.4f}), "
        "KL {:.3e} ± {:.1e}\n",
        chosen_label, chosen_eval.bytes, chosen_eval.bits_per_weight, chosen_eval.ppl, chosen_eval.ppl_fp,
        chosen_eval.logits.kl_forward.mean, chosen_eval.logits.kl_forward.stderr_);
    std::cout << fmt::format("wrote {}: sensitivity.json, plan.json, frontier.json/.csv/.md, chosen-eval.json\n",
                             o->out);
    std::cout << "report: " << fs::absolute(report_path).string() << "\n";
  });
}

}  // namespace kllens::cli
