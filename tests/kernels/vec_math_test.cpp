// The vectorisable elementwise functions against libm in double precision, over their whole
// useful range. Bounds: exp and log are claimed to ~2 ulp (2.4e-7 relative); softplus composes
// them plus one division, so 5e-7 relative.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/vec_math.h"

namespace kllens {
namespace {

TEST(VecMath, ExpMatchesLibm) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(ops::exp_fast(x) - want) / want);
  }
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_EQ(ops::exp_fast(0.0f), 1.0f);
}

TEST(VecMath, LogMatchesLibm) {
  double worst = 0;
  for (float x = 1e-30f; x < 1e30f; x *= 1.0173f) {
    const double want = std::log(static_cast<double>(x));
    const double err = std::fabs(ops::log_fast(x) - want);
    worst = std::max(worst, err / std::max(1.0, std::fabs(want)));
  }
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_NEAR(ops::log_fast(1.0f), 0.0f, 1e-7);
}

TEST(VecMath, SoftplusKeepsRelativePrecisionForSmallOutputs) {
  double worst = 0;
  for (float x = -60.0f; x <= 40.0f; x += 0.0071f) {
    const double want = x > 20.0f ? x : std::log1p(std::exp(static_cast<double>(x)));
    worst = std::max(worst, std::fabs(ops::softplus_fast(x) - want) / want);
  }
  EXPECT_LT(worst, 5e-7);
}

TEST(VecMath, SiluMatchesDefinition) {
  double worst = 0;
  for (float x = -80.0f; x <= 80.0f; x += 0.0093f) {
    const double want = x / (1.0 + std::exp(-static_cast<double>(x)));
    worst = std::max(worst, std::fabs(ops::silu_fast(x) - want) / std::max(1e-30, std::fabs(want)));
  }
  EXPECT_LT(worst, 5e-7);
}

}  // namespace
}  // namespace kllens
