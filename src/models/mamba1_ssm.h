// The Mamba-1 selective-SSM branch shared by Mamba-1, Hymba and Jamba: causal conv → x_proj →
// (optional RMSNorm on dt, B, C as Hymba and Jamba do) → dt_proj → softplus → selective scan
// → gate with silu(z). Input and output projections belong to the caller (they differ per family).
#pragma once

#include <cstdint>
#include <vector>

#include "models/model.h"

namespace kllens {

struct Mamba1Ssm {
  int64_t inner = 0, state = 0, dt_rank = 0, conv_kernel = 0;
  const Param* conv = nullptr;        // {inner, 1, K}
  const Param* conv_bias = nullptr;   // {inner} or null
  const Param* x_proj = nullptr;      // {dt_rank + 2 state, inner}
  const Param* dt_proj = nullptr;     // {inner, dt_rank}
  const Param* dt_bias = nullptr;     // {inner}
  const Param* D = nullptr;           // {inner}
  const Param* dt_norm = nullptr;     // {dt_rank} or null (RMSNorm on dt before dt_proj)
  const Param* b_norm = nullptr;      // {state} or null
  const Param* c_norm = nullptr;      // {state} or null
  float norm_eps = 1e-6f;
  std::vector<float> A;               // -exp(A_log) {inner, state}, derived at load

  // Fills A from the A_log parameter.
  void set_A(const Param& a_log);
  size_t conv_state_size() const { return static_cast<size_t>(inner * (conv_kernel - 1)); }
  size_t ssm_state_size() const { return static_cast<size_t>(inner * state); }

  // y {T, inner} = silu(z) * (scan(silu(conv(x))) + D x).
  // x {T, inner} row stride ldx (pre-conv), z {T, inner} row stride ldz.
  // conv_state {inner, K-1} and ssm_state {inner, state} are carried in and out.
  void forward(float* y, const float* x, int64_t ldx, const float* z, int64_t ldz, int64_t T,
               float* conv_state, float* ssm_state) const;
};

}  // namespace kllens
