// The runtime every sequential family shares: embedding → layers of pre-norm residual blocks →
// final norm → head, for prefill (start / run_layer / finish) and decode (decode_step).
//
// A layer is one or more residual blocks, hidden += residual_scale · mixer(rmsnorm(hidden)),
// and a mixer is one of a few kinds: the Mamba-1 or Mamba-2 mixer, attention (GQA, optional
// RoPE), a SwiGLU or a squared-ReLU MLP, top-k experts, or mixers side by side. A family file
// declares its config parsing, its tensor table and which blocks each layer has; the loops, the
// head, the decode states and the scratch buffers live here once.
//
// Every family runs on it; Hymba adds its own mixer (attention and SSM heads from one in_proj,
// K/V shared across layers through StackCarry) and its meta tokens as StackEnds::prefix.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/attention_block.h"
#include "models/mamba1_ssm.h"
#include "models/mamba2_mixer.h"
#include "models/model.h"

namespace kllens {

// What a mixer keeps between the decode steps of one sequence (conv and SSM states, a KV cache).
class MixerState {
 public:
  virtual ~MixerState() = default;
  virtual size_t bytes() const = 0;
};

// What one pass carries from a layer to later ones, for mixers that share across layers (Hymba's
// K/V reuse groups): in prefill, slots kept in the forward state (so a sweep's copy of the state
// before a layer has them); in decode, every layer's block states.
struct StackCarry {
  std::vector<std::vector<float>>* slots = nullptr;                         // prefill, else null
  std::vector<std::vector<std::unique_ptr<MixerState>>>* states = nullptr;  // decode, else null
};

// out {T, hidden} = f(x {T, hidden}) for rows at positions pos {T}. out must not alias x.
// state == nullptr: the rows are a whole fresh sequence (prefill); whatever state the mixer
// would carry on is dropped. Otherwise they continue the sequence `state` holds, which is
// updated (decode).
class Mixer {
 public:
  virtual ~Mixer() = default;
  // The state decoding needs, or nullptr when the mixer keeps none (an MLP).
  virtual std::unique_ptr<MixerState> new_state() const { return nullptr; }
  virtual void forward(float* out, const float* x, int64_t T, const int64_t* pos,
                       MixerState* state) const = 0;
  // The same, seeing what the pass carries across layers; the stack calls this one. Mixers that
  // share nothing across layers keep the default.
  virtual void forward_carried(float* out, const float* x, int64_t T, const int64_t* pos,
                               MixerState* state, const StackCarry& carry) const {
    (void)carry;
    forward(out, x, T, pos, state);
  }
  // For inspect: "mamba", "mamba2", "attn(global)", "mlp", ...
  virtual std::string kind() const = 0;
};

// HF MambaMixer (slow_forward): in_proj → [x | z] → Mamba-1 SSM branch → out_proj.
class Mamba1MixerBlock : public Mixer {
 public:
  int64_t hidden = 0;
  const Param *in_proj = nullptr, *in_proj_bias = nullptr;    // {2 inner, hidden}, {2 inner}
  const Param *out_proj = nullptr, *out_proj_bias = nullptr;  // {hidden, inner}, {hidden}
  Mamba1Ssm ssm;

  // Binds HF MambaMixer's tensors under `prefix` (e.g. "backbone.layers.3.mixer."): in_proj and
  // out_proj (+ ".bias" where present), conv1d (+ bias), x_proj, dt_proj (+ bias), D, A_log.
  // The dimensions and the optional dt/B/C norms are the caller's.
  void bind(const Weights& weights, const std::string& prefix);

  std::unique_ptr<MixerState> new_state() const override;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override { return "mamba"; }
};

// The Mamba-2 mixer (models/mamba2_mixer.h).
class Mamba2MixerBlock : public Mixer {
 public:
  Mamba2Mixer mixer;

  std::unique_ptr<MixerState> new_state() const override;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override { return "mamba2"; }
};

// Causal softmax attention: q, k, v projections (GQA), RoPE when inv_freq is set (HF
// rotate_half), softmax(scale · q·k) v, o projection. Decode keeps an unbounded KV cache.
class AttentionMixer : public Mixer {
 public:
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0;
  const Param *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  const Param *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  std::vector<float> inv_freq;  // {head_dim / 2}; empty: no positional rotation (Nemotron-H)
  float scale = 0.0f;           // softmax scale; 0 means 1 / sqrt(head_dim)
  float key_scale = 1.0f;       // k *= key_scale before RoPE (Falcon-H1's key_multiplier)

  // q_proj, k_proj, v_proj, o_proj (+ ".bias" when present) under `prefix`, e.g.
  // "model.layers.3.self_attn.".
  static void add_specs(std::vector<TensorSpec>& specs, const std::string& prefix, int layer,
                        int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                        bool bias);
  void bind(const Weights& weights, const std::string& prefix);
  // An attention mixer of these sizes bound to the tensors under `prefix`; RoPE and the scales
  // are left at their defaults (none, 1/sqrt(head_dim), 1) for the caller to set.
  static std::unique_ptr<AttentionMixer> bound(const Weights& weights, const std::string& prefix,
                                               int64_t hidden, int64_t heads, int64_t kv_heads,
                                               int64_t head_dim);

