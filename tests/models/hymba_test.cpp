// Hymba (make_hymba) against the official remote code's outputs: the random-init oracle layer by
// layer (its logits are in oracle_test.cpp), the bf16 demo model within 1e-3, decode past
// the sliding window equal to prefill, forward states that carry shared K/V, and clear errors on
// inconsistent configs.
#include <gtest/gtest.h>

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

std::string oracle() { return test::repo_path("data/fixtures/oracles/hymba"); }
std::string demo() { return test::repo_path("data/models/demo-hymba"); }

std::unique_ptr<Model> load(const std::string& folder) {
  return make_hymba(HfConfig::load_folder(folder), TensorStore::open_folder(folder), folder, {});
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return max_abs_diff(a.data(), b.data(), std::min(a.size(), b.size()));
}

std::vector<int32_t> to_i32(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

// A copy of `src` (the oracle by default) with config.json edited by `edit`.
std::string edited_copy(const std::function<void(nlohmann::json&)>& edit,
                        const std::string& src = oracle()) {
  const fs::path dir = test::fresh_temp_dir("hymba");
  fs::copy_file(fs::path(src) / "model.safetensors", dir / "model.safetensors");
  nlohmann::json j = nlohmann::json::parse(test::read_file(fs::path(src) / "config.json"));
  edit(j);
  test::write_file(dir / "config.json", j.dump(2));
  return dir.string();
}

// Prefill and decode logits of every reference sequence against the reference, within tol.
void check_reference(const std::string& folder, double tol, const char* what) {
  auto model = load(folder);
  SafetensorsFile ref(folder + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  ASSERT_EQ(ids_view.shape.size(), 2u);
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1], V = model->info().vocab;
  const auto ids = to_i32(read_int_tensor(ids_view));
  const auto logits = ref.get("logits").to_f32();
  ASSERT_EQ(static_cast<int64_t>(logits.size()), B * T * V);
  for (int64_t b = 0; b < B; ++b) {
    std::span<const int32_t> seq(ids.data() + b * T, static_cast<size_t>(T));
    const auto prefill = model->forward(seq);
    const double dp = max_abs_diff(prefill.data(), logits.data() + b * T * V, static_cast<size_t>(T * V));
    EXPECT_LE(dp, tol) << what << " prefill, sequence " << b;
    const auto decode = model->forward_decode(seq);
    const double dd = max_abs_diff(decode.data(), logits.data() + b * T * V, static_cast<size_t>(T * V));
    EXPECT_LE(dd, tol) << what << " decode, sequence " << b;
    std::printf("%s sequence %ld (%ld tokens): prefill max|diff| %.3g, decode %.3g\n", what,
                static_cast<long>(b), static_cast<long>(T), dp, dd);
  }
}

// The oracle's prefill / decode logits are checked through the registry by oracle_test.cpp.

TEST(Hymba, OracleHiddenStatesLayerByLayer) {
  // hidden_states.<i> ([2, 8 + 37, 64]) include the 8 meta tokens; i < L is the input of layer i.
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1], H = model->info().d_model;
  const int64_t M = model->info().n_prefix_tokens;
  ASSERT_EQ(M, 8);
  const auto ids = to_i32(read_int_tensor(ids_view));
  for (int64_t b = 0; b < B; ++b) {
    auto state = model->start(std::span<const int32_t>(ids.data() + b * T, static_cast<size_t>(T)));
    ASSERT_EQ(state->rows, M + T);
    for (int l = 0; l < model->info().n_layers; ++l) {
      const auto& view = ref.get("hidden_states." + std::to_string(l));
      ASSERT_EQ(view.shape, (std::vector<int64_t>{B, M + T, H}));
      const auto expected = view.to_f32();
      EXPECT_LE(max_abs_diff(state->hidden.data(), expected.data() + b * (M + T) * H,
                             static_cast<size_t>((M + T) * H)),
                1e-4)
          << "input of layer " << l << ", sequence " << b;
      model->run_layer(l, *state);
    }
  }
}

TEST(Hymba, OracleStructure) {
  auto model = load(oracle());
  const auto& info = model->info();
  EXPECT_EQ(info.arch, "hymba");
  EXPECT_EQ(info.n_prefix_tokens, 8);
  EXPECT_EQ(info.layer_kinds,
            (std::vector<std::string>{"attn(global)+ssm", "attn(swa=16)+ssm",
                                      "attn(swa=16, kv from layer 1)+ssm", "attn(global)+ssm"}));
  // Layer 2 reuses layer 1's K/V: its in_proj has no k/v rows (q 64 + x 128 + z 128).
  EXPECT_EQ(model->weights().get("model.layers.2.mamba.in_proj.weight").shape,
            (std::vector<int64_t>{320, 64}));
  EXPECT_TRUE(model->weights().get("model.embed_tokens.weight").tied_head);
  EXPECT_TRUE(model->weights().unused().empty());
}

