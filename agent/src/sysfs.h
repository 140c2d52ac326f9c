// The agent's view of sysfs (root injectable for tests): its virtio-serial port and CPU hotplug.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace llmorch::agent {

inline constexpr char kDefaultPortName[] = "org.llmorch.agent.0";

// Scans SYSFS/class/virtio-ports/*/name for `port_name`; returns DEV/<vportNpM>. Without udev there is
// no /dev/virtio-ports/NAME link, so this is the way to find it.
std::optional<std::string> find_port(const std::string& sysfs_root, const std::string& dev_root,
                                     const std::string& port_name);

// Parses a kernel CPU list such as "0-3,6,8-9".
std::optional<std::vector<int>> parse_cpu_list(const std::string& text);

class CpuControl {
 public:
  explicit CpuControl(std::string sysfs_root) : dir_(std::move(sysfs_root) + "/devices/system/cpu") {}

  // CPUs present (cpuN directories), ascending.
  std::vector<int> present() const;
  // Online CPUs from SYSFS/devices/system/cpu/online; nothing if unreadable.
  std::optional<std::vector<int>> online() const;

  // Keeps the lowest `want` present CPUs online and offlines the rest, highest first. cpu0 is never
  // offlined; `want` is clamped to [1, present]. Hot-added vCPUs arrive offline, so this onlines them.
  // Returns the errors met (one sentence each); empty on success.
  std::vector<std::string> set_online(int want) const;

 private:
  std::string dir_;
};

}  // namespace llmorch::agent
