// The inputs of plan/llama_mix.h for a loaded model: every tensor as kllens' GGUF export names and
// shapes it (llama.cpp's names and layout for the checkpoints llama.cpp can hold, a stack of
// experts as one tensor,
// the Hugging Face names otherwise: models/llama_layout.h), and the model facts the rules read,
// all taken from the tensor table and roles (no tensor-name policy).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/quantized_eval.h"
#include "models/model.h"
#include "plan/llama_mix.h"

namespace kllens {

struct LlamaMixInput {
  std::vector<LlamaMixTensor> tensors;  // every tensor of the model, in table order
  LlamaModelFacts facts;
};

// `config` is the checkpoint's config.json (for the layout decision); `input_type` the ggml type
// the file llama-quantize reads holds its tensors in (kllens' F32 export: "f32").
//  n_layer   the model's layer count (GGUF block_count)
//  n_expert  config num_experts / num_local_experts when > 1, else 0
//  n_gqa     rows of layer 0's q projection / rows of its k projection (0: no attention there)
//  tied      the embedding's tied_head
//  70B       llama with 80 layers and n_gqa != 1
LlamaMixInput llama_mix_input(const Model& model, const nlohmann::json& config,
                              const std::string& input_type = "f32");
// Reads <model folder>/config.json.
LlamaMixInput llama_mix_input(const Model& model, const std::string& input_type = "f32");

// The mix's types for the model's components (what `plan --mix` writes), as an assignment.
SchemeAssignment llama_mix_assignment(const Model& model, const LlamaMixResult& mix);

}  // namespace kllens
