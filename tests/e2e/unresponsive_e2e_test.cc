// End-to-end (issue 11): one guest's QEMU stops answering (SIGSTOP, as a hung QEMU or a host under swap
// looks) and nothing else stalls. Two shared 1-vCPU guests on one host CPU; guest "stuck" is stopped
// once both are managed; guest "honest" changes its priority inside itself (llmorch.priority_at) while
// the other is stopped. Asserts: llmorchd keeps ticking (no gap over two intervals), marks the stopped VM
// unresponsive in status.json and `llmorch status`, applies the honest guest's change within 2 s of its
// report (live cpu_shares), `llmorch place --dry-run` answers within 10 s; after SIGCONT the stopped VM
// is managed again (problem cleared, its live shares follow the plan).
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "llmorch-e2e-stuck-";
// The honest guest reports priority 3, then 1 from this many seconds after its agent starts: late enough
// for both guests to be managed and the other stopped first.
constexpr int kChangeAtS = 22;

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

// QEMU's pid for a running domain (libvirt's pid file).
std::optional<pid_t> qemu_pid(const std::string& name) {
  std::ifstream in("/run/libvirt/qemu/" + name + ".pid");
  long pid = 0;
  if (in >> pid && pid > 0) return static_cast<pid_t>(pid);
  return std::nullopt;
}

// SIGSTOPs a process and SIGCONTs it when it goes out of scope (a failing test must not leave a
// stopped QEMU behind).
class Stopped {
 public:
  explicit Stopped(pid_t pid) : pid_(pid) { ::kill(pid_, SIGSTOP); }
  ~Stopped() { resume(); }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    pid_ = -1;
  }

 private:
  pid_t pid_;
};

const json* problem_of(const json& status, const std::string& vm, const std::string& kind) {
  if (!status.contains("problems")) return nullptr;
  for (const auto& p : status["problems"])
    if (p.value("vm", "") == vm && p.value("kind", "") == kind) return &p;
  return nullptr;
}

