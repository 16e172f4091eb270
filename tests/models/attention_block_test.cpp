// The shared attention pieces: KvCache (unbounded and sliding ring with a kept prefix), RoPE
// settings from both config spellings, inv_freq, and the SwiGLU MLP against a scalar reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "io/hf_config.h"
#include "kernels/attention.h"
#include "models/attention_block.h"

namespace kllens {
namespace {

std::vector<float> row(int64_t width, float value) { return std::vector<float>(static_cast<size_t>(width), value); }

TEST(KvCache, UnboundedKeepsEveryRow) {
  KvCache c;
  c.init(3, 5, 0, 0);
  for (int64_t p = 0; p < 7; ++p) {
    const auto k = row(3, static_cast<float>(p)), v = row(5, static_cast<float>(-p));
    c.append(k.data(), 3, v.data(), 5, &p, 1);
  }
  EXPECT_EQ(c.rows(), 7);
  EXPECT_EQ(c.evicted(), 0);
  for (int64_t r = 0; r < 7; ++r) {
    EXPECT_EQ(c.pos[static_cast<size_t>(r)], r);
    EXPECT_EQ(c.k[static_cast<size_t>(r * 3 + 2)], static_cast<float>(r));
    EXPECT_EQ(c.v[static_cast<size_t>(r * 5 + 4)], static_cast<float>(-r));
  }
}

TEST(KvCache, RingKeepsPrefixAndLastWindowRows) {
  KvCache c;
  c.init(2, 1, /*keep=*/3, /*window=*/4);
  const size_t bytes = c.bytes();
  // Bulk-append the prefix, then one row at a time.
  std::vector<float> k0 = {0, 0, 1, 1, 2, 2}, v0 = {0, 1, 2};
  std::vector<int64_t> p0 = {0, 1, 2};
  c.append(k0.data(), 2, v0.data(), 1, p0.data(), 3);
  EXPECT_EQ(c.rows(), 3);
  for (int64_t p = 3; p < 20; ++p) {
    const auto k = row(2, static_cast<float>(p)), v = row(1, static_cast<float>(p));
    c.append(k.data(), 2, v.data(), 1, &p, 1);
    EXPECT_EQ(c.rows(), 3 + std::min<int64_t>(p - 2, 4));
    EXPECT_EQ(c.bytes(), bytes);  // flat in the sequence length
    // Exactly the prefix and the last min(p-2, 4) positions are present, each with its data.
    std::vector<int64_t> present(c.pos.begin(), c.pos.begin() + c.rows());
    std::sort(present.begin(), present.end());
    std::vector<int64_t> expected = {0, 1, 2};
    for (int64_t q = std::max<int64_t>(3, p - 3); q <= p; ++q) expected.push_back(q);
    EXPECT_EQ(present, expected);
    for (int64_t r = 0; r < c.rows(); ++r)
      EXPECT_EQ(c.v[static_cast<size_t>(r)], static_cast<float>(c.pos[static_cast<size_t>(r)]));
  }
  EXPECT_EQ(c.evicted(), 20 - 7);
}

TEST(KvCache, RingAttentionEqualsFullAttention) {
  // A query attending over the ring (window W+1 plus kept prefix) equals attending over every
  // key with the same mask.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int64_t Hq = 3, Hkv = 1, Dk = 5, Dv = 3, M = 2, W = 4, steps = 23;
  std::vector<float> K(static_cast<size_t>(steps * Hkv * Dk)), Vv(static_cast<size_t>(steps * Hkv * Dv));
  for (auto& x : K) x = nd(rng);
  for (auto& x : Vv) x = nd(rng);
  std::vector<int64_t> all_pos(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) all_pos[static_cast<size_t>(i)] = i;
  KvCache c;
  c.init(Hkv * Dk, Hkv * Dv, M, W + 1);
  for (int64_t p = 0; p < steps; ++p) {
    c.append(K.data() + p * Dk, Dk, Vv.data() + p * Dv, Dv, &p, 1);
    std::vector<float> q(static_cast<size_t>(Hq * Dk));
    for (auto& x : q) x = nd(rng);
    ops::AttentionShape s;
    s.T = 1;
    s.Hq = Hq;
    s.Hkv = Hkv;
    s.Dk = Dk;
    s.Dv = Dv;
    std::vector<float> a(static_cast<size_t>(Hq * Dv)), b(a.size());
    s.S = c.rows();
    ops::attention(a.data(), q.data(), c.k.data(), c.v.data(), &p, c.pos.data(), s, W + 1, M, 0.5f);
    s.S = p + 1;
    ref::attention(b.data(), q.data(), K.data(), Vv.data(), &p, all_pos.data(), s, W + 1, M, 0.5f);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << "step " << p;
  }
}

HfConfig cfg(nlohmann::json j) { return HfConfig::from_json(std::move(j), "test/config.json"); }

TEST(Rope, ReadsBothSpellingsAndRejectsScaling) {
  EXPECT_EQ(read_default_rope(cfg({{"rope_theta", 500000.0}}), 1e4).theta, 500000.0);
  EXPECT_EQ(read_default_rope(cfg(nlohmann::json::object()), 1e4).theta, 1e4);
  EXPECT_EQ(read_default_rope(cfg({{"rope_parameters", {{"rope_theta", 123.0}, {"rope_type", "default"}}}}), 1e4)
                .theta,
            123.0);
  EXPECT_EQ(read_default_rope(cfg({{"rope_theta", 7.0}, {"rope_scaling", nullptr}}), 1e4).theta, 7.0);
  EXPECT_THROW(read_default_rope(cfg({{"rope_parameters", {{"rope_theta", 1e4}, {"rope_type", "llama3"}}}}), 1e4),
               Error);
  EXPECT_THROW(read_default_rope(cfg({{"rope_scaling", {{"type", "dynamic"}, {"factor", 2.0}}}}), 1e4), Error);
  EXPECT_THROW(read_default_rope(cfg({{"rope_parameters", {{"full_attention", {{"rope_theta", 1e4}}}}}}), 1e4),
               Error);
  EXPECT_THROW(read_default_rope(cfg({{"rope_theta", -1.0}}), 1e4), Error);
  EXPECT_THROW(read_default_rope(cfg({{"rope_parameters", 3}}), 1e4), Error);
}

TEST(Rope, InvFreqMatchesClosedForm) {
  const auto inv = rope_inv_freq(10000.0, 16);
  ASSERT_EQ(inv.size(), 8u);
  for (size_t i = 0; i < inv.size(); ++i)
    EXPECT_NEAR(inv[i], 1.0 / std::pow(10000.0, 2.0 * static_cast<double>(i) / 16.0), 1e-7 * inv[i] + 1e-12);
}

Param make_param(std::vector<int64_t> shape, std::mt19937& rng) {
  Param p;
  p.shape = std::move(shape);
  p.value.resize(static_cast<size_t>(p.numel()));
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (auto& x : p.value) x = nd(rng);
  return p;
}

TEST(SwiGluMlp, MatchesScalarReference) {
  std::mt19937 rng(11);
  const int64_t H = 7, F = 13, T = 5;
  Param g = make_param({F, H}, rng), u = make_param({F, H}, rng), d = make_param({H, F}, rng);
  Param gb = make_param({F}, rng), ub = make_param({F}, rng), db = make_param({H}, rng);
  for (bool bias : {false, true}) {
    SwiGluMlp m;
    m.hidden = H;
    m.ffn = F;
    m.gate = &g;
    m.up = &u;
    m.down = &d;
    if (bias) {
      m.gate_bias = &gb;
      m.up_bias = &ub;
      m.down_bias = &db;
    }
    Param x = make_param({T, H}, rng);
    std::vector<float> out(static_cast<size_t>(T * H));
    m.forward(out.data(), x.data(), T);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> act(static_cast<size_t>(F));
      for (int64_t f = 0; f < F; ++f) {
        double a = bias ? gb.value[f] : 0.0, b = bias ? ub.value[f] : 0.0;
        for (int64_t h = 0; h < H; ++h) {
          a += static_cast<double>(g.value[f * H + h]) * x.value[t * H + h];
          b += static_cast<double>(u.value[f * H + h]) * x.value[t * H + h];
        }
        act[static_cast<size_t>(f)] = a / (1.0 + std::exp(-a)) * b;
      }
      for (int64_t h = 0; h < H; ++h) {
        double o = bias ? db.value[h] : 0.0;
        for (int64_t f = 0; f < F; ++f) o += static_cast<double>(d.value[h * F + f]) * act[static_cast<size_t>(f)];
        EXPECT_NEAR(out[static_cast<size_t>(t * H + h)], o, 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace kllens
