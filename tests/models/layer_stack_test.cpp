// The layer stack's mixers against plain formulations: the top-k experts in both routings (all
// experts' softmax, Jamba; softmax of the top-k logits, Granite) and parallel branches with
// their multipliers. Odd sizes, fixed seed; 1e-5 absolute on outputs of magnitude ~1, the same
// float32 operations in another order.
#include "models/layer_stack.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include "test_util.h"

namespace kllens {
namespace {

std::unique_ptr<Param> random_param(std::string name, Role role, std::vector<int64_t> shape,
                                    std::mt19937& rng, float std) {
  auto p = std::make_unique<Param>();
  p->name = std::move(name);
  p->role = role;
  p->shape = std::move(shape);
  std::normal_distribution<float> normal(0.0f, std);
  p->value.resize(static_cast<size_t>(p->numel()));
  for (float& v : p->value) v = normal(rng);
  return p;
}

// y {N} = W {N, K} x {K}
std::vector<double> matvec(const Param& w, const float* x) {
  const int64_t N = w.rows(), K = w.cols();
  std::vector<double> y(static_cast<size_t>(N), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) y[n] += static_cast<double>(w.value[n * K + k]) * x[k];
  return y;
}

struct Experts {
  int64_t H = 13, F = 11, E = 5, K = 2;
  std::vector<std::unique_ptr<Param>> params;
  MoeMixer moe;
  explicit Experts(bool renormalize) {
    std::mt19937 rng(7);
    params.push_back(random_param("router", Role::kRouter, {E, H}, rng, 1.0f));
    moe.hidden = H;
    moe.top_k = K;
    moe.renormalize = renormalize;
    moe.router = params.back().get();
    for (int64_t e = 0; e < E; ++e) {
      SwiGluMlp m;
      m.hidden = H;
      m.ffn = F;
      params.push_back(random_param("gate", Role::kGate, {F, H}, rng, 0.3f));
      m.gate = params.back().get();
      params.push_back(random_param("up", Role::kUp, {F, H}, rng, 0.3f));
      m.up = params.back().get();
      params.push_back(random_param("down", Role::kDown, {H, F}, rng, 0.3f));
      m.down = params.back().get();
      moe.experts.push_back(m);
    }
  }
  // The plain formulation, in double.
  std::vector<double> reference(const float* x) const {
    std::vector<double> logits = matvec(*moe.router, x), w(static_cast<size_t>(E), 0.0);
    std::vector<int64_t> order(static_cast<size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
    const double mx = logits[order[0]];
    double all = 0, top = 0;
    for (int64_t e = 0; e < E; ++e) all += std::exp(logits[e] - mx);
    for (int64_t j = 0; j < K; ++j) top += std::exp(logits[order[j]] - mx);
    for (int64_t j = 0; j < K; ++j)
      w[order[j]] = std::exp(logits[order[j]] - mx) / (moe.renormalize ? top : all);
    std::vector<double> out(static_cast<size_t>(H), 0.0);
    for (int64_t e = 0; e < E; ++e) {
      if (w[e] == 0) continue;
      const SwiGluMlp& m = moe.experts[static_cast<size_t>(e)];
      const auto g = matvec(*m.gate, x), u = matvec(*m.up, x);
      std::vector<float> a(static_cast<size_t>(F));
      for (int64_t f = 0; f < F; ++f) a[f] = static_cast<float>(g[f] / (1 + std::exp(-g[f])) * u[f]);
      const auto d = matvec(*m.down, a.data());
      for (int64_t h = 0; h < H; ++h) out[h] += w[e] * d[h];
    }
    return out;
  }
};

std::vector<float> random_rows(int64_t T, int64_t H) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * H));
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(MoeMixer, BothRoutingsMatchThePlainFormulation) {
  for (bool renormalize : {false, true}) {
    const Experts ex(renormalize);
    const int64_t T = 9;
    const auto x = random_rows(T, ex.H);
    std::vector<float> out(static_cast<size_t>(T * ex.H));
    ex.moe.forward(out.data(), x.data(), T, nullptr, nullptr);
    double worst = 0;
    for (int64_t t = 0; t < T; ++t) {
      const auto ref = ex.reference(x.data() + t * ex.H);
      for (int64_t h = 0; h < ex.H; ++h)
        worst = std::max(worst, std::fabs(ref[h] - out[t * ex.H + h]));
    }
    EXPECT_LE(worst, 1e-5) << (renormalize ? "softmax of the top-k" : "softmax of all");
  }
}

// The routings are different functions on these weights (else the test above could not tell them apart).
TEST(MoeMixer, TheTwoRoutingsDiffer) {
  const Experts a(false), b(true);
  const int64_t T = 9;
  const auto x = random_rows(T, a.H);
  std::vector<float> ya(static_cast<size_t>(T * a.H)), yb(ya.size());
  a.moe.forward(ya.data(), x.data(), T, nullptr, nullptr);
  b.moe.forward(yb.data(), x.data(), T, nullptr, nullptr);
  EXPECT_GT(test::max_abs_diff(ya, yb.data()), 1e-2);
}

// out = Σ out_scale · mixer(in_scale · x), in prefill and through a decode state.
TEST(ParallelMixer, SumsScaledBranches) {
  const Experts ex(true);
  std::mt19937 rng(3);
  auto up = random_param("up", Role::kUp, {7, ex.H}, rng, 0.3f);
  auto down = random_param("down", Role::kDown, {ex.H, 7}, rng, 0.3f);
  auto mlp = std::make_unique<Relu2MlpMixer>();
  mlp->hidden = ex.H;
  mlp->ffn = 7;
  mlp->up = up.get();
  mlp->down = down.get();
  const Relu2MlpMixer* relu2 = mlp.get();
  auto moe = std::make_unique<MoeMixer>(ex.moe);
  ParallelMixer both;
  both.hidden = ex.H;
  both.branches.push_back({std::move(moe), 1.0f, 0.5f});
  both.branches.push_back({std::move(mlp), 2.0f, -1.5f});
  const int64_t T = 5;
  const auto x = random_rows(T, ex.H);
  std::vector<float> x2(x.size()), a(x.size()), b(x.size()), out(x.size());
  for (size_t i = 0; i < x.size(); ++i) x2[i] = 2.0f * x[i];
  ex.moe.forward(a.data(), x.data(), T, nullptr, nullptr);
  relu2->forward(b.data(), x2.data(), T, nullptr, nullptr);
  both.forward(out.data(), x.data(), T, nullptr, nullptr);
  // Within a rounding or two (float32 ulp 1.2e-7 relative): the compiler may fuse the
  // multiply-add differently on each side.
  for (size_t i = 0; i < out.size(); ++i) {
    const float want = a[i] * 0.5f + b[i] * -1.5f;
    ASSERT_NEAR(out[i], want, 3e-7 * std::max(1.0f, std::fabs(want))) << i;
  }
  // Stateless branches: the decode path is the same function row by row (1e-5: a single row
  // goes through the matrix-vector kernels, whose sums run in another order).
  const auto state = both.new_state();
  ASSERT_NE(state, nullptr);
  std::vector<float> row(static_cast<size_t>(ex.H));
  const int64_t pos = 0;
  both.forward(row.data(), x.data() + 2 * ex.H, 1, &pos, state.get());
  for (int64_t h = 0; h < ex.H; ++h) EXPECT_NEAR(row[h], out[2 * ex.H + h], 1e-5);
}

}  // namespace
}  // namespace kllens
