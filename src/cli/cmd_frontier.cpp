// frontier: many plans (every method x metric at every budget), the uniform baselines and the
// full-precision model, evaluated on one text; a size-versus-quality table (report/frontier.h).
#include <algorithm>
#include <cmath>
#include <iostream>

#include "cli/common.h"
#include "plan/llama_mix.h"
#include "core/error.h"
#include "core/sha256.h"
#include "report/frontier.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

// Shared with cmd_analyze.cpp: "3.5,4,8" -> {3.5, 4, 8}, each positive and finite.
std::vector<double> parse_budgets(const std::string& text, const std::string& option) {
  std::vector<double> out;
  for (const auto& item : split_list(text)) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !std::isfinite(v) || v <= 0)
      throw UsageError(fmt::format("{}: '{}' is not a positive number of bits per weight", option, item));
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  if (out.empty()) throw UsageError(fmt::format("{}: give at least one budget", option));
  std::sort(out.begin(), out.end());
  return out;
}

// Checks a comma list against the accepted names (UsageError naming the option).
std::vector<std::string> parse_names(const std::string& text, const std::vector<std::string>& accepted,
                                     const std::string& option) {
  std::vector<std::string> out;
  for (const auto& item : split_list(text)) {
    if (std::find(accepted.begin(), accepted.end(), item) == accepted.end()) {
      std::string list;
      for (const auto& a : accepted) list += (list.empty() ? "" : ", ") + a;
      throw UsageError(fmt::format("{}: unknown '{}' (expected {})", option, item, list));
    }
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  if (out.empty()) throw UsageError(fmt::format("{}: give at least one of {}", option, accepted.front()));
  return out;
}

// A progress line per evaluated row, for people (stderr).
void print_frontier_row(const FrontierRow& r) {
  if (!r.feasible) {
    std::cerr << fmt::format("  {:<30} {}\n", r.label, r.note);
    return;
  }
  std::cerr << fmt::format("  {:<30} {:>7.4f} bits/w  ppl {:>9.4f}  KL {:.3e}{}\n", r.label, r.eval.bits_per_weight,
                           r.eval.ppl, r.eval.logits.kl_forward.mean, r.reused ? "  (same plan as above)" : "");
}

void add_frontier(CLI::App& app) {
  struct Opts {
    std::string model, sens, text, budgets = "3.5,4,4.5,5,6,8", metrics = "kl,rkl,mse,sqnr",
                                   methods = "optimal,points", uniform = "int8:g0,int8:g32,int4:g0,int4:g32",
                                   out_prefix, greedy_text, points;
    std::vector<std::string> keep;
    int64_t ctx = 512, windows = 0, greedy_windows = 4, cache_mb = 4096;
    double gamma = 1.10;
    bool greedy = false, fixed_base = false, json = false;
    std::string mixes = "Q3_K_M,Q4_K_M,Q5_K_M";
    RunOptions run;
    ImatrixOption imatrix;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "frontier",
      "evaluate plans of every method and metric at several size budgets, the uniform int8/int4 "
      "baselines and the full-precision model on one text: a size-versus-perplexity table");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--sens", o->sens, "sensitivity file of this model (`kllens sensitivity`)")->required();
  cmd->add_option("--text", o->text, "evaluation text")->required();
  cmd->add_option("--budgets", o->budgets, "average bits per weight over all weights, comma-separated")
      ->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "use only the first N windows (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--metrics", o->metrics, "damage metrics to plan with: kl, rkl, mse, sqnr")->capture_default_str();
  cmd->add_option("--methods", o->methods,
                  "optimal (least summed damage within the budget) and/or points (the largest of the "
                  "published p01..p10 that fits)")
      ->capture_default_str();
  cmd->add_option("--points", o->points,
                  "also evaluate these points configurations whatever the budgets, e.g. p05 (the one "
                  "the paper reports)");
  cmd->add_option("--uniform", o->uniform, "uniform baselines (every component but conv1d), comma-separated")
      ->capture_default_str();
  cmd->add_option("--mixes", o->mixes,
                  "llama-quantize's stock mixes to evaluate, each beside the optimal plan of every "
                  "metric at exactly its bytes (\"\" for none)")
      ->capture_default_str();
  cmd->add_flag("--greedy", o->greedy,
                "also run the published perplexity-guarded greedy walk once per metric (no budget: "
                "reported at the size it lands on)");
  cmd->add_option("--gamma", o->gamma, "greedy: accept a step when ppl <= gamma x reference")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--fixed-base", o->fixed_base, "greedy: compare with the starting perplexity");
  cmd->add_option("--greedy-text", o->greedy_text, "greedy: text whose perplexity guards each step (default --text)");
  cmd->add_option("--greedy-windows", o->greedy_windows, "greedy: windows of the guard text (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--keep", o->keep, "ROLE=SCHEME or REGEX=SCHEME rules for every plan (as in `kllens plan`)")
      ->take_all();
  cmd->add_option("--cache-mb", o->cache_mb, "memory for the full-precision logits kept across plans")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--out-prefix", o->out_prefix, "write the table to P.json, P.csv and P.md");
  cmd->add_flag("--json", o->json, "print the JSON document instead of the Markdown table");
  o->run.add(cmd);
  o->imatrix.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    FrontierOptions fo;
    for (const auto& m : split_list(o->mixes)) fo.mixes.push_back(llama_mix_canonical(m));
    fo.budgets = parse_budgets(o->budgets, "--budgets");
    fo.metrics = parse_names(o->metrics, plan_metric_names(), "--metrics");
    fo.methods = parse_names(o->methods, frontier_method_names(), "--methods");
    fo.uniform = split_list(o->uniform);
    fo.fixed_points = split_list(o->points);
    if (!fo.fixed_points.empty() && std::find(fo.methods.begin(), fo.methods.end(), "points") == fo.methods.end())
      throw UsageError("--points needs the points method in --methods");
    for (const auto& s : fo.uniform) QuantScheme::parse(s);
    for (const auto& k : o->keep) fo.keep.push_back(parse_keep_rule(k));
    fo.greedy = o->greedy;
    fo.greedy_options.gamma = o->gamma;
    fo.greedy_options.fixed_base = o->fixed_base;
    if (!o->greedy && (!o->greedy_text.empty() || o->fixed_base))
      throw UsageError("--greedy-text and --fixed-base apply with --greedy only");

    const SensitivityReport sens = read_sensitivity_json(o->sens);
    auto model = open_float_model(o->model, "frontier");
    o->imatrix.load(*model);
    check_same_imatrix(sensitivity_imatrix(sens), o->imatrix, o->sens);
    fo.mix_imatrix = o->imatrix.matrix.has_value();
    const auto text = load_calibration(o->model, o->text, o->ctx, o->windows);
    if (text.windows.empty())
      fail("{}: too short for one window of {} tokens", o->text, o->ctx);
    nlohmann::json greedy_desc = nullptr;
    if (o->greedy) {
      const std::string gt = o->greedy_text.empty() ? o->text : o->greedy_text;
      auto guard = load_calibration(o->model, gt, o->ctx, o->greedy_windows);
      if (guard.windows.empty()) fail("{}: too short for one window of {} tokens", gt, o->ctx);
      fo.greedy_windows = std::move(guard.windows);
      greedy_desc = {{"gamma", o->gamma}, {"fixed_base", o->fixed_base}, {"text", guard.description}};
    }
    if (!o->json) fo.on_row = print_frontier_row;
    PlanEvaluator evaluator(*model, text.windows, o->cache_mb << 20, !o->json);
    evaluator.set_importance(o->imatrix.fn());
    const FrontierResult result = run_frontier(evaluator, sens, fo);
    const nlohmann::json header = {{"model", model_description(o->model, *model)},
                                   {"sensitivity", {{"path", o->sens}, {"sha256", sha256_file_hex(o->sens)}}},
                                   {"text", text.description},
                                   {"budgets", fo.budgets},
                                   {"metrics", fo.metrics},
                                   {"methods", fo.methods},
                                   {"uniform", fo.uniform},
                                   {"mixes", fo.mixes},
                                   {"imatrix", o->imatrix.identity()},
                                   {"fixed_points", fo.fixed_points},
                                   {"keep_rules", o->keep},
                                   {"greedy", greedy_desc}};
    const nlohmann::json doc = frontier_document(result, header);
    if (!o->out_prefix.empty()) write_frontier_files(o->out_prefix, doc, result.rows);
    if (o->json) {
      print_json(doc);
      return;
    }
    std::cout << frontier_markdown(result.rows) << "\n";
    std::cout << fmt::format(
        "{} rows, {} distinct configurations evaluated on {} windows of {} tokens in {:.1f} s "
        "({} full-precision and {} quantized forward passes)\n",
        result.rows.size(), result.evaluations, text.windows.size(), o->ctx, result.seconds,
        result.fp_forward_passes, result.quantized_forward_passes);
    if (!o->out_prefix.empty())
      std::cout << fmt::format("wrote {0}.json, {0}.csv and {0}.md\n", o->out_prefix);
  });
}

}  // namespace kllens::cli
