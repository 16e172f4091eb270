#include "kernels/ssm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/ops.h"
#include "kernels/vec_math.h"

namespace kllens::ops {

void causal_conv1d(float* y, const float* x, int64_t ldx, const float* weight, const float* bias,
                   float* state, int64_t T, int64_t C, int64_t K, bool apply_silu) {
  // Time outer, channels inner (contiguous, vectorised). The K-1 carried inputs are laid in
  // front of x as rows of a {K-1+T, C} view: row r < K-1 is state column r, else x row r-K+1.
  // Both written whole here.
  thread_local ScratchVec w_t_buf, head_buf;
  float* w_t = w_t_buf.get(static_cast<size_t>(K * C));          // {K, C}
  float* head = head_buf.get(static_cast<size_t>((K - 1) * C));  // state as rows {K-1, C}
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) w_t[k * C + c] = weight[c * K + k];
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K - 1; ++k) head[k * C + c] = state[c * (K - 1) + k];
  auto row = [&](int64_t r) -> const float* {
    return r < K - 1 ? head + r * C : x + (r - (K - 1)) * ldx;
  };
#pragma omp parallel for schedule(static) if (T * C > 32768)
  for (int64_t t = 0; t < T; ++t) {
    float* out = y + t * C;
    // torch conv1d sums w[k] * u[t + k] in order k = 0..K-1, then adds the bias.
    const float* u0 = row(t);
    for (int64_t c = 0; c < C; ++c) out[c] = w_t[c] * u0[c];
    for (int64_t k = 1; k < K; ++k) {
      const float* uk = row(t + k);
      const float* wk = w_t + k * C;
      for (int64_t c = 0; c < C; ++c) out[c] += wk[c] * uk[c];
    }
    if (bias)
      for (int64_t c = 0; c < C; ++c) out[c] += bias[c];
    if (apply_silu)
      for (int64_t c = 0; c < C; ++c) out[c] = out[c] / (1.0f + exp_fast(-out[c]));
  }
  // New state: the last K-1 rows of the {K-1+T, C} view.
  for (int64_t k = 0; k < K - 1; ++k) {
    const float* src = row(T + k);
    for (int64_t c = 0; c < C; ++c) state[c * (K - 1) + k] = src[c];
  }
}

namespace {

bool lane_parallel_scan = true;

// One channel, one step. kN > 0 makes the state size a compile-time constant (Mamba-1 and
// Hymba use 16), so the three loops become straight vector code; kN == 0 is the general case.
template <int64_t kN>
inline float scan_step(float* h, const float* a, const float* b, const float* c, float dtv,
                       float xv, int64_t n_runtime) {
  const int64_t N = kN > 0 ? kN : n_runtime;
  float decay[kN > 0 ? kN : 256];
  for (int64_t n = 0; n < N; ++n) decay[n] = exp_fast(a[n] * dtv);
  for (int64_t n = 0; n < N; ++n) h[n] = decay[n] * h[n] + (dtv * b[n]) * xv;
  float acc = 0.0f;
  for (int64_t n = 0; n < N; ++n) acc += h[n] * c[n];
  return acc;
}

// Sixteen channels at once with the state transposed to h[n][lane]: every operation is vertical
// (one lane per channel, sixteen independent recurrences), so there is no horizontal sum per
// channel and step, and x, dt and y of a step are one contiguous load/store. Each lane does the
// arithmetic of scan_step in the same order (y sums h[n]·c[n] for n = 0, 1, ...).
constexpr int64_t kLanes = 16;

template <int64_t kN>
void scan_lanes(float* y, float* state, const float* x, const float* dt, const float* A,
                const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                int64_t D, int64_t d0) {
  alignas(64) float h[kN][kLanes], a[kN][kLanes];
  for (int64_t l = 0; l < kLanes; ++l)
    for (int64_t n = 0; n < kN; ++n) {
      h[n][l] = state[(d0 + l) * kN + n];
      a[n][l] = A[(d0 + l) * kN + n];
    }
  for (int64_t t = 0; t < T; ++t) {
    const float* b = B + t * ldbc;
    const float* c = C + t * ldbc;
    const float* xv = x + t * D + d0;
    const float* dtv = dt + t * D + d0;
    alignas(64) float acc[kLanes] = {};
    for (int64_t n = 0; n < kN; ++n) {
      const float bn = b[n], cn = c[n];
#pragma omp simd
      for (int64_t l = 0; l < kLanes; ++l) {
        const float decay = exp_fast(a[n][l] * dtv[l]);
        h[n][l] = decay * h[n][l] + (dtv[l] * bn) * xv[l];
        acc[l] += h[n][l] * cn;
      }
    }
    float* out = y + t * D + d0;
#pragma omp simd
    for (int64_t l = 0; l < kLanes; ++l) out[l] = acc[l] + xv[l] * Dskip[d0 + l];
  }
  for (int64_t l = 0; l < kLanes; ++l)
    for (int64_t n = 0; n < kN; ++n) state[(d0 + l) * kN + n] = h[n][l];
}

template <int64_t kN>
void selective_scan_impl(float* y, float* state, const float* x, const float* dt, const float* A,
                         const float* B, const float* C, int64_t ldbc, const float* Dskip,
                         int64_t T, int64_t D, int64_t N) {
  // Channels in blocks of 16 with time inside: x, dt and y of one step are then one cache line
  // per block instead of one line per channel (the arrays are {T, D}, D-contiguous). A full
  // block of a compile-time state size runs lane-parallel (scan_lanes); the rest per channel.
  constexpr int64_t kBlock = kLanes;
  const int64_t blocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (T * D * N > 32768)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t d0 = blk * kBlock, d1 = std::min(D, d0 + kBlock);
    if constexpr (kN > 0) {
      if (d1 - d0 == kLanes && lane_parallel_scan) {
        scan_lanes<kN>(y, state, x, dt, A, B, C, ldbc, Dskip, T, D, d0);
        continue;
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const float* b = B + t * ldbc;
      const float* c = C + t * ldbc;
      for (int64_t d = d0; d < d1; ++d) {
        const float xv = x[t * D + d];
        const float acc = scan_step<kN>(state + d * N, A + d * N, b, c, dt[t * D + d], xv, N);
        y[t * D + d] = acc + xv * Dskip[d];
      }
    }
  }
}

}  // namespace

