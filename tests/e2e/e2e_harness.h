// End-to-end test harness: real libvirtd (qemu:///system), real test guests (tools/build-test-guest),
// the real `llmorch` and `llmorchd` binaries. Domains are named kE2ePrefix + SUITE- + ...; each suite's
// SuiteDomains environment removes what a crashed run of that suite left, and only that, and each
// suite's llmorchd runs with --domain-prefix for its suite, so suites do not disturb each other.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace llmorch::e2e {

inline constexpr const char* kUri = "qemu:///system";
inline constexpr const char* kE2ePrefix = "llmorch-e2e-";
// ASan quarantine for llmorchd in the sanitized suite (see daemon_environment in e2e_harness.cc).
inline constexpr int kDaemonAsanQuarantineMib = 2;

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  bool timed_out = false;
  std::string out, err;
};

// The first sanitizer report (ASan, LSan, UBSan, TSan) in a program's output, or empty.
std::string sanitizer_report(const std::string& output);

// Runs argv[0] (looked up in PATH) with the arguments, without a shell; kills it after timeout.
// A sanitizer report on its stderr fails the current test (the sanitized suite runs these binaries).
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Empty when `virsh -c qemu:///system version` answers; else what is wrong and how to fix it.
std::string libvirt_problem();
// The test guest's directory: $LLMORCH_GUEST_DIR when set and not empty, else
// /var/lib/libvirt/images/llmorch (tools/build-test-guest reads the same variable, with the same default).
// Guests::place boots DIR/vmlinuz and DIR/initrd.gz from it, whatever tiny-test.conf says, so a developer
// can test a changed agent or init against an image of their own without replacing the shared one:
//   LLMORCH_GUEST_DIR=/var/lib/libvirt/images/llmorch-mine tools/build-test-guest
//   LLMORCH_GUEST_DIR=/var/lib/libvirt/images/llmorch-mine ctest --test-dir build -L e2e
// The directory must be readable by libvirt-qemu (keep it under /var/lib/libvirt/images).
std::string guest_dir();
// `--set` overrides that boot the test guest from guest_dir(): {"kernel=DIR/vmlinuz", "initrd=DIR/initrd.gz"}.
std::vector<std::string> guest_image_overrides();
// Empty when the test guest's kernel and initrd exist in guest_dir(); else how to build them.
std::string guest_problem();

// A directory under /tmp removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct HostConfigOptions {
  std::string shared_cpus;
  std::string reserved_cpus;
  int memory_reserve_mib = 64;
  int interval_ms = 1000;
  double alpha = 0.8;
};
// Writes DIR/llmorch.conf (domain_type = qemu) and returns its path.
std::filesystem::path write_host_config(const std::filesystem::path& dir, const HostConfigOptions& o);

// "llmorch-e2e-" + stem + "-" + pid: unique per process, recognisable by the suite teardown.
std::string domain_name(const std::string& stem);

// Places VMs with `llmorch place --template templates/tiny-test.conf`, booting the image in guest_dir(),
// and destroys + undefines every domain it placed when it goes out of scope.
class Guests {
 public:
  Guests(std::filesystem::path host_config, std::filesystem::path state_dir);
  ~Guests();
  Guests(const Guests&) = delete;
  Guests& operator=(const Guests&) = delete;

  // `overrides` are template KEY=VALUE pairs passed as --set.
  CommandResult place(const std::string& name, const std::vector<std::string>& overrides);
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::filesystem::path config_, state_dir_;
  std::vector<std::string> names_;
};

// Destroys and undefines the domain (errors ignored: it may be gone already).
void remove_domain(const std::string& name);
// Removes every domain whose name starts with prefix; returns their names.
std::vector<std::string> remove_leftover_domains(const std::string& prefix);

// A suite's global environment: at start it removes what an earlier, crashed run left under the suite's
// domain prefix and fails (not skips) when libvirtd or the test guest is missing; at the end it fails
// when a test left a domain behind. Only that prefix: other suites may be running their own guests.
class SuiteDomains : public ::testing::Environment {
 public:
  explicit SuiteDomains(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override;
  void TearDown() override;

 private:
  std::string prefix_;
};

// "kernel_args=..." for `llmorch place --set`: the test guest's console and PSI, then `words`
// (llmorch.workload=..., llmorch.priority=..., llmorch.agent=...: see tools/guest/init).
std::string kernel_args(const std::string& words);

// The guest's serial console log (/var/log/libvirt/qemu/NAME-serial.log); empty when absent.
std::string serial_log(const std::string& name);
// Waits until the serial log contains marker; false on timeout.
bool wait_for_console(const std::string& name, const std::string& marker, std::chrono::seconds timeout);

// Total CPU time of the domain (virsh domstats --cpu-total, cpu.time) in ns.
std::optional<std::uint64_t> cpu_time_ns(const std::string& name);
// The domain's live cpu_shares (virsh schedinfo).
std::optional<std::uint64_t> cpu_shares(const std::string& name);

// llmorchd as a child process, logging to STATE_DIR/llmorchd.log; stopped (SIGTERM, then SIGKILL) on
// destruction. It manages only kE2ePrefix domains (--domain-prefix), so it leaves other tests' alone.
class DaemonProcess {
 public:
  DaemonProcess(const std::filesystem::path& host_config, const std::filesystem::path& state_dir,
                const std::vector<std::string>& extra_args = {});
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Stops it; returns its exit status (-1: killed). A sanitizer report in its log fails the current test.
  int stop();
  // VmRSS from /proc/PID/status, in KiB.
  std::optional<long> rss_kib() const;
  // STATE_DIR/status.json, or nullopt while it does not exist or does not parse.
  std::optional<nlohmann::json> status() const;
  // Waits for a status.json whose last_tick_at differs from `after` (empty: any).
  std::optional<nlohmann::json> wait_for_tick(const std::string& after, std::chrono::seconds timeout) const;
  std::string log() const;

 private:
  std::filesystem::path state_dir_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
  bool log_checked_ = false;
};

// The entry for VM name in a status document's "vms" array, or nullptr.
const nlohmann::json* find_vm(const nlohmann::json& status, const std::string& name);

// Prints "FIGURE name=value", the line the e2e tests report their measurements with.
void figure(const std::string& name, double value);
// Wall-clock seconds since the epoch (comparable with status.json times through parse_iso8601).
double now_s();

// Seconds since the epoch of an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SS(.fff)Z"; nullopt when malformed.
std::optional<double> parse_iso8601(const std::string& text);

}  // namespace llmorch::e2e
