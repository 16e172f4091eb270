#include "kernels/ops.h"

#include <blis.h>
#include <cblas.h>
#include <omp.h>

#include <thread>

namespace kllens {

namespace {
int g_threads = 0;
}

void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  bli_thread_set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

namespace ops {

void matmul_nt(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t N,
               int64_t K) {
  if (T == 1) {
    if (bias) {
      for (int64_t n = 0; n < N; ++n) y[n] = bias[n];
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, w,
                static_cast<int>(K), x, 1, bias ? 1.0f : 0.0f, y, 1);
    return;
  }
  if (bias) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n) y[t * N + n] = bias[n];
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(N),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w, static_cast<int>(K),
              bias ? 1.0f : 0.0f, y, static_cast<int>(N));
}

void rmsnorm(float* y, const float* x, const float* weight, int64_t T, int64_t D, float eps) {
#pragma omp parallel for if (T * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * D;
    float* yr = y + t * D;
    float sum = 0.0f;
    for (int64_t d = 0; d < D; ++d) sum += xr[d] * xr[d];
    // torch: x * rsqrt(mean(x^2) + eps), all in float32.
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(D) + eps);
    for (int64_t d = 0; d < D; ++d) yr[d] = weight[d] * (xr[d] * inv);
  }
}

}  // namespace ops

namespace ref {

void matmul_nt(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t N,
               int64_t K) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[t * K + k]) * w[n * K + k];
      y[t * N + n] = static_cast<float>(acc);
    }
}

void rmsnorm(float* y, const float* x, const float* weight, int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    double sum = 0.0;
    for (int64_t d = 0; d < D; ++d) sum += static_cast<double>(x[t * D + d]) * x[t * D + d];
    const double inv = 1.0 / std::sqrt(sum / static_cast<double>(D) + eps);
    for (int64_t d = 0; d < D; ++d) y[t * D + d] = static_cast<float>(weight[d] * (x[t * D + d] * inv));
  }
}

}  // namespace ref
}  // namespace kllens
