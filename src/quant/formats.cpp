#include "quant/formats.h"

#include <array>
#include <cctype>

#include "core/error.h"
#include "quant/ggml_quants.h"
#include "quant/ggml_refined.h"

namespace kllens {

namespace {

using F = QuantFormat;
namespace g = ggml;

// ggml type ids: ggml/include/ggml.h (enum ggml_type) at llama.cpp 3f545becc.
constexpr std::array<BlockFormatTraits, 12> kFormats{{
    {F::kQ4_0, "q4_0", 2, 32, sizeof(BlockQ4_0), 4, true, g::quantize_row_q4_0, g::dequantize_row_q4_0, F::kF32},
    {F::kQ4_1, "q4_1", 3, 32, sizeof(g::BlockQ4_1), 4, true, g::quantize_row_q4_1, g::dequantize_row_q4_1, F::kF32},
    {F::kQ5_0, "q5_0", 6, 32, sizeof(g::BlockQ5_0), 5, true, g::quantize_row_q5_0, g::dequantize_row_q5_0, F::kF32},
    {F::kQ5_1, "q5_1", 7, 32, sizeof(g::BlockQ5_1), 5, true, g::quantize_row_q5_1, g::dequantize_row_q5_1, F::kF32},
    {F::kQ8_0, "q8_0", 8, 32, sizeof(BlockQ8_0), 8, false, g::quantize_row_q8_0, g::dequantize_row_q8_0, F::kF32},
    {F::kQ2_K, "q2_K", 10, 256, sizeof(g::BlockQ2_K), 2, true, g::quantize_row_q2_K, g::dequantize_row_q2_K, F::kQ4_0},
    {F::kQ3_K, "q3_K", 11, 256, sizeof(g::BlockQ3_K), 3, true, g::quantize_row_q3_K, g::dequantize_row_q3_K, F::kQ4_0},
    {F::kQ4_K, "q4_K", 12, 256, sizeof(g::BlockQ4_K), 4, true, g::quantize_row_q4_K, g::dequantize_row_q4_K, F::kQ5_0, g::quantize_row_q4_K_refined},
    {F::kQ5_K, "q5_K", 13, 256, sizeof(g::BlockQ5_K), 5, true, g::quantize_row_q5_K, g::dequantize_row_q5_K, F::kQ5_1, g::quantize_row_q5_K_refined},
    {F::kQ6_K, "q6_K", 14, 256, sizeof(g::BlockQ6_K), 6, true, g::quantize_row_q6_K, g::dequantize_row_q6_K, F::kQ8_0, g::quantize_row_q6_K_refined},
    {F::kIQ4_NL, "iq4_nl", 20, 32, sizeof(g::BlockIQ4_NL), 4, true, g::quantize_row_iq4_nl, g::dequantize_row_iq4_nl, F::kF32},
    {F::kIQ4_XS, "iq4_xs", 23, 256, sizeof(g::BlockIQ4_XS), 4, true, g::quantize_row_iq4_xs, g::dequantize_row_iq4_xs, F::kIQ4_NL},
}};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

std::span<const BlockFormatTraits> block_formats() { return kFormats; }

QuantizeRowFn row_quantizer(const QuantScheme& scheme) {
  const BlockFormatTraits* t = block_traits(scheme.format);
  KLLENS_CHECK(t, "{} is not a block format", scheme.to_string());
  if (!scheme.refined) return t->quantize_row;
  KLLENS_CHECK(t->quantize_row_refined, "{} has no refined quantizer", t->name);
  return t->quantize_row_refined;
}

const BlockFormatTraits* block_traits(QuantFormat format) {
  for (const auto& t : kFormats)
    if (t.format == format) return &t;
  return nullptr;
}

const BlockFormatTraits* block_traits_by_name(std::string_view name) {
  for (const auto& t : kFormats)
    if (iequals(t.name, name)) return &t;
  return nullptr;
}

const BlockFormatTraits* block_traits_by_ggml_type(uint32_t ggml_type) {
  for (const auto& t : kFormats)
    if (t.ggml_type == ggml_type) return &t;
  return nullptr;
}

QuantScheme llama_shape_fallback(const QuantScheme& scheme, int64_t cols) {
  const BlockFormatTraits* t = block_traits(scheme.format);
  if (!t || cols % t->block_elems == 0) return scheme;
  if (t->shape_fallback == QuantFormat::kF32)
    fail("a row of {} elements cannot hold {} blocks of {} and llama-quantize has no fallback for "
         "{}",
         cols, t->name, t->block_elems, t->name);
  const BlockFormatTraits* f = block_traits(t->shape_fallback);
  if (cols % f->block_elems == 0) {
    QuantScheme fallback = QuantScheme::parse(f->name);
    fallback.refined = scheme.refined && f->quantize_row_refined != nullptr;
    return fallback;
  }
  return QuantScheme::parse("f16");
}

QuantScheme stored_scheme(const QuantScheme& scheme, int64_t cols) {
  const BlockFormatTraits* t = block_traits(scheme.format);
  if (!t || cols % t->block_elems == 0) return scheme;
  if (t->shape_fallback == QuantFormat::kF32) return QuantScheme::parse("f16");
  return llama_shape_fallback(scheme, cols);
}

gguf::GgmlType gguf_storage_type(const QuantScheme& requested, int64_t ne0) {
  using gguf::GgmlType;
  const QuantScheme s = stored_scheme(requested, ne0);
  switch (s.format) {
    case QuantFormat::kBF16: return GgmlType::kBF16;
    case QuantFormat::kF16: return GgmlType::kF16;
    case QuantFormat::kF32: return GgmlType::kF32;
    case QuantFormat::kInt:
      if (ne0 % 32 != 0) return GgmlType::kF16;
      if (s.bits <= 4) return s.symmetric ? GgmlType::kQ4_0 : GgmlType::kQ4_1;
      return GgmlType::kQ8_0;
    default: return static_cast<GgmlType>(block_traits(s.format)->ggml_type);
  }
}

}  // namespace kllens
