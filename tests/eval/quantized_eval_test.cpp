// evaluate_quantized and WeightSwap on demo-mamba (2 windows of 64 tokens): a plan evaluated here
// must equal fake-quantizing exactly its components by hand, bit for bit; a bf16 "plan" on bf16
// weights changes nothing; the weights come back untouched.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "eval/perplexity.h"
#include "eval/quantized_eval.h"
#include "eval/text.h"
#include "models/model.h"
#include "quant/quantize.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

class QuantizedEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string folder = test::repo_path("data/models/demo-mamba");
    model_ = load_model(folder).release();
    const std::string text = select_articles(
        read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44);
    windows_ = new std::vector<std::vector<int32_t>>(
        make_windows(Tokenizer::load(folder + "/tokenizer.json").encode(text), 64, 2));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete windows_;
  }
  static std::map<std::string, std::vector<float>> snapshot() {
    std::map<std::string, std::vector<float>> m;
    for (const auto& p : model_->weights().all()) m[p->name] = p->value;
    return m;
  }
  static Model* model_;
  static std::vector<std::vector<int32_t>>* windows_;
};
Model* QuantizedEval::model_ = nullptr;
std::vector<std::vector<int32_t>>* QuantizedEval::windows_ = nullptr;

TEST_F(QuantizedEval, PlanEqualsFakeQuantizingByHand) {
  ASSERT_EQ(windows_->size(), 2u);
  const SchemeAssignment plan = {
      {"backbone.embeddings.weight", QuantScheme::parse("int8:g32")},
      {"backbone.layers.0.mixer.in_proj.weight", QuantScheme::parse("int4:g32")},
      {"backbone.layers.2.mixer.out_proj.weight", QuantScheme::parse("q4_0")},
      {"backbone.layers.3.mixer.x_proj.weight", QuantScheme::parse("int3:g0:asym")},
      {"backbone.layers.1.mixer.dt_proj.weight", QuantScheme::parse("bf16")},  // keep: no change
  };
  const auto before = snapshot();
  const double fp_ppl = perplexity(*model_, *windows_, false).ppl;
  const QuantEvalResult r = evaluate_quantized(*model_, plan, *windows_, false);
  EXPECT_EQ(snapshot(), before) << "weights restored bit for bit";
  EXPECT_EQ(r.ppl_fp, fp_ppl);
  EXPECT_EQ(r.changed.size(), 4u);
  EXPECT_EQ(r.windows, 2);
  EXPECT_EQ(r.tokens, 2 * 63);
  EXPECT_EQ(r.logits.positions, 2 * 64);

  // By hand: quantize exactly those components, run the plain perplexity protocol.
  for (const auto& [name, scheme] : plan) {
    Param& p = model_->weights().get(name);
    fake_quantize(scheme, p.data(), p.rows(), p.cols());
  }
  const double hand = perplexity(*model_, *windows_, false).ppl;
  for (const auto& [name, values] : before) model_->weights().get(name).value = values;
  EXPECT_EQ(r.ppl, hand) << "bit for bit";
  EXPECT_NE(r.ppl, r.ppl_fp);
  EXPECT_GT(r.logits.kl_forward.mean, 0.0);
  EXPECT_LE(r.logits.kl_median, r.logits.kl_p90);
  EXPECT_LE(r.logits.kl_p90, r.logits.kl_p99);
  EXPECT_LE(r.logits.kl_p99, r.logits.kl_max);
  EXPECT_GT(r.logits.top1.mean, 0.5);

  // Size: the GGUF file's tensor data. demo-mamba is written in llama.cpp's layout: tensors that
  // are not components and conv1d are F32, components at their scheme, the others in the
  // checkpoint's bf16.
  // intB is sized as kllens packs it (it has no ggml type).
  ASSERT_TRUE(model_->info().llama_cpp_layout);
  int64_t want = 0;
  for (const auto& p : model_->weights().all()) {
    auto it = plan.find(p->name);
    const QuantScheme file_scheme = it == plan.end() ? QuantScheme::parse("bf16") : it->second;
    want += !p->is_component() || p->role == Role::kConv1d
                ? 4 * p->numel()
                : file_scheme.storage_bytes(p->rows(), p->cols());
  }
  EXPECT_EQ(r.bytes, want);
  EXPECT_EQ(r.params, model_->weights().total_params());
  EXPECT_DOUBLE_EQ(r.bits_per_weight, 8.0 * static_cast<double>(want) / static_cast<double>(r.params));
  // int4:g32:s16 of a 1024 x 256 matrix: 4.5 bits per weight.
  EXPECT_EQ(QuantScheme::parse("int4:g32").storage_bytes(1024, 256), 1024 * 256 * 9 / 16);
}

