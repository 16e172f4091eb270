// AVX-512 (F, BW, VL, VNNI) row kernels. Compiled for these extensions by the pragma below, so
// the rest of the library may run on CPUs without them; qmatmul.cpp only calls in here when the
// CPU has them. One 512-bit vpdpbusd covers two 32-element blocks (their scales broadcast into
// the two halves of the scale vector); a leftover block takes a 256-bit one.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
// GCC 12's AVX-512 intrinsics headers trip -Wmaybe-uninitialized on their own internal
// "undefined" operands (GCC bug 105593), not on anything of ours.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <bit>
#include <cstring>

#include "quant/qmatmul_decode_inl.h"
#include "quant/qmatmul_kernels.h"
#include "quant/qmatmul_simd_inl.h"

namespace kllens::qk {

namespace {

// Codes of block b of row r (32 unsigned values in activation order) and its scale.
template <CodeLayout L>
inline __m256i load_block(const IntRows& w, int64_t r, int64_t nb, int64_t b, float* s) {
  if constexpr (L == CodeLayout::kQ8_0) {
    const uint8_t* blk = w.data + (r * nb + b) * 34;
    *s = f16(blk);
    return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)),
                            _mm256_set1_epi8(static_cast<char>(0x80)));
  } else if constexpr (L == CodeLayout::kQ4_0) {
    const uint8_t* blk = w.data + (r * nb + b) * 18;
    *s = f16(blk);
    return nibbles(blk + 2);
  } else {
    const int64_t g = w.group_of_block(r, b);
    *s = w.scales_f16 ? _cvtsh_ss(w.scales_f16[g]) : w.scales_f32[g];
    if constexpr (L == CodeLayout::kU8)
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.data + r * w.cols + 32 * b));
    else
      return nibbles(w.data + (r * w.cols + 32 * b) / 2);
  }
}

inline int zero_shift(CodeLayout layout, int default_zero) {
  if (layout == CodeLayout::kQ8_0) return 7;
  if (layout == CodeLayout::kQ4_0) return 3;
  return default_zero == 128 ? 7 : 3;
}

