// llmorchd (the real binary) against a real libvirtd on qemu:///system: two small TCG domains of type
// 'qemu' sharing host CPU 0, template priorities 1 and 3. Needs libvirtd (tools/libvirtd-up; tools/test
// starts it). Domains are named llmorch-it-daemon-<what>-<pid> and removed by a guard even on failure.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "llmorch/orch/status_file.h"

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;
constexpr const char* kSocket = "/var/run/libvirt/libvirt-sock";
constexpr const char* kUri = "qemu:///system";
const std::string kGuestDir = "/var/lib/libvirt/images/llmorch";

DomainSpec shared_spec(const std::string& name, double priority) {
  DomainSpec s;
  s.name = name;
  s.template_path = "tests/integration/daemon.conf";
  s.domain_type = "qemu";
  s.tmpl.vcpus = 1;
  s.tmpl.max_vcpus = 1;
  s.tmpl.memory_mib = 64;
  s.tmpl.max_memory_mib = 64;
  s.tmpl.cpu_policy = policy::CpuPolicy::Shared;
  s.tmpl.priority = priority;
  s.tmpl.priority_min = 1;
  s.tmpl.priority_max = 9;
  s.placement = {.name = name,
                 .nodes = {0},
                 .cpus = {0},
                 .memory_mib_per_node = {{0, 64}},
                 .cells = {{0, {0}, 64}},
                 .cpu_policy = policy::CpuPolicy::Shared,
                 .hugepage_kib = 0,
                 .vcpus = 1};
  if (fs::exists(kGuestDir + "/vmlinuz") && fs::exists(kGuestDir + "/initrd.gz")) {
    s.tmpl.kernel = kGuestDir + "/vmlinuz";
    s.tmpl.initrd = kGuestDir + "/initrd.gz";
    s.tmpl.kernel_args = "console=ttyS0 quiet";
  }
  return s;
}

