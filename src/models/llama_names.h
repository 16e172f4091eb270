// llama.cpp's tensor names for Mamba / Mamba-2 checkpoints (gguf-py's tensor_mapping), the
// transform its converter applies to each, and whether llama.cpp's mamba / mamba2 can hold a
// checkpoint at all. Shared by everything that writes or reads GGUF files under llama.cpp's names:
// the model exporter and importer (export/) and importance matrices (eval/imatrix.h).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace kllens {

class Model;

enum class LlamaTransform {
  kNone,
  kNegExp,       // A_log -> ssm_a = -exp(A_log) (Mamba-2 also as {n_head, 1})
  kSqueezeConv,  // conv1d [C, 1, K] -> [C, K]
  kColumn,       // Mamba-2 D [n_head] -> [n_head, 1]
  kGroupNorm,    // Mamba-2 norm [d_inner] -> [n_group, d_inner / n_group]
};

struct LlamaTensor {
  std::string name;
  LlamaTransform transform = LlamaTransform::kNone;
};

// nullopt when llama.cpp's mamba / mamba2 has no place for the tensor (e.g. projection biases).
std::optional<LlamaTensor> llama_tensor(const std::string& hf_name, bool mamba2);

// llama.cpp's hyperparameters of a Mamba / Mamba-2 checkpoint, read off the tensor shapes.
struct LlamaHparams {
  int64_t d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, n_group = 0,
          n_layer = 0, n_vocab = 0;
  float eps = 1e-5f;
};

// Why llama.cpp cannot hold this Mamba checkpoint ("" when it can), with the hyperparameters
// read off the tensor shapes (the config's defaults differ between transformers versions; the
// shapes do not). config: the checkpoint's config.json (n_groups, layer_norm_epsilon).
std::string llama_compat(const Model& model, const nlohmann::json& config, bool mamba2,
                         LlamaHparams* h);

// Whether kllens' GGUF files for this model (export/gguf_export.h, eval/imatrix.h) use llama.cpp's
// layout and tensor names: model_type mamba / mamba2 and llama_compat(...) == "". Otherwise they
// use the Hugging Face names.
bool uses_llama_layout(const Model& model, const nlohmann::json& config);

}  // namespace kllens