TEST_F(QuantizedEval, Bf16EverywhereOnBf16WeightsIsExact) {
  std::vector<std::string> unsupported;
  const auto a = uniform_assignment(*model_, QuantScheme::parse("bf16"), true, &unsupported);
  EXPECT_TRUE(unsupported.empty());
  EXPECT_EQ(a.size(), model_->weights().components().size());
  const QuantEvalResult r = evaluate_quantized(*model_, a, *windows_, false);
  EXPECT_TRUE(r.changed.empty());
  EXPECT_EQ(r.logits.kl_forward.mean, 0.0);
  EXPECT_EQ(r.logits.kl_max, 0.0);
  EXPECT_EQ(r.logits.top1.mean, 1.0);
  EXPECT_EQ(r.ppl, r.ppl_fp);
  EXPECT_EQ(r.ppl, perplexity(*model_, *windows_, false).ppl);
  int64_t want = 0;  // bf16 components, conv1d and the other tensors F32 (llama.cpp's layout)
  for (const auto& p : model_->weights().all())
    want += (p->is_component() && p->role != Role::kConv1d ? 2 : 4) * p->numel();
  EXPECT_EQ(r.bytes, want);
  EXPECT_GT(r.bits_per_weight, 16.0);
}

TEST_F(QuantizedEval, UniformSkipsConv1dAndStoresUnusualRowsAsTheFileDoes) {
  std::vector<std::string> unsupported;
  const auto q4 = uniform_assignment(*model_, QuantScheme::parse("q4_0"), false, &unsupported);
  std::vector<std::string> want_unsupported;
  size_t want_size = 0;
  for (const Param* p : model_->weights().components()) {
    if (p->role == Role::kConv1d) continue;
    if (p->cols() % 32 != 0) want_unsupported.push_back(p->name);
    ++want_size;
    EXPECT_TRUE(q4.count(p->name)) << p->name;
  }
  // Rows of 16 cannot hold q4_0 blocks: they stay in the assignment and are stored (and applied,
  // and sized) as f16, as the GGUF file holds them; the list names them.
  EXPECT_EQ(unsupported, want_unsupported);
  EXPECT_EQ(unsupported.size(), 4u) << "dt_proj rows hold 16";
  EXPECT_EQ(q4.size(), want_size);
  EXPECT_EQ(assignment_bytes(*model_, {{want_unsupported[0], QuantScheme::parse("q4_0")}}),
            assignment_bytes(*model_, {{want_unsupported[0], QuantScheme::parse("f16")}}));
  unsupported.clear();
  const auto all = uniform_assignment(*model_, QuantScheme::parse("int4:g32"), true, &unsupported);
  EXPECT_EQ(all.size(), model_->weights().components().size()) << "int4:g32 stores any row";
  EXPECT_TRUE(unsupported.empty());
}

TEST_F(QuantizedEval, ValidationErrors) {
  auto expect_error = [&](const SchemeAssignment& a, const std::string& text) {
    try {
      validate_assignment(*model_, a);
      FAIL() << "expected an error mentioning " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  expect_error({{"backbone.layers.9.mixer.in_proj.weight", QuantScheme::parse("int4")}}, "does not have");
  expect_error({{"backbone.layers.0.norm.weight", QuantScheme::parse("int4")}}, "not a quantizable");
  const auto before = snapshot();
  EXPECT_THROW(evaluate_quantized(*model_, {{"nope.weight", QuantScheme::parse("int4")}}, *windows_, false), Error);
  EXPECT_EQ(snapshot(), before);
}

TEST_F(QuantizedEval, WeightSwapAppliesExactlyTheAssignment) {
  const auto before = snapshot();
  const std::string a = "backbone.layers.0.mixer.in_proj.weight", b = "backbone.layers.1.mixer.out_proj.weight";
  auto fq = [&](const std::string& name, const char* scheme) {
    std::vector<float> v = before.at(name);
    const Param& p = model_->weights().get(name);
    fake_quantize(QuantScheme::parse(scheme), v.data(), p.rows(), p.cols());
    return v;
  };
  {
    WeightSwap swap(*model_);
    swap.apply({{a, QuantScheme::parse("int4:g32")}, {b, QuantScheme::parse("int8:g32")}});
    EXPECT_EQ(model_->weights().get(a).value, fq(a, "int4:g32"));
    EXPECT_EQ(model_->weights().get(b).value, fq(b, "int8:g32"));
    swap.show_original(true);
    EXPECT_EQ(snapshot(), before);
    swap.show_original(false);
    // b dropped, a at another scheme: both recomputed from the originals, not re-quantized.
    swap.apply({{a, QuantScheme::parse("int2:g16")}});
    EXPECT_EQ(model_->weights().get(a).value, fq(a, "int2:g16"));
    EXPECT_EQ(model_->weights().get(b).value, before.at(b));
    EXPECT_EQ(swap.changed(), std::vector<std::string>{a});
  }
  EXPECT_EQ(snapshot(), before) << "the destructor restores";
}

}  // namespace
}  // namespace kllens
