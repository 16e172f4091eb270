// ggml's legacy and IQ4 block formats against ggml's own output (the golden file
// data/fixtures/ggml-quants, written by ggml_quantize_chunk and type_traits.to_float at
// llama.cpp 3f545becc): for q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl and iq4_xs, with and without an
// importance vector, on every case of the file, our bytes are ggml's bytes and our dequantization
// of ggml's bytes is ggml's, bit for bit. Plus the all-zero blocks worked by hand from
// ../shared/docs/llamacpp-formats-and-hybrids.md §1.5 and single-element cases of each layout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "quant/ggml_quants.h"
#include "ggml_golden.h"
#include "test_util.h"

namespace kllens::ggml {
namespace {

struct Format {
  const char* name;
  int block_elems;
  int block_bytes;
  void (*quantize)(const float*, void*, int64_t, const float*);
  void (*dequantize)(const void*, float*, int64_t);
};

const Format kFormats[] = {
    {"q4_0", 32, sizeof(BlockQ4_0), quantize_row_q4_0, dequantize_row_q4_0},
    {"q4_1", 32, sizeof(BlockQ4_1), quantize_row_q4_1, dequantize_row_q4_1},
    {"q5_0", 32, sizeof(BlockQ5_0), quantize_row_q5_0, dequantize_row_q5_0},
    {"q5_1", 32, sizeof(BlockQ5_1), quantize_row_q5_1, dequantize_row_q5_1},
    {"q8_0", 32, sizeof(BlockQ8_0), quantize_row_q8_0, dequantize_row_q8_0},
    {"iq4_nl", 32, sizeof(BlockIQ4_NL), quantize_row_iq4_nl, dequantize_row_iq4_nl},
    {"iq4_xs", kQK_K, sizeof(BlockIQ4_XS), quantize_row_iq4_xs, dequantize_row_iq4_xs},
};

const auto& kCases = test::kGoldenCases;
const SafetensorsFile& golden() { return test::ggml_golden(); }
uint32_t bits(float v) { return test::float_bits(v); }

struct Param {
  int format;  // index into kFormats
  const char* name;
  bool imatrix;
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << kFormats[p.format].name << "/" << p.name << (p.imatrix ? "/imatrix" : "");
}

class GgmlGolden : public ::testing::TestWithParam<Param> {};

// Quantizes every row of the case's input and compares the bytes with ggml's, block by block.
TEST_P(GgmlGolden, BytesMatchGgml) {
  const Format& fmt = kFormats[GetParam().format];
  const std::string c = GetParam().name;
  const bool with_imatrix = GetParam().imatrix;
  const TensorView& input = golden().get(c + ".input");
  ASSERT_EQ(input.shape.size(), 2u);
  const int64_t rows = input.shape[0], cols = input.shape[1];
  ASSERT_EQ(cols % fmt.block_elems, 0);
  const std::vector<float> x = input.to_f32();
  std::vector<float> imatrix;
  if (with_imatrix) {
    imatrix = golden().get(c + ".imatrix").to_f32();
    ASSERT_EQ(static_cast<int64_t>(imatrix.size()), cols);
  }
  const std::string qname = c + "." + fmt.name + (with_imatrix ? ".imatrix.q" : ".q");
  const TensorView& want = golden().get(qname);
  const int64_t row_bytes = cols / fmt.block_elems * fmt.block_bytes;
  ASSERT_EQ(want.dtype, DType::kU8);
  ASSERT_EQ(want.shape, (std::vector<int64_t>{rows, row_bytes}));
  ASSERT_EQ(static_cast<int64_t>(want.nbytes), rows * row_bytes);
  const auto* want_bytes = reinterpret_cast<const uint8_t*>(want.data);

  std::vector<uint8_t> got(static_cast<size_t>(row_bytes));
  int64_t bad_blocks = 0;
  for (int64_t r = 0; r < rows; ++r) {
    fmt.quantize(x.data() + r * cols, got.data(), cols, with_imatrix ? imatrix.data() : nullptr);
    for (int64_t b = 0; b < row_bytes / fmt.block_bytes; ++b) {
      const uint8_t* g = got.data() + b * fmt.block_bytes;
      const uint8_t* w = want_bytes + r * row_bytes + b * fmt.block_bytes;
      if (std::memcmp(g, w, static_cast<size_t>(fmt.block_bytes)) == 0) continue;
      if (++bad_blocks <= 5) {
        int k = 0;
        while (g[k] == w[k]) ++k;
        ADD_FAILURE() << qname << ": row " << r << " block " << b << " differs first at byte " << k
                      << " (ours " << int(g[k]) << ", ggml " << int(w[k]) << ")";
      }
    }
  }
  EXPECT_EQ(bad_blocks, 0) << qname << ": blocks that differ from ggml's";
}

// Dequantizes ggml's bytes and compares with ggml's floats bit for bit.
TEST_P(GgmlGolden, DequantMatchesGgml) {
  const Format& fmt = kFormats[GetParam().format];
  const std::string c = GetParam().name;
  const std::string stem = c + "." + fmt.name + (GetParam().imatrix ? ".imatrix" : "");
  const TensorView& q = golden().get(stem + ".q");
  const TensorView& want_view = golden().get(stem + ".dequant");
  ASSERT_EQ(want_view.shape.size(), 2u);
  const int64_t rows = want_view.shape[0], cols = want_view.shape[1];
  const int64_t row_bytes = cols / fmt.block_elems * fmt.block_bytes;
  ASSERT_EQ(static_cast<int64_t>(q.nbytes), rows * row_bytes);
  const std::vector<float> want = want_view.to_f32();

  std::vector<float> got(static_cast<size_t>(cols));
  int64_t bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    fmt.dequantize(reinterpret_cast<const uint8_t*>(q.data) + r * row_bytes, got.data(), cols);
    for (int64_t j = 0; j < cols; ++j) {
      const float w = want[static_cast<size_t>(r * cols + j)];
      if (bits(got[static_cast<size_t>(j)]) == bits(w)) continue;
      if (++bad <= 5)
        ADD_FAILURE() << stem << ".dequant: [" << r << ", " << j << "] ours " << got[j] << ", ggml " << w;
    }
  }
  EXPECT_EQ(bad, 0) << stem << ".dequant: elements that differ from ggml's";
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (int f = 0; f < static_cast<int>(std::size(kFormats)); ++f)
    for (const char* c : kCases)
      for (bool im : {false, true}) out.push_back({f, c, im});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllFormats, GgmlGolden, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(kFormats[info.param.format].name) + "_" +
                                  info.param.name + (info.param.imatrix ? "_imatrix" : "");
                         });

