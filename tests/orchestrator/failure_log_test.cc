#include "llmorch/orch/failure_log.h"

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

using namespace std::chrono_literals;

TEST(FailureLog, LogsTheStartAChangeAndTheEndWithACount) {
  FailureLog log;
  const FailureLog::TimePoint t0{};
  EXPECT_TRUE(log.failed("a: cpu_shares", "unsupported", t0));  // starts: log it
  EXPECT_TRUE(log.end_tick().empty());
  for (int i = 1; i < 100; ++i) {
    EXPECT_FALSE(log.failed("a: cpu_shares", "unsupported", t0 + i * 1s)) << "tick " << i;  // repeats: quiet
    EXPECT_TRUE(log.end_tick().empty());
  }
  EXPECT_TRUE(log.failed("a: cpu_shares", "libvirt said something else", t0 + 100s));  // changed: log it
  EXPECT_TRUE(log.end_tick().empty());
  EXPECT_TRUE(log.failed("b: balloon", "x", t0 + 101s));  // another key is its own
  const auto ended = log.end_tick();                      // a did not fail this tick: over
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].key, "a: cpu_shares");
  EXPECT_EQ(ended[0].failures, 101u);
  EXPECT_EQ(ended[0].since, t0);
  EXPECT_EQ(ended[0].message, "libvirt said something else");
  EXPECT_EQ(log.failing(), 1u);
  EXPECT_TRUE(log.failed("a: cpu_shares", "unsupported", t0 + 102s));  // a new run starts: logged again
}

}  // namespace
}  // namespace llmorch::orch
