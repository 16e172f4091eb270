// ggml's K-quants (Q2_K..Q6_K) against ggml's own output: the golden file
// data/fixtures/ggml-quants was written by ggml_quantize_chunk and type_traits.to_float at
// llama.cpp 3f545becc. For every format, with and without an importance vector, on every case of
// the file, our bytes are ggml's bytes and our dequantization of ggml's bytes is ggml's, bit for
// bit. Plus hand-checked blocks: all-zero super-blocks (bytes from
// ../shared/docs/llamacpp-formats-and-hybrids.md §1.5), single elements of each layout, and the
// scale-search helpers on inputs small enough to work out on paper.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/safetensors.h"
#include "quant/ggml_quants.h"
#include "quant/ggml_search.h"
#include "ggml_golden.h"
#include "test_util.h"

namespace kllens::ggml {
namespace {

struct Format {
  const char* name;
  int block_bytes;
  void (*quantize)(const float*, void*, int64_t, const float*);
  void (*dequantize)(const void*, float*, int64_t);
};

const Format kFormats[] = {
    {"q2_K", sizeof(BlockQ2_K), quantize_row_q2_K, dequantize_row_q2_K},
    {"q3_K", sizeof(BlockQ3_K), quantize_row_q3_K, dequantize_row_q3_K},
    {"q4_K", sizeof(BlockQ4_K), quantize_row_q4_K, dequantize_row_q4_K},
    {"q5_K", sizeof(BlockQ5_K), quantize_row_q5_K, dequantize_row_q5_K},
    {"q6_K", sizeof(BlockQ6_K), quantize_row_q6_K, dequantize_row_q6_K},
};

const auto& kCases = test::kGoldenCases;
const SafetensorsFile& golden() { return test::ggml_golden(); }
uint32_t bits(float v) { return test::float_bits(v); }

struct Param {
  int format;  // index into kFormats
  const char* golden_case;
  bool imatrix;
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << kFormats[p.format].name << " " << p.golden_case << (p.imatrix ? " imatrix" : " plain");
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(kFormats[info.param.format].name) + "_" + info.param.golden_case +
         (info.param.imatrix ? "_imatrix" : "_plain");
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (int f = 0; f < static_cast<int>(std::size(kFormats)); ++f)
    for (const char* c : kCases)
      for (bool im : {false, true}) out.push_back({f, c, im});
  return out;
}

class KQuantGolden : public ::testing::TestWithParam<Param> {
 protected:
  const Format& fmt() const { return kFormats[GetParam().format]; }
  std::string tensor(const std::string& what) const {
    return std::string(GetParam().golden_case) + "." + fmt().name +
           (GetParam().imatrix ? ".imatrix." : ".") + what;
  }
};

// Quantizes each row of the case's input and compares the bytes with ggml's, block by block,
// so a failure names the first differing super-block.
TEST_P(KQuantGolden, BytesMatchGgml) {
  const std::string c = GetParam().golden_case;
  const TensorView& input = golden().get(c + ".input");
  ASSERT_EQ(input.shape.size(), 2u);
  const int64_t rows = input.shape[0], cols = input.shape[1];
  ASSERT_EQ(cols % kQK_K, 0);
  const std::vector<float> x = input.to_f32();
  std::vector<float> imatrix;
  if (GetParam().imatrix) {
    imatrix = golden().get(c + ".imatrix").to_f32();
    ASSERT_EQ(static_cast<int64_t>(imatrix.size()), cols);
  }
  const TensorView& want = golden().get(tensor("q"));
  const int64_t row_bytes = cols / kQK_K * fmt().block_bytes;
  ASSERT_EQ(want.dtype, DType::kU8);
  ASSERT_EQ(want.shape, (std::vector<int64_t>{rows, row_bytes}));
  ASSERT_EQ(static_cast<int64_t>(want.nbytes), rows * row_bytes);

  std::vector<uint8_t> got(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    fmt().quantize(x.data() + r * cols, got.data() + r * row_bytes, cols,
                   GetParam().imatrix ? imatrix.data() : nullptr);
  }
  const auto* ref = reinterpret_cast<const uint8_t*>(want.data);
  int64_t bad_blocks = 0;
  for (int64_t b = 0; b < rows * cols / kQK_K; ++b) {
    const int64_t off = b * fmt().block_bytes;
    if (std::memcmp(got.data() + off, ref + off, static_cast<size_t>(fmt().block_bytes)) == 0)
      continue;
    if (bad_blocks++ == 0) {
      int64_t i = 0;
      while (got[off + i] == ref[off + i]) ++i;
      ADD_FAILURE() << tensor("q") << ": super-block " << b << " (row " << b / (cols / kQK_K)
                    << ") differs first at byte " << i << ": got " << int(got[off + i])
                    << ", ggml " << int(ref[off + i]);
    }
  }
  EXPECT_EQ(bad_blocks, 0) << "of " << rows * cols / kQK_K << " super-blocks";
}

// Dequantizes ggml's bytes and compares with ggml's floats bitwise.
TEST_P(KQuantGolden, DequantMatchesGgml) {
  const TensorView& q = golden().get(tensor("q"));
  const std::vector<float> want = golden().get(tensor("dequant")).to_f32();
  ASSERT_EQ(q.shape.size(), 2u);
  const int64_t rows = q.shape[0];
  const int64_t row_bytes = q.shape[1];
  ASSERT_EQ(row_bytes % fmt().block_bytes, 0);
  const int64_t cols = row_bytes / fmt().block_bytes * kQK_K;
  ASSERT_EQ(static_cast<int64_t>(want.size()), rows * cols);

  std::vector<float> got(want.size());
  const auto* bytes = reinterpret_cast<const uint8_t*>(q.data);
  for (int64_t r = 0; r < rows; ++r) {
    fmt().dequantize(bytes + r * row_bytes, got.data() + r * cols, cols);
  }
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (bits(got[i]) == bits(want[i])) continue;
    if (bad++ == 0) {
      ADD_FAILURE() << tensor("dequant") << ": element " << i << ": got " << got[i]
                    << ", ggml " << want[i];
    }
  }
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(AllFormatsCases, KQuantGolden, ::testing::ValuesIn(all_params()),
                         param_name);

// --- hand-checked blocks --------------------------------------------------------------------

template <class Block>
std::vector<uint8_t> bytes_of(const Block& b) {
  std::vector<uint8_t> out(sizeof(b));
  std::memcpy(out.data(), &b, sizeof(b));
  return out;
}

// An all-zero super-block: every search returns scale 0 and codes 0, the stored scales are 0,
// and no sub-block is requantized, so every format writes all bytes 0 (Q3_K's codes 0 stand for
// q3 = -4, times scale 0); with or without importance weights. It decodes to zeros.
TEST(KQuantEdge, AllZeroBlockIsAllZeroBytes) {
  const std::vector<float> x(kQK_K, 0.0f);
  const std::vector<float> qw(kQK_K, 1.0f);
  for (const Format& f : kFormats) {
    for (const float* w : {static_cast<const float*>(nullptr), qw.data()}) {
      std::vector<uint8_t> block(static_cast<size_t>(f.block_bytes), 0xAB);
      f.quantize(x.data(), block.data(), kQK_K, w);
      EXPECT_EQ(block, std::vector<uint8_t>(block.size(), 0))
          << f.name << (w ? " imatrix" : " plain");
      std::vector<float> y(kQK_K, 1.0f);
      f.dequantize(block.data(), y.data(), kQK_K);
      for (float v : y) ASSERT_EQ(v, 0.0f) << f.name;
    }
  }
}

// Q6_K of a block with x[0] = 1 and x[16] = -1, all else 0. In sub-block 0, make_qx_quants maps
// the max 1 to code -32 (stored 0) with scale -1/32 (w = x² makes the fit exact; no trial grid
// fits strictly better); sub-block 1 mirrors it with scale +1/32; the other sub-blocks are
// all-zero (scale 0, codes 0). The block scale follows the first largest |scale|, -1/32:
// iscale = -128/(-1/32) = 4096, d = 1/4096, scales[0] = -128, scales[1] = 128 clamped to 127.
// Requantizing: x[0]/(d·-128) = -32 -> stored 0; x[16]/(d·127) = -32.25 -> -32 -> stored 0;
// the zeros of sub-blocks 0 and 1 -> 0 -> stored 32; the all-zero sub-blocks keep code 0.
TEST(KQuantEdge, Q6KTwoSpikes) {
  std::vector<float> x(kQK_K, 0.0f);
  x[0] = 1.0f;
  x[16] = -1.0f;
  BlockQ6_K b;
  quantize_row_q6_K(x.data(), &b, kQK_K, nullptr);
  EXPECT_EQ(b.d, f32_to_f16(1.0f / 4096));
  EXPECT_EQ(b.scales[0], -128);
  EXPECT_EQ(b.scales[1], 127);
  for (int s = 2; s < 16; ++s) EXPECT_EQ(b.scales[s], 0) << s;
  // Elements 0..31 are quarter 0 of half 0: low nibble of ql[l], high bits at qh[l] bits 0-1.
  // Stored 32 is low nibble 0, high bits 2; stored 0 is 0 and 0. Everything else is code 0.
  for (int l = 0; l < 128; ++l) EXPECT_EQ(b.ql[l], 0) << l;
  for (int l = 0; l < 64; ++l) {
    const int want = (l < 32 && l != 0 && l != 16) ? 2 : 0;
    EXPECT_EQ(b.qh[l], want) << l;
  }
  std::vector<float> y(kQK_K);
  dequantize_row_q6_K(&b, y.data(), kQK_K);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[16], -0.9921875f);  // (127/4096)·-32
  for (int e = 1; e < kQK_K; ++e) {
    if (e == 16) continue;
    EXPECT_EQ(y[e], 0.0f) << e;
  }
}

// Q4_K of a block with one 32-group holding the ramp 0, 1, ..., 15 repeated twice: its min is 0
// and the codes equal the values at scale 1 (an exact fit, so no trial beats it). The block's
// largest scale is 1 -> d = fp16(1/63), scale code 63, min code 0; requantizing x/(d·63)
// recovers the ramp exactly. Other groups are zero: codes 0, scale code 0.
TEST(KQuantEdge, Q4KExactRamp) {
  std::vector<float> x(kQK_K, 0.0f);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 16);
  BlockQ4_K b;
  quantize_row_q4_K(x.data(), &b, kQK_K, nullptr);
  EXPECT_EQ(b.d, f32_to_f16(1.0f / 63));
  EXPECT_EQ(b.dmin, 0);
  EXPECT_EQ(b.scales[0], 63);
  for (int i = 1; i < 12; ++i) EXPECT_EQ(b.scales[i], 0) << i;
  for (int l = 0; l < 32; ++l) EXPECT_EQ(b.qs[l], l % 16) << l;
  for (int l = 32; l < 128; ++l) EXPECT_EQ(b.qs[l], 0) << l;
}

