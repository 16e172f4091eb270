// sensitivity: the one-component-at-a-time sweep.
#include <filesystem>
#include <iostream>

#include "cli/common.h"
#include "core/cluster.h"
#include "core/error.h"
#include "core/sha256.h"
#include "eval/perplexity.h"
#include "eval/text.h"
#include "models/fingerprint.h"
#include "sensitivity/summary.h"
#include "sensitivity/sweep.h"

namespace kllens::cli {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    if (!item.empty()) out.push_back(item);
    pos = comma + 1;
  }
  return out;
}

CalibrationSet load_calibration(const std::string& model_path, const std::string& text_path,
                                int64_t ctx, int64_t windows) {
  CalibrationSet c;
  const std::string text = read_text_file(text_path);
  const auto ids = tokenize_with_model_folder(model_path, text);
  try {
    c.windows = make_windows(ids, ctx, windows);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", text_path, e.what()), e.exit_code());
  }
  int64_t tokens = 0;
  for (const auto& w : c.windows) tokens += static_cast<int64_t>(w.size());
  c.description = {{"file", text_path},
                   {"sha256", sha256_hex(text)},
                   {"ctx", ctx},
                   {"windows", c.windows.size()},
                   {"tokens", tokens}};
  return c;
}

nlohmann::json adaptive_settings(const SweepOptions& options) {
  return {{"first_windows", options.adaptive_windows}, {"rse", options.adaptive_rse}};
}

nlohmann::json sweep_journal_header(const SensitivityReport& report, const std::string& components,
                                    const SweepOptions& options) {
  nlohmann::json h = {{"journal", "kllens-sensitivity"},
                      {"model", report.model},
                      {"calibration", report.calibration},
                      {"schemes", report.schemes},
                      {"components", components}};
  if (options.adaptive_windows > 0) h["adaptive"] = adaptive_settings(options);
  return h;
}

nlohmann::json sweep_summary(const SweepOptions& options, const SweepStats& stats,
                             const std::string& components) {
  nlohmann::json s = {{"prefix_reuse", options.prefix_reuse},
                      {"cache_bytes", stats.cache_bytes},
                      {"cache_stride", stats.cache_stride},
                      {"fp_ppl", stats.fp_ppl},
                      {"seconds", stats.total_seconds},
                      {"entries_resumed", stats.entries_resumed},
                      {"components", components}};
  if (options.adaptive_windows > 0) {
    s["adaptive"] = adaptive_settings(options);
    s["adaptive"]["tokens_measured"] = stats.tokens_measured;
    s["adaptive"]["tokens_full"] = stats.tokens_full;
  }
  return s;
}

void report_journal_recovery(const std::string& journal_path, const SweepStats& stats) {
  if (stats.journal_dropped_lines > 0)
    std::cerr << fmt::format("note: {}: dropped {} damaged line(s) (a torn or corrupted write); "
                             "their entries were computed again\n",
                             journal_path, stats.journal_dropped_lines);
}

nlohmann::json model_description(const std::string& path, const Model& model) {
  std::error_code ec;
  const auto canonical = std::filesystem::weakly_canonical(path, ec);
  nlohmann::json d = {{"path", ec ? path : canonical.string()},
                      {"arch", model.info().arch},
                      {"layers", model.info().n_layers},
                      {"params", model.weights().total_params()},
                      {"weights_sha256", weights_sha256(model)}};
  // The same weights under another gated norm are another model: a journal must not mix them.
  if (const std::string norm = model.info().detail("gated_norm"); !norm.empty())
    d["gated_norm"] = norm;
  return d;
}

