// Quantizer properties (style guide §3.9.2): fake == dequantize(quantize) bit for bit, the
// per-element error bound, idempotence, zero groups, tail groups, ties to even, packing, and
// llama.cpp's q8_0/q4_0 on hand-worked blocks.
#include "quant/quantize.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace kllens {
namespace {

constexpr double kU = 0x1p-24;  // unit roundoff of float32 (round to nearest)

// Gaussian weights with a few 6-sigma outliers and some exact zeros, like real checkpoints.
std::vector<float> random_weights(int64_t n, uint64_t seed, float sigma = 0.02f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& x : w) {
    const int k = pick(rng);
    x = k == 0 ? 0.0f : k == 1 ? 6 * sigma * (normal(rng) > 0 ? 1.0f : -1.0f) : normal(rng);
  }
  return w;
}

std::vector<QuantScheme> all_schemes() {
  std::vector<QuantScheme> out;
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {0, 8, 16, 32})
      for (bool sym : {true, false})
        for (bool f16 : {true, false}) out.push_back(QuantScheme::make_int(bits, group, sym, f16));
  for (const char* s : {"q8_0", "q4_0", "bf16", "f16", "f32"}) out.push_back(QuantScheme::parse(s));
  return out;
}

struct Shape {
  int64_t rows, cols;
};

std::vector<Shape> shapes_for(const QuantScheme& s) {
  if (s.is_block()) return {{1, 32}, {3, 64}, {5, 96}, {2, 160}};
  return {{1, 1}, {3, 7}, {5, 33}, {7, 48}, {4, 64}, {2, 257}, {3, 96}};
}

std::vector<float> dequantized(const QTensor& q) {
  std::vector<float> out(static_cast<size_t>(q.rows * q.cols));
  dequantize(q, out.data());
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

TEST(Quantize, FakeQuantizeIsBitIdenticalToDequantizeOfQuantize) {
  uint64_t seed = 1;
  for (const QuantScheme& s : all_schemes()) {
    for (const Shape& shape : shapes_for(s)) {
      std::vector<float> w = random_weights(shape.rows * shape.cols, ++seed);
      const std::vector<float> expected = dequantized(quantize(s, w.data(), shape.rows, shape.cols));
      fake_quantize(s, w.data(), shape.rows, shape.cols);
      EXPECT_TRUE(same_bits(w, expected))
          << s.to_string() << " [" << shape.rows << ", " << shape.cols << "] seed " << seed;
    }
  }
}

TEST(Quantize, LargeMatrixTakesTheParallelPathsIdentically) {
  // 96 x 2048 = 196,608 elements: above the OpenMP threshold and the parallel packing threshold.
  const int64_t rows = 96, cols = 2048;
  for (const char* text : {"int4:g32", "int3:g128:asym:s32", "int8:g0", "q4_0", "q8_0", "bf16"}) {
    const QuantScheme s = QuantScheme::parse(text);
    std::vector<float> w = random_weights(rows * cols, 77);
    const QTensor q = quantize(s, w.data(), rows, cols);
    EXPECT_EQ(q.storage_bytes(), s.storage_bytes(rows, cols)) << text;
    const std::vector<float> expected = dequantized(q);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r : {int64_t{0}, int64_t{37}, rows - 1}) {
      dequantize_row(q, r, row.data());
      EXPECT_EQ(std::memcmp(row.data(), expected.data() + r * cols, cols * 4), 0) << text << " " << r;
    }
    fake_quantize(s, w.data(), rows, cols);
    EXPECT_TRUE(same_bits(w, expected)) << text;
  }
}

TEST(Quantize, StorageBytesEqualsThePackedBuffers) {
  uint64_t seed = 100;
  for (const QuantScheme& s : all_schemes()) {
    for (const Shape& shape : shapes_for(s)) {
      const std::vector<float> w = random_weights(shape.rows * shape.cols, ++seed);
      const QTensor q = quantize(s, w.data(), shape.rows, shape.cols);
      EXPECT_EQ(q.storage_bytes(), s.storage_bytes(shape.rows, shape.cols)) << s.to_string();
      if (s.is_int()) {
        const int64_t n = shape.rows * shape.cols;
        EXPECT_EQ(static_cast<int64_t>(q.data.size()), (n * s.bits + 7) / 8) << s.to_string();
        const int64_t groups = shape.rows * s.groups_per_row(shape.cols);
        EXPECT_EQ(static_cast<int64_t>(q.scales_f16.size()), s.scale_f16 ? groups : 0);
        EXPECT_EQ(static_cast<int64_t>(q.scales_f32.size()), s.scale_f16 ? 0 : groups);
        EXPECT_EQ(static_cast<int64_t>(q.zero_points.size()), s.symmetric ? 0 : groups);
      }
    }
  }
}

