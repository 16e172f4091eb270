// validate-metrics: do the calibration metrics rank components the way the measured perplexity
// change on separate text does?
#include <chrono>
#include <fstream>
#include <iostream>
#include <unordered_set>

#include "cli/common.h"
#include "core/error.h"
#include "io/json_file.h"
#include "quant/scheme.h"
#include "sensitivity/sweep.h"
#include "sensitivity/validate.h"

namespace kllens::cli {

namespace {

// Overlap between the two window sets, as the fraction of evaluation tokens covered by a run of
// kRun tokens that also occurs in a calibration window. Exact hashing of token runs: catches
// the same text given twice, overlapping article ranges and text pasted into both files, while
// a short shared phrase (a heading, a common idiom) stays well below a run of 32 tokens.
constexpr size_t kRun = 32;

uint64_t hash_run(const int32_t* ids, size_t n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the id bytes
  for (size_t i = 0; i < n; ++i) {
    uint32_t v = static_cast<uint32_t>(ids[i]);
    for (int b = 0; b < 4; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

double shared_run_fraction(const std::vector<std::vector<int32_t>>& calib,
                           const std::vector<std::vector<int32_t>>& eval, size_t run) {
  std::unordered_set<uint64_t> seen;
  for (const auto& w : calib)
    for (size_t i = 0; i + run <= w.size(); ++i) seen.insert(hash_run(w.data() + i, run));
  int64_t covered = 0, total = 0;
  for (const auto& w : eval) {
    std::vector<char> mark(w.size(), 0);
    for (size_t i = 0; i + run <= w.size(); ++i)
      if (seen.count(hash_run(w.data() + i, run)))
        std::fill(mark.begin() + static_cast<std::ptrdiff_t>(i),
                  mark.begin() + static_cast<std::ptrdiff_t>(i + run), 1);
    for (char m : mark) covered += m;
    total += static_cast<int64_t>(w.size());
  }
  return total ? static_cast<double>(covered) / static_cast<double>(total) : 0;
}

constexpr double kMaxSharedFraction = 0.05;

const char* kJsonHelp = R"(
The two texts must be different: calibration windows are cut from --calib, evaluation windows
from --eval (for the demo models, e.g. `kllens articles wiki.test.raw --first 44 --last 52`
and `--first 53 --last 61`). It is an error when both files have the same SHA-256, or when more
than 5% of the evaluation tokens lie in runs of 32 tokens that also occur in a calibration
window (a smaller overlap is reported as a warning and in the JSON).

Per (component, scheme) the sweep runs on both window sets. On the evaluation windows its dNLL
is ln(ppl_q / ppl_fp) exactly, so the measured change is delta_ppl = ppl_fp * (exp(dnll) - 1).
Each calibration metric, oriented so that larger = more damage (kl, rkl, mse, -sqnr, -top1,
dnll), is compared with delta_ppl by Kendall's tau-b and Spearman's rho over all entries, and
per scheme when there are several. Intervals: percentile bootstrap over the entries (pairs
resampled with replacement, --bootstrap resamples, fixed --seed; the same resamples for every
metric).

JSON (--json on stdout, --out to a file):
  {"format": "kllens-validate-metrics", "version": 1,
   "model": {"path", "arch", "layers", "params"},
   "calibration": {"file", "sha256", "ctx", "windows", "tokens", "fp_ppl"},
   "eval": {"file", "sha256", "ctx", "windows", "tokens", "fp_ppl"},
   "overlap": {"run_tokens": 32, "eval_fraction_shared"},
   "schemes": [...], "components": REGEX or "",
   "bootstrap": {"resamples", "seed", "confidence"},
   "agreement": [{"scope": "all" | SCHEME, "metric": "kl"|"rkl"|"mse"|"-sqnr"|"-top1"|"dnll",
                  "n", "kendall_tau": {"estimate", "lo", "hi", "resamples"},
                  "spearman_rho": {...}}],
   "entries": [{"component", "layer", "role", "scheme", "params", "bytes",
                "calibration": {"kl", "rkl", "mse", "sqnr_db", "top1", "dnll"},
                "eval": {"dnll", "dnll_stderr", "kl", "ppl", "delta_ppl"}}],
   "seconds"}
  null stands for an undefined value (a constant column has no ranking; no interval without
  resamples).)";

}  // namespace

void add_validate_metrics(CLI::App& app) {
  struct Opts {
    std::string model, calib, eval, schemes = "int4:g32,int8:g32", components, out;
    int64_t ctx = 256, windows = 0, eval_windows = 0, cache_mb = 4096;
    int bootstrap = 1000;
    uint64_t seed = ValidationOptions{}.seed;
    size_t top = 20;
    bool json = false;
    RunOptions run;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "validate-metrics",
      "check each calibration metric's ranking of components against the perplexity change "
      "measured on separate evaluation text (Kendall tau-b, Spearman rho, bootstrap intervals)");
  cmd->footer(kJsonHelp);
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--calib", o->calib, "calibration text (the metrics are measured here)")->required();
  cmd->add_option("--eval", o->eval, "evaluation text, disjoint from --calib (perplexity is measured here)")->required();
  cmd->add_option("--schemes", o->schemes, "comma-separated schemes")->capture_default_str();
  cmd->add_option("--ctx", o->ctx, "window length in tokens (both texts)")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "calibration windows (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-windows", o->eval_windows, "evaluation windows (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--components", o->components, "only components whose HF name matches this regex");
  cmd->add_option("--bootstrap", o->bootstrap, "bootstrap resamples for the intervals (0 = none)")->capture_default_str()->check(CLI::Range(0, 1000000));
  cmd->add_option("--seed", o->seed, "bootstrap seed")->capture_default_str();
  cmd->add_option("--cache-mb", o->cache_mb, "memory for cached per-layer states (per sweep)")->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--top", o->top, "rows in the printed entry table")->capture_default_str();
  cmd->add_flag("--json", o->json, "print the JSON report instead of tables");
  cmd->add_option("--out", o->out, "also write the JSON report to this file");
  o->run.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    const auto t0 = std::chrono::steady_clock::now();
    SweepOptions options;
    options.schemes = split_list(o->schemes);
    if (options.schemes.empty()) throw UsageError("--schemes: give at least one scheme");
    for (const auto& s : options.schemes) QuantScheme::parse(s);  // usage errors before any work
    if (!o->components.empty()) options.component_regex = o->components;
    options.cache_budget_bytes = o->cache_mb << 20;
    options.show_progress = !o->json;

    auto model = open_float_model(o->model, "validate-metrics");
    // Count what will be ranked before two sweeps' worth of work.
    int64_t planned = 0;
    for (const Param* p : sweep_components(*model, options))
      for (const auto& s : options.schemes)
        if (QuantScheme::parse(s).supports(p->cols())) ++planned;
    if (planned < 3)
      throw UsageError(fmt::format(
          "only {} (component, scheme) entries to rank; validate-metrics needs at least 3 "
          "(widen --components or add --schemes)", planned));

    const auto calib = load_calibration(o->model, o->calib, o->ctx, o->windows);
    const auto eval = load_calibration(o->model, o->eval, o->ctx, o->eval_windows);
    if (calib.windows.empty() || eval.windows.empty())
      fail("{} has fewer than --ctx {} tokens: no window to score",
           calib.windows.empty() ? o->calib : o->eval, o->ctx);
    if (calib.description["sha256"] == eval.description["sha256"])
      throw UsageError(fmt::format(
          "--calib {} and --eval {} are the same text (sha256 {}); give two disjoint texts",
          o->calib, o->eval, calib.description["sha256"].get<std::string>()));
    const size_t run = std::min<size_t>(kRun, static_cast<size_t>(o->ctx));
    const double shared = shared_run_fraction(calib.windows, eval.windows, run);
    if (shared > kMaxSharedFraction)
      fail("{:.1f}% of the evaluation tokens lie in {}-token runs that also occur in the "
           "calibration windows: --calib and --eval overlap; give disjoint texts",
           100 * shared, run);
    if (shared > 0)
      std::fprintf(stderr,
                   "warning: %.2f%% of the evaluation tokens lie in %zu-token runs that also "
                   "occur in the calibration windows\n", 100 * shared, run);

    const nlohmann::json no_journal = nlohmann::json::object();
    SweepStats calib_stats, eval_stats;
    const auto calib_entries = run_sweep(*model, calib.windows, options, no_journal, &calib_stats);
    const auto eval_entries = run_sweep(*model, eval.windows, options, no_journal, &eval_stats);
    ValidationOptions vopt;
    vopt.resamples = o->bootstrap;
    vopt.seed = o->seed;
    const Validation v = validate_metrics(calib_entries, eval_entries, eval_stats.fp_ppl, vopt);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    nlohmann::json report = {{"format", "kllens-validate-metrics"},
                             {"version", 1},
                             {"model", model_description(o->model, *model)}};
    report["calibration"] = calib.description;
    report["calibration"]["fp_ppl"] = calib_stats.fp_ppl;
    report["eval"] = eval.description;
    report["eval"]["fp_ppl"] = eval_stats.fp_ppl;
    report["overlap"] = {{"run_tokens", run}, {"eval_fraction_shared", shared}};
    report["schemes"] = options.schemes;
    report["components"] = o->components;
    report.update(validation_json(v));
    report["seconds"] = seconds;

    if (!o->out.empty()) {
      write_json_file_atomic(o->out, report);
    }
    if (o->json) {
      print_json(report);
      return;
    }
    auto describe = [](const char* label, const CalibrationSet& c, double ppl) {
      const auto& d = c.description;
      return fmt::format("{:<12} {}\n{:<12} sha256 {}\n{:<12} {} windows x {} tokens, "
                         "full-precision ppl {:.3f}\n",
                         label, d["file"].get<std::string>(), "",
                         d["sha256"].get<std::string>(), "", d["windows"].get<int64_t>(),
                         d["ctx"].get<int64_t>(), ppl);
    };
    std::cout << fmt::format("{:<12} {} ({}, {} layers)\n", "model", o->model,
                             model->info().arch, model->info().n_layers)
              << describe("calibration", calib, calib_stats.fp_ppl)
              << describe("evaluation", eval, eval_stats.fp_ppl) << "\n"
              << "entries by measured perplexity change on the evaluation text:\n"
              << format_validated_entries(v, o->top) << "\n"
              << fmt::format("rank agreement of each calibration metric (oriented: larger = more "
                             "damage) with the evaluation Δppl over {} entries{}:\n",
                             v.entries.size(),
                             vopt.resamples > 0
                                 ? fmt::format("; bootstrap {} resamples, seed {}",
                                               vopt.resamples, vopt.seed)
                                 : "")
              << format_agreements(v) << "\n"
              << fmt::format("{:.1f} s", seconds)
              << (o->out.empty() ? "" : fmt::format("; wrote {}", o->out)) << "\n";
  });
}

}  // namespace kllens::cli
