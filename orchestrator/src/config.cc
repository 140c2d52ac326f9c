// Host configuration file (templates/llmorch.conf.example documents it; templates/README.md lists
// every key). To add a key: a field in HostConfig, one line in keys(), a line in the README.
#include <algorithm>
#include <filesystem>
#include <iterator>

#include "ini_keys.h"
#include "llmorch/orch/config.h"
#include "llmorch/orch/metrics.h"

namespace llmorch::orch {
namespace {

using Key = ini::Key<HostConfig>;

// Empty means no CPUs; parse_cpu_list's message says which part is wrong.
std::set<policy::CpuId> cpu_list(const std::string& text) {
  if (text.empty()) return {};
  return parse_cpu_list(text);
}

const std::vector<Key>& keys() {
  static const std::vector<Key> table = {
      {"reserved_cpus", "a CPU list such as 0-1,8 (or empty)",
       [](const std::string& v, HostConfig& c) { c.reserved_cpus = cpu_list(v); }},
      {"shared_cpus", "a CPU list such as 2-3 (or empty)",
       [](const std::string& v, HostConfig& c) { c.shared_cpus = cpu_list(v); }},
      {"alpha", "a number in [0, 1]", [](const std::string& v, HostConfig& c) { c.alpha = ini::number(v, 0.0, 1.0); }},
      {"interval_ms", "a whole number of milliseconds >= 50",
       [](const std::string& v, HostConfig& c) { c.interval_ms = ini::whole<int>(v, 50); }},
      {"libvirt_timeout_ms", "a whole number of milliseconds >= 10",
       [](const std::string& v, HostConfig& c) { c.libvirt_timeout_ms = ini::whole<int>(v, 10); }},
      {"priority_dwell_ms", "a whole number of milliseconds in [0, 3600000]",
       [](const std::string& v, HostConfig& c) { c.priority_dwell_ms = ini::whole<int>(v, 0, 3'600'000); }},
      {"memory_reserve_mib", "a whole number of MiB >= 0",
       [](const std::string& v, HostConfig& c) { c.memory_reserve_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"domain_type", "kvm or qemu",
       [](const std::string& v, HostConfig& c) {
         ini::choice(v, {"kvm", "qemu"});
         c.domain_type = v;
       }},
      {"host_memory_limit_mib", "a whole number of MiB >= 1, or none",
       [](const std::string& v, HostConfig& c) {
         c.host_memory_limit_mib = v == "none" ? std::nullopt : std::optional(ini::whole<std::uint64_t>(v, 1));
       }},
      {"balloon_step_mib", "a whole number of MiB >= 1",
       [](const std::string& v, HostConfig& c) { c.balloon.step_mib = ini::whole<std::uint64_t>(v, 1); }},
      {"balloon_dead_band_mib", "a whole number of MiB >= 0",
       [](const std::string& v, HostConfig& c) { c.balloon.dead_band_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"balloon_dead_band_fraction", "a number in [0, 1]",
       [](const std::string& v, HostConfig& c) { c.balloon.dead_band_fraction = ini::number(v, 0.0, 1.0); }},
      {"balloon_low_watermark_mib", "a whole number of MiB >= 0",
       [](const std::string& v, HostConfig& c) { c.balloon.low_watermark_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"balloon_high_watermark_mib", "a whole number of MiB >= 0",
       [](const std::string& v, HostConfig& c) { c.balloon.high_watermark_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"balloon_headroom_mib", "a whole number of MiB >= 0",
       [](const std::string& v, HostConfig& c) { c.balloon.headroom_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"balloon_headroom_fraction", "a number in [0, 1]",
       [](const std::string& v, HostConfig& c) { c.balloon.headroom_fraction = ini::number(v, 0.0, 1.0); }},
      {"balloon_pressure_psi", "a number of percent in [0, 100]",
       [](const std::string& v, HostConfig& c) { c.balloon.pressure_psi = ini::number(v, 0.0, 100.0); }},
      {"metrics_listen", "ADDR:PORT (such as 127.0.0.1:9477), or empty for no metrics",
       [](const std::string& v, HostConfig& c) {
         if (!v.empty()) parse_listen_address(v);  // its message says what is wrong
         c.metrics_listen = v;
       }},
  };
  return table;
}

// Checks that need several keys. `source` names the file (and overrides, if any).
void validate(const HostConfig& c, const std::string& source) {
  std::set<policy::CpuId> both;
  std::set_intersection(c.reserved_cpus.begin(), c.reserved_cpus.end(), c.shared_cpus.begin(), c.shared_cpus.end(),
                        std::inserter(both, both.end()));
  if (!both.empty()) {
    throw ConfigError(source + ": CPUs " + format_cpu_list(both) +
                      " are in both reserved_cpus and shared_cpus; a CPU is either reserved for the "
                      "host or shared by VMs, remove it from one list");
  }
  if (c.balloon.high_watermark_mib < c.balloon.low_watermark_mib) {
    throw ConfigError(source + ": balloon_high_watermark_mib (" + std::to_string(c.balloon.high_watermark_mib) +
                      ") is below balloon_low_watermark_mib (" + std::to_string(c.balloon.low_watermark_mib) +
                      "); grows must start above where reclaims stop, raise the high watermark");
  }
}

}  // namespace

std::vector<std::string> host_config_keys() {
  std::vector<std::string> names;
  for (const auto& k : keys()) names.emplace_back(k.name);
  return names;
}

HostConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  const std::string file = path.empty() ? kDefaultConfigPath : path;
  HostConfig config;
  if (!path.empty() || std::filesystem::exists(file)) {
    ini::apply<ConfigError>(ini::read_file<ConfigError>(file, keys()), keys(), config, file);
  }
  const std::string where = file + ": override";
  ini::apply<ConfigError>(ini::parse_overrides<ConfigError>(overrides, keys(), where), keys(), config, where);
  validate(config, overrides.empty() ? file : file + " (with overrides)");
  return config;
}

}  // namespace llmorch::orch
