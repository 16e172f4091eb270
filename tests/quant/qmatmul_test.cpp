// The packed-weight products against their scalar references: every instruction set this CPU
// has, every scheme family, odd row counts, T = 1 (decode) and T > 1 (prefill panels), with and
// without bias. Tolerances are float32 rounding bounds (argued at each check), plus, for the
// int8-activation path against float activations, the activation rounding bound itself.
#include "quant/qmatmul.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "quant/qmatmul_kernels.h"

namespace kllens {
namespace {

constexpr double kU = 0x1p-24;  // float32 unit roundoff

std::vector<float> gaussian(int64_t n, uint64_t seed, float sigma) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

// Restores the run-time choice whatever a test sets.
struct IsaGuard {
  Isa saved = qmatmul_isa();
  ~IsaGuard() { set_qmatmul_isa(saved); }
};

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (isa <= best_supported_isa()) out.push_back(isa);
  return out;
}

// Σ_k |ŵ_k x_k| per output (ŵ = dequantized weights): the scale of every float rounding bound.
std::vector<double> abs_dot(const QTensor& q, const float* x, int64_t T) {
  std::vector<double> out(static_cast<size_t>(T * q.rows));
  std::vector<float> row(static_cast<size_t>(q.cols));
  for (int64_t n = 0; n < q.rows; ++n) {
    dequantize_row(q, n, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double s = 0;
      for (int64_t k = 0; k < q.cols; ++k) s += std::fabs(static_cast<double>(row[k]) * x[t * q.cols + k]);
      out[t * q.rows + n] = s;
    }
  }
  return out;
}

struct Case {
  const char* scheme;
  int64_t rows, cols;
};

// Odd row counts (not multiples of 16, the thread chunk) and columns that exercise several
// groups per row, a tail of blocks beyond the 4-way unroll, and g0.
const Case kCases[] = {
    {"q8_0", 37, 224},          {"q4_0", 53, 160},       {"int8:g32", 29, 96},
    {"int4:g32", 41, 224},      {"int4:g64", 19, 192},   {"int8:g0:asym", 23, 160},
    {"int4:g32:asym:s32", 17, 96}, {"int8:g128:s32", 13, 256}, {"int4:g0", 35, 288},
    {"int3:g32", 21, 96},       {"int4:g16", 9, 64},     {"int8:g32", 11, 40},
    {"bf16", 31, 100},          {"f16", 27, 68},         {"f32", 19, 50},
    // 16+ blocks per row: the AVX-512 loop that converts sixteen g32 scales at once, and its tail.
    {"int4:g32", 7, 544},       {"int8:g32", 5, 1056},   {"q4_0", 9, 544},
    // The decoded-row formats: an odd number of 32-blocks (the 256-bit tail) and of 16-groups
    // beyond a multiple of 16 (the masked offsets) for the 32-element formats; several
    // super-blocks for the 256-element ones.
    {"q4_1", 37, 160},  {"q5_0", 19, 224},  {"q5_1", 23, 96},   {"iq4_nl", 29, 160},
    {"q2_K", 21, 512},  {"q3_K", 17, 768},  {"q4_K", 33, 256},  {"q5_K", 13, 512},
    {"q6_K", 19, 768},  {"iq4_xs", 11, 512}, {"int5:g16:asym", 15, 96}, {"int6:g16", 9, 96},
    {"int4:g8", 7, 64},  // groups smaller than 16: float activations
    {"bf16", 13, 116},  // a bf16 row tail of 20: the masked load between 16 and 32
    // kllens' refined quantizers: ggml's layouts with other scale codes (the fused kernels and
    // the decoders must read them as ggml's dequantizer does).
    {"q4_K:refined", 9, 512}, {"q5_K:refined", 7, 256}, {"q6_K:refined", 11, 512},
};

// Row r of q as the integer path reads it.
struct Decoded {
  std::vector<uint8_t> u;
  std::vector<float> s, o;
};
Decoded decode(const QTensor& q, int64_t r) {
  Decoded d{std::vector<uint8_t>(q.cols), std::vector<float>(q.cols / 16), std::vector<float>(q.cols / 16)};
  qk::decode_row_scalar(q, r, {d.u.data(), d.s.data(), d.o.data()});
  return d;
}

// y {T, N} from the integer path against (1) its scalar reference on the same int8 activations
// (exact integer sums per 16 elements, double accumulation) and (2) float activations.
void expect_integer_path_close(const std::vector<float>& got, const std::vector<float>& x,
                               const QTensor& q, const std::vector<float>& bias, int64_t T) {
  const int64_t N = q.rows, K = q.cols;
  std::vector<float> want(got.size()), exact(got.size());
  ref::qmatmul_decoded(want.data(), x.data(), q, bias.data(), T);
  ref::qmatmul_nt(exact.data(), x.data(), q, bias.data(), T);
  std::vector<float> wrow(static_cast<size_t>(K));
  for (int64_t r = 0; r < N; ++r) {
    const Decoded d = decode(q, r);
    dequantize_row(q, r, wrow.data());
    for (int64_t t = 0; t < T; ++t) {
      ActivationQ8 a;
      quantize_activation_q8(x.data() + t * K, K, false, &a, activation_block(q));
      // M: the magnitude every partial sum of the kernel is bounded by, Σ d_a|q| (|s u| + |o|);
      // A: the activation rounding, each x moves by at most half its block's step.
      double M = 0, A = 0, W = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double xa = a.d_lane[k / 4] * std::fabs(static_cast<double>(a.q[k]));
        M += xa * (std::fabs(static_cast<double>(d.s[k / 16]) * d.u[k]) + std::fabs(d.o[k / 16]));
        A += (a.d_lane[k / 4] / 2) * (1 + 1e-6) * std::fabs(wrow[k]);
        W += std::fabs(static_cast<double>(wrow[k]) * x[t * K + k]);
      }
      const size_t i = static_cast<size_t>(t * N + r);
      // Each 16-group adds at most five float32 roundings (s·d_a, its product with the integer
      // sum, d_a·Σq, its product with the offset, the accumulation), each at most u times a
      // partial sum bounded by M; the lane and horizontal sums add fewer than 16 more.
      const double tol = (5.0 * K / 16 + 16) * kU * (M + std::fabs(bias[r]));
      EXPECT_NEAR(got[i], want[i], tol) << "row " << r << " token " << t;
      // Against float activations: A, plus s u + o differing from ggml's dequantized weight by at
      // most two roundings of its terms (2 u M), plus the float sums on both sides.
      EXPECT_NEAR(got[i], exact[i], A + tol + 2 * kU * M + (K + 2) * kU * (W + std::fabs(bias[r])))
          << "row " << r << " token " << t;
    }
  }
}

