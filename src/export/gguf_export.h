// Writes a loaded model, with one kllens scheme per component, as a single GGUF file
// (io/gguf.h is the container; this file holds the model knowledge).
//
// Two layouts:
//  * llama.cpp's (models/llama_layout.h), for mamba, mamba2, llama, jamba and falcon_h1 whenever
//    llama.cpp's graph computes the checkpoint's function: its architecture string and
//    hyperparameter keys, its tensor names, and its converter's transforms applied here once
//    (ssm_a = -exp(A_log), conv1d squeezed, Mamba-2's A, D and norm reshaped, Llama's q/k rows
//    permuted for interleaved RoPE, Jamba's experts stacked into ffn_*_exps, Falcon-H1's muP
//    multipliers folded into the weights); the tied head is omitted (llama.cpp reuses
//    token_embd). Every 1-D tensor, ssm_a, ssm_d, the norms and conv1d are F32, as llama.cpp's
//    converter writes them (its CPU ssm_conv reads F32 only). Experts of one stack planned with
//    different schemes are stored at the largest of them (one ggml type per tensor), reported.
//  * kllens' own for everything else (hymba, and checkpoints llama.cpp cannot reproduce; the
//    reason is a note): architecture "kllens.<model_type>", tensors under their Hugging Face
//    names and shapes (ne = the reversed HF shape), no transforms; non-components F32.
// Both store `kllens.hf_config` (config.json verbatim, or with the folded multipliers at 1), `kllens.scheme.<tensor>` for every
// component (the kllens scheme it was asked for, or the checkpoint's dtype when it was not in the
// assignment), general.file_type (the type holding most component parameters) and, when a
// tokenizer.json is there, llama.cpp's BPE tokenizer keys (tokenizer.ggml.model = "gpt2").
//
// Scheme -> ggml type: every ggml block format to its own type (the QTensor blocks, byte for
// byte, quantized with the importance vector when one is given); a block format whose block does
// not divide the row length goes to llama-quantize's fallback for that shape (quant/formats.h:
// q4_K -> q5_0 -> f16, ...), reported as a GgufFallback; bf16/f16/f32 -> BF16/F16/F32. intB schemes have no ggml type and go to the nearest one: sym
// B <= 4 -> Q4_0, asym B <= 4 -> Q4_1, B >= 5 -> Q8_0. When the scheme's groups are whole
// multiples of 32 and its scales (and, for Q4_1, -z * scale) are float16 values, the codes and
// scales are repacked into the ggml blocks without changing any value (checked after packing);
// otherwise the tensor is re-quantized from the float weights with ggml's reference quantizer
// for that type. A tensor whose row length (ne[0]) is not a multiple of 32 cannot hold a block
// type and is stored F16 from the float weights (what llama-quantize does for unusual shapes).
// Every such substitution is returned as a GgufFallback, saying whether the stored values are
// exactly the scheme's fake-quantized values.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "eval/quantized_eval.h"
#include "io/gguf.h"
#include "quant/scheme.h"

namespace kllens {

class Model;

struct GgufExportOptions {
  // tokenizer.json to take the vocabulary from; empty: <model folder>/tokenizer.json if present.
  std::string tokenizer_json;
  // The importance vector of a component (HF name, row length) for ggml's quantizers, or nullptr
  // when there is none (an ImportanceMatrix supplies it); unset: no importance vectors.
  std::function<const float*(const std::string& hf_name, int64_t cols)> importance;
};

struct GgufTensorRecord {
  std::string name;             // in the file
  std::string hf_name;          // the checkpoint tensor it holds
  std::vector<int64_t> ne;      // innermost first
  gguf::GgmlType type = gguf::GgmlType::kF32;
  std::string scheme;           // components: the kllens scheme recorded; "" otherwise
  uint64_t bytes = 0;
};

struct GgufFallback {
  std::string tensor;     // name in the file
  std::string requested;  // the kllens scheme
  std::string stored;     // ggml type name
  bool exact = false;     // stored values == the scheme's fake-quantized values
  std::string reason;
};

struct GgufExportResult {
  std::string path;
  std::string architecture;  // general.architecture
  bool llama_cpp_layout = false;
  uint32_t file_type = 0;    // general.file_type (LlamaFileType)
  std::vector<GgufTensorRecord> tensors;
  std::vector<GgufFallback> fallbacks;
  std::vector<std::string> notes;  // compatibility remarks (layout choice, tokenizer, numerics)
  int64_t vocab_tokens = 0;        // tokenizer.ggml.tokens entries; 0 without a tokenizer
  uint64_t file_bytes = 0;
};

// Throws Error when the assignment names a tensor the model lacks or one that is not a component,
// or on any I/O failure. Schemes a component's rows cannot hold are not errors: they fall back
// (see above) and are reported.
GgufExportResult export_gguf(const Model& model, const SchemeAssignment& assignment,
                             const std::string& out_path, const GgufExportOptions& options = {});

// One matrix {rows, cols} (row-major, ne = {ne0, ...} in the file with ne0 dividing cols) in the
// ggml type chosen for `scheme` as described above. Exposed for tests.
struct GgufEncoded {
  gguf::GgmlType type = gguf::GgmlType::kF32;
  std::vector<uint8_t> data;
  bool fallback = false;  // the scheme has no ggml type of its own or could not be used
  bool exact = true;      // the stored values are the scheme's fake-quantized values
  std::string reason;     // why, when fallback
};
// importance: the matrix's importance vector (cols floats) or nullptr.
GgufEncoded encode_for_gguf(const QuantScheme& scheme, const float* w, int64_t rows, int64_t cols,
                            int64_t ne0, const float* importance = nullptr);

// LlamaFileType of a ggml type (general.file_type): F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8,
// Q5_1 9, Q2_K 10, Q3_K_M 12, Q4_K_M 15, Q5_K_M 17, Q6_K 18, IQ4_NL 25, IQ4_XS 30, BF16 32.
uint32_t llama_file_type(gguf::GgmlType type);

}  // namespace kllens
