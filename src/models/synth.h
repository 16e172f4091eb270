// Random-weight checkpoints of real model configurations, written as normal Hugging Face
// folders (config.json + model.safetensors), for speed and memory benchmarks at real scale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace kllens {

std::vector<std::string> synth_presets();
// The config.json a preset writes (UsageError naming the known presets for any other name).
std::string synth_preset_config(const std::string& preset);

struct SynthOptions {
  std::string preset;       // a preset of synth_presets(), or empty with config_path
  std::string config_path;  // a config.json to copy (byte for byte) and fill with random weights
  std::string out_dir;
  DType dtype = DType::kBF16;
  uint64_t seed = 1;
  // A tokenizer.json (or a folder holding one) to copy into the folder; its ids must fit the
  // config's vocab_size. Empty: the byte-level tokenizer (tokenizer/tokenizer.h), when the
  // vocabulary has room for its 256 ids.
  std::string tokenizer_path;
  bool write_tokenizer = true;
};

struct SynthResult {
  int64_t params = 0;
  std::string tokenizer;  // "byte-level", the copied file's path, or "none (why)"
};

// Writes out_dir/config.json, out_dir/model.safetensors and out_dir/tokenizer.json. The config
// is the preset's, or the file at config_path as it is (read as HfConfig::load_folder reads it:
// Python's Infinity/NaN literals accepted).
SynthResult synthesize_checkpoint(const SynthOptions& options);

}  // namespace kllens
