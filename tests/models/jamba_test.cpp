// Jamba (make_jamba) against the transformers oracle: prefill and decode logits within 1e-4,
// layer-by-layer hidden states, greedy continuation, the layer schedule (period / offset or
// layers_block_type), tied embeddings, and clear errors on bad configs and weights.
#include "models/families.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

std::string oracle() { return test::repo_path("data/fixtures/oracles/jamba"); }

std::unique_ptr<Model> load(const std::string& folder) {
  return make_jamba(HfConfig::load_folder(folder), TensorStore::open_folder(folder), folder, {});
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

nlohmann::json oracle_config() {
  return nlohmann::json::parse(test::read_file(fs::path(oracle()) / "config.json"));
}

// A copy of the oracle folder with config.json edited by `edit` and the checkpoint's tensors
// edited by `edit_tensors` (name → tensor; erase to drop one).
std::string edited_copy(const std::function<void(nlohmann::json&)>& edit,
                        const std::function<void(std::map<std::string, OwnedTensor>&)>& edit_tensors = {}) {
  const fs::path dir = test::fresh_temp_dir("jamba");
  nlohmann::json j = oracle_config();
  edit(j);
  test::write_file(dir / "config.json", j.dump(2));
  if (!edit_tensors) {
    fs::copy_file(fs::path(oracle()) / "model.safetensors", dir / "model.safetensors");
    return dir.string();
  }
  std::map<std::string, OwnedTensor> tensors;
  {
    SafetensorsFile in((fs::path(oracle()) / "model.safetensors").string());
    for (const auto& [name, view] : in.tensors())
      tensors[name] = make_f32_tensor(view.shape, view.to_f32());
  }
  edit_tensors(tensors);
  write_safetensors((dir / "model.safetensors").string(), tensors);
  return dir.string();
}

TEST(Jamba, ConfigAndTensorTable) {
  auto model = load(oracle());
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.arch, "jamba");
  EXPECT_EQ(info.n_layers, 4);
  EXPECT_EQ(info.d_model, 64);
  EXPECT_EQ(info.vocab, 320);
  const std::vector<std::string> kinds = {"mamba+mlp", "attention+moe(4 experts, top-2)",
                                          "mamba+mlp", "attention+moe(4 experts, top-2)"};
  EXPECT_EQ(info.layer_kinds, kinds);
  // The table names every tensor of the checkpoint, with the roles the quantizer keys on.
  EXPECT_TRUE(model->weights().unused().empty());
  const auto specs = jamba_tensor_specs(HfConfig::load_folder(oracle()));
  EXPECT_EQ(specs.size(), model->weights().all().size());
  EXPECT_EQ(model->weights().get("model.layers.1.feed_forward.router.weight").role, Role::kRouter);
  EXPECT_EQ(model->weights().get("model.layers.3.feed_forward.experts.2.gate_proj.weight").role, Role::kGate);
  EXPECT_EQ(model->weights().get("model.layers.3.feed_forward.experts.2.up_proj.weight").role, Role::kUp);
  EXPECT_EQ(model->weights().get("model.layers.3.feed_forward.experts.2.down_proj.weight").role, Role::kDown);
  EXPECT_EQ(model->weights().get("model.layers.0.mamba.dt_layernorm.weight").role, Role::kNorm);
  EXPECT_EQ(model->weights().total_params(), 379792);
}

TEST(Jamba, PrefillAndDecodeMatchOracle) {
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1], V = model->info().vocab;
  const auto ids = to_i32(read_int_tensor(ids_view));
  const auto logits = ref.get("logits").to_f32();
  ASSERT_EQ(static_cast<int64_t>(logits.size()), B * T * V);
  for (int64_t b = 0; b < B; ++b) {
    std::span<const int32_t> seq(ids.data() + b * T, static_cast<size_t>(T));
    const auto prefill = model->forward(seq);
    const double dp = max_abs_diff(prefill, logits.data() + b * T * V, static_cast<size_t>(T * V));
    EXPECT_LE(dp, 1e-4) << "prefill, sequence " << b;
    const auto decode = model->forward_decode(seq);
    const double dd = max_abs_diff(decode, logits.data() + b * T * V, static_cast<size_t>(T * V));
    EXPECT_LE(dd, 1e-4) << "decode, sequence " << b;
    std::printf("jamba sequence %ld: prefill max|diff| %.3g, decode %.3g\n", static_cast<long>(b), dp, dd);
  }
}

