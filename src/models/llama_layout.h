// llama.cpp's GGUF layout of a checkpoint: its architecture string, the name and transform of
// every tensor (gguf-py's tensor_mapping and the converter's modify_tensors), the hyperparameter
// keys its loader reads, and the config kllens stores beside them. Shared by everything that
// writes or reads GGUF files under llama.cpp's names: the exporter and importer (export/), the
// llama-quantize mixes (plan/) and importance matrices (eval/imatrix.h).
//
// Each family declares its layout next to its config parsing (families.h: <family>_llama_layout);
// Hymba has none (no other engine runs it), and a checkpoint llama.cpp's graph cannot reproduce
// (a projection bias it has no tensor for, a norm order it does not implement, ...) has none
// either: then kllens writes its own keys (kllens.<model_type>) and says why.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/gguf.h"
#include "models/model.h"

namespace kllens {

class HfConfig;

enum class LlamaTransform {
  kNone,
  kNegExp,       // A_log -> ssm_a = -exp(A_log); Mamba-2's [n_head] also becomes {n_head, 1}
  kSqueezeConv,  // conv1d [C, 1, K] -> [C, K]
  kColumn,       // Mamba-2 D [n_head] -> [n_head, 1]
  kGroupNorm,    // Mamba-2 norm [d_inner] -> [n_group, d_inner / n_group]
  kRopePermute,  // Llama q/k rows: rotate-half pairs (j, j + D/2) -> interleaved (2j, 2j + 1)
};

struct LlamaTensor {
  std::string name;
  LlamaTransform transform = LlamaTransform::kNone;
  int64_t n_head = 0;   // kRopePermute: heads in the rows
  int64_t n_group = 0;  // kGroupNorm
  bool mamba2_a = false;  // kNegExp of a Mamba-2 A [n_head]: stored as {n_head, 1}
  // Constant factors folded into the values (Falcon-H1's muP multipliers, as llama.cpp's
  // converter folds them): consecutive row segments (rows, factor) covering every row. Empty:
  // no scaling.
  std::vector<std::pair<int64_t, double>> row_scales;
  // Expert `expert` of `n_expert` matrices stacked into one tensor {n_expert, rows, cols}
  // (llama.cpp's ffn_*_exps); -1 for an ordinary tensor.
  int expert = -1;
  int n_expert = 0;

