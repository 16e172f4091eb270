#include "plan/plan_io.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/json_file.h"
#include "quant/scheme.h"

namespace kllens {

using json = nlohmann::json;

namespace {
const char* const kCoreKeys[] = {"format",     "version", "model",  "sensitivity",
                                 "method",     "metric",  "budget", "components",
                                 "predicted_metric_sum", "bytes", "bits_per_weight", "params"};
}  // namespace

Plan make_plan(const PlanProblem& problem, const Choice& choice) {
  Plan plan;
  plan.metric = problem.metric;
  plan.components = choice_schemes(problem, choice);
  plan.predicted_metric_sum = plan_cost(problem, choice);
  plan.bytes = plan_bytes(problem, choice);
  plan.bits_per_weight = bits_per_weight(problem, plan.bytes);
  plan.params = problem.total_params;
  return plan;
}

json plan_to_json(const Plan& plan) {
  json j = {{"format", "kllens-plan"},
            {"version", 1},
            {"model", plan.model},
            {"sensitivity", plan.sensitivity},
            {"method", plan.method},
            {"metric", plan.metric},
            {"budget", plan.budget},
            {"components", plan.components},
            {"predicted_metric_sum", plan.predicted_metric_sum},
            {"bytes", plan.bytes},
            {"bits_per_weight", plan.bits_per_weight},
            {"params", plan.params}};
  for (const auto& [k, v] : plan.extra.items()) {
    for (const char* core : kCoreKeys)
      KLLENS_CHECK(k != core, "plan extra key '{}' collides with a core key", k);
    j[k] = v;
  }
  return j;
}

Plan plan_from_json(const json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("format") || j["format"] != "kllens-plan")
    fail("{}: not a kllens plan (no \"format\": \"kllens-plan\")", what);
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != 1)
    fail("{}: unsupported plan version (this kllens reads version 1)", what);
  Plan plan;
  try {
    plan.model = j.at("model");
    plan.sensitivity = j.value("sensitivity", json::object());
    plan.method = j.at("method").get<std::string>();
    plan.metric = j.at("metric").get<std::string>();
    plan.budget = j.value("budget", json::object());
    const json& comps = j.at("components");
    if (!comps.is_object()) fail("{}: \"components\" must be an object of name: scheme", what);
    for (const auto& [name, scheme] : comps.items()) {
      if (!scheme.is_string()) fail("{}: the scheme of {} is not a string", what, name);
      try {
        QuantScheme::parse(scheme.get<std::string>());
      } catch (const Error& e) {
        fail("{}: component {}: {}", what, name, e.what());
      }
      plan.components[name] = scheme.get<std::string>();
    }
    plan.predicted_metric_sum = j.at("predicted_metric_sum").get<double>();
    // Integers through json_integer: get<int64_t>() would cast a float (undefined out of range).
    // Sizes are never negative (0 is a hand-written plan that states none).
    plan.bytes = json_integer(j.at("bytes"), what + ": \"bytes\"", 0);
    plan.bits_per_weight = j.at("bits_per_weight").get<double>();
    plan.params = json_integer(j.at("params"), what + ": \"params\"", 0);
  } catch (const json::exception& e) {
    fail("{}: malformed plan: {}", what, e.what());
  }
  for (const auto& [k, v] : j.items()) {
    bool core = false;
    for (const char* c : kCoreKeys) core = core || k == c;
    if (!core) plan.extra[k] = v;
  }
  return plan;
}

void write_plan_json(const std::string& path, const Plan& plan) {
  write_json_file_atomic(path, plan_to_json(plan));
}

Plan read_plan_json(const std::string& path) { return plan_from_json(read_json_file(path), path); }

}  // namespace kllens
