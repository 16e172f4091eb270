// Pieces every command shares: loading, id files, threads, JSON output.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/imatrix.h"
#include "eval/quantized_eval.h"
#include "models/model.h"
#include "sensitivity/sweep.h"
#include "tokenizer/tokenizer.h"

namespace kllens::cli {

// What every command that runs a model shares: --threads and how a checkpoint becomes a model
// (--mamba2-norm). add() puts them on a command; apply() sets them before its work starts.
struct RunOptions {
  int threads = 0;
  std::string mamba2_norm = "group";
  void add(CLI::App* app);
  void apply() const;
};

// MODEL arguments: a Hugging Face folder or a GGUF file written by `kllens quantize`. Loaded with
// the LoadOptions the command's RunOptions::apply() set.
bool is_gguf_path(const std::string& path);
std::unique_ptr<Model> open_model(const std::string& path);
// For commands that quantize components themselves (sensitivity, plan, frontier, ...): a GGUF
// path is refused with a clear message.
std::unique_ptr<Model> open_float_model(const std::string& path, std::string_view command);

// Reads token ids (I32 or I64, shape [seq] or [batch, seq]) from a safetensors file.
std::vector<std::vector<int32_t>> read_id_batch(const std::string& path, const std::string& tensor);

// A tokenizer.json file, a model folder's tokenizer.json, or the one a GGUF file carries.
Tokenizer load_tokenizer(const std::string& source);

// Tokenizes text with MODEL/tokenizer.json, or the tokenizer.json a GGUF file carries (no
// special tokens added).
std::vector<int32_t> tokenize_with_model_folder(const std::string& model_folder,
                                                const std::string& text);

void print_json(const nlohmann::json& j);

// "a,b,,c" -> {"a", "b", "c"}
std::vector<std::string> split_list(const std::string& text);

// Calibration (or evaluation) windows of a text under the ppl protocol, with its description
// for JSON outputs (file, sha256, ctx, windows, tokens).
struct CalibrationSet {
  std::vector<std::vector<int32_t>> windows;
  nlohmann::json description;
};
CalibrationSet load_calibration(const std::string& model_path, const std::string& text_path,
                                int64_t ctx, int64_t windows);
// The sweep journal's description of a sweep (model, calibration, schemes, --components), the
// same for `sensitivity` and `analyze`, so that their journals and files are interchangeable.
// An adaptive sweep's settings are part of it ("adaptive": {"first_windows", "rse"}).
nlohmann::json sweep_journal_header(const SensitivityReport& report, const std::string& components,
                                    const SweepOptions& options);
// SENS.json's "sweep" object; an adaptive sweep adds "adaptive": {"first_windows", "rse",
// "tokens_measured", "tokens_full"}.
nlohmann::json sweep_summary(const SweepOptions& options, const SweepStats& stats,
                             const std::string& components);
// After run_sweep: a note on stderr when the resumed journal had damaged lines.
void report_journal_recovery(const std::string& journal_path, const SweepStats& stats);
nlohmann::json model_description(const std::string& path, const Model& model);

// --imatrix FILE on the commands that quantize (eval/imatrix.h: llama.cpp's imatrix GGUF, from
// `kllens imatrix` or llama-imatrix). load() validates it against the model (another model's
// matrix is one clear error); fn() is what the quantizers take (empty without a file). The
// matrix must outlive the function.
// --adaptive N and --adaptive-rse X, the adaptive sweep of `sensitivity` and `analyze`.
struct AdaptiveOption {
  int64_t windows = 0;  // 0: every entry on every window
  double rse = 0.05;
  void add(CLI::App* cmd);
  void apply(SweepOptions& options) const;
};
// {"first_windows", "rse"} of an adaptive sweep.
nlohmann::json adaptive_settings(const SweepOptions& options);

struct ImatrixOption {
  std::string path;
  std::optional<ImportanceMatrix> matrix;
  void add(CLI::App* cmd);
  void load(const Model& model);
  ImportanceFn fn() const;
  // {"file", "sha256"} of the matrix, or null without one (recorded in sensitivity files and
  // plans; quantize compares it).
  nlohmann::json identity() const;
};
// The importance matrix a sensitivity file was measured with ({"file", "sha256"}), null if none.
nlohmann::json sensitivity_imatrix(const SensitivityReport& report);
// Fails unless `used` (what a sensitivity file or plan records, possibly null) names the same
// importance matrix as `given`; `what` names the file for the message. With `schemes` (a plan's
// components), only a plan that holds a format an importance matrix changes (the ggml block
// formats but q8_0) is checked: intB and keep schemes are the same bytes either way.
void check_same_imatrix(const nlohmann::json& used, const ImatrixOption& given,
                        const std::string& what,
                        const std::map<std::string, std::string>* schemes = nullptr);

// Registration of each command (one file each).
void add_inspect(CLI::App& app);
void add_forward(CLI::App& app);
void add_generate(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_ppl(CLI::App& app);
void add_articles(CLI::App& app);
void add_synth(CLI::App& app);
void add_bench(CLI::App& app);
void add_deploy_table(CLI::App& app);
void add_sensitivity(CLI::App& app);
void add_validate_metrics(CLI::App& app);
void add_plan(CLI::App& app);
void add_eval(CLI::App& app);
void add_frontier(CLI::App& app);
void add_analyze(CLI::App& app);
void add_quantize(CLI::App& app);
void add_imatrix(CLI::App& app);

}  // namespace kllens::cli
