// ggml's block formats, byte for byte (ggml/src/ggml-common.h at llama.cpp 3f545becc), with
// quantizers and dequantizers that reproduce ggml's own bytes exactly, with and without an
// importance vector (the golden file data/fixtures/ggml-quants holds ggml's output; tested).
//
// Every function works on one row of n elements (n a multiple of the format's block length) and
// never crosses a row, as llama-quantize never does. `qw` is the importance vector of that row's
// columns (n floats, llama.cpp's imatrix entry for the tensor) or nullptr; formats that ignore it
// (q8_0) accept it. Which of ggml's algorithms runs in each case is in
// ../shared/docs/llamacpp-formats-and-hybrids.md §1.5 (ref path without qw, the `_impl` path with
// it) and in docs/quantization.md.
//
// Why hand-written: no Debian package ships ggml's quantizers as a library, and kllens must write
// exactly the bytes llama.cpp writes so its files and recipes are interchangeable with
// llama-quantize's. The code follows the documented algorithms; it is not a copy.
//
// This file depends on nothing but the standard library and core/dtype.h (fp16 conversion with
// ggml's rounding: nearest even, saturating to inf).
#pragma once

#include <cstdint>

#include "quant/blocks.h"

namespace kllens::ggml {

inline constexpr int kQK_K = 256;
inline constexpr int kKScaleSize = 12;

// --- legacy 32-element blocks -------------------------------------------------------------------
// BlockQ4_0 and BlockQ8_0 are in quant/blocks.h.

struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20, "BlockQ4_1 must match ggml's block_q4_1");

struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22, "BlockQ5_0 must match ggml's block_q5_0");

struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24, "BlockQ5_1 must match ggml's block_q5_1");

struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockIQ4_NL) == 18, "BlockIQ4_NL must match ggml's block_iq4_nl");

// --- 256-element super-blocks -------------------------------------------------------------------

struct BlockQ2_K {
  uint8_t scales[16];  // low nibble: scale code, high nibble: min code
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "BlockQ2_K must match ggml's block_q2_K");

struct BlockQ3_K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "BlockQ3_K must match ggml's block_q3_K");

struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4_K) == 144, "BlockQ4_K must match ggml's block_q4_K");

struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5_K) == 176, "BlockQ5_K must match ggml's block_q5_K");

struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "BlockQ6_K must match ggml's block_q6_K");

struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(BlockIQ4_XS) == 136, "BlockIQ4_XS must match ggml's block_iq4_xs");

// The 16 non-linear levels of IQ4_NL / IQ4_XS.
inline constexpr int8_t kValuesIQ4NL[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// --- row quantizers (dst: n / block_elems blocks) and dequantizers (y: n floats) ------------------
// Legacy and IQ4 formats: src/quant/ggml_legacy.cpp. K-quants: src/quant/ggml_kquants.cpp.

void quantize_row_q4_0(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q4_1(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q5_0(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q5_1(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q8_0(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_iq4_nl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_iq4_xs(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q2_K(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q3_K(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q4_K(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q5_K(const float* x, void* dst, int64_t n, const float* qw);
void quantize_row_q6_K(const float* x, void* dst, int64_t n, const float* qw);

void dequantize_row_q4_0(const void* src, float* y, int64_t n);
void dequantize_row_q4_1(const void* src, float* y, int64_t n);
void dequantize_row_q5_0(const void* src, float* y, int64_t n);
void dequantize_row_q5_1(const void* src, float* y, int64_t n);
void dequantize_row_q8_0(const void* src, float* y, int64_t n);
void dequantize_row_iq4_nl(const void* src, float* y, int64_t n);
void dequantize_row_iq4_xs(const void* src, float* y, int64_t n);
void dequantize_row_q2_K(const void* src, float* y, int64_t n);
void dequantize_row_q3_K(const void* src, float* y, int64_t n);
void dequantize_row_q4_K(const void* src, float* y, int64_t n);
void dequantize_row_q5_K(const void* src, float* y, int64_t n);
void dequantize_row_q6_K(const void* src, float* y, int64_t n);

// --- the packed sub-block scales (the quantizers, dequantizers and the packed kernels' row
// decoders all read them through these) ---------------------------------------------------------

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (of 8) from the 12 scale bytes.
inline void unpack_k4_scale(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Q3_K: the signed scale of sub-block j (of 16): its 6-bit code - 32.
inline int unpack_q3_scale(const uint8_t* scales, int j) {
  const int low = j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4;
  const int high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// ggml's nearest_int: round half to even via the 1.5·2^23 trick; valid for |f| <= 4194303.
inline int nearest_int(float f) {
  float val = f + 12582912.0f;
  int32_t i;
  static_assert(sizeof(i) == sizeof(val));
  __builtin_memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

inline constexpr float kGroupMaxEps = 1e-15f;

}  // namespace kllens::ggml
