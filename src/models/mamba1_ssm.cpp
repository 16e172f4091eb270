#include "models/mamba1_ssm.h"

#include <algorithm>
#include <cmath>

#include "core/scratch.h"
#include "kernels/ops.h"
#include "kernels/ssm.h"
#include "kernels/vec_math.h"

namespace kllens {

void Mamba1Ssm::set_A(const Param& a_log) {
  A.resize(a_log.value.size());
  for (size_t i = 0; i < A.size(); ++i) A[i] = -std::exp(a_log.value[i]);
}

void Mamba1Ssm::forward(float* y, const float* x_in, int64_t ldx, const float* z, int64_t ldz,
                        int64_t T, float* conv_state, float* ssm_state) const {
  const int64_t I = inner, N = state, R = dt_rank, P = R + 2 * N;
  // Every buffer below is written whole before it is read.
  thread_local ScratchVec x_buf, proj_buf, dt_r_buf, dt_buf;
  // x {T, I} = silu(causal_conv1d(x))
  float* x = x_buf.get(static_cast<size_t>(T * I));
  ops::causal_conv1d(x, x_in, ldx, conv->data(), conv_bias ? conv_bias->data() : nullptr,
                     conv_state, T, I, conv_kernel, true);
  // proj {T, R + 2N} = x_proj(x) = [dt_r | B | C]
  float* proj = proj_buf.get(static_cast<size_t>(T * P));
  linear(proj, x, *x_proj, nullptr, T, P, I);
  float* dt_r = dt_r_buf.get(static_cast<size_t>(T * R));
  for (int64_t t = 0; t < T; ++t) std::copy_n(proj + t * P, R, dt_r + t * R);
  if (dt_norm) ops::rmsnorm(dt_r, dt_r, dt_norm->data(), T, R, norm_eps);
  if (b_norm || c_norm) {
    for (int64_t t = 0; t < T; ++t) {
      float* row = proj + t * P;
      if (b_norm) ops::rmsnorm(row + R, row + R, b_norm->data(), 1, N, norm_eps);
      if (c_norm) ops::rmsnorm(row + R + N, row + R + N, c_norm->data(), 1, N, norm_eps);
    }
  }
  // dt {T, I} = softplus(dt_proj(dt_r) + bias)
  float* dt = dt_buf.get(static_cast<size_t>(T * I));
  linear(dt, dt_r, *dt_proj, dt_bias ? dt_bias->data() : nullptr, T, I, R);
  const int64_t n = T * I;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t k = 0; k < n; ++k) dt[k] = ops::softplus_fast(dt[k]);
  ops::selective_scan(y, ssm_state, x, dt, A.data(), proj + R, proj + R + N, P, D->data(), T, I, N);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) y[t * I + i] *= ops::silu_fast(z[t * ldz + i]);
}

}  // namespace kllens
