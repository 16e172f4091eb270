// export/gguf_import: a GGUF written by export_gguf loads back into a Model whose quantized and
// 16-bit matrices stay packed (run by quant/qmatmul.h), and whose perplexity matches the
// fake-quantized evaluation of the same assignment within 0.5% (the requirement).
#include "export/gguf_import.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "eval/perplexity.h"
#include "eval/quantized_eval.h"
#include "eval/text.h"
#include "export/gguf_export.h"
#include "io/gguf.h"
#include "models/model.h"
#include "quant/formats.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kllens {
namespace {

namespace fs = std::filesystem;

class GgufImportTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::fresh_temp_dir("gguf-import"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string out(const std::string& name) { return (dir_ / name).string(); }
  fs::path dir_;
};

std::vector<std::vector<int32_t>> text_windows(const std::string& model_folder) {
  const std::string text =
      select_articles(read_text_file(test::repo_path("data/wikitext-2-raw/wiki.test.raw")), 44, 44);
  const auto ids = Tokenizer::load(model_folder + "/tokenizer.json").encode(text);
  return make_windows(ids, 128, 3);
}

// Fixed pseudo-random ids for models without a tokenizer.
std::vector<std::vector<int32_t>> id_windows(int64_t vocab) {
  std::vector<std::vector<int32_t>> w(2, std::vector<int32_t>(48));
  uint32_t x = 12345;
  for (auto& win : w)
    for (auto& id : win) {
      x = x * 1664525u + 1013904223u;
      id = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab));
    }
  return w;
}

void expect_same_ppl(Model& model, const SchemeAssignment& a, const std::string& path,
                     const std::vector<std::vector<int32_t>>& windows, bool llama_layout) {
  const GgufExportResult r = export_gguf(model, a, path);
  EXPECT_EQ(r.llama_cpp_layout, llama_layout);
  const QuantEvalResult fq = evaluate_quantized(model, a, windows, false);
  auto loaded = load_gguf_model(path);
  ASSERT_EQ(loaded->info().arch, model.info().arch);
  ASSERT_EQ(loaded->weights().all().size(), model.weights().all().size());
  // Every packable matrix of a block or 16-bit type is packed, and nothing else is.
  int packed = 0;
  for (const auto& p : loaded->weights().all()) {
    if (p->is_packed()) {
      ++packed;
      EXPECT_TRUE(packable_role(p->role)) << p->name;
      EXPECT_TRUE(p->value.empty()) << p->name;
    }
  }
  EXPECT_GT(packed, 0);
  EXPECT_LT(resident_weight_bytes(loaded->weights()), resident_weight_bytes(model.weights()) / 2);
  const PerplexityResult g = perplexity(*loaded, windows, false);
  EXPECT_EQ(g.tokens, fq.tokens);
  EXPECT_NEAR(g.ppl / fq.ppl, 1.0, 0.005) << "gguf " << g.ppl << " vs fake-quant " << fq.ppl;
}

TEST_F(GgufImportTest, DemoMambaPlanPerplexityMatchesFakeQuant) {
  const std::string folder = test::repo_path("data/models/demo-mamba");
  auto model = load_model(folder);
  SchemeAssignment a;
  for (const Param* p : model->weights().components()) {
    if (p->role == Role::kConv1d) continue;
    // Even layers: int4:g32 (repacked as q4_0; dt_proj's 16-element rows fall back to f16).
    const QuantScheme s = QuantScheme::parse(p->layer % 2 == 0 ? "int4:g32" : "q8_0");
    if (s.supports(p->cols())) a[p->name] = s;
  }
  a["backbone.embeddings.weight"] = QuantScheme::parse("q4_0");
  expect_same_ppl(*model, a, out("m.gguf"), text_windows(folder), true);
}

TEST_F(GgufImportTest, DemoMamba2PlanPerplexityMatchesFakeQuant) {
  const std::string folder = test::repo_path("data/models/demo-mamba2");
  auto model = load_model(folder);
  SchemeAssignment a;
  for (const Param* p : model->weights().components())
    if (p->role != Role::kConv1d) a[p->name] = QuantScheme::parse("int8:g64");
  expect_same_ppl(*model, a, out("m2.gguf"), text_windows(folder), true);
}

TEST_F(GgufImportTest, HymbaKllensLayoutPerplexityMatchesFakeQuant) {
  auto model = load_model(test::repo_path("data/fixtures/oracles/hymba"));
  SchemeAssignment a;
  for (const Param* p : model->weights().components())
    if (p->role != Role::kConv1d && QuantScheme::parse("q8_0").supports(p->shape.back()))
      a[p->name] = QuantScheme::parse("q8_0");
  expect_same_ppl(*model, a, out("h.gguf"), id_windows(model->info().vocab), false);
}

// Decode runs the int8-activation kernels (prefill runs dequantized panels): teacher-forced
// token-by-token perplexity of the packed model stays within 0.5% of its prefill perplexity, and
// within 0.5% of the fake-quantized one.
TEST_F(GgufImportTest, PackedDecodeMatchesPrefill) {
  const std::string folder = test::repo_path("data/models/demo-mamba");
  auto model = load_model(folder);
  for (const char* scheme : {"q4_0", "q8_0", "int4:g32", "q4_K", "q6_K", "iq4_xs", "q5_1"}) {
    SCOPED_TRACE(scheme);
    SchemeAssignment a;
    for (const Param* p : model->weights().components())
      if (p->role != Role::kConv1d) a[p->name] = stored_scheme(QuantScheme::parse(scheme), p->cols());
    const std::string path = out(std::string("d-") + scheme + ".gguf");
    export_gguf(*model, a, path);
    auto loaded = load_gguf_model(path);
    const auto windows = text_windows(folder);
    const PerplexityResult prefill = perplexity(*loaded, windows, false);
    double nll = 0;
    int64_t n = 0;
    const int64_t V = loaded->info().vocab;
    for (const auto& w : windows) {
      const auto logits = loaded->forward_decode(w);
      for (size_t t = 0; t + 1 < w.size(); ++t, ++n) nll += token_nll(logits.data() + t * V, V, w[t + 1]);
    }
    const double decode_ppl = std::exp(nll / static_cast<double>(n));
    EXPECT_EQ(n, prefill.tokens);
    EXPECT_NEAR(decode_ppl / prefill.ppl, 1.0, 0.005) << decode_ppl << " vs " << prefill.ppl;
    const QuantEvalResult fq = evaluate_quantized(*model, a, windows, false);
    EXPECT_NEAR(decode_ppl / fq.ppl, 1.0, 0.005) << decode_ppl << " vs fake-quant " << fq.ppl;
  }
}

TEST_F(GgufImportTest, RefusesFilesWithoutTheKllensConfig) {
  gguf::Writer w;
  w.set("general.architecture", std::string("mamba"));
  w.add_tensor("token_embd.weight", {4, 2}, gguf::GgmlType::kF32, std::vector<uint8_t>(32));
  w.write(out("foreign.gguf"));
  EXPECT_THROW(load_gguf_model(out("foreign.gguf")), Error);
}

}  // namespace
}  // namespace kllens
