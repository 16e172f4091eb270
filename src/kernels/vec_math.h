// Elementwise math written so that g++ vectorises it (no libm calls, no branches).
#pragma once

#include <bit>
#include <cstdint>

namespace kllens::ops {

// exp(x) for float32 with relative error below 2e-7 (about 2 ulp) over the whole range; inputs
// below -87.3 give 0-ish subnormal-free results, above 88.7 are clamped. Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2/2, then a degree-6 Taylor/Horner polynomial for e^r
// (truncation error r^7/7! < 1.3e-7 on that interval), scaled by 2^n through the exponent bits.
// Why hand-written: libm's expf is a scalar call the compiler cannot vectorise, and the SSM scans
// evaluate one exp per (channel, state, token).
inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  // Round to nearest even by the 1.5*2^23 trick (|x log2 e| < 2^22 here); unlike roundevenf it
  // vectorises with g++ 12.
  const float shifter = 12582912.0f;
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

}  // namespace kllens::ops

namespace kllens::ops {

// Natural log for finite x > 0, relative error about 1e-7. x = m 2^e with m in [sqrt(1/2),
// sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172, by its odd series to s^9 (the
// first dropped term, 2 s^11 / 11, is below 7e-10).
inline float log_fast(float x) {
  int32_t bits = std::bit_cast<int32_t>(x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p + static_cast<float>(e) * 0.693147180559945f;
}

// softplus with torch's threshold (x > 20 returns x). log1p(y), y = e^x, is evaluated as
// log(u) * y / (u - 1) with u = 1 + y, which keeps full relative precision for tiny y (Goldberg's
// trick): dt = softplus(.) is often 1e-3..1e-4, where log(1 + y) alone would lose digits.
inline float softplus_fast(float x) {
  const float y = exp_fast(x < 20.0f ? x : 20.0f);
  const float u = 1.0f + y;
  const float l = u == 1.0f ? y : log_fast(u) * (y / (u - 1.0f));
  return x > 20.0f ? x : l;
}

inline float silu_fast(float x) { return x / (1.0f + exp_fast(-x)); }

}  // namespace kllens::ops
