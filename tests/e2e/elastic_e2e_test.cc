// End-to-end (issue 13): elastic vCPU counts for shared VMs on the real stack (libvirtd on
// qemu:///system, TCG test guests, the real llmorch and llmorchd). Guests are named
// llmorch-e2e-elastic-*; llmorchd manages only those (--domain-prefix). The pool is the 2-CPU build
// host's CPUs 0 and 1 (shared_cpus = 0-1, nothing reserved).
//
// One busy shared VM (vcpus 1, max_vcpus 2, two busy loops) alone goes to 2 online vCPUs (hot-add,
// then its agent onlines the vCPU); a second busy VM of equal priority arrives and both settle at 1
// (the first one's agent offlines a vCPU); the second goes idle (tools/guest/init's busy:N:S workload)
// and the first returns to 2. The count is read from inside the guest (the agent's ncpu_online in
// status.json) and from libvirt (vcpucount --live: vCPUs present, which stays 2 once hot-added, since
// going down is an offline in the guest, never an ACPI unplug), and the offlined vCPU's own CPU time
// (domstats vcpu.1.time stands still while it is offline, and runs again once it is back). Figures: the
// first VM's CPU time per wall second with 1 and with 2 vCPUs online, and their ratio (checked only
// when the host had a whole CPU to spare for the 1-vCPU guest).
#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "e2e_harness.h"

namespace llmorch::e2e {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kElasticPrefix = "llmorch-e2e-elastic-";
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new SuiteDomains(kElasticPrefix));

