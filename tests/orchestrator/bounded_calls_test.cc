#include "llmorch/orch/bounded_calls.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

using namespace std::chrono_literals;
using Status = BoundedCalls::Status;

TEST(BoundedCalls, ReturnsValuesAndErrors) {
  BoundedCalls calls;
  BoundedCalls::Result r;
  EXPECT_EQ(calls.get<int>(
                "a", 1s, [] { return 42; }, r),
            42);
  EXPECT_EQ(r.status, Status::Ok);
  EXPECT_FALSE(calls.get<int>(
      "a", 1s, []() -> int { throw std::runtime_error("libvirt said no"); }, r));
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
    EXPECT_FALSE(calls.get<std::string>(
        "vm", 10ms,
        [&] {
          while (!release) std::this_thread::sleep_for(1ms);
          finished = true;
          return std::string(1000, 'x');
        },
        r));
    EXPECT_EQ(r.status, Status::TimedOut);
  }
  release = true;
  for (int i = 0; i < 5000 && !finished; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(finished);
}

// Calls run on a pool: one after another, they reuse a worker instead of starting a thread each.
TEST(BoundedCalls, SequentialCallsReuseWorkers) {
  BoundedCalls calls;
  std::atomic<int> reused{0};
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(calls
                  .run("vm" + std::to_string(i), 1s,
                       [&] {
                         thread_local int calls_on_this_thread = 0;
                         if (++calls_on_this_thread > 1) ++reused;
                       })
                  .status,
              Status::Ok);
  }
  EXPECT_GE(reused.load(), 45);  // a thread_local is new in every new thread, whatever its id
  EXPECT_LE(calls.workers(), 2u);
}

// A worker stuck in a call is replaced: calls for other keys go on, on one more worker, not one each.
TEST(BoundedCalls, StuckWorkerIsReplacedNotMultiplied) {
  BoundedCalls calls;
  std::atomic<bool> release{false};
  EXPECT_EQ(calls
                .run("stuck", 20ms,
                     [&] {
                       while (!release) std::this_thread::sleep_for(1ms);
                     })
                .status,
            Status::TimedOut);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(calls.run("vm" + std::to_string(i), 1s, [] {}).status, Status::Ok);
  EXPECT_EQ(calls.workers(), 2u);
  release = true;
  EXPECT_EQ(calls.drain(5s), 0u);
  EXPECT_EQ(calls.run("stuck", 1s, [] {}).status, Status::Ok);
}

// Many calls stuck at once each get a worker; once they return, at most kSpareWorkers stay.
TEST(BoundedCalls, ManyStuckCallsThenTheSparesShrink) {
  BoundedCalls calls;
  std::atomic<bool> release{false};
  const std::size_t stuck = BoundedCalls::kSpareWorkers + 3;
  for (std::size_t i = 0; i < stuck; ++i)
    EXPECT_EQ(calls
                  .run("vm" + std::to_string(i), 5ms,
                       [&] {
                         while (!release) std::this_thread::sleep_for(1ms);
                       })
                  .status,
              Status::TimedOut);
  EXPECT_EQ(calls.workers(), stuck);
  EXPECT_EQ(calls.run("other", 1s, [] {}).status, Status::Ok);
  release = true;
  EXPECT_EQ(calls.drain(5s), 0u);
  for (int i = 0; i < 1000 && calls.workers() > BoundedCalls::kSpareWorkers; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(calls.workers(), BoundedCalls::kSpareWorkers);
  EXPECT_EQ(calls.run("vm0", 1s, [] {}).status, Status::Ok);
}

}  // namespace
}  // namespace llmorch::orch
