#include "kernels/ssd.h"

#include <cmath>
#include <vector>

namespace kllens::ops {

void ssd_scan(float* y, float* state, const float* x, int64_t ldx, const float* dt, int64_t lddt,
              const float* A, const float* B, const float* C, int64_t ldbc, const float* Dskip,
              int64_t T, int64_t H, int64_t P, int64_t G, int64_t N) {
  const int64_t heads_per_group = H / G;
#pragma omp parallel for if (T * H * P * N > 32768)
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / heads_per_group;
    float* S = state + h * P * N;
    for (int64_t t = 0; t < T; ++t) {
      const float dtv = dt[t * lddt + h];
      // HF decode path: dA = exp(dt * A); dBx = (dt * B) * x; S = S * dA + dBx; y = S @ C + D x
      const float dA = std::exp(dtv * A[h]);
      const float* b = B + t * ldbc + g * N;
      const float* c = C + t * ldbc + g * N;
      const float* xr = x + t * ldx + h * P;
      float* yr = y + t * H * P + h * P;
      for (int64_t p = 0; p < P; ++p) {
        float* s = S + p * N;
        const float xv = xr[p];
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          s[n] = s[n] * dA + (dtv * b[n]) * xv;
          acc += s[n] * c[n];
        }
        yr[p] = acc + xv * Dskip[h];
      }
    }
  }
}

}  // namespace kllens::ops

namespace kllens::ref {

void ssd_scan(float* y, float* state, const float* x, int64_t ldx, const float* dt, int64_t lddt,
              const float* A, const float* B, const float* C, int64_t ldbc, const float* Dskip,
              int64_t T, int64_t H, int64_t P, int64_t G, int64_t N) {
  const int64_t heads_per_group = H / G;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / heads_per_group;
    std::vector<double> S(state + h * P * N, state + (h + 1) * P * N);
    for (int64_t t = 0; t < T; ++t) {
      const double dtv = dt[t * lddt + h];
      const double dA = std::exp(dtv * static_cast<double>(A[h]));
      for (int64_t p = 0; p < P; ++p) {
        const double xv = x[t * ldx + h * P + p];
        double acc = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          double& s = S[static_cast<size_t>(p * N + n)];
          s = s * dA + dtv * static_cast<double>(B[t * ldbc + g * N + n]) * xv;
          acc += s * static_cast<double>(C[t * ldbc + g * N + n]);
        }
        y[t * H * P + h * P + p] = static_cast<float>(acc + static_cast<double>(Dskip[h]) * xv);
      }
    }
    for (int64_t i = 0; i < P * N; ++i) state[h * P * N + i] = static_cast<float>(S[static_cast<size_t>(i)]);
  }
}

}  // namespace kllens::ref
