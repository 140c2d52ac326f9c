// End-to-end fault injection (issue 6) on the real stack: libvirtd on qemu:///system, TCG test guests,
// the real llmorch and llmorchd binaries. Faults: libvirtd SIGKILLed and restarted, llmorchd SIGKILLed
// and restarted, a guest kernel crash, two `llmorch place` racing for the last CPU, a placement whose
// domain cannot start, and malformed inputs. Every domain is named llmorch-e2e-faults-* and removed
// even when a test fails. Killing libvirtd disturbs anything else using it: ctest runs this
// executable alone (RUN_SERIAL).
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kFaultsPrefix = "llmorch-e2e-faults-";
constexpr double kAlpha = 0.8;
// llmorchd manages only this file's VMs: other suites' guests must not change its plan.
const std::vector<std::string> kOwnVms = {"--domain-prefix", kFaultsPrefix};

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kFaultsPrefix));

std::string name_of(const std::string& stem) { return domain_name("faults-" + stem); }

fs::path host_config(const TempDir& dir, const std::string& shared, const std::string& reserved, int interval_ms) {
  HostConfigOptions o;
  o.shared_cpus = shared;
  o.reserved_cpus = reserved;
  o.interval_ms = interval_ms;
  o.alpha = kAlpha;
  return write_host_config(dir.path(), o);
}

CommandResult virsh(std::vector<std::string> args) {
  args.insert(args.begin(), {"virsh", "-c", kUri});
  return run_command(args, 30s);
}

bool domain_defined(const std::string& name) { return virsh({"domuuid", name}).exit_code == 0; }

std::string domain_id(const std::string& name) {
  std::string id = virsh({"domid", name}).out;
  id.erase(std::remove_if(id.begin(), id.end(), ::isspace), id.end());
  return id;
}

// This file's domains (other suites' guests may come and go meanwhile).
std::set<std::string> faults_domains() {
  std::set<std::string> out;
  std::istringstream lines(virsh({"list", "--all", "--name"}).out);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(kFaultsPrefix, 0) == 0) out.insert(line);
  return out;
}

