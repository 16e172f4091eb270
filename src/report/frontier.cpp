#include "report/frontier.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>

#include "core/error.h"
#include "io/durable_file.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "models/model.h"
#include "plan/llama_mix_model.h"
#include "quant/scheme.h"

namespace kllens {

using json = nlohmann::json;

// ---- PlanEvaluator ----

PlanEvaluator::PlanEvaluator(Model& model, std::vector<std::vector<int32_t>> windows, int64_t cache_bytes,
                             bool show_progress)
    : model_(model), windows_(std::move(windows)), cache_bytes_(cache_bytes), show_progress_(show_progress) {
  if (windows_.empty()) fail("evaluation needs at least one window");
}

PlanEvaluator::~PlanEvaluator() = default;  // the WeightSwap puts the originals back

void PlanEvaluator::restore() {
  if (swap_) swap_->restore_all();
}

void PlanEvaluator::ensure_fp_cache() {
  if (fp_done_) return;
  if (!swap_) swap_ = std::make_unique<WeightSwap>(model_, importance_);
  const int64_t V = model_.info().vocab;
  int64_t used = 0;
  std::optional<Progress> progress;
  if (show_progress_) progress.emplace("fp", static_cast<int64_t>(windows_.size()));
  swap_->show_original(true);
  for (const auto& w : windows_) {
    const int64_t bytes = static_cast<int64_t>(w.size()) * V * static_cast<int64_t>(sizeof(float));
    if (used + bytes > cache_bytes_) break;
    fp_logits_.push_back(model_.forward(w));
    ++fp_passes_;
    used += bytes;
    if (progress) progress->advance();
  }
  swap_->show_original(false);
  if (progress) progress->finish();
  fp_done_ = true;
}

namespace {
std::string assignment_key(const SchemeAssignment& a) {
  std::string key;
  for (const auto& [name, scheme] : a) key += name + "=" + scheme.to_string() + "\n";
  return key;
}
}  // namespace

QuantEvalResult PlanEvaluator::evaluate(const SchemeAssignment& assignment, bool* reused) {
  const std::string key = assignment_key(assignment);
  if (auto it = results_.find(key); it != results_.end()) {
    if (reused) *reused = true;
    return it->second;
  }
  if (reused) *reused = false;
  ensure_fp_cache();
  swap_->apply(assignment);

  QuantEvalResult r;
  r.params = model_.weights().total_params();
  r.bytes = assignment_bytes(model_, assignment);
  r.bits_per_weight = 8.0 * static_cast<double>(r.bytes) / static_cast<double>(r.params);
  r.changed = swap_->changed();
  // No weight differs from the loaded ones: the quantized logits are the full-precision ones.
  const bool identity = r.changed.empty();
  const int64_t V = model_.info().vocab;
  LogitComparison cmp;
  double nll_q = 0, nll_fp = 0;
  std::optional<Progress> progress;
  if (show_progress_) progress.emplace("eval", static_cast<int64_t>(windows_.size()));
  std::vector<float> fp_tmp, q_tmp;
  for (size_t wi = 0; wi < windows_.size(); ++wi) {
    const auto& w = windows_[wi];
    const std::vector<float>* fp = nullptr;
    if (wi < fp_logits_.size()) {
      fp = &fp_logits_[wi];
    } else {
      swap_->show_original(true);
      fp_tmp = model_.forward(w);
      swap_->show_original(false);
      ++fp_passes_;
      fp = &fp_tmp;
    }
    const std::vector<float>* q = fp;
    if (!identity) {
      q_tmp = model_.forward(w);
      ++q_passes_;
      q = &q_tmp;
    }
    // The accumulation of evaluate_quantized(): same calls, same order, so the numbers agree
    // bit for bit.
    for (size_t t = 0; t < w.size(); ++t) {
      const float* ref = fp->data() + t * static_cast<size_t>(V);
      const float* test = q->data() + t * static_cast<size_t>(V);
      const bool has_target = t + 1 < w.size();
      cmp.add(ref, test, static_cast<int>(V), has_target ? w[t + 1] : -1);
      if (has_target) {
        nll_q += token_nll(test, V, w[t + 1]);
        nll_fp += token_nll(ref, V, w[t + 1]);
        ++r.tokens;
      }
    }
    ++r.windows;
    if (progress) progress->advance();
  }
  if (progress) progress->finish();
  r.ctx = static_cast<int64_t>(windows_[0].size());
  r.mean_nll = r.tokens ? nll_q / static_cast<double>(r.tokens) : 0;
  r.mean_nll_fp = r.tokens ? nll_fp / static_cast<double>(r.tokens) : 0;
  r.ppl = std::exp(r.mean_nll);
  r.ppl_fp = std::exp(r.mean_nll_fp);
  r.logits = cmp.results();
  results_.emplace(key, r);
  return r;
}

double PlanEvaluator::perplexity_of(const SchemeAssignment& assignment,
                                    const std::vector<std::vector<int32_t>>& windows) {
  if (!swap_) swap_ = std::make_unique<WeightSwap>(model_, importance_);
  swap_->apply(assignment);
  ++q_passes_;
  return perplexity(model_, windows, false).ppl;
}

// ---- frontier ----

const std::vector<std::string>& frontier_method_names() {
  static const std::vector<std::string> names = {"optimal", "points"};
  return names;
}

int64_t budget_bytes_for(double avg_bits, int64_t total_params) {
  const double b = std::floor(avg_bits * static_cast<double>(total_params) / 8.0);
  if (!(b > 0) || b > 9e18) throw UsageError(fmt::format("budget {} bits per weight is out of range", avg_bits));
  return static_cast<int64_t>(b);
}

namespace {

SchemeAssignment to_assignment(const std::map<std::string, std::string>& schemes) {
  SchemeAssignment a;
  for (const auto& [name, s] : schemes) a[name] = QuantScheme::parse(s);
  return a;
}

std::string budget_text(double b) { return fmt::format("{}", b); }

}  // namespace

FrontierResult run_frontier(PlanEvaluator& evaluator, const SensitivityReport& sensitivity,
                            const FrontierOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  Model& model = evaluator.model();
  for (const auto& m : options.methods)
    if (std::find(frontier_method_names().begin(), frontier_method_names().end(), m) ==
        frontier_method_names().end())
      throw UsageError(fmt::format("unknown method '{}': expected optimal or points (greedy has its own flag)", m));
  for (const auto& m : options.metrics)
    if (std::find(plan_metric_names().begin(), plan_metric_names().end(), m) == plan_metric_names().end())
      throw UsageError(fmt::format("unknown metric '{}': expected kl, rkl, mse or sqnr", m));
  for (double b : options.budgets)
    if (!(b > 0) || !std::isfinite(b)) throw UsageError(fmt::format("budget {} bits per weight must be positive", b));
  for (const auto& pt : options.fixed_points)
    if (pt.size() != 3 || pt[0] != 'p' || pt < "p01" || pt > "p10")
      throw UsageError(fmt::format("points configuration '{}': expected p01..p10", pt));
  std::vector<QuantScheme> uniform;
  for (const auto& s : options.uniform) uniform.push_back(QuantScheme::parse(s));

  const int64_t params = model.weights().total_params();
  if (sensitivity.model.contains("params") && sensitivity.model["params"].is_number_integer() &&
      sensitivity.model["params"].get<int64_t>() != params)
    fail("the sensitivity file was measured on a model of {} parameters; this one has {}",
         sensitivity.model["params"].get<int64_t>(), params);
  {
    // Every component the file names must exist here (plans name them all).
    SchemeAssignment names;
    for (const auto& e : sensitivity.entries) names[e.component] = QuantScheme::parse(kKeepScheme);
    validate_assignment(model, names);
  }

  // The problems are built before anything is evaluated, so a bad --keep rule fails at once.
  struct PerMetric {
    PlanProblem problem;
    std::vector<PointPlan> points;
    int64_t min_bytes = 0;
  };
  std::map<std::string, PerMetric> problems;
  for (const auto& metric : options.metrics) {
    ProblemOptions po;
    po.metric = metric;
    po.keep = options.keep;
    PerMetric pm;
    pm.problem = build_problem(sensitivity, po);
    use_gguf_sizes(pm.problem, model);
    pm.min_bytes = plan_bytes(pm.problem, smallest_choice(pm.problem));
    if (std::find(options.methods.begin(), options.methods.end(), "points") != options.methods.end())
      pm.points = solve_points(pm.problem);
    problems.emplace(metric, std::move(pm));
  }

  FrontierResult out;
  auto emit = [&](FrontierRow row, const SchemeAssignment* a) {
    if (a) row.eval = evaluator.evaluate(*a, &row.reused);
    out.evaluations += a && !row.reused;
    if (options.on_row) options.on_row(row);
    out.rows.push_back(std::move(row));
  };

  if (options.full_precision) {
    FrontierRow row;
    row.label = "full precision";
    row.method = "fp";
    row.note = "every tensor as loaded (bf16 size)";
    const SchemeAssignment none;
    emit(std::move(row), &none);
  }
  for (size_t u = 0; u < uniform.size(); ++u) {
    const QuantScheme& s = uniform[u];
    FrontierRow row;
    // The spelling as given ("int4:g32", not the canonical "int4:g32:sym:s16"): labels are read by people.
    row.label = "uniform " + options.uniform[u];
    row.method = "uniform";
    row.point = options.uniform[u];
    std::vector<std::string> unsupported;
    const SchemeAssignment a = uniform_assignment(model, s, false, &unsupported);
    row.note = "conv1d kept bf16";
    if (!unsupported.empty())
      row.note += fmt::format("; {} component(s) whose rows {} cannot store kept bf16", unsupported.size(),
                              options.uniform[u]);
    emit(std::move(row), &a);
  }

  auto plan_row = [&](const std::string& method, const std::string& metric, const PlanProblem& p,
                      const Choice& c) {
    FrontierRow row;
    row.method = method;
    row.metric = metric;
    row.components = choice_schemes(p, c);
    row.predicted = plan_cost(p, c);
    return row;
  };

  // The competitors: llama-quantize's mixes for this model, and the optimal plan of each metric
  // at exactly the mix's bytes.
  if (!options.mixes.empty()) {
    const LlamaMixInput in = llama_mix_input(model);
    for (const auto& name : options.mixes) {
      const LlamaMixResult mix = llama_mix(in.tensors, in.facts, {name, options.mix_imatrix});
      FrontierRow row;
      row.label = "mix " + mix.mix;
      row.method = "mix";
      row.point = mix.mix;
      const SchemeAssignment a = llama_mix_assignment(model, mix);
      for (const auto& [name, scheme] : a) row.components[name] = scheme.to_string();
      row.note = fmt::format("llama-quantize {} as of llama.cpp {}{}", mix.mix, mix.commit,
                             options.mix_imatrix ? ", --imatrix rules" : "");
      const int64_t mix_bytes = assignment_bytes(model, a);
      emit(std::move(row), &a);
      for (const auto& metric : options.metrics) {
        const PlanProblem& p = problems.at(metric).problem;
        FrontierRow kl_row;
        if (mix_bytes < problems.at(metric).min_bytes) {
          kl_row.method = "optimal";
          kl_row.metric = metric;
          kl_row.feasible = false;
          kl_row.note = "infeasible at the mix's size";
        } else {
          OptimalOptions oo;
          oo.grid = options.grid;
          OptimalReport rep;
          const Choice c = solve_optimal(p, mix_bytes, oo, &rep);
          kl_row = plan_row("optimal", metric, p, c);
          kl_row.note = fmt::format("at the {} bytes of {}", mix_bytes, mix.mix);
        }
        kl_row.label = fmt::format("optimal/{} @{}", metric, mix.mix);
        kl_row.budget_bytes = mix_bytes;
        SchemeAssignment ka;
        for (const auto& [n, sc] : kl_row.components) ka[n] = QuantScheme::parse(sc);
        const bool ok = kl_row.feasible;
        emit(std::move(kl_row), ok ? &ka : nullptr);
      }
    }
  }

  for (const auto& method : options.methods) {
    for (const auto& metric : options.metrics) {
      const PerMetric& pm = problems.at(metric);
      const PlanProblem& p = pm.problem;
      for (double b : options.budgets) {
        const int64_t bb = budget_bytes_for(b, p.total_params);
        FrontierRow row;
        if (method == "optimal") {
          if (bb < pm.min_bytes) {
            row.method = method;
            row.metric = metric;
            row.feasible = false;
            row.note = fmt::format("infeasible: the smallest plan is {:.4f} bits per weight",
                                   bits_per_weight(p, pm.min_bytes));
          } else {
            OptimalOptions oo;
            oo.grid = options.grid;
            OptimalReport rep;
            const Choice c = solve_optimal(p, bb, oo, &rep);
            row = plan_row(method, metric, p, c);
            row.note = rep.exact ? "exact" : fmt::format("certified lower bound {:.4g}", rep.lower_bound);
          }
          row.label = fmt::format("optimal/{} @{}", metric, budget_text(b));
        } else {
          // The largest point that fits: the least damage the budget allows (what `kllens plan
          // --method points --avg-bits` picks).
          int best = -1;
          for (size_t k = 0; k < pm.points.size(); ++k) {
            const int64_t pb = plan_bytes(p, pm.points[k].choice);
            if (pb <= bb && (best < 0 || pb > plan_bytes(p, pm.points[static_cast<size_t>(best)].choice)))
              best = static_cast<int>(k);
          }
          if (best < 0) {
            int64_t smallest = -1;
            for (const auto& pt : pm.points) {
              const int64_t pb = plan_bytes(p, pt.choice);
              if (smallest < 0 || pb < smallest) smallest = pb;
            }
            row.method = method;
            row.metric = metric;
            row.feasible = false;
            row.note = fmt::format("infeasible: the smallest point is {:.4f} bits per weight",
                                   bits_per_weight(p, smallest));
            row.label = fmt::format("points/{} @{}", metric, budget_text(b));
          } else {
            const PointPlan& pt = pm.points[static_cast<size_t>(best)];
            row = plan_row(method, metric, p, pt.choice);
            row.point = pt.name;
            row.note = fmt::format("{} of the sorted entries applied", pt.cutoff);
            row.label = fmt::format("points/{} @{} ({})", metric, budget_text(b), pt.name);
          }
        }
        row.budget = b;
        row.budget_bytes = bb;
        if (row.feasible) {
          const SchemeAssignment a = to_assignment(row.components);
          emit(std::move(row), &a);
        } else {
          emit(std::move(row), nullptr);
        }
      }
      if (method != "points") continue;
      for (const auto& name : options.fixed_points) {
        const PointPlan* pt = nullptr;
        for (const auto& q : pm.points)
          if (q.name == name) pt = &q;
        if (!pt) fail("the points sweep has no configuration {}", name);
        FrontierRow row = plan_row(method, metric, p, pt->choice);
        row.point = pt->name;
        row.label = fmt::format("points/{} {}", metric, pt->name);
        row.note = fmt::format("{} of the sorted entries applied", pt->cutoff);
        const SchemeAssignment a = to_assignment(row.components);
        emit(std::move(row), &a);
      }
    }
  }

  if (options.greedy) {
    std::vector<std::vector<int32_t>> guard = options.greedy_windows;
    if (guard.empty()) {
      const auto& w = evaluator.windows();
      guard.assign(w.begin(), w.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(4, w.size())));
    }
    for (const auto& metric : options.metrics) {
      const PlanProblem& p = problems.at(metric).problem;
      const PplOracle oracle = [&](const std::map<std::string, std::string>& schemes) {
        return evaluator.perplexity_of(to_assignment(schemes), guard);
      };
      const GreedyResult g = solve_greedy(p, oracle, options.greedy_options);
      FrontierRow row = plan_row("greedy", metric, p, g.choice);
      int accepted = 0, evaluated = 0;
      for (const auto& s : g.steps) accepted += s.accepted, evaluated += !s.skipped;
      row.label = fmt::format("greedy/{}", metric);
      row.note = fmt::format("gamma {}{}: {} of {} steps accepted; guard ppl {:.4f} -> {:.4f} on {} windows",
                             options.greedy_options.gamma, options.greedy_options.fixed_base ? " (fixed base)" : "",
                             accepted, evaluated, g.start_ppl, g.final_ppl, guard.size());
      const SchemeAssignment a = to_assignment(row.components);
      emit(std::move(row), &a);
    }
  }
  evaluator.restore();
  out.fp_forward_passes = evaluator.fp_forward_passes();
  out.quantized_forward_passes = evaluator.quantized_forward_passes();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

// ---- tables ----

json frontier_row_json(const FrontierRow& row, bool with_components) {
  json j = {{"label", row.label},
            {"method", row.method},
            {"metric", row.metric.empty() ? json(nullptr) : json(row.metric)},
            {"budget", row.budget ? json(*row.budget) : json(nullptr)},
            {"budget_bytes", row.budget ? json(row.budget_bytes) : json(nullptr)},
            {"point", row.point.empty() ? json(nullptr) : json(row.point)},
            {"feasible", row.feasible},
            {"note", row.note},
            {"predicted_metric_sum", row.predicted ? json(*row.predicted) : json(nullptr)},
            {"reused", row.reused}};
  if (row.feasible) j.update(eval_result_json(row.eval));
  if (with_components && !row.components.empty()) j["components"] = row.components;
  return j;
}

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string g(double v) { return std::isfinite(v) ? fmt::format("{:.9g}", v) : std::string(); }

}  // namespace

