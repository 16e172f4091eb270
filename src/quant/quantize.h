// Reference quantization of a row-major [rows, cols] float32 matrix (rows = output rows, cols =
// product of the remaining dims) into a QTensor, dequantization, and fake quantization
// (quantize + dequantize in place). fake_quantize(w) is bit-identical to
// dequantize(quantize(w)): both go through the same per-group code in quantize.cpp (tested).
// The numerics of every scheme are specified in docs/quantization.md.
//
// Errors: a matrix the scheme cannot hold (a block format whose block does not divide cols), a non-finite weight,
// or a float16 scale that overflows throws kllens::Error (the f32 keep scheme copies verbatim
// and checks nothing). After a throw from fake_quantize the contents of w are unspecified.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/blocks.h"
#include "quant/scheme.h"

namespace kllens {

// The packed form of one matrix. Sizes are exact: storage_bytes() ==
// scheme.storage_bytes(rows, cols).
struct QTensor {
  QuantScheme scheme;
  int64_t rows = 0;
  int64_t cols = 0;
  // intB: the codes as one little-endian bit stream over the whole matrix, element e (row-major)
  //       at bits [e*B, (e+1)*B) (bit k = bit k%8 of byte k/8), stored unsigned: code + 2^(B-1)
  //       for sym, code for asym; ceil(B*rows*cols/8) bytes. B = 4: element 2i is the low nibble.
  // block formats: rows * cols/block ggml blocks (quant/ggml_quants.h), row after row (GGUF's
  //       layout).
  // bf16/f16/f32: the rounded values, 2 or 4 bytes each.
  std::vector<uint8_t> data;
  // intB only, one per group in (row, group) order: the float16 bits (s16) or floats (s32).
  std::vector<uint16_t> scales_f16;
  std::vector<float> scales_f32;
  // intB asym only, one per group: the zero point z in [0, 2^B - 1].
  std::vector<uint8_t> zero_points;

  int64_t group_size() const { return scheme.effective_group(cols); }
  int64_t groups_per_row() const { return scheme.groups_per_row(cols); }
  // intB: the scale of a group as float32 (the value decoding multiplies by).
  float scale(int64_t row, int64_t group) const;
  // intB: the signed code of an element (sym: -2^(B-1)..2^(B-1)-1, asym: 0..2^B-1).
  int code(int64_t row, int64_t col) const;
  // intB: sets one code (for tests and tools that build a QTensor by hand).
  void set_code(int64_t row, int64_t col, int code);
  int64_t storage_bytes() const;
  const BlockQ8_0* blocks_q8_0() const;  // q8_0 only
  const BlockQ4_0* blocks_q4_0() const;  // q4_0 only
};

// importance: ggml's importance vector for the columns (cols floats, the imatrix entry of this
// matrix) or nullptr. The ggml block formats use it exactly as ggml's quantizers do (q8_0 ignores
// it, as ggml does); the intB and keep schemes ignore it.
QTensor quantize(const QuantScheme& scheme, const float* w, int64_t rows, int64_t cols,
                 const float* importance = nullptr);
// out: rows * cols floats.
void dequantize(const QTensor& q, float* out);
// out: cols floats.
void dequantize_row(const QTensor& q, int64_t row, float* out);
// intB: the stored codes of one row (code + 2^(B-1) for sym, the code for asym), cols bytes.
void unpack_int_codes(const QTensor& q, int64_t row, uint8_t* out);
// q8_0 / q4_0 blocks moved into kllens' int8:g32:sym:s16 / int4:g32:sym:s16 layout: the same
// codes and the same float16 scales, in separate arrays, so dequantize() gives the same floats bit
// for bit (tested). The packed kernels read this layout faster than ggml's interleaved blocks
// (quant/qmatmul.h). Any other scheme is returned unchanged.
QTensor blocks_as_int_layout(QTensor q);

// In place; equal bit for bit to dequantize(quantize(scheme, w, rows, cols)). Parallel over rows
// (OpenMP).
void fake_quantize(const QuantScheme& scheme, float* w, int64_t rows, int64_t cols,
                   const float* importance = nullptr);

}  // namespace kllens