// Float panels: the dequantized weights exactly, then BLAS sums K products in float32:
// |error| <= K u Σ|ŵx| (+ the bias addition, one more rounding of |y|).
void expect_float_panels_close(const std::vector<float>& got, const std::vector<float>& x,
                               const QTensor& q, const std::vector<float>& bias, int64_t T) {
  std::vector<float> want(got.size());
  ref::qmatmul_nt(want.data(), x.data(), q, bias.data(), T);
  const auto scale = abs_dot(q, x.data(), T);
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = (q.cols + 2) * kU * (scale[i] + std::fabs(bias[i % q.rows]));
    EXPECT_NEAR(got[i], want[i], tol) << "output " << i;
  }
}

// bf16 weights on AVX512_BF16: each activation rounded to bf16 moves by at most 2^-9 |x| (nearest
// even, 8 significant bits), so an output by at most 2^-9 Σ|ŵx|; the products of bf16 values are
// exact in float32 and their K-term sums add at most (K + 16) u Σ|ŵx| (lanes, then the reduce).
void expect_bf16_dot_close(const std::vector<float>& got, const std::vector<float>& x,
                           const QTensor& q, const std::vector<float>& bias, int64_t T) {
  std::vector<float> want(got.size());
  ref::qmatmul_nt(want.data(), x.data(), q, bias.data(), T);
  const auto scale = abs_dot(q, x.data(), T);
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = (0x1p-9 * (1 + 1e-6) + (q.cols + 18) * kU) * scale[i] + 2 * kU * std::fabs(bias[i % q.rows]);
    EXPECT_NEAR(got[i], want[i], tol) << "output " << i;
  }
}

