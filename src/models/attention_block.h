// Pieces shared by the families with attention (Llama, Hymba, Falcon-H1, Jamba): the SwiGLU MLP,
// RoPE settings and frequency tables, and the decode KV cache (unbounded, or a sliding-window ring
// that keeps a fixed prefix such as Hymba's meta tokens for good).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace kllens {

class HfConfig;

// out = down(silu(gate(x)) * up(x)) (HF LlamaMLP with hidden_act "silu"; also Hymba's single
// expert and Jamba's / Falcon-H1's MLPs). Biases are optional (Llama's mlp_bias).
struct SwiGluMlp {
  int64_t hidden = 0, ffn = 0;
  const Param *gate = nullptr, *up = nullptr, *down = nullptr;                 // {ffn, hidden} x2, {hidden, ffn}
  const Param *gate_bias = nullptr, *up_bias = nullptr, *down_bias = nullptr;  // or null
  float gate_scale = 1.0f;  // silu(gate(x) · gate_scale): Falcon-H1's gate multiplier

  // Rows for `prefix` + "gate_proj.weight", "up_proj.weight", "down_proj.weight" (+ ".bias" rows
  // when `bias`), e.g. prefix "model.layers.3.mlp.".
  static void add_specs(std::vector<TensorSpec>& specs, const std::string& prefix, int layer,
                        int64_t hidden, int64_t ffn, bool bias);
  // Binds the loaded tensors named as add_specs names them (biases: when present).
  static SwiGluMlp bind(const Weights& weights, const std::string& prefix, int64_t hidden,
                        int64_t ffn);

  // out {T, hidden} = mlp(x {T, hidden}); out must not alias x.
  void forward(float* out, const float* x, int64_t T) const;
};

// num_attention_heads, num_key_value_heads (absent or null: the same; it must divide the heads)
// and head_dim (absent or null: hidden / heads, which must divide), as HF's Jamba and
// GraniteMoeHybrid configs read them. Errors name the field.
struct AttentionHeads {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
};
AttentionHeads read_attention_heads(const HfConfig& config, int64_t hidden);

// RoPE settings as any transformers version writes them: `rope_theta` at the top level with an
// optional `rope_scaling` (up to 4.x), or `rope_parameters` {rope_theta, rope_type, ...}
// (transformers 5). Only rope_type "default" (no scaling) is supported; any other scaling type
// fails naming the file and the type.
struct RopeSettings {
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;
};
RopeSettings read_default_rope(const HfConfig& config, double default_theta);

// inv_freq {dim / 2}: 1 / base^(2i / dim), evaluated like HF's rope init (exponent in float32,
// result float32).
std::vector<float> rope_inv_freq(double base, int64_t dim);

// HF keeps inv_freq in a non-persistent float32 buffer. A model run in its checkpoint's half
// precision with model.to(torch.bfloat16) (as the Hymba model card does, and as the demo-model
// references were made) has that buffer rounded to bf16 / f16 as well, and cos / sin come from the
// rounded frequencies. For a BF16 or F16 checkpoint this rounds inv_freq the same way; for any
// other dtype it leaves it unchanged. (HF's from_pretrained(dtype=...) keeps the buffer in float32,
// so a family opts in only where its reference outputs show the rounding.)
void round_like_half_precision_buffer(std::vector<float>& inv_freq, DType checkpoint_dtype);

// Keys and values of one attention layer (or of a group of layers sharing K/V) for decoding, with
// the absolute position of every row so that ops::attention can apply causal / window masks.
//  - window == 0: unbounded, every appended row is kept.
//  - window > 0: the first `keep` appended rows (an always-visible prefix, e.g. Hymba's meta
//    tokens) are kept for good; later rows go to a ring of `window` rows that overwrites the
//    oldest, so memory is flat in the sequence length. The caller must make `window` at least the
//    number of non-prefix keys its queries can see.
// Rows [0, rows()) of k / v / pos are valid, in storage (not position) order.
struct KvCache {
  int64_t k_width = 0, v_width = 0;  // floats per row: kv_heads * k_head_dim, kv_heads * v_head_dim
  int64_t keep = 0, window = 0;
  std::vector<float> k, v;           // {capacity or rows, k_width}, {.., v_width}
  std::vector<int64_t> pos;          // {capacity or rows}
  int64_t appended = 0;              // rows ever appended

  void init(int64_t k_width, int64_t v_width, int64_t keep, int64_t window);
  // Appends n rows: k_rows {n, k_width}, v_rows {n, v_width} (row strides ldk / ldv), positions {n}.
  void append(const float* k_rows, int64_t ldk, const float* v_rows, int64_t ldv,
              const int64_t* positions, int64_t n);
  int64_t rows() const;
  // Rows that were overwritten by the ring (0 for an unbounded cache).
  int64_t evicted() const { return appended - rows(); }
  size_t bytes() const;
};

}  // namespace kllens
