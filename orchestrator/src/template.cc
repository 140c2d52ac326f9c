// VM templates (templates/*.conf; templates/README.md documents every key). To add a key: a field
// in VmTemplate, one line in keys(), a check in validate() if it interacts with others, a README line.
#include <charconv>
#include <cmath>
#include <limits>

#include "ini_keys.h"
#include "llmorch/orch/template.h"

namespace llmorch::orch {
namespace {

using Key = ini::Key<VmTemplate>;

constexpr int kMaxVcpus = 4096;
constexpr std::uint64_t kMinMemoryMib = 64;  // below this a Linux guest does not boot

double priority_value(const std::string& text) { return ini::number(text, kMinPriority, kMaxPriority); }

std::uint64_t hugepage_kib(const std::string& text) {
  static constexpr std::uint64_t sizes[] = {0, 2048, 1048576};
  return sizes[ini::choice(text, {"none", "2M", "1G"})];
}

const std::vector<Key>& keys() {
  using T = VmTemplate;
  using S = std::string;
  static const std::vector<Key> table = {
      {"vcpus", "a whole number in [1, 4096]", [](const S& v, T& t) { t.vcpus = ini::whole(v, 1, kMaxVcpus); }},
      {"max_vcpus", "a whole number in [1, 4096]", [](const S& v, T& t) { t.max_vcpus = ini::whole(v, 1, kMaxVcpus); }},
      {"vcpus_min", "a whole number in [1, 4096]", [](const S& v, T& t) { t.vcpus_min = ini::whole(v, 1, kMaxVcpus); }},
      {"memory_mib", "a whole number of MiB >= 64",
       [](const S& v, T& t) { t.memory_mib = ini::whole(v, kMinMemoryMib); }},
      {"max_memory_mib", "a whole number of MiB >= 64",
       [](const S& v, T& t) { t.max_memory_mib = ini::whole(v, kMinMemoryMib); }},
      {"memory_floor_mib", "a whole number of MiB >= 0",
       [](const S& v, T& t) { t.memory_floor_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"memory_floor_max_mib", "a whole number of MiB >= 0",
       [](const S& v, T& t) { t.memory_floor_max_mib = ini::whole<std::uint64_t>(v, 0); }},
      {"cpu_policy", "dedicated or shared",
       [](const S& v, T& t) {
         const auto policy = policy::cpu_policy_from_string(v);
         if (!policy) ini::reject();
         t.cpu_policy = *policy;
       }},
      {"hugepages", "none, 2M or 1G", [](const S& v, T& t) { t.hugepage_kib = hugepage_kib(v); }},
      {"priority", "a number in [0.001, 1000000]", [](const S& v, T& t) { t.priority = priority_value(v); }},
      {"priority_min", "a number in [0.001, 1000000]", [](const S& v, T& t) { t.priority_min = priority_value(v); }},
      {"priority_max", "a number in [0.001, 1000000]", [](const S& v, T& t) { t.priority_max = priority_value(v); }},
      {"domain_type", "kvm or qemu (or empty: the host config's domain_type)",
       [](const S& v, T& t) {
         if (!v.empty()) ini::choice(v, {"kvm", "qemu"});
         t.domain_type = v;
       }},
      {"kernel", "an absolute path", [](const S& v, T& t) { t.kernel = ini::absolute_path(v); }},
      {"initrd", "an absolute path", [](const S& v, T& t) { t.initrd = ini::absolute_path(v); }},
      {"kernel_args", "a kernel command line", [](const S& v, T& t) { t.kernel_args = v; }},
      {"disk", "an absolute path", [](const S& v, T& t) { t.disk = ini::absolute_path(v); }},
  };
  return table;
}

std::string num(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

std::string num(std::uint64_t v) { return std::to_string(v); }

// Checks that need several keys. `set` holds the keys the file and overrides gave.
void validate(VmTemplate& t, const std::set<std::string>& set, const std::string& source) {
  auto fail = [&](const std::string& what) { throw TemplateError(source + ": " + what); };
  if (!set.count("memory_mib")) fail("key 'memory_mib' is missing; set it to the VM's memory at start in MiB (>= 64)");
  if (!set.count("max_vcpus")) t.max_vcpus = t.vcpus;
  if (!set.count("max_memory_mib")) t.max_memory_mib = t.memory_mib;
  if (!set.count("memory_floor_max_mib")) t.memory_floor_max_mib = t.memory_mib;

  if (t.max_vcpus < t.vcpus) {
    fail("max_vcpus (" + std::to_string(t.max_vcpus) + ") is less than vcpus (" + std::to_string(t.vcpus) +
         "); max_vcpus must be >= vcpus");
  }
  if (t.vcpus_min > t.max_vcpus) {
    fail("vcpus_min (" + std::to_string(t.vcpus_min) + ") is above max_vcpus (" + std::to_string(t.max_vcpus) +
         "); vcpus_min must be <= max_vcpus");
  }
  if (t.max_memory_mib < t.memory_mib) {
    fail("max_memory_mib (" + num(t.max_memory_mib) + ") is less than memory_mib (" + num(t.memory_mib) +
         "); max_memory_mib must be >= memory_mib");
  }
  if (t.memory_floor_mib > t.memory_mib) {
    fail("memory_floor_mib (" + num(t.memory_floor_mib) + ") is above memory_mib (" + num(t.memory_mib) +
         "); the floor must be <= memory_mib");
  }
  if (t.memory_floor_max_mib < t.memory_floor_mib) {
    fail("memory_floor_max_mib (" + num(t.memory_floor_max_mib) + ") is below memory_floor_mib (" +
         num(t.memory_floor_mib) + "); an agent may claim at least the template's floor, raise it");
  }
  if (t.memory_floor_max_mib > t.max_memory_mib) {
    fail("memory_floor_max_mib (" + num(t.memory_floor_max_mib) + ") is above max_memory_mib (" +
         num(t.max_memory_mib) + "); the VM never has more memory than that, lower it");
  }
  if (const std::uint64_t page_mib = t.hugepage_kib / 1024; page_mib > 1) {
    for (const auto& [name, mib] : {std::pair{"memory_mib", t.memory_mib}, {"max_memory_mib", t.max_memory_mib}}) {
      if (mib % page_mib != 0) {
        fail(std::string(name) + " (" + num(mib) + ") is not a multiple of the hugepage size (" + num(page_mib) +
             " MiB); round it to a whole number of pages");
      }
    }
  }
  if (const std::string problem = priority_problem(t.priority, t.priority_min, t.priority_max); !problem.empty())
    fail(problem);
  if (!t.kernel.empty() && !t.disk.empty()) {
    fail("both kernel and disk are set; a VM boots from one of them, remove the other");
  }
  if (t.kernel.empty() && t.disk.empty()) {
    fail("neither kernel nor disk is set; set kernel (direct kernel boot) or disk (a disk image)");
  }
  if (t.kernel.empty() && !t.initrd.empty()) fail("initrd is set without kernel; initrd is only used with kernel");
  if (t.kernel.empty() && !t.kernel_args.empty()) {
    fail("kernel_args is set without kernel; kernel_args is only used with kernel");
  }
}

}  // namespace

std::string priority_problem(double priority, double priority_min, double priority_max) {
  for (const auto& [name, v] :
       {std::pair{"priority", priority}, {"priority_min", priority_min}, {"priority_max", priority_max}}) {
    if (!std::isfinite(v) || v < kMinPriority || v > kMaxPriority)
      return std::string(name) + " (" + num(v) + ") is not a number in [0.001, 1000000]; set one in that range";
  }
  if (priority_max < priority_min) {
    return "priority_max (" + num(priority_max) + ") is less than priority_min (" + num(priority_min) +
           "); priority_max must be >= priority_min";
  }
  if (priority < priority_min || priority > priority_max) {
    return "priority (" + num(priority) + ") is outside [priority_min, priority_max] = [" + num(priority_min) + ", " +
           num(priority_max) + "]; set a priority inside that range";
  }
  return {};
}

std::vector<std::string> template_keys() {
  std::vector<std::string> names;
  for (const auto& k : keys()) names.emplace_back(k.name);
  return names;
}

namespace {

VmTemplate finish(const ini::Entries& entries, const std::string& name, const std::vector<std::string>& overrides) {
  VmTemplate t;
  auto set = ini::apply<TemplateError>(entries, keys(), t, name);
  const std::string where = name + ": --set";
  set.merge(ini::apply<TemplateError>(ini::parse_overrides<TemplateError>(overrides, keys(), where), keys(), t, where));
  validate(t, set, overrides.empty() ? name : name + " (with --set overrides)");
  return t;
}

}  // namespace

VmTemplate load_template(const std::string& path, const std::vector<std::string>& overrides) {
  return finish(ini::read_file<TemplateError>(path, keys()), path, overrides);
}

VmTemplate parse_template(std::istream& in, const std::string& name, const std::vector<std::string>& overrides) {
  return finish(ini::read_stream<TemplateError>(in, name, keys()), name, overrides);
}

}  // namespace llmorch::orch
