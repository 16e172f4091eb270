// io/hf_config: typed access to config.json; every failure names the file and the key.
#include "io/hf_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

HfConfig config(const std::string& text) { return HfConfig::from_json(json::parse(text), "cfg.json"); }

using test::expect_error;

TEST(HfConfig, TypedGetters) {
  const auto c = config(R"({"model_type": "mamba", "hidden_size": 64, "as_float": 4.0,
    "eps": 1e-5, "flag": true, "act": "silu", "list": [0, 3], "nothing": null, "neg": -2})");
  EXPECT_EQ(c.path(), "cfg.json");
  EXPECT_EQ(c.model_type(), "mamba");
  EXPECT_EQ(c.get_int("hidden_size"), 64);
  EXPECT_EQ(c.get_int("as_float"), 4);
  EXPECT_EQ(c.get_int("absent", 7), 7);
  EXPECT_EQ(c.get_int("nothing", 7), 7);  // null means "use the default", as in transformers
  EXPECT_FALSE(c.has("nothing"));
  EXPECT_TRUE(c.has("eps"));
  EXPECT_DOUBLE_EQ(c.get_float("eps"), 1e-5);
  EXPECT_DOUBLE_EQ(c.get_float("hidden_size"), 64.0);
  EXPECT_DOUBLE_EQ(c.get_float("absent", 0.5), 0.5);
  EXPECT_EQ(c.find_float("absent"), std::nullopt);
  EXPECT_EQ(c.find_float("eps"), 1e-5);
  EXPECT_TRUE(c.get_bool("flag", false));
  EXPECT_TRUE(c.get_bool("absent", true));
  EXPECT_EQ(c.get_string("act", "x"), "silu");
  EXPECT_EQ(c.get_string("absent", "x"), "x");
  EXPECT_EQ(c.get_int_list("list"), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(c.get_positive("hidden_size"), 64);
  EXPECT_EQ(c.get_int_any({"n_groups", "hidden_size"}), 64);
  EXPECT_EQ(c.get_int("neg"), -2);
}

TEST(HfConfig, EachRuleFailsNamingFileAndKey) {
  const auto c = config(R"({"hidden_size": 64.5, "zero": 0, "neg": -2, "s": "x", "b": 1,
    "list": [1, "a"], "notlist": 3, "huge": 18446744073709551615, "bigf": 1e300,
    "model_type": 5, "nan_like": "NaN"})");
  expect_error([&] { c.get_int("absent"); }, {"cfg.json", "'absent'", "missing"});
  expect_error([&] { c.get_int("hidden_size"); }, {"cfg.json", "'hidden_size'", "integer", "64.5"});
  expect_error([&] { c.get_int("s"); }, {"'s'", "integer"});
  expect_error([&] { c.get_int("huge"); }, {"'huge'", "too large"});
  expect_error([&] { c.get_int("bigf"); }, {"'bigf'"});
  expect_error([&] { c.get_positive("zero"); }, {"'zero'", "positive"});
  expect_error([&] { c.get_positive("neg"); }, {"'neg'", "positive", "-2"});
  expect_error([&] { c.get_positive("huge"); }, {"'huge'"});
  expect_error([&] { c.get_float("s"); }, {"'s'", "number"});
  expect_error([&] { c.get_float("nan_like"); }, {"'nan_like'", "number"});
  expect_error([&] { c.get_float("absent"); }, {"'absent'", "missing"});
  expect_error([&] { c.get_bool("b", false); }, {"'b'", "true or false"});
  expect_error([&] { c.get_string("b", ""); }, {"'b'", "string"});
  expect_error([&] { c.get_int_list("list"); }, {"'list'", "list of integers"});
  expect_error([&] { c.get_int_list("notlist"); }, {"'notlist'", "list of integers"});
  expect_error([&] { c.get_int_list("absent"); }, {"'absent'", "missing"});
  expect_error([&] { config(R"({"l": [18446744073709551615]})").get_int_list("l"); }, {"'l'"});
  expect_error([&] { c.model_type(); }, {"cfg.json", "'model_type'"});
  expect_error([&] { config("{}").model_type(); }, {"'model_type'", "missing"});
  expect_error([&] { c.get_int_any({"n_groups", "mamba_n_groups"}); },
               {"n_groups / mamba_n_groups", "missing"});
  expect_error([&] { c.invalid("key", "is wrong"); }, {"cfg.json: 'key' is wrong"});
}

