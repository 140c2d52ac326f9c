#include "placement_json.h"

#include <string>

namespace llmorch::cli {

nlohmann::ordered_json placement_json(const policy::Placement& p) {
  nlohmann::ordered_json j;
  j["name"] = p.name;
  j["nodes"] = p.nodes;
  j["cpus"] = p.cpus;
  j["memory_mib_per_node"] = nlohmann::ordered_json::object();
  for (const auto& [node, mib] : p.memory_mib_per_node) j["memory_mib_per_node"][std::to_string(node)] = mib;
  j["cpu_policy"] = policy::to_string(p.cpu_policy);
  j["hugepages"] = p.hugepage_kib == 0      ? nlohmann::ordered_json(nullptr)
                   : p.hugepage_kib == 2048 ? nlohmann::ordered_json("2M")
                                            : nlohmann::ordered_json("1G");
  j["cells"] = nlohmann::ordered_json::array();
  for (const auto& c : p.cells)
    j["cells"].push_back({{"node", c.host_node}, {"vcpus", c.vcpus}, {"memory_mib", c.memory_mib}});
  return j;
}

}  // namespace llmorch::cli
