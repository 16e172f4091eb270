// A packed GGUF file runs on the integer kernels (quant/qmatmul.h) and gives the perplexity of the
// same plan fake-quantized in float32, within 0.5%, on every demo family.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "eval/perplexity.h"
#include "eval/quantized_eval.h"
#include "eval/text.h"
#include "export/gguf_export.h"
#include "export/gguf_import.h"
#include "models/model.h"
#include "quant/formats.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

// A mixed K-quant plan (every ggml format, cycled over the components in order) written to a GGUF
// file and loaded runs on the integer kernels; its held-out perplexity is within 0.5% of the
// same plan fake-quantized in float32 (the acceptance bound: what int8 activation
// rounding may cost), on every demo family.
class PackedFile : public ::testing::TestWithParam<std::string> {};

TEST_P(PackedFile, MixedKQuantPlanPerplexityIsWithinHalfAPercentOfFakeQuantization) {
  const std::string folder = test::repo_path("data/models/" + GetParam());
  auto reference = load_model(folder);
  const char* formats[] = {"q4_K", "q6_K", "q3_K", "q5_K", "iq4_xs", "q2_K",
                           "q5_0", "q4_1", "iq4_nl", "q8_0", "q5_1", "q4_0"};
  SchemeAssignment a;
  int i = 0;
  for (const Param* p : reference->weights().components())
    a[p->name] = stored_scheme(QuantScheme::parse(formats[i++ % 12]), p->cols());
  const auto path = test::fresh_temp_dir("packed-file") / "plan.gguf";
  export_gguf(*reference, a, path.string());
  auto packed = load_gguf_model(path.string());
  int64_t block_packed = 0;
  for (const auto& p : packed->weights().all()) block_packed += p->is_packed() && p->packed->scheme.is_block();
  EXPECT_GE(block_packed, 6) << "the file's K-quant and legacy matrices run packed";
  EXPECT_TRUE(packed->info().dequantized_at_load.empty() ||
              std::all_of(packed->info().dequantized_at_load.begin(), packed->info().dequantized_at_load.end(),
                          [&](const auto& kv) { return !packable_role(packed->weights().get(kv.first).role); }));

  const std::string text = select_articles(
      read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 61);
  const auto ids = Tokenizer::load(folder + "/tokenizer.json").encode(text);
  const auto windows = make_windows(ids, 256, 3);
  WeightSwap swap(*reference);
  swap.apply(a);
  const double fake = perplexity(*reference, windows, false).ppl;
  const double got = perplexity(*packed, windows, false).ppl;
  std::cout << GetParam() << ": perplexity packed " << got << ", fake-quantized " << fake << "\n";
  EXPECT_NEAR(got / fake, 1.0, 0.005) << GetParam() << ": packed " << got << ", fake-quantized " << fake;
}

INSTANTIATE_TEST_SUITE_P(Demo, PackedFile,
                         ::testing::Values("demo-mamba", "demo-mamba2", "demo-hymba", "demo-falcon_h1"),
                         test::ModelParamName());

}  // namespace
}  // namespace kllens
