// Falcon-H1 (HF FalconH1ForCausalLM, model_type "falcon_h1"): attention and a Mamba-2 mixer in
// parallel in every layer, then a SwiGLU MLP, with muP multipliers.
#pragma once

#include <memory>
#include <string>

#include "models/model.h"

namespace kllens {

class HfConfig;
class TensorStore;

std::unique_ptr<Model> make_falcon_h1(const HfConfig& config, const TensorStore& store,
                                      const std::string& folder);

// Test hook for the demo-falcon_h1 reference logits: they were computed by HF after
// model.to(bfloat16).float(), which also rounds the (non-persistent) RoPE inv_freq buffer to
// bfloat16; loading the checkpoint fresh keeps it in float32, which is what kllens does. This
// rounds a Falcon-H1 model's inv_freq the same way (round to nearest even), so that the reference
// can be checked at full precision. Fails on a model of another family.
void falcon_h1_round_rope_inv_freq_to_bf16(Model& model);

}  // namespace kllens
