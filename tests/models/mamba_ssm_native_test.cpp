// mamba_ssm-format checkpoints (data/fixtures/mamba-ssm-native: the mamba, mamba2 and mamba2-g1
// oracles' weights as mamba_ssm saves them, pytorch_model.bin written by
// tools/make_pytorch_fixtures.py) load as their HF twins: the same tensors, so bit-identical
// logits, and the reference logits within the oracle tolerance (1e-4): HF's, or for n_groups = 2
// llama.cpp's, which normalizes per group as mamba_ssm does. Also as
// model.safetensors under mamba_ssm's names; and what mamba_ssm can build but HF Mamba cannot is
// one clear error naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include "models/synth.h"
#include "test_util.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string native(const std::string& name) {
  return test::repo_path("data/fixtures/mamba-ssm-native/" + name);
}
std::string oracle(const std::string& name) { return test::repo_path("data/fixtures/oracles/" + name); }

using test::max_abs_diff;

// An HF oracle's tensors under mamba_ssm's names (backbone.embedding), as float32.
std::map<std::string, OwnedTensor> native_tensors(const SafetensorsFile& hf) {
  std::map<std::string, OwnedTensor> tensors;
  for (const auto& [name, view] : hf.tensors())
    tensors[name == "backbone.embeddings.weight" ? "backbone.embedding.weight" : name] =
        make_f32_tensor(view.shape, view.to_f32());
  return tensors;
}

class MambaSsmNative : public ::testing::TestWithParam<std::string> {};

TEST_P(MambaSsmNative, PytorchModelBinEqualsItsHfTwin) {
  const auto model = load_model(native(GetParam()));
  const auto twin = load_model(oracle(GetParam()));
  EXPECT_EQ(model->info().arch, twin->info().arch);
  EXPECT_EQ(model->info().vocab, twin->info().vocab);  // the vocabulary padded as mamba_ssm pads it
  EXPECT_EQ(model->weights().total_params(), twin->weights().total_params());
  EXPECT_NE(model->info().detail("checkpoint").find("mamba_ssm"), std::string::npos);
  // With n_groups = 2 the HF reference is transformers' full-width CPU norm; mamba_ssm, which
  // trained such weights, normalizes per group, as kllens does by default and llama.cpp does.
  SafetensorsFile ref(GetParam() == "mamba2"
                          ? test::repo_path("data/fixtures/llamacpp-oracles/mamba2.safetensors")
                          : oracle(GetParam()) + "/reference.safetensors");
  const auto ids64 = read_int_tensor(ref.get("input_ids"));
  const int64_t T = ref.get("input_ids").shape[1];
  const std::vector<int32_t> seq(ids64.begin(), ids64.begin() + T);
  const auto logits = model->forward(seq);
  EXPECT_EQ(logits, twin->forward(seq));
  EXPECT_EQ(model->forward_decode(seq), twin->forward_decode(seq));
  EXPECT_LE(max_abs_diff(logits, ref.get("logits").to_f32().data()), 1e-4);
}

// The same state dict as model.safetensors: mamba_ssm's names, and no tied lm_head (safetensors'
// save_model drops a tensor that shares another's storage).
TEST_P(MambaSsmNative, SafetensorsUnderNativeNamesEqualItsHfTwin) {
  const fs::path dir = test::fresh_temp_dir("native-safetensors");
  fs::copy_file(native(GetParam()) + "/config.json", dir / "config.json");
  write_safetensors((dir / "model.safetensors").string(),
                    native_tensors(SafetensorsFile(oracle(GetParam()) + "/model.safetensors")));
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5};
  EXPECT_EQ(load_model(dir.string())->forward(ids), load_model(oracle(GetParam()))->forward(ids));
}

INSTANTIATE_TEST_SUITE_P(Oracles, MambaSsmNative,
                         ::testing::Values("mamba-tied-bias", "mamba2", "mamba2-g1"),
                         test::ModelParamName());

// A folder with the native config and `tensors` (HF oracle tensors, renamed/edited by the caller).
std::string native_folder(const json& config, const std::map<std::string, OwnedTensor>& tensors) {
  const fs::path dir = test::fresh_temp_dir("native");
  test::write_file(dir / "config.json", config.dump(4));
  write_safetensors((dir / "model.safetensors").string(), tensors);
  return dir.string();
}

