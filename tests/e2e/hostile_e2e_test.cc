// End-to-end: llmorchd with real TCG guests, one of which misbehaves on the agent port on purpose
// (tools/guest/init's llmorch.agent=MODE). Both guests float on one host CPU (shared_cpus = 1), so their
// cpu_shares decide who gets it. Checks the daemon stays on time and bounded in memory, keeps
// rebalancing the well-behaved guest, and never lets the hostile one's input set its priority.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr int kIntervalMs = 1000;
constexpr double kAlpha = 0.8;

constexpr const char* kPrefix = "llmorch-e2e-hostile-";
// llmorchd manages only this file's VMs: other suites' guests must not change its plan.
const std::vector<std::string> kOwnVms = {"--domain-prefix", kPrefix};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

double formula_weight(double p, double p_other) {
  const double raw = kAlpha / p + (1 - kAlpha) / 2, raw_other = kAlpha / p_other + (1 - kAlpha) / 2;
  return raw / (raw + raw_other);
}

json cli_status(const std::filesystem::path& config, const std::filesystem::path& state) {
  const CommandResult r = run_command(
      {LLMORCH_CLI, "status", "--json", "--connect", kUri, "--config", config.string(), "--state-dir", state.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "llmorch status --json printed no JSON: " << r.out;
  return j;
}

const json* find_cli_vm(const json& status, const std::string& name) {
  if (!status.contains("vms")) return nullptr;
  for (const auto& vm : status["vms"])
    if (vm.value("name", "") == name) return &vm;
  return nullptr;
}

// CPU time (user + system) llmorchd has used so far, in seconds, from /proc/PID/stat; nullopt when
// the process is gone.
std::optional<double> process_cpu_s(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  // Field 2 (comm) may contain spaces; the fields after its closing ')' start with field 3 (state).
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// What the test observed of the daemon while the guests ran.
struct Observation {
  std::vector<double> tick_times;          // last_tick_at of every status.json seen, seconds
  std::vector<double> hostile_priorities;  // effective_priority of the hostile VM at every tick
  std::vector<json> reported_priorities;   // its reported_priority (null when none)
  json last;                               // the last status.json
};

Observation observe(const DaemonProcess& daemon, const std::string& hostile, std::chrono::seconds how_long) {
  Observation o;
  std::string seen;
  const auto end = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < end) {
    auto s = daemon.wait_for_tick(seen, 5s);
    if (!s) break;  // the gap check below reports it
    seen = (*s)["last_tick_at"].get<std::string>();
    if (auto t = parse_iso8601(seen)) o.tick_times.push_back(*t);
    if (const json* vm = find_vm(*s, hostile)) {
      o.hostile_priorities.push_back(vm->value("effective_priority", -1.0));
      o.reported_priorities.push_back(vm->value("reported_priority", json()));
    }
    o.last = *s;
  }
  return o;
}

class HostileE2e : public ::testing::TestWithParam<std::string> {};

TEST_P(HostileE2e, DaemonStaysOnTimeAndHostileGuestGetsNoSay) {
  const std::string mode = GetParam();
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(
      dir.path(), {.shared_cpus = "1", .reserved_cpus = "0", .interval_ms = kIntervalMs, .alpha = kAlpha});
  Guests guests(config, state);
  const std::string normal = domain_name("hostile-normal-" + mode), hostile = domain_name("hostile-" + mode);
  // The normal guest's agent reports priority 2 (template 5): if the daemon still uses it, the daemon
  // still reads good guests while a bad one floods. The hostile guest's template says 4 in [2, 50].
  auto r = guests.place(normal, {"priority=5", "priority_min=1", "priority_max=10",
                                 kernel_args("llmorch.workload=busy:1 llmorch.priority=2")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = guests.place(hostile, {"priority=4", "priority_min=2", "priority_max=50",
                             kernel_args("llmorch.workload=busy:1 llmorch.agent=" + mode)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  DaemonProcess daemon(config, state, kOwnVms);
  ASSERT_TRUE(wait_for_console(normal, "llmorch-guest: ready", 60s)) << serial_log(normal);
  ASSERT_TRUE(wait_for_console(hostile, "hostile agent " + mode + " started", 60s)) << serial_log(hostile);
  ASSERT_TRUE(daemon.wait_for_tick("", 10s)) << "no status.json from llmorchd:\n" << daemon.log();
  std::this_thread::sleep_for(4s);  // the hostile guest gets going; the daemon's buffers settle
  const auto rss_before = daemon.rss_kib();
  ASSERT_TRUE(rss_before);
  const auto cpu_before = process_cpu_s(daemon.pid());
  ASSERT_TRUE(cpu_before);

  const auto window_start = std::chrono::steady_clock::now();
  const Observation o = observe(daemon, hostile, 15s);
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
  const auto rss_after = daemon.rss_kib();
  const auto cpu_after = process_cpu_s(daemon.pid());
  ASSERT_TRUE(cpu_after);
  // llmorchd's CPU over the window: one hostile guest (plus one normal guest and the ticks).
  std::printf("FIGURE hostile_%s_llmorchd_cpu_s=%.2f over_s=%.1f\n", mode.c_str(), *cpu_after - *cpu_before, window_s);
  ASSERT_TRUE(daemon.running()) << "llmorchd died:\n" << daemon.log();
  ASSERT_TRUE(rss_after);

  // On time: a status file every interval (give TCG guests stealing the CPU 2x slack).
  ASSERT_GE(o.tick_times.size(), 7u) << "llmorchd wrote too few status files in 15 s";
  for (std::size_t i = 1; i < o.tick_times.size(); ++i)
    EXPECT_LE(o.tick_times[i] - o.tick_times[i - 1], 2.0 * kIntervalMs / 1000) << "tick " << i << " late";
  EXPECT_LE(*rss_after - *rss_before, 4096)
      << "llmorchd RSS grew from " << *rss_before << " to " << *rss_after << " KiB in 15 s";

  // The normal guest is still read and rebalanced.
  const json* n = find_vm(o.last, normal);
  const json* h = find_vm(o.last, hostile);
  ASSERT_TRUE(n && h) << o.last.dump(2);
  EXPECT_EQ(n->value("priority_source", ""), "agent") << n->dump(2);
  EXPECT_DOUBLE_EQ(n->value("effective_priority", 0.0), 2.0);
  const double p_h = h->value("effective_priority", 0.0);
  EXPECT_NEAR(n->value("weight", 0.0), formula_weight(2.0, p_h), 0.01);
  const auto live_n = cpu_shares(normal), live_h = cpu_shares(hostile);
  ASSERT_TRUE(live_n && live_h);
  EXPECT_NEAR(static_cast<double>(*live_n) / static_cast<double>(*live_n + *live_h), formula_weight(2.0, p_h), 0.02)
      << "live cpu_shares " << *live_n << " and " << *live_h << " do not follow the weights";

  const json cli = cli_status(config, state);
  const json* cli_h = find_cli_vm(cli, hostile);
  ASSERT_TRUE(cli_h) << cli.dump(2);
  if (mode == "badvalues") {
    // Valid frames with out-of-range values are clamped, invalid ones dropped: the priority used is
    // always in the template's [2, 50], and clamping did happen.
    for (double p : o.hostile_priorities) EXPECT_TRUE(p >= 2.0 && p <= 50.0) << "priority used: " << p;
    for (const json& p : o.reported_priorities) {
      if (p.is_number()) {
        EXPECT_TRUE(p.get<double>() >= 2.0 && p.get<double>() <= 50.0) << p;
      }
    }
    EXPECT_GT(h->at("agent").value("clamped", 0), 0) << h->dump(2);
    EXPECT_GT(h->at("agent").value("malformed", 0), 0) << h->dump(2);
  } else {
    // Garbage, oversized lines and floods mark the guest hostile; whatever it claims, it is weighted at
    // its template priority.
    EXPECT_TRUE(cli_h->value("hostile", false)) << cli_h->dump(2);
    EXPECT_DOUBLE_EQ(p_h, 4.0) << h->dump(2);
    EXPECT_NE(h->value("priority_source", ""), "agent") << h->dump(2);
  }
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

INSTANTIATE_TEST_SUITE_P(Modes, HostileE2e, ::testing::Values("garbage", "flood", "oversize", "badvalues"),
                         [](const auto& info) { return info.param; });

TEST(SilentGuestE2e, KeepsTemplatePriority) {
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(
      dir.path(), {.shared_cpus = "1", .reserved_cpus = "0", .interval_ms = kIntervalMs, .alpha = kAlpha});
  Guests guests(config, state);
  const std::string silent = domain_name("hostile-silent");
  auto r = guests.place(silent, {"priority=7", kernel_args("llmorch.workload=busy:1 llmorch.agent=off")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  DaemonProcess daemon(config, state, kOwnVms);
  ASSERT_TRUE(wait_for_console(silent, "llmorch-guest: agent off", 60s)) << serial_log(silent);
  ASSERT_TRUE(wait_for_console(silent, "llmorch-guest: ready", 30s)) << serial_log(silent);
  std::this_thread::sleep_for(3s);
  auto s = daemon.wait_for_tick("", 10s);
  ASSERT_TRUE(s) << daemon.log();
  const json* vm = find_vm(*s, silent);
  ASSERT_TRUE(vm) << s->dump(2);
  EXPECT_DOUBLE_EQ(vm->value("effective_priority", 0.0), 7.0);
  EXPECT_EQ(vm->value("priority_source", ""), "template");
  EXPECT_TRUE(vm->at("report").is_null()) << vm->dump(2);
  EXPECT_FALSE(vm->value("hostile", true));

  const json cli = cli_status(config, state);
  const json* cli_vm = find_cli_vm(cli, silent);
  ASSERT_TRUE(cli_vm) << cli.dump(2);
  EXPECT_TRUE(cli_vm->at("priority_reported").is_null()) << cli_vm->dump(2);
  EXPECT_TRUE(cli_vm->at("load").is_null()) << cli_vm->dump(2);
  EXPECT_DOUBLE_EQ(cli_vm->value("priority", 0.0), 7.0) << cli_vm->dump(2);
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace llmorch::e2e
