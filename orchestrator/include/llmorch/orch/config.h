// Host configuration: one INI file (/etc/llmorch/llmorch.conf unless --config names another).
// Command-line options override the file; a missing default file means built-in defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmorch/policy/balloon.h"
#include "llmorch/policy/types.h"

namespace llmorch::orch {

inline constexpr const char* kDefaultConfigPath = "/etc/llmorch/llmorch.conf";

struct HostConfig {
  std::set<policy::CpuId> reserved_cpus;  // host CPUs never given to VMs
  std::set<policy::CpuId> shared_cpus;    // pool `shared` VMs float over; empty: unreserved CPUs of the node
  double alpha = 0.8;                     // weighting: priority vs equal split
  int interval_ms = 1000;                 // daemon tick
  // How long llmorchd waits for one libvirt call before it goes on without it (a VM whose call did not
  // return is marked unresponsive and skipped until it answers).
  int libvirt_timeout_ms = 500;
  int priority_dwell_ms = 3000;                        // a VM's priority changes the plan at most once per this; 0: off
  std::uint64_t memory_reserve_mib = 512;              // per node, memory VMs may not take
  std::string domain_type = "kvm";                     // default for templates that do not set one
  std::optional<std::uint64_t> host_memory_limit_mib;  // Σ VM memory the balloon keeps to; none: no limit
  policy::BalloonConfig balloon;                       // balloon_* keys
  // Prometheus metrics (metrics.h): "ADDR:PORT" to serve GET /metrics on; empty: off. Read at start.
  std::string metrics_listen;
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses a CPU list such as "0-3,8,10-11". Throws std::invalid_argument naming the bad part.
std::set<policy::CpuId> parse_cpu_list(const std::string& text);
// Formats a CPU set as a compact list ("0-3,8").
std::string format_cpu_list(const std::set<policy::CpuId>& cpus);

// path empty: the default path, which may be missing (then built-in defaults). A named file that is
// missing is an error. `overrides` ("KEY=VALUE", split at the first '=') are applied after the file,
// the same way as a template's --set: this is how command-line options override the file.
// Throws ConfigError naming the file, the key, the value and what is allowed.
HostConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The keys a host config file may set, in documentation order.
std::vector<std::string> host_config_keys();

}  // namespace llmorch::orch
