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
// source_dtype F32. Files without kllens.hf_config (e.g. from llama.cpp's converter) are refused.
#pragma once

#include <memory>
#include <string>

namespace kllens {

class Model;

std::unique_ptr<Model> load_gguf_model(const std::string& path);

}  // namespace kllens
