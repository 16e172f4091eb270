// Falcon-H1 (make_falcon_h1) against the HF reference logits: greedy continuation and layer-by-
// layer hidden states of the oracle (its prefill / decode logits are in oracle_test.cpp), the bf16
// demo model within 1e-3 (RoPE inv_freq rounded to the checkpoint dtype). The fixtures have
// every muP multiplier at 1, so each multiplier's placement is checked by an exact equivalence: a
// power-of-two multiplier m on a linear map's output equals scaling that map's weight rows by m
// (both are exact in float32).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<Model> load(const std::string& folder) {
  return make_falcon_h1(HfConfig::load_folder(folder), TensorStore::open_folder(folder), folder, {});
}

std::vector<int32_t> to_i32(const std::vector<int64_t>& v) {
  return std::vector<int32_t>(v.begin(), v.end());
}

double max_abs_diff(const float* a, const float* b, size_t n, size_t* worst = nullptr) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) {
      m = std::isnan(d) ? INFINITY : d;
      if (worst) *worst = i;
    }
  }
  return m;
}

std::string oracle() { return test::repo_path("data/fixtures/oracles/falcon_h1"); }
std::string demo() { return test::repo_path("data/models/demo-falcon_h1"); }

// Prefill (and decode for the first `decode_seqs` sequences) within tol of reference.safetensors.
// Returns the largest prefill difference.
double check_reference(Model& model, const std::string& folder, double tol, int64_t decode_seqs) {
  SafetensorsFile ref(folder + "/reference.safetensors");
  const auto& ids_view = ref.get("input_ids");
  EXPECT_EQ(ids_view.shape.size(), 2u);
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1], V = model.info().vocab;
  const auto ids = to_i32(read_int_tensor(ids_view));
  const auto logits = ref.get("logits").to_f32();
  EXPECT_EQ(static_cast<int64_t>(logits.size()), B * T * V);
  double worst_prefill = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::span<const int32_t> seq(ids.data() + b * T, static_cast<size_t>(T));
    const float* want = logits.data() + b * T * V;
    size_t worst = 0;
    const auto prefill = model.forward(seq);
    const double dp = max_abs_diff(prefill.data(), want, prefill.size(), &worst);
    worst_prefill = std::max(worst_prefill, dp);
    if (tol > 0) {
      EXPECT_LE(dp, tol) << folder << " prefill, sequence " << b << ", token " << worst / V;
    }
    double dd = -1;
    if (b < decode_seqs) {
      const auto decode = model.forward_decode(seq);
      dd = max_abs_diff(decode.data(), want, decode.size(), &worst);
      if (tol > 0) {
        EXPECT_LE(dd, tol) << folder << " decode, sequence " << b << ", token " << worst / V;
      }
    }
    std::printf("[ info ] %s seq %ld: prefill max |diff| %.3g, decode %.3g\n",
                fs::path(folder).filename().c_str(), static_cast<long>(b), dp, dd);
  }
  return worst_prefill;
}

// The oracle's prefill / decode logits and greedy continuation are checked through the registry
// by oracle_test.cpp; this file keeps the Falcon-H1-specific checks.

TEST(FalconH1, DemoModelBf16) {
  // A BF16 checkpoint runs with its RoPE inv_freq rounded to bf16, like HF after
  // model.to(bfloat16) (how the demo reference was computed); everything else matches to ~1e-5.
  auto model = load(demo());
  EXPECT_NE(model->info().details.end(),
            std::find(model->info().details.begin(), model->info().details.end(),
                      std::pair<std::string, std::string>{"rope_theta", "10000 (inv_freq in BF16)"}));
  const double d = check_reference(*model, demo(), 1e-3, 1);
  EXPECT_LT(d, 1e-4);
}