TEST(Jamba, HiddenStatesMatchOracleLayerByLayer) {
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  const int64_t T = ids_view.shape[1], H = model->info().d_model;
  const auto ids = to_i32(read_int_tensor(ids_view));
  auto state = model->start(std::span<const int32_t>(ids.data(), static_cast<size_t>(T)));
  const int L = static_cast<int>(model->info().n_layers);
  for (int l = 0; l < L; ++l) {
    const auto expected = ref.get("hidden_states." + std::to_string(l)).to_f32();
    EXPECT_LE(max_abs_diff(state->hidden, expected.data(), static_cast<size_t>(T * H)), 1e-4)
        << "input of layer " << l;
    model->run_layer(l, *state);
  }
  // HF's last hidden state is after final_layernorm.
  std::vector<float> normed(static_cast<size_t>(T * H));
  ops::rmsnorm(normed.data(), state->hidden.data(),
               model->weights().get("model.final_layernorm.weight").data(), T, H, 1e-6f);
  const auto last = ref.get("hidden_states." + std::to_string(L)).to_f32();
  EXPECT_LE(max_abs_diff(normed, last.data(), static_cast<size_t>(T * H)), 1e-4);
}

TEST(Jamba, GreedyContinuationMatchesOracle) {
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto prompt = to_i32(read_int_tensor(ref.get("greedy_prompt")));
  const auto expected = to_i32(read_int_tensor(ref.get("greedy_output")));
  auto state = model->new_decode_state();
  std::vector<float> logits(static_cast<size_t>(model->info().vocab));
  std::vector<int32_t> out = prompt;
  for (int32_t id : prompt) model->decode_step(*state, id, logits.data());
  while (out.size() < expected.size()) {
    out.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    model->decode_step(*state, out.back(), logits.data());
  }
  EXPECT_EQ(out, expected);
  EXPECT_GT(state->bytes(), 0u);
}

TEST(Jamba, LongDecodeEqualsPrefill) {
  // Longer than the oracle's sequences: the KV caches grow and the SSM states carry on.
  auto model = load(oracle());
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(0, 319);
  std::vector<int32_t> ids(90);
  for (auto& t : ids) t = tok(rng);
  const auto prefill = model->forward(ids);
  const auto decode = model->forward_decode(ids);
  EXPECT_LE(max_abs_diff(prefill, decode.data(), prefill.size()), 1e-4);
}

TEST(Jamba, LayersBlockTypeListReadsTheSame) {
  const std::vector<int32_t> ids = {5, 17, 300, 2, 9, 44, 1, 0, 250, 31};
  const auto a = load(oracle())->forward(ids);
  // The explicit list that attn_layer_period 2 / offset 1 implies (periods then are ignored).
  const std::string listed = edited_copy([](nlohmann::json& j) {
    j["layers_block_type"] = {"mamba", "attention", "mamba", "attention"};
    j["attn_layer_period"] = 8;
    j["attn_layer_offset"] = 4;
  });
  EXPECT_EQ(a, load(listed)->forward(ids));
  // Fewer routed experts per token changes the result (top-k is really read).
  const std::string top1 = edited_copy([](nlohmann::json& j) { j["num_experts_per_tok"] = 1; });
  auto m1 = load(top1);
  EXPECT_EQ(m1->info().layer_kinds[1], "attention+moe(4 experts, top-1)");
  EXPECT_NE(a, m1->forward(ids));
  // All experts routed: still a softmax-weighted sum over the 4 experts, different again.
  const std::string top4 = edited_copy([](nlohmann::json& j) { j["num_experts_per_tok"] = 4; });
  EXPECT_NE(a, load(top4)->forward(ids));
}

TEST(Jamba, TiedEmbeddingsUseTheEmbeddingAsHead) {
  const std::string tied = edited_copy([](nlohmann::json& j) { j["tie_word_embeddings"] = true; },
                                       [](std::map<std::string, OwnedTensor>& t) { t.erase("lm_head.weight"); });
  auto model = load(tied);
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  const int64_t T = ids_view.shape[1], H = 64, V = 320;
  const auto ids = to_i32(read_int_tensor(ids_view));
  const auto logits = model->forward(std::span<const int32_t>(ids.data(), static_cast<size_t>(T)));
  // The oracle's normalized last hidden state times the embedding.
  const auto last = ref.get("hidden_states.4").to_f32();
  const auto& embed = model->weights().get("model.embed_tokens.weight");
  EXPECT_TRUE(embed.tied_head);
  std::vector<float> expected(static_cast<size_t>(T * V));
  ops::matmul_nt(expected.data(), last.data(), embed.data(), nullptr, T, V, H);
  EXPECT_LE(max_abs_diff(logits, expected.data(), expected.size()), 1e-4);
}