TEST(MambaSsmNativeTied, AHeadThatIsNotTheEmbeddingIsRefused) {
  const json config = json::parse(test::read_file(native("mamba-tied-bias") + "/config.json"));
  SafetensorsFile hf(oracle("mamba-tied-bias") + "/model.safetensors");
  std::map<std::string, OwnedTensor> tensors = native_tensors(hf);
  auto head = hf.get("backbone.embeddings.weight").to_f32();
  tensors["lm_head.weight"] = make_f32_tensor(hf.get("backbone.embeddings.weight").shape, head);
  EXPECT_NO_THROW(load_model(native_folder(config, tensors)));  // the embedding twice: fine
  head[7] += 1.0f;
  tensors["lm_head.weight"] = make_f32_tensor(hf.get("backbone.embeddings.weight").shape, head);
  test::expect_error([&] { load_model(native_folder(config, tensors)); },
                     {"tie_embeddings is true", "lm_head.weight is not backbone.embedding.weight"});
}

// What mamba_ssm builds but HF's Mamba classes cannot, and what mamba_ssm itself refuses.
TEST(MambaSsmNativeConfig, UnsupportedOrUnknownFieldsAreOneErrorNamingThem) {
  const json base = json::parse(test::read_file(native("mamba2") + "/config.json"));
  const auto error_for = [&](const std::function<void(json&)>& edit) {
    json c = base;
    edit(c);
    return test::error_of([&] { (void)checkpoint_config_from_text(c.dump(), "cfg.json"); });
  };
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& c) { c["d_intermediate"] = 256; }, "'d_intermediate'"},
      {[](json& c) { c["attn_layer_idx"] = {1}; }, "'attn_layer_idx'"},
      {[](json& c) { c["rms_norm"] = false; }, "'rms_norm'"},
      {[](json& c) { c["n_embd"] = 3; }, "'n_embd'"},
      {[](json& c) { c["ssm_cfg"]["layer"] = "Mamba3"; }, "'layer'"},
      {[](json& c) { c["ssm_cfg"]["headdimm"] = 16; }, "'headdimm'"},
      {[](json& c) { c["ssm_cfg"]["D_has_hdim"] = true; }, "'D_has_hdim'"},
      {[](json& c) { c["ssm_cfg"]["d_ssm"] = 64; }, "'d_ssm'"},
      {[](json& c) { c["ssm_cfg"]["norm_before_gate"] = true; }, "'norm_before_gate'"},
      {[](json& c) { c["ssm_cfg"]["headdim"] = 24; }, "'headdim'"},
      {[](json& c) { c["vocab_size"] = 0; }, "'vocab_size'"},
      {[](json& c) { c["pad_vocab_size_multiple"] = -8; }, "'pad_vocab_size_multiple'"},
  };
  for (const auto& [edit, key] : cases) {
    const std::string e = error_for(edit);
    EXPECT_NE(e.find(key), std::string::npos) << key << ": " << e;
    EXPECT_NE(e.find("cfg.json"), std::string::npos) << e;
  }
}

// Fields only mamba_ssm's initialization reads change nothing, whatever their values.
TEST(MambaSsmNativeConfig, InitializationFieldsDoNotChangeTheModel) {
  json c = json::parse(test::read_file(native("mamba2") + "/config.json"));
  const json want = checkpoint_config_from_text(c.dump(), "a").config.json();
  c["ssm_cfg"]["dt_min"] = 123.0;
  c["ssm_cfg"]["A_init_range"] = {5, 1};
  c["ssm_cfg"]["conv_init"] = 0.5;
  c["ssm_cfg"]["use_mem_eff_path"] = false;
  EXPECT_EQ(checkpoint_config_from_text(c.dump(), "b").config.json(), want);
  EXPECT_EQ(want["vocab_size"], 320);  // 310 padded to a multiple of 16
  EXPECT_EQ(want["num_heads"], 8);     // 2 * 64 / 16
}

// synth of a native config writes a native folder (mamba_ssm's names), which loads.
TEST(MambaSsmNativeConfig, SynthOfANativeConfigWritesANativeFolder) {
  const fs::path dir = test::fresh_temp_dir("native-synth");
  SynthOptions o;
  o.config_path = native("mamba-tied-bias") + "/config.json";
  o.out_dir = (dir / "m").string();
  (void)synthesize_checkpoint(o);
  const SafetensorsFile written(o.out_dir + "/model.safetensors");
  EXPECT_NE(written.find("backbone.embedding.weight"), nullptr);
  EXPECT_EQ(written.find("backbone.embeddings.weight"), nullptr);
  const auto model = load_model(o.out_dir);
  EXPECT_EQ(model->info().vocab, 320);
  EXPECT_EQ(model->weights().total_params(), load_model(oracle("mamba-tied-bias"))->weights().total_params());
}

}  // namespace
}  // namespace kllens