double seconds_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// vCPUs present in the running domain (virsh vcpucount --live --active).
std::optional<int> libvirt_vcpus(const std::string& name) {
  const CommandResult r = run_command({"virsh", "-c", kUri, "vcpucount", name, "--live", "--active"}, 20s);
  if (r.exit_code != 0) return std::nullopt;
  try {
    return std::stoi(r.out);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The guest's online vCPUs as its agent last reported them (status.json), while the report is fresh.
std::optional<int> agent_online(const json& status, const std::string& name) {
  const json* vm = find_vm(status, name);
  if (!vm || !vm->value("report_fresh", false) || !vm->contains("report") || !(*vm)["report"].is_object())
    return std::nullopt;
  return (*vm)["report"].value("ncpu_online", -1);
}

// Polls status.json until every VM's agent reports the wanted count; the document, or nullopt.
std::optional<json> wait_online(DaemonProcess& d, const std::vector<std::pair<std::string, int>>& wanted,
                                std::chrono::seconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline && d.running()) {
    if (auto s = d.status()) {
      bool all = true;
      for (const auto& [vm, n] : wanted) all = all && agent_online(*s, vm) == n;
      if (all) return s;
    }
    std::this_thread::sleep_for(200ms);
  }
  return std::nullopt;
}

// The domain's CPU time per wall second over `how_long` (libvirt cpu.time).
std::optional<double> cpus_used(const std::string& name, std::chrono::seconds how_long) {
  const auto c0 = cpu_time_ns(name);
  const auto t0 = SteadyClock::now();
  std::this_thread::sleep_for(how_long);
  const auto c1 = cpu_time_ns(name);
  if (!c0 || !c1) return std::nullopt;
  return static_cast<double>(*c1 - *c0) / 1e9 / seconds_since(t0);
}

// CPU seconds vCPU `vcpu` of the domain ran over `how_long` (virsh domstats --vcpu: vcpu.N.time, ns).
std::optional<double> vcpu_seconds(const std::string& name, int vcpu, std::chrono::seconds how_long) {
  const auto read = [&]() -> std::optional<double> {
    const CommandResult r = run_command({"virsh", "-c", kUri, "domstats", "--vcpu", name}, 20s);
    const std::string key = "vcpu." + std::to_string(vcpu) + ".time=";
    const auto at = r.out.find(key);
    if (r.exit_code != 0 || at == std::string::npos) return std::nullopt;
    return std::stod(r.out.substr(at + key.size())) / 1e9;
  };
  const auto t0 = read();
  std::this_thread::sleep_for(how_long);
  const auto t1 = read();
  if (!t0 || !t1) return std::nullopt;
  return *t1 - *t0;
}

std::string problems_of(const json& status) { return status.value("problems", json::array()).dump(); }

TEST(ElasticE2e, ABusySharedVmFollowsItsPartOfThePool) {
  const auto started = SteadyClock::now();
  TempDir dir;
  const fs::path state = dir.path() / "state";
  const fs::path config = write_host_config(dir.path(),
                                            {.shared_cpus = "0-1", .reserved_cpus = "", .interval_ms = 500});
  Guests guests(config, state);
  const std::string a = domain_name("elastic-a"), b = domain_name("elastic-b");
  auto r = guests.place(a, {"cpu_policy=shared", "vcpus=1", "max_vcpus=2", kernel_args("llmorch.workload=busy:2")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(wait_for_console(a, "llmorch-guest: workload busy:2 started", 60s)) << serial_log(a);
  ASSERT_EQ(libvirt_vcpus(a), 1);

  // 1 vCPU online, before llmorchd runs: what the guest gets from one vCPU.
  const auto one = cpus_used(a, 3s);
  ASSERT_TRUE(one);

  DaemonProcess daemon(config, state, {"--domain-prefix", kElasticPrefix});
  const auto grow_from = SteadyClock::now();
  const auto grown = wait_online(daemon, {{a, 2}}, 30s);
  ASSERT_TRUE(grown) << daemon.status().value_or(json()).dump(1) << "\n" << daemon.log();
  figure("elastic_grow_s", seconds_since(grow_from));
  EXPECT_EQ(libvirt_vcpus(a), 2) << "hot-added in libvirt";
  EXPECT_NE(daemon.log().find("vCPUs 1 -> 2: pool of 2 CPUs, weight 1.000, demand"), std::string::npos) << daemon.log();
  const json* avm = find_vm(*grown, a);
  ASSERT_NE(avm, nullptr);
  EXPECT_EQ(avm->value("vcpus_online", 0), 2) << avm->dump(1);
  const auto two = cpus_used(a, 3s);
  ASSERT_TRUE(two);
  figure("elastic_cpus_used_1_vcpu", *one);
  figure("elastic_cpus_used_2_vcpus", *two);
  figure("elastic_cpu_ratio_2_to_1", *two / *one);
  // Under TCG two busy vCPUs on two host CPUs do run in parallel, but only when the host has the CPU
  // to give: on a loaded build host one vCPU already gets less than a CPU and the ratio says nothing.
  if (*one > 0.8) {
    EXPECT_GT(*two / *one, 1.3) << "1 vCPU: " << *one << " CPUs used, 2 vCPUs: " << *two;
  } else {
    std::printf("[ note ] host busy (1 vCPU got %.2f CPUs): the 2-to-1 CPU time ratio is not checked\n", *one);
  }

  // A second busy VM of equal priority (busy for 25 s, then idle): both settle at 1.
  r = guests.place(b, {"cpu_policy=shared", "vcpus=1", "max_vcpus=2", kernel_args("llmorch.workload=busy:2:25")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto b_placed = SteadyClock::now();
  const auto split = wait_online(daemon, {{a, 1}, {b, 1}}, 25s);
  ASSERT_TRUE(split) << daemon.status().value_or(json()).dump(1) << "\n" << daemon.log();
  figure("elastic_split_s", seconds_since(b_placed));
  ASSERT_LT(seconds_since(b_placed), 25.0) << "b's load ended before the split was seen";
  EXPECT_EQ(libvirt_vcpus(a), 2) << "a's second vCPU stays present, offlined in the guest";
  EXPECT_EQ(libvirt_vcpus(b), 1);
  EXPECT_EQ(find_vm(*split, a)->value("vcpus_online", 0), 1);
  EXPECT_EQ(find_vm(*split, b)->value("vcpus_online", 0), 1);
  EXPECT_EQ(split->value("health", ""), "ok") << problems_of(*split);
  // From libvirt, whatever the host's load: a's offlined vCPU 1 no longer runs.
  const auto offline_time = vcpu_seconds(a, 1, 2s);
  ASSERT_TRUE(offline_time);
  figure("elastic_offline_vcpu_cpu_s", *offline_time);
  EXPECT_LT(*offline_time, 0.05) << "a's vCPU 1 still runs while its agent reports 1 online";

  // b goes idle: a returns to 2, b keeps its floor of 1.
  ASSERT_TRUE(wait_for_console(b, "llmorch-guest: workload busy:2:25 stopped", 40s)) << serial_log(b);
  const auto idle_at = SteadyClock::now();
  const auto back = wait_online(daemon, {{a, 2}, {b, 1}}, 20s);
  ASSERT_TRUE(back) << daemon.status().value_or(json()).dump(1) << "\n" << daemon.log();
  figure("elastic_regrow_s", seconds_since(idle_at));
  EXPECT_EQ(libvirt_vcpus(a), 2);
  EXPECT_EQ(back->value("health", ""), "ok") << problems_of(*back);
  const auto online_time = vcpu_seconds(a, 1, 2s);
  ASSERT_TRUE(online_time);
  figure("elastic_online_vcpu_cpu_s", *online_time);
  EXPECT_GT(*online_time, 0.1) << "a's vCPU 1 does not run although its agent reports 2 online";

  // `llmorch explain` shows the reason for the count.
  const CommandResult explain = run_command(
      {LLMORCH_CLI, "explain", "--connect", kUri, "--config", config.string(), "--state-dir", state.string(), a}, 30s);
  EXPECT_EQ(explain.exit_code, 0) << explain.err;
  EXPECT_NE(explain.out.find("vCPUs 2: pool of 2 CPUs"), std::string::npos) << explain.out;
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
  figure("elastic_test_s", seconds_since(started));
}

}  // namespace
}  // namespace llmorch::e2e
