// io/json_file: the one parse entry for JSON text (parse_json_text, read_json_file) and its
// nesting limit. nlohmann's parser is iterative, but copying, comparing and dump() recurse once
// per level: 100,000 nested '[' parsed fine and then overflowed the stack in `kllens inspect`
// (a config.json) and `kllens plan` (a sensitivity file).
#include "io/json_file.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "core/error.h"
#include "io/hf_config.h"
#include "test_util.h"

namespace kllens {
namespace {

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

using test::expect_error;

TEST(JsonDepth, TheLimitItselfParses) {
  EXPECT_TRUE(parse_json_text(nested(kMaxJsonDepth), "t").is_array());
  const std::string objects = [] {
    std::string s;
    for (int i = 0; i < kMaxJsonDepth; ++i) s += "{\"k\":";
    s += "1";
    for (int i = 0; i < kMaxJsonDepth; ++i) s += "}";
    return s;
  }();
  EXPECT_TRUE(parse_json_text(objects, "t").is_object());
  expect_error([] { parse_json_text(nested(kMaxJsonDepth + 1), "deep.json"); },
               {"deep.json", "nested deeper than", std::to_string(kMaxJsonDepth)});
}

// Brackets inside strings are text, also after escaped quotes and backslashes.
TEST(JsonDepth, BracketsInStringsDoNotCount) {
  const std::string many(10 * kMaxJsonDepth, '[');
  EXPECT_EQ(parse_json_text("[\"" + many + "\"]", "t")[0].get<std::string>(), many);
  EXPECT_EQ(parse_json_text(R"(["\"[[[", "\\", "{{{"])", "t").size(), 3u);
  // Closing brackets inside a string do not lower the depth either.
  const std::string closers(kMaxJsonDepth, ']');
  expect_error([&] { parse_json_text("[\"" + closers + "\"," + nested(kMaxJsonDepth) + "]", "t"); },
               {"nested deeper"});
}

TEST(JsonDepth, HundredThousandLevelsAreOneFastError) {
  const std::string deep = nested(100000);
  const auto start = std::chrono::steady_clock::now();
  expect_error([&] { parse_json_text(deep, "text"); }, {"text", "nested deeper"});
  const auto dir = test::fresh_temp_dir("json-depth");
  const std::string path = (dir / "deep.json").string();
  test::write_file(path, "{\"model\": " + deep + "}");
  expect_error([&] { read_json_file(path); }, {path, "nested deeper"});
  // config.json: the case that crashed `kllens inspect` (the error message dumps the value).
  expect_error([&] { HfConfig::from_text("{\"hidden_size\": " + deep + "}", "config.json"); },
               {"config.json", "nested deeper"});
  EXPECT_LT(seconds_since(start), test::time_limit(1.0));
}

TEST(JsonFile, MalformedAndMissingFilesNameThePath) {
  const auto dir = test::fresh_temp_dir("json-file");
  const std::string missing = (dir / "missing.json").string();
  expect_error([&] { read_json_file(missing); }, {missing, "cannot open"});
  const std::string bad = (dir / "bad.json").string();
  test::write_file(bad, "{\"a\": NaN}");
  expect_error([&] { read_json_file(bad); }, {bad, "malformed JSON"});
  test::write_file(bad, "{\"a\": 1e400}");  // beyond a double
  expect_error([&] { read_json_file(bad); }, {bad, "malformed JSON"});
  test::write_file(bad, "");
  expect_error([&] { read_json_file(bad); }, {bad, "malformed JSON"});
}

// NaN and 1e400 in the integer and size fields of a config.json (Python's json writes and reads
// both): one error naming the key, as for any other non-integer.
TEST(JsonFile, NanAndOverflowingNumbersInConfigIntegersNameTheKey) {
  for (const char* value : {"NaN", "1e400", "-1e400", "Infinity"}) {
    SCOPED_TRACE(value);
    const HfConfig c =
        HfConfig::from_text(std::string("{\"hidden_size\": ") + value + ", \"n\": [1, " + value + "]}",
                            "config.json");
    expect_error([&] { c.get_positive("hidden_size"); }, {"config.json", "'hidden_size'", "integer"});
    expect_error([&] { c.get_int("hidden_size"); }, {"'hidden_size'"});
    expect_error([&] { c.get_int_list("n"); }, {"'n'", "integers"});
  }
  // A number that fits is copied as it is.
  EXPECT_EQ(python_json_literals("[1e300, -2.5E-3, 7]"), "[1e300, -2.5E-3, 7]");
  EXPECT_EQ(python_json_literals("[1e400]"), "[{\"__float__\": \"Infinity\"}]");
  EXPECT_EQ(python_json_literals("[\"1e400\"]"), "[\"1e400\"]");
  // Sizes of 0 and below.
  const HfConfig c = HfConfig::from_text(R"({"hidden_size": 0, "vocab_size": -4096})", "config.json");
  expect_error([&] { c.get_positive("hidden_size"); }, {"'hidden_size'", "positive", "0"});
  expect_error([&] { c.get_positive("vocab_size"); }, {"'vocab_size'", "positive", "-4096"});
}

}  // namespace
}  // namespace kllens
