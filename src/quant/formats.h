// The one table of ggml block formats: what each format is (block length and bytes, ggml's type
// id and name, nominal bits) and where its code is (row quantizer and dequantizer), plus
// llama-quantize's shape fallback for a row its blocks cannot divide. Scheme parsing, sizes,
// quantization, the sweep, the planner, GGUF export and loading all read this table; adding a
// format is a block struct in ggml_quants.h, its two functions and one row here.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "io/gguf.h"
#include "quant/scheme.h"

namespace kllens {

using QuantizeRowFn = void (*)(const float* x, void* dst, int64_t n, const float* importance);
using DequantizeRowFn = void (*)(const void* src, float* y, int64_t n);

struct BlockFormatTraits {
  QuantFormat format;
  std::string_view name;        // ggml's type name, also the kllens scheme spelling: "q4_K"
  uint32_t ggml_type;           // ggml's type id (GGUF tensor info)
  int block_elems;              // 32 or 256 consecutive elements of a row
  int block_bytes;              // sizeof the block struct (static_asserted against ggml's)
  int bits;                     // nominal code bits (for QuantScheme::bits)
  bool uses_importance;         // whether an importance vector changes the bytes
  QuantizeRowFn quantize_row;
  DequantizeRowFn dequantize_row;
  // llama-quantize's replacement when ne0 % block_elems != 0 (tensor_type_fallback); kF32 = none
  // (llama-quantize refuses the tensor). A fallback that still cannot divide the row becomes f16.
  QuantFormat shape_fallback;
  // kllens' refined quantizer for this layout (the scheme "<name>:refined",
  // quant/ggml_refined.h), or nullptr where kllens has none.
  QuantizeRowFn quantize_row_refined = nullptr;
};

std::span<const BlockFormatTraits> block_formats();
// The row quantizer a block scheme uses: ggml's, or kllens' refined one for "<name>:refined".
QuantizeRowFn row_quantizer(const QuantScheme& scheme);
// nullptr when `format` is not a block format.
const BlockFormatTraits* block_traits(QuantFormat format);
// By ggml name, case-insensitively; nullptr when unknown.
const BlockFormatTraits* block_traits_by_name(std::string_view name);
const BlockFormatTraits* block_traits_by_ggml_type(uint32_t ggml_type);

// What llama-quantize stores for a matrix with rows of `cols` elements asked to be `scheme`: the
// scheme itself when its blocks divide the row, else its fallback chain (q4_K -> q5_0, q5_K ->
// q5_1, q6_K -> q8_0, q2_K/q3_K -> q4_0, iq4_xs -> iq4_nl, then f16). Non-block schemes are
// returned unchanged. Throws Error when the scheme has no fallback (q4_0, q5_0, q8_0, iq4_nl,
// q4_1, q5_1 on a row that is not a multiple of 32), as llama-quantize does.
QuantScheme llama_shape_fallback(const QuantScheme& scheme, int64_t cols);

// The scheme a matrix with rows of `cols` elements is actually stored and measured in when asked
// for `scheme`: the scheme itself when it can hold the rows; for a block format that cannot,
// llama-quantize's fallback (above), or f16 for the formats llama-quantize has none for (kllens
// stores those as f16 rather than refuse). The sweep measures, the planner sizes, evaluation
// applies and the GGUF export writes this one scheme, so they never disagree.
QuantScheme stored_scheme(const QuantScheme& scheme, int64_t cols);

// The ggml type a GGUF file holds a matrix of rows of ne0 elements in when asked for `scheme`:
// the block format of stored_scheme, BF16/F16/F32 for the keep schemes, and for intB (which has
// no ggml type) the nearest block type, Q4_0 (sym, B <= 4), Q4_1 (asym, B <= 4) or Q8_0, or F16
// when ne0 is not a multiple of 32 (export/gguf_export.h).
gguf::GgmlType gguf_storage_type(const QuantScheme& scheme, int64_t ne0);

}  // namespace kllens