TEST(QMatmul, PrefillEveryIsaMatchesItsReferences) {
  IsaGuard guard;
  set_num_threads(2);
  for (Isa isa : available_isas()) {
    set_qmatmul_isa(isa);
    for (const Case& c : kCases) {
      // T = 7 and 5: the AVX-512 tile of four tokens and the single-token tail.
      for (int64_t T : {7, 5}) {
        SCOPED_TRACE(std::string(isa_name(isa)) + " " + c.scheme + " T=" + std::to_string(T));
        const auto w = gaussian(c.rows * c.cols, 11, 0.05f);
        const QTensor q = quantize(QuantScheme::parse(c.scheme), w.data(), c.rows, c.cols);
        const auto x = gaussian(T * c.cols, 12 + T, 1.0f);
        const auto bias = gaussian(c.rows, 13, 0.1f);
        std::vector<float> got(static_cast<size_t>(T * c.rows));
        qmatmul_nt(got.data(), x.data(), q, bias.data(), T);
        if (uses_int8_prefill(q)) expect_integer_path_close(got, x, q, bias, T);
        else if (uses_bf16_prefill(q)) expect_bf16_dot_close(got, x, q, bias, T);
        else expect_float_panels_close(got, x, q, bias, T);
      }
    }
  }
}

TEST(QMatmul, PrefillCanBeForcedOntoFloatPanels) {
  for (const char* scheme : {"q4_K", "q8_0", "int4:g32", "bf16"}) {
    SCOPED_TRACE(scheme);
    const auto w = gaussian(19 * 256, 41, 0.05f);
    const QTensor q = quantize(QuantScheme::parse(scheme), w.data(), 19, 256);
    const auto x = gaussian(6 * 256, 42, 1.0f);
    const auto bias = gaussian(19, 43, 0.1f);
    std::vector<float> got(6 * 19);
    if (q.scheme.format != QuantFormat::kBF16) EXPECT_TRUE(uses_int8_prefill(q));
    set_prefill_path(PrefillPath::kFloatPanels);
    EXPECT_FALSE(uses_int8_prefill(q));
    EXPECT_FALSE(uses_bf16_prefill(q));
    qmatmul_nt(got.data(), x.data(), q, bias.data(), 6);
    set_prefill_path(PrefillPath::kAuto);
    expect_float_panels_close(got, x, q, bias, 6);
  }
}

// s u + o against ggml's own dequantizer (quant/formats.h), every format: the same float
// products ggml forms, so at most two roundings apart (the product s u and the sum with o; ggml
// rounds d·(u - z) or d·u - m once or twice).
TEST(QMatmul, DecodedRowsAreTheDequantizedWeights) {
  for (const Case& c : kCases) {
    const QTensor probe = quantize(QuantScheme::parse(c.scheme), gaussian(c.rows * c.cols, 51, 0.05f).data(), c.rows, c.cols);
    if (!qk::decodable(probe)) continue;
    SCOPED_TRACE(c.scheme);
    auto w = gaussian(c.rows * c.cols, 51, 0.05f);
    w[7] = 1.5f;  // an outlier: extreme codes in its block
    const QTensor q = quantize(QuantScheme::parse(c.scheme), w.data(), c.rows, c.cols);
    std::vector<float> row(static_cast<size_t>(c.cols));
    for (int64_t r = 0; r < c.rows; ++r) {
      const Decoded d = decode(q, r);
      dequantize_row(q, r, row.data());
      for (int64_t k = 0; k < c.cols; ++k) {
        const double su = static_cast<double>(d.s[k / 16]) * d.u[k];
        const double tol = 2 * kU * (std::fabs(su) + std::fabs(d.o[k / 16]));
        ASSERT_NEAR(su + d.o[k / 16], row[k], tol) << "row " << r << " element " << k;
      }
    }
  }
}