// An independent scalar transcription of docs/quantization.md for intB (float32 throughout),
// compared code for code and bit for bit with quantize().
struct RefGroup {
  float scale;
  int zero;
};

RefGroup ref_group(const QuantScheme& s, const float* x, int64_t n) {
  float scale;
  float lo = 0, hi = 0, amax = 0;
  for (int64_t i = 0; i < n; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (s.symmetric) scale = amax / static_cast<float>((1 << (s.bits - 1)) - 1);
  else scale = (hi - lo) / static_cast<float>((1 << s.bits) - 1);
  if (scale == 0) scale = 1;
  if (s.scale_f16) scale = f16_to_f32(f32_to_f16(scale));
  int zero = 0;
  if (!s.symmetric)
    zero = std::clamp(static_cast<int>(std::nearbyint(-lo / scale)), 0, (1 << s.bits) - 1);
  return {scale, zero};
}

TEST(Quantize, IntCodesMatchAScalarTranscriptionOfTheSpec) {
  uint64_t seed = 200;
  for (const QuantScheme& s : all_schemes()) {
    if (!s.is_int()) continue;
    for (const Shape& shape : shapes_for(s)) {
      const std::vector<float> w = random_weights(shape.rows * shape.cols, ++seed);
      const QTensor q = quantize(s, w.data(), shape.rows, shape.cols);
      const std::vector<float> dq = dequantized(q);
      const int64_t group = s.effective_group(shape.cols);
      const int lo = s.symmetric ? -(1 << (s.bits - 1)) : 0;
      const int hi = s.symmetric ? (1 << (s.bits - 1)) - 1 : (1 << s.bits) - 1;
      int mismatches = 0;
      for (int64_t r = 0; r < shape.rows; ++r)
        for (int64_t g = 0; g < shape.cols / group; ++g) {
          const float* x = w.data() + r * shape.cols + g * group;
          const RefGroup ref = ref_group(s, x, group);
          mismatches += q.scale(r, g) != ref.scale;
          if (!s.symmetric) mismatches += q.zero_points[r * (shape.cols / group) + g] != ref.zero;
          for (int64_t i = 0; i < group; ++i) {
            const int code = std::clamp(
                static_cast<int>(std::nearbyint(x[i] / ref.scale)) + ref.zero, lo, hi);
            const float value = static_cast<float>(code - ref.zero) * ref.scale;
            const int64_t c = g * group + i;
            mismatches += q.code(r, c) != code;
            mismatches += std::bit_cast<uint32_t>(dq[r * shape.cols + c]) !=
                          std::bit_cast<uint32_t>(value);
          }
        }
      EXPECT_EQ(mismatches, 0) << s.to_string() << " [" << shape.rows << ", " << shape.cols << "]";
    }
  }
}

// Per-element error bound. With t = fl(w / s) and w' = fl(q * s):
//   |w - w'| <= |w - t*s| + |t - q| * s + |q*s - w'| <= u|w| + |t - q| * s + u|w'|,
// so wherever the code was not clamped (|t - q| <= 1/2) the error is at most s/2 + u(|w| + |w'|);
// we allow 2u for the O(u^2) terms. Symmetric codes are never clamped for normal float16 or
// float32 scales: max|w|/s = (2^(B-1)-1)(1 + delta) with |delta| <= 2^-11 + 2^-24, i.e. at most
// 127 * 4.9e-4 = 0.062 above the top code, so the top code's rounding still covers it.
// Asymmetric codes can clamp at the top code 2^B-1 =: L: with a = fl(w/s), b = fl(-min/s) (b is
// exactly -fl(min/s)), q = round(a) + round(b) > L only when a + b exceeds L by the scale's
// rounding, a + b - L <= L(delta + 2u), and then the error is (a + round(b) - L) s <=
// (1/2 + L(delta + 2u)) s. At the bottom, q < 0 cannot happen since a >= fl(min/s) = -b.
TEST(Quantize, ErrorIsAtMostHalfAScalePerElement) {
  uint64_t seed = 300;
  for (const QuantScheme& s : all_schemes()) {
    if (!s.is_int()) continue;
    const double delta = (s.scale_f16 ? 0x1p-11 : 0.0) + 2 * kU;
    const int levels = s.symmetric ? (1 << (s.bits - 1)) - 1 : (1 << s.bits) - 1;
    for (const Shape& shape : shapes_for(s)) {
      const std::vector<float> w = random_weights(shape.rows * shape.cols, ++seed);
      const QTensor q = quantize(s, w.data(), shape.rows, shape.cols);
      const std::vector<float> dq = dequantized(q);
      const int64_t group = q.group_size();
      for (int64_t r = 0; r < shape.rows; ++r)
        for (int64_t c = 0; c < shape.cols; ++c) {
          const double x = w[r * shape.cols + c], y = dq[r * shape.cols + c];
          const double scale = q.scale(r, c / group);
          const int code = q.code(r, c);
          if (s.symmetric) {
            EXPECT_GE(code, -levels) << s.to_string() << " symmetric codes are not clamped";
          }
          const bool clamped_top = !s.symmetric && code == levels;
          const double half = clamped_top ? 0.5 + levels * (delta + 2 * kU) : 0.5;
          const double bound = half * scale + 2 * kU * (std::fabs(x) + std::fabs(y));
          ASSERT_LE(std::fabs(x - y), bound)
              << s.to_string() << " [" << shape.rows << ", " << shape.cols << "] at (" << r
              << ", " << c << ") w " << x << " w' " << y << " scale " << scale << " code "
              << code;
        }
    }
  }
}

TEST(Quantize, SymmetricCodesMayUseTheMostNegativeLevel) {
  // The code range of intB sym is [-2^(B-1), 2^(B-1)-1]. With a float16 *subnormal* scale the
  // stored scale can be far below max|w|/127: here max|w| = 127 * 2.4 * 2^-24, so the raw scale
  // 2.4 * 2^-24 rounds to the float16 subnormal 2 * 2^-24 and max|w| / s = 152.4. Then -max|w|
  // clamps to the most negative code -128 (allowed) and +max|w| to 127.
  const QuantScheme s = QuantScheme::parse("int8:g8");
  const float a = 127.0f * 2.4f * 0x1p-24f;
  std::vector<float> w = {a, -a, 0, 0, 0, 0, 0, 0};
  const QTensor q = quantize(s, w.data(), 1, 8);
  EXPECT_EQ(q.scale(0, 0), 0x1p-23f);
  EXPECT_EQ(q.code(0, 0), 127);
  EXPECT_EQ(q.code(0, 1), -128);
  const std::vector<float> dq = dequantized(q);
  EXPECT_EQ(dq[0], 127 * 0x1p-23f);
  EXPECT_EQ(dq[1], -128 * 0x1p-23f);
  // The packed form holds every code of the range, the most negative included.
  QTensor manual = q;
  for (int code = -128; code <= 127; code += 17) {
    manual.set_code(0, 3, code);
    EXPECT_EQ(manual.code(0, 3), code);
    EXPECT_EQ(dequantized(manual)[3], static_cast<float>(code) * 0x1p-23f);
  }
}

TEST(Quantize, Float16ScaleUnderflowUsesTheSmallestSubnormal) {
  // max|w| = 1e-9 at int8: raw scale 1e-9 / 127 = 7.9e-12 rounds to float16 0; the stored scale
  // is then 2^-24, every |w| / 2^-24 < 0.02 rounds to code 0 and decodes to 0 (error <= 2^-25).
  std::vector<float> w = {1e-9f, -1e-9f, 5e-10f, 0, 0, 0, 0, 0};
  const QTensor q = quantize(QuantScheme::parse("int8:g8"), w.data(), 1, 8);
  EXPECT_EQ(q.scales_f16[0], 0x0001);
  EXPECT_EQ(q.scale(0, 0), 0x1p-24f);
  for (float v : dequantized(q)) EXPECT_EQ(v, 0.0f);
}

TEST(Quantize, PackedCodesRoundTripForEveryWidth) {
  std::mt19937_64 rng(5);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false}) {
      const QuantScheme s = QuantScheme::make_int(bits, 0, sym);
      const int64_t rows = 3, cols = 13;  // 39 codes: rows straddle byte boundaries
      std::vector<float> zeros(rows * cols, 0.0f);
      QTensor q = quantize(s, zeros.data(), rows, cols);
      const int lo = sym ? -(1 << (bits - 1)) : 0;
      const int hi = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
      std::uniform_int_distribution<int> code(lo, hi);
      std::vector<int> expected(rows * cols);
      for (int64_t e = 0; e < rows * cols; ++e) {
        expected[e] = e < 2 ? (e == 0 ? lo : hi) : code(rng);
        q.set_code(e / cols, e % cols, expected[e]);
      }
      for (int64_t e = 0; e < rows * cols; ++e)
        ASSERT_EQ(q.code(e / cols, e % cols), expected[e]) << s.to_string() << " element " << e;
      // Decoding (the fast 8-code path and the per-code path) agrees: scale 1, zero point 0.
      const std::vector<float> dq = dequantized(q);
      for (int64_t e = 0; e < rows * cols; ++e)
        ASSERT_EQ(dq[e], static_cast<float>(expected[e])) << s.to_string() << " element " << e;
    }
}