  bool stacked() const { return expert >= 0; }
  bool scaled() const { return !row_scales.empty(); }
};

struct LlamaLayout {
  std::string arch;                               // general.architecture: llama, jamba, falcon-h1, mamba, mamba2
  std::map<std::string, LlamaTensor> tensors;     // by Hugging Face name: every tensor of the checkpoint
  std::vector<std::pair<std::string, gguf::Value>> keys;  // "<arch>.*" hyperparameters, in order
  // What kllens.hf_config holds: the checkpoint's config, with every multiplier folded into the
  // weights set to 1 so that the file reads back as the same function.
  nlohmann::json stored_config;
  std::vector<std::string> notes;  // where llama.cpp's graph is known to differ from kllens'
};

// Whether llama.cpp can hold this checkpoint: "" and *out filled when it can, else why not.
// tensors: the checkpoint's tensors (names, roles and shapes as loaded).
std::string llama_layout(const HfConfig& config, const std::vector<TensorSpec>& tensors,
                         LlamaLayout* out);
std::string llama_layout(const Model& model, const HfConfig& config, LlamaLayout* out);

// The name of a tensor in kllens' GGUF files of this model: llama.cpp's when the model has its
// layout (a stack's name for an expert), else the Hugging Face name.
std::string gguf_tensor_name(const Model& model, const std::string& hf_name);

// ---------------------------------------------------------------------------------------------
// The transforms, shared by the exporter (HF -> file) and the importer (file -> HF).

// The shape (outermost first) of the file's tensor holding `hf_shape` under `t` (for a stacked
// expert: the whole stack).
std::vector<int64_t> llama_file_shape(const LlamaTensor& t, const std::vector<int64_t>& hf_shape);
// Row r of the HF matrix is row llama_row(t, r, rows) of the file's (kRopePermute; identity
// otherwise).
int64_t llama_row(const LlamaTensor& t, int64_t hf_row, int64_t rows);
// HF float values {rows, cols} -> the file's values of this tensor (its slice, for a stacked
// expert): -exp, folded factors, rows permuted.
std::vector<float> to_llama_values(const LlamaTensor& t, const float* values, int64_t rows,
                                   int64_t cols);
// The inverse, for tensors the importer reads as float32 (factors are never undone: the stored
// config has them at 1). Fails naming `what` when ssm_a is not negative.
std::vector<float> from_llama_values(const LlamaTensor& t, const float* values, int64_t rows,
                                     int64_t cols, const std::string& what);

// ---------------------------------------------------------------------------------------------
// Pieces the family layouts share (models/<family>.cpp).

// token_embd, output_norm and output.
void add_llama_embedding_and_head(LlamaLayout* out, const std::string& embed,
                                  const std::string& final_norm, const std::string& head);
// q_proj, k_proj, v_proj, o_proj (+ biases) under `hf_prefix` -> blk.L.attn_{q,k,v,output}.
// rope_heads > 0: q and k rows (and biases) permuted for llama.cpp's interleaved RoPE with
// that many query / key-value heads.
void add_llama_attention(LlamaLayout* out, const std::string& hf_prefix, int layer,
                         int64_t rope_q_heads = 0, int64_t rope_kv_heads = 0);
// gate_proj, up_proj, down_proj (+ biases) under `hf_prefix` -> blk.L.ffn_{gate,up,down}.
void add_llama_swiglu(LlamaLayout* out, const std::string& hf_prefix, int layer);
// A Mamba-2 mixer's in_proj, conv1d (+ bias), dt_bias, A_log, D, norm and out_proj under
// `hf_prefix` -> blk.L.ssm_* with the mamba2 transforms (llama.cpp's mamba2, nemotron_h,
// granitehybrid and falcon-h1 SSM tensors).
void add_llama_mamba2_mixer(LlamaLayout* out, const std::string& hf_prefix, int layer,
                            int64_t n_group);
// "blk.L." for layer L.
std::string llama_blk(int layer);
// The generic size keys every architecture has: context_length, embedding_length, block_count,
// feed_forward_length.
void add_llama_size_keys(LlamaLayout* out, int64_t context_length, int64_t embedding_length,
                         int64_t block_count, int64_t feed_forward_length);
// attention.head_count, head_count_kv, key_length and value_length (= head_dim).
void add_llama_head_keys(LlamaLayout* out, int64_t heads, int64_t kv_heads, int64_t head_dim);
// The head keys of a hybrid whose SSM layers are those with no key/value heads (nemotron_h,
// granitehybrid): attention.head_count (a scalar, at least 1), head_count_kv (INT32 per layer,
// 0 for an SSM layer, as the converter writes it), key_length and value_length (= head_dim, at
// least 1 when no layer has attention).
void add_llama_hybrid_head_keys(LlamaLayout* out, int64_t heads, std::vector<int32_t> kv_per_layer,
                                int64_t head_dim);
// ssm.conv_kernel, inner_size, state_size, time_step_rank (Mamba-2: the number of heads) and,
// when groups > 0, ssm.group_count.
void add_llama_ssm_keys(LlamaLayout* out, int64_t conv_kernel, int64_t inner, int64_t state,
                        int64_t time_step_rank, int64_t groups);
// A u32 key "<arch>.<suffix>".
void add_llama_key(LlamaLayout* out, const std::string& suffix, int64_t value);
void add_llama_key(LlamaLayout* out, const std::string& suffix, gguf::Value value);
// The tensors of `tensors` the layout does not name (a family layout's completeness check):
// "" or why not.
std::string llama_layout_covers(const LlamaLayout& layout, const std::vector<TensorSpec>& tensors);

// ---------------------------------------------------------------------------------------------
// Reading a layout back from a file llama.cpp wrote (convert_hf_to_gguf.py, llama-quantize), which
// has no kllens.hf_config: each family rebuilds its HF config from the "<arch>.*" keys and the
// tensor shapes (families.h: <family>_config_from_llama_keys). Every failure names the file and
// the key; integer keys are bounded as config.json integers are (io/hf_config.h).

class LlamaKeys {
 public:
  explicit LlamaKeys(const gguf::File& file);  // the architecture from general.architecture
  const gguf::File& file() const { return file_; }
  const std::string& arch() const { return arch_; }
  const std::string& path() const;
  std::string key(const std::string& suffix) const { return arch_ + "." + suffix; }
  bool has(const std::string& suffix) const;
  int64_t positive(const std::string& suffix) const;  // required, 1..kMaxConfigInt
  // Required f32/f64, finite, in [lo, hi); returned as the shortest decimal that reads back as
  // the stored float32 (1e-05, not 9.9999997e-06).
  double real(const std::string& suffix, double lo, double hi) const;
  // An integer key llama.cpp writes once or per layer (an array of `layers`), each 0..kMaxConfigInt.
  std::vector<int64_t> per_layer(const std::string& suffix, int64_t layers) const;
  // token_embd.weight's rows (the vocabulary), checked against embedding_length,
  // tokenizer.ggml.tokens and <arch>.vocab_size.
  int64_t vocab(int64_t d_model) const;
  bool tied() const;  // no output.weight
  // bos/eos/pad token ids of tokenizer.ggml.* into c, where they are inside the vocabulary.
  void add_special_tokens(nlohmann::json& c, int64_t vocab) const;
  // num_attention_heads, num_key_value_heads (head_count_kv, default head_count), head_dim
  // (key_length, which value_length must equal; default embedding_length / head_count, which must
  // divide) and rope_theta (rope.freq_base, default 10000) of the llama and falcon-h1 layouts.
  void add_attention_head_keys(nlohmann::json& c, int64_t hidden) const;
  // What the attention families' HF configs share: vocab_size, rms_norm_eps (from
  // attention.layer_norm_rms_epsilon), max_position_embeddings (context_length), hidden_act silu,
  // tie_word_embeddings and the special tokens.
  void add_common_attention_keys(nlohmann::json& c, int64_t vocab) const;
  // The number of layers: `<arch>.block_count`, checked against the blk.N tensors (layer
  // block_count - 1 has `last_tensor`, none is past it).
  int64_t layers(const std::string& last_tensor) const;
  [[noreturn]] void invalid(const std::string& suffix, const std::string& why) const;

 private:
  const gguf::File& file_;
  std::string arch_;
};

// The HF config.json of a file llama.cpp wrote, by its general.architecture (mamba, mamba2,
// llama, jamba); Error naming the architectures kllens reads for any other.
nlohmann::json hf_config_from_llama_keys(const gguf::File& file);

// ggml's ne without trailing 1s (ggml_n_dims drops them when it writes).
std::vector<int64_t> ggml_strip_ones(std::vector<int64_t> ne);

}  // namespace kllens