TEST(FalconH1, Float32CheckpointKeepsFloat32InvFreq) {
  // The rounding is keyed on the checkpoint's dtype: the same demo weights stored as F32 (bf16 ->
  // f32 is exact) keep the float32 inv_freq, whose RoPE angles differ from the bf16-rounded ones
  // by up to 2^-9 relative, an error that grows with the position (max ~0.02 at token 117 of
  // 128); nothing else differs.
  const fs::path dir = test::fresh_temp_dir("falcon-h1-f32");
  fs::copy_file(fs::path(demo()) / "config.json", dir / "config.json");
  fs::copy_file(fs::path(demo()) / "reference.safetensors", dir / "reference.safetensors");
  {
    SafetensorsFile src((fs::path(demo()) / "model.safetensors").string());
    std::map<std::string, OwnedTensor> out;
    for (const auto& [name, view] : src.tensors()) out[name] = make_f32_tensor(view.shape, view.to_f32());
    write_safetensors((dir / "model.safetensors").string(), out);
  }
  auto exact = load(dir.string());
  EXPECT_EQ(exact->weights().get("model.embed_tokens.weight").source_dtype, DType::kF32);
  const double d = check_reference(*exact, dir.string(), 0, 0);
  EXPECT_GT(d, 1e-3);
  EXPECT_LT(d, 0.05);
  exact.reset();
  fs::remove_all(dir);  // ~30 MB
}

TEST(FalconH1, GreedyContinuation) {
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  auto model = load(oracle());
  const auto prompt = to_i32(read_int_tensor(ref.get("greedy_prompt")));
  const auto expected = to_i32(read_int_tensor(ref.get("greedy_output")));
  ASSERT_GT(expected.size(), prompt.size());
  auto state = model->new_decode_state();
  std::vector<float> logits(static_cast<size_t>(model->info().vocab));
  std::vector<int32_t> out = prompt;
  for (int32_t id : prompt) model->decode_step(*state, id, logits.data());
  while (out.size() < expected.size()) {
    const auto next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    model->decode_step(*state, next, logits.data());
  }
  EXPECT_EQ(out, expected);
  EXPECT_EQ(state->position, static_cast<int64_t>(expected.size()));
  EXPECT_GT(state->bytes(), 0u);
}

TEST(FalconH1, HiddenStatesLayerByLayer) {
  // HF FalconH1Model: i = 0..L-1 is the input of layer i (i = 0: embeddings * embedding_multiplier),
  // i = L is after final_layernorm.
  auto model = load(oracle());
  SafetensorsFile ref(oracle() + "/reference.safetensors");
  const auto ids = to_i32(read_int_tensor(ref.get("input_ids")));
  const int64_t T = ref.get("input_ids").shape[1], H = model->info().d_model;
  auto state = model->start(std::span<const int32_t>(ids.data(), static_cast<size_t>(T)));
  for (int l = 0; l < model->info().n_layers; ++l) {
    const auto want = ref.get("hidden_states." + std::to_string(l)).to_f32();
    EXPECT_LE(max_abs_diff(state->hidden.data(), want.data(), static_cast<size_t>(T * H)), 1e-4)
        << "hidden_states." << l;
    model->run_layer(l, *state);
  }
}

TEST(FalconH1, DecodeLongerThanPrefillChunksEqualsPrefill) {
  // 100 tokens: over six of the oracle's 16-token SSD chunks and well past the reference length;
  // the KV cache grows with the sequence (no window).
  auto model = load(oracle());
  std::vector<int32_t> ids;
  for (int i = 0; i < 100; ++i) ids.push_back((i * 37 + 11) % 320);
  const auto prefill = model->forward(ids);
  const auto decode = model->forward_decode(ids);
  EXPECT_LE(max_abs_diff(prefill.data(), decode.data(), prefill.size()), 1e-5);
}

TEST(FalconH1, RestartFromClonedLayerState) {
  auto model = load(oracle());
  const std::vector<int32_t> ids = {5, 17, 200, 3, 3, 99, 1, 0, 250, 42, 7, 8, 9, 10, 11, 12, 301};
  const auto full = model->forward(ids);
  auto s = model->start(ids);
  model->run_layer(0, *s);
  auto copy = s->clone();
  model->run_layer(1, *copy);
  std::vector<float> logits(full.size());
  model->finish(*copy, logits.data());
  EXPECT_EQ(logits, full);
}

TEST(FalconH1, Info) {
  auto model = load(oracle());
  EXPECT_EQ(model->info().arch, "falcon_h1");
  EXPECT_EQ(model->info().n_layers, 2);
  EXPECT_EQ(model->info().vocab, 320);
  EXPECT_NE(model->weights().find("lm_head.weight"), nullptr);
  auto tied = load(demo());
  EXPECT_EQ(tied->weights().find("lm_head.weight"), nullptr);
  EXPECT_TRUE(tied->weights().get("model.embed_tokens.weight").tied_head);
}

// ---- edited copies of the oracle ----

fs::path copy_fixture(const std::string& src, const std::string& tag) {
  const fs::path dir = test::fresh_temp_dir(tag);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(fs::path(src) / f, dir / f);
  return dir;
}

