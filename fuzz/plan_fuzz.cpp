// PLAN.json (plan/plan_io.h: plan_from_json after the JSON parse read_plan_json does), which
// parses every component's scheme string (quant/scheme.h: QuantScheme::parse); a plan that
// loads is written back and must load again.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/json_file.h"
#include "plan/plan_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const nlohmann::json j = kllens::parse_json_text(kllens::fuzz::as_text(data, size), "plan.json");
    const kllens::Plan plan = kllens::plan_from_json(j, "plan.json");
    const kllens::Plan again = kllens::plan_from_json(
        kllens::parse_json_text(kllens::plan_to_json(plan).dump(1), "rewritten"), "rewritten");
    if (again.components != plan.components) __builtin_trap();
  } catch (const kllens::Error&) {
  }
  return 0;
}