TEST(Quantize, Int4NibbleOrderIsLowNibbleFirst) {
  const QuantScheme s = QuantScheme::parse("int4:g8:sym:s32");
  // Scale = 7/7 = 1: codes are the values. Stored unsigned = code + 8.
  std::vector<float> w = {1, -2, 3, 7, 0, 0, -7, 5};
  const QTensor q = quantize(s, w.data(), 1, 8);
  ASSERT_EQ(q.data.size(), 4u);
  EXPECT_EQ(q.data[0], (8 + 1) | ((8 - 2) << 4));
  EXPECT_EQ(q.data[1], (8 + 3) | ((8 + 7) << 4));
  EXPECT_EQ(q.data[2], 8 | (8 << 4));
  EXPECT_EQ(q.data[3], (8 - 7) | ((8 + 5) << 4));
}

TEST(Quantize, IdempotentWhereItHolds) {
  // Symmetric: the largest |w| gets the top code +-(2^(B-1)-1) (see the bound test), so
  // dq(q(x)) has max|w'| = (2^(B-1)-1) s. With s16, s has 11 significant bits and
  // (2^(B-1)-1) * s is exact in float32, so the new scale is s again and every code repeats.
  // With s32 the product may round, giving a scale within one ulp of s and the same codes.
  // q8_0 / q4_0: the extreme element decodes to +-127 d16 / -8 d16 exactly, so d repeats and
  // the codes repeat (x * id = q (1 + O(u)) rounds back to q). Asymmetric schemes are not
  // idempotent in general (round(a) + round(b) may be 2^B - 2 at the top, shrinking the range).
  uint64_t seed = 400;
  for (const QuantScheme& s : all_schemes()) {
    if (s.is_int() && !s.symmetric) continue;
    for (const Shape& shape : shapes_for(s)) {
      const std::vector<float> w = random_weights(shape.rows * shape.cols, ++seed);
      const QTensor q1 = quantize(s, w.data(), shape.rows, shape.cols);
      const std::vector<float> dq1 = dequantized(q1);
      const QTensor q2 = quantize(s, dq1.data(), shape.rows, shape.cols);
      EXPECT_EQ(q1.data, q2.data) << s.to_string() << " [" << shape.rows << ", " << shape.cols << "]";
      EXPECT_EQ(q1.scales_f16, q2.scales_f16) << s.to_string();
      ASSERT_EQ(q1.scales_f32.size(), q2.scales_f32.size());
      for (size_t i = 0; i < q1.scales_f32.size(); ++i)
        EXPECT_LE(std::fabs(q1.scales_f32[i] - q2.scales_f32[i]),
                  std::nextafter(q1.scales_f32[i], INFINITY) - q1.scales_f32[i])
            << s.to_string();
    }
  }
}