TEST(Hymba, DemoPrefillAndDecodeWithin1e3) { check_reference(demo(), 1e-3, "demo-hymba"); }

// Decode keeps only the meta tokens and a ring of the last W+1 rows on SWA layers; its logits must
// equal prefill's on a sequence far longer than window + meta tokens (demo: W = 32, M = 16).
// Both paths compute the same float32 quantities and differ only in summation order (BLAS gemm vs
// gemv, keys in ring order in the softmax sums), a few float32 ulps per op; through 4 layers that
// is ~1e-5 on logits of magnitude ~10-20, so 1e-4 leaves a margin (well inside the 1e-3 budget).
TEST(Hymba, DemoDecodePastTheWindowEqualsPrefill) {
  auto model = load(demo());
  SafetensorsFile ref(demo() + "/reference.safetensors");
  const auto ids = to_i32(read_int_tensor(ref.get("input_ids")));
  const std::span<const int32_t> seq(ids.data(), 100);
  const auto prefill = model->forward(seq);
  const auto decode = model->forward_decode(seq);
  const double d = max_abs_diff(prefill, decode);
  std::printf("demo-hymba 100 tokens: decode vs prefill max|diff| %.3g\n", d);
  EXPECT_LE(d, 1e-4);
}

TEST(Hymba, SwaOnlyDecodeMemoryIsFlatAndMatchesPrefill) {
  // Every layer SWA with window 4: the ring wraps many times within 60 tokens.
  const std::string folder = edited_copy([](nlohmann::json& j) {
    j["global_attn_idx"] = nlohmann::json::array();
    j["sliding_window"] = 4;
  });
  auto model = load(folder);
  std::vector<int32_t> ids(60);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % 320);
  const auto prefill = model->forward(ids);
  auto state = model->new_decode_state();
  const int64_t V = model->info().vocab;
  std::vector<float> decode(ids.size() * static_cast<size_t>(V));
  size_t bytes_at_10 = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    model->decode_step(*state, ids[t], decode.data() + t * static_cast<size_t>(V));
    if (t == 10) bytes_at_10 = state->bytes();
  }
  EXPECT_EQ(state->bytes(), bytes_at_10);
  EXPECT_LE(max_abs_diff(prefill, decode), 1e-4);
  // With global layers the cache grows with the sequence.
  auto global_model = load(oracle());
  auto gstate = global_model->new_decode_state();
  std::vector<float> logits(static_cast<size_t>(V));
  for (int t = 0; t < 10; ++t) global_model->decode_step(*gstate, ids[static_cast<size_t>(t)], logits.data());
  const size_t b10 = gstate->bytes();
  for (int t = 10; t < 20; ++t) global_model->decode_step(*gstate, ids[static_cast<size_t>(t)], logits.data());
  EXPECT_GT(gstate->bytes(), b10);
}

TEST(Hymba, MixedReuseGroupDecodeMatchesPrefill) {
  // Producer 1 is SWA, its consumer 2 global: each applies its own mask to the shared K/V, so the
  // shared decode cache must keep every row (no ring).
  const std::string folder = edited_copy([](nlohmann::json& j) {
    j["global_attn_idx"] = {0, 2, 3};
    j["sliding_window"] = 4;
  });
  auto model = load(folder);
  EXPECT_EQ(model->info().layer_kinds[2], "attn(global, kv from layer 1)+ssm");
  std::vector<int32_t> ids(40);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 53 + 7) % 320);
  const auto prefill = model->forward(ids);
  EXPECT_LE(max_abs_diff(prefill, model->forward_decode(ids)), 1e-4);
  // The window matters: the same weights with the oracle's config give other logits.
  EXPECT_GT(max_abs_diff(prefill, load(oracle())->forward(ids)), 1e-3);
}

