#include "llmorch/orch/host_state.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <set>
#include <variant>

namespace llmorch::orch {
namespace {

using policy::CpuId;
using policy::CpuPolicy;
using policy::NodeId;

std::set<CpuId> all_cpus(const policy::HostTopology& topology) {
  std::set<CpuId> out;
  for (const auto& n : topology.nodes)
    for (const auto& c : n.cpus) out.insert(c.id);
  return out;
}

std::set<CpuId> node_cpus(const policy::HostTopology& topology, const std::vector<NodeId>& nodes) {
  std::set<CpuId> out;
  for (NodeId id : nodes)
    if (const auto* n = topology.node(id))
      for (const auto& c : n->cpus) out.insert(c.id);
  return out;
}

std::set<CpuId> dedicated_cpus(const std::vector<ManagedDomain>& domains) {
  std::set<CpuId> out;
  for (const auto& d : domains)
    if (d.facts.placement.cpu_policy == CpuPolicy::Dedicated)
      out.insert(d.facts.placement.cpus.begin(), d.facts.placement.cpus.end());
  return out;
}

std::string missing_cpus_message(const char* key, const std::set<CpuId>& missing, const std::set<CpuId>& known) {
  return std::string("host config key '") + key + "' names CPU(s) " + format_cpu_list(missing) +
         ", which this host does not have (it has " + format_cpu_list(known) + "); fix the host config";
}

}  // namespace

void check_config(const policy::HostTopology& topology, const HostConfig& config) {
  const std::set<CpuId> known = all_cpus(topology);
  for (const auto& [key, cpus] :
       {std::pair{"reserved_cpus", &config.reserved_cpus}, std::pair{"shared_cpus", &config.shared_cpus}}) {
    std::set<CpuId> missing;
    std::set_difference(cpus->begin(), cpus->end(), known.begin(), known.end(), std::inserter(missing, missing.end()));
    if (!missing.empty()) throw ConfigError(missing_cpus_message(key, missing, known));
  }
}

std::map<NodeId, std::uint64_t> actual_mib_per_node(const ManagedDomain& d, std::optional<std::uint64_t> mib) {
  std::map<NodeId, std::uint64_t> out;
  if (!d.active()) return out;
  const auto& per_node = d.facts.placement.memory_mib_per_node;
  const std::uint64_t reserved = std::accumulate(per_node.begin(), per_node.end(), std::uint64_t{0},
                                                 [](std::uint64_t s, const auto& kv) { return s + kv.second; });
  const std::uint64_t actual = mib ? *mib : d.memory_actual_kib / 1024;
  if (reserved == 0) return out;
  std::uint64_t given = 0;
  for (auto it = per_node.begin(); it != per_node.end(); ++it) {
    // Proportional shares; the last node takes what rounding left, so the parts sum to `actual`.
    const std::uint64_t part = std::next(it) == per_node.end() ? actual - given : actual * it->second / reserved;
    out[it->first] = part;
    given += part;
  }
  return out;
}

std::map<NodeId, std::uint64_t> others_mib(const HostSnapshot& host) {
  std::map<NodeId, std::uint64_t> vms;
  for (const auto& d : host.domains) {
    auto rss = host.resident_mib.find(d.name);
    const auto held = rss == host.resident_mib.end() ? std::nullopt : std::optional(rss->second);
    for (const auto& [node, mib] : actual_mib_per_node(d, held)) vms[node] += mib;
  }
  std::map<NodeId, std::uint64_t> out;
  for (const auto& n : host.topology.nodes) {
    const auto free = host.free_mib.find(n.id);
    const std::uint64_t total = n.memory_kib / 1024;
    if (free == host.free_mib.end()) {
      out[n.id] = 0;
      continue;
    }
    const std::uint64_t used = total - std::min(total, free->second);
    out[n.id] = used - std::min(used, vms[n.id]);
  }
  return out;
}

policy::HostUsage host_usage(const HostSnapshot& host, const HostConfig& config, CpuPolicy cpu_policy) {
  policy::HostUsage usage;
  usage.reserved_cpus = config.reserved_cpus;
  for (const auto& [node, mib] : others_mib(host)) usage.unavailable_mib[node] = mib + config.memory_reserve_mib;
  const bool pool_configured = !config.shared_cpus.empty();
  for (const auto& d : host.domains) {
    const auto& p = d.facts.placement;
    if (pool_configured && cpu_policy == CpuPolicy::Dedicated && p.cpu_policy == CpuPolicy::Shared) {
      // Shared VMs live on shared_cpus, which dedicated VMs cannot take anyway: count their memory
      // (ordinary or hugepages) but no CPU, so policy::place does not keep a node CPU back for them.
      policy::Placement memory_only = p;
      memory_only.cpu_policy = CpuPolicy::Dedicated;
      memory_only.cpus.clear();
      usage.placed.push_back(std::move(memory_only));
      continue;
    }
    usage.placed.push_back(p);
  }
  if (pool_configured) {
    if (cpu_policy == CpuPolicy::Dedicated) {
      usage.reserved_cpus.insert(config.shared_cpus.begin(), config.shared_cpus.end());
    } else {
      for (CpuId id : all_cpus(host.topology))
        if (!config.shared_cpus.count(id)) usage.reserved_cpus.insert(id);
    }
  }
  return usage;
}

policy::PlacementResult place_on_host(const HostSnapshot& host, const HostConfig& config,
                                      const policy::PlacementRequest& request) {
  auto result = policy::place(host.topology, host_usage(host, config, request.cpu_policy), request);
  if (auto* r = std::get_if<policy::Rejection>(&result);
      r && request.cpu_policy == CpuPolicy::Shared && !config.shared_cpus.empty()) {
    r->reason += " (shared VMs run only on the host config's shared_cpus = " + format_cpu_list(config.shared_cpus) +
                 "; the CPUs of other nodes are not counted)";
  }
  return result;
}

std::vector<CpuId> shared_pool(const HostSnapshot& host, const HostConfig& config, const std::vector<NodeId>& nodes) {
  const std::set<CpuId> on_nodes = node_cpus(host.topology, nodes);
  const std::set<CpuId> dedicated = dedicated_cpus(host.domains);
  std::vector<CpuId> pool;
  for (CpuId id : on_nodes) {
    const bool allowed = config.shared_cpus.empty() ? !config.reserved_cpus.count(id)
                                                    : config.shared_cpus.count(id) > 0;
    if (allowed && !dedicated.count(id)) pool.push_back(id);
  }
  if (pool.empty() && !config.shared_cpus.empty()) {
    std::set<CpuId> node_set(nodes.begin(), nodes.end());
    throw ConfigError("host config key 'shared_cpus' (" + format_cpu_list(config.shared_cpus) +
                      ") has no free CPU on node(s) " + format_cpu_list(node_set) +
                      "; add CPUs of those nodes to shared_cpus");
  }
  return pool;
}

namespace {

// The pools of one node; what is available is what placement sees (`free`: policy::free_resources).
std::vector<HugepagePool> hugepage_pools(const policy::NumaNode& node, const policy::NodeFree& free,
                                         const std::vector<ManagedDomain>& domains) {
  std::map<std::uint64_t, HugepagePool> pools;
  for (const policy::PageInfo& p : node.pages) {
    if (p.size_kib <= 4 || p.count == 0) continue;
    pools[p.size_kib] = {.page_kib = p.size_kib,
                         .pool_mib = policy::hugepage_capacity_kib(node, p.size_kib) / 1024,
                         .vm_mib = {},
                         .available_mib = 0};
  }
  for (const ManagedDomain& d : domains) {
    const policy::Placement& p = d.facts.placement;
    auto mib = p.memory_mib_per_node.find(node.id);
    if (p.hugepage_kib == 0 || mib == p.memory_mib_per_node.end()) continue;
    HugepagePool& pool = pools[p.hugepage_kib];
    pool.page_kib = p.hugepage_kib;
    pool.vm_mib[d.name] = mib->second;
  }
  std::vector<HugepagePool> out;
  for (auto& [size, pool] : pools) {
    if (auto f = free.hugepage_mib.find(size); f != free.hugepage_mib.end()) pool.available_mib = f->second;
    out.push_back(std::move(pool));
  }
  return out;
}

}  // namespace

std::vector<NodeUse> describe_nodes(const HostSnapshot& host, const HostConfig& config) {
  const auto others = others_mib(host);
  const auto free = policy::free_resources(host.topology, host_usage(host, config, CpuPolicy::Dedicated));
  std::vector<NodeUse> out;
  for (std::size_t i = 0; i < host.topology.nodes.size(); ++i) {
    const policy::NumaNode& n = host.topology.nodes[i];
    NodeUse u;
    u.id = n.id;
    for (const auto& c : n.cpus) u.cpus.push_back(c.id);
    std::set<CpuId> taken;
    for (CpuId id : u.cpus) {
      if (config.reserved_cpus.count(id)) {
        u.reserved.push_back(id);
        taken.insert(id);
      }
    }
    std::uint64_t vm_total = 0;
    for (const auto& d : host.domains) {
      const auto& p = d.facts.placement;
      if (p.cpu_policy == CpuPolicy::Dedicated) {
        for (CpuId id : p.cpus)
          if (std::find(u.cpus.begin(), u.cpus.end(), id) != u.cpus.end()) {
            u.dedicated[d.name].push_back(id);
            taken.insert(id);
          }
      }
      if (auto it = p.memory_mib_per_node.find(n.id); it != p.memory_mib_per_node.end()) {
        u.vm_mib[d.name] = it->second;
        vm_total += it->second;
        if (p.cpu_policy == CpuPolicy::Shared) u.shared_vms.push_back(d.name);
      }
      if (auto a = actual_mib_per_node(d); a.count(n.id)) u.vm_actual_mib[d.name] = a.at(n.id);
    }
    for (CpuId id : u.cpus) {
      const bool in_pool = config.shared_cpus.empty() ? !taken.count(id) : config.shared_cpus.count(id) > 0;
      if (in_pool && !taken.count(id)) u.shared_pool.push_back(id);
      if (!taken.count(id) && !config.shared_cpus.count(id)) u.free.push_back(id);
    }
    u.total_mib = n.memory_kib / 1024;
    u.free_mib = host.free_mib.count(n.id) ? host.free_mib.at(n.id) : u.total_mib;
    u.reserve_mib = config.memory_reserve_mib;
    u.others_mib = others.at(n.id);
    const std::uint64_t unavailable = u.reserve_mib + u.others_mib + vm_total;
    u.available_mib = u.total_mib - std::min(u.total_mib, unavailable);
    u.hugepages = hugepage_pools(n, free[i], host.domains);
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace llmorch::orch
