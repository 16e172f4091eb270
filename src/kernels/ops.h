// Backend-neutral kernels: spans/pointers and sizes only, no model types. Each fast kernel has a
// plain scalar reference (namespace ref, double accumulation) that tests compare it with.
// Layout convention: row-major, linear weights [out, in] as PyTorch stores them.
#pragma once

#include <cmath>
#include <cstdint>

namespace kllens {

// Threads used by OpenMP loops and BLAS. 0 = all cores.
void set_num_threads(int n);
int num_threads();

namespace ops {

// y {T, N} = x {T, K} · W {N, K}ᵀ (+ bias {N}). BLAS sgemm (sgemv when T == 1).
void matmul_nt(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t N,
               int64_t K);

// y {T, D} = x / sqrt(mean(x², per row) + eps) * weight {D}. y may alias x.
void rmsnorm(float* y, const float* x, const float* weight, int64_t T, int64_t D, float eps);

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with its default threshold: x when x > 20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace ops

namespace ref {
void matmul_nt(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t N,
               int64_t K);
void rmsnorm(float* y, const float* x, const float* weight, int64_t T, int64_t D, float eps);
}  // namespace ref

}  // namespace kllens
