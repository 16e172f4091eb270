// PLAN.json: one scheme per component, with what it was derived from and what it costs.
//   {"format": "kllens-plan", "version": 1,
//    "model": {...as in the sensitivity file: path, arch, layers, params},
//    "sensitivity": {"path", "sha256"},
//    "method": "optimal" | "greedy" | "points", "metric": "kl" | "rkl" | "mse" | "sqnr",
//    "budget": {"avg_bits": x | null, "max_bytes": n | null, "bytes": n | null},
//    "components": {HF name: scheme string, "bf16" = kept},
//    "predicted_metric_sum", "bytes", "bits_per_weight", "params",
//    ...method details: "keep_rules", "optimal" | "greedy" | "points" + "point"}
// bytes count every weight (components at their scheme, everything else bf16).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "plan/planner.h"

namespace kllens {

struct Plan {
  nlohmann::json model = nlohmann::json::object();
  nlohmann::json sensitivity = nlohmann::json::object();
  std::string method, metric;
  nlohmann::json budget = nlohmann::json::object();
  std::map<std::string, std::string> components;
  double predicted_metric_sum = 0;
  int64_t bytes = 0;
  double bits_per_weight = 0;
  int64_t params = 0;
  // Further top-level keys (method details), written and read back verbatim.
  nlohmann::json extra = nlohmann::json::object();
};

// components, predicted_metric_sum, bytes, bits_per_weight and params of a choice.
Plan make_plan(const PlanProblem& problem, const Choice& choice);

nlohmann::json plan_to_json(const Plan& plan);
// Validates format, version, field types and every scheme string; `what` names the source in
// errors. Throws Error.
Plan plan_from_json(const nlohmann::json& j, const std::string& what = "plan");
void write_plan_json(const std::string& path, const Plan& plan);
Plan read_plan_json(const std::string& path);

}  // namespace kllens