void set_lane_parallel_scan(bool enabled) { lane_parallel_scan = enabled; }

void selective_scan(float* y, float* state, const float* x, const float* dt, const float* A,
                    const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                    int64_t D, int64_t N) {
  KLLENS_CHECK(N > 0 && N <= 256, "selective_scan supports state sizes 1..256, got {}", N);
  if (N == 16)
    selective_scan_impl<16>(y, state, x, dt, A, B, C, ldbc, Dskip, T, D, N);
  else
    selective_scan_impl<0>(y, state, x, dt, A, B, C, ldbc, Dskip, T, D, N);
}

}  // namespace kllens::ops

namespace kllens::ref {

void causal_conv1d(float* y, const float* x, int64_t ldx, const float* weight, const float* bias,
                   float* state, int64_t T, int64_t C, int64_t K, bool apply_silu) {
  // Direct definition: y[t] = sum_k w[k] * u[t - (K-1) + k], u = concat(state, x).
  for (int64_t c = 0; c < C; ++c) {
    std::vector<double> u(static_cast<size_t>(K - 1 + T));
    for (int64_t k = 0; k < K - 1; ++k) u[k] = state[c * (K - 1) + k];
    for (int64_t t = 0; t < T; ++t) u[K - 1 + t] = x[t * ldx + c];
    for (int64_t t = 0; t < T; ++t) {
      double acc = bias ? bias[c] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += weight[c * K + k] * u[t + k];
      y[t * C + c] = static_cast<float>(apply_silu ? acc / (1.0 + std::exp(-acc)) : acc);
    }
    for (int64_t k = 0; k < K - 1; ++k) state[c * (K - 1) + k] = static_cast<float>(u[T + k]);
  }
}

void selective_scan(float* y, float* state, const float* x, const float* dt, const float* A,
                    const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                    int64_t D, int64_t N) {
  for (int64_t d = 0; d < D; ++d) {
    std::vector<double> h(state + d * N, state + (d + 1) * N);
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0.0;
      for (int64_t n = 0; n < N; ++n) {
        h[n] = std::exp(static_cast<double>(A[d * N + n]) * dt[t * D + d]) * h[n] +
               static_cast<double>(dt[t * D + d]) * B[t * ldbc + n] * x[t * D + d];
        acc += h[n] * C[t * ldbc + n];
      }
      y[t * D + d] = static_cast<float>(acc + static_cast<double>(x[t * D + d]) * Dskip[d]);
    }
    for (int64_t n = 0; n < N; ++n) state[d * N + n] = static_cast<float>(h[n]);
  }
}

}  // namespace kllens::ref
