// Loads a GGUF file written by export_gguf (either layout) back into a kllens Model.
//
// The file's kllens.hf_config gives the family and the tensor table; every table tensor is read
// from the file (under its llama.cpp name, with the converter's transforms undone: A_log =
// log(-ssm_a), conv1d and Mamba-2's A / D / norm back to their HF shapes) and DEQUANTIZED TO
// FLOAT32 AT LOAD: the model then runs on the values the quantized blocks decode to, with the
// float kernels (no quantized matmuls yet). The model is built through load_model() from a
// temporary folder (config.json + one F32 safetensors file) that is removed before returning, so
// the Model's info().folder names a folder that no longer exists and its parameters report
// source_dtype F32. Files without kllens.hf_config (e.g. from llama.cpp's converter) are refused.
#pragma once

#include <memory>
#include <string>

namespace kllens {

class Model;

std::unique_ptr<Model> load_gguf_model(const std::string& path);

}  // namespace kllens
