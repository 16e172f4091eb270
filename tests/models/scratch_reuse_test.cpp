// Forward passes reuse their activation buffers (core/scratch.h): a buffer holds whatever the
// previous layer, token or sequence left in it. These tests run a sequence, dirty every buffer
// with a longer, different one, and run the first sequence again: any read of a buffer before it
// is written (a lost zero-fill) makes the repeat differ. Equality is bitwise, not a tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "core/scratch.h"
#include "models/model.h"
#include "test_util.h"

namespace kllens {
namespace {

std::vector<int32_t> random_ids(int64_t vocab, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

// Bitwise equality, reporting the first differing element (NaN never equals anything here).
void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  if (std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0) return;
  size_t i = 0;
  while (i < a.size() && std::memcmp(&a[i], &b[i], sizeof(float)) == 0) ++i;
  ADD_FAILURE() << what << ": first difference at element " << i << ": " << a[i] << " vs "
                << b[i];
}

struct Logits {
  std::vector<float> prefill, decode, last;
};

Logits run_all(const Model& m, const std::vector<int32_t>& ids) {
  return {m.forward(ids), m.forward_decode(ids), m.forward_last(ids)};
}

class ScratchReuseTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ScratchReuseTest, RepeatAfterLongerSequenceIsBitIdentical) {
  auto model = load_model(test::repo_path(GetParam()));
  const int64_t V = model->info().vocab;
  const auto a = random_ids(V, 37, 1234);
  const auto b = random_ids(V, 61, 5678);
  const Logits first = run_all(*model, a);
  const Logits other = run_all(*model, b);
  const Logits again = run_all(*model, a);
  expect_same_bits(first.prefill, again.prefill, GetParam() + " prefill");
  expect_same_bits(first.decode, again.decode, GetParam() + " decode");
  expect_same_bits(first.last, again.last, GetParam() + " forward_last");
  // The dirtying run must itself be sane, or it dirtied nothing.
  ASSERT_EQ(other.prefill.size(), b.size() * static_cast<size_t>(V));
  EXPECT_TRUE(std::all_of(other.prefill.begin(), other.prefill.end(),
                          [](float x) { return std::isfinite(x); }))
      << GetParam();
}

// Each thread has its own buffers: two passes at once give what each gives alone.
TEST_P(ScratchReuseTest, ConcurrentPassesMatchSequentialOnes) {
  auto model = load_model(test::repo_path(GetParam()));
  const int64_t V = model->info().vocab;
  const auto a = random_ids(V, 37, 99);
  const auto b = random_ids(V, 61, 100);
  const Logits ra = run_all(*model, a), rb = run_all(*model, b);
  Logits ta, tb;
  std::thread other([&] { tb = run_all(*model, b); });
  ta = run_all(*model, a);
  other.join();
  expect_same_bits(ra.prefill, ta.prefill, GetParam() + " prefill (a)");
  expect_same_bits(ra.decode, ta.decode, GetParam() + " decode (a)");
  expect_same_bits(rb.prefill, tb.prefill, GetParam() + " prefill (b)");
  expect_same_bits(rb.decode, tb.decode, GetParam() + " decode (b)");
}

INSTANTIATE_TEST_SUITE_P(
    Models, ScratchReuseTest,
    ::testing::Values("data/models/demo-mamba", "data/models/demo-mamba2",
                      "data/models/demo-hymba", "data/models/demo-falcon_h1",
                      "data/fixtures/oracles/mamba", "data/fixtures/oracles/mamba-tied-bias",
                      "data/fixtures/oracles/mamba2", "data/fixtures/oracles/mamba2-g1",
                      "data/fixtures/oracles/falcon_h1", "data/fixtures/oracles/llama",
                      "data/fixtures/oracles/hymba", "data/fixtures/oracles/jamba"),
    [](const auto& info) {
      std::string n = info.param.substr(info.param.rfind('/') + 1);
      std::replace(n.begin(), n.end(), '-', '_');
      return n + (info.param.find("oracles") != std::string::npos ? "_oracle" : "");
    });

TEST(Scratch, GrowsNeverShrinksAndZeroedIsZero) {
  ScratchVec buf;
  float* p = buf.get(100);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(buf.capacity(), 100u);
  for (int i = 0; i < 100; ++i) p[i] = 1.0f;
  EXPECT_EQ(buf.get(10), p);  // a smaller request keeps the same storage
  EXPECT_EQ(buf.capacity(), 100u);
  const float* z = buf.zeroed(100);
  EXPECT_TRUE(std::all_of(z, z + 100, [](float x) { return x == 0.0f; }));
  buf.get(1000);
  EXPECT_EQ(buf.capacity(), 1000u);
}

}  // namespace
}  // namespace kllens
