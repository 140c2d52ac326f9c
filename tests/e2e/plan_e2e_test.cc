// End-to-end (issue 11): per-VM isolation in planning, no guest-driven churn, shared pools disjoint
// from dedicated CPUs, on the real stack (libvirtd on qemu:///system, TCG test guests, the real llmorch
// and llmorchd). Guests are named llmorch-e2e-plan-*; llmorchd manages only those (--domain-prefix).
// The tests assume the 2-CPU build host (one node, CPUs 0 and 1) and reserve nothing.
//
// The flapping test needs the test guest's `llmorch.agent=flip` mode (tools/guest/init). The guest is
// taken from LLMORCH_GUEST_DIR when set (the variable tools/build-test-guest writes to), else from the
// default /var/lib/libvirt/images/llmorch that tiny-test.conf names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <regex>
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

constexpr const char* kPlanPrefix = "llmorch-e2e-plan-";
const std::vector<std::string> kOwnVms = {"--domain-prefix", kPlanPrefix};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kPlanPrefix));

std::string name_of(const std::string& stem) { return domain_name("plan-" + stem); }

fs::path host_config(const TempDir& dir, const std::string& shared, int interval_ms) {
  HostConfigOptions o;
  o.shared_cpus = shared;
  o.interval_ms = interval_ms;
  return write_host_config(dir.path(), o);
}

// Template overrides: the guest image (LLMORCH_GUEST_DIR, if set), then `more`.
std::vector<std::string> guest(std::vector<std::string> more) {
  if (const char* dir = std::getenv("LLMORCH_GUEST_DIR"); dir && *dir) {
    more.insert(more.begin(), {std::string("kernel=") + dir + "/vmlinuz", std::string("initrd=") + dir + "/initrd.gz"});
  }
  return more;
}

CommandResult virsh(std::vector<std::string> args) {
  args.insert(args.begin(), {"virsh", "-c", kUri});
  return run_command(args, 30s);
}

// "0-2,5" -> {0,1,2,5}
std::set<int> parse_cpus(const std::string& text) {
  std::set<int> cpus;
  std::istringstream parts(text);
  for (std::string part; std::getline(parts, part, ',');) {
    if (part.empty()) continue;
    const auto dash = part.find('-');
    const int lo = std::stoi(part.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
    for (int c = lo; c <= hi; ++c) cpus.insert(c);
  }
  return cpus;
}

// Every host CPU the domain's vCPUs may run on (`virsh vcpupin NAME`: rows " 0      1").
std::set<int> vcpu_cpus(const std::string& name) {
  std::set<int> all;
  std::istringstream lines(virsh({"vcpupin", name}).out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream row(line);
    int vcpu = -1;
    std::string affinity;
    if (row >> vcpu >> affinity) {
      const auto cpus = parse_cpus(affinity);
      all.insert(cpus.begin(), cpus.end());
    }
  }
  return all;
}

// The emulator threads' CPUs (`virsh emulatorpin NAME`: "       *: 0-1").
std::set<int> emulator_cpus(const std::string& name) {
  const std::string out = virsh({"emulatorpin", name}).out;
  const auto star = out.find("*:");
  if (star == std::string::npos) return {};
  std::istringstream rest(out.substr(star + 2));
  std::string affinity;
  rest >> affinity;
  return parse_cpus(affinity);
}

bool disjoint(const std::set<int>& a, const std::set<int>& b) {
  return std::none_of(a.begin(), a.end(), [&](int c) { return b.count(c) > 0; });
}

std::string text(const std::set<int>& cpus) {
  std::string out;
  for (int c : cpus) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out.empty() ? "none" : out;
}

template <typename Pred>
bool wait_until(std::chrono::milliseconds timeout, Pred pred) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return pred();
}

template <typename Pred>
std::optional<json> wait_status(const DaemonProcess& d, std::chrono::seconds timeout, Pred pred) {
  std::optional<json> found;
  wait_until(timeout, [&] {
    auto s = d.status();
    if (s && pred(*s)) found = s;
    return found.has_value();
  });
  return found;
}

