// QuantScheme: the value type naming how one weight matrix is stored. It is parsed from, and
// printed to, a stable text form used in plan files and reports (never rename a spelling):
//   intB[:gG][:sym|asym][:s16|s32]  round-to-nearest integer codes, B in 2..8, groups of G
//                                   consecutive elements of a row (G = 0: one group per row)
//   q4_0 q4_1 q5_0 q5_1 q8_0        ggml's block formats, bit-exact (blocks of 32 along a row)
//   q2_K q3_K q4_K q5_K q6_K        ggml's K-quants (super-blocks of 256 along a row)
//   iq4_nl iq4_xs                   ggml's non-linear 4-bit formats (32 / 256)
//   q4_K:refined q5_K:refined q6_K:refined
//                                   ggml's layout, quantized by kllens' refined quantizer
//                                   (quant/ggml_refined.h): same bytes per block, lower weighted
//                                   error; llama.cpp reads them as q4_K/q5_K/q6_K
//   bf16, f16, f32                  "keep" schemes: the weight rounded to that float type
// The exact numerics of each scheme are in docs/quantization.md. Every ggml block format is one
// row of the traits table in quant/formats.h (block length, bytes, quantizer, dequantizer,
// llama-quantize's shape fallback), which this file reads for sizes and spellings. This file
// knows no tensor names and no kernels.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kllens {

enum class QuantFormat : uint8_t {
  kInt, kQ8_0, kQ4_0, kBF16, kF16, kF32,
  // further ggml block formats (quant/formats.h)
  kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K, kIQ4_NL, kIQ4_XS,
};

struct QuantScheme {
  QuantFormat format = QuantFormat::kF32;
  // kInt: code bits B (2..8). Block formats: their nominal code bits (q4_K: 4, q6_K: 6, ...),
  // bf16/f16: 16, f32: 32.
  int bits = 32;
  // kInt: G as written (0 = one group per row); block formats: the block length (32 or 256);
  // keep schemes: 0.
  int group_size = 0;
  // kInt: symmetric codes in [-2^(B-1), 2^(B-1)-1] (true) or asymmetric min/max codes in
  // [0, 2^B-1] with a uint8 zero point per group (false). true for every other format.
  bool symmetric = true;
  // kInt: scales stored as float16 (":s16", the default) or float32 (":s32").
  // block formats: true (ggml's fp16 d); keep schemes: false (no scales).
  bool scale_f16 = false;
  // Block formats: quantized by kllens' refined quantizer instead of ggml's (":refined"; only the
  // formats whose traits row has one). false for every other scheme.
  bool refined = false;

  // Parses the text form; throws UsageError listing the accepted forms. Case-insensitive; the
  // optional int fields may come in any order but at most once each.
  static QuantScheme parse(std::string_view text);
  // An integer scheme; KLLENS_CHECK on out-of-range arguments (use parse for user input).
  static QuantScheme make_int(int bits, int group_size, bool symmetric = true,
                              bool scale_f16 = true);

  // Canonical stable spelling, e.g. "int4:g32:sym:s16", "int8:g0:asym:s32", "q4_0", "bf16".
  // parse(to_string()) == *this for every valid scheme.
  std::string to_string() const;

  bool is_int() const { return format == QuantFormat::kInt; }
  // A ggml block format (a row of quant/formats.h).
  bool is_block() const { return !is_int() && format != QuantFormat::kBF16 &&
                                 format != QuantFormat::kF16 && format != QuantFormat::kF32; }
  bool is_keep() const { return !is_int() && !is_block(); }

  // Elements per group for a row of `cols` elements: G when 0 < G and G divides cols, else cols
  // (one group per row). Block formats: the block length. Keep schemes: cols.
  int64_t effective_group(int64_t cols) const;
  // Number of groups (or ggml blocks) per row; 0 when cols == 0 or for keep schemes.
  int64_t groups_per_row(int64_t cols) const;

  // Whether a [rows, cols] matrix can be stored in this scheme (block formats need cols to be a
  // multiple of their block: 32, or 256 for the K-quants and iq4_xs).
  bool supports(int64_t cols) const;
  // Throws Error explaining why when !supports(cols) (`what` names the tensor for the message).
  void check_shape(int64_t rows, int64_t cols, std::string_view what = "tensor") const;

  // Exact bytes of the packed form of a [rows, cols] matrix: for intB ceil(B*rows*cols/8) bytes
  // of bit-packed codes + 2 or 4 bytes of scale per group + 1 byte of zero point per group
  // (asym); for block formats their block bytes per block (q8_0 34 per 32, q4_K 144 per 256,
  // ...); for keep schemes 2 or 4 bytes per
  // element. Throws Error when !supports(cols). QTensor::storage_bytes() equals this.
  int64_t storage_bytes(int64_t rows, int64_t cols) const;
  // Bits per weight of one row of `cols` elements (codes + scales + zero points, no rounding up
  // to bytes): int4:g32:s16 = 4.5, q4_0 = 4.5, q8_0 = 8.5, q4_K = 4.5, q6_K = 6.5625, bf16 = 16.
  // Throws when !supports.
  double bits_per_weight(int64_t cols) const;

  bool operator==(const QuantScheme&) const = default;
};

}  // namespace kllens
