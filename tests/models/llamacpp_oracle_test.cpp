// kllens' logits against llama.cpp's on the same weights (data/fixtures/llamacpp-oracles: llama.cpp
// ran kllens' F32 GGUF of each oracle checkpoint, in llama.cpp's own layout for llama, jamba and
// falcon-h1). Tolerance 1e-4 absolute, as for the Hugging Face oracles: both sides compute in
// float32 (llama.cpp with an F32 KV cache), so only summation order differs (~1e-6 relative on
// logits of magnitude ~1-10 through three layers).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "models/model.h"
#include "test_util.h"

namespace kllens {
namespace {

using test::max_abs_diff;

// The checkpoint llama.cpp ran: an oracle folder, or for "falcon_h1-variant" the falcon_h1 oracle's
// weights under falcon_h1-variant.config.json (the gate before the norm, the one order llama.cpp
// computes, and multipliers that are not 1, which the export folds into the weights); for
// "nemotron_h" and "granitehybrid", which have no Hugging Face oracle here, their random *-tiny
// checkpoints ("granitehybrid-rope": granitehybrid-tiny's weights with RoPE on;
// "granitehybrid-moe": routed experts beside the shared MLP).
std::string checkpoint_folder(const std::string& name) {
  if (name == "nemotron_h" || name == "granitehybrid" || name == "granitehybrid-moe")
    return test::repo_path("data/fixtures/" + name + "-tiny");
  if (name == "granitehybrid-rope")
    return test::weights_with_config(
        test::repo_path("data/fixtures/granitehybrid-tiny"),
        test::read_file(test::repo_path("data/fixtures/llamacpp-oracles/granitehybrid-rope.config.json")));
  if (name != "falcon_h1-variant") return test::repo_path("data/fixtures/oracles/" + name);
  return test::weights_with_config(
      test::repo_path("data/fixtures/oracles/falcon_h1"),
      test::read_file(test::repo_path("data/fixtures/llamacpp-oracles/falcon_h1-variant.config.json")));
}

class LlamacppOracle : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamacppOracle, PrefillAndDecodeMatchLlamaCpp) {
  auto model = load_model(checkpoint_folder(GetParam()));
  SafetensorsFile ref(test::repo_path("data/fixtures/llamacpp-oracles/" + GetParam() + ".safetensors"));
  const auto& ids_view = ref.get("input_ids");
  const int64_t B = ids_view.shape[0], T = ids_view.shape[1], V = model->info().vocab;
  const auto ids64 = read_int_tensor(ids_view);
  const auto logits = ref.get("logits").to_f32(), decode = ref.get("decode_logits").to_f32();
  ASSERT_EQ(static_cast<int64_t>(logits.size()), B * T * V);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t> seq(ids64.begin() + b * T, ids64.begin() + (b + 1) * T);
    EXPECT_LE(max_abs_diff(model->forward(seq), logits.data() + b * T * V), 1e-4) << "row " << b;
    EXPECT_LE(max_abs_diff(model->forward_decode(seq), decode.data() + b * T * V), 1e-4)
        << "row " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LlamacppOracle,
                         ::testing::Values("mamba", "mamba2", "mamba2-g1", "llama", "jamba",
                                           "falcon_h1-variant", "nemotron_h", "granitehybrid",
                                           "granitehybrid-rope", "granitehybrid-moe"),
                         test::ModelParamName());

// With n_groups = 2 the full-width norm (transformers' CPU path) is not what llama.cpp computes:
// this is why the per-group norm is the default.
TEST(LlamacppOracleMamba2, FullWidthNormDisagreesWithLlamaCpp) {
  auto model = load_model(test::repo_path("data/fixtures/oracles/mamba2"),
                          LoadOptions{Mamba2GatedNorm::kFullWidth});
  SafetensorsFile ref(test::repo_path("data/fixtures/llamacpp-oracles/mamba2.safetensors"));
  const auto ids64 = read_int_tensor(ref.get("input_ids"));
  const int64_t T = ref.get("input_ids").shape[1];
  const std::vector<int32_t> seq(ids64.begin(), ids64.begin() + T);
  EXPECT_GT(max_abs_diff(model->forward(seq), ref.get("logits").to_f32().data()), 1e-2);
}

}  // namespace
}  // namespace kllens