// One row with a power-of-two zero point shared by every block (q8_0, q4_0, symmetric int8 and
// int4): each block's Σ (u - z) q is exact in int32, starting vpdpbusd from -z Σ_lane q, and is
// scaled by s · d_a into float accumulators (two independent chains hide the latency).
template <CodeLayout L, bool F16Scales>
float row_dot_sym(const IntRows& w, const ActivationQ8& a, int64_t r, int shift) {
  const int64_t nb = w.blocks_per_row();
  __m256 acc[1] = {_mm256_setzero_ps()};  // the odd tail block
  const __m128i sh = _mm_cvtsi32_si128(shift);
  int64_t b = 0;
  prefetch_ahead(w.data + block_offset<L>(w, r, nb, 0), w.data + block_offset<L>(w, r + 1, nb, 0));
  // kllens intB: group scales from their own array; the group of a block is a shift (no division
  // or branch in the block loop: either cost 2x in decode).
  constexpr bool kGrouped = L == CodeLayout::kU8 || L == CodeLayout::kU4EvenOdd;
  const int64_t gbase = r * w.groups_per_row;
  const int gshift = w.groups_per_row == 1 ? 62 : w.group_shift;
  const uint8_t* codes = w.data + block_offset<L>(w, r, nb, 0);
  auto step = [&](int64_t blk, int k) {
    __m256i u;
    float scale;
    if constexpr (kGrouped) {
      if constexpr (L == CodeLayout::kU8)
        u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * blk));
      else
        u = nibbles(codes + 16 * blk);
      const int64_t g = gbase + (blk >> gshift);
      scale = (F16Scales ? _cvtsh_ss(w.scales_f16[g]) : w.scales_f32[g]) * a.d[blk];
    } else {
      float s;
      u = load_block<L>(w, r, nb, blk, &s);
      scale = s * a.d[blk];
    }
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + 32 * blk));
    const __m256i init = _mm256_sll_epi32(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.neg_lane_sum.data() + 8 * blk)), sh);
    const __m256i dot = _mm256_dpbusd_epi32(init, u, q);
    acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale), acc[k]);
  };
  // Two blocks per 512-bit vpdpbusd: lanes 0..7 hold block b, lanes 8..15 block b+1, scaled by
  // [s_b d_b x 8 | s_b+1 d_b+1 x 8]. Half the instructions of one block per 256-bit operation.
  __m512 acc2[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  // The integer sums of blocks blk, blk+1 as 16 float lanes; s0, s1: the ggml blocks' scales.
  auto pair_dot = [&](int64_t blk, float* s0, float* s1) {
    __m512i u;
    if constexpr (L == CodeLayout::kQ8_0 || L == CodeLayout::kU8) {
      __m256i c0, c1;
      if constexpr (L == CodeLayout::kQ8_0) {
        const uint8_t* p0 = codes + blk * 34;
        c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + 2));
        c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0 + 36));
        *s0 = f16(p0);
        *s1 = f16(p0 + 34);
      } else {
        c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * blk));
        c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 32 * blk + 32));
      }
      u = _mm512_inserti64x4(_mm512_castsi256_si512(c0), c1, 1);
      if constexpr (L == CodeLayout::kQ8_0) u = _mm512_xor_si512(u, _mm512_set1_epi8(static_cast<char>(0x80)));
    } else {
      __m256i v;  // [16 code bytes of block b | of block b+1]
      if constexpr (L == CodeLayout::kQ4_0) {
        const uint8_t* p0 = codes + blk * 18;
        v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + 2))),
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + 20)), 1);
        *s0 = f16(p0);
        *s1 = f16(p0 + 18);
      } else {
        v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + 16 * blk));
      }
      const __m256i m = _mm256_set1_epi8(0x0F);
      const __m256i lo = _mm256_and_si256(v, m), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
      // [lo_b lo_b+1 hi_b hi_b+1] -> [lo_b hi_b lo_b+1 hi_b+1]: each block's 32 codes in order.
      const __m512i w4 = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
      u = _mm512_shuffle_i64x2(w4, w4, _MM_SHUFFLE(3, 1, 2, 0));
    }
    const __m512i q = _mm512_loadu_si512(a.q.data() + 32 * blk);
    const __m512i init = _mm512_sll_epi32(_mm512_loadu_si512(a.neg_lane_sum.data() + 8 * blk), sh);
    return _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(init, u, q));
  };
  auto pair = [&](int64_t blk, int k) {
    float s0 = 0, s1 = 0;
    const __m512 dot = pair_dot(blk, &s0, &s1);
    float sc0, sc1;
    if constexpr (kGrouped) {
      const int64_t g0 = gbase + (blk >> gshift), g1 = gbase + ((blk + 1) >> gshift);
      sc0 = (F16Scales ? _cvtsh_ss(w.scales_f16[g0]) : w.scales_f32[g0]) * a.d[blk];
      sc1 = (F16Scales ? _cvtsh_ss(w.scales_f16[g1]) : w.scales_f32[g1]) * a.d[blk + 1];
    } else {
      sc0 = s0 * a.d[blk];
      sc1 = s1 * a.d[blk + 1];
    }
    const __m512 scale = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(sc0)), _mm256_set1_ps(sc1), 1);
    acc2[k] = _mm512_fmadd_ps(dot, scale, acc2[k]);
  };
  // One float16 scale per block in its own array (int4/int8 at g32, and ggml blocks converted
  // to that layout): sixteen blocks' s·d_a in two vector operations, then one lane permutation
  // per pair instead of two scalar conversions and broadcasts.
  if constexpr (kGrouped && F16Scales) {
    if (w.groups_per_row == nb) {
      const __m512i lanes = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
      for (; b + 16 <= nb; b += 16) {
        const __m512 sd = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales_f16 + gbase + b))),
            _mm512_loadu_ps(a.d.data() + b));
        for (int k = 0; k < 8; ++k) {
          float unused0, unused1;
          const __m512 dot = pair_dot(b + 2 * k, &unused0, &unused1);
          const __m512 scale = _mm512_permutexvar_ps(_mm512_add_epi32(lanes, _mm512_set1_epi32(2 * k)), sd);
          acc2[k & 1] = _mm512_fmadd_ps(dot, scale, acc2[k & 1]);
        }
      }
    }
  }
  for (; b + 4 <= nb; b += 4) {
    pair(b, 0);
    pair(b + 2, 1);
  }
  for (; b < nb; ++b) step(b, 0);
  const __m512 both = _mm512_add_ps(acc2[0], acc2[1]);
  const __m256 folded = _mm256_add_ps(_mm512_castps512_ps256(both), _mm512_extractf32x8_ps(both, 1));
  return hsum256(_mm256_add_ps(acc[0], folded));
}

