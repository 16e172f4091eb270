// Published config.json files (data/fixtures/real-configs, copied from ../shared/docs/real-configs
// with their provenance) load: the ~130M-parameter ones with random weights of their exact shapes
// (`kllens synth --config`, as a user without the weights would test), the 1.4-1.5B ones by
// their tensor tables (their weights would not fit the suite's time). Each tensor table is
// checked against the config's own Hugging Face fields, read here independently; fields the HF
// implementation does not read (mamba_ssm's d_inner, dt_rank, d_model, n_layer) must not change
// the model even when wrong; and Python's bare Infinity / NaN literals parse.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/hf_config.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include "models/synth.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string fixture(const std::string& name) {
  return test::repo_path("data/fixtures/real-configs/" + name + ".config.json");
}

// A folder holding only `text` as config.json.
std::string config_folder(const fs::path& dir, const std::string& name, const std::string& text) {
  const fs::path d = dir / name;
  fs::create_directories(d);
  test::write_file((d / "config.json").string(), text);
  return d.string();
}

std::map<std::string, std::vector<int64_t>> shapes(const std::string& folder) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& s : tensor_specs(read_checkpoint_config(folder).config)) out[s.name] = s.shape;
  return out;
}

json read_python_json(const std::string& path) { return json::parse(python_json_literals(test::read_file(path))); }

class RealConfigs : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("real-configs"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// HF MambaConfig: in_proj {2 I, H}, x_proj {R + 2 N, I}, dt_proj {I, R}, conv1d {I, 1, K}, A_log
// {I, N}, tied embedding {V, H}; I = intermediate_size, R = time_step_rank.
void expect_mamba_table(const std::map<std::string, std::vector<int64_t>>& t, const json& c) {
  const int64_t H = c["hidden_size"], I = c["intermediate_size"], N = c["state_size"];
  const int64_t K = c["conv_kernel"], R = c["time_step_rank"], V = c["vocab_size"];
  const int64_t layers = c["num_hidden_layers"];
  EXPECT_EQ(t.at("backbone.embeddings.weight"), (std::vector<int64_t>{V, H}));
  EXPECT_FALSE(t.count("lm_head.weight"));  // no tie_word_embeddings key: HF's default, tied
  for (int64_t l : {int64_t{0}, layers - 1}) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".mixer.";
    EXPECT_EQ(t.at(p + "in_proj.weight"), (std::vector<int64_t>{2 * I, H}));
    EXPECT_EQ(t.at(p + "x_proj.weight"), (std::vector<int64_t>{R + 2 * N, I}));
    EXPECT_EQ(t.at(p + "dt_proj.weight"), (std::vector<int64_t>{I, R}));
    EXPECT_EQ(t.at(p + "conv1d.weight"), (std::vector<int64_t>{I, 1, K}));
    EXPECT_EQ(t.at(p + "A_log"), (std::vector<int64_t>{I, N}));
    EXPECT_EQ(t.at(p + "out_proj.weight"), (std::vector<int64_t>{H, I}));
  }
  EXPECT_FALSE(t.count("backbone.layers." + std::to_string(layers) + ".norm.weight"));
}

TEST_F(RealConfigs, MambaHfConfigsGiveTheirTensorTables) {
  for (const char* name : {"state-spaces__mamba-130m-hf", "state-spaces__mamba-1.4b-hf"}) {
    SCOPED_TRACE(name);
    const std::string text = test::read_file(fixture(name));
    expect_mamba_table(shapes(config_folder(dir_, name, text)), json::parse(text));
  }
}

// mamba-370m-hf was published with "d_inner": 160 and "dt_rank": "auto", both stale (the model's
// are intermediate_size 2048 and time_step_rank 64): kllens reads only HF's fields.
TEST_F(RealConfigs, StaleMambaSsmFieldsDoNotChangeTheModel) {
  json c = json::parse(test::read_file(fixture("state-spaces__mamba-130m-hf")));
  const auto want = shapes(config_folder(dir_, "clean", c.dump()));
  c["d_inner"] = 160;
  c["dt_rank"] = "auto";
  c["d_model"] = 7;
  c["n_layer"] = 3;
  c["ssm_cfg"] = {{"d_state", 99}};
  EXPECT_EQ(shapes(config_folder(dir_, "stale", c.dump())), want);
}