std::string frontier_csv(const std::vector<FrontierRow>& rows) {
  std::string out =
      "label,method,metric,budget,point,feasible,bytes,bits_per_weight,ppl,ppl_fp,kl_mean,kl_stderr,kl_p99,"
      "top1,predicted_metric_sum,note\n";
  for (const auto& r : rows) {
    const bool f = r.feasible;
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_field(r.label), r.method, r.metric,
                       r.budget ? g(*r.budget) : "", csv_field(r.point), f ? "true" : "false",
                       f ? std::to_string(r.eval.bytes) : "", f ? g(r.eval.bits_per_weight) : "",
                       f ? g(r.eval.ppl) : "", f ? g(r.eval.ppl_fp) : "", f ? g(r.eval.logits.kl_forward.mean) : "",
                       f ? g(r.eval.logits.kl_forward.stderr_) : "", f ? g(r.eval.logits.kl_p99) : "",
                       f ? g(r.eval.logits.top1.mean) : "", r.predicted ? g(*r.predicted) : "",
                       csv_field(r.note));
  }
  return out;
}

std::string frontier_markdown(const std::vector<FrontierRow>& rows) {
  std::string out =
      "| label | method | metric | budget | bytes | bits/weight | perplexity | KL mean ± stderr | KL p99 | top-1 |\n"
      "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows) {
    const std::string budget = r.budget ? fmt::format("{}", *r.budget) : "–";
    const std::string metric = r.metric.empty() ? "–" : r.metric;
    if (!r.feasible) {
      out += fmt::format("| {} | {} | {} | {} | – | – | – | – | – | – |\n", r.label, r.method, metric, budget);
      continue;
    }
    const auto& l = r.eval.logits;
    out += fmt::format("| {} | {} | {} | {} | {} | {:.4f} | {:.4f} | {:.3e} ± {:.1e} | {:.3e} | {:.2f}% |\n", r.label,
                       r.method, metric, budget, r.eval.bytes, r.eval.bits_per_weight, r.eval.ppl,
                       l.kl_forward.mean, l.kl_forward.stderr_, l.kl_p99, 100 * l.top1.mean);
  }
  bool any_infeasible = false;
  for (const auto& r : rows) any_infeasible |= !r.feasible;
  if (any_infeasible) {
    out += "\n";
    for (const auto& r : rows)
      if (!r.feasible) out += fmt::format("- {}: {}\n", r.label, r.note);
  }
  return out;
}

json frontier_document(const FrontierResult& result, const json& header) {
  json doc = {{"format", "kllens-frontier"}, {"version", 1}};
  doc.update(header);
  doc["stats"] = {{"evaluations", result.evaluations},
                  {"fp_forward_passes", result.fp_forward_passes},
                  {"quantized_forward_passes", result.quantized_forward_passes},
                  {"seconds", result.seconds}};
  json rows = json::array();
  for (const auto& r : result.rows) rows.push_back(frontier_row_json(r));
  doc["rows"] = rows;
  return doc;
}

void write_text_file(const std::string& path, const std::string& text) {
  write_file_durably(path, text);
}

void write_frontier_files(const std::string& prefix, const json& document, const std::vector<FrontierRow>& rows) {
  write_text_file(prefix + ".json", document.dump(2) + "\n");
  write_text_file(prefix + ".csv", frontier_csv(rows));
  write_text_file(prefix + ".md", frontier_markdown(rows));
}

}  // namespace kllens
