// plan/llama_mix against llama.cpp's own output: data/fixtures/llamacpp/demo-mamba*.Q4_K_M.imatrix.gguf
// were written by `llama-quantize --imatrix IMATRIX F32.gguf OUT Q4_K_M` from kllens' F32 export
// of data/models/demo-mamba and demo-mamba2. The rules, applied to the demo models' tensor tables
// (plan/llama_mix_model.h: GGUF names and shapes as kllens' export writes them), must give every
// tensor of those files its type, in the files' order (llama-quantize writes tensors in the order
// it walks them).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "models/model.h"
#include "plan/llama_mix.h"
#include "plan/llama_mix_model.h"
#include "test_util.h"

namespace kllens {
namespace {

void expect_matches_llama_quantize(const std::string& model_dir, const std::string& fixture) {
  const auto model = load_model(test::repo_path(model_dir));
  const LlamaMixInput in = llama_mix_input(*model);
  EXPECT_TRUE(in.facts.llama_cpp_layout);
  EXPECT_TRUE(in.facts.tied_embeddings);
  EXPECT_EQ(in.facts.n_layer, 4);
  EXPECT_EQ(in.facts.n_gqa, 0);
  EXPECT_EQ(in.facts.n_expert, 0);
  const LlamaMixResult r = llama_mix(in.tensors, in.facts, {"Q4_K_M", /*imatrix=*/true});
  const gguf::File file(test::repo_path(fixture));
  EXPECT_EQ(file.get_as<uint32_t>("general.file_type"), 15u);  // LLAMA_FTYPE_MOSTLY_Q4_K_M

  ASSERT_EQ(r.tensors.size(), file.tensors().size()) << fixture;
  int quantized = 0, fallbacks = 0;
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    const LlamaMixDecision& d = r.tensors[i];
    const gguf::TensorInfo& t = file.tensors()[i];
    EXPECT_EQ(d.gguf_name, t.name) << "walk order differs at " << i;
    const gguf::TensorInfo* ft = file.find_tensor(d.gguf_name);
    ASSERT_NE(ft, nullptr) << d.gguf_name;
    EXPECT_EQ(d.type, std::string(gguf::type_name(ft->type)))
        << fixture << ": " << d.gguf_name << " (" << d.reason << ")";
    if (d.quantized) {
      EXPECT_EQ(d.cols, ft->ne[0]) << d.gguf_name;
    }
    quantized += d.quantized;
    fallbacks += d.fallback;
  }
  EXPECT_GT(quantized, 0);
  if (model->info().arch == "mamba") {
    EXPECT_EQ(fallbacks, model->info().n_layers);  // ssm_dt: ne0 = dt_rank 16
  }
}

TEST(LlamaMixFixture, DemoMambaQ4KMWithImatrix) {
  expect_matches_llama_quantize("data/models/demo-mamba",
                                "data/fixtures/llamacpp/demo-mamba.Q4_K_M.imatrix.gguf");
}

TEST(LlamaMixFixture, DemoMamba2Q4KMWithImatrix) {
  expect_matches_llama_quantize("data/models/demo-mamba2",
                                "data/fixtures/llamacpp/demo-mamba2.Q4_K_M.imatrix.gguf");
}

}  // namespace
}  // namespace kllens
