// AVX2 (+FMA, F16C) row kernels, for x86-64 CPUs without AVX-512 VNNI. Integer block dots use
// pmaddubsw (u8 × s8 → s16 pairs, saturating) then pmaddwd: 4-bit codes (≤ 15) cannot saturate;
// 8-bit codes are shifted to signed (u - 128) and multiplied with ggml's sign trick, |w| ≤ 128
// times |q| ≤ 127, so a pair sum stays within 2 · 128 · 127 = 32512 < 32767.
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include <bit>
#include <cstring>

#include "quant/qmatmul_decode_inl.h"
#include "quant/qmatmul_kernels.h"
#include "quant/qmatmul_simd_inl.h"

namespace kllens::qk {

namespace {

// Σ over the block of u·q as 8 int32 lanes. Signed8: w holds signed codes (u - 128).
template <bool Signed8>
inline __m256i block_dot(__m256i w, __m256i q) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Signed8) {
    const __m256i ax = _mm256_sign_epi8(w, w);
    const __m256i sy = _mm256_sign_epi8(q, w);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, q), ones);
  }
}

template <CodeLayout L>
float row_dot(const IntRows& w, const ActivationQ8& a, int64_t r) {
  constexpr bool kSigned8 = L == CodeLayout::kQ8_0 || L == CodeLayout::kU8;
  const int64_t nb = w.blocks_per_row();
  prefetch_ahead(w.data + block_offset<L>(w, r, nb, 0), w.data + block_offset<L>(w, r + 1, nb, 0));
  __m256 acc = _mm256_setzero_ps();
  float corr = 0;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    __m256i v;  // signed codes (8-bit layouts) or unsigned nibbles
    float s, o;
    if constexpr (L == CodeLayout::kQ8_0) {
      const uint8_t* blk = w.data + (r * nb + b) * 34;
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      s = f16(blk);
      o = -128.0f * s;
    } else if constexpr (L == CodeLayout::kQ4_0) {
      const uint8_t* blk = w.data + (r * nb + b) * 18;
      v = nibbles(blk + 2);
      s = f16(blk);
      o = -8.0f * s;
    } else {
      if constexpr (L == CodeLayout::kU8)
        v = _mm256_xor_si256(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.data + r * w.cols + 32 * b)), flip);
      else
        v = nibbles(w.data + (r * w.cols + 32 * b) / 2);
      const int64_t g = w.group_of_block(r, b);
      s = w.scales_f16 ? _cvtsh_ss(w.scales_f16[g]) : w.scales_f32[g];
      o = -static_cast<float>(w.zeros ? w.zeros[g] : w.default_zero) * s;
    }
    // Signed codes are u - 128, so Σu·q = Σ(u-128)·q + 128 Σq: fold the 128 into the offset.
    if constexpr (kSigned8) o += 128.0f * s;
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + 32 * b));
    const float da = a.d[b];
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_dot<kSigned8>(v, q)), _mm256_set1_ps(s * da), acc);
    corr += o * da * static_cast<float>(a.sum[b]);
  }
  return hsum256(acc) + corr;
}

template <CodeLayout L>
void rows(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) y[r] = row_dot<L>(w, a, r);
}

}  // namespace

void int_rows_avx2(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1) {
  switch (w.layout) {
    case CodeLayout::kQ8_0: rows<CodeLayout::kQ8_0>(w, a, y, r0, r1); return;
    case CodeLayout::kQ4_0: rows<CodeLayout::kQ4_0>(w, a, y, r0, r1); return;
    case CodeLayout::kU8: rows<CodeLayout::kU8>(w, a, y, r0, r1); return;
    case CodeLayout::kU4EvenOdd: rows<CodeLayout::kU4EvenOdd>(w, a, y, r0, r1); return;
  }
}

void decode_row_avx2(const QTensor& w, int64_t r, DecodedRow out) { decode_row_any(w, r, out); }

// Per block of 32: 8 lanes of 4-element sums (lanes 0..3 the block's first 16-group, 4..7 its
// second). Codes above 127 go through signed bytes (u - 128, ggml's sign trick, so pmaddubsw
// cannot saturate), and the 128 Σq they leave out joins the offsets: o + 128 s per group.
void coded_dot_avx2(const DecodedRow& w, int64_t K, bool codes_8bit, const ActivationQ8* acts,
                    int64_t T, float* y, int64_t y_stride) {
  const int64_t nb = K / 32, groups = K / 16;
  const __m256i spread = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t t = 0; t < T; ++t) {
    const ActivationQ8& a = acts[t];
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.codes + 32 * b));
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + 32 * b));
      const __m256i dot = codes_8bit ? block_dot<true>(_mm256_xor_si256(u, flip), q) : block_dot<false>(u, q);
      const __m256 ws = _mm256_permutevar8x32_ps(
          _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(w.scale16 + 2 * b)))), spread);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(ws, _mm256_loadu_ps(a.d_lane.data() + 8 * b)), acc);
    }
    float off = 0;
    for (int64_t j = 0; j < groups; ++j)
      off += (codes_8bit ? w.offset16[j] + 128.0f * w.scale16[j] : w.offset16[j]) * a.dsum16[j];
    y[t * y_stride] = hsum256(acc) + off;
  }
}

void half_rows_avx2(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1) {
  const int64_t K = w.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* row = w.data + r * K;
    prefetch_ahead(reinterpret_cast<const uint8_t*>(row), reinterpret_cast<const uint8_t*>(row + K), 2 * kPrefetchAhead);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k));
      const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k + 8));
      __m256 w0, w1;
      if (w.bf16) {
        w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h0), 16));
        w1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h1), 16));
      } else {
        w0 = _mm256_cvtph_ps(h0);
        w1 = _mm256_cvtph_ps(h1);
      }
      acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + k), acc0);
      acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + k + 8), acc1);
    }
    float acc = hsum256(_mm256_add_ps(acc0, acc1));
    for (; k < K; ++k) acc += (w.bf16 ? std::bit_cast<float>(uint32_t{row[k]} << 16) : _cvtsh_ss(row[k])) * x[k];
    y[r] = acc;
  }
}

}  // namespace kllens::qk
