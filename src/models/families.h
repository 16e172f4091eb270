// One factory per model family; each lives in its own file (mamba.cpp, mamba2.cpp, ...).
// Adding a family = one file + one row in registry.cpp's table.
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;

using ModelFactory = std::unique_ptr<Model> (*)(const HfConfig& config, const TensorStore& store,
                                                const std::string& folder);

// The tensor table a config implies (used by synth to write a checkpoint of that shape).
using SpecFactory = std::vector<TensorSpec> (*)(const HfConfig& config);

std::unique_ptr<Model> make_mamba(const HfConfig&, const TensorStore&, const std::string&);
std::vector<TensorSpec> mamba_tensor_specs(const HfConfig&);

}  // namespace kllens