nlohmann::json read_config(const fs::path& dir) {
  std::ifstream in(dir / "config.json");
  return nlohmann::json::parse(in);
}

fs::path edited(const std::function<void(nlohmann::json&)>& edit, const std::string& src = oracle()) {
  const fs::path dir = copy_fixture(src, "falcon-h1");
  auto j = read_config(dir);
  edit(j);
  test::write_file(dir / "config.json", j.dump(2));
  return dir;
}

// Loads a copy with an edited config; returns the error message ("" = loaded).
std::string load_error(const std::function<void(nlohmann::json&)>& edit) {
  const fs::path dir = edited(edit);
  try {
    load(dir.string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const std::vector<int32_t> kIds = {1, 7, 300, 12, 12, 45, 2, 99, 150, 151, 152, 8, 0, 3, 64, 128, 255, 31, 5};

// logits of a model loaded with config edit `mult`, vs the unedited model with weights rescaled.
void expect_multiplier_equivalent(const std::function<void(nlohmann::json&)>& mult,
                                  const std::function<void(Model&)>& rescale, const char* what,
                                  const std::string& src = oracle()) {
  auto with_mult = load(edited(mult, src).string());
  const std::string base_dir = src;
  auto scaled = load(base_dir);
  rescale(*scaled);
  const auto a = with_mult->forward(kIds);
  const auto b = scaled->forward(kIds);
  auto base = load(base_dir);
  const auto c = base->forward(kIds);
  EXPECT_LE(max_abs_diff(a.data(), b.data(), a.size()), 1e-6) << what;
  EXPECT_GT(max_abs_diff(a.data(), c.data(), a.size()), 1e-3) << what << " had no effect";
  // Decode applies it the same way.
  const auto d = with_mult->forward_decode(kIds);
  EXPECT_LE(max_abs_diff(a.data(), d.data(), a.size()), 1e-4) << what << " decode";
}

void scale_rows(Model& m, const std::string& name, float s, int64_t row_begin = 0, int64_t row_end = -1) {
  Param& p = m.weights().get(name);
  if (row_end < 0) row_end = p.rows();
  for (int64_t r = row_begin; r < row_end; ++r)
    for (int64_t c = 0; c < p.cols(); ++c) p.value[r * p.cols() + c] *= s;
}

void each_layer(Model& m, const std::function<void(const std::string&)>& f) {
  for (int l = 0; l < m.info().n_layers; ++l) f("model.layers." + std::to_string(l) + ".");
}

TEST(FalconH1Multipliers, EmbeddingAndLmHead) {
  expect_multiplier_equivalent([](auto& j) { j["embedding_multiplier"] = 4.0; },
                               [](Model& m) { scale_rows(m, "model.embed_tokens.weight", 4.0f); },
                               "embedding_multiplier");
  expect_multiplier_equivalent([](auto& j) { j["lm_head_multiplier"] = 0.5; },
                               [](Model& m) { scale_rows(m, "lm_head.weight", 0.5f); },
                               "lm_head_multiplier");
}

TEST(FalconH1Multipliers, Attention) {
  expect_multiplier_equivalent([](auto& j) { j["key_multiplier"] = 4.0; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   scale_rows(m, p + "self_attn.k_proj.weight", 4.0f);
                                 });
                               },
                               "key_multiplier");
  expect_multiplier_equivalent([](auto& j) { j["attention_in_multiplier"] = 2.0; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   for (const char* w : {"q_proj", "k_proj", "v_proj"})
                                     scale_rows(m, p + "self_attn." + w + ".weight", 2.0f);
                                 });
                               },
                               "attention_in_multiplier");
  expect_multiplier_equivalent([](auto& j) { j["attention_out_multiplier"] = 0.25; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   scale_rows(m, p + "self_attn.o_proj.weight", 0.25f);
                                 });
                               },
                               "attention_out_multiplier");
}

TEST(FalconH1Multipliers, Mlp) {
  expect_multiplier_equivalent([](auto& j) { j["mlp_multipliers"] = {4.0, 0.5}; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   scale_rows(m, p + "feed_forward.gate_proj.weight", 4.0f);
                                   scale_rows(m, p + "feed_forward.down_proj.weight", 0.5f);
                                 });
                               },
                               "mlp_multipliers");
}