// Per-group zero points (asymmetric intB): acc += cvt(Σ u q) s d_a, corr += -z s d_a Σq.
template <CodeLayout L>
float row_dot_asym(const IntRows& w, const ActivationQ8& a, int64_t r) {
  const int64_t nb = w.blocks_per_row();
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float corr0 = 0, corr1 = 0;
  for (int64_t b = 0; b < nb; ++b) {
    float s;
    const __m256i u = load_block<L>(w, r, nb, b, &s);
    const int64_t g = w.group_of_block(r, b);
    const float o = -static_cast<float>(w.zeros[g]) * s;
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + 32 * b));
    const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q);
    const float da = a.d[b];
    if (b & 1) {
      acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s * da), acc1);
      corr1 += o * da * static_cast<float>(a.sum[b]);
    } else {
      acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(s * da), acc0);
      corr0 += o * da * static_cast<float>(a.sum[b]);
    }
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) + corr0 + corr1;
}

template <CodeLayout L>
float row_dot(const IntRows& w, const ActivationQ8& a, int64_t r) {
  if (w.zeros) {
    if constexpr (L == CodeLayout::kU8 || L == CodeLayout::kU4EvenOdd) return row_dot_asym<L>(w, a, r);
  }
  if (w.scales_f32) return row_dot_sym<L, false>(w, a, r, zero_shift(L, w.default_zero));
  return row_dot_sym<L, true>(w, a, r, zero_shift(L, w.default_zero));
}

template <CodeLayout L>
void rows(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = row_dot<L>(w, a, r);
}

}  // namespace

void int_rows_avx512(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  switch (w.layout) {
    case CodeLayout::kQ8_0: rows<CodeLayout::kQ8_0>(w, a, y, r0, r1); return;
    case CodeLayout::kQ4_0: rows<CodeLayout::kQ4_0>(w, a, y, r0, r1); return;
    case CodeLayout::kU8: rows<CodeLayout::kU8>(w, a, y, r0, r1); return;
    case CodeLayout::kU4EvenOdd: rows<CodeLayout::kU4EvenOdd>(w, a, y, r0, r1); return;
  }
}

namespace {

// bf16 rows, 32 elements per 512-bit load: the even elements become floats by a shift left, the
// odd ones by masking off the low halves (a bf16 is the top half of a float), and meet the
// activations split the same way once per call. Three vector operations per 16 products instead
// of the five of widening 16-bit lanes.
void bf16_rows_avx512(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols, K32 = K / 32 * 32;
  thread_local std::vector<float> split;
  if (split.size() < static_cast<size_t>(K32)) split.resize(static_cast<size_t>(K32));
  for (int64_t k = 0; k < K32; k += 32)
    for (int j = 0; j < 16; ++j) {
      split[k + j] = x[k + 2 * j];
      split[k + 16 + j] = x[k + 2 * j + 1];
    }
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* row = w.data + r * K;
    prefetch_ahead(reinterpret_cast<const uint8_t*>(row), reinterpret_cast<const uint8_t*>(row + K), 2 * kPrefetchAhead);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t k = 0; k < K32; k += 32) {
      const __m512i v = _mm512_loadu_si512(row + k);
      acc0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)),
                             _mm512_loadu_ps(split.data() + k), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, odd_mask)),
                             _mm512_loadu_ps(split.data() + k + 16), acc1);
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (int64_t k = K32; k < K; ++k) acc += std::bit_cast<float>(uint32_t{row[k]} << 16) * x[k];
    y[r] = acc;
  }
}

}  // namespace

