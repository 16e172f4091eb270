// report.html of `kllens analyze`: one self-contained page (inline CSS and inline SVG, no
// scripts, fonts or network) with the model summary, the sensitivity heatmaps, the rankings, the
// size-versus-perplexity frontier, the chosen plan against the uniform baselines (the paper's
// table, for this model) and the scheme each component got. docs/report.md describes each part.
// The charts are separate functions so tests can render them from synthetic data.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "report/frontier.h"
#include "sensitivity/sweep.h"

namespace kllens {

class Model;

// What the report says about the model: {path, arch, layers, d_model, vocab, prefix_tokens,
// layer_kinds, details, params, component_params, components: [{name, role, layer, shape,
// params}], bytes: {bf16, int8_g32, int4_g32}} (sizes as `kllens inspect` computes them).
nlohmann::json model_summary_json(const Model& model, const std::string& path);

// Sensitivity of one scheme as a grid: rows are layers (plus a "model" row for components
// outside the layers: embedding, head), columns are roles, colour is log10 of the mean forward
// KL on a scale shared by every heatmap of the report ([log_lo, log_hi]); each cell's <title>
// names the component(s) and their KL ± stderr.
std::string heatmap_svg(const std::vector<SweepEntry>& entries, const std::string& scheme, double log_lo,
                        double log_hi);
// [log_lo, log_hi] covering the positive KL means of all entries (a decade wide at least).
std::pair<double, double> heatmap_log_range(const std::vector<SweepEntry>& entries);

// x = bits per weight, y = perplexity (log scale when it spans more than a factor 2): one curve
// per (method, metric) of budgeted rows, greedy rows as single markers, uniform and full
// precision as labelled points, with a legend. Infeasible rows are skipped.
std::string frontier_svg(const std::vector<FrontierRow>& rows);

// Which scheme each component got: layers x roles, coloured by scheme, with a legend.
// `components` maps HF name -> scheme; `model_summary` (model_summary_json) gives layers/roles.
std::string plan_grid_svg(const std::map<std::string, std::string>& components,
                          const nlohmann::json& model_summary);

struct ReportInputs {
  std::string title = "kllens analysis";
  nlohmann::json model;  // model_summary_json
  SensitivityReport sensitivity;
  std::vector<FrontierRow> frontier;
  std::string chosen_label;  // the frontier row of the chosen plan
  double budget = 0;         // its budget, average bits per weight
  // Shown as a key/value table at the end (texts, windows, timings, command line).
  nlohmann::json settings = nlohmann::json::object();
};

std::string render_report_html(const ReportInputs& in);

}  // namespace kllens