// --- hand-checked blocks -----------------------------------------------------------------------

// Quantizes one row of n elements and returns its bytes.
std::vector<uint8_t> quantize_bytes(const Format& fmt, const std::vector<float>& x, const float* qw) {
  std::vector<uint8_t> out(x.size() / fmt.block_elems * fmt.block_bytes, 0xEE);
  fmt.quantize(x.data(), out.data(), static_cast<int64_t>(x.size()), qw);
  return out;
}

const Format& format(const char* name) {
  for (const Format& f : kFormats)
    if (std::string(name) == f.name) return f;
  throw std::runtime_error(name);
}

// An all-zero block (§1.5 derived edge cases). Q4_0's d is max/-8 with max = +0, i.e. -0.0, so
// it is stored as 0x8000; the codes are trunc(0 + 8.5) = 8 in both nibbles.
TEST(GgmlZeroBlocks, Q4_0) {
  const std::vector<float> zero(32, 0.0f);
  const auto q = quantize_bytes(format("q4_0"), zero, nullptr);
  BlockQ4_0 b;
  std::memcpy(&b, q.data(), sizeof(b));
  EXPECT_EQ(b.d, 0x8000);
  for (uint8_t v : b.qs) EXPECT_EQ(v, 0x88);
  std::vector<float> y(32, 1.0f);
  dequantize_row_q4_0(q.data(), y.data(), 32);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// With an importance vector, make_qx_quants leaves the codes of a block below kGroupMaxEps at 0
// (not at the offset 8) and returns scale 0: the block is d = +0, qs = 0x00.
TEST(GgmlZeroBlocks, Q4_0WithImatrix) {
  const std::vector<float> zero(32, 0.0f), qw(32, 1.0f);
  const auto q = quantize_bytes(format("q4_0"), zero, qw.data());
  EXPECT_EQ(q, std::vector<uint8_t>(18, 0x00));
}

// Q8_0 and Q4_1: everything zero (d = 0/127, and q4_1's min = max = 0 with id = 0).
TEST(GgmlZeroBlocks, Q8_0AndQ4_1) {
  const std::vector<float> zero(32, 0.0f);
  EXPECT_EQ(quantize_bytes(format("q8_0"), zero, nullptr), std::vector<uint8_t>(34, 0x00));
  EXPECT_EQ(quantize_bytes(format("q4_1"), zero, nullptr), std::vector<uint8_t>(20, 0x00));
}

// IQ4_NL: scale 0, and each code is the level nearest 0, index 8 (value 1): d = 0, qs = 0x88.
TEST(GgmlZeroBlocks, IQ4_NL) {
  const std::vector<float> zero(64, 0.0f), qw(64, 1.0f);
  for (const float* w : {static_cast<const float*>(nullptr), qw.data()}) {
    const auto q = quantize_bytes(format("iq4_nl"), zero, w);
    for (int b = 0; b < 2; ++b) {
      BlockIQ4_NL blk;
      std::memcpy(&blk, q.data() + b * sizeof(blk), sizeof(blk));
      EXPECT_EQ(blk.d, 0x0000);
      for (uint8_t v : blk.qs) EXPECT_EQ(v, 0x88);
    }
  }
}

// IQ4_XS: d = -max_scale/32 = -0.0 (0x8000), every sub-scale code l + 32 = 32: low nibbles 0,
// high bits 0b10 per sub-block (0xAAAA), codes 8.
TEST(GgmlZeroBlocks, IQ4_XS) {
  const std::vector<float> zero(kQK_K, 0.0f), qw(kQK_K, 1.0f);
  for (const float* w : {static_cast<const float*>(nullptr), qw.data()}) {
    const auto q = quantize_bytes(format("iq4_xs"), zero, w);
    BlockIQ4_XS blk;
    std::memcpy(&blk, q.data(), sizeof(blk));
    EXPECT_EQ(blk.d, 0x8000);
    EXPECT_EQ(blk.scales_h, 0xAAAA);
    for (uint8_t v : blk.scales_l) EXPECT_EQ(v, 0x00);
    for (uint8_t v : blk.qs) EXPECT_EQ(v, 0x88);
    std::vector<float> y(kQK_K, 1.0f);
    dequantize_row_iq4_xs(q.data(), y.data(), kQK_K);
    for (float v : y) EXPECT_EQ(v, 0.0f);
  }
}

// One non-zero element per block pins each layout's element-to-bit mapping (§1.3): x[17] = -1
// (the block max, so the most negative code), the rest 0.
TEST(GgmlLayouts, SingleElement) {
  std::vector<float> x(32, 0.0f);
  x[17] = -1.0f;
  {  // q4_0: d = -1/-8 = 0.125, x[17] -> 0, the others trunc(8.5) = 8; element 17 = byte 1 high.
    const auto q = quantize_bytes(format("q4_0"), x, nullptr);
    BlockQ4_0 b;
    std::memcpy(&b, q.data(), sizeof(b));
    EXPECT_EQ(f16_to_f32(b.d), 0.125f);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j == 1 ? 0x08 : 0x88) << j;
  }
  {  // q5_0: d = 1/16, x[17] -> 0, the others 16 (bit 4 set): qh = all bits but 17.
    const auto q = quantize_bytes(format("q5_0"), x, nullptr);
    BlockQ5_0 b;
    std::memcpy(&b, q.data(), sizeof(b));
    EXPECT_EQ(f16_to_f32(b.d), 0.0625f);
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    EXPECT_EQ(qh, ~(1u << 17));
    for (uint8_t v : b.qs) EXPECT_EQ(v, 0x00);
    std::vector<float> y(32);
    dequantize_row_q5_0(q.data(), y.data(), 32);
    EXPECT_EQ(y, x);
  }
  {  // q5_1: min = -1, d = 1/31, m = -1; x[17] -> 0, the others trunc(31 + 0.5) = 31.
    const auto q = quantize_bytes(format("q5_1"), x, nullptr);
    BlockQ5_1 b;
    std::memcpy(&b, q.data(), sizeof(b));
    EXPECT_EQ(f16_to_f32(b.m), -1.0f);
    EXPECT_EQ(b.d, f32_to_f16(1.0f / 31));
    uint32_t qh;
    std::memcpy(&qh, b.qh, 4);
    EXPECT_EQ(qh, ~(1u << 17));
    for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], j == 1 ? 0x0F : 0xFF) << j;
  }
  {  // iq4_nl: each 0 maps to index 8 (level 1, nearest 0); the max is reproduced by level 0
     // (-127) or 15 (113) with a scale of the matching sign, whichever fit the search keeps.
    const auto q = quantize_bytes(format("iq4_nl"), x, nullptr);
    BlockIQ4_NL b;
    std::memcpy(&b, q.data(), sizeof(b));
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(b.qs[j] & 0x0F, 8) << j;
      if (j != 1) {
        EXPECT_EQ(b.qs[j] >> 4, 8) << j;
      }
    }
    EXPECT_TRUE((b.qs[1] >> 4) == 0 || (b.qs[1] >> 4) == 15);
    std::vector<float> y(32);
    dequantize_row_iq4_nl(q.data(), y.data(), 32);
    EXPECT_LT(y[17], 0.0f);
    EXPECT_NEAR(y[17], -1.0f, 1e-3f);
  }
}

}  // namespace
}  // namespace kllens::ggml
