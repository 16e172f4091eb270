// Llama (make_llama) against the transformers oracle: hidden states layer by layer (the logits and
// greedy continuation are in oracle_test.cpp), both RoPE config spellings, and clear errors on bad
// configs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

std::string oracle() { return test::repo_path("data/fixtures/oracles/llama"); }

std::unique_ptr<Model> load(const std::string& folder) {
  return make_llama(HfConfig::load_folder(folder), TensorStore::open_folder(folder), folder, {});
}

double max_abs_diff(const std::vector<float>& a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

std::vector<int32_t> to_i32(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// A copy of the oracle folder with config.json edited by `edit`.
std::string edited_copy(const std::function<void(nlohmann::json&)>& edit) {
  const fs::path dir = test::fresh_temp_dir("llama");
  for (const char* f : {"model.safetensors", "reference.safetensors"})
    fs::copy_file(fs::path(oracle()) / f, dir / f);
  nlohmann::json j = nlohmann::json::parse(test::read_file(fs::path(oracle()) / "config.json"));
  edit(j);
  test::write_file(dir / "config.json", j.dump(2));
  return dir.string();
}

// The oracle's prefill / decode logits and greedy continuation are checked through the registry
// by oracle_test.cpp; this file keeps the Llama-specific checks.

TEST(Llama, Info) {
  auto model = load(oracle());
  EXPECT_EQ(model->info().arch, "llama");
  EXPECT_EQ(model->info().layer_kinds.size(), 2u);
}

TEST(Llama, HiddenStatesMatchOracleLayerByLayer) {
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  const int64_t T = ids_view.shape[1], H = model->info().d_model;
  const auto ids = to_i32(read_int_tensor(ids_view));
  auto state = model->start(std::span<const int32_t>(ids.data(), static_cast<size_t>(T)));
  for (int l = 0; l < model->info().n_layers; ++l) {
    const auto expected = ref.get("hidden_states." + std::to_string(l)).to_f32();
    EXPECT_LE(max_abs_diff(state->hidden, expected.data(), static_cast<size_t>(T * H)), 1e-4)
        << "input of layer " << l;
    model->run_layer(l, *state);
  }
}

TEST(Llama, LegacyTopLevelRopeThetaReadsTheSame) {
  // transformers 4.x wrote rope_theta at the top level (and rope_scaling: null).
  const std::string legacy = edited_copy([](nlohmann::json& j) {
    j.erase("rope_parameters");
    j["rope_theta"] = 10000.0;
    j["rope_scaling"] = nullptr;
  });
  const std::vector<int32_t> ids = {5, 17, 300, 2, 9, 44, 1, 0, 250, 31};
  const auto a = load(oracle())->forward(ids);
  const auto b = load(legacy)->forward(ids);
  EXPECT_EQ(a, b);
  // A different theta must change the logits (the value is really read).
  const std::string other = edited_copy([](nlohmann::json& j) { j["rope_parameters"]["rope_theta"] = 500.0; });
  EXPECT_NE(a, load(other)->forward(ids));
}

void expect_error(const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
  const std::string folder = edited_copy(edit);
  try {
    load(folder);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Llama, BadConfigsFailClearly) {
  expect_error([](nlohmann::json& j) { j["rope_parameters"]["rope_type"] = "yarn"; }, "yarn");
  expect_error(
      [](nlohmann::json& j) {
        j.erase("rope_parameters");
        j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
      },
      "linear");
  expect_error([](nlohmann::json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads");
  expect_error(
      [](nlohmann::json& j) {
        j.erase("head_dim");
        j["num_attention_heads"] = 5;
        j["num_key_value_heads"] = 5;
      },
      "num_attention_heads");
  expect_error([](nlohmann::json& j) { j["hidden_act"] = "gelu"; }, "hidden_act");
  // Shapes the file does not have: the error names the tensor.
  expect_error([](nlohmann::json& j) { j["intermediate_size"] = 128; }, "mlp.gate_proj.weight");
  expect_error([](nlohmann::json& j) { j["head_dim"] = 8; }, "q_proj.weight");
  expect_error([](nlohmann::json& j) { j["attention_bias"] = true; }, "q_proj.bias");
  expect_error([](nlohmann::json& j) { j["tie_word_embeddings"] = true; j["vocab_size"] = 321; },
               "embed_tokens.weight");
}

TEST(Llama, OutOfVocabularyTokenFailsClearly) {
  auto model = load(oracle());
  const std::vector<int32_t> ids = {1, 2, 320};
  EXPECT_THROW(model->forward(ids), Error);
  auto state = model->new_decode_state();
  std::vector<float> logits(320);
  EXPECT_THROW(model->decode_step(*state, -1, logits.data()), Error);
}

}  // namespace
}  // namespace kllens