  std::unique_ptr<MixerState> new_state() const override;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override { return inv_freq.empty() ? "attn(global, no rope)" : "attn(global)"; }
};

// down(silu(gate(x)) · up(x)) (models/attention_block.h).
class SwiGluMixer : public Mixer {
 public:
  SwiGluMlp mlp;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override { return "mlp(swiglu)"; }
};

// Several mixers on the same input, their outputs summed: out = Σ_b out_scale_b ·
// mixer_b(in_scale_b · x) (Falcon-H1's attention and Mamba-2 side by side, with its muP
// multipliers). Branches must not themselves be parallel (their scratch buffers are shared).
class ParallelMixer : public Mixer {
 public:
  struct Branch {
    std::unique_ptr<Mixer> mixer;
    float in_scale = 1.0f, out_scale = 1.0f;
  };
  int64_t hidden = 0;
  std::vector<Branch> branches;
  std::unique_ptr<MixerState> new_state() const override;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override;
};

// Top-k mixture of SwiGLU experts: router logits {T, E} = router(x); p = softmax over all
// experts (float32), and the top-k probabilities are used as they are (no renormalization, HF
// JambaSparseMoeBlock / Mixtral), or with `renormalize` the softmax of the top-k logits alone
// (HF GraniteMoeHybridTopKGating: the top-k weights sum to 1); out = Σ over the selected experts
// of p_e · expert_e(x), accumulated in expert order like MixtralExperts' index_add_.
class MoeMixer : public Mixer {
 public:
  int64_t hidden = 0, top_k = 0;
  bool renormalize = false;
  const Param* router = nullptr;  // {n_experts, hidden}
  std::vector<SwiGluMlp> experts;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override;
};

// down(relu(up(x))²): Nemotron-H's MLP layers (mlp_hidden_act "relu2").
class Relu2MlpMixer : public Mixer {
 public:
  int64_t hidden = 0, ffn = 0;
  const Param *up = nullptr, *down = nullptr, *up_bias = nullptr, *down_bias = nullptr;
  void forward(float* out, const float* x, int64_t T, const int64_t* pos,
               MixerState* state) const override;
  std::string kind() const override { return "mlp(relu2)"; }
};

// hidden += residual_scale · mixer(rmsnorm(hidden; norm, eps)).
struct ResidualBlock {
  const Param* norm = nullptr;
  float eps = 1e-5f;
  float residual_scale = 1.0f;
  std::unique_ptr<Mixer> mixer;
};

struct StackLayer {
  std::vector<ResidualBlock> blocks;
  std::string kind;  // for inspect; empty: the blocks' kinds joined by "+"
};

// The embedding and the head around the layers.
struct StackEnds {
  const Param* embed = nullptr;  // {vocab, hidden}
  const Param* norm_f = nullptr;  // {hidden}
  const Param* head = nullptr;    // {vocab, hidden}; the embedding when tied
  float norm_eps = 1e-5f;
  float embedding_scale = 1.0f;   // hidden = embedding · scale (Granite's embedding_multiplier)
  float logits_divisor = 1.0f;    // logits = head(...) / divisor (Granite's logits_scaling)
  float logits_multiplier = 1.0f; // logits = head(...) · multiplier (Falcon-H1's lm_head_multiplier)
  // Rows prepended to every sequence and never scored (Hymba's meta tokens {M, hidden}), or null.
  // Decoding starts by running them through the layers.
  const Param* prefix = nullptr;
};

// A Model made of a StackEnds and StackLayers. A family's constructor loads the weights, fills
// ends_ and layers_ and calls finish_stack() to describe the layers in info().
class LayerStackModel : public Model {
 public:
  std::unique_ptr<ForwardState> start(std::span<const int32_t> ids) const final;
  void run_layer(int layer, ForwardState& state) const final;
  void finish(const ForwardState& state, float* logits) const final;
  std::unique_ptr<DecodeState> new_decode_state() const final;
  void decode_step(DecodeState& state, int32_t token, float* logits) const final;

 protected:
  // Sets info_.arch, folder, n_layers, d_model, vocab, n_prefix_tokens and layer_kinds.
  void finish_stack(std::string arch, const std::string& folder);
  // inspect's lines for a hybrid's Mamba-2 mixers: d_inner, ssm_heads, ssm_head_dim, n_groups,
  // d_state, d_conv, gated_norm.
  void add_mamba2_details(const Mamba2Mixer& mixer);

  StackEnds ends_;
  std::vector<StackLayer> layers_;
  size_t carry_slots_ = 0;  // StackCarry::slots a prefill pass starts with (empty vectors)

 private:
  void run_blocks(const StackLayer& layer, float* hidden, int64_t T, const int64_t* pos,
                  std::vector<std::unique_ptr<MixerState>>* states, const StackCarry& carry) const;
  // state.hidden = the rows of the ids' embeddings, times embedding_scale (no prefix).
  void embed(std::span<const int32_t> ids, ForwardState& state) const;
  void head(const float* hidden, int64_t T, float* logits) const;
};

}  // namespace kllens