TEST_F(RealConfigs, PythonLiteralsParseOutsideStringsOnly) {
  EXPECT_EQ(json::parse(python_json_literals(R"({"a": [0.0, Infinity], "b": -Infinity, "c": NaN})")),
            json::parse(R"({"a": [0.0, {"__float__": "Infinity"}], "b": {"__float__": "-Infinity"},
                            "c": {"__float__": "NaN"}})"));
  // Inside strings (escaped quotes included) nothing changes; identifiers that merely start with a
  // literal's letters are not literals (and stay invalid JSON).
  const std::string s = R"({"k": "Infinity \" NaN", "NaN": "-Infinity"})";
  EXPECT_EQ(python_json_literals(s), s);
  EXPECT_FALSE(json::accept(python_json_literals(R"({"a": Infinityx})")));
}

// transformers 4.x wrote time_step_limit as [0.0, Infinity]; the model loads with random weights
// of the config's shapes and its logits are finite.
TEST_F(RealConfigs, SmallPublishedConfigsLoadWithRandomWeightsAndRun) {
  for (const char* name : {"AntonV__mamba2-130m-hf", "state-spaces__mamba-130m-hf",
                           "ai21labs__Jamba-tiny-random"}) {
    SCOPED_TRACE(name);
    SynthOptions o;
    o.config_path = fixture(name);
    o.out_dir = (dir_ / name).string();
    const int64_t params = synthesize_checkpoint(o).params;
    EXPECT_EQ(test::read_file(o.out_dir + "/config.json"), test::read_file(fixture(name)));
    const auto model = load_model(o.out_dir);
    EXPECT_EQ(model->weights().total_params(), params);
    const json c = read_python_json(fixture(name));
    EXPECT_EQ(model->info().n_layers, c["num_hidden_layers"].get<int64_t>());
    EXPECT_EQ(model->info().d_model, c["hidden_size"].get<int64_t>());
    const std::vector<int32_t> ids = {1, 17, 301, 5, 42};
    const auto logits = model->forward_last(ids);
    ASSERT_EQ(static_cast<int64_t>(logits.size()), model->info().vocab);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

// Hymba-1.5B-Base: the published config (string-sorted conv_dim keys, kv_reuse_group, 128 meta
// tokens) loads, and its embedding, meta tokens and every layer's MLP have the config's shapes.
TEST_F(RealConfigs, HymbaPublishedConfigGivesItsTensorTable) {
  const std::string text = test::read_file(fixture("nvidia__Hymba-1.5B-Base"));
  const json c = json::parse(text);
  const auto t = shapes(config_folder(dir_, "hymba", text));
  const int64_t H = c["hidden_size"], V = c["vocab_size"], M = c["intermediate_size"];
  const int64_t layers = c["num_hidden_layers"];
  EXPECT_EQ(t.at("model.embed_tokens.weight"), (std::vector<int64_t>{V, H}));
  EXPECT_EQ(t.at("model.memory_tokens"), (std::vector<int64_t>{c["num_memory_tokens"].get<int64_t>(), H}));
  int64_t downs = 0;
  for (const auto& [name, shape] : t)
    if (name.ends_with(".down_proj.weight")) {
      EXPECT_EQ(shape, (std::vector<int64_t>{H, M})) << name;
      ++downs;
    }
  EXPECT_EQ(downs, layers);
}

// state-spaces/mamba2-130m, the study's checkpoint, is mamba_ssm's own format (d_model, n_layer,
// ssm_cfg {"layer": "Mamba2"} and mamba_ssm's defaults for the rest); AntonV/mamba2-130m-hf is
// its conversion to transformers. Both configs describe one model: the same tensor table.
TEST_F(RealConfigs, NativeMamba2ConfigGivesItsHfConversionsTable) {
  const auto native = shapes(config_folder(dir_, "native", test::read_file(fixture("state-spaces__mamba2-130m"))));
  const auto hf = shapes(config_folder(dir_, "hf", test::read_file(fixture("AntonV__mamba2-130m-hf"))));
  EXPECT_EQ(native, hf);
  EXPECT_EQ(native.at("backbone.embeddings.weight"), (std::vector<int64_t>{50288, 768}));  // 50277 padded to 16
  // in_proj = [z, x, B, C, dt] = 2 * 1536 + 2 * 1 * 128 + 24 heads.
  EXPECT_EQ(native.at("backbone.layers.23.mixer.in_proj.weight"), (std::vector<int64_t>{3352, 768}));
  EXPECT_FALSE(native.count("lm_head.weight"));  // tie_embeddings
}

TEST_F(RealConfigs, UnsupportedPublishedConfigsFailClearly) {
  // Zamba2 is not a family kllens runs.
  for (const auto& [name, what] : {std::pair{"Zyphra__Zamba2-1.2B", "zamba2"}}) {
    const std::string folder = config_folder(dir_, name, test::read_file(fixture(name)));
    try {
      (void)tensor_specs(read_checkpoint_config(folder).config);
      ADD_FAILURE() << name << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace kllens
