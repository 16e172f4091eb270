// One factory per model family; each lives in its own file (mamba.cpp, mamba2.cpp, ...).
// Adding a family = one file + one row in registry.cpp's table.
//
// Every family exposes two functions of its parsed config.json, and a third where llama.cpp runs
// the family:
//   make_<family>          validates the config, loads the checkpoint, builds the model;
//   <family>_tensor_specs  the tensor table the config implies (names, roles, exact shapes),
//                          without touching any weights (used by synth, inspect, tests);
//   <family>_llama_layout  llama.cpp's GGUF layout of a checkpoint with these tensors, or why
//                          llama.cpp cannot hold it (models/llama_layout.h);
//   <family>_config_from_llama_keys  the inverse for a file llama.cpp wrote: the HF config its
//                          "<arch>.*" keys and tensor shapes imply (no kllens.hf_config there).
// The constructor loads exactly the table <family>_tensor_specs returns (up to checkpoint-dependent
// spellings such as Mamba's legacy "backbone.embedding.weight").
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;
struct LlamaLayout;
class LlamaKeys;

using ModelFactory = std::unique_ptr<Model> (*)(const HfConfig& config, const TensorStore& store,
                                                const std::string& folder,
                                                const LoadOptions& options);

// The tensor table a config implies (used by synth to write a checkpoint of that shape).
using SpecFactory = std::vector<TensorSpec> (*)(const HfConfig& config);

// llama.cpp's layout: "" and *out filled, or why llama.cpp cannot hold the checkpoint.
using LlamaLayoutFactory = std::string (*)(const HfConfig& config,
                                           const std::vector<TensorSpec>& tensors,
                                           LlamaLayout* out);

// The HF config.json of a file llama.cpp wrote in this family's layout.
using LlamaConfigReader = nlohmann::json (*)(const LlamaKeys& keys);

// Mamba-1 (HF MambaForCausalLM, model_type "mamba").
std::unique_ptr<Model> make_mamba(const HfConfig&, const TensorStore&, const std::string&,
                                  const LoadOptions&);
std::vector<TensorSpec> mamba_tensor_specs(const HfConfig&);
std::string mamba_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json mamba_config_from_llama_keys(const LlamaKeys&);

// Mamba-2 (HF Mamba2ForCausalLM, model_type "mamba2").
std::unique_ptr<Model> make_mamba2(const HfConfig&, const TensorStore&, const std::string&,
                                   const LoadOptions&);
std::vector<TensorSpec> mamba2_tensor_specs(const HfConfig&);
std::string mamba2_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json mamba2_config_from_llama_keys(const LlamaKeys&);

// Hymba (NVIDIA's HymbaForCausalLM remote code, model_type "hymba"): attention heads and Mamba-1
// SSM heads in parallel in every layer, learned meta tokens, sliding-window layers, cross-layer
// KV sharing. See ../shared/docs/hymba-architecture.md.
std::unique_ptr<Model> make_hymba(const HfConfig&, const TensorStore&, const std::string&,
                                  const LoadOptions&);
std::vector<TensorSpec> hymba_tensor_specs(const HfConfig&);

// Falcon-H1 (HF FalconH1ForCausalLM, model_type "falcon_h1"): attention and a Mamba-2 mixer in
// parallel in every layer, then a SwiGLU MLP, with muP multipliers.
std::unique_ptr<Model> make_falcon_h1(const HfConfig&, const TensorStore&, const std::string&,
                                      const LoadOptions&);
std::vector<TensorSpec> falcon_h1_tensor_specs(const HfConfig&);
std::string falcon_h1_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json falcon_h1_config_from_llama_keys(const LlamaKeys&);

// Llama (HF LlamaForCausalLM, model_type "llama"): pre-norm attention (GQA, RoPE) + SwiGLU MLP.
std::unique_ptr<Model> make_llama(const HfConfig&, const TensorStore&, const std::string&,
                                  const LoadOptions&);
std::vector<TensorSpec> llama_tensor_specs(const HfConfig&);
std::string llama_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json llama_config_from_llama_keys(const LlamaKeys&);

// Jamba (HF JambaForCausalLM, model_type "jamba"): Mamba-1 layers (dt/B/C norms) interleaved
// with attention layers, and top-k mixture-of-experts feed-forward layers.
std::unique_ptr<Model> make_jamba(const HfConfig&, const TensorStore&, const std::string&,
                                  const LoadOptions&);
std::vector<TensorSpec> jamba_tensor_specs(const HfConfig&);
std::string jamba_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json jamba_config_from_llama_keys(const LlamaKeys&);

// Nemotron-H (NVIDIA's NemotronHForCausalLM, model_type "nemotron_h"): Mamba-2, attention (no
// RoPE) and squared-ReLU MLP layers, one pre-norm residual block each, from the layer pattern.
std::unique_ptr<Model> make_nemotron_h(const HfConfig&, const TensorStore&, const std::string&,
                                       const LoadOptions&);
std::vector<TensorSpec> nemotron_h_tensor_specs(const HfConfig&);
std::string nemotron_h_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json nemotron_h_config_from_llama_keys(const LlamaKeys&);

// Granite-4.0-H (HF GraniteMoeHybridForCausalLM, model_type "granitemoehybrid"): Mamba-2 and
// attention layers (layer_types), each followed by the shared SwiGLU MLP, with Granite's
// embedding, residual, attention and logits multipliers; optional routed experts beside it.
std::unique_ptr<Model> make_granite_hybrid(const HfConfig&, const TensorStore&, const std::string&,
                                           const LoadOptions&);
std::vector<TensorSpec> granite_hybrid_tensor_specs(const HfConfig&);
std::string granite_hybrid_llama_layout(const HfConfig&, const std::vector<TensorSpec>&, LlamaLayout*);
nlohmann::json granite_hybrid_config_from_llama_keys(const LlamaKeys&);

}  // namespace kllens