void half_rows_avx512(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1) {
  if (w.bf16) {
    bf16_rows_avx512(w, x, y, r0, r1);
    return;
  }
  // f16: widened by vcvtph2ps, 32 (then 16) elements per step.
  const int64_t K = w.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* row = w.data + r * K;
    prefetch_ahead(reinterpret_cast<const uint8_t*>(row), reinterpret_cast<const uint8_t*>(row + K), 2 * kPrefetchAhead);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m256i h0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
      const __m256i h1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k + 16));
      acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h0), _mm512_loadu_ps(x + k), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_cvtph_ps(h1), _mm512_loadu_ps(x + k + 16), acc1);
    }
    if (k + 16 <= K) {  // e.g. dt_proj's rows of 48
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
      acc0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h), _mm512_loadu_ps(x + k), acc0);
      k += 16;
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; k < K; ++k) acc += _cvtsh_ss(row[k]) * x[k];
    y[r] = acc;
  }
}

void decode_row_avx512(const QTensor& w, int64_t r, DecodedRow out) { decode_row_any(w, r, out); }

namespace {

// NT tokens against one decoded row. Per pair of activation blocks (64 elements): one vpdpbusd
// gives 16 lanes of 4-element sums; lane l belongs to 16-group l / 4 (its weight scale, spread
// by one permutation) and block l / 8 (the token's d_lane). The offsets meet the tokens'
// d · Σq per 16-group in the same accumulators.
template <int NT>
void coded_tile(const DecodedRow& w, int64_t K, const ActivationQ8* acts, float* y, int64_t y_stride) {
  const int64_t pairs = K / 64;
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc[NT];
  for (int i = 0; i < NT; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512i u = _mm512_loadu_si512(w.codes + 64 * p);
    const __m512 ws = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_loadu_ps(w.scale16 + 4 * p)));
    for (int i = 0; i < NT; ++i) {
      const __m512i q = _mm512_loadu_si512(acts[i].q.data() + 64 * p);
      const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, q);
      const __m512 scale = _mm512_mul_ps(ws, _mm512_loadu_ps(acts[i].d_lane.data() + 16 * p));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[i]);
    }
  }
  __m256 tail[NT];
  for (int i = 0; i < NT; ++i) tail[i] = _mm256_setzero_ps();
  if (K % 64 != 0) {  // one last block of 32: two 16-groups
    const int64_t b = K / 32 - 1;
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.codes + 32 * b));
    const __m256 ws = _mm256_permutevar8x32_ps(
        _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(w.scale16 + 2 * b)))),
        _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0));
    for (int i = 0; i < NT; ++i) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[i].q.data() + 32 * b));
      const __m256i dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q);
      const __m256 scale = _mm256_mul_ps(ws, _mm256_loadu_ps(acts[i].d_lane.data() + 8 * b));
      tail[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, tail[i]);
    }
  }
  const int64_t groups = K / 16;
  int64_t j = 0;
  for (; j + 16 <= groups; j += 16) {
    const __m512 o = _mm512_loadu_ps(w.offset16 + j);
    for (int i = 0; i < NT; ++i) acc[i] = _mm512_fmadd_ps(o, _mm512_loadu_ps(acts[i].dsum16.data() + j), acc[i]);
  }
  if (j < groups) {
    const __mmask16 m = static_cast<__mmask16>((1u << (groups - j)) - 1);
    const __m512 o = _mm512_maskz_loadu_ps(m, w.offset16 + j);
    for (int i = 0; i < NT; ++i)
      acc[i] = _mm512_fmadd_ps(o, _mm512_maskz_loadu_ps(m, acts[i].dsum16.data() + j), acc[i]);
  }
  for (int i = 0; i < NT; ++i) y[i * y_stride] = _mm512_reduce_add_ps(acc[i]) + hsum256(tail[i]);
}

}  // namespace

