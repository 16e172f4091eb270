// Importance matrices: llama.cpp's imatrix, collected by kllens or read from llama-imatrix.
//
// For every matrix a linear layer multiplies, the sum over all rows it was multiplied with of
// each input column squared, Σ_t x[t, c]², and the number of rows. ggml's quantizers weight the
// rounding error of column c by in_sum2[c] / count (llama-quantize's importance vector).
//
// Collection (collect_imatrix) follows llama-imatrix (tools/imatrix/imatrix.cpp) on the ppl
// windows (eval/perplexity.h): the text tokenized whole with no BOS (llama.cpp adds one only when
// the vocabulary says add_bos_token, which kllens' GGUF export sets only for tokenizers that have
// a BOS post-processor), consecutive non-overlapping windows of ctx tokens from a reset state, a
// shorter tail dropped; every row a matrix multiplies counts, prefix tokens (Hymba's meta tokens)
// included. Sums are accumulated in double and stored as float32 (llama.cpp accumulates in
// float32). Which matrices: every linear() call on a component, i.e. llama.cpp's blk.* matrix
// multiplications, plus an untied lm_head (llama-imatrix collects output.weight only with
// --process-output); a tied head (the embedding multiplied as the head) is not collected, as in
// llama.cpp. Experts of a mixture no token reached get an entry with count 0, as llama.cpp's
// merged expert tensors do; their importance is 1 for every column (llama-quantize).
// Two differences from llama-imatrix, both consequences of its batching: it drops every matrix
// multiplication of fewer than 16 rows, which with its default 4 sequences per batch loses the
// last few tokens of the last batch when the chunk count is not a multiple of 4 (on the demo
// models at ctx 512: 63 chunks, the last 2 tokens of chunks 60..62, counts 32256 - 6 = 32250),
// and it records chunk_count = floor(max count / chunk size) (62 there) where kllens records the
// windows it ran (63).
//
// The file is llama.cpp's imatrix GGUF: general.type = "imatrix", imatrix.datasets (array of
// strings), imatrix.chunk_count and imatrix.chunk_size (u32), and per matrix `<name>.in_sum2`
// (F32, ne {cols}) and `<name>.counts` (F32, ne {1}), tensors in name order. A stack of experts
// (llama.cpp's ffn_*_exps, the Jamba layout) is one entry {cols, n_expert} and {1, n_expert}, split
// into its experts on reading.
// `<name>` is the name kllens' GGUF export gives the tensor (models/llama_layout.h): llama.cpp's
// (blk.N.ssm_in.weight, ...) when llama.cpp can hold the checkpoint, the Hugging Face name
// otherwise. llama.cpp's `<name>.in_sum` (Σ x, newer versions) is accepted and
// ignored; kllens does not write it. GGUF tensor names have at most 63 bytes (ggml), so a Hugging
// Face name longer than 55 bytes cannot be written (write_imatrix says so).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/quantized_eval.h"

namespace kllens {

class Model;
struct Param;

struct ImatrixEntry {
  std::string file_name;         // the tensor's name in the file (without .in_sum2 / .counts)
  int64_t cols = 0;              // the matrix's row length (input columns)
  std::vector<float> in_sum2;    // {n_mat, cols}: Σ x² per column
  std::vector<float> counts;     // {n_mat}: rows multiplied
  // {n_mat, cols}: what llama-quantize hands ggml's quantizers: in_sum2 / count per column (float
  // division), every column 1 for a matrix with count 0.
  std::vector<float> importance;

  int64_t n_mat() const { return static_cast<int64_t>(counts.size()); }
};

struct ImportanceMatrix {
  std::map<std::string, ImatrixEntry> entries;  // by the model's Hugging Face tensor name
  std::vector<std::string> datasets;            // imatrix.datasets
  uint32_t chunk_count = 0;                     // imatrix.chunk_count
  uint32_t chunk_size = 0;                      // imatrix.chunk_size (tokens per window)
  // The identity plans record: lowercase hex SHA-256 of the file's bytes (set by read_imatrix and
  // write_imatrix; "" for a matrix only collected).
  std::string sha256;
  std::string path;  // the file it was read from or written to

  const ImatrixEntry* find(const std::string& hf_name) const;
  // The importance vector (cols floats) ggml's quantizers take for this component, or nullptr
  // when the matrix has no entry: llama-quantize then quantizes that tensor without one (it logs
  // "did not find weights for ..."; only the IQ1/IQ2 types refuse). Error when the entry does not
  // fit the tensor (read_imatrix has checked that for the model it was read for).
  const float* importance(const Param& p) const;
  const float* importance(const std::string& hf_name, int64_t cols) const;
};

// Runs the windows through the model (state reset per window) with an observer on linear() and
// returns the sums (see above). datasets / chunk_size are filled from the arguments, chunk_count
// = windows.size(). The final norm and head run only when the model has an untied head. Error
// when an activation is not finite (llama-imatrix stops there too).
ImportanceMatrix collect_imatrix(const Model& model,
                                 const std::vector<std::vector<int32_t>>& windows,
                                 const std::string& dataset, bool show_progress = true);

// What the quantizers take (eval/quantized_eval.h): the matrix's importance vector of a
// component, or nullptr. The matrix must outlive the function.
ImportanceFn importance_fn(const ImportanceMatrix& im);

// The name kllens' GGUF files give this component of the model (see above).
std::string imatrix_tensor_name(const Model& model, const std::string& hf_name);

// Writes llama.cpp's imatrix GGUF under the model's GGUF names (atomically: a temporary file
// renamed into place) and sets im.sha256 and im.path. Error when an entry names a tensor the
// model does not have or is not one matrix of its column count, when a name is too long for
// GGUF, or on I/O failure.
void write_imatrix(ImportanceMatrix& im, const Model& model, const std::string& path);

// Reads and validates an imatrix GGUF for this model. One Error naming the file for: a malformed
// container (io/gguf.h: truncation, lying sizes, ...), general.type other than "imatrix", missing
// or mistyped imatrix.* keys, a tensor that is not F32 or has the wrong shape, an in_sum2 without
// its counts or the reverse, non-finite or negative values, and an imatrix for another model: a
// name that is not one of this model's matrices (under its GGUF names), or a column count that
// differs from the tensor's (naming the tensor and both sizes).
ImportanceMatrix read_imatrix(const std::string& path, const Model& model);

// For JSON outputs and plans: {"file", "sha256", "datasets", "chunk_count", "chunk_size",
// "entries"}.
nlohmann::json imatrix_description(const ImportanceMatrix& im);

}  // namespace kllens
