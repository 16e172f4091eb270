// ops::attention against its double-precision reference (ref::attention) on both sides of the
// size threshold below which it runs single-threaded, with GQA, padded row strides, a sliding
// window with an always-visible prefix, and non-contiguous key positions (a ring-ordered cache).
// The result must not depend on the thread count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/ops.h"

namespace kllens {
namespace {

struct Case {
  int64_t T, S, Hq, Hkv, Dk, Dv;
  int64_t window = 0, n_sink = 0;
  bool ring = false;  // keys stored in rotated (ring buffer) order
};

struct Problem {
  ops::AttentionShape shape;
  std::vector<float> q, k, v;
  std::vector<int64_t> q_pos, k_pos;
  float scale = 0;
};

// Queries are the last T of the S key positions (prefill: T == S; decode: T == 1).
Problem make(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Problem p;
  auto& s = p.shape;
  s.T = c.T;
  s.S = c.S;
  s.Hq = c.Hq;
  s.Hkv = c.Hkv;
  s.Dk = c.Dk;
  s.Dv = c.Dv;
  s.ldq = c.Hq * c.Dk + 3;  // padded strides
  s.ldk = c.Hkv * c.Dk + 1;
  s.ldv = c.Hkv * c.Dv + 2;
  s.ldo = c.Hq * c.Dv + 5;
  p.q.resize(static_cast<size_t>(c.T * s.ldq));
  p.k.resize(static_cast<size_t>(c.S * s.ldk));
  p.v.resize(static_cast<size_t>(c.S * s.ldv));
  for (auto& x : p.q) x = normal(rng);
  for (auto& x : p.k) x = normal(rng);
  for (auto& x : p.v) x = normal(rng);
  p.k_pos.resize(static_cast<size_t>(c.S));
  std::iota(p.k_pos.begin(), p.k_pos.end(), int64_t{0});
  if (c.ring) std::rotate(p.k_pos.begin(), p.k_pos.begin() + c.S / 3, p.k_pos.end());
  for (int64_t t = 0; t < c.T; ++t) p.q_pos.push_back(c.S - c.T + t);
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.Dk));
  return p;
}

std::vector<float> run_ops(const Problem& p, const Case& c) {
  std::vector<float> out(static_cast<size_t>(c.T * p.shape.ldo), -7.0f);
  ops::attention(out.data(), p.q.data(), p.k.data(), p.v.data(), p.q_pos.data(), p.k_pos.data(),
                 p.shape, c.window, c.n_sink, p.scale);
  return out;
}

void expect_matches_reference(const Case& c, uint32_t seed) {
  const Problem p = make(c, seed);
  const auto got = run_ops(p, c);
  std::vector<float> want(got.size(), -7.0f);
  ref::attention(want.data(), p.q.data(), p.k.data(), p.v.data(), p.q_pos.data(), p.k_pos.data(),
                 p.shape, c.window, c.n_sink, p.scale);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t j = 0; j < p.shape.ldo; ++j) {
      const size_t i = static_cast<size_t>(t * p.shape.ldo + j);
      if (j >= c.Hq * c.Dv) {
        EXPECT_EQ(got[i], -7.0f) << "padding written at row " << t;  // strides honoured
      } else {
        EXPECT_NEAR(got[i], want[i], 2e-5f) << "T=" << c.T << " S=" << c.S << " row " << t
                                            << " col " << j;
      }
    }
}

// T * S * Hq * Dk of each case, relative to the 32768 threshold, is in the comment.
TEST(Attention, SmallPrefillRunsInlineAndMatchesReference) {
  expect_matches_reference({5, 5, 4, 2, 7, 5}, 1);                  // 700
  expect_matches_reference({9, 9, 3, 3, 6, 4, 3, 2}, 2);            // 1458, window + sinks
}

TEST(Attention, SmallDecodeStepMatchesReference) {
  expect_matches_reference({1, 37, 6, 2, 10, 6}, 3);                // 2220
  expect_matches_reference({1, 29, 4, 1, 8, 8, 5, 3, true}, 4);     // 928, ring order
}

TEST(Attention, LargePrefillRunsParallelAndMatchesReference) {
  expect_matches_reference({41, 41, 6, 3, 24, 18}, 5);              // 242064
  expect_matches_reference({53, 53, 5, 1, 22, 13, 11, 4}, 6);       // 309010, window + sinks
}

TEST(Attention, LargeDecodeStepMatchesReference) {
  expect_matches_reference({1, 333, 8, 2, 16, 16}, 7);              // 42624
  expect_matches_reference({1, 301, 9, 3, 18, 10, 17, 5, true}, 8);  // 48762, ring order
}

TEST(Attention, ResultDoesNotDependOnThreadCount) {
  const int before = num_threads();
  for (const Case& c : {Case{47, 47, 6, 2, 20, 12, 13, 3}, Case{3, 7, 2, 1, 5, 3}}) {
    const Problem p = make(c, 9);
    set_num_threads(1);
    const auto one = run_ops(p, c);
    set_num_threads(3);
    const auto three = run_ops(p, c);
    EXPECT_EQ(one, three) << "T=" << c.T;
  }
  set_num_threads(before);
}

}  // namespace
}  // namespace kllens