TEST(FalconH1Multipliers, Ssm) {
  expect_multiplier_equivalent([](auto& j) { j["ssm_in_multiplier"] = 2.0; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   scale_rows(m, p + "mamba.in_proj.weight", 2.0f);
                                 });
                               },
                               "ssm_in_multiplier");
  expect_multiplier_equivalent([](auto& j) { j["ssm_out_multiplier"] = 4.0; },
                               [](Model& m) {
                                 each_layer(m, [&](const std::string& p) {
                                   scale_rows(m, p + "mamba.out_proj.weight", 4.0f);
                                 });
                               },
                               "ssm_out_multiplier");
  // ssm_multipliers [z, x, B, C, dt] scale the in_proj output segments (mup_vector). The random
  // oracle's SSM branch barely reaches the logits through x, B and C, so these use the trained
  // demo model (I = 512, G*N = 32, H = 8).
  // z = [0, I), x = [I, 2I), B = [2I, 2I+GN), C = [2I+GN, 2I+2GN), dt = [2I+2GN, 2I+2GN+H).
  const int64_t I = 512, GN = 32, NH = 8;
  const int64_t b[6] = {0, I, 2 * I, 2 * I + GN, 2 * I + 2 * GN, 2 * I + 2 * GN + NH};
  const float s[5] = {2.0f, 0.5f, 4.0f, 0.25f, 2.0f};
  for (int k = 0; k < 5; ++k) {
    expect_multiplier_equivalent(
        [&](auto& j) {
          std::vector<double> v(5, 1.0);
          v[k] = s[k];
          j["ssm_multipliers"] = v;
        },
        [&](Model& m) {
          each_layer(m, [&](const std::string& p) {
            scale_rows(m, p + "mamba.in_proj.weight", s[k], b[k], b[k + 1]);
          });
        },
        "ssm_multipliers", demo());
  }
}

TEST(FalconH1Config, LegacyRopeThetaAtTopLevelMatches) {
  // Hub checkpoints saved before transformers 5: rope_theta at the top level, rope_scaling null.
  const fs::path dir = edited([](auto& j) {
    j["rope_theta"] = j["rope_parameters"]["rope_theta"];
    j.erase("rope_parameters");
    j["rope_scaling"] = nullptr;
  });
  auto legacy = load(dir.string());
  auto base = load(oracle());
  EXPECT_EQ(legacy->forward(kIds), base->forward(kIds));
  // and the theta is actually read (a different theta changes the logits)
  auto other = load(edited([](auto& j) { j["rope_parameters"]["rope_theta"] = 500.0; }).string());
  const auto a = other->forward(kIds), c = base->forward(kIds);
  EXPECT_GT(max_abs_diff(a.data(), c.data(), a.size()), 1e-4);
}

TEST(FalconH1Config, GatedNormOptions) {
  // mamba_rms_norm = false: no norm weight is read (y * silu(z)); the oracle's norm becomes unused.
  auto no_norm = load(edited([](auto& j) { j["mamba_rms_norm"] = false; }).string());
  EXPECT_EQ(no_norm->weights().find("model.layers.0.mamba.norm.weight"), nullptr);
  auto base = load(oracle());
  auto gate_first = load(edited([](auto& j) { j["mamba_norm_before_gate"] = false; }).string());
  const auto a = no_norm->forward(kIds), b = base->forward(kIds), c = gate_first->forward(kIds);
  EXPECT_GT(max_abs_diff(a.data(), b.data(), a.size()), 1e-4);
  EXPECT_GT(max_abs_diff(c.data(), b.data(), c.size()), 1e-4);
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
  for (float v : c) ASSERT_TRUE(std::isfinite(v));
}

