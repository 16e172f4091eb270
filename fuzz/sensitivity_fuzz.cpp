// SENS.json, the sensitivity sweep's result file (sensitivity/sweep.h: sensitivity_from_json
// after the JSON parse read_sensitivity_json does; every entry through entry_from_json, the
// journal's line format too), then the terminal summaries built from a report's entries
// (sensitivity/summary.h) and every metric read by name.
#include "core/error.h"
#include "fuzz_util.h"
#include "io/json_file.h"
#include "sensitivity/summary.h"
#include "sensitivity/sweep.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const nlohmann::json j = kllens::parse_json_text(kllens::fuzz::as_text(data, size), "sens.json");
    const kllens::SensitivityReport r = kllens::sensitivity_from_json(j, "sens.json");
    (void)kllens::format_role_ranking(kllens::rank_roles(r.entries));
    (void)kllens::format_top_entries(r.entries, 10);
    for (const auto& e : r.entries) {
      for (const auto& m : kllens::metric_names()) (void)kllens::metric_value(e.metrics, m);
      (void)kllens::entry_to_json(e).dump();
    }
  } catch (const kllens::Error&) {
  }
  return 0;
}