// Runs llmorchd with args; returns its exit status and adds its CPU time to *cpu_s.
int run_daemon(const std::vector<std::string>& args, double* cpu_s = nullptr, std::chrono::milliseconds run_for = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv{const_cast<char*>(LLMORCHD_PATH)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(LLMORCHD_PATH, argv.data());
    _exit(127);
  }
  if (run_for.count() > 0) {
    std::this_thread::sleep_for(run_for);
    kill(pid, SIGTERM);
  }
  int status = 0;
  rusage ru{};
  wait4(pid, &status, 0, &ru);
  if (cpu_s) *cpu_s = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Starts llmorchd with args and extra environment (a value "$PID" becomes the child's pid, as systemd
// sets WATCHDOG_PID); its stdout and stderr go to the file `output`.
pid_t spawn_daemon(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& env,
                   const std::string& output) {
  pid_t pid = fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) setenv(k.c_str(), v == "$PID" ? std::to_string(getpid()).c_str() : v.c_str(), 1);
    const int fd = open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv{const_cast<char*>(LLMORCHD_PATH)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(LLMORCHD_PATH, argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// What systemd listens on for a Type=notify service: an AF_UNIX datagram socket named by $NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot bind " + path_);
  }
  ~NotifySocket() {
    close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // Messages received within `within`, stopping early after one that starts with `until` (if given).
  std::vector<std::string> receive(std::chrono::milliseconds within, const std::string& until = "") {
    std::vector<std::string> got;
    const auto end = std::chrono::steady_clock::now() + within;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      got.emplace_back(buf, static_cast<std::size_t>(n));
      if (!until.empty() && got.back().rfind(until, 0) == 0) break;
    }
    return got;
  }

 private:
  std::string path_;
  int fd_ = -1;
};

class DaemonIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kSocket)) << kSocket << " is missing: libvirtd is not running. Start it with "
                                     << "tools/libvirtd-up (tools/test does this) and rerun.";
    hv = connect_libvirt(kUri);
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    prefix = "llmorch-it-daemon-" + std::to_string(getpid()) + "-";
    remove_ours();
    dir = fs::temp_directory_path() / ("llmorchd-it-" + std::to_string(getpid()) + "-" + test);
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "llmorch.conf") << "alpha = 0.8\ndomain_type = qemu\n";
    a = prefix + "a";
    b = prefix + "b";
    hv->define_and_start(render_domain_xml(shared_spec(a, 1)));
    hv->define_and_start(render_domain_xml(shared_spec(b, 3)));
  }
  void TearDown() override {
    if (hv) remove_ours();
    fs::remove_all(dir);
  }
  // Ours, and those left by dead test processes (llmorch-it-daemon-PID-*).
  void remove_ours() {
    std::vector<ManagedDomain> all;
    for (int attempt = 0; attempt < 3 && all.empty(); ++attempt) {
      try {  // listing can fail while another test process removes its domains
        all = hv->list_managed();
      } catch (const HypervisorError&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    for (const auto& d : all) {
      if (d.name.rfind("llmorch-it-daemon-", 0) != 0) continue;
      const pid_t owner = std::atoi(d.name.c_str() + std::strlen("llmorch-it-daemon-"));
      if (d.name.rfind(prefix, 0) == 0 || (owner > 0 && kill(owner, 0) != 0 && errno == ESRCH)) {
        try {
          hv->destroy_and_undefine_uuid(d.uuid);
        } catch (const HypervisorError& e) {
          ADD_FAILURE() << "cannot remove " << d.name << ": " << e.what();
        }
      }
    }
  }
  std::uint64_t shares(const std::string& name) { return hv->find_managed(name).value().cpu_shares.value_or(0); }
  std::vector<std::string> args(std::vector<std::string> extra) {
    // --domain-prefix keeps the daemon off every other test's domains on the shared libvirtd.
    std::vector<std::string> v{"-c",
                               kUri,
                               "--config",
                               (dir / "llmorch.conf").string(),
                               "--state-dir",
                               (dir / "state").string(),
                               "--domain-prefix",
                               prefix};
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  }

  std::unique_ptr<Hypervisor> hv;
  fs::path dir;
  std::string prefix, a, b;
};

TEST_F(DaemonIntegration, OnceSetsSharesByWeightAndWritesStatus) {
  double cpu_s = 0;
  ASSERT_EQ(run_daemon(args({"--once"}), &cpu_s), 0);
  std::printf("llmorchd --once (connect, one tick, exit): %.1f ms CPU\n", cpu_s * 1e3);

  const auto status = read_status_file((dir / "state").string());
  EXPECT_TRUE(status["connected"].get<bool>());
  std::vector<double> prios;
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& vm : status["vms"]) {
    prios.push_back(vm["effective_priority"].get<double>());
    by_name[vm["name"].get<std::string>()] = vm;
  }
  ASSERT_EQ(prios.size(), 2u) << status.dump(2);
  ASSERT_TRUE(by_name.count(a) && by_name.count(b)) << status.dump(2);
  EXPECT_NEAR(by_name[a]["weight"].get<double>(), 0.7105, 1e-4);
  EXPECT_NEAR(by_name[b]["weight"].get<double>(), 0.2895, 1e-4);
  EXPECT_EQ(by_name[b]["priority_source"], "template");

  // libvirt now has the shares, in the ratio of the weights.
  const double ratio = static_cast<double>(shares(a)) / static_cast<double>(shares(b));
  EXPECT_NEAR(ratio, by_name[a]["weight"].get<double>() / by_name[b]["weight"].get<double>(), 0.01);
  EXPECT_EQ(shares(a), by_name[a]["cpu_shares"].get<std::uint64_t>());
}

TEST_F(DaemonIntegration, DryRunChangesNothing) {
  const std::uint64_t before_a = shares(a), before_b = shares(b);
  ASSERT_EQ(before_a, before_b);  // both defined with the same shares
  ASSERT_EQ(run_daemon(args({"--once", "--dry-run"})), 0);
  EXPECT_EQ(shares(a), before_a);
  EXPECT_EQ(shares(b), before_b);
  EXPECT_TRUE(read_status_file((dir / "state").string())["dry_run"].get<bool>());
}

