// The Mamba-2 SSD scan against its double-precision reference, against an independent chunked
// formulation (the one HF's Mamba2Mixer.torch_forward uses: intra-chunk segment sums + decayed
// states between chunks), and split-sequence state carrying (decode = prefill).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/ssd.h"

namespace kllens {
namespace {

struct Case {
  int64_t T, H, P, G, N;
};

struct Inputs {
  std::vector<float> x, dt, A, B, C, D, state;
  int64_t ldx = 0, lddt = 0, ldbc = 0;
};

// x, B, C ~ N(0, 1); dt in (0.001, 1) like softplus outputs; A in [-8, -0.1]; D ~ N(0, 1).
// Row strides are padded by a few elements to check that strides are honoured.
Inputs make_inputs(const Case& c, uint32_t seed, bool random_state) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> udt(0.001f, 1.0f), ua(-8.0f, -0.1f);
  Inputs in;
  in.ldx = c.H * c.P + 3;
  in.lddt = c.H + 1;
  in.ldbc = c.G * c.N + 2;
  in.x.resize(static_cast<size_t>(c.T * in.ldx));
  in.dt.resize(static_cast<size_t>(c.T * in.lddt));
  in.B.resize(static_cast<size_t>(c.T * in.ldbc));
  in.C.resize(static_cast<size_t>(c.T * in.ldbc));
  for (auto& v : in.x) v = normal(rng);
  for (auto& v : in.dt) v = udt(rng);
  for (auto& v : in.B) v = normal(rng);
  for (auto& v : in.C) v = normal(rng);
  in.A.resize(static_cast<size_t>(c.H));
  in.D.resize(static_cast<size_t>(c.H));
  for (auto& v : in.A) v = ua(rng);
  for (auto& v : in.D) v = normal(rng);
  in.state.assign(static_cast<size_t>(c.H * c.P * c.N), 0.0f);
  if (random_state)
    for (auto& v : in.state) v = normal(rng);
  return in;
}

// Tolerance for a float32 recurrence over T steps with N-term dot products, relative to the
// largest output magnitude: c · (T + N) · eps_f32 · scale, c = 4.
double tolerance(const Case& c, const std::vector<float>& ref) {
  double scale = 1.0;
  for (float v : ref) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  return 4.0 * static_cast<double>(c.T + c.N) * 1.1920929e-7 * scale;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const char* what, uint32_t seed) {
  ASSERT_EQ(got.size(), want.size());
  size_t bad = 0, worst = 0;
  double worst_d = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= tol)) ++bad;
    if (!(d <= worst_d)) {
      worst_d = d;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << " (seed " << seed << "): worst index " << worst << " expected "
                     << want[worst] << " actual " << got[worst] << " tolerance " << tol;
}

const Case kCases[] = {
    {1, 1, 1, 1, 1},   {2, 3, 5, 1, 7},    {17, 6, 7, 3, 5},  {37, 8, 16, 2, 16},
    {33, 5, 3, 5, 33}, {16, 4, 32, 1, 16}, {15, 2, 17, 2, 8}, {63, 7, 9, 1, 31},
};

TEST(SsdScan, MatchesDoubleReference) {
  uint32_t seed = 1234;
  for (const Case& c : kCases) {
    for (bool random_state : {false, true}) {
      ++seed;
      Inputs in = make_inputs(c, seed, random_state);
      std::vector<float> y(static_cast<size_t>(c.T * c.H * c.P)), y_ref(y.size());
      std::vector<float> s = in.state, s_ref = in.state;
      ops::ssd_scan(y.data(), s.data(), in.x.data(), in.ldx, in.dt.data(), in.lddt, in.A.data(),
                    in.B.data(), in.C.data(), in.ldbc, in.D.data(), c.T, c.H, c.P, c.G, c.N);
      ref::ssd_scan(y_ref.data(), s_ref.data(), in.x.data(), in.ldx, in.dt.data(), in.lddt,
                    in.A.data(), in.B.data(), in.C.data(), in.ldbc, in.D.data(), c.T, c.H, c.P,
                    c.G, c.N);
      expect_close(y, y_ref, tolerance(c, y_ref), "y", seed);
      expect_close(s, s_ref, tolerance(c, s_ref), "state", seed);
    }
  }
}

