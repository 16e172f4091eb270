// The weights' fingerprint: the same weights give the same digest wherever they are loaded from;
// one changed value, a renamed or reshaped tensor gives another.
#include "models/fingerprint.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace kllens {
namespace {

TEST(WeightsFingerprint, FollowsTheWeightsNotTheFolder) {
  auto a = load_model(test::repo_path("data/models/demo-mamba"));
  auto b = load_model(test::repo_path("data/models/demo-mamba"));
  const std::string digest = weights_sha256(*a);
  EXPECT_EQ(digest.size(), 64u);
  EXPECT_EQ(weights_sha256(*b), digest);

  Param* matrix = nullptr;
  for (const auto& q : b->weights().all())
    if (q->shape.size() == 2 && q->shape[0] != q->shape[1]) matrix = q.get();
  ASSERT_NE(matrix, nullptr);
  Param& p = *matrix;
  const float original = p.value[p.value.size() / 3];
  p.value[p.value.size() / 3] = std::nextafter(original, 1e9f);  // one ulp
  EXPECT_NE(weights_sha256(*b), digest);
  p.value[p.value.size() / 3] = original;
  EXPECT_EQ(weights_sha256(*b), digest);

  p.name += "x";
  EXPECT_NE(weights_sha256(*b), digest);
  p.name.pop_back();
  std::swap(p.shape.front(), p.shape.back());  // the same values read as the transpose's shape
  EXPECT_NE(weights_sha256(*b), digest);

  auto other = load_model(test::repo_path("data/models/demo-mamba2"));
  EXPECT_NE(weights_sha256(*other), digest);
}

}  // namespace
}  // namespace kllens