TEST(Quantize, ZeroGroupsStayZero) {
  for (const QuantScheme& s : all_schemes()) {
    const int64_t cols = 64;  // two groups of 32 (g0: one group of 64 -> the whole row is zero)
    std::vector<float> w = random_weights(2 * cols, 9);
    std::fill(w.begin(), w.begin() + 32, 0.0f);          // row 0, first group / block
    std::fill(w.begin() + cols, w.begin() + 2 * cols, 0.0f);  // row 1 entirely
    const QTensor q = quantize(s, w.data(), 2, cols);
    std::vector<float> dq = dequantized(q);
    for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(dq[i], 0.0f) << s.to_string() << " " << i;
    for (int64_t i = cols; i < 2 * cols; ++i) EXPECT_EQ(dq[i], 0.0f) << s.to_string() << " " << i;
    for (float v : dq) EXPECT_FALSE(std::isnan(v)) << s.to_string();
    if (s.is_int()) {
      EXPECT_EQ(q.scale(1, 0), 1.0f) << "a zero scale becomes 1";
    }
  }
}

TEST(Quantize, AllEqualGroupsAreExactWhenTheScaleIsRepresentable) {
  // A group of one repeated value v decodes to code * s with code = +-L (L = 2^(B-1)-1) and
  // s = |v| / L rounded to the scale type, so it is exact only when |v| / L is representable
  // there (in general float16(|v| / L) * L != |v|). Take v = -L * 2^-5: s = 2^-5 exactly.
  for (const char* text : {"int4:g8", "int8:g8:s32", "int2:g8", "int5:g8:asym"}) {
    const QuantScheme s = QuantScheme::parse(text);
    // asym: L = 2^B - 1 and the range [v, 0] has scale |v| / L as well.
    const int levels = s.symmetric ? (1 << (s.bits - 1)) - 1 : (1 << s.bits) - 1;
    const float v = -static_cast<float>(levels) * 0x1p-5f;
    std::vector<float> w(8, v);
    fake_quantize(s, w.data(), 1, 8);
    for (float x : w) EXPECT_EQ(x, v) << text;
  }
}

