// End-to-end (issue 4): a priority set inside a guest changes how much CPU that guest gets on the host.
// Two `shared` 1-vCPU guests, each running one busy loop, float over ONE host CPU (shared_cpus = 1), so
// their cpu_shares decide the split. Their agents report priorities 1 and 3 (kernel command line);
// llmorchd (real, --domain-prefix so that nobody else's daemon or domains interfere) sets the shares
// from the weights (alpha 0.8: 0.7105 and 0.2895), and the measured CPU time from libvirt must follow.
// Then the priority-3 guest changes to 1 inside itself (llmorch.priority_at), and flips back and forth
// a few times: each time the live shares must follow within 3 s of the report reaching the daemon.
// llmorchd's own report-to-apply latency (status.json daemon.report_to_apply_ms) is printed as well.
//
// Prints figures as "FIGURE name=value" lines. Hostile and silent agents are covered by
// hostile_e2e_test.cc.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "llmorch-e2e-rebal-";
constexpr double kAlpha = 0.8;
// Seconds after the agent starts at which the low-priority guest changes its priority: first to 1
// (equal shares), then back and forth every kFlipEvery s. The measurement at priorities 1 and 3 must
// fit before the first change.
constexpr int kFirstChangeS = 32;
constexpr int kFlipEvery = 4;
constexpr int kFlips = 5;  // 3->1, 1->3, 3->1, 1->3, 3->1: ends at equal priorities
constexpr auto kMeasure = 11s;

double weight(double p, double p_other) {
  const double raw = kAlpha / p + (1 - kAlpha) / 2, raw_other = kAlpha / p_other + (1 - kAlpha) / 2;
  return raw / (raw + raw_other);
}

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

std::string busy_guest(const std::string& words) { return kernel_args("llmorch.workload=busy:1 " + words); }

// Where a domain's vCPU and emulator threads may run ("0-1", "1"), from virsh vcpupin/emulatorpin.
std::string pinning(const std::string& name) {
  std::string out;
  for (const char* what : {"vcpupin", "emulatorpin"}) {
    const CommandResult r = run_command({"virsh", "-c", kUri, what, name}, 20s);
    out += std::string(what) + ": " + r.out;
  }
  return out;
}

struct Split {
  double seconds_a = 0, seconds_b = 0, wall = 0;
  double share_a() const { return seconds_a / (seconds_a + seconds_b); }
};

// CPU time of both domains over `how_long`, from libvirt (cpu.time).
std::optional<Split> measure(const std::string& a, const std::string& b, std::chrono::seconds how_long) {
  const auto a0 = cpu_time_ns(a), b0 = cpu_time_ns(b);
  const auto t0 = SteadyClock::now();
  std::this_thread::sleep_for(how_long);
  const auto a1 = cpu_time_ns(a), b1 = cpu_time_ns(b);
  const auto t1 = SteadyClock::now();
  if (!a0 || !b0 || !a1 || !b1) return std::nullopt;
  return Split{static_cast<double>(*a1 - *a0) / 1e9, static_cast<double>(*b1 - *b0) / 1e9,
               std::chrono::duration<double>(t1 - t0).count()};
}

// Polls status.json until VM name is weighted at priority p with a fresh agent report; the document.
std::optional<json> wait_for_priority(DaemonProcess& d, const std::string& name, double p,
                                      std::chrono::seconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline && d.running()) {
    if (auto s = d.status()) {
      const json* vm = find_vm(*s, name);
      if (vm && vm->value("priority_source", "") == "agent" && vm->value("effective_priority", 0.0) == p) return s;
    }
    std::this_thread::sleep_for(100ms);
  }
  return std::nullopt;
}

