// End-to-end (issue 11, unattended operation): an idle guest's agent must not spin while no host process
// listens on its virtio-serial channel. One idle TCG test guest; the host CPU time of its QEMU process
// (libvirt's cpu.time) is measured over a fixed window in three phases:
//   (a) no llmorchd has ever run (a guest started before the daemon),
//   (b) llmorchd connected to the agent's channel,
//   (c) llmorchd stopped again (an upgrade, a restart, a crash),
// then llmorchd starts again and `llmorch status --json` must show a fresh report from the agent within
// a few seconds, without a backlog of stale reports. Before the fix the agent spun at 100 % of its vCPU
// in (a) and (c). Figures are printed as "FIGURE name=value" lines.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrefix = "llmorch-e2e-agentidle-";
const std::vector<std::string> kOwnVms = {"--domain-prefix", kPrefix};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPrefix));

constexpr auto kWindow = 5s;
// Host CPU of the idle guest's QEMU, in % of one host CPU, in every phase. Measured on the 2-core build
// VM: about 1 % with the agent waiting properly, 100 % when it spins; TCG and other developers' builds
// are noisy, so the bound leaves room while any spinning is far above it.
constexpr double kMaxIdlePct = 5.0;
// From llmorchd's start to a fresh report in `llmorch status`: the daemon's first tick and connection,
// then the agent's wake-up (it is told of the connection at once; its slowest fallback probe is 2 s).
constexpr double kMaxResumeS = 6.0;
constexpr int kAgentPriority = 3;  // template says 5: priority 3 can only come from the agent

// The QEMU process's host CPU over kWindow, in % of one host CPU; nullopt when libvirt gives no figure.
std::optional<double> guest_cpu_pct(const std::string& vm) {
  const auto t0 = cpu_time_ns(vm);
  const auto w0 = SteadyClock::now();
  std::this_thread::sleep_for(kWindow);
  const auto t1 = cpu_time_ns(vm);
  const auto w1 = SteadyClock::now();
  if (!t0 || !t1 || *t1 < *t0) return std::nullopt;
  const double wall_ns = std::chrono::duration<double, std::nano>(w1 - w0).count();
  return 100.0 * static_cast<double>(*t1 - *t0) / wall_ns;
}

