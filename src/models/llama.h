// Llama (HF LlamaForCausalLM, model_type "llama"): pre-norm attention (GQA, RoPE) + SwiGLU MLP.
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;

std::unique_ptr<Model> make_llama(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder);

}  // namespace kllens
