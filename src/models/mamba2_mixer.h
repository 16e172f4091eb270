// The Mamba-2 mixer shared by Mamba-2 and Falcon-H1 (HF Mamba2Mixer / FalconH1Mixer,
// torch_forward): in_proj → split [z | xBC | dt] → causal conv + SiLU on xBC → split
// [x | B | C] → SSD scan with dt = clamp(softplus(dt + dt_bias), time_step_limit) → gated RMSNorm
// → out_proj. The families differ only in the gated norm (full vs per-group normalization,
// gate before vs after the norm, or no norm at all) and Falcon-H1's muP multipliers, which are
// fields here.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "models/model.h"

namespace kllens {

class HfConfig;

// HF's time_step_limit: a pair [min, max]; (0, inf) by default. transformers 5 writes infinity as
// {"__float__": "Infinity"}; older files may hold a number or the strings "inf" / "Infinity".
struct TimeStepLimit {
  float lo = 0.0f;
  float hi = std::numeric_limits<float>::infinity();
};
TimeStepLimit parse_time_step_limit(const HfConfig& config, const char* key = "time_step_limit");

enum class GatedNorm : uint8_t {
  kNone,              // y * silu(z), no norm (Falcon-H1 with mamba_rms_norm = false)
  kGateThenNormFull,  // HF Mamba2 MambaRMSNormGated: rmsnorm over all of I of (y * silu(z))
  kGateThenNormGroup, // per group of I / G channels (FalconH1RMSNormGated, norm_before_gate=false)
  kNormThenGateGroup, // rmsnorm per group of y, then * silu(z) (FalconH1, norm_before_gate=true)
};

struct Mamba2Mixer {
  int64_t hidden = 0;       // model width (in_proj input, out_proj output)
  int64_t inner = 0;        // I = heads * head_dim
  int64_t heads = 0;        // H
  int64_t head_dim = 0;     // P
  int64_t groups = 0;       // G (B and C are shared by H / G heads)
  int64_t state = 0;        // N
  int64_t conv_kernel = 0;  // K
  GatedNorm norm_kind = GatedNorm::kGateThenNormFull;
  float norm_eps = 1e-5f;
  TimeStepLimit dt_limit;

  const Param* in_proj = nullptr;        // {I + conv_dim + H, hidden}
  const Param* in_proj_bias = nullptr;   // {I + conv_dim + H} or null
  const Param* conv = nullptr;           // {conv_dim, 1, K}
  const Param* conv_bias = nullptr;      // {conv_dim} or null
  const Param* dt_bias = nullptr;        // {H}
  const Param* D = nullptr;              // {H}
  const Param* norm = nullptr;           // {I} (null iff norm_kind == kNone)
  const Param* out_proj = nullptr;       // {hidden, I}
  const Param* out_proj_bias = nullptr;  // {hidden} or null
  std::vector<float> A;                  // -exp(A_log) {H}, derived at load

  // Falcon-H1 muP: the input is scaled by in_multiplier before in_proj, and each column of the
  // projection by proj_scale (its "mup_vector", {I + conv_dim + H}; empty = all ones).
  float in_multiplier = 1.0f;
  std::vector<float> proj_scale;

  int64_t conv_dim() const { return inner + 2 * groups * state; }
  int64_t proj_dim() const { return inner + conv_dim() + heads; }
  size_t conv_state_size() const { return static_cast<size_t>(conv_dim() * (conv_kernel - 1)); }
  size_t ssm_state_size() const { return static_cast<size_t>(heads * head_dim * state); }

  void set_A(const Param& a_log);
  // The mixer's tensors under `prefix` (e.g. "backbone.layers.3.mixer."): in_proj, conv1d,
  // dt_bias, A_log, D, norm (unless norm_kind is kNone), out_proj, with ".bias" rows for in/out
  // when proj_bias and for conv1d when conv_bias. The dimensions must be set.
  void add_specs(std::vector<TensorSpec>& specs, const std::string& prefix, int layer,
                 bool proj_bias, bool conv_bias) const;
  // Binds the tensors add_specs names (biases where present) and derives A.
  void bind(const Weights& weights, const std::string& prefix);
  // Falcon-H1's mup_vector from ssm_multipliers [z, x, B, C, dt].
  void set_proj_multipliers(const std::vector<double>& zxbcdt);

  // out {T, hidden} = mixer(u {T, hidden}). conv_state {conv_dim, K-1} and ssm_state {H, P, N}
  // are carried in and out (zeros for a fresh sequence).
  void forward(float* out, const float* u, int64_t T, float* conv_state, float* ssm_state) const;
};

// The mixer of Mamba-2, Nemotron-H and Granite-4.0-H: the gate applied before an RMSNorm, per
// group of (heads * head_dim) / groups channels or, under Mamba2GatedNorm::kFullWidth
// (transformers' CPU path), over all of them. The tensors are bound later (bind).
Mamba2Mixer gate_then_norm_mixer(int64_t hidden, int64_t heads, int64_t head_dim, int64_t groups,
                                 int64_t state, int64_t conv_kernel, Mamba2GatedNorm norm,
                                 float eps, TimeStepLimit dt_limit);
// For inspect: "gate, then RMS per group of 64 channels (mamba_ssm, llama.cpp)", ...
std::string gated_norm_description(const Mamba2Mixer& mixer);

}  // namespace kllens