TEST(Quantize, GroupsThatDoNotDivideARowAreOneGroupPerRow) {
  for (const char* text : {"int4:g32", "int3:g16:asym:s32", "int8:g8"}) {
    const QuantScheme grouped = QuantScheme::parse(text);
    QuantScheme per_row = grouped;
    per_row.group_size = 0;
    for (int64_t cols : {7, 33, 100}) {
      const std::vector<float> w = random_weights(3 * cols, 11 + cols);
      const QTensor a = quantize(grouped, w.data(), 3, cols);
      const QTensor b = quantize(per_row, w.data(), 3, cols);
      EXPECT_EQ(a.group_size(), cols);
      EXPECT_EQ(a.groups_per_row(), 1);
      EXPECT_EQ(a.data, b.data) << text << " cols " << cols;
      EXPECT_EQ(a.scales_f16, b.scales_f16);
      EXPECT_EQ(a.scales_f32, b.scales_f32);
      EXPECT_EQ(a.zero_points, b.zero_points);
    }
  }
}

TEST(Quantize, RoundsHalfToEven) {
  // Symmetric int4: max|w| = 7 -> scale 7/7 = 1 exactly (in float16 too), so code = round(w).
  // Ties go to the even neighbour: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4, 6.5 -> 6, and the
  // negatives mirror them. (Round-half-away would give 1, 2, 3, 4, 7.)
  {
    const QuantScheme s = QuantScheme::parse("int4:g16");
    std::vector<float> w = {0.5f, 1.5f, 2.5f, 3.5f, 6.5f, -0.5f, -1.5f, -2.5f,
                            -3.5f, -6.5f, 7.0f, 4.5f, 5.5f, 0.0f, 1.0f, 2.0f};
    const int expected[] = {0, 2, 2, 4, 6, 0, -2, -2, -4, -6, 7, 4, 6, 0, 1, 2};
    const QTensor q = quantize(s, w.data(), 1, 16);
    EXPECT_EQ(q.scale(0, 0), 1.0f);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(q.code(0, i), expected[i]) << "element " << i;
  }
  // Asymmetric int4: min -1, max 14 -> scale 15/15 = 1, z = round(1/1) = 1; code = round(w) + 1:
  // 0.5 -> 0 + 1, 2.5 -> 2 + 1, -0.5 -> 0 + 1, 13.5 -> 14 + 1 = 15.
  {
    const QuantScheme s = QuantScheme::parse("int4:g8:asym");
    std::vector<float> w = {-1.0f, 14.0f, 0.5f, 2.5f, -0.5f, 13.5f, 3.5f, 0.0f};
    const int expected[] = {0, 15, 1, 3, 1, 15, 5, 1};
    const QTensor q = quantize(s, w.data(), 1, 8);
    EXPECT_EQ(q.scale(0, 0), 1.0f);
    EXPECT_EQ(q.zero_points[0], 1);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(q.code(0, i), expected[i]) << "element " << i;
  }
}

