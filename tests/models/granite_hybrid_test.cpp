// Granite-4.0-H (make_granite_hybrid) on data/fixtures/granitehybrid-tiny (random weights, dense,
// tied, multipliers ≠ 1, n_groups 2) and granitehybrid-moe-tiny (routed experts): decode equals prefill, each multiplier changes the function
// where it should, the fused shared_mlp.input_linear loads as its two halves, the synth presets
// have the published sizes and write the fused tensor, and bad configs fail naming the field.
// llama.cpp's logits on the same weights are the oracle (tests/models/llamacpp_oracle_test.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "models/synth.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using test::max_abs_diff;

std::string fixture() { return test::repo_path("data/fixtures/granitehybrid-tiny"); }

nlohmann::json fixture_config() {
  return nlohmann::json::parse(test::read_file(fs::path(fixture()) / "config.json"));
}

std::string with_config(const nlohmann::json& config) {
  return test::weights_with_config(fixture(), config.dump(2));
}

std::vector<int32_t> some_ids() { return {5, 77, 301, 12, 12, 250, 3, 199, 64, 128, 31}; }

TEST(GraniteHybrid, LayersAndDetails) {
  auto model = load_model(fixture());
  const ModelInfo& info = model->info();
  EXPECT_EQ(info.arch, "granitemoehybrid");
  ASSERT_EQ(info.n_layers, 6);
  EXPECT_EQ(info.layer_kinds[0], "mamba2+mlp(swiglu)");
  EXPECT_EQ(info.layer_kinds[1], "attn(global, no rope)+mlp(swiglu)");
  EXPECT_EQ(info.detail("attention_multiplier"), "0.0625 (the softmax scale)");
  EXPECT_EQ(info.detail("gated_norm"), "gate, then RMS per group of 64 channels (mamba_ssm, llama.cpp)");
  EXPECT_TRUE(info.llama_cpp_layout) << info.llama_cpp_layout_why_not;
  EXPECT_TRUE(model->weights().unused().empty());
}

TEST(GraniteHybrid, DecodeEqualsPrefill) {
  auto model = load_model(fixture());
  const auto ids = some_ids();
  EXPECT_LE(max_abs_diff(model->forward_decode(ids), model->forward(ids).data()), 1e-4);
}

// The halves of the fused input_linear are its rows [0, F) (gate) and [F, 2F) (up).
TEST(GraniteHybrid, FusedInputLinearLoadsAsGateAndUp) {
  auto model = load_model(fixture());
  const TensorStore store = TensorStore::open_folder(fixture());
  const auto fused = store.get("model.layers.2.shared_mlp.input_linear.weight").to_f32();
  const Param& gate = model->weights().get("model.layers.2.shared_mlp.gate_proj.weight");
  const Param& up = model->weights().get("model.layers.2.shared_mlp.up_proj.weight");
  ASSERT_EQ(gate.value.size() + up.value.size(), fused.size());
  EXPECT_TRUE(std::equal(gate.value.begin(), gate.value.end(), fused.begin()));
  EXPECT_TRUE(std::equal(up.value.begin(), up.value.end(), fused.begin() + static_cast<std::ptrdiff_t>(gate.value.size())));
  EXPECT_EQ(role_name(gate.role), "gate_proj");
  EXPECT_EQ(role_name(up.role), "up_proj");
}

// Each multiplier is read and changes the logits; logits_scaling divides them exactly.
TEST(GraniteHybrid, MultipliersTakeEffect) {
  const auto reference = load_model(fixture())->forward(some_ids());
  for (const char* key : {"embedding_multiplier", "residual_multiplier", "attention_multiplier"}) {
    nlohmann::json c = fixture_config();
    c[key] = c[key].get<double>() * 1.5;
    EXPECT_GT(max_abs_diff(load_model(with_config(c))->forward(some_ids()), reference.data()), 1e-3)
        << key;
  }
  nlohmann::json c = fixture_config();
  c["logits_scaling"] = 1.0;
  const auto unscaled = load_model(with_config(c))->forward(some_ids());
  const float scaling = fixture_config()["logits_scaling"].get<float>();
  for (size_t i = 0; i < reference.size(); ++i) ASSERT_EQ(reference[i], unscaled[i] / scaling) << i;
}

// n_groups 2: transformers' CPU path (full width) is a named option and a different function.
TEST(GraniteHybrid, FullWidthGatedNormIsAnOption) {
  auto model = load_model(fixture(), LoadOptions{Mamba2GatedNorm::kFullWidth});
  EXPECT_NE(model->info().detail("gated_norm").find("over all of d_inner = 128"), std::string::npos);
  EXPECT_GT(max_abs_diff(model->forward(some_ids()), load_model(fixture())->forward(some_ids()).data()),
            1e-3);
}

