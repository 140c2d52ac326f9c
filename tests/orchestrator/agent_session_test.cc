#include "llmorch/orch/agent_session.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>

#include "llmorch/protocol/codec.h"

namespace llmorch::orch {
namespace {

using namespace std::chrono_literals;
using protocol::Report;

const AgentSession::TimePoint t0{};  // simulated time

Report report(double prio, std::uint64_t interval_ms = 1000) {
  Report r;
  r.seq = 1;
  r.priority = prio;
  r.cpu_pct = 50;
  r.ncpu_online = 2;
  r.mem_total_kib = 512 * 1024;
  r.mem_avail_kib = 256 * 1024;
  r.floor_mib = 100;
  r.interval_ms = interval_ms;
  return r;
}

AgentSessionLimits limits() {
  AgentSessionLimits l;
  l.priority_min = 1;
  l.priority_max = 10;
  return l;
}

TEST(AgentSession, PassesValidReportsAndKeepsTheLatest) {
  AgentSession s(limits(), t0);
  auto out = s.feed(protocol::encode(report(3)) + protocol::encode(report(4)), t0);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].priority, 4.0);
  EXPECT_EQ(s.latest(t0)->priority, 4.0);
  EXPECT_EQ(s.counters().frames_ok, 2u);
  EXPECT_FALSE(s.hostile(t0));
}

TEST(AgentSession, ClampsPriorityIntoTemplateRange) {
  AgentSession s(limits(), t0);
  EXPECT_EQ(s.feed(protocol::encode(report(0)), t0).at(0).priority, 1.0);
  EXPECT_EQ(s.feed(protocol::encode(report(1e6)), t0).at(0).priority, 10.0);
  EXPECT_EQ(s.feed(protocol::encode(report(5)), t0).at(0).priority, 5.0);
  EXPECT_EQ(s.counters().clamped, 2u);
  // NaN never gets through the parser.
  EXPECT_TRUE(s.feed("LLMO1 report seq=1 prio=nan cpu_pct=1 runnable=0 ncpu_online=1 mem_total_kib=1 "
                     "mem_avail_kib=1 floor_mib=0 interval_ms=1000\n",
                     t0)
                  .empty());
  EXPECT_EQ(s.counters().malformed, 1u);
}

TEST(AgentSession, AbsentPriorityStaysAbsent) {
  AgentSession s(limits(), t0);
  Report r = report(1);
  r.priority.reset();
  EXPECT_FALSE(s.feed(protocol::encode(r), t0).at(0).priority.has_value());
}

TEST(AgentSession, ClampsFloorToTemplateMaximumElseGuestMemory) {
  AgentSessionLimits no_max = limits();
  no_max.floor_max_mib = 0;
  AgentSession s(no_max, t0);
  Report r = report(2);
  r.floor_mib = 10'000;  // guest has 512 MiB
  EXPECT_EQ(s.feed(protocol::encode(r), t0).at(0).floor_mib, 512u);
  AgentSessionLimits l = limits();
  l.floor_max_mib = 300;
  AgentSession capped(l, t0);
  EXPECT_EQ(capped.feed(protocol::encode(r), t0).at(0).floor_mib, 300u);
  EXPECT_EQ(capped.counters().clamped, 1u);
}

TEST(AgentSession, ASqueezedGuestKeepsItsFloor) {
  // Ballooned down, the guest's MemTotal (200 MiB) is below the floor it needs (240 MiB) and below the
  // VM's max (256): the floor must stay 240, so the host grows the guest back instead of squeezing on.
  AgentSessionLimits l = limits();
  l.floor_max_mib = 256;
  AgentSession s(l, t0);
  Report r = report(2);
  r.mem_total_kib = 200 * 1024;
  r.mem_avail_kib = 50 * 1024;
  r.floor_mib = 240;
  EXPECT_EQ(s.feed(protocol::encode(r), t0).at(0).floor_mib, 240u);
  EXPECT_EQ(s.counters().clamped, 0u);
}

TEST(AgentSession, ReportsExpireAfterTtl) {
  AgentSession s(limits(), t0);
  s.feed(protocol::encode(report(2, 1000)), t0);
  EXPECT_TRUE(s.latest(t0 + 3000ms).has_value());  // 3 x 1 s
  EXPECT_FALSE(s.latest(t0 + 3001ms).has_value());
  s.feed(protocol::encode(report(2, 100)), t0);  // 3 x 100 ms < minimum of 3 s
  EXPECT_TRUE(s.latest(t0 + 2999ms).has_value());
  EXPECT_FALSE(s.latest(t0 + 3001ms).has_value());
  s.feed(protocol::encode(report(2, 5000)), t0);
  EXPECT_TRUE(s.latest(t0 + 15s).has_value());
  EXPECT_FALSE(s.latest(t0 + 15001ms).has_value());
}

