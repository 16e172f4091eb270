// models/llama_layout through export/:  llama.cpp's layouts of llama, jamba and falcon_h1. A kllens F32 file in that
// layout reads back as the same function (the transforms and their inverses agree), q/k rows are
// permuted exactly as the converter's reshape (2, D/2) -> (D/2, 2), Jamba's experts are stacked
// into one tensor per projection, and Falcon-H1's multipliers are folded into the weights.
#include "models/llama_layout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "export/gguf_export.h"
#include "export/gguf_import.h"
#include "io/gguf.h"
#include "models/model.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

std::vector<int32_t> some_ids(int64_t vocab) {
  std::vector<int32_t> ids(19);
  uint32_t x = 777;
  for (auto& id : ids) {
    x = x * 1664525u + 1013904223u;
    id = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
  }
  return ids;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

// The converter's permute: rows viewed as [n_head][2][D/2], swapped to [n_head][D/2][2]; so file
// row (h, 2i + j) holds HF row (h, j * D/2 + i).
TEST(LlamaLayout, RopePermutationIsTheConvertersReshape) {
  LlamaTensor t{"blk.0.attn_q.weight", LlamaTransform::kRopePermute};
  t.n_head = 3;
  const int64_t D = 10, rows = 3 * D;
  std::vector<int64_t> hf_of_file(rows, -1);
  for (int64_t h = 0; h < 3; ++h)
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) hf_of_file[h * D + 2 * i + j] = h * D + j * (D / 2) + i;
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(hf_of_file[llama_row(t, r, rows)], r) << r;
  // Values: to_llama_values moves rows, from_llama_values moves them back.
  std::vector<float> v(static_cast<size_t>(rows * 2));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  const auto f = to_llama_values(t, v.data(), rows, 2);
  EXPECT_EQ(f[1 * 2], v[5 * 2]);  // file row 1 = (h 0, i 0, j 1) <- HF row 0 * 5 + 1 * 5 = 5
  EXPECT_EQ(f[2 * 2], v[1 * 2]);  // file row 2 = (h 0, i 1, j 0) <- HF row 1
  EXPECT_EQ(from_llama_values(t, f.data(), rows, 2, "t"), v);
}

class LlamaLayoutRoundTrip : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("llama-layout"); }
  void TearDown() override { fs::remove_all(dir_); }
  // Exports `folder` as F32 in llama.cpp's layout and checks the file reads back as the same
  // model. Tolerance 1e-5: the same float32 arithmetic, except Falcon-H1's folded multipliers
  // (one float32 rounding per weight, ~6e-8 relative).
  gguf::File round_trip(const std::string& folder, const std::string& arch) {
    auto model = load_model(folder);
    EXPECT_TRUE(model->info().llama_cpp_layout) << model->info().llama_cpp_layout_why_not;
    const std::string path = (dir_ / (arch + ".gguf")).string();
    const GgufExportResult r = export_gguf(*model, {}, path);
    EXPECT_TRUE(r.llama_cpp_layout);
    EXPECT_EQ(r.architecture, arch);
    auto loaded = load_gguf_model(path);
    const auto ids = some_ids(model->info().vocab);
    EXPECT_LE(max_abs_diff(loaded->forward(ids), model->forward(ids)), 1e-5);
    EXPECT_LE(max_abs_diff(loaded->forward_decode(ids), model->forward_decode(ids)), 1e-4);
    return gguf::File(path);
  }
  fs::path dir_;
};