TEST(GraniteHybrid, BadConfigsNameTheField) {
  auto expect = [](const std::function<void(nlohmann::json&)>& edit,
                   const std::vector<std::string>& parts) {
    nlohmann::json c = fixture_config();
    edit(c);
    const std::string folder = with_config(c);
    test::expect_error([&] { load_model(folder); }, parts, c.dump());
  };
  expect([](auto& c) { c["num_hidden_layers"] = 5; }, {"layer_types", "6 entries", "5"});
  expect([](auto& c) { c["layer_types"][3] = "moe"; }, {"layer_types", "'moe' at index 3"});
  // HF's default is 8 routed experts: a dense checkpoint must say num_local_experts 0.
  expect([](auto& c) {
    c.erase("num_local_experts");
    c.erase("num_experts_per_tok");
  }, {"block_sparse_moe.router.layer.weight", "missing"});
  expect([](auto& c) { c["num_local_experts"] = 2; }, {"num_experts_per_tok", "positive"});
  expect([](auto& c) {
    c["num_local_experts"] = 2;
    c["num_experts_per_tok"] = 3;
  }, {"num_experts_per_tok", "more than num_local_experts"});
  expect([](auto& c) { c["mamba_d_head"] = 20; }, {"mamba_d_head"});
  expect([](auto& c) { c["mamba_d_head"] = "big"; }, {"mamba_d_head", "auto"});
  expect([](auto& c) { c["attention_multiplier"] = 0; }, {"attention_multiplier", "positive"});
  expect([](auto& c) { c["logits_scaling"] = 0; }, {"logits_scaling", "non-zero"});
  expect([](auto& c) { c["hidden_act"] = "gelu"; }, {"hidden_act", "silu"});
  expect([](auto& c) { c["mamba_n_groups"] = 3; }, {"mamba_n_groups", "must divide"});
  expect([](auto& c) { c["shared_intermediate_size"] = 95; },
         {"shared_mlp.input_linear.weight", "[192, 64]", "[190, 64]"});
}

std::string moe_fixture() { return test::repo_path("data/fixtures/granitehybrid-moe-tiny"); }

// Expert e's gate and up are rows [2eF, 2eF + F) and [2eF + F, 2(e+1)F) of the fused
// block_sparse_moe.input_linear {E, 2F, H}; its down is rows [eH, (e+1)H) of output_linear
// {E, H, F} seen as E·H rows of F.
TEST(GraniteHybrid, FusedExpertsLoadAsPerExpertMatrices) {
  auto model = load_model(moe_fixture());
  EXPECT_TRUE(model->weights().unused().empty());
  const TensorStore store = TensorStore::open_folder(moe_fixture());
  const std::string p = "model.layers.2.block_sparse_moe.";
  const auto in = store.get(p + "input_linear.weight").to_f32();
  const auto out = store.get(p + "output_linear.weight").to_f32();
  const int64_t E = 4, F = 48, H = 64, e = 3;
  const auto& gate = model->weights().get(p + "experts.3.gate_proj.weight").value;
  const auto& up = model->weights().get(p + "experts.3.up_proj.weight").value;
  const auto& down = model->weights().get(p + "experts.3.down_proj.weight").value;
  ASSERT_EQ(in.size(), static_cast<size_t>(E * 2 * F * H));
  EXPECT_TRUE(std::equal(gate.begin(), gate.end(), in.begin() + e * 2 * F * H));
  EXPECT_TRUE(std::equal(up.begin(), up.end(), in.begin() + (e * 2 * F + F) * H));
  EXPECT_TRUE(std::equal(down.begin(), down.end(), out.begin() + e * H * F));
  EXPECT_EQ(model->info().detail("experts"), "4 (top-2, intermediate_size 48)");
  const auto ids = some_ids();
  EXPECT_LE(max_abs_diff(model->forward_decode(ids), model->forward(ids).data()), 1e-4);
}

// synth writes the experts fused, as transformers stores them, and the folder loads back.
TEST(GraniteHybrid, SynthWritesFusedExperts) {
  const fs::path dir = test::fresh_temp_dir("granitehybrid-moe-synth");
  SynthOptions options;
  options.config_path = (fs::path(moe_fixture()) / "config.json").string();
  options.out_dir = (dir / "model").string();
  options.dtype = DType::kF32;
  synthesize_checkpoint(options);
  const TensorStore store = TensorStore::open_folder(options.out_dir);
  EXPECT_EQ(store.get("model.layers.1.block_sparse_moe.input_linear.weight").shape,
            (std::vector<int64_t>{4, 96, 64}));
  EXPECT_EQ(store.get("model.layers.1.block_sparse_moe.output_linear.weight").shape,
            (std::vector<int64_t>{4, 64, 48}));
  EXPECT_TRUE(load_model(options.out_dir)->weights().unused().empty());
}

int64_t preset_params(const std::string& preset) {
  const HfConfig config =
      HfConfig::from_json(nlohmann::json::parse(synth_preset_config(preset)), preset);
  int64_t params = 0;
  for (const TensorSpec& s : tensor_specs(config)) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += n;
  }
  return params;
}

// The names say 350M and 1B: IBM counts 340M and 1.5B parameters (tied embeddings once).
TEST(GraniteHybrid, SynthPresetsHaveTheirSizes) {
  EXPECT_NEAR(static_cast<double>(preset_params("granite-4.0-h-350m")), 340e6, 20e6);
  EXPECT_NEAR(static_cast<double>(preset_params("granite-4.0-h-1b")), 1.5e9, 0.1e9);
}

// synth writes the checkpoint as transformers stores it: the fused input_linear, not its halves.
TEST(GraniteHybrid, SynthWritesTheFusedInputLinear) {
  const fs::path dir = test::fresh_temp_dir("granitehybrid-synth");
  const fs::path config = dir / "in.json";
  test::write_file(config, test::read_file(fs::path(fixture()) / "config.json"));
  SynthOptions options;
  options.config_path = config.string();
  options.out_dir = (dir / "model").string();
  options.dtype = DType::kF32;
  synthesize_checkpoint(options);
  const TensorStore store = TensorStore::open_folder(options.out_dir);
  EXPECT_EQ(store.get("model.layers.0.shared_mlp.input_linear.weight").shape,
            (std::vector<int64_t>{192, 64}));
  EXPECT_EQ(store.find("model.layers.0.shared_mlp.gate_proj.weight"), nullptr);
  auto model = load_model(options.out_dir);
  EXPECT_TRUE(model->weights().unused().empty());
  EXPECT_EQ(model->forward(some_ids()).size(), some_ids().size() * 320);
}

}  // namespace
}  // namespace kllens
