// The progress bar's ETA: by items by default, by work when items are weighted.
#include "core/progress.h"

#include <gtest/gtest.h>

namespace kllens {
namespace {

TEST(Progress, EtaFollowsItemsByDefault) {
  Progress p("test", 4);  // stderr is not a terminal here: nothing is drawn
  EXPECT_LT(p.eta_seconds(1.0), 0) << "unknown before the first item";
  p.advance();
  EXPECT_DOUBLE_EQ(p.eta_seconds(2.0), 6.0);  // 2 s per item, 3 left
  p.advance(3);
  EXPECT_LT(p.eta_seconds(8.0), 0) << "nothing left";
}

TEST(Progress, EtaFollowsWorkWhenItemsAreWeighted) {
  // Four items of work 7, 1, 1, 1: after the expensive one, 3 of 10 units remain.
  Progress p("test", 4, 10.0);
  p.advance(1, 7.0);
  EXPECT_DOUBLE_EQ(p.eta_seconds(14.0), 6.0);  // 2 s per unit
  p.advance(1, 1.0);
  EXPECT_DOUBLE_EQ(p.eta_seconds(16.0), 4.0);
  p.advance(2, 2.0);
  EXPECT_LT(p.eta_seconds(20.0), 0);
}

}  // namespace
}  // namespace kllens
