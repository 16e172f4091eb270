#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/families.h"
#include "models/llama_layout.h"

namespace kllens {

namespace {
struct Family {
  const char* model_type;
  ModelFactory make;
  SpecFactory specs;
  LlamaLayoutFactory llama_layout;  // nullptr: llama.cpp has no such architecture
  const char* llama_arch;           // its general.architecture
  LlamaConfigReader from_llama_keys;  // nullptr: files llama.cpp wrote are not read
};
const Family kFamilies[] = {
    {"mamba", make_mamba, mamba_tensor_specs, mamba_llama_layout, "mamba", mamba_config_from_llama_keys},
    {"mamba2", make_mamba2, mamba2_tensor_specs, mamba2_llama_layout, "mamba2",
     mamba2_config_from_llama_keys},
    {"falcon_h1", make_falcon_h1, falcon_h1_tensor_specs, falcon_h1_llama_layout, "falcon-h1",
     falcon_h1_config_from_llama_keys},
    {"llama", make_llama, llama_tensor_specs, llama_llama_layout, "llama", llama_config_from_llama_keys},
    {"hymba", make_hymba, hymba_tensor_specs, nullptr, nullptr, nullptr},
    {"jamba", make_jamba, jamba_tensor_specs, jamba_llama_layout, "jamba", jamba_config_from_llama_keys},
    {"granitemoehybrid", make_granite_hybrid, granite_hybrid_tensor_specs,
     granite_hybrid_llama_layout, "granitehybrid", granite_hybrid_config_from_llama_keys},
    {"nemotron_h", make_nemotron_h, nemotron_h_tensor_specs, nemotron_h_llama_layout, "nemotron_h",
     nemotron_h_config_from_llama_keys},
};
}  // namespace

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const auto& f : kFamilies) out.push_back(f.model_type);
  return out;
}

std::vector<TensorSpec> tensor_specs(const HfConfig& config) {
  const std::string type = config.model_type();
  for (const auto& f : kFamilies)
    if (type == f.model_type) return f.specs(config);
  fail("{}: unknown model_type '{}'", config.path(), type);
}

std::string llama_layout(const HfConfig& config, const std::vector<TensorSpec>& tensors,
                         LlamaLayout* out) {
  const std::string type = config.model_type();
  *out = LlamaLayout{};
  for (const auto& f : kFamilies) {
    if (type != f.model_type) continue;
    if (!f.llama_layout)
      return fmt::format("llama.cpp has no architecture for {} (no other engine runs it)", type);
    std::string why = f.llama_layout(config, tensors, out);
    if (why.empty()) why = llama_layout_covers(*out, tensors);
    if (!why.empty()) *out = LlamaLayout{};
    return why;
  }
  fail("{}: unknown model_type '{}'", config.path(), type);
}

nlohmann::json hf_config_from_llama_keys(const gguf::File& file) {
  const LlamaKeys keys(file);
  std::string readable;
  for (const auto& f : kFamilies) {
    if (!f.from_llama_keys) continue;
    if (keys.arch() == f.llama_arch) return f.from_llama_keys(keys);
    readable += fmt::format("{}'{}'", readable.empty() ? "" : ", ", f.llama_arch);
  }
  fail("{}: general.architecture is '{}' and the file has no kllens.hf_config: kllens loads files "
       "written by llama.cpp (convert_hf_to_gguf.py, llama-quantize) only for {}; files of the "
       "other families load when `kllens quantize` wrote them",
       file.path(), keys.arch(), readable);
}

std::unique_ptr<Model> load_model(const std::string& folder, const LoadOptions& options) {
  const CheckpointConfig checkpoint = read_checkpoint_config(folder);
  const HfConfig& config = checkpoint.config;
  const std::string type = config.model_type();
  for (const auto& f : kFamilies) {
    if (type == f.model_type) {
      const TensorStore store = open_checkpoint_tensors(folder, checkpoint);
      auto model = f.make(config, store, folder, options);
      if (!checkpoint.native_format.empty())
        model->add_detail("checkpoint", checkpoint.native_format + " format, loaded as HF " + type);
      auto layout = std::make_shared<LlamaLayout>();
      std::string why = llama_layout(*model, config, layout.get());
      if (!why.empty()) layout.reset();
      model->set_llama_layout(std::move(layout), std::move(why));
      return model;
    }
  }
  std::string known;
  for (const auto& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
  fail("{}: unknown model_type '{}' (supported: {})", config.path(), type, known);
}

}  // namespace kllens
