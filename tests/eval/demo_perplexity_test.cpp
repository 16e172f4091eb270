// Held-out perplexity of the bundled demo models under the ppl protocol (eval/perplexity.h),
// against the number recorded when they were trained (data/models/<m>/training.json, computed by
// PyTorch from the same bf16 weights in float32). The bound is 0.5%: our logits agree
// with the reference to ~1e-5, which moves a perplexity of hundreds by far less than that, so
// 0.5% catches any protocol difference (windowing, tokenization, article split) and not noise.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/perplexity.h"
#include "eval/text.h"
#include "models/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

TEST(Articles, WikiTextHasSixtyTwoArticlesAndHeldOutStartsAt44) {
  const std::string text = read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw"));
  const auto starts = article_starts(text);
  ASSERT_EQ(starts.size(), 62u);
  const std::string held_out = select_articles(text, 44, 61);
  EXPECT_EQ(held_out.rfind(" = Come What ( ever ) May = \n", 0), 0u);
  EXPECT_EQ(held_out.size(), text.size() - starts[44]);
  EXPECT_THROW(select_articles(text, 44, 62), Error);
  EXPECT_THROW(select_articles(text, 5, 4), Error);
}

TEST(Windows, ConsecutiveNonOverlappingTailDropped) {
  std::vector<int32_t> ids(1030);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  const auto w = make_windows(ids, 512);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].front(), 0);
  EXPECT_EQ(w[1].front(), 512);
  EXPECT_EQ(w[1].back(), 1023);
  EXPECT_EQ(make_windows(ids, 512, 1).size(), 1u);
  EXPECT_THROW(make_windows(ids, 2000), Error);
  EXPECT_THROW(make_windows(ids, 1), Error);
}

class DemoPerplexity : public ::testing::TestWithParam<std::string> {};

TEST_P(DemoPerplexity, HeldOutPerplexityMatchesTrainingRecord) {
  const std::string folder = test::repo_path("data/models/" + GetParam());
  std::ifstream in(folder + "/training.json");
  const double expected = nlohmann::json::parse(in)["heldout_ppl_ctx512_bf16_weights_fp32_compute"];
  const std::string text = select_articles(
      read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 61);
  const auto ids = Tokenizer::load(folder + "/tokenizer.json").encode(text);
  auto model = load_model(folder);
  const auto r = perplexity(*model, make_windows(ids, 512), false);
  EXPECT_EQ(r.tokens, r.windows * 511);
  EXPECT_NEAR(r.ppl, expected, 0.005 * expected) << GetParam() << ": got " << r.ppl;
}

INSTANTIATE_TEST_SUITE_P(Models, DemoPerplexity,
                         ::testing::Values("demo-mamba", "demo-mamba2", "demo-hymba",
                                           "demo-falcon_h1"),
                         test::ModelParamName());

}  // namespace
}  // namespace kllens
