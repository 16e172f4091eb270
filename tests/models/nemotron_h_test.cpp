// Nemotron-H (make_nemotron_h) on data/fixtures/nemotron_h-tiny (random weights, pattern
// "M*-M-M*-"): decode equals prefill, the pattern's list spellings give the same model, the
// per-layer blocks are what the pattern says, the synth presets have the published sizes, and
// bad configs fail naming the field. llama.cpp's logits on the same weights are the oracle
// (tests/models/llamacpp_oracle_test.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "models/model.h"
#include "models/synth.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using test::max_abs_diff;

std::string fixture() { return test::repo_path("data/fixtures/nemotron_h-tiny"); }

nlohmann::json fixture_config() {
  // Python's Infinity in time_step_limit, as transformers 4.x writes it.
  return nlohmann::json::parse(
      python_json_literals(test::read_file(fs::path(fixture()) / "config.json")));
}

// The fixture's weights under an edited config.json.
std::string with_config(const nlohmann::json& config) {
  return test::weights_with_config(fixture(), config.dump(2));
}

std::vector<int32_t> some_ids() { return {5, 77, 301, 12, 12, 250, 3, 199, 64, 128, 31}; }

TEST(NemotronH, LayersAreWhatThePatternSays) {
  auto model = load_model(fixture());
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.arch, "nemotron_h");
  ASSERT_EQ(info.n_layers, 8);
  const std::vector<std::string> kinds = {"mamba2", "attn(global, no rope)", "mlp(relu2)",
                                          "mamba2", "mlp(relu2)",            "mamba2",
                                          "attn(global, no rope)", "mlp(relu2)"};
  EXPECT_EQ(info.layer_kinds, kinds);
  EXPECT_EQ(info.detail("pattern"), "M*-M-M*-");
  EXPECT_EQ(info.detail("gated_norm"), "gate, then RMS per group of 64 channels (mamba_ssm, llama.cpp)");
  EXPECT_TRUE(info.llama_cpp_layout) << info.llama_cpp_layout_why_not;
}

// Decode carries conv/SSM states and a KV cache; prefill computes the same function. 1e-4 as
// for every family: float32 both ways, the scan and attention summing in other orders.
TEST(NemotronH, DecodeEqualsPrefill) {
  auto model = load_model(fixture());
  const auto ids = some_ids();
  const auto prefill = model->forward(ids), decode = model->forward_decode(ids);
  EXPECT_LE(max_abs_diff(decode, prefill.data()), 1e-4);
}

// transformers 5 writes the pattern as a list (layers_block_type), with its own names.
TEST(NemotronH, PatternListSpellingsGiveTheSameModel) {
  const auto reference = load_model(fixture())->forward(some_ids());
  for (const char* key : {"layers_block_type", "layer_types"})
    for (bool new_names : {false, true}) {
      nlohmann::json c = fixture_config();
      nlohmann::json list = nlohmann::json::array();
      for (char ch : c["hybrid_override_pattern"].get<std::string>())
        list.push_back(ch == 'M' ? (new_names ? "linear_attention" : "mamba")
                       : ch == '*' ? (new_names ? "full_attention" : "attention")
                                   : "mlp");
      c.erase("hybrid_override_pattern");
      c[key] = list;
      const auto logits = load_model(with_config(c))->forward(some_ids());
      EXPECT_EQ(logits, reference) << key << (new_names ? " (transformers 5 names)" : "");
    }
}

// The remote code's legacy spellings (mamba_n_groups, mamba_d_conv, ...) read as the new ones.
TEST(NemotronH, LegacyKeySpellingsGiveTheSameModel) {
  const auto reference = load_model(fixture())->forward(some_ids());
  nlohmann::json c = fixture_config();
  for (auto [now, legacy] : std::vector<std::pair<const char*, const char*>>{
           {"n_groups", "mamba_n_groups"}, {"conv_kernel", "mamba_d_conv"},
           {"use_conv_bias", "mamba_conv_bias"}, {"use_bias", "mamba_proj_bias"},
           {"head_dim", "attention_head_dim"}, {"time_step_limit", "mamba_dt_limit"}}) {
    c[legacy] = c[now];
    c.erase(now);
  }
  EXPECT_EQ(load_model(with_config(c))->forward(some_ids()), reference);
}

// n_groups shapes B and C inside in_proj: a config that disagrees with the weights is refused
// at load, naming the tensor, rather than computing another function.
TEST(NemotronH, AGroupCountTheWeightsDoNotHaveIsRefused) {
  nlohmann::json c = fixture_config();
  c["n_groups"] = 1;
  test::expect_error([&] { load_model(with_config(c)); }, {"in_proj.weight", "shape"});
}

TEST(NemotronH, BadConfigsNameTheField) {
  auto expect = [](const std::function<void(nlohmann::json&)>& edit,
                   const std::vector<std::string>& parts) {
    nlohmann::json c = fixture_config();
    edit(c);
    const std::string folder = with_config(c);
    test::expect_error([&] { load_model(folder); }, parts, c.dump());
  };
  expect([](auto& c) { c["num_hidden_layers"] = 7; },
         {"num_hidden_layers", "7", "pattern has 8 layers"});
  expect([](auto& c) { c["hybrid_override_pattern"] = "M*-M-M*X"; },
         {"hybrid_override_pattern", "'X' at position 7"});
  expect([](auto& c) { c["hybrid_override_pattern"] = "M*-M-ME-"; },
         {"hybrid_override_pattern", "MoE"});
  expect([](auto& c) { c["hybrid_override_pattern"] = ""; }, {"hybrid_override_pattern", "empty"});
  expect([](auto& c) { c.erase("hybrid_override_pattern"); }, {"hybrid_override_pattern", "missing"});
  expect([](auto& c) {
    c.erase("hybrid_override_pattern");
    c["layers_block_type"] = {"mamba", "attention", "mlp", "mamba", "mlp", "mamba", "attention", "conv"};
  }, {"layers_block_type", "'conv' at index 7"});
  expect([](auto& c) { c["mlp_hidden_act"] = "silu"; }, {"mlp_hidden_act", "relu2"});
  expect([](auto& c) { c["num_key_value_heads"] = 3; }, {"num_key_value_heads", "must divide"});
  expect([](auto& c) { c["n_groups"] = 3; }, {"n_groups", "must divide"});
  expect([](auto& c) { c["sliding_window"] = 16; }, {"sliding_window"});
}

// The presets have the sizes their names say (4B and 8B parameters; weights only).
TEST(NemotronH, SynthPresetsHaveTheirSizes) {
  for (auto [preset, lo, hi] : std::vector<std::tuple<std::string, double, double>>{
           {"nemotron-h-4b", 3.5e9, 4.5e9}, {"nemotron-h-8b", 7.5e9, 8.5e9}}) {
    // The config only: a test does not write the weights of a 4B model.
    const std::string text = synth_preset_config(preset);
    const HfConfig config = HfConfig::from_json(nlohmann::json::parse(text), preset);
    int64_t params = 0;
    for (const TensorSpec& s : tensor_specs(config)) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      params += n;
    }
    EXPECT_GE(params, lo) << preset;
    EXPECT_LE(params, hi) << preset;
  }
}

}  // namespace
}  // namespace kllens