TEST(Quantize, AsymmetricRangeAlwaysContainsZero) {
  // All-positive group [10, 11]: the range is [0, 11] (not [10, 11]), scale = 11/15, z = 0.
  const QuantScheme s = QuantScheme::parse("int4:g8:asym:s32");
  std::vector<float> w = {10, 11, 10.5f, 10.25f, 10, 11, 10, 10};
  const QTensor q = quantize(s, w.data(), 1, 8);
  EXPECT_EQ(q.scale(0, 0), 11.0f / 15.0f);
  EXPECT_EQ(q.zero_points[0], 0);
  const std::vector<float> dq = dequantized(q);
  for (int i = 0; i < 8; ++i) EXPECT_LE(std::fabs(dq[i] - w[i]), 0.5f * 11.0f / 15.0f + 1e-6f);
}

// --- llama.cpp blocks, hand-worked ---------------------------------------------------------------

TEST(QuantizeQ8_0, HandWorkedBlocks) {
  // Block 1: amax = 127 -> d = 127/127 = 1, id = 1/1 = 1, q = roundf(x): half AWAY from zero
  // (2.5 -> 3, -2.5 -> -3, 0.5 -> 1), unlike the intB schemes. d = 1.0 -> float16 0x3C00.
  // Block 2: amax = 63.5 -> d = 0.5, id = 2: 0.25 -> roundf(0.5) = 1, 0.75 -> roundf(1.5) = 2,
  // -63.5 -> -127. d = 0.5 -> 0x3800.
  std::vector<float> w(64, 0.0f);
  const float b1[] = {127, -127, 2.5f, -2.5f, 0.5f, -0.5f, 1.4999f, 126.5f};
  const int c1[] = {127, -127, 3, -3, 1, -1, 1, 127};
  const float b2[] = {63.5f, -63.5f, 0.25f, 0.75f, -0.25f};
  const int c2[] = {127, -127, 1, 2, -1};
  std::copy(std::begin(b1), std::end(b1), w.begin());
  std::copy(std::begin(b2), std::end(b2), w.begin() + 32);
  const QTensor q = quantize(QuantScheme::parse("q8_0"), w.data(), 1, 64);
  ASSERT_EQ(q.data.size(), 2 * sizeof(BlockQ8_0));
  const BlockQ8_0* blocks = q.blocks_q8_0();
  EXPECT_EQ(blocks[0].d, 0x3C00);
  EXPECT_EQ(blocks[1].d, 0x3800);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(blocks[0].qs[j], c1[j]) << j;
  for (int j = 8; j < 32; ++j) EXPECT_EQ(blocks[0].qs[j], 0) << j;
  for (int j = 0; j < 5; ++j) EXPECT_EQ(blocks[1].qs[j], c2[j]) << j;
  const std::vector<float> dq = dequantized(q);
  EXPECT_EQ(dq[2], 3.0f);
  EXPECT_EQ(dq[32 + 3], 1.0f);
}

TEST(QuantizeQ8_0, CodesUseTheFloat32ScaleAndDecodingTheFloat16One) {
  // amax = 1 -> d = 1/127 = 0.00787401... (float32), id = fl(1/d) ~ 127, so x = 1 -> code 127 and
  // x = 0.5 -> roundf(63.5...) = 64. The stored d is float16(1/127): 1/127 = 2^-7 * 1.00787, whose
  // 10-bit mantissa rounds to 8/1024 -> 0x2000 | 8 = 0x2008 = 2^-7 * (1 + 8/1024) =
  // 0.00787353515625, so code 127 decodes to 127 * 0.00787353515625 = 0.99993896484375.
  std::vector<float> w(32, 0.0f);
  w[0] = 1.0f;
  w[1] = 0.5f;
  const QTensor q = quantize(QuantScheme::parse("q8_0"), w.data(), 1, 32);
  EXPECT_EQ(q.blocks_q8_0()[0].d, 0x2008);
  EXPECT_EQ(q.blocks_q8_0()[0].qs[0], 127);
  EXPECT_EQ(q.blocks_q8_0()[0].qs[1], 64);
  EXPECT_EQ(dequantized(q)[0], 0.99993896484375f);
}