// "0-2,5" -> {0,1,2,5}
std::set<int> parse_cpu_list(const std::string& text) {
  std::set<int> cpus;
  std::istringstream parts(text);
  for (std::string part; std::getline(parts, part, ',');) {
    const auto dash = part.find('-');
    const int lo = std::stoi(part.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
    for (int c = lo; c <= hi; ++c) cpus.insert(c);
  }
  return cpus;
}

// Live affinity of each vCPU (`virsh vcpupin NAME`: rows " 0      1").
std::vector<std::set<int>> live_pins(const std::string& name) {
  std::vector<std::set<int>> pins;
  std::istringstream lines(virsh({"vcpupin", name}).out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream row(line);
    int vcpu = -1;
    std::string affinity;
    if (row >> vcpu >> affinity && vcpu == static_cast<int>(pins.size())) pins.push_back(parse_cpu_list(affinity));
  }
  return pins;
}

// `llmorch place` argv with tiny-test.conf, for tests that run it themselves (Guests::place is serial).
std::vector<std::string> place_argv(const fs::path& config, const fs::path& state, const std::string& name,
                                    const std::vector<std::string>& overrides) {
  std::vector<std::string> argv = {LLMORCH_CLI,   "place",
                                   "--connect",   kUri,
                                   "--config",    config.string(),
                                   "--state-dir", state.string(),
                                   "--template",  std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf",
                                   "--name",      name};
  for (const auto& o : overrides) argv.insert(argv.end(), {"--set", o});
  return argv;
}

// Removes the named domains when it goes out of scope (for domains not placed through Guests).
struct DomainGuard {
  std::vector<std::string> names;
  ~DomainGuard() {
    for (const auto& n : names) remove_domain(n);
  }
};

// The place tests need CPU 1 free for a dedicated VM: no other llmorch VM may run meanwhile (ctest
// runs this file alone; by hand, wait for other e2e/integration runs to finish).
std::string host_not_idle(const fs::path& config, const fs::path& state) {
  auto argv = place_argv(config, state, name_of("probe"), {"cpu_policy=dedicated", "max_vcpus=1"});
  argv.push_back("--dry-run");
  const CommandResult dry = run_command(argv);
  return dry.exit_code == 0 ? "" : "the host is not idle (other llmorch VMs hold its CPUs): " + dry.err;
}

double formula_weight(double p, double p_other) {
  const double raw = kAlpha / p + (1 - kAlpha) / 2, raw_other = kAlpha / p_other + (1 - kAlpha) / 2;
  return raw / (raw + raw_other);
}

// Polls status.json until pred holds; the last status seen (or nullopt) on timeout.
template <typename Pred>
std::optional<json> wait_status(const DaemonProcess& d, std::chrono::seconds timeout, Pred pred) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (auto s = d.status(); s && pred(*s)) return s;
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

bool fresh_agent(const json& status, const std::string& vm) {
  const json* v = find_vm(status, vm);
  return v && v->value("report_fresh", false) && v->value("priority_source", "") == "agent";
}

double tick_time(const json& status) { return parse_iso8601(status.value("last_tick_at", "")).value_or(0); }

double wall_now() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::optional<pid_t> libvirtd_pid() {
  std::ifstream in("/run/libvirtd.pid");
  pid_t pid = 0;
  if (in >> pid && pid > 0) return pid;
  const CommandResult r = run_command({"pgrep", "-x", "libvirtd"}, 5s);
  if (r.exit_code == 0) return static_cast<pid_t>(std::stol(r.out));
  return std::nullopt;
}

// True once pid has exited (gone, or a zombie not yet reaped).
bool exited(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;
  const auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z' || stat[paren + 2] == 'X';
}

// --- 1. libvirtd killed and restarted under a running daemon ---------------------------------------
TEST(LibvirtdRestart, DaemonReconnectsWithin5sLeavesVmsAloneAndResumesRebalancing) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "1", "", 500);
  Guests guests(config, state);
  const std::string a = name_of("lv-a"), b = name_of("lv-b");
  // b's agent reports priority 1, then 4 from 35 s after it started: after the restart, not before.
  ASSERT_EQ(guests.place(a, {kernel_args("llmorch.workload=busy:1 llmorch.priority=1")}).exit_code, 0);
  auto r = guests.place(b, {kernel_args("llmorch.workload=busy:1 llmorch.priority=1 llmorch.priority_at=35:4")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto placed_at = SteadyClock::now();
  DaemonProcess daemon(config, state, kOwnVms);

  auto before = wait_status(daemon, 40s, [&](const json& s) { return fresh_agent(s, a) && fresh_agent(s, b); });
  ASSERT_TRUE(before) << "agents never reported; daemon log:\n" << daemon.log();
  std::this_thread::sleep_for(1500ms);  // let the daemon apply the plan for these reports
  before = daemon.status();
  ASSERT_DOUBLE_EQ(find_vm(*before, b)->value("effective_priority", 0.0), 1.0);
  std::map<std::string, std::string> ids;
  std::map<std::string, std::vector<std::set<int>>> pins;
  std::map<std::string, std::optional<std::uint64_t>> shares;
  for (const auto& n : {a, b}) {
    ids[n] = domain_id(n);
    pins[n] = live_pins(n);
    shares[n] = cpu_shares(n);
    ASSERT_TRUE(shares[n]);
    EXPECT_EQ(*shares[n], find_vm(*before, n)->value("cpu_shares", 0u)) << n;
  }

  const auto pid = libvirtd_pid();
  ASSERT_TRUE(pid) << "cannot find libvirtd's pid";
  const auto killed_at = SteadyClock::now();
  ASSERT_EQ(kill(*pid, SIGKILL), 0);
  for (int i = 0; i < 100 && !exited(*pid); ++i) std::this_thread::sleep_for(50ms);
  // The daemon notices the outage (its next tick writes connected = false).
  const auto down = wait_status(daemon, 5s, [](const json& s) { return !s.value("connected", true); });
  EXPECT_TRUE(down) << "status.json never showed connected = false during the outage";
  const CommandResult up = run_command({std::string(LLMORCH_TOOLS_DIR) + "/libvirtd-up"}, 60s);
  ASSERT_EQ(up.exit_code, 0) << up.err;
  const double up_at = wall_now();
  const auto up_steady = SteadyClock::now();

  // Reconnected: a tick after libvirtd answered says connected, and ticks keep advancing.
  auto back = wait_status(daemon, 10s,
                          [&](const json& s) { return s.value("connected", false) && tick_time(s) > up_at; });
  ASSERT_TRUE(back) << "no connected tick within 10 s of libvirtd answering; daemon log:\n" << daemon.log();
  const double reconnect_s = std::chrono::duration<double>(SteadyClock::now() - up_steady).count();
  std::printf("[ reconnect ] connected again %.2f s after libvirtd answered (outage from SIGKILL %.2f s)\n",
              reconnect_s, std::chrono::duration<double>(SteadyClock::now() - killed_at).count());
  EXPECT_LT(reconnect_s, 5.0);
  auto next = daemon.wait_for_tick((*back)["last_tick_at"].get<std::string>(), 5s);
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->value("connected", false));

  // Nothing was stopped, re-pinned or re-shared without cause (b's priority has not changed yet).
  ASSERT_LT(SteadyClock::now() - placed_at, 35s) << "the restart took too long to test before b's priority change";
  const json after = *daemon.status();
  for (const auto& n : {a, b}) {
    EXPECT_EQ(domain_id(n), ids[n]) << n << " was restarted";
    EXPECT_EQ(live_pins(n), pins[n]) << n;
    EXPECT_EQ(cpu_shares(n), shares[n]) << n;
    EXPECT_EQ(find_vm(after, n)->value("last_change_at", json()), find_vm(*before, n)->value("last_change_at", json()))
        << n << " was changed without cause: " << find_vm(after, n)->dump();
  }

  // Rebalancing resumes: b's priority 4 arrives, the weights and the live shares follow.
  auto moved = wait_status(daemon, 40s, [&](const json& s) {
    const json* vb = find_vm(s, b);
    return vb && vb->value("effective_priority", 0.0) == 4.0 && cpu_shares(b) == vb->value("cpu_shares", 0u) &&
           cpu_shares(a) == find_vm(s, a)->value("cpu_shares", 0u);
  });
  ASSERT_TRUE(moved) << "shares did not follow b's new priority; daemon log:\n" << daemon.log();
  EXPECT_NEAR(find_vm(*moved, a)->value("weight", 0.0), formula_weight(1, 4), 1e-3);
  EXPECT_NEAR(find_vm(*moved, b)->value("weight", 0.0), formula_weight(4, 1), 1e-3);
  EXPECT_GT(*cpu_shares(a), *cpu_shares(b));
  for (const auto& n : {a, b}) EXPECT_EQ(domain_id(n), ids[n]) << n;
}

