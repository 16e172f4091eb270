// ops::selective_scan (the Mamba-1 / Hymba scan) against its double-precision reference
// (ref::selective_scan), on both of its paths: sixteen channels lane-parallel (state size 16, full
// blocks) and one channel at a time (the tail block, other state sizes, or forced), with a state
// carried from a previous call, as decode (T = 1) and prefill (T = 9, 40) use it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/ssm.h"

namespace kllens {
namespace {

struct Problem {
  int64_t T, D, N, ldbc;
  std::vector<float> x, dt, A, B, C, Dskip, state;
};

Problem make(int64_t T, int64_t D, int64_t N, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  Problem p{T, D, N, N + 3, {}, {}, {}, {}, {}, {}, {}};
  auto fill = [&](std::vector<float>& v, size_t n, auto gen) {
    v.resize(n);
    for (auto& e : v) e = gen();
  };
  fill(p.x, T * D, [&] { return normal(rng); });
  // dt = softplus(...) > 0 and A = -exp(A_log) < 0, as the models make them: decays in (0, 1).
  fill(p.dt, T * D, [&] { return 0.001f + 0.2f * unit(rng); });
  fill(p.A, D * N, [&] { return -(0.5f + 8.0f * unit(rng)); });
  fill(p.B, T * p.ldbc, [&] { return normal(rng); });
  fill(p.C, T * p.ldbc, [&] { return normal(rng); });
  fill(p.Dskip, D, [&] { return normal(rng); });
  fill(p.state, D * N, [&] { return normal(rng); });
  return p;
}

// Bound: each step of each recurrence rounds the decay (exp_fast, < 2e-7 relative), two products
// and a sum, so h carries at most about 4u + 2e-7 < 5e-7 relative error per step on top of the
// previous step's, which the decay (< 1) does not amplify: after T steps |Δh_n| <= T · 5e-7 ·
// max|h_n|. y adds N products and the skip term (N + 2 roundings). So
// |Δy| <= (5e-7 · T + (N + 2) · u) · (Σ_n max|h_n| |c_n| + |x D|), with max|h_n| bounded here
// by the reference's running maximum.
void expect_close(const Problem& p, const std::vector<float>& got_y, const std::vector<float>& got_state,
                  const std::vector<float>& want_y, const std::vector<float>& want_state) {
  const double u = 0x1p-24;
  std::vector<double> hmax(p.D * p.N, 0.0);
  for (int64_t i = 0; i < p.D * p.N; ++i) hmax[i] = std::fabs(p.state[i]);
  {
    // The reference's states along the way, for the bound.
    std::vector<double> h(p.state.begin(), p.state.end());
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t d = 0; d < p.D; ++d)
        for (int64_t n = 0; n < p.N; ++n) {
          double& hv = h[d * p.N + n];
          hv = std::exp(double(p.A[d * p.N + n]) * p.dt[t * p.D + d]) * hv +
               double(p.dt[t * p.D + d]) * p.B[t * p.ldbc + n] * p.x[t * p.D + d];
          hmax[d * p.N + n] = std::max(hmax[d * p.N + n], std::fabs(hv));
        }
  }
  const double per_step = 5e-7 * p.T;
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t d = 0; d < p.D; ++d) {
      double mag = std::fabs(double(p.x[t * p.D + d]) * p.Dskip[d]);
      for (int64_t n = 0; n < p.N; ++n) mag += hmax[d * p.N + n] * std::fabs(p.C[t * p.ldbc + n]);
      const double tol = (per_step + (p.N + 2) * u) * mag;
      ASSERT_NEAR(got_y[t * p.D + d], want_y[t * p.D + d], tol) << "t " << t << " d " << d;
    }
  for (int64_t i = 0; i < p.D * p.N; ++i)
    ASSERT_NEAR(got_state[i], want_state[i], per_step * hmax[i] + u * std::fabs(want_state[i]))
        << "state " << i;
}

void check(int64_t T, int64_t D, int64_t N, bool lane_parallel) {
  SCOPED_TRACE(::testing::Message() << "T=" << T << " D=" << D << " N=" << N
                                    << (lane_parallel ? " lanes" : " per channel"));
  const Problem p = make(T, D, N, static_cast<uint32_t>(T * 1000 + D * 10 + N));
  std::vector<float> y(T * D), state = p.state, want_y(T * D), want_state = p.state;
  ops::set_lane_parallel_scan(lane_parallel);
  ops::selective_scan(y.data(), state.data(), p.x.data(), p.dt.data(), p.A.data(), p.B.data(),
                      p.C.data(), p.ldbc, p.Dskip.data(), T, D, N);
  ops::set_lane_parallel_scan(true);
  ref::selective_scan(want_y.data(), want_state.data(), p.x.data(), p.dt.data(), p.A.data(),
                      p.B.data(), p.C.data(), p.ldbc, p.Dskip.data(), T, D, N);
  expect_close(p, y, state, want_y, want_state);
}

TEST(SelectiveScan, BothPathsMatchTheReference) {
  // D = 37: two full blocks of 16 and a tail of 5; D = 2048 with T = 40 crosses the threshold
  // above which blocks are split across threads.
  for (bool lanes : {true, false}) {
    for (int64_t T : {1, 9}) {
      check(T, 37, 16, lanes);
      check(T, 37, 7, lanes);
    }
    check(40, 2048, 16, lanes);
  }
}

}  // namespace
}  // namespace kllens
