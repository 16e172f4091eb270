#include "plan/llama_mix_model.h"

#include <filesystem>

#include "core/error.h"
#include "io/json_file.h"
#include "models/checkpoint.h"
#include "models/llama_layout.h"

namespace kllens {

LlamaMixInput llama_mix_input(const Model& model, const nlohmann::json& config,
                              const std::string& input_type) {
  LlamaMixInput in;
  const ModelInfo& info = model.info();
  LlamaModelFacts& f = in.facts;
  f.arch = info.arch;
  const LlamaLayout* layout = model.llama_layout();
  f.llama_cpp_layout = layout != nullptr;
  if (layout) f.arch = layout->arch;
  f.n_layer = info.n_layers;
  for (const char* key : {"num_experts", "num_local_experts"}) {
    const auto it = config.find(key);
    if (it != config.end() && it->is_number_integer() && it->get<int64_t>() > 1) f.n_expert = it->get<int64_t>();
  }
  int64_t q_rows = 0, k_rows = 0;
  std::map<std::string, size_t> stack_index;  // a stack's name -> its entry in in.tensors
  for (const auto& pp : model.weights().all()) {
    const Param& p = *pp;
    LlamaMixTensor t;
    t.hf_name = p.name;
    t.role = p.role;
    t.layer = p.layer;
    // ggml's ne0 is the innermost dimension: the row of a matrix (cols), a vector's length.
    t.cols = p.shape.size() >= 2 ? p.cols() : p.numel();
    t.rows = t.cols > 0 ? p.numel() / t.cols : 0;
    t.input_type = input_type;
    if (layout) {
      const auto lt = layout->tensors.find(p.name);
      if (lt == layout->tensors.end())
        fail("{}: llama.cpp's layout has no name for {}", info.folder, p.name);
      t.gguf_name = lt->second.name;
      if (lt->second.stacked()) {
        // llama-quantize sees one tensor {cols, rows, n_expert}.
        const auto [it, fresh] = stack_index.emplace(t.gguf_name, in.tensors.size());
        if (!fresh) {
          LlamaMixTensor& stack = in.tensors[it->second];
          stack.rows += t.rows;
          stack.members.push_back(p.name);
          continue;
        }
        t.members = {p.name};
      }
    } else {
      t.gguf_name = p.name;
    }
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
  return llama_mix_input(model, read_checkpoint_config(model.info().folder).config.json(), input_type);
}

SchemeAssignment llama_mix_assignment(const Model& model, const LlamaMixResult& mix) {
  SchemeAssignment a;
  for (const LlamaMixDecision& d : mix.tensors)
    for (const std::string& name : d.members.empty() ? std::vector<std::string>{d.hf_name} : d.members) {
      const Param* p = model.weights().find(name);
      if (p && p->is_component()) a[name] = QuantScheme::parse(d.type);
    }
  return a;
}

}  // namespace kllens
