// The model interface every family implements, the tensor table that drives loading, `inspect`,
// quantization and export, and the weights it loads.
//
// A forward pass is split into start (embedding, plus Hymba's meta tokens) → run_layer(0..L-1) →
// finish (final norm and head), so that a sensitivity sweep that perturbs layer L can restart from
// a cached copy of the state before layer L instead of recomputing layers 0..L-1.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "quant/quantize.h"

namespace kllens {

class TensorStore;
class HfConfig;
struct LlamaLayout;

// What a tensor is, independent of the family's naming. Quantization policy is decided by role.
enum class Role : uint8_t {
  kEmbed,     // token embedding (and the head when tied)
  kHead,      // untied lm_head
  kInProj,
  kXProj,
  kDtProj,
  kOutProj,
  kConv1d,
  kQ,
  kK,
  kV,
  kO,
  kGate,
  kUp,
  kDown,
  kRouter,
  kMetaTokens,  // Hymba's learned prefix (memory_tokens)
  kNorm,
  kBias,
  kSsmA,        // A_log
  kSsmD,
  kDtBias,
  kOther,
};
std::string_view role_name(Role role);  // stable strings: "in_proj", "x_proj", "conv1d", ...

// How a checkpoint tensor is turned into what the forward pass uses. Applied exactly once, at load.
enum class Transform : uint8_t { kNone };

struct TensorSpec {
  std::string name;               // Hugging Face tensor name, e.g. backbone.layers.3.mixer.x_proj.weight
  Role role = Role::kOther;
  int layer = -1;                 // -1: not in a layer
  std::vector<int64_t> shape;     // expected shape, exactly as stored
  bool optional = false;          // absent is fine (e.g. biases behind a config flag)
  // Set when checkpoints store this tensor as rows [source_row, source_row + shape[0]) of another
  // one, `source` of shape `source_shape` seen as rows of its last dimension (Granite's fused
  // shared_mlp.input_linear holds the gate and the up projection; its experts' input_linear
  // {E, 2F, H} holds E of each): read from there when the store has no tensor under `name` (a
  // GGUF file holds the parts under their own names, as llama.cpp's ffn_gate and ffn_up).
  std::string source;
  std::vector<int64_t> source_shape;
  int64_t source_row = 0;
};

struct Param {
  std::string name;
  Role role = Role::kOther;
  int layer = -1;
  std::vector<int64_t> shape;
  DType source_dtype = DType::kF32;
  bool tied_head = false;          // the embedding is also the lm_head
  std::vector<float> value;        // float32 (4 bytes per parameter; the mapped file is released)
  // Set for a matrix kept in its stored form (a quantized GGUF tensor, or a model packed by
  // pack_model): then `value` is empty and the forward pass reads it through linear() and, for
  // the embedding, embedding_row(). Only roles that are used that way are ever packed
  // (packable_role).
  std::shared_ptr<const QTensor> packed;

  int64_t numel() const;
  bool is_packed() const { return packed != nullptr; }
  // Bytes held in memory: the packed tensor, or 4 per float32 value.
  int64_t resident_bytes() const {
    return packed ? packed->storage_bytes() : static_cast<int64_t>(value.size() * sizeof(float));
  }
  const float* data() const {
    KLLENS_CHECK(!packed, "{} is packed ({}): read it through linear()", name,
                 packed->scheme.to_string());
    return value.data();
  }
  float* data() {
    KLLENS_CHECK(!packed, "{} is packed ({}): read it through linear()", name,
                 packed->scheme.to_string());
    return value.data();
  }
  // A quantizable component: a *.weight tensor with 2+ dimensions (Linear, conv1d, embedding, head).
  bool is_component() const;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 0 : numel() / shape[0]; }
};

// Matrices supplied already packed (a GGUF file's quantized tensors). While a scope is alive on
// this thread, Weights::load takes the tensors it names from it instead of the store, checking
// the shape and that the role is packable. Used by export/gguf_import.cpp.
class PackedTensorScope {
 public:
  using Map = std::map<std::string, std::shared_ptr<const QTensor>>;
  explicit PackedTensorScope(Map tensors);
  ~PackedTensorScope();
  PackedTensorScope(const PackedTensorScope&) = delete;
  PackedTensorScope& operator=(const PackedTensorScope&) = delete;
  static const Map* current();