void expect_error(const std::string& folder, const std::string& needle) {
  try {
    load(folder);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

void expect_config_error(const std::function<void(nlohmann::json&)>& edit, const std::string& needle) {
  expect_error(edited_copy(edit), needle);
}

TEST(Jamba, BadConfigsFailClearly) {
  expect_config_error([](nlohmann::json& j) { j["num_experts_per_tok"] = 5; }, "num_experts_per_tok");
  expect_config_error([](nlohmann::json& j) { j["num_experts_per_tok"] = 0; }, "num_experts_per_tok");
  expect_config_error([](nlohmann::json& j) { j["attn_layer_offset"] = 2; }, "attn_layer_offset");
  expect_config_error([](nlohmann::json& j) { j["expert_layer_period"] = 0; }, "expert_layer_period");
  expect_config_error([](nlohmann::json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads");
  expect_config_error([](nlohmann::json& j) { j["num_attention_heads"] = 5; j["num_key_value_heads"] = 5; },
                      "num_attention_heads");
  expect_config_error([](nlohmann::json& j) { j["hidden_act"] = "gelu"; }, "hidden_act");
  expect_config_error([](nlohmann::json& j) { j["mamba_dt_rank"] = "big"; }, "mamba_dt_rank");
  expect_config_error([](nlohmann::json& j) { j["layers_block_type"] = {"mamba", "attention"}; },
                      "layers_block_type");
  expect_config_error(
      [](nlohmann::json& j) { j["layers_block_type"] = {"mamba", "attention", "mlp", "attention"}; },
      "layers_block_type");
  // Shapes the file does not have: the error names the tensor.
  expect_config_error([](nlohmann::json& j) { j["num_experts"] = 5; }, "feed_forward.router.weight");
  expect_config_error([](nlohmann::json& j) { j["mamba_dt_rank"] = 4; }, "mamba.x_proj.weight");
  expect_config_error([](nlohmann::json& j) { j["mamba_expand"] = 3; }, "mamba.in_proj.weight");
  expect_config_error([](nlohmann::json& j) { j["mamba_proj_bias"] = true; }, "mamba.in_proj.bias");
  expect_config_error([](nlohmann::json& j) { j["expert_layer_offset"] = 0; },
                      "model.layers.0.feed_forward.router.weight");
  expect_config_error([](nlohmann::json& j) { j["attn_layer_offset"] = 0; },
                      "model.layers.0.self_attn.q_proj.weight");
  expect_config_error([](nlohmann::json& j) { j["tie_word_embeddings"] = true; j["vocab_size"] = 321; },
                      "embed_tokens.weight");
}

TEST(Jamba, BadWeightsFailClearly) {
  // One expert's projection with the wrong shape.
  expect_error(edited_copy([](nlohmann::json&) {},
                           [](std::map<std::string, OwnedTensor>& t) {
                             const std::string n = "model.layers.3.feed_forward.experts.2.up_proj.weight";
                             std::vector<float> v(64 * 128, 0.5f);
                             t[n] = make_f32_tensor({64, 128}, v);
                           }),
               "experts.2.up_proj.weight");
  // A missing expert.
  expect_error(edited_copy([](nlohmann::json&) {},
                           [](std::map<std::string, OwnedTensor>& t) {
                             t.erase("model.layers.1.feed_forward.experts.3.down_proj.weight");
                           }),
               "experts.3.down_proj.weight");
  // The fused in-memory expert layout of transformers 5 is refused by name.
  expect_error(edited_copy([](nlohmann::json&) {},
                           [](std::map<std::string, OwnedTensor>& t) {
                             std::vector<float> v(4 * 256 * 64, 0.0f);
                             t["model.layers.1.feed_forward.experts.gate_up_proj"] =
                                 make_f32_tensor({4, 256, 64}, v);
                           }),
               "fused experts");
  // A missing dt RMSNorm.
  expect_error(edited_copy([](nlohmann::json&) {},
                           [](std::map<std::string, OwnedTensor>& t) {
                             t.erase("model.layers.2.mamba.dt_layernorm.weight");
                           }),
               "dt_layernorm.weight");
}

TEST(Jamba, OutOfVocabularyTokenFailsClearly) {
  auto model = load(oracle());
  const std::vector<int32_t> ids = {1, 2, 320};
  EXPECT_THROW(model->forward(ids), Error);
  auto state = model->new_decode_state();
  std::vector<float> logits(320);
  EXPECT_THROW(model->decode_step(*state, -1, logits.data()), Error);
}

}  // namespace
}  // namespace kllens
