// The agent's pure channel decisions (agent/src/host_link.h): the probe backoff, what poll() on the
// virtio-serial port means, and the report/probe schedule, driven by a simulated clock.
#include "host_link.h"

#include <poll.h>

#include <gtest/gtest.h>

#include <vector>

namespace llmorch::agent {
namespace {

constexpr std::int64_t kInterval = 1000;

HostLink make_link(std::int64_t now = 0) { return HostLink(now, kInterval, Backoff(250, 2000)); }

TEST(Backoff, DoublesUpToTheMaximumAndStartsAgainAfterReset) {
  Backoff b(250, 2000);
  std::vector<std::int64_t> delays;
  for (int i = 0; i < 6; ++i) delays.push_back(b.next_ms());
  EXPECT_EQ(delays, (std::vector<std::int64_t>{250, 500, 1000, 2000, 2000, 2000}));
  b.reset();
  EXPECT_EQ(b.next_ms(), 250);
}

TEST(Backoff, NeverZeroAndNeverBelowItsFirstDelay) {
  Backoff zero(0, 0);
  EXPECT_EQ(zero.next_ms(), 1);
  EXPECT_EQ(zero.next_ms(), 1);
  Backoff inverted(500, 100);
  EXPECT_EQ(inverted.next_ms(), 500);
  EXPECT_EQ(inverted.next_ms(), 500);
}

TEST(ClassifyPortEvents, HangUpWinsOverReadable) {
  // What virtio_console reports while no host process holds the channel: read() would return 0 at once,
  // so treating this as "readable" is a busy loop.
  EXPECT_EQ(classify_port_events(POLLIN | POLLRDNORM | POLLHUP), PortEvent::HostAbsent);
  EXPECT_EQ(classify_port_events(POLLHUP), PortEvent::HostAbsent);
  EXPECT_EQ(classify_port_events(POLLIN), PortEvent::Readable);
  EXPECT_EQ(classify_port_events(POLLIN | POLLOUT), PortEvent::Readable);
  EXPECT_EQ(classify_port_events(POLLOUT), PortEvent::None);
  EXPECT_EQ(classify_port_events(0), PortEvent::None);
  EXPECT_EQ(classify_port_events(POLLERR | POLLIN), PortEvent::Broken);
  EXPECT_EQ(classify_port_events(POLLNVAL), PortEvent::Broken);
}

TEST(HostLink, StartsByProbingAtOnceAndReportsNothingBeforeAHostListens) {
  HostLink link = make_link(100);
  EXPECT_FALSE(link.host_listening());
  EXPECT_EQ(link.due(100), HostLink::Due::Probe);
  EXPECT_EQ(link.wake_at(), 100);
}

// The agent's loop against a host that never comes: every wake-up is a probe that finds nobody. It
// must sleep between them (wake_at in the future) and wake up a bounded number of times.
TEST(HostLink, WithoutAHostTheLoopSleepsBetweenProbesWithBackoff) {
  HostLink link = make_link(0);
  std::int64_t now = 0;
  std::vector<std::int64_t> probes;
  int iterations = 0;
  while (now < 60'000) {
    ASSERT_LT(++iterations, 1000) << "the loop does not sleep";
    switch (link.due(now)) {
      case HostLink::Due::Probe:
        probes.push_back(now);
        link.probed_absent(now);
        break;
      case HostLink::Due::Report: FAIL() << "a report is due with no host at " << now;
      case HostLink::Due::Nothing:
        ASSERT_GT(link.wake_at(), now);
        now = link.wake_at();  // poll() times out
        break;
    }
  }
  ASSERT_GE(probes.size(), 5u);
  EXPECT_EQ(std::vector<std::int64_t>(probes.begin(), probes.begin() + 5),
            (std::vector<std::int64_t>{0, 250, 750, 1750, 3750}));
  EXPECT_LE(probes.size(), 34u);  // 4 while backing off, then one every 2 s
}

TEST(HostLink, ReportsAtOnceWhenTheHostAppearsThenEveryInterval) {
  HostLink link = make_link(0);
  link.probed_absent(0);
  link.host_present(5000, 0);  // the CPU was last sampled long ago: no need to wait
  EXPECT_TRUE(link.host_listening());
  EXPECT_EQ(link.due(5000), HostLink::Due::Report);
  link.reported(5000);
  EXPECT_EQ(link.due(5999), HostLink::Due::Nothing);
  EXPECT_EQ(link.wake_at(), 6000);
  EXPECT_EQ(link.due(6000), HostLink::Due::Report);
}

TEST(HostLink, FirstReportWaitsForAUsableCpuWindow) {
  HostLink link = make_link(0);
  link.host_present(10, 200);
  EXPECT_EQ(link.due(10), HostLink::Due::Nothing);
  EXPECT_EQ(link.wake_at(), 200);
  EXPECT_EQ(link.due(200), HostLink::Due::Report);
}

TEST(HostLink, AfterAStallTheScheduleRestartsInsteadOfBursting) {
  HostLink link = make_link(0);
  link.host_present(0, 0);
  link.reported(0);
  link.reported(7300);  // the guest was suspended for seconds
  EXPECT_EQ(link.wake_at(), 8300);
}

TEST(HostLink, HostGoingAwayPausesReportsAndProbesFromTheFirstDelayAgain) {
  HostLink link = make_link(0);
  for (int i = 0; i < 5; ++i) link.probed_absent(0);  // the backoff is at its maximum
  link.host_present(20'000, 0);
  link.reported(20'000);
  EXPECT_TRUE(link.host_absent(20'400));
  EXPECT_FALSE(link.host_absent(20'401)) << "only the first notice is news (for the log)";
  EXPECT_FALSE(link.host_listening());
  EXPECT_EQ(link.absent_since_ms(), 20'400);
  EXPECT_EQ(link.due(20'649), HostLink::Due::Nothing) << "no report while nobody listens";
  EXPECT_EQ(link.wake_at(), 20'650);
  EXPECT_EQ(link.due(20'650), HostLink::Due::Probe);
  link.probed_absent(20'650);
  EXPECT_EQ(link.wake_at(), 21'150);
}

TEST(HostLink, ASignalBringsTheNextProbeForwardButNeverPostponesIt) {
  HostLink link = make_link(0);
  for (int i = 0; i < 5; ++i) link.probed_absent(0);
  EXPECT_EQ(link.wake_at(), 2000);
  link.probe_now(300);
  EXPECT_EQ(link.due(300), HostLink::Due::Probe);
  link.probe_now(400);
  EXPECT_EQ(link.wake_at(), 300);
  // While the host listens a signal (bytes arrived) changes nothing.
  link.host_present(500, 0);
  link.reported(500);
  link.probe_now(600);
  EXPECT_EQ(link.due(600), HostLink::Due::Nothing);
  EXPECT_EQ(link.wake_at(), 1500);
}

TEST(HostLink, ANewIntervalAppliesFromTheNextReport) {
  HostLink link = make_link(0);
  link.host_present(0, 0);
  link.reported(0);
  link.set_interval(300);
  EXPECT_EQ(link.wake_at(), 1000);
  link.reported(1000);
  EXPECT_EQ(link.wake_at(), 1300);
}

}  // namespace
}  // namespace llmorch::agent