void add_sensitivity(CLI::App& app) {
  struct Opts {
    std::string model, calib, schemes = "int4:g32,int8:g32", components, out, csv;
    int64_t ctx = 256, windows = 0, cache_mb = 4096;
    AdaptiveOption adaptive;
    bool resume = false, no_reuse = false;
    size_t top = 20;
    RunOptions run;
    ImatrixOption imatrix;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "sensitivity",
      "quantize one component at a time and measure how far the next-token distributions move "
      "(KL both ways, logit MSE and SQNR, top-1 agreement, dNLL, each with its standard error)");
  cmd->footer(R"(
Every component (2+D *.weight tensor, optionally filtered by --components) is fake-quantized
alone in each scheme; the model runs on the calibration windows (the ppl protocol: the text
tokenized whole, cut into --ctx-token windows) and its logits are compared with the
full-precision ones at every position. Entries are journaled to OUT.journal as they finish, each
line checksummed and synced to disk; a killed sweep continues with --resume (same weights, text,
windows, schemes, --components and kllens version; anything else is refused), dropping and
recomputing any damaged line. OUT.journal.lock keeps a second process off the same journal. The
journal is removed once OUT is written (to a temporary, synced, then renamed).

Under `mpirun -np N` the entries are split across the N ranks (each journals to
OUT.journal.rank<R>; rank 0 writes OUT, the same file one process writes but for timings); give
each rank its cores (-x OMP_NUM_THREADS=1 --threads 1 for N ranks on N cores). A killed job
continues with --resume and the same N.

SENS.json:
  {"format": "kllens-sensitivity", "version": 1,
   "model": {"path", "arch", "layers", "params", "weights_sha256", ["gated_norm"]},
   "calibration": {"file", "sha256", "ctx", "windows", "tokens",
                   "imatrix": {"file", "sha256"} or null},
   "schemes": [...],
   "sweep": {"prefix_reuse", "cache_bytes", "cache_stride", "fp_ppl", "seconds",
             "entries_resumed", "components",
             ["adaptive": {"first_windows", "rse", "tokens_measured", "tokens_full"}]},
   "entries": [{"component", "layer", "role", "shape", "params", "scheme", ["stored"], "bytes",
                "seconds", ["windows"],
                "metrics": {"kl", "rkl", "mse", "sqnr_db", "top1", "dnll":
                            each {"mean", "stderr"}}}]}
  kl = KL(fp || q), rkl = KL(q || fp) in nats per position; mse = logit MSE; sqnr_db = logit
  SQNR; top1 = argmax agreement; dnll = mean NLL change of the next token = ln(ppl_q / ppl_fp).
  A ggml block format whose block does not divide a component's rows is measured and sized as
  llama-quantize would store it (q4_K -> q5_0 -> f16, ...): "stored" names that scheme, and
  "bytes" is always the exact size of the tensor in the GGUF file.
  --csv writes the entries as one row each with the same metric names.

--adaptive N measures every entry on the first N windows, then on all of them only the entries
whose standard error between windows exceeds --adaptive-rse times their mean KL (unless that KL
is below 1% of the largest of the component's schemes); "windows" says how many an entry was
measured on, and a refined entry equals the full sweep's exactly.)");
  cmd->add_option("MODEL", o->model, "Hugging Face model folder (with tokenizer.json)")->required();
  cmd->add_option("--calib", o->calib, "calibration text")->required();
  cmd->add_option("--ctx", o->ctx, "window length in tokens")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--windows", o->windows, "use the first N windows (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--schemes", o->schemes, "comma-separated schemes, e.g. q4_K,q5_K,q6_K,q8_0 or int4:g32,int8:g32")->capture_default_str();
  cmd->add_option("--components", o->components, "only components whose HF name matches this regex");
  cmd->add_option("--out", o->out, "SENS.json to write (a journal SENS.json.journal is kept while running)")->required();
  cmd->add_option("--csv", o->csv, "also write the entries as CSV");
  cmd->add_flag("--resume", o->resume, "continue a killed sweep from its journal");
  o->adaptive.add(cmd);
  cmd->add_flag("--no-prefix-reuse", o->no_reuse, "recompute every layer for every entry (for benchmarking the reuse)");
  cmd->add_option("--cache-mb", o->cache_mb, "memory for cached per-layer states")->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--top", o->top, "rows in the printed table")->capture_default_str();
  o->run.add(cmd);
  o->imatrix.add(cmd);
  cmd->callback([o] {
    o->run.apply();
    SweepOptions options;
    options.schemes = split_list(o->schemes);
    for (const auto& s : options.schemes) QuantScheme::parse(s);  // usage errors before any work
    if (!o->components.empty()) options.component_regex = o->components;
    options.prefix_reuse = !o->no_reuse;
    options.cache_budget_bytes = o->cache_mb << 20;
    options.journal_path = o->out + ".journal";
    options.resume = o->resume;
    o->adaptive.apply(options);
    // Under mpirun the entries are split across the ranks; rank 0 writes the result.
    const Cluster& cluster = Cluster::world();
    if (cluster.size() > 1) options.cluster = &cluster;
    const bool lead = cluster.rank() == 0;
    options.show_progress = lead;
    auto model = open_float_model(o->model, "sensitivity");
    o->imatrix.load(*model);
    options.importance = o->imatrix.fn();
    const auto calib = load_calibration(o->model, o->calib, o->ctx, o->windows);
    SensitivityReport report;
    report.model = model_description(o->model, *model);
    report.calibration = calib.description;
    report.calibration["imatrix"] = o->imatrix.identity();
    report.schemes = options.schemes;
    const nlohmann::json header = sweep_journal_header(report, o->components, options);
    SweepStats stats;
    options.on_complete = [&](const std::vector<SweepEntry>& entries, const SweepStats& done) {
      report.entries = entries;
      report.sweep = sweep_summary(options, done, o->components);
      write_sensitivity_json(o->out, report);
      if (!o->csv.empty()) write_sensitivity_csv(o->csv, report.entries);
    };
    run_sweep(*model, calib.windows, options, header, &stats);
    report_journal_recovery(options.journal_path, stats);
    if (!lead) return;
    std::cout << format_top_entries(report.entries, o->top) << "\n"
              << format_role_ranking(rank_roles(report.entries)) << "\n";
    std::cout << fmt::format(
        "{} entries ({} resumed{}) in {:.1f} s; full-precision calibration perplexity {:.3f}; "
        "prefix cache {:.1f} MB (stride {})\nwrote {}\n",
        report.entries.size(), stats.entries_resumed,
        cluster.size() > 1 ? fmt::format(", {} ranks", cluster.size()) : "", stats.total_seconds,
        stats.fp_ppl, stats.cache_bytes / 1e6, stats.cache_stride, o->out);
  });
}

}  // namespace kllens::cli
