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
// kllens.hf_config. For general.architecture mamba, mamba2, llama, jamba and falcon-h1 the
// equivalent config.json is rebuilt from llama.cpp's keys and the tensor shapes (each family's
// <family>_config_from_llama_keys, models/families.h), and the tensors are read under llama.cpp's
// names with the same transforms undone (Llama's q/k rows un-permuted, Jamba's expert stacks
// split; Falcon-H1's folded multipliers stay folded, the config has them at 1); every tensor's ne
// must then be exactly what the keys imply and every tensor of the file must be used, so a missing
// key or a value the shapes contradict is one Error naming the key. What a family does not compute
// (RoPE scaling, experts in a llama file, ...) is refused by name; other architectures are refused
// with an Error naming the ones kllens reads.
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

// The Hugging Face config.json of a file llama.cpp wrote, from its keys and tensor shapes (e.g.
// for mamba: {arch}.embedding_length, .block_count, .ssm.*, .attention.layer_norm_rms_epsilon;
// vocab_size from token_embd, tie_word_embeddings when there is no output.weight), with the
// special token ids of tokenizer.ggml.*. Throws Error naming the key that is missing, has the
// wrong type or disagrees with the tensor shapes; for another architecture, Error naming the ones
// kllens can load. (load_gguf_model checks every tensor's shape against the result.)
nlohmann::json hf_config_from_llama_cpp(const gguf::File& file);

}  // namespace kllens