TEST(QMatmul, DecodeEveryIsaMatchesItsScalarReference) {
  IsaGuard guard;
  set_num_threads(2);
  for (Isa isa : available_isas()) {
    set_qmatmul_isa(isa);
    for (const Case& c : kCases) {
      SCOPED_TRACE(std::string(isa_name(isa)) + " " + c.scheme);
      const auto w = gaussian(c.rows * c.cols, 21, 0.05f);
      const QTensor q = quantize(QuantScheme::parse(c.scheme), w.data(), c.rows, c.cols);
      const auto x = gaussian(c.cols, 22, 1.0f);
      const auto bias = gaussian(c.rows, 23, 0.1f);
      std::vector<float> got(static_cast<size_t>(c.rows)), want(got.size()), exact(got.size());
      qmatmul_nt(got.data(), x.data(), q, bias.data(), 1);
      ref::qmatmul_nt(exact.data(), x.data(), q, bias.data(), 1);
      const auto scale = abs_dot(q, x.data(), 1);
      if (!uses_int8_activations(q) && qk::decodable(q)) {
        expect_integer_path_close(got, x, q, bias, 1);
      } else if (uses_int8_activations(q)) {
        ref::qmatvec_int8(want.data(), x.data(), q, bias.data());
        // Against the scalar int8 reference the integer block sums are exact; what differs is
        // float32 rounding of the per-block products s·d_a, the fused multiply-adds over
        // K/32 blocks and the final horizontal sums: fewer than K/32 + 16 roundings, each
        // bounded by u times a partial sum of magnitude at most Σ|s d_a (u - z) q| <= 2 Σ|ŵ x̂|
        // (x̂ within half a step of x), so (K/32 + 16) · u · 4 Σ|ŵx| is a safe bound.
        ActivationQ8 act;
        quantize_activation_q8(x.data(), c.cols, false, &act);
        for (int64_t r = 0; r < c.rows; ++r) {
          const double tol = (c.cols / 32.0 + 16) * kU * 4 * (scale[r] + std::fabs(bias[r]));
          EXPECT_NEAR(got[r], want[r], tol) << "row " << r;
        }
        // Against float activations the difference is the activation rounding: each x_k moves
        // by at most d_a/2 of its block (plus u relative), so |Δy| <= Σ_b d_b/2 Σ_{k∈b} |ŵ_k|.
        std::vector<float> row(static_cast<size_t>(c.cols));
        for (int64_t r = 0; r < c.rows; ++r) {
          dequantize_row(q, r, row.data());
          double bound = 0;
          for (int64_t k = 0; k < c.cols; ++k) bound += (act.d[k / 32] / 2) * (1 + 1e-6) * std::fabs(row[k]);
          EXPECT_NEAR(got[r], exact[r], bound + (c.cols + 16) * kU * 4 * scale[r]) << "row " << r;
        }
      } else {
        // Float activations: K float32 multiply-adds in some order.
        for (int64_t r = 0; r < c.rows; ++r)
          EXPECT_NEAR(got[r], exact[r], (c.cols + 2) * kU * (scale[r] + std::fabs(bias[r]))) << "row " << r;
      }
    }
  }
}

TEST(QMatmul, Int8PathIsChosenExactlyForAlignedFourAndEightBitSchemes) {
  auto uses = [](const char* scheme, int64_t cols) {
    const auto w = gaussian(3 * cols, 1, 0.1f);
    return uses_int8_activations(quantize(QuantScheme::parse(scheme), w.data(), 3, cols));
  };
  EXPECT_TRUE(uses("q8_0", 64));
  EXPECT_TRUE(uses("q4_0", 64));
  EXPECT_TRUE(uses("int8:g32", 64));
  EXPECT_TRUE(uses("int4:g0:asym", 96));
  EXPECT_FALSE(uses("int4:g16", 64));   // groups smaller than an activation block
  EXPECT_FALSE(uses("int8:g32", 48));   // 32 does not divide 48: one group of 48
  EXPECT_FALSE(uses("int3:g32", 64));
  EXPECT_FALSE(uses("bf16", 64));
}

