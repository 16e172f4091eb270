// bf16 weights times bf16-rounded activations with AVX512_BF16's vdpbf16ps (two products per
// float lane, summed into float32 accumulators), for prefill of bf16 matrices. Compiled for that
// extension by the pragma below; qmatmul.cpp calls in here only when the CPU has it.
//
// What it does to the numbers: each activation is rounded to bf16 (nearest even, relative error at
// most 2^-9); the products of two bf16 values are exact in float32 and are summed in float32, so
// an output moves by at most 2^-9 Σ|w x| plus float32 summation error (tested). The weights are
// the file's bf16 values, unchanged. Decode keeps float activations (the weights are widened in
// registers), so a bf16 file's decode and prefill differ by that activation rounding.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "quant/qmatmul_kernels.h"

namespace kllens::qk {

namespace {

// 32 elements starting at k as bf16 (the last step of a row masked to its length).
inline __m512i load_bf16(const uint16_t* p, int64_t n) {
  if (n >= 32) return _mm512_loadu_si512(p);
  return _mm512_maskz_loadu_epi16(static_cast<__mmask32>((uint64_t{1} << n) - 1), p);
}

template <int NT>
void bf16_tile(const uint16_t* w, int64_t K, const uint16_t* x, int64_t x_stride, float* y, int64_t y_stride) {
  __m512 acc[NT];
  for (int i = 0; i < NT; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    const __m512bh wv = reinterpret_cast<__m512bh>(load_bf16(w + k, K - k));
    for (int i = 0; i < NT; ++i)
      acc[i] = _mm512_dpbf16_ps(acc[i], wv, reinterpret_cast<__m512bh>(load_bf16(x + i * x_stride + k, K - k)));
  }
  for (int i = 0; i < NT; ++i) y[i * y_stride] = _mm512_reduce_add_ps(acc[i]);
}

}  // namespace

void activations_to_bf16_avx512bf16(const float* x, int64_t K, uint16_t* out) {
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
    std::memcpy(out + k, &v, 64);
  }
  for (; k < K; ++k) {
    // vcvtneps2bf16 on one lane: the same rounding as the vector form.
    const __m128bh v = _mm_cvtneps_pbh(_mm_set_ss(x[k]));
    std::memcpy(out + k, &v, 2);
  }
}

void bf16_rows_avx512bf16(const uint16_t* w, int64_t K, const uint16_t* x, int64_t x_stride, int64_t T,
                          float* y, int64_t y_stride, int64_t r0, int64_t r1) {
  // Tokens in tiles whose bf16 rows fit in 32 KiB of L1, rows inside: the panel's rows stay in L2
  // and are read from memory once, and a tile's activations stay in L1 while they pass. (Rows
  // outside made prefill bound by memory: the weights were streamed once per 4 tokens.)
  const int64_t tile = std::max<int64_t>(4, (int64_t{32} << 10) / (2 * x_stride) / 4 * 4);
  for (int64_t t0 = 0; t0 < T; t0 += tile) {
    const int64_t t1 = std::min(T, t0 + tile);
    for (int64_t r = r0; r < r1; ++r) {
      int64_t t = t0;
      for (; t + 4 <= t1; t += 4) bf16_tile<4>(w + r * K, K, x + t * x_stride, x_stride, y + t * y_stride + r, y_stride);
      for (; t < t1; ++t) bf16_tile<1>(w + r * K, K, x + t * x_stride, x_stride, y + t * y_stride + r, y_stride);
    }
  }
}

}  // namespace kllens::qk
