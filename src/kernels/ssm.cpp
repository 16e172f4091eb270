#include "kernels/ssm.h"

#include <cmath>
#include <vector>

#include "kernels/ops.h"

namespace kllens::ops {

void causal_conv1d(float* y, const float* x, int64_t ldx, const float* weight, const float* bias,
                   float* state, int64_t T, int64_t C, int64_t K, bool apply_silu) {
#pragma omp parallel for if (T * C > 32768)
  for (int64_t c = 0; c < C; ++c) {
    const float* w = weight + c * K;
    float* st = state + c * (K - 1);
    // window[0..K-1]: the K inputs ending at the current step (oldest first).
    float window[16];
    std::vector<float> big;
    float* win = window;
    if (K > 16) {
      big.resize(static_cast<size_t>(K));
      win = big.data();
    }
    for (int64_t k = 0; k < K - 1; ++k) win[k] = st[k];
    for (int64_t t = 0; t < T; ++t) {
      win[K - 1] = x[t * ldx + c];
      // torch conv1d accumulates w[k] * x[t - (K-1) + k] in order k = 0..K-1 then adds bias.
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += w[k] * win[k];
      if (bias) acc += bias[c];
      y[t * C + c] = apply_silu ? silu(acc) : acc;
      for (int64_t k = 0; k < K - 1; ++k) win[k] = win[k + 1];
    }
    for (int64_t k = 0; k < K - 1; ++k) st[k] = win[k];
  }
}

void selective_scan(float* y, float* state, const float* x, const float* dt, const float* A,
                    const float* B, const float* C, int64_t ldbc, const float* Dskip, int64_t T,
                    int64_t D, int64_t N) {
#pragma omp parallel for if (T * D * N > 16384)
  for (int64_t d = 0; d < D; ++d) {
    float* h = state + d * N;
    const float* a = A + d * N;
    for (int64_t t = 0; t < T; ++t) {
      const float dtv = dt[t * D + d];
      const float xv = x[t * D + d];
      const float* b = B + t * ldbc;
      const float* c = C + t * ldbc;
      float acc = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        h[n] = std::exp(a[n] * dtv) * h[n] + (dtv * b[n]) * xv;
        acc += h[n] * c[n];
      }
      y[t * D + d] = acc + xv * Dskip[d];
    }
  }
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
