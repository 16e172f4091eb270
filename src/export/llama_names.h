// llama.cpp's tensor names for Mamba / Mamba-2 checkpoints (gguf-py's tensor_mapping) and the
// transform its converter applies to each (shared by the exporter and the importer).
#pragma once

#include <optional>
#include <string>

namespace kllens {

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

}  // namespace kllens
