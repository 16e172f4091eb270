// Element types of checkpoint files and the exact conversions between them.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace kllens {

enum class DType : uint8_t { kF32, kF16, kBF16, kF64, kI8, kU8, kI16, kI32, kI64, kBool };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);            // safetensors spelling: "F32", "BF16", ...
std::optional<DType> parse_safetensors_dtype(std::string_view name);

inline float bf16_to_f32(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

// Round to nearest, ties to even (what torch does for .to(bfloat16)); NaN stays NaN.
inline uint16_t f32_to_bf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t bits);
// Round to nearest, ties to even, with subnormals and overflow to infinity (IEEE binary16).
uint16_t f32_to_f16(float value);

// Converts n elements of a supported floating dtype (F32, F16, BF16, F64) to float32.
void convert_to_f32(DType dtype, const std::byte* src, size_t n, float* dst);

}  // namespace kllens
