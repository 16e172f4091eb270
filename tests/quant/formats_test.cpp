// The traits table of the ggml block formats: each row agrees with ggml's type table (io/gguf.h,
// which the container validates files with), every format round-trips through the scheme
// spelling, sizes and bits per weight follow from the table, quantize/dequantize/fake_quantize
// go through the row functions (bit-identical to the golden file via those tests), and the shape
// fallbacks are llama-quantize's.
#include "quant/formats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "quant/quantize.h"
#include "test_util.h"

namespace kllens {
namespace {

TEST(BlockFormats, TableAgreesWithGgmlTypeTable) {
  ASSERT_EQ(block_formats().size(), 12u);
  for (const auto& t : block_formats()) {
    const gguf::TypeTraits g = gguf::type_traits(static_cast<gguf::GgmlType>(t.ggml_type));
    EXPECT_EQ(g.name, t.name);
    EXPECT_EQ(g.block_size, t.block_elems) << t.name;
    EXPECT_EQ(static_cast<int>(g.type_size), t.block_bytes) << t.name;
    EXPECT_EQ(block_traits(t.format), &t);
    EXPECT_EQ(block_traits_by_ggml_type(t.ggml_type), &t);
    EXPECT_EQ(block_traits_by_name(t.name), &t);
  }
  EXPECT_EQ(block_traits_by_name("Q4_K"), block_traits(QuantFormat::kQ4_K));
  EXPECT_EQ(block_traits_by_name("q8_K"), nullptr);  // activations only, never a weight format
  EXPECT_EQ(block_traits(QuantFormat::kInt), nullptr);
  EXPECT_EQ(block_traits(QuantFormat::kBF16), nullptr);
}

TEST(BlockFormats, SchemeSpellingSizesAndBits) {
  for (const auto& t : block_formats()) {
    const QuantScheme s = QuantScheme::parse(t.name);
    EXPECT_TRUE(s.is_block()) << t.name;
    EXPECT_FALSE(s.is_int() || s.is_keep()) << t.name;
    EXPECT_EQ(s.to_string(), t.name);
    EXPECT_EQ(QuantScheme::parse(s.to_string()), s);
    EXPECT_EQ(s.effective_group(768), t.block_elems);
    const int64_t cols = 3 * 256;  // divisible by both block lengths
    EXPECT_TRUE(s.supports(cols));
    EXPECT_EQ(s.storage_bytes(5, cols), 5 * cols / t.block_elems * t.block_bytes) << t.name;
    EXPECT_DOUBLE_EQ(s.bits_per_weight(cols), 8.0 * t.block_bytes / t.block_elems) << t.name;
    EXPECT_EQ(s.supports(96), t.block_elems == 32) << t.name;
    EXPECT_THROW(s.storage_bytes(1, 96 + (t.block_elems == 32 ? 16 : 0)), Error) << t.name;
  }
  EXPECT_DOUBLE_EQ(QuantScheme::parse("q4_K").bits_per_weight(256), 4.5);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("q6_K").bits_per_weight(256), 6.5625);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("q2_K").bits_per_weight(256), 2.625);
  EXPECT_DOUBLE_EQ(QuantScheme::parse("iq4_xs").bits_per_weight(256), 4.25);
}

TEST(BlockFormats, ShapeFallbacksAreLlamaQuantizes) {
  const auto fb = [](const char* s, int64_t cols) {
    return stored_scheme(QuantScheme::parse(s), cols).to_string();
  };
  // Rows of 256k: every format holds them.
  for (const auto& t : block_formats()) EXPECT_EQ(fb(std::string(t.name).c_str(), 512), t.name);
  // Rows of 96: a multiple of 32, not of 256.
  EXPECT_EQ(fb("q4_K", 96), "q5_0");
  EXPECT_EQ(fb("q5_K", 96), "q5_1");
  EXPECT_EQ(fb("q6_K", 96), "q8_0");
  EXPECT_EQ(fb("q3_K", 96), "q4_0");
  EXPECT_EQ(fb("q2_K", 96), "q4_0");
  EXPECT_EQ(fb("iq4_xs", 96), "iq4_nl");
  // Rows of 48 (Mamba's dt_rank): nothing with blocks holds them.
  for (const char* s : {"q4_K", "q5_K", "q6_K", "q3_K", "iq4_xs"}) EXPECT_EQ(fb(s, 48), "f16") << s;
  // llama-quantize has no fallback for the 32-element formats and refuses; kllens stores f16.
  EXPECT_THROW(llama_shape_fallback(QuantScheme::parse("q8_0"), 48), Error);
  EXPECT_EQ(fb("q8_0", 48), "f16");
  EXPECT_EQ(fb("iq4_nl", 48), "f16");
  // Other schemes are never replaced.
  EXPECT_EQ(fb("int4:g32", 48), "int4:g32:sym:s16");
  EXPECT_EQ(fb("bf16", 48), "bf16");
}

// quantize()/dequantize()/fake_quantize() on a real matrix go through the table's row functions:
// the same bytes as the golden file (whose per-format tests check the row functions), the same
// values either way, and the importance vector reaches the quantizer.
TEST(BlockFormats, QuantizeApiMatchesGoldenBytes) {
  SafetensorsFile f(test::repo_path("data/fixtures/ggml-quants/ggml-quants.safetensors"));
  const TensorView& in = f.get("gauss.input");
  const std::vector<float> w = in.to_f32();
  const std::vector<float> imat = f.get("gauss.imatrix").to_f32();
  const int64_t rows = in.shape[0], cols = in.shape[1];
  for (const auto& t : block_formats()) {
    for (bool with_imatrix : {false, true}) {
      const std::string key = "gauss." + std::string(t.name) + (with_imatrix ? ".imatrix" : "");
      const TensorView& golden = f.get(key + ".q");
      const float* qw = with_imatrix ? imat.data() : nullptr;
      const QTensor q = quantize(QuantScheme::parse(t.name), w.data(), rows, cols, qw);
      ASSERT_EQ(q.data.size(), golden.nbytes) << key;
      EXPECT_EQ(std::memcmp(q.data.data(), golden.data, golden.nbytes), 0) << key;
      std::vector<float> deq(w.size()), fake = w;
      dequantize(q, deq.data());
      fake_quantize(QuantScheme::parse(t.name), fake.data(), rows, cols, qw);
      const std::vector<float> want = f.get(key + ".dequant").to_f32();
      EXPECT_EQ(std::memcmp(deq.data(), want.data(), 4 * want.size()), 0) << key;
      EXPECT_EQ(std::memcmp(fake.data(), want.data(), 4 * want.size()), 0) << key;
    }
  }
}

TEST(BlockFormats, NonFiniteWeightsAndOverflowingScalesAreErrors) {
  std::vector<float> w(256, 0.01f);
  w[100] = std::nanf("");
  for (const auto& t : block_formats())
    EXPECT_THROW(quantize(QuantScheme::parse(t.name), w.data(), 1, 256), Error) << t.name;
  std::vector<float> big(256, 1e30f);
  for (const auto& t : block_formats())
    EXPECT_THROW(fake_quantize(QuantScheme::parse(t.name), big.data(), 1, 256), Error) << t.name;
}

}  // namespace
}  // namespace kllens
