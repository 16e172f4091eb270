// State-space kernels shared by the Mamba-1, Mamba-2 and hybrid families. Prefill and decode use
// the same kernels (decode is T = 1 with the carried state), so both paths do the same arithmetic.
#pragma once

#include <cstdint>

namespace kllens::ops {

// Causal depthwise conv1d over time with carried context, + bias, optionally followed by SiLU.
// x {T, C} (row stride ldx)  weight {C, K}  bias {C} or null  state {C, K-1} (in/out: the last
// K-1 inputs, oldest first; zeros for a fresh sequence)  y {T, C} (contiguous).
void causal_conv1d(float* y, const float* x, int64_t ldx, const float* weight, const float* bias,
                   float* state, int64_t T, int64_t C, int64_t K, bool apply_silu);

// Mamba-1 selective scan (HF MambaMixer.slow_forward):
//   h = exp(A * dt) * h + dt * B * x ;  y = <h, C> + D * x
// x, dt {T, D} contiguous  A {D, N}  B, C {T, N} with row stride ldbc  Dskip {D}
// state {D, N} (in/out)  y {T, D}.
void selective_scan(float* y, float* state, const float* x, const float* dt, const float* A,
                    const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                    int64_t D, int64_t N);
// Whether full blocks of 16 channels with a state size of 16 run lane-parallel (the default) or
// one channel at a time; for tests and measurements of the two paths.
void set_lane_parallel_scan(bool enabled);

}  // namespace kllens::ops

namespace kllens::ref {
void causal_conv1d(float* y, const float* x, int64_t ldx, const float* weight, const float* bias,
                   float* state, int64_t T, int64_t C, int64_t K, bool apply_silu);
void selective_scan(float* y, float* state, const float* x, const float* dt, const float* A,
                    const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                    int64_t D, int64_t N);
}  // namespace kllens::ref
