// ggml's Q8_0 and Q4_0 storage blocks, byte for byte (ggml/src/ggml-common.h), so a QTensor in
// these formats is exported to GGUF with a memcpy. Each block covers 32 consecutive elements of
// a row; `d` is an IEEE float16 scale stored as its bit pattern (little-endian host assumed).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace kllens {

static_assert(std::endian::native == std::endian::little,
              "quant blocks and packed codes assume a little-endian host (as GGUF does)");

inline constexpr int kQK8_0 = 32;
inline constexpr int kQK4_0 = 32;

// x[j] = d * qs[j].
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "BlockQ8_0 must match ggml's block_q8_0");

// x[j] = d * ((qs[j] & 0xF) - 8), x[j + 16] = d * ((qs[j] >> 4) - 8), j < 16.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "BlockQ4_0 must match ggml's block_q4_0");

// C's roundf (half away from zero), as q8_0 uses it, written so that it vectorizes: start from
// nearbyint (ties to even) and move the ties that went toward zero one step away from zero.
// v - r is exact (|v - r| <= 1/2 and r = 0 or v/2 <= r <= 2v), so the tie test is exact
// (tested against std::round).
inline float round_half_away(float v) {
  const float r = std::nearbyint(v);
  return std::fabs(v - r) == 0.5f && std::fabs(r) < std::fabs(v) ? r + std::copysign(1.0f, v) : r;
}

// llama.cpp's reference quantizers (quantize_row_q8_0_ref / quantize_row_q4_0_ref, one block)
// and dequantizers, exactly; see quantize.cpp for the reference lines.
void quantize_block_q8_0(const float* x, BlockQ8_0* block);
void quantize_block_q4_0(const float* x, BlockQ4_0* block);
void dequantize_block_q8_0(const BlockQ8_0& block, float* out);
void dequantize_block_q4_0(const BlockQ4_0& block, float* out);

}  // namespace kllens
