// Mixed-precision planning: turn a sensitivity file (one measured damage per (component, scheme))
// into one scheme per component. Three methods (docs/planning.md has the guarantees):
//   optimal  minimise the summed damage subject to a byte budget (multiple-choice knapsack,
//            dynamic programming over a byte grid whose rounding never breaks the budget);
//   greedy   the published algorithm: walk all entries from least to most damaging, keep each one
//            whose measured perplexity stays within gamma x the reference (oracle supplied by the
//            caller, so the core is testable without a model);
//   points   the published Pareto sweep: ten prefixes p01..p10 of the sorted entry list.
//
// Size accounting counts every weight of the model: components at their scheme (exact packed
// bytes from the sensitivity file, scales included), every other tensor (norms, biases, A_log,
// D, meta tokens, and components the sweep did not cover) at bf16, 2 bytes per parameter.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "sensitivity/sweep.h"

namespace kllens {

class Model;

// The scheme the planner calls "keep": the demo and published checkpoints are bf16, so keeping a
// component costs 2 bytes per parameter and, by definition, no damage.
inline constexpr const char* kKeepScheme = "bf16";

// The metrics a plan can minimise. For sqnr the damage is the noise-to-signal power ratio
// 10^(-SQNR_dB/10): monotone decreasing in SQNR, 0 for an unchanged model, additive like the
// other damages. kl, rkl and mse are used as they are.
const std::vector<std::string>& plan_metric_names();
double plan_metric_cost(const EntryMetrics& m, const std::string& metric);

struct Candidate {
  std::string scheme;  // "bf16" for keep, else the spelling of the sensitivity file
  int64_t bytes = 0;
  double cost = 0;     // damage in the chosen metric; 0 for keep
};

struct PlanComponent {
  std::string name;
  std::string role;
  int layer = -1;
  int64_t params = 0;
  std::vector<Candidate> candidates;  // keep first, then the file's schemes in file order
  int forced = -1;                    // index into candidates fixed by a --keep rule or default
  std::string forced_by;              // the rule that fixed it ("default: conv1d stays bf16", ...)
  bool is_free() const { return forced < 0; }
};

struct PlanProblem {
  std::string metric;
  int64_t total_params = 0;     // every parameter of the model
  int64_t other_params = 0;     // parameters outside the components
  // Bytes of everything outside the components; -1: the sensitivity file alone, 2 per parameter
  // (bf16). use_gguf_sizes sets the exact F32 size the GGUF file holds them in.
  int64_t other_bytes_exact = -1;
  std::vector<PlanComponent> components;  // in sensitivity-file order
  bool gguf_sizes = false;      // use_gguf_sizes was applied: bytes are the file's tensor data
  int64_t other_bytes() const { return other_bytes_exact >= 0 ? other_bytes_exact : 2 * other_params; }
};

// Makes every size of the problem the exact tensor data of the GGUF file `kllens quantize` writes
// for the model (eval/quantized_eval.h assignment_bytes): every candidate at the ggml type of its
// scheme, the other tensors at F32, and components whose type the file layout fixes (conv1d in
// llama.cpp's layout, always F32) at that size whatever is chosen. plan_bytes of a choice then
// equals assignment_bytes of its assignment (tested). Error when the model lacks a component.
void use_gguf_sizes(PlanProblem& problem, const Model& model);

// One --keep rule: `ROLE=SCHEME` (a role name of the sensitivity file: embed, head, in_proj,
// conv1d, q_proj, ...) or `REGEX=SCHEME` (std::regex_search on the HF tensor name). The text is
// split at its last '='; a left side equal to a role name is a role. Later rules win.
struct KeepRule {
  std::string text;
  std::string pattern;
  std::string scheme;
  bool is_role = false;
};
KeepRule parse_keep_rule(const std::string& text);  // throws UsageError

struct ProblemOptions {
  std::string metric = "kl";
  std::vector<KeepRule> keep;
  // Practice: conv1d (a 4-tap depthwise filter, tiny and sensitive) stays at full precision
  // unless a --keep rule names it.
  bool conv1d_full_precision = true;
};

// Builds the candidate sets from a sensitivity file. Throws UsageError for a --keep scheme the
// file does not have, a --keep regex that matches no component, or an unknown metric; Error for
// a file whose entries disagree with themselves or whose metric is not a number.
PlanProblem build_problem(const SensitivityReport& report, const ProblemOptions& options);

// A choice per component: an index into its candidates.
using Choice = std::vector<int>;

int64_t plan_bytes(const PlanProblem& p, const Choice& c);  // all weights, bytes
double plan_cost(const PlanProblem& p, const Choice& c);    // summed damage
double bits_per_weight(const PlanProblem& p, int64_t bytes);
// Every component at its smallest candidate (forced ones at theirs): the least achievable size.
Choice smallest_choice(const PlanProblem& p);
// Every free component kept, forced ones at their rule: the starting point of greedy and points.
Choice initial_choice(const PlanProblem& p);
// Fails with the minimum achievable size when even the smallest plan exceeds the budget.
void check_budget_feasible(const PlanProblem& p, int64_t budget_bytes);

// ---- optimal ----
struct OptimalOptions {
  int64_t grid = 20000;  // at most this many byte cells in the dynamic program
};
struct OptimalReport {
  int64_t granularity = 1;   // bytes per cell
  int64_t cells = 0;
  bool exact = false;        // granularity divides every size difference: no rounding at all
  int free_components = 0;   // components with a choice
  double lower_bound = 0;    // certified: no plan within the budget has a smaller summed damage
  // Slack: the plan is at least as good as any plan of size <= budget - slack_bytes.
  int64_t slack_bytes = 0;
};
Choice solve_optimal(const PlanProblem& p, int64_t budget_bytes, const OptimalOptions& options = {},
                     OptimalReport* report = nullptr);

// ---- measured refinement of an optimal plan (interactions) ----
// The optimal plan minimises the *sum* of single-component damages; quantizing several
// components at once can do more (or less) harm than that sum. Refinement measures instead of
// predicting: each round builds the neighbours of the current plan (one free component moved to
// another candidate, every other choice re-optimised within the budget, earlier accepted moves
// kept), measures the `per_round` neighbours the sum ranks best with `measure` (the whole plan's
// damage on calibration text), and moves to the best of them if it measures lower than the
// current plan; it stops after `rounds` rounds or when no neighbour improves.
struct RefineStep {
  int round = 0;
  std::string component, scheme;  // the move: component fixed at scheme
  double predicted = 0;           // summed single-component damage of the neighbour
  double measured = 0;            // its measured damage
  bool accepted = false;
};
struct RefineResult {
  Choice choice;
  double start_predicted = 0, start_measured = 0;
  double final_predicted = 0, final_measured = 0;
  int measurements = 0;
  std::vector<RefineStep> steps;
};
RefineResult refine_optimal(const PlanProblem& p, int64_t budget_bytes, const Choice& start,
                            const std::function<double(const Choice&)>& measure, int rounds,
                            int per_round, const OptimalOptions& options = {});

// ---- greedy ----
// Perplexity of the model with these components at these schemes (absent components kept).
using PplOracle = std::function<double(const std::map<std::string, std::string>&)>;
struct GreedyOptions {
  double gamma = 1.10;
  // false (published): each accepted step becomes the new reference, so the bound drifts;
  // true: every step is compared with gamma x the starting perplexity.
  bool fixed_base = false;
};
struct GreedyStep {
  std::string component, scheme;
  double cost = 0;
  double ppl = 0;        // NaN when not evaluated (skipped)
  double reference = 0;  // the perplexity the step was compared with (x gamma)
  bool accepted = false;
  bool skipped = false;  // the component already holds a scheme of no more bytes
};
struct GreedyResult {
  Choice choice;
  double start_ppl = 0;  // with only the forced schemes applied
  double final_ppl = 0;
  std::vector<GreedyStep> steps;
};
GreedyResult solve_greedy(const PlanProblem& p, const PplOracle& ppl, const GreedyOptions& options,
                          const std::function<void(const GreedyStep&)>& on_step = {});

// ---- points ----
struct PointPlan {
  std::string name;  // p01..p10
  int64_t cutoff = 0;  // entries of the sorted list applied
  Choice choice;
};
std::vector<PointPlan> solve_points(const PlanProblem& p);

// The entries greedy and points walk: (component index, candidate index) of every free
// component's non-keep candidates, ascending by damage (ties: sensitivity-file order).
std::vector<std::pair<int, int>> sorted_entries(const PlanProblem& p);

// component name -> scheme string for a choice (every component, "bf16" for keep).
std::map<std::string, std::string> choice_schemes(const PlanProblem& p, const Choice& c);

}  // namespace kllens
