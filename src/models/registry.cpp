#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "models/families.h"
#include "models/llama_names.h"

namespace kllens {

namespace {
struct Family {
  const char* model_type;
  ModelFactory make;
  SpecFactory specs;
};
const Family kFamilies[] = {
    {"mamba", make_mamba, mamba_tensor_specs},
    {"mamba2", make_mamba2, mamba2_tensor_specs},
    {"falcon_h1", make_falcon_h1, falcon_h1_tensor_specs},
    {"llama", make_llama, llama_tensor_specs},
    {"hymba", make_hymba, hymba_tensor_specs},
    {"jamba", make_jamba, jamba_tensor_specs},
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

std::unique_ptr<Model> load_model(const std::string& folder, const LoadOptions& options) {
  const HfConfig config = HfConfig::load_folder(folder);
  const std::string type = config.model_type();
  for (const auto& f : kFamilies) {
    if (type == f.model_type) {
      const TensorStore store = TensorStore::open_folder(folder);
      auto model = f.make(config, store, folder, options);
      model->set_llama_cpp_layout(uses_llama_layout(*model, config.json()));
      return model;
    }
  }
  std::string known;
  for (const auto& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
  fail("{}: unknown model_type '{}' (supported: {})", config.path(), type, known);
}

}  // namespace kllens