TEST(SsdScan, SplitSequenceEqualsWhole) {
  // Feeding [0, k) then [k, T) with the carried state gives the same outputs as one call: this is
  // what makes decode (T = 1 steps) equal prefill.
  const Case c{29, 6, 5, 2, 9};
  const uint32_t seed = 77;
  Inputs in = make_inputs(c, seed, false);
  std::vector<float> y_all(static_cast<size_t>(c.T * c.H * c.P)), s_all = in.state;
  ops::ssd_scan(y_all.data(), s_all.data(), in.x.data(), in.ldx, in.dt.data(), in.lddt,
                in.A.data(), in.B.data(), in.C.data(), in.ldbc, in.D.data(), c.T, c.H, c.P, c.G,
                c.N);
  std::vector<float> y_steps(y_all.size()), s = in.state;
  for (int64_t t = 0; t < c.T; ++t)
    ops::ssd_scan(y_steps.data() + t * c.H * c.P, s.data(), in.x.data() + t * in.ldx, in.ldx,
                  in.dt.data() + t * in.lddt, in.lddt, in.A.data(), in.B.data() + t * in.ldbc,
                  in.C.data() + t * in.ldbc, in.ldbc, in.D.data(), 1, c.H, c.P, c.G, c.N);
  EXPECT_EQ(y_steps, y_all);  // same arithmetic, bit for bit
  EXPECT_EQ(s, s_all);
}

// HF's chunked SSD (Mamba2Mixer.torch_forward, no cache), written independently in double:
// per chunk of length Q, with a = dt * A and cumulative sums cs within the chunk,
//   Y_diag[l] = sum_{s<=l} (C_l·B_s) exp(cs_l - cs_s) dt_s x_s
//   chunk_state = sum_s exp(cs_end - cs_s) dt_s x_s ⊗ B_s,  carried: S' = exp(cs_end) S + chunk_state
//   Y_off[l] = exp(cs_l) (S_prev · C_l);  y = Y_diag + Y_off + D x.
std::vector<double> chunked_ssd(const Case& c, const Inputs& in, int64_t Q) {
  std::vector<double> y(static_cast<size_t>(c.T * c.H * c.P), 0.0);
  const int64_t hpg = c.H / c.G;
  for (int64_t h = 0; h < c.H; ++h) {
    const int64_t g = h / hpg;
    std::vector<double> S(static_cast<size_t>(c.P * c.N), 0.0);
    for (int64_t t0 = 0; t0 < c.T; t0 += Q) {
      const int64_t L = std::min(Q, c.T - t0);
      std::vector<double> cs(static_cast<size_t>(L));
      double acc = 0;
      for (int64_t l = 0; l < L; ++l) {
        acc += static_cast<double>(in.dt[(t0 + l) * in.lddt + h]) * in.A[h];
        cs[l] = acc;
      }
      auto X = [&](int64_t t, int64_t p) { return static_cast<double>(in.x[t * in.ldx + h * c.P + p]); };
      auto Bv = [&](int64_t t, int64_t n) { return static_cast<double>(in.B[t * in.ldbc + g * c.N + n]); };
      auto Cv = [&](int64_t t, int64_t n) { return static_cast<double>(in.C[t * in.ldbc + g * c.N + n]); };
      for (int64_t l = 0; l < L; ++l) {
        const int64_t t = t0 + l;
        for (int64_t p = 0; p < c.P; ++p) {
          double diag = 0;
          for (int64_t s = 0; s <= l; ++s) {
            double cb = 0;
            for (int64_t n = 0; n < c.N; ++n) cb += Cv(t, n) * Bv(t0 + s, n);
            diag += cb * std::exp(cs[l] - cs[s]) * in.dt[(t0 + s) * in.lddt + h] * X(t0 + s, p);
          }
          double off = 0;
          for (int64_t n = 0; n < c.N; ++n) off += S[p * c.N + n] * Cv(t, n);
          y[t * c.H * c.P + h * c.P + p] = diag + std::exp(cs[l]) * off + in.D[h] * X(t, p);
        }
      }
      for (int64_t p = 0; p < c.P; ++p)
        for (int64_t n = 0; n < c.N; ++n) {
          double st = std::exp(cs[L - 1]) * S[p * c.N + n];
          for (int64_t s = 0; s < L; ++s)
            st += std::exp(cs[L - 1] - cs[s]) * in.dt[(t0 + s) * in.lddt + h] * X(t0 + s, p) *
                  Bv(t0 + s, n);
          S[p * c.N + n] = st;
        }
    }
  }
  return y;
}

TEST(SsdScan, EqualsChunkedFormulation) {
  uint32_t seed = 4242;
  for (const Case& c : {Case{37, 8, 16, 2, 16}, Case{37, 4, 32, 1, 16}, Case{20, 6, 3, 3, 7}}) {
    for (int64_t Q : {1, 8, 16, 64}) {
      ++seed;
      Inputs in = make_inputs(c, seed, false);
      std::vector<float> y(static_cast<size_t>(c.T * c.H * c.P)), s = in.state;
      ops::ssd_scan(y.data(), s.data(), in.x.data(), in.ldx, in.dt.data(), in.lddt, in.A.data(),
                    in.B.data(), in.C.data(), in.ldbc, in.D.data(), c.T, c.H, c.P, c.G, c.N);
      const auto yc = chunked_ssd(c, in, Q);
      const std::vector<float> ycf(yc.begin(), yc.end());
      expect_close(y, ycf, tolerance(c, ycf), "chunked", seed);
    }
  }
}

}  // namespace
}  // namespace kllens