// --- 2. llmorchd killed and restarted ----------------------------------------------------------------
TEST(DaemonRestart, RebuildsTheSamePlanFromLibvirtAndPinsStayDisjoint) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", "", 500);
  Guests guests(config, state);
  const std::string a = name_of("dr-a"), b = name_of("dr-b");
  for (const auto& [n, prio] : {std::pair{a, "1"}, std::pair{b, "3"}}) {
    auto r = guests.place(n, {"cpu_policy=dedicated", "max_vcpus=1", std::string("priority=") + prio,
                              kernel_args("llmorch.workload=busy:1")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  std::optional<json> before;
  {
    DaemonProcess first(config, state, kOwnVms);
    before = wait_status(first, 40s, [&](const json& s) {
      const json *va = find_vm(s, a), *vb = find_vm(s, b);
      return va && vb && va->value("report_fresh", false) && vb->value("report_fresh", false);
    });
    ASSERT_TRUE(before) << "agents never reported; last status:\n"
                        << first.status().value_or(json()).dump(1) << "\ndaemon log:\n"
                        << first.log();
    ASSERT_EQ(kill(first.pid(), SIGKILL), 0);
  }  // reaped

  DaemonProcess second(config, state, kOwnVms);
  const int second_pid = second.pid();
  auto after = wait_status(second, 20s, [&](const json& s) {
    const json *va = find_vm(s, a), *vb = find_vm(s, b);
    return s.value("pid", 0) == second_pid && va && vb && va->value("report_fresh", false) &&
           vb->value("report_fresh", false);
  });
  ASSERT_TRUE(after) << "the restarted daemon never saw both agents; log:\n" << second.log();
  for (const auto& n : {a, b}) {
    const json &x = *find_vm(*before, n), &y = *find_vm(*after, n);
    EXPECT_EQ(x["cpus"], y["cpus"]) << n;
    EXPECT_EQ(x["cpu_shares"], y["cpu_shares"]) << n;
    EXPECT_NEAR(x.value("weight", 0.0), y.value("weight", -1.0), 1e-9) << n;
    EXPECT_EQ(x["effective_priority"], y["effective_priority"]) << n;
    EXPECT_EQ(cpu_shares(n), y.value("cpu_shares", 0u)) << n;
  }
  EXPECT_NEAR(find_vm(*after, a)->value("weight", 0.0), formula_weight(1, 3), 1e-3);

  // No CPU is pinned to both dedicated VMs, and each VM runs on what the plan says.
  const auto pa = live_pins(a), pb = live_pins(b);
  ASSERT_EQ(pa.size(), 1u);
  ASSERT_EQ(pb.size(), 1u);
  std::set<int> both;
  std::set_intersection(pa[0].begin(), pa[0].end(), pb[0].begin(), pb[0].end(), std::inserter(both, both.end()));
  EXPECT_TRUE(both.empty()) << "a CPU is pinned to two dedicated VMs";
  EXPECT_EQ(pa[0], (std::set<int>{(*find_vm(*after, a))["cpus"][0].get<int>()}));
  EXPECT_EQ(pb[0], (std::set<int>{(*find_vm(*after, b))["cpus"][0].get<int>()}));
  EXPECT_EQ(second.log().find("cannot plan"), std::string::npos) << second.log();
}

// --- 3. a guest kernel crash, then a reset ---------------------------------------------------------
TEST(GuestCrash, ReportsGoStaleDuringTheGapAndTheAgentReconnectsAfterBoot) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "1", "", 500);
  Guests guests(config, state);
  const std::string g = name_of("crash");
  auto r = guests.place(g, {"priority=1", kernel_args("llmorch.priority=2 llmorch.crash_at=10")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  DaemonProcess daemon(config, state, kOwnVms);

  auto reporting = wait_status(daemon, 40s, [&](const json& s) { return fresh_agent(s, g); });
  ASSERT_TRUE(reporting) << "no fresh report; last status:\n"
                         << daemon.status().value_or(json()).dump(1) << "\ndaemon log:\n"
                         << daemon.log();
  EXPECT_DOUBLE_EQ(find_vm(*reporting, g)->value("effective_priority", 0.0), 2.0);
  ASSERT_TRUE(wait_for_console(g, "crashing now", 30s)) << serial_log(g);
  const auto crashed_at = SteadyClock::now();

  // The last report expires: the template's priority (1) takes over, marked stale.
  auto stale = wait_status(daemon, 15s, [&](const json& s) {
    const json* v = find_vm(s, g);
    return v && v->value("priority_source", "") == "stale";
  });
  ASSERT_TRUE(stale) << "the crashed guest's report never went stale; daemon log:\n" << daemon.log();
  const json& sv = *find_vm(*stale, g);
  EXPECT_FALSE(sv.value("report_fresh", true));
  EXPECT_DOUBLE_EQ(sv.value("effective_priority", 0.0), 1.0);
  EXPECT_DOUBLE_EQ(sv.value("reported_priority", 0.0), 2.0);  // kept, but not used
  std::printf("[ crash ] stale %.1f s after the crash\n",
              std::chrono::duration<double>(SteadyClock::now() - crashed_at).count());

  // Under TCG the crashed kernel hangs in its restart path (tools/guest/init): reset it as a watchdog
  // would. The new boot's agent must be heard again on the same channel.
  const std::string id = domain_id(g);
  ASSERT_EQ(virsh({"reset", g}).exit_code, 0);
  const auto reset_at = SteadyClock::now();
  auto again = wait_status(daemon, 40s, [&](const json& s) {
    const json* v = find_vm(s, g);
    return fresh_agent(s, g) && v->value("report_age_s", 99.0) < 3.0;
  });
  ASSERT_TRUE(again) << "the agent did not reconnect after the reboot; daemon log:\n" << daemon.log();
  std::printf("[ crash ] fresh report %.1f s after the reset\n",
              std::chrono::duration<double>(SteadyClock::now() - reset_at).count());
  const json& av = *find_vm(*again, g);
  EXPECT_DOUBLE_EQ(av.value("effective_priority", 0.0), 2.0);
  EXPECT_TRUE(av["agent"].value("connected", false));
  EXPECT_EQ(domain_id(g), id);
  const std::string console = serial_log(g);
  const auto first = console.find("llmorch-guest: agent started");
  EXPECT_NE(console.find("llmorch-guest: agent started", first + 1), std::string::npos) << "no second boot";
}

// --- 4. two places race for the last dedicated CPU ---------------------------------------------------
TEST(PlaceRace, ExactlyOneWinsTheLastCpuAndTheLoserLeavesNothing) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  // CPU 0 reserved: CPU 1 is the only one a dedicated VM can get.
  const fs::path config = host_config(dir, "", "0", 1000);
  ASSERT_EQ(host_not_idle(config, state), "");
  const std::string a = name_of("race-a"), b = name_of("race-b");
  DomainGuard guard{{a, b}};
  const std::vector<std::string> set = {"cpu_policy=dedicated", "max_vcpus=1"};
  CommandResult ra, rb;
  std::thread ta([&] { ra = run_command(place_argv(config, state, a, set), 90s); });
  std::thread tb([&] { rb = run_command(place_argv(config, state, b, set), 90s); });
  ta.join();
  tb.join();

  ASSERT_TRUE((ra.exit_code == 0) != (rb.exit_code == 0))
      << "a: " << ra.exit_code << " " << ra.err << "\nb: " << rb.exit_code << " " << rb.err;
  const bool a_won = ra.exit_code == 0;
  const std::string& winner = a_won ? a : b;
  const std::string& loser = a_won ? b : a;
  const CommandResult& lost = a_won ? rb : ra;
  EXPECT_EQ(lost.exit_code, 3) << lost.err;
  EXPECT_NE(lost.err.find("cannot place vm " + loser), std::string::npos) << lost.err;
  EXPECT_NE(lost.err.find("nothing was changed"), std::string::npos) << lost.err;
  EXPECT_FALSE(domain_defined(loser)) << "the losing place left a domain behind";
  EXPECT_EQ(live_pins(winner), (std::vector<std::set<int>>{{1}}));
  EXPECT_EQ(virsh({"domstate", winner}).out.substr(0, 7), "running");
}

// --- 5. a placement that fails half-way -------------------------------------------------------------
TEST(PlaceFailure, DomainThatCannotStartLeavesNoDomainLockOrReservation) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", "0", 1000);
  ASSERT_EQ(host_not_idle(config, state), "");
  const std::string bad = name_of("nostart"), good = name_of("after");
  DomainGuard guard{{bad, good}};
  const std::set<std::string> domains_before = faults_domains();
  // Both pass template validation (a path is a path); QEMU cannot open them.
  for (const std::string set : {"kernel=/nonexistent/vmlinuz", "initrd=/nonexistent/initrd.gz"}) {
    SCOPED_TRACE(set);
    const CommandResult r = run_command(place_argv(config, state, bad, {"cpu_policy=dedicated", "max_vcpus=1", set}));
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("cannot start domain '" + bad + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("/nonexistent/"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("definition was removed"), std::string::npos) << r.err;
    EXPECT_FALSE(domain_defined(bad)) << "a domain (and its llmorch metadata) was left behind";
    EXPECT_EQ(faults_domains(), domains_before);
  }
  // The lock is free ...
  const int fd = ::open((state / "place.lock").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "place.lock is still held";
  ::close(fd);
  // ... and CPU 1 is not reserved by the failed VM: the next dedicated VM gets it.
  const CommandResult r = run_command(place_argv(config, state, good, {"cpu_policy=dedicated", "max_vcpus=1"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(live_pins(good), (std::vector<std::set<int>>{{1}}));
}

// --- 6. malformed templates, capabilities and command lines ------------------------------------------
struct BadInput {
  const char* what;
  std::vector<std::string> argv;  // {CONFIG}, {TEMPLATE}, {BADTEMPLATE}, {BADCONFIG}, {CAPS}, {STATE} replaced
  const char* message;            // must appear in stderr
};

TEST(BadInputs, ExitStatus2WithAClearMessageAndNothingChanged) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", "", 1000);
  const std::string tmpl = std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf";
  const fs::path bad_tmpl = dir.path() / "bad.conf", bad_config = dir.path() / "badhost.conf",
                 bad_caps = dir.path() / "caps.xml";
  std::ofstream(bad_tmpl) << "vcpus = 1\nmemory_mib = 256\nmax_memory_mib = 256\nbogus_key = 3\n";
  std::ofstream(bad_config) << "domain_type = qemu\nalpha = 2\n";
  std::ofstream(bad_caps) << "<capabilities><host><topology><cells num='1'>\n";
  const std::string vm = name_of("bad");
  DomainGuard guard{{vm}};
  const std::string cli = LLMORCH_CLI, daemon = LLMORCH_DAEMON;
  const std::vector<std::string> place = {cli, "place", "--connect", kUri, "--state-dir", "{STATE}", "--name", vm};
  auto with = [](std::vector<std::string> base, std::initializer_list<std::string> more) {
    base.insert(base.end(), more);
    return base;
  };
  const std::vector<BadInput> cases = {
      {"unknown template key", with(place, {"--config", "{CONFIG}", "--template", "{BADTEMPLATE}"}), "bogus_key"},
      {"bad template value", with(place, {"--config", "{CONFIG}", "--template", "{TEMPLATE}", "--set", "vcpus=zero"}),
       "'zero'"},
      {"vcpus above max_vcpus", with(place, {"--config", "{CONFIG}", "--template", "{TEMPLATE}", "--set", "vcpus=4"}),
       "max_vcpus"},
      {"missing template", with(place, {"--config", "{CONFIG}", "--template", "/nonexistent/t.conf"}),
       "/nonexistent/t.conf"},
      {"--set without =", with(place, {"--config", "{CONFIG}", "--template", "{TEMPLATE}", "--set", "vcpus"}), "vcpus"},
      {"--set unknown key", with(place, {"--config", "{CONFIG}", "--template", "{TEMPLATE}", "--set", "colour=red"}),
       "colour"},
      {"bad host config", with(place, {"--config", "{BADCONFIG}", "--template", "{TEMPLATE}"}), "alpha"},
      {"missing host config", with(place, {"--config", "/nonexistent/host.conf", "--template", "{TEMPLATE}"}),
       "/nonexistent/host.conf"},
      {"unknown option", with(place, {"--config", "{CONFIG}", "--template", "{TEMPLATE}", "--frobnicate"}),
       "frobnicate"},
      {"invalid VM name",
       {cli, "place", "--config", "{CONFIG}", "--template", "{TEMPLATE}", "--name", "no spaces"},
       "not a valid VM name"},
      {"malformed capabilities",
       {cli, "plan", "--capabilities", "{CAPS}", "--vm", "name=x,vcpus=1,memory_mib=64"},
       "not well-formed XML"},
      {"missing capabilities",
       {cli, "plan", "--capabilities", "/nonexistent/caps.xml", "--vm", "name=x,vcpus=1,memory_mib=64"},
       "cannot read host capabilities"},
      {"bad --vm spec", {cli, "plan", "--capabilities", "{CAPS}", "--vm", "name=x,vcpus=-1,memory_mib=64"}, "vcpus"},
      {"unknown subcommand", {cli, "frobnicate"}, "frobnicate"},
      {"daemon: --interval-ms not a number",
       {daemon, "--dry-run", "--state-dir", "{STATE}", "--config", "{CONFIG}", "--interval-ms", "abc"},
       "interval-ms"},
      {"daemon: --interval-ms too small",
       {daemon, "--dry-run", "--state-dir", "{STATE}", "--config", "{CONFIG}", "--interval-ms", "0"},
       "interval_ms"},
      {"daemon: unknown option", {daemon, "--dry-run", "--state-dir", "{STATE}", "--bogus"}, "bogus"},
      {"daemon: missing config",
       {daemon, "--dry-run", "--state-dir", "{STATE}", "--config", "/nonexistent/h.conf"},
       "/nonexistent/h.conf"},
      {"daemon: bad config", {daemon, "--dry-run", "--state-dir", "{STATE}", "--config", "{BADCONFIG}"}, "alpha"},
      {"daemon: bad --log-level",
       {daemon, "--dry-run", "--state-dir", "{STATE}", "--config", "{CONFIG}", "--log-level", "loud"},
       "loud"},
  };
  const std::map<std::string, std::string> subst = {
      {"{CONFIG}", config.string()},        {"{TEMPLATE}", tmpl},          {"{BADTEMPLATE}", bad_tmpl.string()},
      {"{BADCONFIG}", bad_config.string()}, {"{CAPS}", bad_caps.string()}, {"{STATE}", state.string()}};
  const std::set<std::string> domains_before = faults_domains();
  for (const BadInput& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::string> argv = c.argv;
    for (auto& a : argv)
      if (auto it = subst.find(a); it != subst.end()) a = it->second;
    const CommandResult r = run_command(argv, 10s);
    EXPECT_EQ(r.exit_code, 2) << (r.timed_out ? "still running after 10 s" : r.err);
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty() || r.out.find("usage") != std::string::npos || r.out.find("Options") != std::string::npos)
        << "printed a result: " << r.out;
    EXPECT_FALSE(fs::exists(state / "status.json")) << "llmorchd ran";
    EXPECT_EQ(faults_domains(), domains_before);
  }
}

}  // namespace
}  // namespace llmorch::e2e