TEST(QMatmul, ActivationQuantizationIsGgmlQ8WithFloatScale) {
  auto x = gaussian(96, 5, 2.0f);
  x[3] = 0.5f * 0;  // an exact zero
  for (int i = 64; i < 96; ++i) x[i] = 0.0f;  // an all-zero block: scale 0, codes 0
  for (bool even_odd : {false, true}) {
    ActivationQ8 a;
    quantize_activation_q8(x.data(), 96, even_odd, &a);
    ASSERT_EQ(a.d.size(), 3u);
    EXPECT_EQ(a.d[2], 0.0f);
    for (int b = 0; b < 3; ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * b + j]));
      EXPECT_EQ(a.d[b], amax / 127.0f);
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) {
        const int slot = even_odd ? (j % 2) * 16 + j / 2 : j;
        const int code = a.q[32 * b + slot];
        EXPECT_LE(std::abs(code), 127);
        sum += code;
        if (a.d[b] > 0) EXPECT_LE(std::fabs(code * a.d[b] - x[32 * b + j]), a.d[b] / 2 * (1 + 1e-5));
      }
      EXPECT_EQ(a.sum[b], sum);
      for (int l = 0; l < 8; ++l)
        EXPECT_EQ(a.neg_lane_sum[8 * b + l],
                  -(a.q[32 * b + 4 * l] + a.q[32 * b + 4 * l + 1] + a.q[32 * b + 4 * l + 2] +
                    a.q[32 * b + 4 * l + 3]));
      if (!even_odd) {
        for (int l = 0; l < 8; ++l) EXPECT_EQ(a.d_lane[8 * b + l], a.d[b]);
        for (int h = 0; h < 2; ++h) {
          int32_t s16 = 0;
          for (int j = 0; j < 16; ++j) s16 += a.q[32 * b + 16 * h + j];
          EXPECT_EQ(a.dsum16[2 * b + h], a.d[b] * static_cast<float>(s16));
        }
      }
    }
  }
}

TEST(QMatmul, ZeroActivationsGiveTheBias) {
  IsaGuard guard;
  for (Isa isa : available_isas()) {
    set_qmatmul_isa(isa);
    for (const char* scheme : {"q8_0", "q4_0", "int4:g32:asym", "bf16", "q4_K", "iq4_nl", "q5_1"}) {
      const auto w = gaussian(5 * 256, 3, 0.1f);
      const QTensor q = quantize(QuantScheme::parse(scheme), w.data(), 5, 256);
      const std::vector<float> x(256, 0.0f);
      const std::vector<float> bias = {1, -2, 3, -4, 5};
      std::vector<float> y(5);
      qmatmul_nt(y.data(), x.data(), q, bias.data(), 1);
      EXPECT_EQ(y, bias) << isa_name(isa) << " " << scheme;
    }
  }
}

TEST(QMatmul, IsaChoiceIsClampedToTheCpu) {
  IsaGuard guard;
  EXPECT_EQ(set_qmatmul_isa(Isa::kScalar), Isa::kScalar);
  EXPECT_EQ(set_qmatmul_isa(Isa::kAvx512), best_supported_isa());
  EXPECT_EQ(isa_name(Isa::kAvx2), "avx2");
}

TEST(QMatmul, BlocksAsIntLayoutDequantizesBitForBit) {
  auto w = gaussian(13 * 96, 31, 0.3f);
  w[5] = 0.0f;
  w[40] = 10.0f;  // an outlier: a block with a large scale and codes at the extremes
  for (const char* scheme : {"q8_0", "q4_0"}) {
    const QTensor q = quantize(QuantScheme::parse(scheme), w.data(), 13, 96);
    const QTensor i = blocks_as_int_layout(q);
    EXPECT_TRUE(i.scheme.is_int()) << scheme;
    EXPECT_EQ(i.storage_bytes(), q.storage_bytes()) << scheme;
    std::vector<float> a(w.size()), b(w.size());
    dequantize(q, a.data());
    dequantize(i, b.data());
    for (size_t k = 0; k < a.size(); ++k)
      ASSERT_EQ(std::bit_cast<uint32_t>(a[k]), std::bit_cast<uint32_t>(b[k])) << scheme << " element " << k;
  }
  const QTensor g = quantize(QuantScheme::parse("int4:g64"), w.data(), 13, 96);
  EXPECT_EQ(blocks_as_int_layout(g).scheme, g.scheme);  // not a block format: unchanged
}

}  // namespace
}  // namespace kllens