TEST(QuantizeQ4_0, HandWorkedBlock) {
  // x[0] = -3 and x[2] = +3 tie for the largest |x|; the strict '<' scan keeps the first, so
  // max = -3, d = -3 / -8 = 0.375 (float16 0x3600: 1.5 * 2^-2), id = fl(1/0.375) =
  // 2.66666674613952637 (0x402AAAAB). Codes are trunc(x * id + 8.5) clipped to 15:
  //   x = -3:   -8.00000024 -> fl = -8     -> +8.5 = 0.5      -> 0   (decodes to -8 d = -3)
  //   x = +3:   +8.00000024 -> fl = 8      -> 16.5            -> 16 -> clipped 15 (7 d = 2.625)
  //   x = 0:    8.5 -> 8 (decodes to 0)
  //   x = 1:    2.6666667 + 8.5 = 11.166  -> 11 (3 d = 1.125)
  //   x = -0.3: -0.8 + 8.5 = 7.7           -> 7  (trunc, i.e. floor(v + 8.5): -0.375)
  //   x = -2.8125: x * id = -7.50000022... exactly; float32 spacing near 7.5 is 2^-21, so it
  //     rounds to -7.5, and -7.5 + 8.5 = 1 -> code 1. A fused multiply-add would keep the
  //     -2.2e-7 and give trunc(0.99999978) = 0: llama.cpp's C rounds the product first.
  // Nibbles: qs[j] = code[j] | code[j + 16] << 4; x[16] = 1 (code 11), x[17] = -0.3 (code 7).
  std::vector<float> w(32, 0.0f);
  w[0] = -3.0f;
  w[1] = -2.8125f;
  w[2] = 3.0f;
  w[3] = 1.0f;
  w[4] = -0.3f;
  w[16] = 1.0f;
  w[17] = -0.3f;
  const QTensor q = quantize(QuantScheme::parse("q4_0"), w.data(), 1, 32);
  ASSERT_EQ(q.data.size(), sizeof(BlockQ4_0));
  const BlockQ4_0& b = q.blocks_q4_0()[0];
  EXPECT_EQ(b.d, 0x3600);
  EXPECT_EQ(b.qs[0], 0 | (11 << 4));
  EXPECT_EQ(b.qs[1], 1 | (7 << 4));
  EXPECT_EQ(b.qs[2], 15 | (8 << 4));
  EXPECT_EQ(b.qs[3], 11 | (8 << 4));
  EXPECT_EQ(b.qs[4], 7 | (8 << 4));
  for (int j = 5; j < 16; ++j) EXPECT_EQ(b.qs[j], 8 | (8 << 4)) << j;
  const std::vector<float> dq = dequantized(q);
  EXPECT_EQ(dq[0], -3.0f);
  EXPECT_EQ(dq[1], -7 * 0.375f);
  EXPECT_EQ(dq[2], 2.625f);
  EXPECT_EQ(dq[3], 1.125f);
  EXPECT_EQ(dq[4], -0.375f);
  EXPECT_EQ(dq[5], 0.0f);
}