 private:
  Map tensors_;
  const Map* previous_;
};

class Weights {
 public:
  // Loads every row of the table: presence, exact shape, conversion to float32. Fails with a
  // one-line error naming the tensor and both shapes. Tensors in the file that the table does
  // not name are reported by unused().
  static Weights load(const TensorStore& store, const std::vector<TensorSpec>& specs,
                      const std::string& folder);

  Param* find(const std::string& name);
  const Param* find(const std::string& name) const;
  Param& get(const std::string& name);
  const Param& get(const std::string& name) const;
  const std::vector<std::unique_ptr<Param>>& all() const { return params_; }
  std::vector<Param*> components();
  std::vector<const Param*> components() const;
  const std::vector<std::string>& unused() const { return unused_; }
  int64_t total_params() const;

 private:
  std::vector<std::unique_ptr<Param>> params_;
  std::vector<std::string> unused_;
};

struct ModelInfo {
  std::string arch;          // model_type: "mamba", "mamba2", "hymba", "llama", "falcon_h1", "jamba", "nemotron_h",
                             // "granitemoehybrid"
  std::string folder;
  int64_t n_layers = 0;
  int64_t d_model = 0;
  int64_t vocab = 0;         // rows of the logits
  int64_t n_prefix_tokens = 0;  // Hymba meta tokens: prepended, never scored
  std::vector<std::string> layer_kinds;  // per layer, for inspect: "mamba", "attention(swa=32)+ssm", ...
  std::vector<std::pair<std::string, std::string>> details;  // family-specific config lines
  // The value of one of `details`, or "" when the family has no such line.
  std::string detail(std::string_view key) const {
    for (const auto& [k, v] : details)
      if (k == key) return v;
    return {};
  }
  // A GGUF file's block-format tensors in roles read element by element (conv1d, ...):
  // dequantized to float32 at load (exactly ggml's dequantization). HF name -> ggml type name.
  std::map<std::string, std::string> dequantized_at_load;
  // Whether kllens' GGUF files of this model use llama.cpp's layout (models/llama_layout.h),
  // decided from the checkpoint at load, and why not when they do not.
  bool llama_cpp_layout = false;
  std::string llama_cpp_layout_why_not;
};

// Per-sequence prefill state between layers. clone() must copy everything later layers read
// (hidden states and, for hybrids, KV shared across layers).
class ForwardState {
 public:
  virtual ~ForwardState() = default;
  virtual std::unique_ptr<ForwardState> clone() const = 0;
  virtual size_t bytes() const { return hidden.size() * sizeof(float); }
  std::vector<float> hidden;   // {rows, d_model}, rows = prefix tokens + sequence tokens
  int64_t rows = 0;
  int next_layer = 0;
};

// Recurrent / KV state for token-by-token decoding of one sequence.
class DecodeState {
 public:
  virtual ~DecodeState() = default;
  virtual size_t bytes() const = 0;
  int64_t position = 0;  // tokens consumed so far
};

// Roles whose matrices the forward pass only multiplies with (linear) or looks rows up in
// (embedding): these may be kept packed. conv1d, norms, the SSM parameters and Hymba's meta tokens
// are read element-wise and are always float32 in memory.
bool packable_role(Role role);

// y {T, N} = x {T, K} · Wᵀ (+ bias {N}) for a float32 or packed weight {N, K} (quant/qmatmul.h).
// Every call is shown to the installed LinearObserver, if any.
void linear(float* y, const float* x, const Param& w, const float* bias, int64_t T, int64_t N,
            int64_t K);

// Sees the input of every linear() call while installed (importance matrices, eval/imatrix.h:
// llama-imatrix hooks ggml's matrix multiplications the same way). Forward passes may run on
// several threads at once, so observe() must be thread-safe. With none installed, linear() pays
// one atomic load.
class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // x {T, K}: the rows multiplied by w {N, K} in this call.
  virtual void observe(const Param& w, const float* x, int64_t T, int64_t K) = 0;
};