TEST_F(LlamaLayoutRoundTrip, Llama) {
  const gguf::File f = round_trip(test::repo_path("data/fixtures/oracles/llama"), "llama");
  EXPECT_NE(f.find_tensor("blk.0.attn_q.weight"), nullptr);
  EXPECT_NE(f.find_tensor("blk.1.ffn_down.weight"), nullptr);
  EXPECT_EQ(f.find_tensor("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_EQ(f.get_as<uint32_t>("llama.rope.dimension_count"),
            f.get_as<uint32_t>("llama.attention.key_length"));
}

// Nemotron-H: the layer kinds travel as per-layer head_count_kv and feed_forward_length. Its
// config.json holds Python's Infinity (time_step_limit), which kllens.hf_config keeps as written
// and the importer must read as the loader does.
TEST_F(LlamaLayoutRoundTrip, NemotronHWritesItsLayerKindsPerLayer) {
  const gguf::File f = round_trip(test::repo_path("data/fixtures/nemotron_h-tiny"), "nemotron_h");
  // pattern "M*-M-M*-": attention layers have 2 kv heads, MLP layers 96 channels, Mamba both 0
  EXPECT_EQ(f.get_as<std::vector<int32_t>>("nemotron_h.attention.head_count_kv"),
            (std::vector<int32_t>{0, 2, 0, 0, 0, 0, 2, 0}));
  EXPECT_EQ(f.get_as<std::vector<int32_t>>("nemotron_h.feed_forward_length"),
            (std::vector<int32_t>{0, 0, 96, 0, 96, 0, 0, 96}));
  EXPECT_NE(f.find_tensor("blk.0.ssm_norm.weight"), nullptr);
  EXPECT_NE(f.find_tensor("blk.1.attn_k.weight"), nullptr);
  EXPECT_NE(f.find_tensor("blk.2.ffn_up.weight"), nullptr);
  EXPECT_EQ(f.find_tensor("blk.2.ffn_gate.weight"), nullptr);
}

// Granite-4.0-H: the multipliers travel as keys (llama.cpp applies them in its graph), the fused
// input_linear as ffn_gate and ffn_up, and an SSM layer is one with head_count_kv 0.
TEST_F(LlamaLayoutRoundTrip, GraniteHybridKeepsItsMultipliersAsKeys) {
  const gguf::File f =
      round_trip(test::repo_path("data/fixtures/granitehybrid-tiny"), "granitehybrid");
  EXPECT_EQ(f.get_as<std::vector<int32_t>>("granitehybrid.attention.head_count_kv"),
            (std::vector<int32_t>{0, 2, 0, 0, 2, 0}));
  EXPECT_EQ(f.get_as<float>("granitehybrid.embedding_scale"), 3.0f);
  EXPECT_EQ(f.get_as<float>("granitehybrid.residual_scale"), 0.4f);
  EXPECT_EQ(f.get_as<float>("granitehybrid.attention.scale"), 0.0625f);
  EXPECT_EQ(f.get_as<float>("granitehybrid.logit_scale"), 2.5f);
  EXPECT_FALSE(f.get_as<bool>("granitehybrid.rope.scaling.finetuned"));
  EXPECT_EQ(f.tensor("blk.0.ffn_gate.weight").ne, (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(f.tensor("blk.0.ffn_up.weight").ne, (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);  // tied
}

// Granite's routed experts are stacked as Jamba's; the shared MLP becomes the shared expert.
TEST_F(LlamaLayoutRoundTrip, GraniteHybridStacksExpertsBesideTheSharedOne) {
  const gguf::File f =
      round_trip(test::repo_path("data/fixtures/granitehybrid-moe-tiny"), "granitehybrid");
  EXPECT_EQ(f.tensor("blk.0.ffn_gate_exps.weight").ne, (std::vector<int64_t>{64, 48, 4}));
  EXPECT_EQ(f.tensor("blk.0.ffn_down_exps.weight").ne, (std::vector<int64_t>{48, 64, 4}));
  EXPECT_EQ(f.tensor("blk.0.ffn_gate_shexp.weight").ne, (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(f.tensor("blk.0.ffn_gate_inp.weight").ne, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(f.find_tensor("blk.0.ffn_gate.weight"), nullptr);
  EXPECT_EQ(f.get_as<uint32_t>("granitehybrid.expert_count"), 4u);
  EXPECT_EQ(f.get_as<uint32_t>("granitehybrid.expert_used_count"), 2u);
  EXPECT_EQ(f.get_as<uint32_t>("granitehybrid.expert_shared_feed_forward_length"), 96u);
  EXPECT_EQ(f.get_as<uint32_t>("granitehybrid.feed_forward_length"), 48u);
}

TEST_F(LlamaLayoutRoundTrip, JambaStacksItsExperts) {
  const std::string folder = test::repo_path("data/fixtures/oracles/jamba");
  const auto config = nlohmann::json::parse(test::read_file(folder + "/config.json"));
  const gguf::File f = round_trip(folder, "jamba");
  const int64_t E = config["num_experts"].get<int64_t>(), H = config["hidden_size"].get<int64_t>(),
                F = config["intermediate_size"].get<int64_t>();
  const int64_t moe_layer = config["expert_layer_offset"].get<int64_t>();
  const auto* gate = f.find_tensor("blk." + std::to_string(moe_layer) + ".ffn_gate_exps.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->ne, (std::vector<int64_t>{H, F, E}));
  EXPECT_NE(f.find_tensor("blk." + std::to_string(moe_layer) + ".ffn_gate_inp.weight"), nullptr);
  const gguf::Value* kv = f.find("jamba.attention.head_count_kv");
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->array_size(), static_cast<size_t>(config["num_hidden_layers"].get<int64_t>()));
}

TEST_F(LlamaLayoutRoundTrip, JambaExpertsPlannedApartAreStoredAtTheLargestScheme) {
  auto model = load_model(test::repo_path("data/fixtures/oracles/jamba"));
  SchemeAssignment a;
  std::string first;
  for (const Param* p : model->weights().components())
    if (p->name.find(".experts.") != std::string::npos) {
      a[p->name] = QuantScheme::parse(first.empty() ? "q8_0" : "q4_0");
      if (first.empty()) first = p->name;
    }
  const GgufExportResult r = export_gguf(*model, a, (dir_ / "mixed.gguf").string());
  bool reported = false;
  for (const auto& fb : r.fallbacks) reported |= fb.stored == "q8_0" && fb.requested == "q4_0";
  EXPECT_TRUE(reported);
  const gguf::File f((dir_ / "mixed.gguf").string());
  for (const auto& t : f.tensors())
    if (t.name.find("ffn_gate_exps") != std::string::npos && t.name.rfind("blk.1.", 0) == 0)
      EXPECT_EQ(t.type, gguf::GgmlType::kQ8_0);
  // The packed experts read back as their slices of the stack.
  auto loaded = load_gguf_model((dir_ / "mixed.gguf").string());
  const auto ids = some_ids(model->info().vocab);
  EXPECT_EQ(loaded->forward(ids).size(), model->forward(ids).size());
}

TEST_F(LlamaLayoutRoundTrip, FalconH1FoldsItsMultipliers) {
  // The oracle applies the norm before the gate, which llama.cpp cannot: its weights under the
  // config llama.cpp's fixture was made with (gate first, multipliers that are not 1).
  const fs::path src = test::repo_path("data/fixtures/oracles/falcon_h1"), folder = dir_ / "falcon";
  fs::create_directories(folder);
  fs::copy_file(src / "model.safetensors", folder / "model.safetensors");
  fs::copy_file(test::repo_path("data/fixtures/llamacpp-oracles/falcon_h1-variant.config.json"),
                folder / "config.json");
  {
    auto unfolded = load_model(test::repo_path("data/fixtures/oracles/falcon_h1"));
    EXPECT_FALSE(unfolded->info().llama_cpp_layout);
    EXPECT_NE(unfolded->info().llama_cpp_layout_why_not.find("mamba_norm_before_gate"),
              std::string::npos);
  }
  const gguf::File f = round_trip(folder.string(), "falcon-h1");
  EXPECT_NE(f.find_tensor("blk.0.ffn_norm"), nullptr);  // no .weight, as the converter names it
  const auto stored = nlohmann::json::parse(f.get_as<std::string>("kllens.hf_config"));
  EXPECT_EQ(stored["embedding_multiplier"], 1.0);
  EXPECT_EQ(stored["ssm_multipliers"], nlohmann::json({1.0, 1.0, 1.0, 1.0, 1.0}));
}

}  // namespace
}  // namespace kllens