bool has_problem(const json& status, const std::string& vm, const std::string& kind) {
  for (const auto& p : status.value("problems", json::array()))
    if (p.value("vm", "") == vm && p.value("kind", "") == kind) return true;
  return false;
}

std::size_t count_lines(const std::string& log, const std::string& needle) {
  std::size_t n = 0;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

// The dedicated tests need both host CPUs free of other llmorch VMs (`llmorch place` counts every
// managed domain on the host, not only this suite's): ctest runs e2e tests one at a time, but by hand
// other developers' or suites' VMs may be running.
std::string host_not_idle(const fs::path& config, const fs::path& state) {
  const CommandResult r = run_command(
      {LLMORCH_CLI, "place", "--connect", kUri, "--config", config.string(), "--state-dir", state.string(),
       "--template", std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf", "--name", name_of("probe"), "--set",
       "cpu_policy=dedicated", "--set", "vcpus=2", "--set", "max_vcpus=2", "--dry-run"});
  return r.exit_code == 0 ? "" : "the host is not idle (other llmorch VMs hold its CPUs): " + r.err;
}

double seconds_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// --- C: a shared VM placed before a dedicated one ---------------------------------------------------
// Without shared_cpus the shared VM floats over the node's whole free pool; the dedicated VM placed
// next takes one of those CPUs. llmorchd must re-pin the shared VM's vCPUs and emulator threads off it,
// and back when the dedicated VM is removed.
TEST(SharedPool, ASharedVmIsRepinnedOffADedicatedVmsCpusAndBack) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", 500);
  ASSERT_EQ(host_not_idle(config, state / "probe"), "");
  Guests guests(config, state);
  const std::string s = name_of("pool-s"), d = name_of("pool-d");
  auto r = guests.place(s, guest({"cpu_policy=shared", kernel_args("llmorch.workload=idle")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  DaemonProcess daemon(config, state, kOwnVms);
  ASSERT_TRUE(daemon.wait_for_tick("", 20s)) << daemon.log();
  EXPECT_EQ(vcpu_cpus(s), (std::set<int>{0, 1})) << "the shared VM floats over the whole node";

  r = guests.place(d, guest({"cpu_policy=dedicated", "vcpus=1", "max_vcpus=1", kernel_args("llmorch.workload=idle")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto placed = SteadyClock::now();
  const std::set<int> dedicated = vcpu_cpus(d);
  ASSERT_EQ(dedicated.size(), 1u);
  const bool moved = wait_until(10s, [&] {
    return disjoint(vcpu_cpus(s), dedicated) && disjoint(emulator_cpus(s), dedicated) && !emulator_cpus(s).empty();
  });
  const double took = seconds_since(placed);
  ASSERT_TRUE(moved) << "shared VM still on " << text(vcpu_cpus(s)) << " (emulator " << text(emulator_cpus(s))
                     << "), dedicated VM on " << text(dedicated) << "; daemon log:\n"
                     << daemon.log();
  std::printf("[ measured ] shared VM re-pinned off the dedicated CPU %.2f s after the placement\n", took);
  const auto status = wait_status(daemon, 5s, [&](const json& st) {
    const json* vm = find_vm(st, s);
    return vm && (*vm)["cpus"] == json::array({*dedicated.begin() == 0 ? 1 : 0});
  });
  ASSERT_TRUE(status) << daemon.status().value_or(json()).dump(1);
  EXPECT_EQ(status->value("health", ""), "ok");

  remove_domain(d);
  const bool back = wait_until(10s, [&] {
    return vcpu_cpus(s) == std::set<int>{0, 1} && emulator_cpus(s) == std::set<int>{0, 1};
  });
  EXPECT_TRUE(back) << "the pool did not grow back: " << text(vcpu_cpus(s)) << "; daemon log:\n" << daemon.log();
}

// --- D: a VM destroyed in the middle of its re-pin -------------------------------------------------
// As in C, placing a dedicated VM makes llmorchd re-pin the shared VM (4 vCPUs and its emulator
// threads: five calls, each written live and to the config). The test destroys the shared VM the
// moment the daemon logs the first of them, through a virsh shell that is already connected, so the
// rest of the re-pin meets a VM that is gone: what the config holds may be half the new placement.
// The daemon goes on (the dedicated VM keeps being managed, health stays ok), and when the shared VM
// is started again the next ticks repair its pins, vCPUs and emulator, off the dedicated CPU.
TEST(HalfRepin, AVmDestroyedWhileBeingRepinnedIsRepairedWhenItStartsAgain) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", 500);
  ASSERT_EQ(host_not_idle(config, state / "probe"), "");
  Guests guests(config, state);
  const std::string s = name_of("half-s"), d = name_of("half-d");
  auto r = guests.place(s,
                        guest({"cpu_policy=shared", "vcpus=4", "max_vcpus=4", kernel_args("llmorch.workload=idle")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  DaemonProcess daemon(config, state, kOwnVms);
  ASSERT_TRUE(daemon.wait_for_tick("", 20s)) << daemon.log();
  ASSERT_EQ(vcpu_cpus(s), (std::set<int>{0, 1}));

  // A virsh shell, connected beforehand: a destroy then takes milliseconds, not a process start.
  FILE* shell = ::popen(("virsh -c " + std::string(kUri) + " >/dev/null 2>&1").c_str(), "w");
  ASSERT_NE(shell, nullptr);
  std::fputs("version\n", shell);
  std::fflush(shell);
  const std::string first_pin = "vm " + s + ": pin ";
  std::thread place([&] {
    r = guests.place(d,
                     guest({"cpu_policy=dedicated", "vcpus=1", "max_vcpus=1", kernel_args("llmorch.workload=idle")}));
  });
  const auto deadline = SteadyClock::now() + 60s;
  bool seen = false;
  while (!seen && SteadyClock::now() < deadline) {
    seen = daemon.log().find(first_pin) != std::string::npos;
    if (!seen) std::this_thread::sleep_for(1ms);
  }
  if (seen) {
    std::fputs(("destroy " + s + "\n").c_str(), shell);
    std::fflush(shell);
  }
  const auto destroyed_at = SteadyClock::now();
  place.join();
  ::pclose(shell);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(seen) << "llmorchd never re-pinned the shared VM; daemon log:\n" << daemon.log();
  ASSERT_TRUE(wait_until(10s, [&] { return virsh({"domstate", s}).out.find("shut off") != std::string::npos; }));
  const std::set<int> dedicated = vcpu_cpus(d);
  ASSERT_EQ(dedicated.size(), 1u);
  const std::size_t pins = count_lines(daemon.log(), first_pin);
  std::printf("[ measured ] the re-pin got %zu of 5 pin calls through before the destroy (%s)\n", pins,
              pins < 5 ? "half-applied" : "the destroy came after it");

  // The daemon goes on: the dedicated VM is managed, nothing is stuck, health stays ok.
  const auto later = wait_status(daemon, 10s, [&](const json& st) {
    const json* vm = find_vm(st, d);
    return vm && st.value("health", "") == "ok" && (*vm)["cpus"] == json::array({*dedicated.begin()});
  });
  ASSERT_TRUE(later) << daemon.status().value_or(json()).dump(1) << "\ndaemon log:\n" << daemon.log();
  EXPECT_EQ(daemon.log().find("cannot plan"), std::string::npos) << daemon.log();

  // Started again from its (maybe half-written) config: repaired off the dedicated CPU.
  ASSERT_EQ(virsh({"start", s}).exit_code, 0);
  const auto started = SteadyClock::now();
  const bool repaired = wait_until(15s, [&] {
    return disjoint(vcpu_cpus(s), dedicated) && disjoint(emulator_cpus(s), dedicated) && !emulator_cpus(s).empty();
  });
  const double took = seconds_since(started);
  ASSERT_TRUE(repaired) << "shared VM on " << text(vcpu_cpus(s)) << " (emulator " << text(emulator_cpus(s))
                        << ") after its restart, dedicated VM on " << text(dedicated) << "; daemon log:\n"
                        << daemon.log();
  std::printf("[ measured ] restarted shared VM on its pool %.2f s after the start (%.2f s after the destroy)\n", took,
              seconds_since(destroyed_at));
  const auto healthy = wait_status(daemon, 10s, [](const json& st) { return st.value("health", "") == "ok"; });
  EXPECT_TRUE(healthy) << daemon.status().value_or(json()).dump(1);
  EXPECT_TRUE(daemon.running());
}

// --- A: two VMs claiming one CPU --------------------------------------------------------------------
// What a re-pin applied halfway leaves (one VM's metadata written, the other's not), written by hand
// with `virsh metadata`: b's metadata claims a's CPU. llmorchd repairs b from libvirt's live pins
// (a's vCPU is pinned to that CPU, b's is not), records b's real CPU again, reports the repair, and a
// is not touched.
TEST(Isolation, ACpuClaimedTwiceIsRepairedFromTheLivePins) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "", 500);
  ASSERT_EQ(host_not_idle(config, state / "probe"), "");
  Guests guests(config, state);
  const std::string a = name_of("claim-a"), b = name_of("claim-b");
  for (const auto& n : {a, b}) {
    auto r = guests.place(
        n, guest({"cpu_policy=dedicated", "vcpus=1", "max_vcpus=1", kernel_args("llmorch.workload=idle")}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::set<int> a_cpus = vcpu_cpus(a), b_cpus = vcpu_cpus(b);
  ASSERT_EQ(a_cpus.size(), 1u);
  ASSERT_EQ(b_cpus.size(), 1u);
  ASSERT_TRUE(disjoint(a_cpus, b_cpus));
  DaemonProcess daemon(config, state, kOwnVms);
  const auto first = daemon.wait_for_tick("", 20s);
  ASSERT_TRUE(first) << daemon.log();

  const char* ns = "https://llmorch.dev/xmlns/domain/1";
  const std::string before = virsh({"metadata", b, ns}).out;
  const std::string claim = " cpus=\"" + std::to_string(*b_cpus.begin()) + "\"";
  ASSERT_NE(before.find(claim), std::string::npos) << before;
  const std::string bad = std::regex_replace(before, std::regex(" cpus=\"[0-9]+\""),
                                             " cpus=\"" + std::to_string(*a_cpus.begin()) + "\"");
  const auto written = SteadyClock::now();
  auto r = virsh({"metadata", b, ns, "--key", "llmorch", "--set", bad, "--live", "--config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const bool repaired = wait_until(10s, [&] {
    return virsh({"metadata", b, ns}).out.find(claim) != std::string::npos;
  });
  const double took = seconds_since(written);
  ASSERT_TRUE(repaired) << "b's metadata still claims a's CPU: " << virsh({"metadata", b, ns}).out << "\ndaemon log:\n"
                        << daemon.log();
  std::printf("[ measured ] conflicting claim repaired %.2f s after it was written\n", took);
  const std::string log = daemon.log();
  EXPECT_EQ(count_lines(log, "vm " + b + ": repaired: dedicated CPU " + std::to_string(*a_cpus.begin()) +
                                 " is also claimed by '" + a + "'"),
            1u)
      << log;
  EXPECT_EQ(log.find("cannot plan"), std::string::npos) << log;
  EXPECT_EQ(count_lines(log, "vm " + a + ": record placement"), 0u) << "a was not touched:\n" << log;
  EXPECT_EQ(vcpu_cpus(a), a_cpus);
  EXPECT_EQ(vcpu_cpus(b), b_cpus);
  const auto healthy = wait_status(daemon, 5s, [](const json& st) { return st.value("health", "") == "ok"; });
  EXPECT_TRUE(healthy) << daemon.status().value_or(json()).dump(1);
}

// --- B: a guest flipping its priority at 10 Hz beside an honest one ---------------------------------
// Both share CPU 1 (shared_cpus = 1). The flapper's reports are valid and under the rate limit. Over
// 20 s its neighbour's cpu_shares are rewritten at most a handful of times (unguarded: ~8 times a
// second), it is flagged flapping, and the honest guest's own priority change (1 -> 4, 35 s after its
// agent starts) still applies on its report, before any other libvirt work (daemon.h "Reports
// first"). The issue's figure is 100 ms p99 (measured: 57 ms with the machine at load 8); the bound
// here is 250 ms because two TCG guests on two cores make single samples noisy (104 ms seen in CI
// before reports went first), and a report applied on the next 1 s tick would still fail it.
TEST(Churn, AFlappingGuestIsHeldAndItsNeighbourLeftAlone) {
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = host_config(dir, "1", 1000);
  Guests guests(config, state);
  const std::string honest = name_of("churn-honest"), flip = name_of("churn-flip");
  auto r = guests.place(honest,
                        guest({kernel_args("llmorch.workload=idle llmorch.priority=1 llmorch.priority_at=35:4")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = guests.place(flip, guest({kernel_args("llmorch.workload=idle llmorch.agent=flip")}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  DaemonProcess daemon(config, state, kOwnVms);

  const auto both = wait_status(daemon, 40s, [&](const json& st) {
    const json* h = find_vm(st, honest);
    const json* f = find_vm(st, flip);
    return h && f && h->value("priority_source", "") == "agent" && f->value("report_fresh", false);
  });
  ASSERT_TRUE(both) << "agents never reported (is the guest image built with the flip mode? " << serial_log(flip)
                    << ")\ndaemon log:\n"
                    << daemon.log();
  const std::string rewrite = "vm " + honest + ": cpu_shares";
  const std::size_t before = count_lines(daemon.log(), rewrite);
  const std::uint64_t ok_before = (*find_vm(*both, flip))["agent"].value("ok", 0u);
  std::this_thread::sleep_for(20s);
  const std::string log = daemon.log();
  const std::size_t rewrites = count_lines(log, rewrite) - before;
  const auto after = daemon.status();
  ASSERT_TRUE(after);
  const json* f = find_vm(*after, flip);
  ASSERT_NE(f, nullptr);
  const std::uint64_t frames = (*f)["agent"].value("ok", 0u) - ok_before;
  std::printf("[ measured ] flapper sent %llu valid frames in 20 s; neighbour's cpu_shares rewritten %zu times\n",
              static_cast<unsigned long long>(frames), rewrites);
  EXPECT_GE(frames, 100u) << "the flapper did not flip at ~10 Hz; console:\n" << serial_log(flip);
  EXPECT_FALSE((*f)["hostile"].get<bool>()) << "valid frames under the rate limit are not hostile";
  EXPECT_LE(rewrites, 4u) << log;
  EXPECT_TRUE((*f)["flapping"].get<bool>()) << f->dump(1);
  EXPECT_TRUE(has_problem(*after, flip, "flapping")) << (*after)["problems"].dump(1);
  EXPECT_EQ(after->value("health", ""), "degraded");
  EXPECT_EQ(count_lines(log, "vm " + flip + ": flapping: "), 1u) << log;

  // The honest guest's own change (35 s after its agent started) applies at once.
  const auto changed = wait_status(daemon, 30s, [&](const json& st) {
    const json* h = find_vm(st, honest);
    return h && h->value("effective_priority", 0.0) == 4.0;
  });
  ASSERT_TRUE(changed) << "the honest guest's priority change never applied; daemon log:\n" << daemon.log();
  const json& latency = (*changed)["daemon"]["report_to_apply_ms"];
  std::printf("[ measured ] report to apply: n %d, p50 %.1f ms, p99 %.1f ms\n", latency.value("n", 0),
              latency.value("p50", -1.0), latency.value("p99", -1.0));
  ASSERT_GE(latency.value("n", 0), 1) << latency.dump();
  EXPECT_LT(latency["p99"].get<double>(), 250.0) << "applied on a tick, not on the report? " << latency.dump();
  EXPECT_FALSE((*find_vm(*changed, honest))["flapping"].get<bool>());
}

}  // namespace
}  // namespace llmorch::e2e
