// libFuzzer target for the host capabilities parser (parse_capabilities): any bytes either parse into
// a topology that keeps the invariants placement relies on, or are rejected with CapabilitiesError.
// Anything else (another exception, a crash, a sanitizer report) fails the run.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "llmorch/orch/topology.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void check_topology(const llmorch::policy::HostTopology& topo) {
  check(!topo.nodes.empty());
  for (std::size_t i = 0; i < topo.nodes.size(); ++i) {
    const auto& node = topo.nodes[i];
    if (i > 0) check(topo.nodes[i - 1].id < node.id);  // sorted, unique
    check(topo.node(node.id) == &node);
    for (std::size_t c = 0; c < node.cpus.size(); ++c) {
      const auto& cpu = node.cpus[c];
      if (c > 0) check(node.cpus[c - 1].id < cpu.id);
      // Siblings: sorted, unique, and include the CPU itself.
      bool self = false;
      for (std::size_t s = 0; s < cpu.siblings.size(); ++s) {
        if (s > 0) check(cpu.siblings[s - 1] < cpu.siblings[s]);
        self |= cpu.siblings[s] == cpu.id;
      }
      check(self);
    }
    for (std::size_t p = 1; p < node.pages.size(); ++p) check(node.pages[p - 1].size_kib < node.pages[p].size_kib);
    for (const auto& page : node.pages) check(page.size_kib > 0);
    check(topo.distance(node.id, node.id) >= 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  try {
    check_topology(llmorch::orch::parse_capabilities(xml));
  } catch (const llmorch::orch::CapabilitiesError&) {
    // Rejected with a message: the expected outcome for most inputs.
  }
  return 0;
}