TEST(QuantizeQ4_0, ZeroBlockHasNegativeZeroScale) {
  // max = 0 -> d = 0.0f / -8 = -0.0f (float16 0x8000), id = 0 (d is falsy), every code 8,
  // decoding (8 - 8) * -0 = -0 == 0.
  std::vector<float> w(32, 0.0f);
  const QTensor q = quantize(QuantScheme::parse("q4_0"), w.data(), 1, 32);
  EXPECT_EQ(q.blocks_q4_0()[0].d, 0x8000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(q.blocks_q4_0()[0].qs[j], 0x88);
  for (float v : dequantized(q)) EXPECT_EQ(v, 0.0f);
}

// --- float keep schemes and errors ---------------------------------------------------------------

TEST(Quantize, KeepSchemesRoundToTheirType) {
  std::vector<float> w = random_weights(3 * 7, 21, 1.0f);
  for (const char* text : {"bf16", "f16", "f32"}) {
    std::vector<float> x = w;
    fake_quantize(QuantScheme::parse(text), x.data(), 3, 7);
    for (size_t i = 0; i < w.size(); ++i) {
      const float expected = std::string(text) == "bf16"  ? bf16_to_f32(f32_to_bf16(w[i]))
                             : std::string(text) == "f16" ? f16_to_f32(f32_to_f16(w[i]))
                                                          : w[i];
      EXPECT_EQ(std::bit_cast<uint32_t>(x[i]), std::bit_cast<uint32_t>(expected)) << text;
    }
  }
}

TEST(Quantize, BadWeightsThrow) {
  std::vector<float> w(64, 0.5f);
  w[40] = NAN;
  for (const char* text : {"int4:g32", "int4:g32:asym", "q8_0", "q4_0", "bf16", "f16"}) {
    std::vector<float> x = w;
    EXPECT_THROW(quantize(QuantScheme::parse(text), x.data(), 2, 32), Error) << text;
    EXPECT_THROW(fake_quantize(QuantScheme::parse(text), x.data(), 2, 32), Error) << text;
  }
  // A float16 scale overflows for max|w| = 1e7 at int8 (1e7 / 127 > 65504); float32 holds it.
  std::vector<float> big(32, 1e7f);
  EXPECT_THROW(quantize(QuantScheme::parse("int8:g32"), big.data(), 1, 32), Error);
  EXPECT_NO_THROW(quantize(QuantScheme::parse("int8:g32:s32"), big.data(), 1, 32));
  EXPECT_THROW(quantize(QuantScheme::parse("q8_0"), big.data(), 1, 32), Error);
  EXPECT_THROW(quantize(QuantScheme::parse("f16"), big.data(), 1, 32), Error);
  // Block formats need whole blocks.
  std::vector<float> odd(33, 0.1f);
  EXPECT_THROW(quantize(QuantScheme::parse("q8_0"), odd.data(), 1, 33), Error);
  EXPECT_THROW(fake_quantize(QuantScheme::parse("q4_0"), odd.data(), 1, 33), Error);
}

// --- quality bands (style guide §3.9.3) ----------------------------------------------------------

double sqnr_db(const std::vector<float>& x, const std::vector<float>& y) {
  double signal = 0, noise = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    signal += double(x[i]) * x[i];
    noise += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  }
  return 10 * std::log10(signal / noise);
}

TEST(Quantize, SqnrOnGaussianInputsIsInTheReferenceBands) {
  // Bands from docs/style-by-example.md §3.9 (65,536 N(0,1) samples, an independent Python
  // implementation with banker's rounding and float32 scales), stated there as +-0.2 dB. Our
  // samples come from another RNG stream; the sampling spread of an SQNR estimate over 65,536
  // samples in groups of 32 is a few hundredths of a dB (2048 roughly independent group noise
  // powers), and float16 scale rounding (relative 2^-11) moves the noise by < 0.01 dB, so the
  // stated +-0.2 dB is kept as is.
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(65536);
  for (auto& v : x) v = normal(rng);
  const std::pair<const char*, double> bands[] = {
      {"int8:g32", 45.5}, {"int8:g64", 44.6},    {"int8:g128", 43.9},
      {"int4:g32", 20.3}, {"int4:g64", 19.4},    {"int4:g128", 18.7},
      {"q4_0", 21.3},     {"int4:g32:asym", 21.9}, {"int4:g128:asym", 20.0},
  };
  for (const auto& [text, expected] : bands) {
    std::vector<float> y = x;
    fake_quantize(QuantScheme::parse(text), y.data(), 64, 1024);
    EXPECT_NEAR(sqnr_db(x, y), expected, 0.2) << text;
  }
}

}  // namespace
}  // namespace kllens

namespace kllens {
namespace {

TEST(QuantizeQ8_0, RoundHalfAwayIsRoundf) {
  // Halves, their neighbours, large values and random values in the q8_0 code range.
  std::vector<float> values = {0.0f, -0.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 126.5f,
                               -126.5f, 0x1p23f, 0x1p23f + 1, -0x1p23f - 1, 0x1p30f, 1e-30f};
  for (float h = 0.5f; h < 130; h += 1.0f)
    for (float v : {h, -h}) {
      values.push_back(v);
      values.push_back(std::nextafter(v, 0.0f));
      values.push_back(std::nextafter(v, 2 * v));
    }
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-130.0f, 130.0f);
  for (int i = 0; i < 100000; ++i) values.push_back(u(rng));
  for (float v : values)
    ASSERT_EQ(std::bit_cast<uint32_t>(round_half_away(v)), std::bit_cast<uint32_t>(std::round(v)))
        << v;
}

}  // namespace
}  // namespace kllens
