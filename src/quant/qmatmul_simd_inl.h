// Internal to qmatmul_avx2.cpp and qmatmul_avx512.cpp: helpers both kernel sets use. Each file
// includes this after its own `#pragma GCC target`, so the helpers are compiled for that
// instruction set; they have internal linkage (an unnamed namespace) so the two compilations
// never merge into one definition.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/qmatmul_kernels.h"

namespace kllens::qk {
namespace {

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// A float16 stored at p (unaligned, as in ggml blocks).
inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 bytes of packed nibbles -> 32 codes: the low nibbles, then the high ones.
inline __m256i nibbles(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// Software prefetch distance along a weight stream: without it decode reached about half of the
// machine's read bandwidth (the hardware prefetcher alone does not run far enough ahead).
constexpr int64_t kPrefetchAhead = 16384;

// Byte offset of block b of row r in w.data.
template <CodeLayout L>
inline int64_t block_offset(const IntRows& w, int64_t r, int64_t nb, int64_t b) {
  if constexpr (L == CodeLayout::kQ8_0) return (r * nb + b) * 34;
  else if constexpr (L == CodeLayout::kQ4_0) return (r * nb + b) * 18;
  else if constexpr (L == CodeLayout::kU8) return r * w.cols + 32 * b;
  else return (r * w.cols + 32 * b) / 2;
}

// Prefetches the bytes kPrefetchAhead past [begin, end).
inline void prefetch_ahead(const uint8_t* begin, const uint8_t* end, int64_t distance = kPrefetchAhead) {
  for (const uint8_t* p = begin + distance; p < end + distance; p += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
}

}  // namespace
}  // namespace kllens::qk
