#include "llmorch/policy/cpu_plan.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>

#include "llmorch/policy/weighting.h"

namespace llmorch::policy {

namespace {

// A dedicated VM that holds no CPUs (e.g. its placement is not recorded) is left alone: it brings
// nothing to the pool, and dividing would take a CPU from a neighbour, or give it none at all.
bool rebalanced_here(const VmCpuInput& vm) {
  return vm.cpu_policy == CpuPolicy::Dedicated && vm.nodes.size() == 1 && !vm.cpus.empty();
}

// CPUs per VM: the division, plus the CPUs that no VM wants (divide leaves them unassigned when every
// VM is at its demand) handed back to the VMs that held them, highest weight first, ties by name.
// Dropping them instead would shrink the node's pool for good: the reconciler records the planned
// set as what each VM holds, so the CPUs would be gone when the load comes back.
std::vector<int> give_back_unwanted(std::span<const VmCpuInput> vms, const std::vector<std::size_t>& members,
                                    const Division& division, int pool_size) {
  std::vector<int> counts = division.cpus;
  int unwanted = pool_size;
  for (int c : counts) unwanted -= c;
  std::vector<std::size_t> order(members.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    if (division.weights[a] != division.weights[b]) return division.weights[a] > division.weights[b];
    return division.names[a] < division.names[b];
  });
  for (std::size_t k : order) {
    if (unwanted <= 0) break;
    const VmCpuInput& vm = vms[members[k]];
    const int held = std::min(static_cast<int>(vm.cpus.size()), vm.max_vcpus);
    const int back = std::clamp(held - counts[k], 0, unwanted);
    counts[k] += back;
    unwanted -= back;
  }
  return counts;
}

// The CPUs the members hold, sorted; throws naming a VM when two of them hold the same CPU.
std::vector<CpuId> node_pool(std::span<const VmCpuInput> vms, const std::vector<std::size_t>& members) {
  std::vector<CpuId> pool;
  for (std::size_t i : members) pool.insert(pool.end(), vms[i].cpus.begin(), vms[i].cpus.end());
  std::sort(pool.begin(), pool.end());
  const auto twice = std::adjacent_find(pool.begin(), pool.end());
  if (twice == pool.end()) return pool;
  for (std::size_t i : members) {
    if (std::find(vms[i].cpus.begin(), vms[i].cpus.end(), *twice) == vms[i].cpus.end()) continue;
    throw std::invalid_argument("dedicated CPU " + std::to_string(*twice) + " is claimed twice (VM '" +
                                vms[i].name + "' and another VM on its node)");
  }
  throw std::invalid_argument("dedicated CPU " + std::to_string(*twice) + " is claimed twice by one VM");
}

// Re-divides the CPUs held by the dedicated VMs of one node (indices into `vms`) among them.
void plan_node(std::span<const VmCpuInput> vms, const std::vector<std::size_t>& members, double alpha,
               CpuPlan& plan) {
  const std::vector<CpuId> pool = node_pool(vms, members);
  std::vector<VmDemand> demands;
  demands.reserve(members.size());
  for (std::size_t i : members) {
    const VmCpuInput& vm = vms[i];
    demands.push_back({vm.name, vm.priority, vm.min_vcpus, vm.max_vcpus, vm.demand_cpus});
  }
  const Division division = divide(demands, static_cast<int>(pool.size()), alpha);
  const std::vector<int> counts = give_back_unwanted(vms, members, division, static_cast<int>(pool.size()));

  // Each VM keeps a prefix of what it holds (its lowest vCPUs stay where they are).
  std::vector<CpuId> kept;
  for (std::size_t k = 0; k < members.size(); ++k) {
    VmCpuPlan& out = plan.vms[members[k]];
    const auto& held = vms[members[k]].cpus;
    const std::size_t keep = std::min<std::size_t>(held.size(), static_cast<std::size_t>(counts[k]));
    out.cpus.assign(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(keep));
    kept.insert(kept.end(), out.cpus.begin(), out.cpus.end());
    out.node_share = division.share_cpus[k];
  }
  std::sort(kept.begin(), kept.end());
  std::vector<CpuId> free;  // ascending
  std::set_difference(pool.begin(), pool.end(), kept.begin(), kept.end(), std::back_inserter(free));
  // CPUs set free go, lowest id first, to the VMs that grow, in name order.
  std::vector<std::size_t> by_name(members.size());
  for (std::size_t k = 0; k < by_name.size(); ++k) by_name[k] = k;
  std::sort(by_name.begin(), by_name.end(),
            [&](std::size_t a, std::size_t b) { return vms[members[a]].name < vms[members[b]].name; });
  auto next_free = free.begin();
  for (std::size_t k : by_name) {
    VmCpuPlan& out = plan.vms[members[k]];
    while (out.cpus.size() < static_cast<std::size_t>(counts[k]) && next_free != free.end()) {
      out.cpus.push_back(*next_free++);
    }
    out.vcpus_online = static_cast<int>(out.cpus.size());
  }
}

}  // namespace

CpuPlan plan_cpus(std::span<const VmCpuInput> vms, double alpha) {
  CpuPlan plan;
  if (vms.empty()) return plan;

  std::vector<double> priorities;
  priorities.reserve(vms.size());
  for (const VmCpuInput& vm : vms) priorities.push_back(vm.priority);
  std::vector<double> weights;
  try {
    weights = compute_weights(priorities, alpha);
  } catch (const std::invalid_argument& e) {
    // Name the VM: compute_weights only knows positions.
    for (const VmCpuInput& vm : vms) {
      if (!(vm.priority > 0) || vm.priority == std::numeric_limits<double>::infinity())
        throw std::invalid_argument("VM '" + vm.name + "': " + e.what());
    }
    throw;
  }

  plan.vms.resize(vms.size());
  std::map<NodeId, std::vector<std::size_t>> dedicated_by_node;
  for (std::size_t i = 0; i < vms.size(); ++i) {
    VmCpuPlan& out = plan.vms[i];
    out.name = vms[i].name;
    out.weight = weights[i];
    out.cpu_shares = cpu_shares(weights[i], vms.size());
    if (rebalanced_here(vms[i])) {
      dedicated_by_node[vms[i].nodes.front()].push_back(i);
    } else {
      out.cpus = vms[i].cpus;
    }
  }
  for (const auto& [node, members] : dedicated_by_node) plan_node(vms, members, alpha, plan);
  return plan;
}

}  // namespace llmorch::policy
