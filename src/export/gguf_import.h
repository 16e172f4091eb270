// Loads a GGUF file written by export_gguf (either layout) back into a kllens Model.
//
// The file's kllens.hf_config gives the family and the tensor table; every table tensor is read
// from the file (under its llama.cpp name, with the converter's transforms undone: A_log =
// log(-ssm_a), conv1d and Mamba-2's A / D / norm back to their HF shapes).
//
// Matrices the forward pass only multiplies with or looks rows up in (models' packable_role) stay
// in their stored type when it is Q8_0, Q4_0, BF16 or F16: they are copied out of the file as
// QTensors and run on the packed kernels (quant/qmatmul.h), so memory holds the quantized model;
// Q8_0/Q4_0 are rearranged into the equivalent int8/int4:g32 layout (blocks_as_int_layout).
// Everything else (conv1d, norms, SSM parameters, Q4_1 and F32 tensors) is converted to float32.
// The model is built through load_model() from a temporary folder (config.json + one F32
// safetensors file with the float32 tensors) that is removed before returning, so the Model's
// info().folder names a folder that no longer exists and its float parameters report
// source_dtype F32.
//
// Files written by llama.cpp itself (convert_hf_to_gguf.py, llama-quantize) have no
// kllens.hf_config. For general.architecture "mamba" and "mamba2" the equivalent config.json is
// rebuilt from llama.cpp's keys and the tensor shapes (hf_config_from_llama_cpp below), and the
// tensors are read under llama.cpp's names with the same transforms undone; every tensor's ne must
// then be exactly what the keys imply and every tensor of the file must be used, so a missing key
// or a value the shapes contradict is one Error naming the key. Other architectures without
// kllens.hf_config are refused with an Error naming the ones kllens can load. Mamba-2 with
// n_groups > 1: llama.cpp normalizes y * silu(z) per group, kllens (as transformers) over all
// channels, so such a file's logits differ from llama.cpp's (n_groups = 1 is identical).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "models/model.h"

namespace kllens {

namespace gguf {
class File;
}

std::unique_ptr<Model> load_gguf_model(const std::string& path, const LoadOptions& options = {});

// The Hugging Face config.json of a llama.cpp "mamba" / "mamba2" file, from its keys
// ({arch}.embedding_length, .block_count, .ssm.conv_kernel, .ssm.inner_size, .ssm.state_size,
// .ssm.time_step_rank, .ssm.group_count (mamba2), .attention.layer_norm_rms_epsilon) and tensor
// shapes (vocab_size from token_embd, tie_word_embeddings when there is no output.weight,
// use_conv_bias from blk.0.ssm_conv1d.bias), with the special token ids of tokenizer.ggml.*.
// Throws Error naming the key that is missing, has the wrong type or disagrees with the tensor
// shapes of layer 0; for another architecture, Error naming the ones kllens can load. (The other
// layers' shapes are checked by load_gguf_model.)
nlohmann::json hf_config_from_llama_cpp(const gguf::File& file);

}  // namespace kllens
