// Internal to quant/qmatmul*.cpp: the row kernels of the decode (matrix × vector) path, one set
// per instruction set. The AVX2 and AVX-512 files compile their kernels with target attributes,
// so the library runs on any x86-64 and qmatmul.cpp picks a set at run time.
#pragma once

#include <cstdint>

#include "quant/qmatmul.h"

namespace kllens::qk {

// How a row's 32-element blocks of codes are laid out. Every layout is read as unsigned codes u
// with a per-block (scale s, offset o): w = s * u + o.
enum class CodeLayout : uint8_t {
  kQ8_0,       // ggml blocks {f16 d, int8 qs[32]}: u = qs + 128, s = d, o = -128 d
  kQ4_0,       // ggml blocks {f16 d, u8 qs[16]}: u = low nibbles (elements 0..15), then high
               // nibbles (16..31); s = d, o = -8 d
  kU8,         // kllens int8: one byte per element, row-major; s, o = -z s per group
  kU4EvenOdd,  // kllens int4: byte j of a block holds elements 2j (low) and 2j+1 (high)
};

struct IntRows {
  CodeLayout layout = CodeLayout::kU8;
  int64_t rows = 0, cols = 0;
  const uint8_t* data = nullptr;
  // kU8 / kU4EvenOdd: one scale (f16 bits or f32) and zero point per group, row-major.
  const uint16_t* scales_f16 = nullptr;
  const float* scales_f32 = nullptr;
  const uint8_t* zeros = nullptr;  // null: symmetric, zero = default_zero
  int default_zero = 0;
  int64_t blocks_per_group = 1;
  int64_t groups_per_row = 1;
  int group_shift = 0;  // log2(blocks_per_group) when groups_per_row > 1 (a power of two then)

  int64_t blocks_per_row() const { return cols / 32; }
  // The scale / zero-point index of block b of row r, without a division in the inner loop.
  int64_t group_of_block(int64_t r, int64_t b) const {
    return r * groups_per_row + (groups_per_row == 1 ? 0 : b >> group_shift);
  }
};

// Float weights in 16 bits.
struct HalfRows {
  bool bf16 = true;  // else IEEE f16
  int64_t rows = 0, cols = 0;
  const uint16_t* data = nullptr;
};

// y[r] = Σ_b d_a[b] (s_b Σ u·q_a + o_b Σ q_a), r in [r0, r1).
void int_rows_scalar(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1);
void int_rows_avx2(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1);
void int_rows_avx512(const IntRows& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1);

// y[r] = Σ_k float(w[r, k]) x[k], r in [r0, r1).
void half_rows_scalar(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1);
void half_rows_avx2(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1);
void half_rows_avx512(const HalfRows& w, const float* x, float* y, int64_t r0, int64_t r1);

// One weight row decoded for the integer path (quant/qmatmul_decode_inl.h): cols unsigned codes
// u in natural element order, and per 16 consecutive elements j a scale and an offset, so that
// w = scale16[j] u + offset16[j]. Every integer and ggml block format decodes into this.
struct DecodedRow {
  uint8_t* codes;
  float* scale16;
  float* offset16;
};

// Whether w decodes into DecodedRow: intB with groups of a multiple of 16 (or g0) and every ggml
// block format, with cols a multiple of 32 (the activation blocks).
bool decodable(const QTensor& w);
// Row r of w; the ISA versions are the same code compiled for that instruction set.
void decode_row_scalar(const QTensor& w, int64_t r, DecodedRow out);
void decode_row_avx2(const QTensor& w, int64_t r, DecodedRow out);
void decode_row_avx512(const QTensor& w, int64_t r, DecodedRow out);

// y[t * y_stride] = Σ_j Σ_{k in 16-group j} d_a(k) q_t[k] (scale16[j] u[k] + offset16[j]) for
// the T activation rows acts[0..T): one decoded weight row against T tokens. codes_8bit: some
// code exceeds 127 (q8_0, iq4, int8; AVX2 multiplies those through signed bytes).
void coded_dot_scalar(const DecodedRow& w, int64_t K, bool codes_8bit, const ActivationQ8* acts,
                      int64_t T, float* y, int64_t y_stride);
void coded_dot_avx2(const DecodedRow& w, int64_t K, bool codes_8bit, const ActivationQ8* acts,
                    int64_t T, float* y, int64_t y_stride);
void coded_dot_avx512(const DecodedRow& w, int64_t K, bool codes_8bit, const ActivationQ8* acts,
                      int64_t T, float* y, int64_t y_stride);

// AVX-512 kernels that unpack a format's blocks in registers (no decoded row): q4_K, q5_K, q6_K.
// Rows [r0, r1) of w against the T activation rows acts; y[t * y_stride + r].
bool has_fused_avx512(QuantFormat format);
void fused_rows_avx512(const QTensor& w, const ActivationQ8* acts, int64_t T, float* y, int64_t y_stride,
                       int64_t r0, int64_t r1);

// AVX512_BF16 (quant/qmatmul_avx512bf16.cpp): activations rounded to bf16 (K values, nearest
// even), and rows [r0, r1) of a bf16 matrix {rows, K} against T such rows (x_stride apart):
// y[t * y_stride + r].
void activations_to_bf16_avx512bf16(const float* x, int64_t K, uint16_t* out);
void bf16_rows_avx512bf16(const uint16_t* w, int64_t K, const uint16_t* x, int64_t x_stride, int64_t T,
                          float* y, int64_t y_stride, int64_t r0, int64_t r1);

// AVX-512 decode (one token, activations in blocks of 32) that unpacks q5_0, q5_1, q4_1 and
// iq4_nl blocks in registers: y[r] for rows [r0, r1).
bool has_fused_decode_avx512(QuantFormat format);
void fused_decode_avx512(const QTensor& w, const ActivationQ8& a, float* y, int64_t r0, int64_t r1);

// The scale and offset of block b of row r (every layout), in float32.
void block_scale_offset(const IntRows& w, int64_t r, int64_t b, float* s, float* o);
// Block b of row r as 32 unsigned codes in the order the activations use.
void block_codes(const IntRows& w, int64_t r, int64_t b, uint8_t* u);

}  // namespace kllens::qk