TEST_F(DaemonIntegration, LoopExitsCleanlyOnSigtermAndCostsLittleCpu) {
  double cpu_s = 0;
  const auto run_for = std::chrono::milliseconds(3000);
  ASSERT_EQ(run_daemon(args({"--interval-ms", "100"}), &cpu_s, run_for), 0);
  const double ticks = 3000.0 / 100.0;
  std::printf("llmorchd with 2 VMs, 100 ms ticks for 3 s: %.1f ms CPU in all, about %.2f ms per tick\n", cpu_s * 1e3,
              cpu_s * 1e3 / ticks);
  EXPECT_GT(shares(a), shares(b));
}

// systemd's notify protocol without systemd: a NOTIFY_SOCKET of our own, WATCHDOG_USEC 400 ms (pings
// every 200 ms), the real llmorchd against the real libvirtd: READY=1 with the first STATUS= after the
// first tick, then STATUS= per tick and WATCHDOG=1 repeatedly; SIGHUP gives RELOADING=1 then READY=1;
// SIGTERM gives STOPPING=1 and exit 0. About 3 s.
TEST_F(DaemonIntegration, SpeaksSystemdsNotifyProtocol) {
  NotifySocket sock((dir / "notify").string());
  const auto spawned = std::chrono::steady_clock::now();
  const pid_t pid = spawn_daemon(
      args({"--interval-ms", "200"}),
      {{"NOTIFY_SOCKET", sock.path()}, {"WATCHDOG_USEC", "400000"}, {"WATCHDOG_PID", "$PID"}},
      (dir / "llmorchd.log").string());
  const std::vector<std::string> m = sock.receive(std::chrono::milliseconds(10'000), "READY=1");
  ASSERT_FALSE(m.empty()) << "nothing within 10 s; llmorchd said:\n" << slurp(dir / "llmorchd.log");
  const double ready_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - spawned).count();
  // Watchdog pings and per-tick STATUS= for 1.5 s.
  const std::vector<std::string> running = sock.receive(std::chrono::milliseconds(1500));
  kill(pid, SIGHUP);
  const std::vector<std::string> reload = sock.receive(std::chrono::milliseconds(3000), "READY=1");
  kill(pid, SIGTERM);
  const std::vector<std::string> stop = sock.receive(std::chrono::milliseconds(5000), "STOPPING=1");
  ASSERT_EQ(wait_exit(pid), 0) << slurp(dir / "llmorchd.log");
  std::printf("llmorchd start to READY=1 (connect, first tick, 2 VMs): %.0f ms\n", ready_ms);

  // The first message is READY=1, after the first tick, with its summary.
  ASSERT_EQ(m.size(), 1u) << m.back();
  // (Not "0 unresponsive": on a loaded host a TCG guest's QEMU can miss libvirt_timeout_ms once.)
  EXPECT_EQ(m[0].rfind("READY=1\nSTATUS=2 VMs managed, ", 0), 0u) << m[0];
  EXPECT_NE(m[0].find(" unresponsive, 0 hostile"), std::string::npos) << m[0];
  int watchdogs = 0, statuses = 0;
  for (const std::string& s : running) {
    watchdogs += s == "WATCHDOG=1";
    statuses += s.rfind("STATUS=2 VMs managed", 0) == 0;
  }
  // About 7 pings and 7 ticks in 1.5 s on an idle host; a loaded one (ticks of real libvirt calls take
  // longer) gets fewer of each, never more pings than one per 200 ms.
  EXPECT_GE(watchdogs, 3) << "about 7 expected in 1.5 s at one per 200 ms";
  EXPECT_LE(watchdogs, 9);
  EXPECT_GE(statuses, 2) << "one per 200 ms tick";
  // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1; nothing but pings and STATUS= between.
  ASSERT_FALSE(reload.empty());
  EXPECT_EQ(reload.back(), "READY=1");
  const auto reloading = std::find_if(reload.begin(), reload.end(), [](const std::string& s) {
    return s.rfind("RELOADING=1\nMONOTONIC_USEC=", 0) == 0;
  });
  ASSERT_NE(reloading, reload.end());
  EXPECT_EQ(reloading + 2, reload.end()) << "READY=1 right after RELOADING=1";
  ASSERT_FALSE(stop.empty());
  EXPECT_EQ(stop.back(), "STOPPING=1");
  // Real QEMU accepted llmorchd's connection to each agent channel: none is reported held.
  const auto status = read_status_file((dir / "state").string());
  for (const auto& p : status["problems"]) EXPECT_NE(p["kind"], "channel_held") << status.dump(2);
}

// One llmorchd per libvirt URI: a second one with the same state directory refuses to start, exit 1,
// naming the first (pid, start time) and the lock. About 2 s.
TEST_F(DaemonIntegration, ASecondDaemonOnTheSameUriRefusesAndNamesTheFirst) {
  const pid_t first = spawn_daemon(args({"--interval-ms", "200"}), {}, (dir / "first.log").string());
  for (int i = 0; i < 200 && !fs::exists(dir / "state" / "status.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(dir / "state" / "status.json")) << slurp(dir / "first.log");
  const pid_t second = spawn_daemon(args({"--interval-ms", "200"}), {}, (dir / "second.log").string());
  const int second_rc = wait_exit(second);
  kill(first, SIGTERM);
  EXPECT_EQ(wait_exit(first), 0) << slurp(dir / "first.log");
  EXPECT_EQ(second_rc, 1);
  const std::string said = slurp(dir / "second.log");
  EXPECT_NE(
      said.find("another llmorchd already manages qemu:///system (pid " + std::to_string(first) + ", started_at "),
      std::string::npos)
      << said;
  EXPECT_NE(said.find("stop it first"), std::string::npos) << said;
  // The first kept working throughout.
  EXPECT_GT(shares(a), shares(b));
}

// A dry run applies nothing: it takes no lock, runs beside the running llmorchd on the same URI and
// state directory (exit 0, saying so), and leaves that one's status.json alone. About 2 s.
TEST_F(DaemonIntegration, ADryRunRunsBesideTheRunningDaemonAndLeavesItsStatusAlone) {
  const pid_t first = spawn_daemon(args({"--interval-ms", "200"}), {}, (dir / "first.log").string());
  for (int i = 0; i < 200 && !fs::exists(dir / "state" / "status.json"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(dir / "state" / "status.json")) << slurp(dir / "first.log");
  const pid_t dry = spawn_daemon(args({"--once", "--dry-run"}), {}, (dir / "dry.log").string());
  const int dry_rc = wait_exit(dry);
  // The first's status.json, not the dry run's (which would say dry_run true), a tick later still.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const bool status_dry = read_status_file((dir / "state").string())["dry_run"].get<bool>();
  kill(first, SIGTERM);
  EXPECT_EQ(wait_exit(first), 0) << slurp(dir / "first.log");
  EXPECT_EQ(dry_rc, 0) << slurp(dir / "dry.log");
  const std::string said = slurp(dir / "dry.log");
  EXPECT_NE(said.find("another llmorchd manages qemu:///system (pid " + std::to_string(first) + ", started_at "),
            std::string::npos)
      << said;
  EXPECT_NE(said.find("this dry run goes on beside it and writes no status.json"), std::string::npos) << said;
  EXPECT_FALSE(status_dry);
  EXPECT_EQ(slurp(dir / "first.log").find("dry run"), std::string::npos);  // the first never was one
}

TEST(DaemonIntegrationNoLibvirt, OnceFailsWithOneWhenLibvirtIsUnreachable) {
  EXPECT_EQ(run_daemon({"-c", "qemu+unix:///system?socket=/nonexistent/llmorch-sock", "--once", "--state-dir",
                        (fs::temp_directory_path() / "llmorchd-it-none").string()}),
            1);
}

TEST(DaemonIntegrationNoLibvirt, VersionExitsZeroWithoutTouchingLibvirt) {
  EXPECT_EQ(run_daemon({"--version", "-c", "qemu+unix:///system?socket=/nonexistent/llmorch-sock"}), 0);
}

}  // namespace
}  // namespace llmorch::orch