TEST(AgentSession, RateLimitsWithTokenBucket) {
  AgentSession s(limits(), t0);  // 20/s, burst 40
  std::string burst;
  for (int i = 0; i < 50; ++i) burst += protocol::encode(report(2));
  EXPECT_EQ(s.feed(burst, t0).size(), 40u);
  EXPECT_EQ(s.counters().rate_limited, 10u);
  // After 500 ms ten tokens are back.
  EXPECT_EQ(s.feed(burst, t0 + 500ms).size(), 10u);
  EXPECT_EQ(s.counters().rate_limited, 50u);
  // A well-behaved guest at 1 report/s is never limited.
  AgentSession calm(limits(), t0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(calm.feed(protocol::encode(report(2)), t0 + i * 1s).size(), 1u);
  EXPECT_EQ(calm.counters().rate_limited, 0u);
}

TEST(AgentSession, CountsOversizedAndMalformedAndTurnsHostile) {
  AgentSession s(limits(), t0);
  s.feed(std::string(5000, 'A') + "\n", t0);
  EXPECT_EQ(s.counters().oversized, 4u);  // one per 1025 bytes
  EXPECT_FALSE(s.hostile(t0));
  for (int i = 0; i < 19; ++i) s.feed("garbage\n", t0 + i * 100ms);
  EXPECT_EQ(s.counters().malformed, 19u);
  EXPECT_TRUE(s.hostile(t0 + 2s));
  EXPECT_FALSE(s.last_error().empty());
  // Good reports still get through; the flag clears after a quiet window.
  EXPECT_EQ(s.feed(protocol::encode(report(2)), t0 + 3s).size(), 1u);
  EXPECT_FALSE(s.hostile(t0 + 13s));
}

TEST(AgentSession, SlowTrickleOfErrorsIsNotHostile) {
  AgentSession s(limits(), t0);
  for (int i = 0; i < 100; ++i) s.feed("garbage\n", t0 + i * 1s);  // 10 per 10 s window < 20
  EXPECT_EQ(s.counters().malformed, 100u);
  EXPECT_FALSE(s.hostile(t0 + 100s));
}

TEST(AgentSession, SessionsAreIndependent) {
  AgentSession bad(limits(), t0), good(limits(), t0);
  for (int i = 0; i < 100; ++i) bad.feed("junk\n", t0);
  EXPECT_TRUE(bad.hostile(t0));
  EXPECT_EQ(good.feed(protocol::encode(report(2)), t0).size(), 1u);
  EXPECT_FALSE(good.hostile(t0));
  EXPECT_EQ(good.counters().malformed, 0u);
}

// Issue 11, finding 6: empty lines were free, so a guest could keep llmorchd reading "\n" forever.
TEST(AgentSession, AFloodOfEmptyLinesIsRateLimitedAndTurnsHostile) {
  AgentSession s(limits(), t0);  // 20/s, burst 40
  EXPECT_TRUE(s.feed(std::string(64 * 1024, '\n'), t0).empty());
  EXPECT_EQ(s.counters().rate_limited, 64u * 1024 - 40);
  EXPECT_TRUE(s.hostile(t0));
  EXPECT_NE(s.last_error().find("empty lines"), std::string::npos) << s.last_error();
  // The bucket is empty: a report right after is dropped like any frame beyond the limit.
  EXPECT_TRUE(s.feed(protocol::encode(report(2)), t0).empty());
}

TEST(AgentSession, AResynchronisingNewlineBeforeEachReportCostsNothingVisible) {
  AgentSession s(limits(), t0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s.feed("\n" + protocol::encode(report(2)), t0 + i * 1s).size(), 1u);
  EXPECT_EQ(s.counters().rate_limited, 0u);
  EXPECT_FALSE(s.hostile(t0 + 100s));
}

// Issue 11, finding 6: one endless line counted as one error however long it went on.
TEST(AgentSession, AnEndlessLineKeepsCountingAndTurnsHostile) {
  AgentSession s(limits(), t0);
  for (int i = 0; i < 4; ++i) s.feed(std::string(16 * 1024, 'A'), t0 + i * 10ms);  // no newline, ever
  // 63 units of 1025 bytes; those beyond the token bucket count as rate-limited instead.
  EXPECT_EQ(s.counters().oversized + s.counters().rate_limited, 64u * 1024 / 1025);
  EXPECT_GE(s.counters().oversized, 40u);
  EXPECT_TRUE(s.hostile(t0 + 40ms));
}

// Issue 11, finding 4: std::clamp with min > max is undefined; such a range drops reported priorities.
TEST(AgentSession, APriorityRangeThatIsNoneDropsReportedPriorities) {
  for (auto [lo, hi] : {std::pair{5.0, 1.0}, {std::nan(""), 10.0}, {1.0, std::nan("")}}) {
    AgentSessionLimits l = limits();
    l.priority_min = lo;
    l.priority_max = hi;
    AgentSession s(l, t0);
    const auto out = s.feed(protocol::encode(report(3)), t0);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_FALSE(out[0].priority.has_value()) << lo << " " << hi << ": " << *out[0].priority;
    EXPECT_EQ(s.counters().clamped, 1u);
  }
}

TEST(AgentSession, CountsUnknownKeys) {
  AgentSession s(limits(), t0);
  std::string frame = protocol::encode(report(2));
  frame.insert(frame.size() - 1, " newfield=1");
  EXPECT_EQ(s.feed(frame, t0).size(), 1u);
  EXPECT_EQ(s.counters().unknown_keys, 1u);
}

}  // namespace
}  // namespace llmorch::orch
