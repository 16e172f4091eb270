// Mamba-2 state-space duality (SSD) scan, as the sequential per-token recurrence. HF's chunked
// Mamba2Mixer.torch_forward (and FalconH1Mixer.torch_forward) computes the same function with a
// different summation order (segment sums inside chunks, decayed states between chunks); the two
// agree up to float32 rounding. Prefill and decode both run this kernel (decode is T = 1 with the
// carried state), so both paths do the same arithmetic.
#pragma once

#include <cstdint>

namespace kllens::ops {

// Per head h (group g = h / (H / G)), for t = 0..T-1:
//   S_h     = exp(dt[t,h] * A[h]) * S_h + (dt[t,h] * B[t,g,:]) ⊗ x[t,h,:]     (S_h {P, N})
//   y[t,h,:] = S_h · C[t,g,:] + D[h] * x[t,h,:]
// dt is used as given (the caller applies softplus(dt + dt_bias) and the time_step_limit clamp).
// x {T, H, P} (row stride ldx)  dt {T, H} (row stride lddt)  A {H} (= -exp(A_log))
// B, C {T, G, N} (row stride ldbc)  Dskip {H}  state {H, P, N} (in/out)  y {T, H, P} (contiguous).
// Requires H % G == 0.
void ssd_scan(float* y, float* state, const float* x, int64_t ldx, const float* dt, int64_t lddt,
              const float* A, const float* B, const float* C, int64_t ldbc, const float* Dskip,
              int64_t T, int64_t H, int64_t P, int64_t G, int64_t N);

}  // namespace kllens::ops

namespace kllens::ref {
// The definition above, accumulated in double (the state is carried in double within the call).
void ssd_scan(float* y, float* state, const float* x, int64_t ldx, const float* dt, int64_t lddt,
              const float* A, const float* B, const float* C, int64_t ldbc, const float* Dskip,
              int64_t T, int64_t H, int64_t P, int64_t G, int64_t N);
}  // namespace kllens::ref
