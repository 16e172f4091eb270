// Hymba (NVIDIA's HymbaForCausalLM remote code, model_type "hymba"): attention heads and Mamba-1
// SSM heads in parallel in every layer, learned meta tokens, sliding-window layers, cross-layer
// KV sharing. See ../shared/docs/hymba-architecture.md.
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;

std::unique_ptr<Model> make_hymba(const HfConfig& config, const TensorStore& store,
                                  const std::string& folder);

}  // namespace kllens
