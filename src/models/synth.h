// Random-weight checkpoints of real model configurations, written as normal Hugging Face
// folders (config.json + model.safetensors), for speed and memory benchmarks at real scale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kllens {

std::vector<std::string> synth_presets();

struct SynthOptions {
  std::string preset;
  std::string out_dir;
  DType dtype = DType::kBF16;
  uint64_t seed = 1;
};

// Writes out_dir/config.json and out_dir/model.safetensors; returns the parameter count.
int64_t synthesize_checkpoint(const SynthOptions& options);

}  // namespace kllens
