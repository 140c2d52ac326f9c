// VM templates: INI files (templates/*.conf) read with Boost.Program_options. Every key is documented
// in templates/README.md.
#pragma once

#include <cstdint>
#include <istream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "llmorch/policy/types.h"

namespace llmorch::orch {

// Priorities (template priority, priority_min, priority_max; the same in the VM's metadata) lie in
// [kMinPriority, kMaxPriority]: finite, and far enough from 0 that 1/priority is a normal number.
inline constexpr double kMinPriority = 1e-3;
inline constexpr double kMaxPriority = 1e6;

// Empty when priority_min <= priority <= priority_max, all three finite and within [kMinPriority,
// kMaxPriority]; otherwise a sentence naming the first value that breaks this (key names as in templates).
std::string priority_problem(double priority, double priority_min, double priority_max);

struct VmTemplate {
  int vcpus = 1;                           // vCPUs online at start
  int max_vcpus = 0;                       // vCPUs the domain can hot-add up to; unset in the file: = vcpus
  int vcpus_min = 1;                       // fewest online vCPUs llmorchd may leave it (shared pools)
  std::uint64_t memory_mib = 0;            // memory at start (balloon current); required
  std::uint64_t max_memory_mib = 0;        // domain maximum; what placement reserves. unset: = memory_mib
  std::uint64_t memory_floor_mib = 0;      // never balloon below this
  std::uint64_t memory_floor_max_mib = 0;  // most an agent may claim as its floor; unset: = memory_mib
  policy::CpuPolicy cpu_policy = policy::CpuPolicy::Dedicated;
  std::uint64_t hugepage_kib = 0;  // 0, 2048 or 1048576
  double priority = 1.0;           // used until the agent reports
  double priority_min = 1.0;       // an agent's reported priority is clamped into [min, max]
  double priority_max = 100.0;
  std::string domain_type;                  // "kvm" or "qemu"; empty: the host config's domain_type
  std::string kernel, initrd, kernel_args;  // direct kernel boot
  std::string disk;                         // or a disk image
};

// A template problem: names the file, the key and what is allowed.
class TemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads `path`, then applies overrides ("KEY=VALUE", split at the first '='), then validates.
// Throws TemplateError.
VmTemplate load_template(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from a stream; `name` stands for the file in error messages.
VmTemplate parse_template(std::istream& in, const std::string& name, const std::vector<std::string>& overrides = {});

// The keys a template may set, in documentation order.
std::vector<std::string> template_keys();

}  // namespace llmorch::orch