namespace {

// The K-quants that llama.cpp's stock mixes are made of (q4_K, q5_K, q6_K), fused: each
// super-block's codes are unpacked into registers and meet the activations there, without the
// decoded row's trip through memory (which cost half the decode time). The activations have one
// scale per super-block (activation_block), so the sub-block scales, small integers, apply in
// integer arithmetic: vpmaddubsw (u8 codes x s8 activations, pairs summed to int16; codes <= 63 so
// 2 * 63 * 127 cannot saturate) then vpdpwssd with the sub-block scale as the other int16
// operand, summed over the super-block in int32 (at most 16 * 2 * 16002 * 127 < 2^31), converted
// once per super-block and token.
inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
// vpermw indices: int16 lanes [first x16, first+1 x16] and [first x8, .., first+3 x8].
inline __m512i halves16(int first) {
  return join(_mm256_set1_epi16(static_cast<int16_t>(first)), _mm256_set1_epi16(static_cast<int16_t>(first + 1)));
}
inline __m512i quarters16(int first) {
  const __m256i a = _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(first + 1)), _mm_set1_epi16(static_cast<int16_t>(first)));
  const __m256i b = _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(first + 3)), _mm_set1_epi16(static_cast<int16_t>(first + 2)));
  return join(a, b);
}

// q4_K (kFifth = false) and q5_K: 8 sub-blocks of 32 with 6-bit scale and min codes packed in 12
// bytes (ggml's get_scale_min_k4 layout, unpacked four at a time in 32-bit words).
template <int NT, bool kFifth>
void q45k_tile(const uint8_t* row, int64_t superblocks, const ActivationQ8* acts, float* y, int64_t y_stride) {
  constexpr int64_t kBytes = kFifth ? 176 : 144;
  constexpr int kCodes = kFifth ? 48 : 16;
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  __m512 acc[NT];
  __m256 off[NT];
  for (int i = 0; i < NT; ++i) {
    acc[i] = _mm512_setzero_ps();
    off[i] = _mm256_setzero_ps();
  }
  for (int64_t sb = 0; sb < superblocks; ++sb) {
    const uint8_t* blk = row + sb * kBytes;
    const float d = f16(blk), dmin = f16(blk + 2);
    uint32_t u[3];
    std::memcpy(u, blk + 4, 12);
    const uint32_t sc_lo = u[0] & 0x3F3F3F3Fu, m_lo = u[1] & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (u[2] & 0x0F0F0F0Fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    const uint32_t m_hi = ((u[2] >> 4) & 0x0F0F0F0Fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    // The 8 scales as int16 (for vpermw), the 8 mins each twice (one per 16-element Σq).
    const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_set_epi32(0, 0, static_cast<int>(sc_hi), static_cast<int>(sc_lo))));
    const __m128i m8 = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, static_cast<int>(m_hi), static_cast<int>(m_lo)));
    const __m256i m_twice = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFifth) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
    __m512i isum[NT];
    for (int i = 0; i < NT; ++i) isum[i] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kCodes + 32 * c));
      __m256i lo = _mm256_and_si256(qs, low4), hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low4);
      if constexpr (kFifth) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
      }
      const __m512i codes = join(lo, hi);
      const __m512i scales = _mm512_permutexvar_epi16(halves16(2 * c), sc16);
      const int64_t e = 256 * sb + 64 * c;
      for (int i = 0; i < NT; ++i) {
        const __m512i pairs = _mm512_maddubs_epi16(codes, _mm512_loadu_si512(acts[i].q.data() + e));
        isum[i] = _mm512_dpwssd_epi32(isum[i], pairs, scales);
      }
    }
    for (int i = 0; i < NT; ++i) {
      const float da = acts[i].d[sb];
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_set1_ps(d * da), acc[i]);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[i].sum16.data() + 16 * sb));
      off[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, m_twice)), _mm256_set1_ps(-dmin * da), off[i]);
    }
  }
  for (int i = 0; i < NT; ++i) y[i * y_stride] = _mm512_reduce_add_ps(acc[i]) + hsum256(off[i]);
}

