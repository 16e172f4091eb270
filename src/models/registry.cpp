#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/llama_layout.h"

namespace kllens {

namespace {
struct Family {
  const char* model_type;
  ModelFactory make;
  SpecFactory specs;
  LlamaLayoutFactory llama_layout;  // nullptr: llama.cpp has no such architecture
};
const Family kFamilies[] = {
    {"mamba", make_mamba, mamba_tensor_specs, mamba_llama_layout},
    {"mamba2", make_mamba2, mamba2_tensor_specs, mamba2_llama_layout},
    {"falcon_h1", make_falcon_h1, falcon_h1_tensor_specs, falcon_h1_llama_layout},
    {"llama", make_llama, llama_tensor_specs, llama_llama_layout},
    {"hymba", make_hymba, hymba_tensor_specs, nullptr},
    {"jamba", make_jamba, jamba_tensor_specs, jamba_llama_layout},
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

std::unique_ptr<Model> load_model(const std::string& folder, const LoadOptions& options) {
  const HfConfig config = HfConfig::load_folder(folder);
  const std::string type = config.model_type();
  for (const auto& f : kFamilies) {
    if (type == f.model_type) {
      const TensorStore store = TensorStore::open_folder(folder);
      auto model = f.make(config, store, folder, options);
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