TEST(HfConfig, FromJsonNeedsAnObject) {
  expect_error([] { HfConfig::from_json(json::array(), "a.json"); }, {"a.json", "not a JSON object"});
  expect_error([] { HfConfig::from_json(json(3), "b.json"); }, {"b.json"});
}

TEST(HfConfig, LoadFolder) {
  const auto dir = test::fresh_temp_dir("hf_config");
  expect_error([&] { HfConfig::load_folder((dir / "nowhere").string()); }, {"nowhere", "no such file"});
  expect_error([&] { HfConfig::load_folder(dir.string()); }, {"config.json", "cannot open"});
  test::write_file(dir / "config.json", R"({"model_type": "mamba", )");
  expect_error([&] { HfConfig::load_folder(dir.string()); }, {"config.json", "malformed JSON"});
  test::write_file(dir / "config.json", "");
  expect_error([&] { HfConfig::load_folder(dir.string()); }, {"config.json", "malformed JSON"});
  test::write_file(dir / "config.json", "[1]");
  expect_error([&] { HfConfig::load_folder(dir.string()); }, {"config.json", "not a JSON object"});
  test::write_file(dir / "config.json", R"({"model_type": "mamba", "hidden_size": 8})");
  const auto c = HfConfig::load_folder(dir.string());
  EXPECT_EQ(c.model_type(), "mamba");
  EXPECT_EQ(c.get_int("hidden_size"), 8);
  EXPECT_EQ(fs::path(c.path()), dir / "config.json");
  // The real fixtures load.
  const auto m = HfConfig::load_folder(test::repo_path("data/fixtures/oracles/mamba"));
  EXPECT_EQ(m.model_type(), "mamba");
  EXPECT_GT(m.get_positive("vocab_size"), 0);
  fs::remove_all(dir);
}

// The bounds that keep the families' shape arithmetic in range (io/hf_config.h kMaxConfigInt,
// kMaxConfigCount): every integer getter refuses what no model has, naming the key.
TEST(HfConfig, IntegersOutsideTheBoundsAreOneError) {
  const auto c = config(R"({"big": 16777217, "edge": 16777216, "negbig": -16777217,
    "bigf": 3e7, "layers": 1025, "list": [1, 16777217], "neglist": [-9223372036854775808]})");
  EXPECT_EQ(c.get_int("edge"), kMaxConfigInt);
  EXPECT_EQ(c.get_positive("edge"), kMaxConfigInt);
  expect_error([&] { c.get_int("big"); }, {"'big'", "too large", "16777217"});
  expect_error([&] { c.get_int("negbig"); }, {"'negbig'", "too large"});
  expect_error([&] { c.get_int("bigf"); }, {"'bigf'", "too large"});
  expect_error([&] { c.get_positive("big"); }, {"'big'"});
  EXPECT_EQ(c.get_positive("layers"), 1025);
  expect_error([&] { c.get_positive("layers", kMaxConfigCount); }, {"'layers'", "1025", "at most 1024"});
  expect_error([&] { c.get_int_list("list"); }, {"'list'", "integers"});
  expect_error([&] { c.get_int_list("neglist"); }, {"'neglist'", "integers"});
  EXPECT_EQ(c.int_dimension("expand", 2.0 * 64), 128);
  EXPECT_EQ(c.int_dimension("expand", 1.5 * 3), 4);  // Python's int() truncates
  expect_error([&] { c.int_dimension("expand", 1e300); }, {"'expand'", "outside"});
  expect_error([&] { c.int_dimension("expand", -1.0); }, {"'expand'", "outside"});
}

}  // namespace
}  // namespace kllens
