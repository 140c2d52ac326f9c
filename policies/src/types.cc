#include "llmorch/policy/types.h"

#include <algorithm>

namespace llmorch::policy {

const NumaNode* HostTopology::node(NodeId id) const {
  auto it = std::lower_bound(nodes.begin(), nodes.end(), id,
                             [](const NumaNode& n, NodeId v) { return n.id < v; });
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
