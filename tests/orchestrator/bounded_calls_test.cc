#include "llmorch/orch/bounded_calls.h"

#include <atomic>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

using namespace std::chrono_literals;
using Status = BoundedCalls::Status;

TEST(BoundedCalls, ReturnsValuesAndErrors) {
  BoundedCalls calls;
  BoundedCalls::Result r;
  EXPECT_EQ(calls.get<int>("a", 1s, [] { return 42; }, r), 42);
  EXPECT_EQ(r.status, Status::Ok);
  EXPECT_FALSE(calls.get<int>("a", 1s, []() -> int { throw std::runtime_error("libvirt said no"); }, r));
  ASSERT_EQ(r.status, Status::Error);
  EXPECT_THROW(std::rethrow_exception(r.error), std::runtime_error);
  EXPECT_FALSE(calls.busy("a"));
}

// A call that never returns in time: the caller goes on, the key stays busy (further calls are refused
// at once, other keys are not affected), and it is free again when the call returns.
TEST(BoundedCalls, StuckCallTimesOutAndBlocksOnlyItsKey) {
  BoundedCalls calls;
  std::atomic<bool> release{false};
  const auto start = std::chrono::steady_clock::now();
  auto r = calls.run("vm1", 50ms, [&] {
    while (!release) std::this_thread::sleep_for(1ms);
  });
  EXPECT_EQ(r.status, Status::TimedOut);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_TRUE(calls.busy("vm1"));
  EXPECT_EQ(calls.run("vm1", 1s, [] {}).status, Status::Busy);
  EXPECT_EQ(calls.run("vm2", 1s, [] {}).status, Status::Ok);
  ASSERT_EQ(calls.running().size(), 1u);
  EXPECT_GE(calls.running().at("vm1"), 50ms);
  EXPECT_EQ(calls.drain(10ms), 1u);
  release = true;
  EXPECT_EQ(calls.drain(5s), 0u);
  EXPECT_FALSE(calls.busy("vm1"));
  EXPECT_EQ(calls.run("vm1", 1s, [] {}).status, Status::Ok);
}

// The caller may be gone when a stuck call returns: the call's own state outlives both.
TEST(BoundedCalls, LateCallOutlivesItsCaller) {
  std::atomic<bool> release{false}, finished{false};
  {
    BoundedCalls calls;
    BoundedCalls::Result r;
    EXPECT_FALSE(calls.get<std::string>("vm", 10ms, [&] {
      while (!release) std::this_thread::sleep_for(1ms);
      finished = true;
      return std::string(1000, 'x');
    }, r));
    EXPECT_EQ(r.status, Status::TimedOut);
  }
  release = true;
  for (int i = 0; i < 5000 && !finished; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(finished);
}

}  // namespace
}  // namespace llmorch::orch