// Installs an observer for every thread of the process while the scope lives; scopes nest (the
// innermost observer is notified, the previous one is restored at the end). The observer must
// outlive the scope.
class LinearObserverScope {
 public:
  explicit LinearObserverScope(LinearObserver& observer);
  ~LinearObserverScope();
  LinearObserverScope(const LinearObserverScope&) = delete;
  LinearObserverScope& operator=(const LinearObserverScope&) = delete;

 private:
  LinearObserver* previous_;
};

// Row `row` of an embedding table (float32 or packed) into out {cols}.
void embedding_row(const Param& table, int64_t row, float* out);

// Bytes the weights occupy in memory (float32 values + packed tensors).
int64_t resident_weight_bytes(const Weights& weights);

// state.hidden {ids, d} = rows of the embedding table {vocab, d}; rows = ids; next_layer = 0.
// Ids must already be checked against the vocabulary (Model::check_ids).
void embed_tokens(const Param& table, std::span<const int32_t> ids, ForwardState& state);

class Model {
 public:
  virtual ~Model() = default;
  const ModelInfo& info() const { return info_; }
  // llama.cpp's layout of this checkpoint (models/llama_layout.h), nullptr when llama.cpp cannot
  // hold it (info().llama_cpp_layout_why_not says why).
  const LlamaLayout* llama_layout() const { return llama_layout_.get(); }
  void set_llama_layout(std::shared_ptr<const LlamaLayout> layout, std::string why_not) {
    llama_layout_ = std::move(layout);
    info_.llama_cpp_layout = llama_layout_ != nullptr;
    info_.llama_cpp_layout_why_not = std::move(why_not);
  }
  void add_detail(std::string key, std::string value) {
    info_.details.emplace_back(std::move(key), std::move(value));
  }
  void set_dequantized_at_load(std::map<std::string, std::string> tensors) {
    info_.dequantized_at_load = std::move(tensors);
  }
  Weights& weights() { return weights_; }
  const Weights& weights() const { return weights_; }

  virtual std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const = 0;
  virtual void run_layer(int layer, ForwardState& state) const = 0;
  // logits {T, vocab} for the T sequence tokens (prefix rows dropped).
  virtual void finish(const ForwardState& state, float* logits) const = 0;

  virtual std::unique_ptr<DecodeState> new_decode_state() const = 0;
  virtual void decode_step(DecodeState& state, int32_t token, float* logits) const = 0;

  // start + every layer + finish. logits {T, vocab}.
  std::vector<float> forward(std::span<const int32_t> ids) const;
  // start + every layer + the head on the last position only: logits {vocab}. What a prompt's
  // prefill costs when only the next token is wanted (llama-bench's pp measures this).
  std::vector<float> forward_last(std::span<const int32_t> ids) const;
  // Feeds the tokens one by one through decode_step; logits {T, vocab}.
  std::vector<float> forward_decode(std::span<const int32_t> ids) const;

 protected:
  ModelInfo info_;
  Weights weights_;
  std::shared_ptr<const LlamaLayout> llama_layout_;
  // Fails with a clear error when an id is outside the vocabulary.
  void check_ids(std::span<const int32_t> ids) const;
};

// How a Mamba-2 mixer's gated RMSNorm (HF Mamba2, model_type "mamba2") groups its channels when
// n_groups > 1. kPerGroup normalizes each group of d_inner / n_groups channels: what mamba_ssm's
// RMSNormGated (group_size = d_inner / ngroups), transformers' own CUDA path and llama.cpp compute,
// so what real checkpoints were trained with. kFullWidth is transformers' CPU path
// (MambaRMSNormGated.forward: one RMS over all of d_inner), kept to reproduce its logits. With
// n_groups = 1 both are the same computation.
enum class Mamba2GatedNorm { kPerGroup, kFullWidth };

// How a checkpoint becomes a model, where the checkpoint alone does not say.
struct LoadOptions {
  Mamba2GatedNorm mamba2_norm = Mamba2GatedNorm::kPerGroup;
};

// Reads folder/config.json, picks the family by model_type, validates and loads.
std::unique_ptr<Model> load_model(const std::string& folder, const LoadOptions& options = {});

// The tensor table of a config (every tensor, role and shape), without loading weights.
std::vector<TensorSpec> tensor_specs(const HfConfig& config);

// The families kllens knows (for error messages and --help).
std::vector<std::string> supported_model_types();

}  // namespace kllens