// Layouts, one element at a time on hand-built blocks: the decoded value shows where ggml's
// dequantizer reads each element's code and scale.
TEST(KQuantEdge, LayoutsPlaceElementsAsGgml) {
  {  // Q2_K: element 200 (half 1, r = 72: byte 32 + 8, bits 4-5), sub-block 12.
    BlockQ2_K b{};
    b.d = f32_to_f16(1.0f);
    b.dmin = f32_to_f16(0.5f);
    b.scales[12] = 3 | (2 << 4);
    b.qs[40] = 2 << 4;
    std::vector<float> y(kQK_K);
    dequantize_row_q2_K(&b, y.data(), kQK_K);
    EXPECT_EQ(y[200], 3.0f * 2 - 0.5f * 2);
    EXPECT_EQ(y[199], -1.0f);  // same sub-block, code 0 (qs[39]): -dmin·2
  }
  {  // Q3_K: element 77 (hmask[13] bit 2, qs[13] bits 4-5), sub-block 4: scale code in the low
     // nibble of scales[4] and bits 2-3 of scales[8].
    BlockQ3_K b{};
    b.d = f32_to_f16(1.0f);
    b.scales[4] = 5;                // low nibble of code 4
    b.scales[8] = 2 << 2;           // high 2 bits of code 4: (5 | 32) - 32 = 5
    b.hmask[13] = 1 << 2;           // high bit set: q3 = low2 + 4 - 4 = low2
    b.qs[13] = 3 << 4;
    std::vector<float> y(kQK_K);
    dequantize_row_q3_K(&b, y.data(), kQK_K);
    EXPECT_EQ(y[77], 5.0f * 3);
    EXPECT_EQ(y[78], 5.0f * -4);  // hmask bit clear, low 0
  }
  {  // Q5_K: element 100 (chunk 1, r = 36: high nibble of qs[36], qh[4] bit 3), sub-block 3.
    BlockQ5_K b{};
    b.d = f32_to_f16(1.0f);
    b.dmin = f32_to_f16(1.0f);
    b.scales[3] = 2;  // sc3
    b.scales[7] = 1;  // m3
    b.qs[36] = 7 << 4;
    b.qh[4] = 1 << 3;
    std::vector<float> y(kQK_K);
    dequantize_row_q5_K(&b, y.data(), kQK_K);
    EXPECT_EQ(y[100], 2.0f * (7 + 16) - 1.0f);
  }
  {  // Q6_K: element 200 (half 1, quarter 2, l = 8: high nibble of ql[64 + 8], qh[32 + 8] bits
     // 4-5), sub-block 12.
    BlockQ6_K b{};
    b.d = f32_to_f16(0.25f);
    b.scales[12] = -3;
    b.ql[72] = 9 << 4;
    b.qh[40] = 2 << 4;
    std::vector<float> y(kQK_K);
    dequantize_row_q6_K(&b, y.data(), kQK_K);
    EXPECT_EQ(y[200], 0.25f * -3 * ((9 | 32) - 32));
  }
}

