#include "llmorch/policy/types.h"

#include <algorithm>

namespace llmorch::policy {

std::string_view to_string(CpuPolicy p) {
  switch (p) {
    case CpuPolicy::Dedicated: return "dedicated";
    case CpuPolicy::Shared: return "shared";
  }
  return "dedicated";  // not reached: every enumerator is named above
}

std::optional<CpuPolicy> cpu_policy_from_string(std::string_view text) {
  for (CpuPolicy p : {CpuPolicy::Dedicated, CpuPolicy::Shared})
    if (text == to_string(p)) return p;
  return std::nullopt;
}

const NumaNode* HostTopology::node(NodeId id) const {
  auto it = std::lower_bound(nodes.begin(), nodes.end(), id, [](const NumaNode& n, NodeId v) { return n.id < v; });
  return (it != nodes.end() && it->id == id) ? &*it : nullptr;
}

int HostTopology::distance(NodeId a, NodeId b) const {
  if (const NumaNode* n = node(a)) {
    if (auto it = n->distances.find(b); it != n->distances.end()) return it->second;
  }
  return a == b ? 10 : 20;
}

std::size_t HostTopology::cpu_count() const {
  std::size_t total = 0;
  for (const NumaNode& n : nodes) total += n.cpus.size();
  return total;
}

}  // namespace llmorch::policy