// When the daemon received the newest report of VM vm in status document s (seconds since the epoch).
// report_age_s is taken at the tick's snapshot and last_tick_at after its actions, so this is late by
// the tick's own duration (tens of ms): latencies measured from it are that much too short.
std::optional<double> report_received_at(const json& s, const json& vm) {
  const auto tick = parse_iso8601(s.value("last_tick_at", ""));
  if (!tick || !vm.contains("report_age_s") || !vm["report_age_s"].is_number()) return std::nullopt;
  return *tick - vm["report_age_s"].get<double>();
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

// One priority change of guest b seen from the host.
struct Change {
  double report_at = 0;       // the daemon received the report with the new priority
  double live_equal_at = -1;  // virsh schedinfo first showed the expected shares (host clock)
};

TEST(RebalanceE2e, GuestPriorityMovesHostCpuShare) {
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(
      dir.path(), {.shared_cpus = "1", .reserved_cpus = "0", .interval_ms = 1000, .alpha = kAlpha});
  Guests guests(config, state);
  const std::string a = domain_name("rebal-p1"), b = domain_name("rebal-p3");
  ASSERT_EQ(a.rfind(kPrefix, 0), 0u) << "domain names must carry the daemon's --domain-prefix";
  std::string flips = "llmorch.priority=3";
  for (int i = 0; i < kFlips; ++i)
    flips += " llmorch.priority_at=" + std::to_string(kFirstChangeS + i * kFlipEvery) + ":" + (i % 2 ? "3" : "1");
  // Template priority 5 for both: a guest weighted at 1 or 3 is weighted by its agent.
  auto r = guests.place(a, {"priority=5", "priority_max=10", busy_guest("llmorch.priority=1")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = guests.place(b, {"priority=5", "priority_max=10", busy_guest(flips)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  DaemonProcess daemon(config, state, {"--domain-prefix", kPrefix});
  for (const auto& n : {a, b}) {
    ASSERT_TRUE(wait_for_console(n, "llmorch-guest: workload busy:1 started", 60s)) << serial_log(n);
    ASSERT_TRUE(wait_for_console(n, "llmorch-guest: agent started", 30s)) << serial_log(n);
  }
  const auto agent_b_started = SteadyClock::now();  // b's agent started no later than this
  ASSERT_TRUE(wait_for_priority(daemon, a, 1.0, 20s)) << "no priority-1 report from " << a << "\n" << daemon.log();
  ASSERT_TRUE(wait_for_priority(daemon, b, 3.0, 20s)) << "no priority-3 report from " << b << "\n" << daemon.log();

  // Shares as planned, live on the domains.
  const double w_a = weight(1, 3), w_b = weight(3, 1);
  std::optional<std::uint64_t> sa, sb;
  for (int i = 0; i < 30; ++i) {
    sa = cpu_shares(a), sb = cpu_shares(b);
    if (sa && sb && std::abs(double(*sa) / double(*sa + *sb) - w_a) < 0.01) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(sa && sb);
  ASSERT_NEAR(double(*sa) / double(*sa + *sb), w_a, 0.01) << "live cpu_shares " << *sa << "/" << *sb << "\n"
                                                          << daemon.log();
  std::printf("live shares %llu/%llu\n%s: %s%s: %s", static_cast<unsigned long long>(*sa),
              static_cast<unsigned long long>(*sb), a.c_str(), pinning(a).c_str(), b.c_str(), pinning(b).c_str());

  // The split at priorities 1 and 3; it must be over before b's first change.
  const auto split = measure(a, b, kMeasure);
  ASSERT_TRUE(split) << "virsh domstats failed";
  const auto after = daemon.status();
  const json* vm_b = after ? find_vm(*after, b) : nullptr;
  ASSERT_TRUE(vm_b && vm_b->value("effective_priority", 0.0) == 3.0)
      << "the measurement overlapped " << b << "'s priority change; raise kFirstChangeS";
  figure("rebal_weight_p1", w_a);
  figure("rebal_weight_p3", w_b);
  figure("rebal_share_p1", split->share_a());
  figure("rebal_share_p3", 1 - split->share_a());
  figure("rebal_share_error_points", 100 * std::abs(split->share_a() - w_a));
  figure("rebal_measure_s", split->wall);
  figure("rebal_guest_cpu_s_p1", split->seconds_a);
  figure("rebal_guest_cpu_s_p3", split->seconds_b);
  EXPECT_NEAR(split->share_a(), w_a, 0.05)
      << "CPU seconds " << split->seconds_a << " and " << split->seconds_b << " in " << split->wall << " s";
  // On an idle host the two guests get nearly all of the CPU; other load on it lowers their total but,
  // as long as both stay runnable, not their split. A split of almost nothing proves nothing.
  figure("rebal_guests_cpu_fraction", (split->seconds_a + split->seconds_b) / split->wall);
  EXPECT_GT(split->seconds_a + split->seconds_b, 1.0) << "the guests got almost no CPU: is the host overloaded?";

  // Follow b's changes: poll status.json and the live shares every 100 ms.
  std::vector<Change> changes;
  double expected_p = 3;
  const auto follow_until = agent_b_started + std::chrono::seconds(kFirstChangeS + kFlips * kFlipEvery + 6);
  auto all_seen = [&] {
    return changes.size() == static_cast<std::size_t>(kFlips) && changes.back().live_equal_at >= 0;
  };
  while (SteadyClock::now() < follow_until && !all_seen()) {
    std::this_thread::sleep_for(100ms);
    auto s = daemon.status();
    const json* vm = s ? find_vm(*s, b) : nullptr;
    if (!changes.empty() && changes.back().live_equal_at < 0) {
      // Waiting for the live shares of the last change.
      const double want_a = weight(1, expected_p);
      sa = cpu_shares(a), sb = cpu_shares(b);
      if (sa && sb && std::abs(double(*sa) / double(*sa + *sb) - want_a) < 0.01) changes.back().live_equal_at = now_s();
      continue;
    }
    if (!vm || vm->value("priority_source", "") != "agent") continue;
    const double p = vm->value("effective_priority", 0.0);
    if (p == expected_p) continue;
    expected_p = p;
    Change c;
    const auto received = report_received_at(*s, *vm);
    ASSERT_TRUE(received) << vm->dump(2);
    c.report_at = *received;
    changes.push_back(c);
  }
  ASSERT_FALSE(changes.empty()) << b << " never reported its new priority:\n" << serial_log(b) << daemon.log();
  std::vector<double> to_live;
  for (const Change& c : changes) {
    std::printf("change %zu: report received %.3f, live shares %+.3f s later\n", to_live.size() + 1, c.report_at,
                c.live_equal_at - c.report_at);
    ASSERT_GE(c.live_equal_at, 0) << "the live shares never followed priority change " << to_live.size() + 1 << "\n"
                                  << daemon.log();
    to_live.push_back(c.live_equal_at - c.report_at);
  }
  figure("rebal_change_to_equal_shares_s", to_live.front());
  EXPECT_LT(to_live.front(), 3.0) << "shares equal only " << to_live.front() << " s after the report";
  for (double t : to_live) EXPECT_LT(t, 3.0);
  figure("rebal_changes_seen", static_cast<double>(changes.size()));
  figure("rebal_report_to_live_p50_s", percentile(to_live, 0.5));
  figure("rebal_report_to_live_p99_s", percentile(to_live, 0.99));
  // The daemon's own figure: each plan-changing report, from reading its bytes to the last libvirt call
  // applying it (status.json daemon.report_to_apply_ms; includes the agents' first reports). The bound
  // is a sanity check on a shared, loaded machine, not issue 4's 100 ms target: the figure is what counts.
  const auto st = daemon.status();
  ASSERT_TRUE(st && st->contains("daemon")) << "no daemon figures in status.json";
  const json lat = (*st)["daemon"]["report_to_apply_ms"];
  ASSERT_GE(lat.value("n", 0), kFlips) << lat.dump();
  figure("rebal_daemon_report_to_apply_n", lat["n"].get<double>());
  figure("rebal_daemon_report_to_apply_p50_ms", lat["p50"].get<double>());
  figure("rebal_daemon_report_to_apply_p99_ms", lat["p99"].get<double>());
  figure("rebal_daemon_report_to_apply_max_ms", lat["max"].get<double>());
  EXPECT_LT(lat["p99"].get<double>(), 1000.0) << lat.dump();
  EXPECT_EQ(changes.size(), static_cast<std::size_t>(kFlips)) << "some priority changes were not seen";

  // The last change made the priorities equal: so is the split.
  const auto equal = measure(a, b, 6s);
  ASSERT_TRUE(equal);
  figure("rebal_equal_share_p1", equal->share_a());
  figure("rebal_equal_share_error_points", 100 * std::abs(equal->share_a() - 0.5));
  EXPECT_NEAR(equal->share_a(), 0.5, 0.05);
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace llmorch::e2e
