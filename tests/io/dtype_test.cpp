// The dtype table and the exact float conversions in core/dtype.h. The references here are
// independent of the code under test: binary16 values are decoded from their fields with ldexp
// in double precision, and (where the compiler has it) the hardware _Float16 type rounds floats.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace kllens {
namespace {

// binary16: sign, 5-bit exponent (bias 15), 10-bit mantissa; exponent 0 = subnormal/zero.
double half_reference(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -24);
  } else if (exponent == 31) {
    magnitude = mantissa ? std::numeric_limits<double>::quiet_NaN()
                         : std::numeric_limits<double>::infinity();
  } else {
    magnitude = std::ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

TEST(DType, TableSizesNamesAndParsing) {
  const struct {
    DType dtype;
    const char* name;
    size_t size;
  } expected[] = {{DType::kF32, "F32", 4}, {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
                  {DType::kF64, "F64", 8}, {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
                  {DType::kI16, "I16", 2}, {DType::kI32, "I32", 4}, {DType::kI64, "I64", 8},
                  {DType::kBool, "BOOL", 1}};
  for (const auto& e : expected) {
    EXPECT_EQ(dtype_size(e.dtype), e.size) << e.name;
    EXPECT_EQ(dtype_name(e.dtype), e.name);
    const auto parsed = parse_safetensors_dtype(e.name);
    ASSERT_TRUE(parsed.has_value()) << e.name;
    EXPECT_EQ(*parsed, e.dtype);
  }
  // The safetensors spelling is upper case and exact.
  for (const char* bad : {"f32", "F8_E9", "", "FLOAT", "F32 ", "bf16", "F8_E4M3"})
    EXPECT_FALSE(parse_safetensors_dtype(bad).has_value()) << bad;
}

TEST(DType, F16ToF32IsExactForEveryBitPattern) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    const double want = half_reference(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
      EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << std::hex << h;
    EXPECT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;  // -0 stays -0
  }
  // Landmarks, spelled out.
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));   // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));   // smallest normal
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
}

TEST(DType, F32ToF16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(back))) << std::hex << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      EXPECT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(DType, F32ToF16RoundsToNearestEven) {
  const float ulp_sub = std::ldexp(1.0f, -24);
  // Subnormal range: ties go to the even count of ulps.
  EXPECT_EQ(f32_to_f16(0.5f * ulp_sub), 0x0000);              // tie between 0 and 1 ulp -> 0
  EXPECT_EQ(f32_to_f16(std::nextafter(0.5f * ulp_sub, 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(1.5f * ulp_sub), 0x0002);              // tie between 1 and 2 -> 2
  EXPECT_EQ(f32_to_f16(2.5f * ulp_sub), 0x0002);              // tie between 2 and 3 -> 2
  EXPECT_EQ(f32_to_f16(-1.5f * ulp_sub), 0x8002);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);       // underflows to +0
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);      // and to -0
  // Largest subnormal + half an ulp is a tie with the smallest normal (even mantissa 0).
  EXPECT_EQ(f32_to_f16(1023.5f * ulp_sub), 0x0400);
  // Normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)), 0x3c01);
  // A carry out of the mantissa moves to the next binade.
  EXPECT_EQ(f32_to_f16(2.0f - std::ldexp(1.0f, -12)), 0x4000);
  // Overflow: 65504 is the largest half; 65520 is the tie with 2^16 and rounds to infinity.
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

#ifdef __FLT16_MAX__
// The compiler's _Float16 conversion is IEEE round-to-nearest-even: an independent oracle.
TEST(DType, F32ToF16MatchesCompilerFloat16) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 400000; ++i) {
    uint32_t b = bits(rng);
    // Concentrate on the exponents where halves live (2^-26 .. 2^17), plus the full range.
    if (i % 4 != 0) b = (b & 0x807fffffu) | ((98u + (b >> 23) % 46u) << 23);
    const float f = std::bit_cast<float>(b);
    if (std::isnan(f)) continue;
    const auto ref = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    ASSERT_EQ(f32_to_f16(f), ref) << "bits " << std::hex << b << " value " << f;
    ++checked;
  }
  EXPECT_GT(checked, 300000);
}
#endif

TEST(DType, BF16ToF32IsExactForEveryBitPattern) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float got = bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(std::bit_cast<uint32_t>(got), h << 16) << std::hex << h;
  }
}

TEST(DType, F32ToBF16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even mantissa (1).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(std::nextafter(1.0f + std::ldexp(1.0f, -8), 2.0f)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to infinity
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  // NaN stays NaN even when its payload is only in the low bits that are dropped.
  const float low_nan = std::bit_cast<float>(0x7f800001u);
  ASSERT_TRUE(std::isnan(low_nan));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(low_nan))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // Every bf16 survives the round trip.
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_bf16(f), h) << std::hex << h;
  }
}

TEST(DType, ConvertToF32HandlesEachFloatingDtype) {
  const std::vector<float> values = {0.0f, -1.5f, 3.25f, 65504.0f, std::ldexp(1.0f, -24)};
  std::vector<float> out(values.size());

  convert_to_f32(DType::kF32, reinterpret_cast<const std::byte*>(values.data()), values.size(),
                 out.data());
  EXPECT_EQ(out, values);

  std::vector<uint16_t> halves, bf;
  for (float v : values) halves.push_back(f32_to_f16(v));
  convert_to_f32(DType::kF16, reinterpret_cast<const std::byte*>(halves.data()), halves.size(),
                 out.data());
  EXPECT_EQ(out, values);  // all exactly representable in binary16

  const std::vector<float> bf_values = {0.0f, -1.5f, 3.25f, 65536.0f, 1e-30f};
  for (float v : bf_values) bf.push_back(f32_to_bf16(v));
  convert_to_f32(DType::kBF16, reinterpret_cast<const std::byte*>(bf.data()), bf.size(),
                 out.data());
  for (size_t i = 0; i < bf_values.size(); ++i)
    EXPECT_EQ(out[i], bf16_to_f32(bf[i]));
  EXPECT_EQ(out[1], -1.5f);
  EXPECT_EQ(out[3], 65536.0f);

  const std::vector<double> doubles = {0.1, -2.0, 1e-3};
  std::vector<float> out3(3);
  convert_to_f32(DType::kF64, reinterpret_cast<const std::byte*>(doubles.data()), 3, out3.data());
  EXPECT_EQ(out3[0], 0.1f);
  EXPECT_EQ(out3[1], -2.0f);
  EXPECT_EQ(out3[2], 1e-3f);

  const int32_t ints[2] = {1, 2};
  EXPECT_THROW(convert_to_f32(DType::kI32, reinterpret_cast<const std::byte*>(ints), 2, out.data()),
               Error);
}

}  // namespace
}  // namespace kllens
