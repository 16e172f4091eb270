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
  std::string preset;       // a preset of synth_presets(), or empty with config_path
  std::string config_path;  // a config.json to copy (byte for byte) and fill with random weights
  std::string out_dir;
  DType dtype = DType::kBF16;
  uint64_t seed = 1;
};

// Writes out_dir/config.json and out_dir/model.safetensors; returns the parameter count. The
// config is the preset's, or the file at config_path as it is (read as HfConfig::load_folder
// reads it: Python's Infinity/NaN literals accepted).
int64_t synthesize_checkpoint(const SynthOptions& options);

}  // namespace kllens
