// The golden file of ggml's own quantizer output (data/fixtures/ggml-quants, made by ggml at
// llama.cpp 3f545becc), shared by the per-format golden tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>

#include "io/safetensors.h"
#include "test_util.h"

namespace kllens::test {

inline const char* const kGoldenCases[] = {"gauss", "heavy", "small"};

inline const SafetensorsFile& ggml_golden() {
  static const auto file = std::make_unique<SafetensorsFile>(
      repo_path("data/fixtures/ggml-quants/ggml-quants.safetensors"));
  return *file;
}

inline uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b;
}

}  // namespace kllens::test