// q6_K: 16 sub-blocks of 16 with int8 scales; codes are 4 low bits in ql and 2 high bits in qh,
// offset -32 per code: -32 Σ_j sc_j Σq_j, exact in int32 (|.| < 2^27), joins the sums.
template <int NT>
void q6k_tile(const uint8_t* row, int64_t superblocks, const ActivationQ8* acts, float* y, int64_t y_stride) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(3);
  __m512 acc[NT];
  for (int i = 0; i < NT; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < superblocks; ++sb) {
    const uint8_t* blk = row + sb * 210;
    const __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
    const __m512i sc16 = _mm512_castsi256_si512(sc);
    const float d = f16(blk + 208);
    __m512i isum[NT];
    for (int i = 0; i < NT; ++i) {
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[i].sum16.data() + 16 * sb));
      isum[i] = _mm512_zextsi256_si512(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(bsums, sc)), 5));
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
      const __m256i qb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
#pragma GCC unroll 2
      for (int e = 0; e < 2; ++e) {
        // Quarters 2e and 2e + 1 of this half: low (e = 0) or high (e = 1) nibbles of ql's two
        // 32-byte runs, high bits at 4e and 4e + 2 of qh.
        const __m256i na = e ? _mm256_and_si256(_mm256_srli_epi16(qa, 4), low4) : _mm256_and_si256(qa, low4);
        const __m256i nb = e ? _mm256_and_si256(_mm256_srli_epi16(qb, 4), low4) : _mm256_and_si256(qb, low4);
        const __m256i ha = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4 * e), two), 4);
        const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4 * e + 2), two), 4);
        const __m512i codes = join(_mm256_or_si256(na, ha), _mm256_or_si256(nb, hb));
        const int p = 2 * h + e;
        const __m512i scales = _mm512_permutexvar_epi16(quarters16(4 * p), sc16);
        const int64_t el = 256 * sb + 64 * p;
        for (int i = 0; i < NT; ++i) {
          const __m512i pairs = _mm512_maddubs_epi16(codes, _mm512_loadu_si512(acts[i].q.data() + el));
          isum[i] = _mm512_dpwssd_epi32(isum[i], pairs, scales);
        }
      }
    }
    for (int i = 0; i < NT; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i]), _mm512_set1_ps(d * acts[i].d[sb]), acc[i]);
  }
  for (int i = 0; i < NT; ++i) y[i * y_stride] = _mm512_reduce_add_ps(acc[i]);
}

template <int NT>
void kquant_tile(QuantFormat f, const uint8_t* row, int64_t superblocks, const ActivationQ8* acts, float* y,
                 int64_t y_stride) {
  if (f == QuantFormat::kQ4_K) q45k_tile<NT, false>(row, superblocks, acts, y, y_stride);
  else if (f == QuantFormat::kQ5_K) q45k_tile<NT, true>(row, superblocks, acts, y, y_stride);
  else q6k_tile<NT>(row, superblocks, acts, y, y_stride);
}

}  // namespace

