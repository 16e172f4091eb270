#include "plan/llama_mix_model.h"

#include <filesystem>

#include "core/error.h"
#include "io/json_file.h"
#include "models/llama_names.h"

namespace kllens {

LlamaMixInput llama_mix_input(const Model& model, const nlohmann::json& config,
                              const std::string& input_type) {
  LlamaMixInput in;
  const ModelInfo& info = model.info();
  LlamaModelFacts& f = in.facts;
  f.arch = info.arch;
  f.llama_cpp_layout = uses_llama_layout(model, config);
  f.n_layer = info.n_layers;
  for (const char* key : {"num_experts", "num_local_experts"}) {
    const auto it = config.find(key);
    if (it != config.end() && it->is_number_integer() && it->get<int64_t>() > 1) f.n_expert = it->get<int64_t>();
  }
  const bool mamba2 = info.arch == "mamba2";
  int64_t q_rows = 0, k_rows = 0;
  for (const auto& pp : model.weights().all()) {
    const Param& p = *pp;
    LlamaMixTensor t;
    t.hf_name = p.name;
    if (f.llama_cpp_layout) {
      const auto lt = llama_tensor(p.name, mamba2);
      if (!lt) fail("{}: llama.cpp's layout has no name for {}", info.folder, p.name);
      t.gguf_name = lt->name;
    } else {
      t.gguf_name = p.name;
    }
    t.role = p.role;
    t.layer = p.layer;
    // ggml's ne0 is the innermost dimension: the row of a matrix (cols), a vector's length.
    t.cols = p.shape.size() >= 2 ? p.cols() : p.numel();
    t.rows = t.cols > 0 ? p.numel() / t.cols : 0;
    t.input_type = input_type;
    f.tied_embeddings |= p.role == Role::kEmbed && p.tied_head;
    if (p.layer == 0 && p.role == Role::kQ) q_rows = p.rows();
    if (p.layer == 0 && p.role == Role::kK) k_rows = p.rows();
    in.tensors.push_back(std::move(t));
  }
  f.n_gqa = q_rows > 0 && k_rows > 0 ? q_rows / k_rows : 0;
  f.llm_type_70b = info.arch == "llama" && info.n_layers == 80 && f.n_gqa != 1;
  return in;
}

LlamaMixInput llama_mix_input(const Model& model, const std::string& input_type) {
  const std::string path = (std::filesystem::path(model.info().folder) / "config.json").string();
  return llama_mix_input(model, read_json_file(path), input_type);
}

SchemeAssignment llama_mix_assignment(const Model& model, const LlamaMixResult& mix) {
  SchemeAssignment a;
  for (const LlamaMixDecision& d : mix.tensors) {
    const Param* p = model.weights().find(d.hf_name);
    if (p && p->is_component()) a[d.hf_name] = QuantScheme::parse(d.type);
  }
  return a;
}

}  // namespace kllens
