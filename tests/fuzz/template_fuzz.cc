// libFuzzer target for the VM template reader (parse_template, the stream form of load_template).
// Input: the template file, optionally followed by a NUL byte and --set overrides, one per line.
// Every input either yields a template that passed validation (checked again here) or is rejected
// with TemplateError; any other exception, crash or sanitizer report fails the run.
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/orch/template.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_template(const llmorch::orch::VmTemplate& t) {
  check(t.vcpus >= 1 && t.vcpus <= t.max_vcpus);
  check(t.memory_mib >= 64 && t.memory_mib <= t.max_memory_mib);
  check(t.memory_floor_mib <= t.memory_mib);
  check(t.hugepage_kib == 0 || t.hugepage_kib == 2048 || t.hugepage_kib == 1048576);
  check(t.priority_min > 0 && t.priority_min <= t.priority && t.priority <= t.priority_max);
  check(t.priority_min >= llmorch::orch::kMinPriority && t.priority_max <= llmorch::orch::kMaxPriority);
  check(t.memory_floor_mib <= t.memory_floor_max_mib && t.memory_floor_max_mib <= t.max_memory_mib);
  check(t.kernel.empty() != t.disk.empty());
  check(t.domain_type.empty() || t.domain_type == "kvm" || t.domain_type == "qemu");
}

std::vector<std::string> lines(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    out.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  std::istringstream file(std::string(input.substr(0, nul)));
  const std::vector<std::string> overrides = nul == std::string_view::npos ? std::vector<std::string>{}
                                                                           : lines(input.substr(nul + 1));
  try {
    check_template(llmorch::orch::parse_template(file, "fuzz.conf", overrides));
  } catch (const llmorch::orch::TemplateError&) {
    // Rejected with a message naming the key: the expected outcome for most inputs.
  }
  return 0;
}