namespace {

// Decode (one token) of the 32-element formats llama-quantize falls back to (q5_0 for q4_K rows,
// q5_1 for q5_K rows) and their kin: codes unpacked in registers (nibbles; the fifth bits by
// expanding the 32-bit qh mask to bytes), one 256-bit vpdpbusd per block against activations
// with one scale per 32. A fixed zero point z (q5_0: 16, iq4_nl's shifted levels: 128) starts
// the integer sum from -z Σq (neg_lane_sum); the _1 formats add m · d_a · Σq per block.
template <QuantFormat F>
float legacy_row_dot(const uint8_t* row, int64_t nb, const ActivationQ8& a) {
  constexpr int64_t kBytes = F == QuantFormat::kQ5_0 ? 22 : F == QuantFormat::kQ5_1 ? 24 : F == QuantFormat::kQ4_1 ? 20 : 18;
  constexpr bool kMin = F == QuantFormat::kQ5_1 || F == QuantFormat::kQ4_1;
  constexpr bool kFifth = F == QuantFormat::kQ5_0 || F == QuantFormat::kQ5_1;
  constexpr int kQs = F == QuantFormat::kQ5_0 ? 6 : F == QuantFormat::kQ5_1 ? 8 : F == QuantFormat::kQ4_1 ? 4 : 2;
  const __m128i shift = _mm_cvtsi32_si128(F == QuantFormat::kQ5_0 ? 4 : 7);
  __m128i levels = _mm_setzero_si128();
  if constexpr (F == QuantFormat::kIQ4_NL) {
    alignas(16) uint8_t l[16];
    for (int i = 0; i < 16; ++i) l[i] = static_cast<uint8_t>(ggml::kValuesIQ4NL[i] + 128);
    levels = _mm_load_si128(reinterpret_cast<const __m128i*>(l));
  }
  const __m256i table = _mm256_broadcastsi128_si256(levels);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float corr = 0;
  prefetch_ahead(row, row + nb * kBytes);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kBytes;
    __m256i u = nibbles(blk + kQs);
    if constexpr (kFifth) {
      uint32_t qh;
      std::memcpy(&qh, blk + (kMin ? 4 : 2), 4);
      u = _mm256_or_si256(u, _mm256_and_si256(_mm256_movm_epi8(qh), _mm256_set1_epi8(0x10)));
    }
    if constexpr (F == QuantFormat::kIQ4_NL) u = _mm256_shuffle_epi8(table, u);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + 32 * b));
    __m256i init = _mm256_setzero_si256();
    if constexpr (!kMin)
      init = _mm256_sll_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.neg_lane_sum.data() + 8 * b)), shift);
    const __m256i dot = _mm256_dpbusd_epi32(init, u, q);
    const float da = a.d[b];
    const __m256 scale = _mm256_set1_ps(f16(blk) * da);
    if (b & 1) acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc1);
    else acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc0);
    if constexpr (kMin) corr += f16(blk + 2) * da * static_cast<float>(a.sum[b]);
  }
  return hsum256(_mm256_add_ps(acc0, acc1)) + corr;
}

template <QuantFormat F>
void legacy_rows(const QTensor& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  const int64_t nb = w.cols / 32, row_bytes = w.storage_bytes() / w.rows;
  for (int64_t r = r0; r < r1; ++r) y[r] = legacy_row_dot<F>(w.data.data() + r * row_bytes, nb, a);
}

}  // namespace

bool has_fused_decode_avx512(QuantFormat format) {
  return format == QuantFormat::kQ5_0 || format == QuantFormat::kQ5_1 || format == QuantFormat::kQ4_1 ||
         format == QuantFormat::kIQ4_NL;
}

void fused_decode_avx512(const QTensor& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  switch (w.scheme.format) {
    case QuantFormat::kQ5_0: legacy_rows<QuantFormat::kQ5_0>(w, a, y, r0, r1); return;
    case QuantFormat::kQ5_1: legacy_rows<QuantFormat::kQ5_1>(w, a, y, r0, r1); return;
    case QuantFormat::kQ4_1: legacy_rows<QuantFormat::kQ4_1>(w, a, y, r0, r1); return;
    case QuantFormat::kIQ4_NL: legacy_rows<QuantFormat::kIQ4_NL>(w, a, y, r0, r1); return;
    default: return;
  }
}

bool has_fused_avx512(QuantFormat format) {
  return format == QuantFormat::kQ4_K || format == QuantFormat::kQ5_K || format == QuantFormat::kQ6_K;
}

void fused_rows_avx512(const QTensor& w, const ActivationQ8* acts, int64_t T, float* y, int64_t y_stride,
                       int64_t r0, int64_t r1) {
  const int64_t superblocks = w.cols / 256;
  const int64_t row_bytes = w.storage_bytes() / w.rows;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w.data.data() + r * row_bytes;
    if (T == 1) prefetch_ahead(row, row + row_bytes);
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) kquant_tile<4>(w.scheme.format, row, superblocks, acts + t, y + t * y_stride + r, y_stride);
    for (; t < T; ++t) kquant_tile<1>(w.scheme.format, row, superblocks, acts + t, y + t * y_stride + r, y_stride);
  }
}

void coded_dot_avx512(const DecodedRow& w, int64_t K, bool, const ActivationQ8* acts, int64_t T,
                      float* y, int64_t y_stride) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) coded_tile<4>(w, K, acts + t, y + t * y_stride, y_stride);
  for (; t < T; ++t) coded_tile<1>(w, K, acts + t, y + t * y_stride, y_stride);
}

}  // namespace kllens::qk
