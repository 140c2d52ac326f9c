#include "llmorch/orch/latency_window.h"

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

TEST(LatencyWindow, EmptyHasNoFigures) {
  const LatencySummary s = LatencyWindow(4).summary();
  EXPECT_EQ(s.n, 0u);
  EXPECT_FALSE(s.p50.has_value());
  EXPECT_FALSE(s.p99.has_value());
  EXPECT_FALSE(s.max.has_value());
}

TEST(LatencyWindow, OneSampleIsEveryPercentile) {
  LatencyWindow w(4);
  w.add(12.5);
  const LatencySummary s = w.summary();
  EXPECT_EQ(s.n, 1u);
  EXPECT_EQ(*s.p50, 12.5);
  EXPECT_EQ(*s.p99, 12.5);
  EXPECT_EQ(*s.max, 12.5);
}

TEST(LatencyWindow, NearestRankPercentilesOfUnsortedSamples) {
  LatencyWindow w(256);
  // 1..100 in a scrambled order: p50 is the 50th smallest, p99 the 99th.
  for (int i = 0; i < 100; ++i) w.add(static_cast<double>((i * 37) % 100 + 1));
  const LatencySummary s = w.summary();
  EXPECT_EQ(s.n, 100u);
  EXPECT_EQ(*s.p50, 50.0);
  EXPECT_EQ(*s.p99, 99.0);
  EXPECT_EQ(*s.max, 100.0);

  LatencyWindow four(8);
  for (double v : {4.0, 1.0, 3.0, 2.0}) four.add(v);
  EXPECT_EQ(*four.summary().p50, 2.0);
  EXPECT_EQ(*four.summary().p99, 4.0);
}

TEST(LatencyWindow, KeepsOnlyTheLastN) {
  LatencyWindow w(3);
  for (double v : {100.0, 200.0, 1.0, 2.0, 3.0}) w.add(v);  // 100 and 200 drop out
  const LatencySummary s = w.summary();
  EXPECT_EQ(s.n, 3u);
  EXPECT_EQ(*s.max, 3.0);
  EXPECT_EQ(*s.p50, 2.0);
  w.add(50.0);  // replaces the oldest remaining (1)
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(*w.summary().max, 50.0);
  EXPECT_EQ(*w.summary().p50, 3.0);
}

}  // namespace
}  // namespace llmorch::orch
