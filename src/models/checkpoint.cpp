#include "models/checkpoint.h"

#include "io/read_file.h"
#include "models/mamba_ssm_native.h"

namespace kllens {

CheckpointConfig checkpoint_config_from_text(const std::string& text, const std::string& path) {
  HfConfig parsed = HfConfig::from_text(text, path);
  if (!is_mamba_ssm_config(parsed.json())) return {std::move(parsed), text, ""};
  nlohmann::json hf = hf_config_from_mamba_ssm(parsed);
  std::string hf_text = hf.dump(2) + "\n";
  return {HfConfig::from_json(std::move(hf), path + " (mamba_ssm, as HF)"), std::move(hf_text),
          "mamba_ssm"};
}

CheckpointConfig read_checkpoint_config(const std::string& folder) {
  const std::string path = folder_config_path(folder);
  return checkpoint_config_from_text(read_file(path), path);
}

TensorStore open_checkpoint_tensors(const std::string& folder, const CheckpointConfig& config) {
  TensorStore store = TensorStore::open_folder(folder);
  if (config.native_format == "mamba_ssm") map_mamba_ssm_tensors(store, config.config, folder);
  return store;
}

}  // namespace kllens