TEST(Hymba, ForwardStateCarriesSharedKv) {
  // A sweep restarts from a copy of the state before a layer; before layer 2 (which reuses
  // layer 1's K/V) the copy must carry that K/V.
  auto model = load(oracle());
  const std::vector<int32_t> ids = {3, 99, 150, 7, 7, 280, 41, 12, 0, 319, 64, 5, 18, 200, 33, 1,
                                    90, 91, 92, 17};
  const auto full = model->forward(ids);
  auto state = model->start(ids);
  model->run_layer(0, *state);
  model->run_layer(1, *state);
  auto copy = state->clone();
  EXPECT_GT(copy->bytes(), copy->hidden.size() * sizeof(float));
  state.reset();
  model->run_layer(2, *copy);
  // After the group's last consumer the shared K/V is dropped.
  EXPECT_EQ(copy->bytes(), copy->hidden.size() * sizeof(float));
  model->run_layer(3, *copy);
  std::vector<float> logits(ids.size() * static_cast<size_t>(model->info().vocab));
  model->finish(*copy, logits.data());
  EXPECT_EQ(logits, full);
  // Running a consumer on a state where its producer never ran is an error, not a crash.
  auto fresh = model->start(ids);
  EXPECT_THROW(model->run_layer(2, *fresh), Error);
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

TEST(Hymba, BadKvReuseGroupsFailClearly) {
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{1, 4}}; }, "names layer 4");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{-1, 2}}; }, "names layer -1");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{2, 1}}; }, "comes before its producer");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{1, 2}, {2, 3}}; }, "layer 2 appears");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{1, 2, 2}}; }, "layer 2 appears");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{1, 1}}; }, "layer 1 appears");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = nlohmann::json::array({nlohmann::json::array()}); },
               "non-empty");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {1, 2}; }, "kv_reuse_group");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = "1,2"; }, "kv_reuse_group");
  // Consistent groups that the file's shapes contradict: the error names the tensor.
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = {{0, 1, 2}}; },
               "model.layers.1.mamba.in_proj.weight");
  expect_error([](nlohmann::json& j) { j["kv_reuse_group"] = nullptr; },
               "model.layers.2.mamba.in_proj.weight");
  expect_error(
      [](nlohmann::json& j) {
        j["kv_reuse_group"] = nullptr;
        j["kv_reuse_every_i_layer"] = 2;  // layers 1 and 3 reuse layers 0 and 2
      },
      "model.layers.1.mamba.in_proj.weight");
}

TEST(Hymba, InconsistentHeadSizesFailClearly) {
  expect_error([](nlohmann::json& j) { j["num_attention_heads"] = 3; }, "num_attention_heads");
  expect_error([](nlohmann::json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads");
  expect_error([](nlohmann::json& j) { j["kq_head_dim"] = 8; }, "kq_head_dim");
  expect_error([](nlohmann::json& j) { j["attn_hidden_size"] = 32; }, "attn_hidden_size");
  expect_error([](nlohmann::json& j) { j["mamba_expand"] = 1.03125; }, "mamba_expand");
  expect_error([](nlohmann::json& j) { j["num_attention_heads"] = 8; }, "in_proj.weight");
}

TEST(Hymba, OtherBadConfigsFailClearly) {
  expect_error([](nlohmann::json& j) { j["global_attn_idx"] = {0, 4}; }, "global_attn_idx");
  expect_error([](nlohmann::json& j) { j.erase("global_attn_idx"); }, "global_attn_idx");
  expect_error([](nlohmann::json& j) { j["sliding_window"] = 0; }, "sliding_window");
  expect_error([](nlohmann::json& j) { j["rope_type"] = "dynamic_ntk"; }, "dynamic_ntk");
  expect_error([](nlohmann::json& j) { j.erase("orig_max_position_embeddings"); },
               "orig_max_position_embeddings");
  expect_error([](nlohmann::json& j) { j["memory_tokens_interspersed_every"] = 4; },
               "memory_tokens_interspersed_every");
  expect_error([](nlohmann::json& j) { j["kq_norm"] = "rms"; }, "kq_norm");
  expect_error([](nlohmann::json& j) { j["mlp_hidden_act"] = "relu2"; }, "mlp_hidden_act");
  expect_error([](nlohmann::json& j) { j["num_memory_tokens"] = 4; }, "model.memory_tokens");
  expect_error([](nlohmann::json& j) { j["tie_word_embeddings"] = false; }, "lm_head.weight");
  expect_error([](nlohmann::json& j) { j["mamba_dt_rank"] = "big"; }, "mamba_dt_rank");
}

TEST(Hymba, OutOfVocabularyTokenFailsClearly) {
  auto model = load(oracle());
  const std::vector<int32_t> ids = {1, 2, 320};
  EXPECT_THROW(model->forward(ids), Error);
  auto state = model->new_decode_state();
  std::vector<float> logits(320);
  EXPECT_THROW(model->decode_step(*state, 320, logits.data()), Error);
}

}  // namespace
}  // namespace kllens
