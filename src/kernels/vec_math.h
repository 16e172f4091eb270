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
