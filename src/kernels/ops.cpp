#include "kernels/ops.h"

#include <blis.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace kllens {

namespace {
int g_threads = 0;
}

void set_num_threads(int n) {
  // 0 = the OpenMP default: OMP_NUM_THREADS when set (scripts/test runs tests single-threaded
  // side by side), else every core.
  if (n <= 0) n = std::getenv("OMP_NUM_THREADS") ? omp_get_max_threads()
                                                  : static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  // BLIS itself stays single-threaded: its barrier spin-waits made a 2-thread GEMM slower than a
  // 1-thread one here (mamba-130m prefill: 33 vs 236 tok/s). matmul_nt splits the output columns
  // across our own OpenMP threads instead, one barrier per product.
  bli_thread_set_num_threads(1);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

namespace ops {

namespace {
// One BLAS call on output columns [n0, n1): rows n0..n1 of W.
void matmul_slice(float* y, const float* x, const float* w, const float* bias, int64_t T,
                  int64_t N, int64_t K, int64_t n0, int64_t n1) {
  const int64_t n = n1 - n0;
  if (n <= 0) return;
  if (T == 1) {
    if (bias)
      for (int64_t j = n0; j < n1; ++j) y[j] = bias[j];
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), static_cast<int>(K), 1.0f,
                w + n0 * K, static_cast<int>(K), x, 1, bias ? 1.0f : 0.0f, y + n0, 1);
    return;
  }
  if (bias)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = n0; j < n1; ++j) y[t * N + j] = bias[j];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(n),
              static_cast<int>(K), 1.0f, x, static_cast<int>(K), w + n0 * K, static_cast<int>(K),
              bias ? 1.0f : 0.0f, y + n0, static_cast<int>(N));
}
}  // namespace

void matmul_nt(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t N,
               int64_t K) {
  const int threads = omp_in_parallel() ? 1 : num_threads();
  // Below ~1 MFLOP a parallel region costs more than it saves.
  if (threads <= 1 || T * N * K < (int64_t{1} << 19) || N < 64) {
    matmul_slice(y, x, w, bias, T, N, K, 0, N);
    return;
  }
  // Column slices, multiples of 16 rows of W so each thread's block stays vector-aligned.
  const int64_t chunk = ((N + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int i = 0; i < threads; ++i)
    matmul_slice(y, x, w, bias, T, N, K, std::min(N, i * chunk), std::min(N, (i + 1) * chunk));
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
