// What the live subcommands (place, list, status, host, explain, remove) share: the common options
// (-c/--connect, --config, --state-dir, --help), connecting to libvirt, errors to exit codes, reading
// llmorchd's status file, and small table/number formatting.
#pragma once

#include <boost/program_options.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.h"
#include "llmorch/orch/config.h"
#include "llmorch/orch/host_state.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/status_file.h"
#include "llmorch/policy/cpu_plan.h"

namespace llmorch::cli {

// A bad command line or input; exit kExitUsage. The message names what is wrong.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The environment failed in a way that is not a HypervisorError (e.g. a lock file); exit kExitFailure.
struct EnvironmentError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CommonOptions {
  std::optional<std::string> connect;      // -c/--connect URI
  std::string config;                      // --config FILE; empty: /etc/llmorch/llmorch.conf if present
  std::string state_dir = "/run/llmorch";  // llmorchd's --state-dir: status.json, and place.lock
  bool help = false;
};

// Adds -h/--help, -c/--connect URI, --config FILE and --state-dir DIR, stored into `common`.
void add_common_options(boost::program_options::options_description& options, CommonOptions& common);

// Parses `args` (positional arguments, if any, bound to `positional`); notifies the bound variables.
// Throws UsageError with Boost's message.
boost::program_options::variables_map parse_args(
    const std::vector<std::string>& args, const boost::program_options::options_description& options,
    const boost::program_options::positional_options_description& positional = {});

// The command line of a command on one VM: the common options and NAME, its one positional argument.
struct VmArgs {
  CommonOptions common;
  std::string name;  // empty when not given
};
// Parses `args` with the common options, `extra` (bound to the caller's variables) and NAME. Throws
// UsageError.
VmArgs parse_vm_args(const std::vector<std::string>& args,
                     const boost::program_options::options_description& extra = {});

// The host config named by --config (or the default file, or built-in defaults). Throws ConfigError.
orch::HostConfig load_host_config(const CommonOptions& common);

// Opens the hypervisor at -c URI / $LIBVIRT_DEFAULT_URI / qemu:///system, through io.hypervisors when
// set, else libvirt. Throws HypervisorError.
std::shared_ptr<orch::Hypervisor> connect(const CommonOptions& common, const Io& io);

// How long a CLI command waits for one libvirt call that reads the host. A VM whose QEMU stopped
// answering costs a warning (its statistics are skipped), never a hang while `place` holds its lock.
inline constexpr std::chrono::seconds kCliCallTimeout{5};

// orch::read_host (place_vm.h) with kCliCallTimeout.
orch::HostSnapshot read_host(const std::shared_ptr<orch::Hypervisor>& hypervisor, std::ostream& warn);

// Runs `body` and turns the exceptions every command may meet into a message on io.err and an exit
// code: UsageError, ConfigError, TemplateError -> kExitUsage (with a pointer to --help for UsageError);
// HypervisorError, CapabilitiesError, EnvironmentError -> kExitFailure.
int guarded(const std::string& command, Io io, const std::function<int()>& body);

// llmorchd's status file (DIR/status.json), read (orch::status_from_json) without trusting it to be
// there or well-formed.
struct DaemonView {
  bool running = false;
  std::string why_not;                     // when not running: "cannot read ...", "process 123 is gone", ...
  std::optional<orch::StatusFile> status;  // the file; absent when there is none or it is unreadable
  double age_s = -1;                       // seconds since last_tick_at; < 0 when unknown
  const orch::StatusFileVm* vm(const std::string& name) const;  // its entry in status->vms, or null
};
// now_unix_s: the current time (seconds since the epoch), a parameter so tests can fix it.
DaemonView read_daemon_view(const std::string& state_dir, double now_unix_s);
double now_unix_seconds();
// "2026-11-25T10:00:00.123Z" -> seconds since the epoch; nullopt when malformed.
std::optional<double> parse_iso8601(const std::string& text);

// The plan llmorchd would make without agent reports (orch::offline_plan: its own make_plan), on the
// host's topology read from `hypervisor`. What status/explain show when the daemon is down.
orch::Plan offline_plan(orch::Hypervisor& hypervisor, const std::vector<orch::ManagedDomain>& domains,
                        const orch::HostConfig& config);
// Its entry for `name`, or null.
const orch::VmPlan* find_vm(const orch::Plan& plan, const std::string& name);

// Aligned text columns: the first row is the header.
class Table {
 public:
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

std::string cpu_list(const std::vector<policy::CpuId>& cpus);  // "0-3,8" (sorted, compact); "-" if empty
std::string fixed(double value, int decimals);                 // "0.3571"

}  // namespace llmorch::cli
