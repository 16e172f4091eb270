// Mamba-2 (HF Mamba2ForCausalLM, model_type "mamba2").
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;

std::unique_ptr<Model> make_mamba2(const HfConfig& config, const TensorStore& store,
                                   const std::string& folder);

}  // namespace kllens