TEST(FalconH1BadInput, InconsistentConfig) {
  auto has = [](const std::string& msg, const std::string& what) {
    return msg.find(what) != std::string::npos;
  };
  std::string m = load_error([](auto& j) { j["num_key_value_heads"] = 3; });
  EXPECT_TRUE(has(m, "num_key_value_heads = 3 must divide num_attention_heads = 4")) << m;
  m = load_error([](auto& j) { j["mamba_d_head"] = 32; });
  EXPECT_TRUE(has(m, "mamba_d_head * mamba_n_heads")) << m;
  m = load_error([](auto& j) { j["mamba_n_heads"] = 5; });
  EXPECT_TRUE(has(m, "mamba_n_heads = 5 must divide")) << m;
  m = load_error([](auto& j) { j["mamba_n_groups"] = 3; });
  EXPECT_TRUE(has(m, "mamba_n_groups = 3 must divide mamba_n_heads = 8")) << m;
  m = load_error([](auto& j) { j["num_attention_heads"] = 5; });
  EXPECT_TRUE(has(m, "must divide num_attention_heads = 5")) << m;
  m = load_error([](auto& j) { j["rope_parameters"]["rope_type"] = "yarn"; });
  EXPECT_TRUE(has(m, "rope_type 'yarn'")) << m;
  m = load_error([](auto& j) { j["mlp_multipliers"] = {1.0}; });
  EXPECT_TRUE(has(m, "mlp_multipliers")) << m;
  m = load_error([](auto& j) { j["ssm_multipliers"] = {1.0, 1.0, 1.0, "x", 1.0}; });
  EXPECT_TRUE(has(m, "ssm_multipliers")) << m;
  m = load_error([](auto& j) { j["time_step_limit"] = {2.0, 1.0}; });
  EXPECT_TRUE(has(m, "time_step_limit")) << m;
  m = load_error([](auto& j) { j["mamba_d_head"] = "big"; });
  EXPECT_TRUE(has(m, "mamba_d_head")) << m;
  m = load_error([](auto& j) { j.erase("intermediate_size"); });
  EXPECT_TRUE(has(m, "'intermediate_size' is missing")) << m;
}

TEST(FalconH1BadInput, ShapesAndMissingTensors) {
  auto has = [](const std::string& msg, const std::string& what) {
    return msg.find(what) != std::string::npos;
  };
  // Consistent config, but not this checkpoint's.
  std::string m = load_error([](auto& j) { j["mamba_d_state"] = 8; });
  EXPECT_TRUE(has(m, "mamba.in_proj.weight' has shape [296, 64] but the config implies")) << m;
  m = load_error([](auto& j) { j["mamba_n_groups"] = 2; });
  EXPECT_TRUE(has(m, "has shape")) << m;
  m = load_error([](auto& j) { j["num_key_value_heads"] = 4; });
  EXPECT_TRUE(has(m, "k_proj.weight' has shape [32, 64]")) << m;
  // Flags that promise tensors the file does not have.
  m = load_error([](auto& j) { j["mamba_proj_bias"] = true; });
  EXPECT_TRUE(has(m, "'model.layers.0.mamba.in_proj.bias' is missing")) << m;
  m = load_error([](auto& j) { j["projectors_bias"] = true; });
  EXPECT_TRUE(has(m, "mamba.out_proj.bias' is missing")) << m;
  m = load_error([](auto& j) { j["attention_bias"] = true; });
  EXPECT_TRUE(has(m, "self_attn.q_proj.bias' is missing")) << m;
  // The tied demo has no lm_head.
  const fs::path dir = edited([](auto& j) { j["tie_word_embeddings"] = false; }, demo());
  try {
    load(dir.string());
    ADD_FAILURE() << "untied config without lm_head.weight loaded";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "'lm_head.weight' is missing")) << e.what();
  }
}

TEST(FalconH1BadInput, WrongTensorShapeInFile) {
  const fs::path dir = copy_fixture(oracle(), "falcon-h1-shape");
  {
    SafetensorsFile src((dir / "model.safetensors").string());
    std::map<std::string, OwnedTensor> out;
    for (const auto& [name, view] : src.tensors()) {
      auto v = view.to_f32();
      std::vector<int64_t> shape = view.shape;
      if (name == "model.layers.1.self_attn.o_proj.weight") shape = {32, 128};  // same numel
      out[name] = make_f32_tensor(shape, v);
    }
    write_safetensors((dir / "model.safetensors.tmp").string(), out);
  }
  fs::rename(dir / "model.safetensors.tmp", dir / "model.safetensors");
  try {
    load(dir.string());
    ADD_FAILURE() << "loaded a checkpoint with a transposed o_proj";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "'model.layers.1.self_attn.o_proj.weight' has shape [32, 128] but the config implies [64, 64]"),
              std::string::npos)
        << e.what();
  }
}

TEST(FalconH1BadInput, TokenOutsideVocabulary) {
  auto model = load(oracle());
  const std::vector<int32_t> ids = {1, 2, 320};
  EXPECT_THROW(model->forward(ids), Error);
  auto state = model->new_decode_state();
  std::vector<float> logits(320);
  EXPECT_THROW(model->decode_step(*state, 400, logits.data()), Error);
}

}  // namespace
}  // namespace kllens