std::optional<json> cli_status(const std::filesystem::path& config, const std::filesystem::path& state) {
  const CommandResult r = run_command(
      {LLMORCH_CLI, "status", "--json", "--connect", kUri, "--config", config.string(), "--state-dir", state.string()},
      20s);
  if (r.exit_code != 0) return std::nullopt;
  auto j = json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

const json* cli_vm(const json& status, const std::string& name) {
  if (!status.contains("vms") || !status["vms"].is_array()) return nullptr;
  for (const auto& vm : status["vms"])
    if (vm.value("name", "") == name) return &vm;
  return nullptr;
}

// `llmorch status --json` says the running daemon `pid` holds a report from the agent under 2 s old.
bool cli_shows_fresh_report(const json& status, const std::string& vm, pid_t pid) {
  const json& d = status.value("daemon", json::object());
  if (!d.value("running", false) || d.value("pid", json()) != json(pid)) return false;
  const json* v = cli_vm(status, vm);
  if (!v || v->value("priority_source", json()) != "agent") return false;
  const json& age = v->value("report_age_s", json());
  return age.is_number() && age.get<double>() < 2.0 && v->value("priority", json()) == json(kAgentPriority);
}

// The llmorch-agent lines of the guest's console (the agent logs to /dev/console).
std::string agent_lines(const std::string& vm) {
  std::string out, line;
  for (char c : serial_log(vm) + "\n") {
    if (c != '\n') {
      line += c;
      continue;
    }
    if (line.find("llmorch-agent:") != std::string::npos) out += "  " + line + "\n";
    line.clear();
  }
  return out;
}

TEST(AgentIdleE2e, GuestStaysIdleWithoutTheDaemonAndReportsResumeAfterARestart) {
  const auto test_start = SteadyClock::now();
  TempDir dir;
  const auto state = dir.path() / "state";
  std::filesystem::create_directories(state);
  const auto config = write_host_config(dir.path(), {.shared_cpus = "1", .reserved_cpus = "0"});
  Guests guests(config, state);
  const std::string vm = domain_name("agentidle");
  auto r = guests.place(vm, {"priority=5", "priority_min=1", "priority_max=10",
                             kernel_args("llmorch.workload=idle llmorch.priority=" + std::to_string(kAgentPriority))});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(wait_for_console(vm, "llmorch-guest: agent started", 60s)) << serial_log(vm);
  ASSERT_TRUE(wait_for_console(vm, "llmorch-guest: ready", 30s)) << serial_log(vm);
  std::this_thread::sleep_for(3s);  // the end of the boot (module loads, the first samples) settles

  // (a) Nobody has ever connected to the channel.
  const auto before = guest_cpu_pct(vm);
  ASSERT_TRUE(before) << "no cpu.time from virsh domstats for " << vm;
  figure("idle_guest_cpu_pct_no_daemon", *before);

  // (b) llmorchd connected, the agent reporting.
  auto daemon = std::make_unique<DaemonProcess>(config, state, kOwnVms);
  bool reporting = false;
  for (auto deadline = SteadyClock::now() + 30s; !reporting && SteadyClock::now() < deadline;) {
    if (auto s = cli_status(config, state)) reporting = cli_shows_fresh_report(*s, vm, daemon->pid());
    if (!reporting) std::this_thread::sleep_for(250ms);
  }
  ASSERT_TRUE(reporting) << "the agent never reported to llmorchd; daemon log:\n"
                         << daemon->log() << "agent log:\n"
                         << agent_lines(vm);
  std::this_thread::sleep_for(1s);
  const auto with = guest_cpu_pct(vm);
  ASSERT_TRUE(with);
  figure("idle_guest_cpu_pct_daemon_connected", *with);

  // (c) llmorchd stopped: the agent sees its host side close.
  EXPECT_EQ(daemon->stop(), 0) << daemon->log();
  daemon.reset();
  std::this_thread::sleep_for(1s);
  const auto after = guest_cpu_pct(vm);
  ASSERT_TRUE(after);
  figure("idle_guest_cpu_pct_daemon_stopped", *after);

  // llmorchd back: a fresh report within seconds, and no backlog of stale ones.
  const auto restart = SteadyClock::now();
  daemon = std::make_unique<DaemonProcess>(config, state, kOwnVms);
  std::optional<double> resumed_s;
  json resumed;
  for (auto deadline = restart + 30s; !resumed_s && SteadyClock::now() < deadline;) {
    if (auto s = cli_status(config, state); s && cli_shows_fresh_report(*s, vm, daemon->pid())) {
      resumed_s = std::chrono::duration<double>(SteadyClock::now() - restart).count();
      resumed = *s;
    } else {
      std::this_thread::sleep_for(100ms);
    }
  }
  ASSERT_TRUE(resumed_s) << "no fresh report within 30 s of llmorchd's restart; daemon log:\n"
                         << daemon->log() << "agent log:\n"
                         << agent_lines(vm);
  figure("reports_resume_after_restart_s", *resumed_s);
  EXPECT_LE(*resumed_s, kMaxResumeS) << "agent log:\n" << agent_lines(vm);
  // The daemon counts every valid frame it reads: a backlog would arrive as a burst of them at once.
  const auto tick = daemon->wait_for_tick("", 5s);
  ASSERT_TRUE(tick) << daemon->log();
  const json* dv = find_vm(*tick, vm);
  ASSERT_TRUE(dv) << tick->dump(2);
  const double since_restart = std::chrono::duration<double>(SteadyClock::now() - restart).count();
  const auto frames = dv->at("agent").value("ok", 0);
  std::printf("FIGURE frames_after_restart=%d in %.1f s\n", frames, since_restart);
  EXPECT_LE(frames, static_cast<int>(since_restart) + 3) << "a backlog of reports after the restart:\n" << dv->dump(2);
  EXPECT_EQ(dv->at("agent").value("malformed", -1), 0) << dv->dump(2);
  // The agent saw the restart as such (it logs how it noticed: SIGIO, or its fallback probe).
  EXPECT_NE(agent_lines(vm).find("host is back after"), std::string::npos) << agent_lines(vm);
  EXPECT_EQ(daemon->stop(), 0) << daemon->log();

  EXPECT_LT(*before, kMaxIdlePct) << "the idle guest's QEMU used " << *before
                                  << " % of a host CPU with no llmorchd: is the agent spinning?\nagent log:\n"
                                  << agent_lines(vm);
  EXPECT_LT(*with, kMaxIdlePct) << "agent log:\n" << agent_lines(vm);
  EXPECT_LT(*after, kMaxIdlePct) << "the idle guest's QEMU used " << *after
                                 << " % of a host CPU after llmorchd stopped: is the agent spinning?\nagent log:\n"
                                 << agent_lines(vm);
  std::printf("agent log:\n%s", agent_lines(vm).c_str());
  std::printf("FIGURE agent_idle_test_s=%.1f\n",
              std::chrono::duration<double>(SteadyClock::now() - test_start).count());
}

}  // namespace
}  // namespace llmorch::e2e