// --- the scale-search helpers on paper-sized inputs -----------------------------------------

TEST(GgmlSearch, BestIndexInt8ClampsAndBreaksTiesUpward) {
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, -1000.0f), 0);
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, 1000.0f), 15);
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, 0.0f), 8);    // 1 is nearer than -10
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, -4.5f), 8);   // tie between -10 and 1: higher
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, -4.6f), 7);
  EXPECT_EQ(best_index_int8(16, kValuesIQ4NL, 112.0f), 15);
}

TEST(GgmlSearch, AllZeroInputsGiveZeroScaleAndCodes) {
  const float x[16] = {};
  const float w[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  int8_t L8[16];
  uint8_t L[16], Laux[16];
  float the_min = -1;
  EXPECT_EQ(make_qx_quants(16, 8, x, L8, 1, nullptr), 0.0f);
  for (int8_t l : L8) EXPECT_EQ(l, 0);
  EXPECT_EQ(make_q3_quants(16, 4, x, L8, true), 0.0f);
  EXPECT_EQ(make_qkx2_quants(16, 3, x, w, L, &the_min, Laux, -0.5f, 0.1f, 15, true), 0.0f);
  EXPECT_EQ(the_min, 0.0f);
  EXPECT_EQ(make_qkx3_quants(16, 3, x, nullptr, L, &the_min, Laux, -0.9f, 0.05f, 36, false),
            0.0f);
  for (uint8_t l : L) EXPECT_EQ(l, 0);
  EXPECT_EQ(make_qp_quants(16, 15, x, L, w), 0.0f);
}

// Values on the grid {-4..3}·0.5 whose largest |x| is -2: iscale = -nmax/max = 2 maps it to code
// -nmax and every value onto the grid, stored x/0.5 + 4. rmse_type 0 returns 1/iscale = 0.5; the
// weighted fit (rmse_type 1) is exact, so no trial grid beats it and it returns 0.5 too.
TEST(GgmlSearch, MakeQxQuantsExactGrid) {
  const float x[8] = {-2.0f, -1.5f, -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
  int8_t L[8];
  EXPECT_EQ(make_qx_quants(8, 4, x, L, 0, nullptr), 0.5f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(L[i], i) << i;
  EXPECT_EQ(make_qx_quants(8, 4, x, L, 1, nullptr), 0.5f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(L[i], i) << i;
}

// x in [0, 3] on the grid of step 1 with an exact zero: min 0, scale 1, codes = x.
TEST(GgmlSearch, MakeQkxExactGrid) {
  const float x[8] = {0, 1, 2, 3, 3, 2, 1, 0};
  const float w[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  uint8_t L[8], Laux[8];
  float the_min = -1;
  EXPECT_EQ(make_qkx2_quants(8, 3, x, w, L, &the_min, Laux, -0.5f, 0.1f, 15, true), 1.0f);
  EXPECT_EQ(the_min, 0.0f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(L[i], x[i]) << i;
  EXPECT_EQ(make_qkx3_quants(8, 3, x, w, L, &the_min, Laux, -0.9f, 0.05f, 36, false), 1.0f);
  EXPECT_EQ(the_min, 0.0f);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(L[i], x[i]) << i;
}

}  // namespace
}  // namespace kllens::ggml