TEST(UnresponsiveE2e, StoppedQemuStallsNothingAndRejoins) {
  const auto test_start = SteadyClock::now();
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(dir.path(), {.shared_cpus = "1", .reserved_cpus = "", .interval_ms = 1000});
  Guests guests(config, state);
  const std::string stuck = domain_name("stuck-a"), honest = domain_name("stuck-b");
  auto r = guests.place(stuck, {"priority=5", "priority_max=10", kernel_args("llmorch.priority=1")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = guests.place(honest,
                   {"priority=5", "priority_max=10",
                    kernel_args("llmorch.priority=3 llmorch.priority_at=" + std::to_string(kChangeAtS) + ":1")});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  DaemonProcess daemon(config, state, {"--domain-prefix", kPrefix});
  for (const auto& n : {stuck, honest})
    ASSERT_TRUE(wait_for_console(n, "llmorch-guest: agent started", 60s)) << serial_log(n);
  const auto honest_agent_started = SteadyClock::now();  // no earlier than its agent's start
  // Both managed: fresh reports at priorities 1 and 3, live shares as planned (1455/593).
  auto managed = [&](const json& s) {
    const json *a = find_vm(s, stuck), *b = find_vm(s, honest);
    return a && b && a->value("priority_source", "") == "agent" && b->value("effective_priority", 0.0) == 3.0 &&
           cpu_shares(stuck) == a->value("cpu_shares", 0u) && cpu_shares(honest) == b->value("cpu_shares", 0u);
  };
  std::optional<json> s;
  for (auto until = SteadyClock::now() + 30s; SteadyClock::now() < until; std::this_thread::sleep_for(200ms))
    if ((s = daemon.status()) && managed(*s)) break;
  ASSERT_TRUE(s && managed(*s)) << (s ? s->dump(2) : "no status") << daemon.log();
  const std::uint64_t stuck_shares_before = *cpu_shares(stuck);

  // Stop the first guest's QEMU.
  const auto pid = qemu_pid(stuck);
  ASSERT_TRUE(pid) << "no pid file for " << stuck;
  Stopped stopped(*pid);
  const auto stopped_at = SteadyClock::now();

  // Marked unresponsive within a few ticks; ticks keep coming, no gap over two intervals.
  double max_gap = 0, last_tick = 0;
  std::optional<double> marked_after;
  auto track_ticks = [&](const json& st) {
    if (auto t = parse_iso8601(st.value("last_tick_at", ""))) {
      if (last_tick > 0 && *t > last_tick) max_gap = std::max(max_gap, *t - last_tick);
      last_tick = std::max(last_tick, *t);
    }
  };
  for (auto until = SteadyClock::now() + 10s; SteadyClock::now() < until && !marked_after;
       std::this_thread::sleep_for(100ms)) {
    if (!(s = daemon.status())) continue;
    track_ticks(*s);
    if (problem_of(*s, stuck, "unresponsive"))
      marked_after = std::chrono::duration<double>(SteadyClock::now() - stopped_at).count();
  }
  ASSERT_TRUE(marked_after) << "the stopped VM was never marked unresponsive\n"
                            << (s ? s->dump(2) : "") << daemon.log();
  figure("stuck_marked_unresponsive_after_s", *marked_after);
  EXPECT_EQ(s->value("health", ""), "degraded");

  // The CLI says so, and `llmorch place --dry-run` answers (it takes the place lock and reads the host).
  const auto cli_status = run_command({LLMORCH_CLI, "status", "--connect", kUri, "--state-dir", state.string()}, 30s);
  EXPECT_EQ(cli_status.exit_code, 0) << cli_status.err;
  EXPECT_NE(cli_status.out.find("UNRESPONSIVE"), std::string::npos) << cli_status.out;
  EXPECT_NE(cli_status.out.find(stuck + ": unresponsive since"), std::string::npos) << cli_status.out;
  const auto place_start = SteadyClock::now();
  const auto dry = run_command({LLMORCH_CLI, "place", "--connect", kUri, "--config", config.string(), "--state-dir",
                                state.string(), "--template", std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf",
                                "--name", domain_name("stuck-dry"), "--dry-run"},
                               30s);
  const double place_s = std::chrono::duration<double>(SteadyClock::now() - place_start).count();
  figure("stuck_place_dry_run_s", place_s);
  EXPECT_FALSE(dry.timed_out);
  EXPECT_EQ(dry.exit_code, 0) << dry.out << dry.err;
  EXPECT_LT(place_s, 10.0);

  // The honest guest's priority change (3 -> 1) is applied while the other stays stopped.
  std::optional<double> report_at, applied_at;
  const auto follow_until = honest_agent_started + std::chrono::seconds(kChangeAtS + 15);
  while (SteadyClock::now() < follow_until && !applied_at) {
    std::this_thread::sleep_for(100ms);
    if (!(s = daemon.status())) continue;
    track_ticks(*s);
    const json* b = find_vm(*s, honest);
    if (!b || b->value("effective_priority", 0.0) != 1.0) continue;
    if (!report_at) {
      const auto tick = parse_iso8601(s->value("last_tick_at", ""));
      if (tick && b->contains("report_age_s") && (*b)["report_age_s"].is_number())
        report_at = *tick - (*b)["report_age_s"].get<double>();
    }
    if (cpu_shares(honest) == b->value("cpu_shares", 0u)) applied_at = now_s();
  }
  ASSERT_TRUE(report_at && applied_at) << "the honest guest's priority change was not applied\n"
                                       << (s ? s->dump(2) : "") << daemon.log();
  figure("stuck_honest_report_to_live_s", *applied_at - *report_at);
  EXPECT_LT(*applied_at - *report_at, 2.0);
  // The stopped VM was not touched: its planned share moved (equal priorities now), its live one did not.
  EXPECT_EQ(cpu_shares(stuck), stuck_shares_before);
  figure("stuck_max_tick_gap_s", max_gap);
  EXPECT_LE(max_gap, 2.2) << "ticks must stay within two intervals (1 s each)";
  ASSERT_TRUE(problem_of(*s, stuck, "unresponsive")) << "still stopped, still unresponsive";

  // SIGCONT: it rejoins by itself, and its share follows the plan again.
  stopped.resume();
  const auto resumed_at = SteadyClock::now();
  std::optional<double> rejoined_after;
  for (auto until = SteadyClock::now() + 20s; SteadyClock::now() < until && !rejoined_after;
       std::this_thread::sleep_for(200ms)) {
    if (!(s = daemon.status())) continue;
    const json* a = find_vm(*s, stuck);
    if (!problem_of(*s, stuck, "unresponsive") && a && cpu_shares(stuck) == a->value("cpu_shares", 0u) &&
        *cpu_shares(stuck) != stuck_shares_before)
      rejoined_after = std::chrono::duration<double>(SteadyClock::now() - resumed_at).count();
  }
  ASSERT_TRUE(rejoined_after) << "the resumed VM was not managed again\n" << (s ? s->dump(2) : "") << daemon.log();
  figure("stuck_rejoined_after_s", *rejoined_after);
  EXPECT_EQ(s->value("health", ""), "ok");
  const std::string log = daemon.log();
  EXPECT_NE(log.find("vm " + stuck + ": unresponsive"), std::string::npos) << log;
  EXPECT_NE(log.find("vm " + stuck + ": answering again"), std::string::npos) << log;
  EXPECT_EQ(daemon.stop(), 0);
  figure("stuck_test_s", std::chrono::duration<double>(SteadyClock::now() - test_start).count());
}

}  // namespace
}  // namespace llmorch::e2e
