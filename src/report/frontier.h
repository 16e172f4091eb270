// The size-versus-quality frontier: many mixed-precision plans (every method x metric at every
// budget), the uniform baselines and the full-precision model, each evaluated on the same text
// windows with the protocol of eval/quantized_eval.h.
//
// Evaluating many plans cheaply: PlanEvaluator runs the full-precision model once per window and
// keeps its logits (up to a memory budget), so each plan costs one quantized forward pass per
// window instead of two; it moves between plans with one WeightSwap (only components whose
// scheme changes are re-quantized), and an assignment already evaluated is not evaluated again.
// Its numbers are exactly those of evaluate_quantized() (same per-position accumulation order).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/quantized_eval.h"
#include "plan/planner.h"
#include "sensitivity/sweep.h"

namespace kllens {

class Model;

class PlanEvaluator {
 public:
  // Windows are copied. Full-precision logits of at most cache_bytes worth of windows are kept;
  // later windows are recomputed at full precision whenever a plan is evaluated.
  PlanEvaluator(Model& model, std::vector<std::vector<int32_t>> windows,
                int64_t cache_bytes = int64_t{4} << 30, bool show_progress = false);
  ~PlanEvaluator();
  PlanEvaluator(const PlanEvaluator&) = delete;
  PlanEvaluator& operator=(const PlanEvaluator&) = delete;

  // The comparison with the full-precision model; `reused` (optional) tells whether the result
  // came from the cache of evaluated assignments. The model's weights are the loaded ones
  // again once the evaluator is destroyed (or after restore()).
  QuantEvalResult evaluate(const SchemeAssignment& assignment, bool* reused = nullptr);
  // Perplexity of the model under `assignment` on other windows (the greedy planner's guard),
  // through the same WeightSwap.
  double perplexity_of(const SchemeAssignment& assignment,
                       const std::vector<std::vector<int32_t>>& windows);
  void restore();
  Model& model() { return model_; }
  // The importance vectors ggml's quantizers use (before the first evaluation).
  void set_importance(ImportanceFn importance) { importance_ = std::move(importance); }

  const std::vector<std::vector<int32_t>>& windows() const { return windows_; }
  // Forward passes run so far (tests check the reuse).
  int64_t fp_forward_passes() const { return fp_passes_; }
  int64_t quantized_forward_passes() const { return q_passes_; }
  int64_t cached_windows() const { return static_cast<int64_t>(fp_logits_.size()); }

 private:
  void ensure_fp_cache();
  Model& model_;
  std::vector<std::vector<int32_t>> windows_;
  int64_t cache_bytes_;
  bool show_progress_;
  bool fp_done_ = false;
  std::vector<std::vector<float>> fp_logits_;  // first cached_windows() windows
  std::unique_ptr<WeightSwap> swap_;
  ImportanceFn importance_;
  std::map<std::string, QuantEvalResult> results_;  // by canonical assignment text
  int64_t fp_passes_ = 0, q_passes_ = 0;
};

// One evaluated configuration of the frontier.
struct FrontierRow {
  std::string label;   // "optimal/kl @4.5", "points/kl @4.5 (p07)", "greedy/kl", "uniform int4:g32", "full precision"
  std::string method;  // optimal | points | greedy | uniform | mix | fp
  std::string metric;  // kl | rkl | mse | sqnr for plans; "" otherwise
  std::optional<double> budget;  // average bits per weight (optimal, points)
  int64_t budget_bytes = 0;      // floor(budget x params / 8) when budget
  std::string point;             // points: p01..p10; uniform: the scheme
  bool feasible = true;          // false: nothing fits the budget (no numbers below)
  std::string note;
  std::map<std::string, std::string> components;  // plan rows: component -> scheme
  std::optional<double> predicted;  // plan rows: summed damage in `metric`
  bool reused = false;              // the same assignment was evaluated for an earlier row
  QuantEvalResult eval;
};

struct FrontierOptions {
  std::vector<double> budgets;  // average bits per weight over all weights
  std::vector<std::string> metrics = {"kl", "rkl", "mse", "sqnr"};
  std::vector<std::string> methods = {"optimal", "points"};
  // Points configurations evaluated whatever the budgets (e.g. "p05", the one the paper
  // reports), per metric, when methods has points; rows "points/METRIC p05" without a budget.
  std::vector<std::string> fixed_points;
  bool greedy = false;
  GreedyOptions greedy_options;
  // Windows whose perplexity guards greedy; empty: the first 4 evaluation windows.
  std::vector<std::vector<int32_t>> greedy_windows;
  std::vector<std::string> uniform = {"int8:g0", "int8:g32", "int4:g0", "int4:g32"};
  bool full_precision = true;
  std::vector<KeepRule> keep;  // passed to every plan
  // llama-quantize's stock mixes (plan/llama_mix.h: "Q3_K_M", "Q4_K_M", ...): each mix as
  // llama.cpp would choose it for this model (rows "mix Q4_K_M"), and the optimal plan of each
  // metric at exactly that mix's GGUF tensor bytes ("optimal/kl @Q4_K_M"). mix_imatrix: the
  // rules as with llama-quantize --imatrix.
  std::vector<std::string> mixes;
  bool mix_imatrix = false;
  int64_t grid = 20000;        // optimal's DP cells
  // Called after each row is evaluated (progress lines for people).
  std::function<void(const FrontierRow&)> on_row;
};

struct FrontierResult {
  std::vector<FrontierRow> rows;
  int64_t evaluations = 0;  // distinct assignments evaluated
  int64_t fp_forward_passes = 0, quantized_forward_passes = 0;
  double seconds = 0;
};

// The methods and uniform schemes accepted in FrontierOptions (for --help and validation).
const std::vector<std::string>& frontier_method_names();  // optimal, points

// Budget in bytes of an average bits-per-weight figure, as `kllens plan --avg-bits` computes it.
int64_t budget_bytes_for(double avg_bits, int64_t total_params);

// Plans every (method, metric, budget), then evaluates rows in this order: full precision,
// uniform schemes, then per method and metric: each budget (and the fixed points), then greedy
// per metric. Throws
// UsageError for an unknown method or metric and Error when the sensitivity file does not
// describe this model.
FrontierResult run_frontier(PlanEvaluator& evaluator, const SensitivityReport& sensitivity,
                            const FrontierOptions& options);

// Tables of the rows: JSON (every field, plan components included), CSV and Markdown (label,
// method, metric, budget, bytes, bits/weight, perplexity, KL mean ± stderr, KL p99, top-1).
nlohmann::json frontier_row_json(const FrontierRow& row, bool with_components = true);
std::string frontier_csv(const std::vector<FrontierRow>& rows);
std::string frontier_markdown(const std::vector<FrontierRow>& rows);

// The frontier file: `header` (model, text, sensitivity, settings...) plus
// {"format": "kllens-frontier", "version": 1, "stats": {...}, "rows": [...]}.
nlohmann::json frontier_document(const FrontierResult& result, const nlohmann::json& header);
// Writes PREFIX.json (the document), PREFIX.csv and PREFIX.md; throws Error when a file cannot
// be written.
void write_frontier_files(const std::string& prefix, const nlohmann::json& document,
                          const std::vector<FrontierRow>& rows);
// Writes text to a file (Error naming the path on failure).
void write_text_file(const std::string& path, const std::string& text);

}  // namespace kllens
