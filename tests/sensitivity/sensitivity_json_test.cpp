// sensitivity/sweep: reading SENS.json (sensitivity_from_json, what read_sensitivity_json runs
// after parsing the file). Malformed reports the fuzzer (fuzz/sensitivity_fuzz.cpp) or the same
// code pattern in plan_io produced: each is one Error naming the source, never an exception of
// the JSON library or undefined behaviour.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "sensitivity/sweep.h"
#include "test_util.h"

namespace kllens {
namespace {

using json = nlohmann::json;

json metric(double mean) { return {{"mean", mean}, {"stderr", 0.0}}; }

json valid_entry() {
  return {{"component", "backbone.layers.0.mixer.in_proj.weight"}, {"layer", 0}, {"role", "in_proj"},
          {"shape", {512, 256}}, {"params", 131072}, {"scheme", "q4_K"}, {"bytes", 73728},
          {"seconds", 0.5},
          {"metrics", {{"kl", metric(1e-3)}, {"rkl", metric(1e-3)}, {"mse", metric(0.1)},
                       {"sqnr_db", metric(20)}, {"top1", metric(0.9)}, {"dnll", metric(0.01)}}}};
}

json valid_report() {
  return {{"format", "kllens-sensitivity"}, {"version", 1}, {"model", json::object()},
          {"calibration", json::object()}, {"schemes", {"q4_K"}}, {"sweep", json::object()},
          {"entries", {valid_entry()}}};
}

void expect_error(const json& j, const std::string& part) {
  test::expect_error([&] { sensitivity_from_json(j, "s.json"); }, {"s.json", part},
                     "accepted " + j.dump());
}

TEST(SensitivityJson, ValidReportReads) {
  const SensitivityReport r = sensitivity_from_json(valid_report(), "s.json");
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].bytes, 73728);
  EXPECT_EQ(r.entries[0].shape, (std::vector<int64_t>{512, 256}));
}

TEST(SensitivityJson, FormatThatIsNotAStringIsOneError) {
  json j = valid_report();
  j["format"] = 0;  // was nlohmann::type_error from j.value("format", "")
  expect_error(j, "not a kllens sensitivity file");
}

TEST(SensitivityJson, IntegerFieldsMustBeIntegersInRange) {
  for (const char* key : {"bytes", "params", "layer"}) {
    for (const json& bad : {json(1.01111e+92), json(2.5), json("7")}) {
      json j = valid_report();
      j["entries"][0][key] = bad;  // 1e92 was a float -> int64 cast: undefined behaviour
      expect_error(j, key);
    }
  }
  json j = valid_report();
  j["entries"][0]["layer"] = int64_t{1} << 40;  // was wrapped into an int
  expect_error(j, "layer");
  j = valid_report();
  j["entries"][0]["shape"] = {512, 1e300};
  expect_error(j, "shape");
  j = valid_report();
  j["entries"][0]["shape"] = 5;
  expect_error(j, "shape");
}

// Sizes of 0 or below, and sizes that disagree: the planner sums 2 x params (the bf16 keep) and
// bytes over every component, so each must be positive, consistent and bounded.
TEST(SensitivityJson, SizesMustBePositiveAndAgree) {
  const auto with = [](const char* key, json value) {
    json j = valid_report();
    j["entries"][0][key] = std::move(value);
    return j;
  };
  for (const json& bad : {json(0), json(-1), json(-131072)}) {
    expect_error(with("params", bad), "entry \"params\" must be an integer from 1");
    expect_error(with("bytes", bad), "entry \"bytes\" must be an integer from 1");
  }
  expect_error(with("shape", {512, 0}), "entry \"shape\" must be an integer from 1");
  expect_error(with("shape", {-512, -256}), "entry \"shape\"");
  expect_error(with("shape", json::array()), "entry \"shape\" must be a non-empty list");
  expect_error(with("shape", {512, 128}), "entry \"params\" is 131072 but its \"shape\" [512,128] holds 65536");
  // Beyond 2^48 parameters (every dimension within the config bound, 2^24).
  json huge = with("shape", {16777216, 16777216, 2});
  huge["entries"][0]["params"] = 1;
  expect_error(huge, "holds more than 2^48");
  expect_error(with("params", int64_t{1} << 49), "entry \"params\" must be an integer from 1 to 281474976710656");
  // No scheme stores more than 4 bytes per parameter; 8 x params is the bound.
  expect_error(with("bytes", 8 * 131072 + 1), "entry \"bytes\" must be an integer from 1 to 1048576");
  EXPECT_NO_THROW(sensitivity_from_json(with("bytes", 8 * 131072), "s.json"));
}

}  // namespace
}  // namespace kllens
