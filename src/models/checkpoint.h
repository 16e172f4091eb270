// A model folder as kllens reads it: its config (transformers' config.json, or mamba_ssm's own
// translated to the equivalent HF one, models/mamba_ssm_native.h) and its tensors under the
// family's names (model.safetensors, shards, or pytorch_model.bin). Everything that reads a
// folder's config goes through here, so a native checkpoint is one kind of folder everywhere.
#pragma once

#include <string>

#include "io/hf_config.h"
#include "io/safetensors.h"

namespace kllens {

struct CheckpointConfig {
  HfConfig config;
  // The config.json text GGUF files keep (kllens.hf_config): the file's own text for a
  // transformers folder, the translated config for a native one.
  std::string text;
  // "" for a transformers folder; otherwise the format, for inspect ("mamba_ssm").
  std::string native_format;
};

CheckpointConfig read_checkpoint_config(const std::string& folder);
// The same for a config.json's text; `path` names it in errors.
CheckpointConfig checkpoint_config_from_text(const std::string& text, const std::string& path);

// The folder's tensors, renamed to the family's names where the format needs it.
TensorStore open_checkpoint_tensors(const std::string& folder, const CheckpointConfig& config);

}  // namespace kllens
