#include "llmorch/policy/cpu_plan.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>
#include <tuple>

#include "llmorch/policy/weighting.h"

namespace llmorch::policy {

namespace {

std::string cpu_text(const std::vector<CpuId>& cpus) {
  std::string out;
  for (CpuId c : cpus) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out.empty() ? "none" : out;
}

bool dedicated_on_one_node(const VmCpuInput& vm) {
  return vm.cpu_policy == CpuPolicy::Dedicated && vm.nodes.size() == 1;
}

// Why this VM cannot be planned, or empty.
std::string input_error(const VmCpuInput& vm) {
  if (!std::isfinite(vm.priority) || !(vm.priority > 0))
    return "its priority " + std::to_string(vm.priority) +
           " is not a finite number above 0; it keeps its CPUs and shares (check its template and llmorch metadata)";
  if (vm.min_vcpus < 0 || vm.max_vcpus < std::max(1, vm.min_vcpus))
    return "its vCPU bounds [" + std::to_string(vm.min_vcpus) + ", " + std::to_string(vm.max_vcpus) +
           "] are not a range of at least 1 vCPU; it keeps its CPUs (check its llmorch metadata)";
  return {};
}

// Per VM: the dedicated CPUs it claims after repairs, and what was done.
struct Claims {
  std::vector<std::vector<CpuId>> cpus;
  std::vector<bool> held_some;  // claimed a CPU before the repair (so it stays in its node's division)
};

bool pins_exactly(const VmCpuInput& vm, CpuId cpu) {
  return std::any_of(vm.live_pins.begin(), vm.live_pins.end(),
                     [&](const std::vector<CpuId>& pin) { return pin.size() == 1 && pin.front() == cpu; });
}

// Resolves CPUs claimed twice (see the header's rules). `fixed[i]`: VM i cannot be re-divided (it spans
// nodes, or is left out of the plan).
Claims repair_claims(std::span<const VmCpuInput> vms, const std::vector<bool>& fixed, const CpuHost& host,
                     CpuPlan& plan) {
  const std::size_t n = vms.size();
  Claims claims;
  claims.cpus.resize(n);
  claims.held_some.resize(n, false);
  std::map<CpuId, std::vector<std::size_t>> claimants;
  for (std::size_t i = 0; i < n; ++i) {
    if (vms[i].cpu_policy != CpuPolicy::Dedicated) continue;
    claims.held_some[i] = !vms[i].cpus.empty();
    std::set<CpuId> seen;
    for (CpuId c : vms[i].cpus) {
      if (!seen.insert(c).second) {
        if (fixed[i]) continue;
        plan.vms[i].repaired += (plan.vms[i].repaired.empty() ? "" : "; ") + std::string("CPU ") + std::to_string(c) +
                                " was listed twice in its placement and is kept once";
        continue;
      }
      claims.cpus[i].push_back(c);
      claimants[c].push_back(i);
    }
    if (fixed[i]) claims.cpus[i] = vms[i].cpus;  // left as it is
  }
  std::map<std::size_t, std::vector<CpuId>> lost;  // rebalanced VM -> CPUs it gave up
  for (const auto& [cpu, who] : claimants) {
    if (who.size() < 2) continue;
    const auto rank = [&](std::size_t i) { return std::tuple(!fixed[i], !pins_exactly(vms[i], cpu), vms[i].name); };
    const std::size_t keeper = *std::min_element(who.begin(), who.end(),
                                                 [&](std::size_t a, std::size_t b) { return rank(a) < rank(b); });
    const std::string why = pins_exactly(vms[keeper], cpu)
                                ? " (libvirt pins a vCPU of '" + vms[keeper].name + "' there)"
                            : fixed[keeper] ? " (it cannot be re-divided)"
                                            : " (the first by name)";
    for (std::size_t i : who) {
      if (i == keeper) continue;
      const std::string claim = "dedicated CPU " + std::to_string(cpu) + " is also claimed by '" + vms[keeper].name +
                                "' (a re-pin applied halfway, or edited metadata); '" + vms[keeper].name +
                                "' keeps it" + why;
      if (fixed[i]) {
        if (plan.vms[i].error.empty())
          plan.vms[i].error = claim +
                              "; this VM spans nodes and cannot be re-divided, so it is left as it is: "
                              "remove and place it again to fix its placement";
        continue;
      }
      std::erase(claims.cpus[i], cpu);
      lost[i].push_back(cpu);
      plan.vms[i].repaired += (plan.vms[i].repaired.empty() ? "" : "; ") + claim;
    }
  }
  if (lost.empty()) return claims;

  // Replacements: free CPUs of the loser's node, lowest id first, losers in name order.
  std::set<CpuId> taken(host.reserved.begin(), host.reserved.end());
  taken.insert(host.shared.begin(), host.shared.end());
  taken.insert(host.held.begin(), host.held.end());
  for (const auto& c : claims.cpus) taken.insert(c.begin(), c.end());
  std::vector<std::size_t> losers;
  for (const auto& [i, cpus] : lost) losers.push_back(i);
  std::sort(losers.begin(), losers.end(), [&](std::size_t a, std::size_t b) { return vms[a].name < vms[b].name; });
  for (std::size_t i : losers) {
    const NodeId node = vms[i].nodes.front();
    std::vector<CpuId> free;
    if (auto it = host.node_cpus.find(node); it != host.node_cpus.end())
      for (CpuId c : it->second)
        if (!taken.count(c)) free.push_back(c);
    // Placement's rule: a node that hosts shared VMs keeps one CPU for them (when no shared_cpus is set).
    const bool hosts_shared = host.shared.empty() && std::any_of(vms.begin(), vms.end(), [&](const VmCpuInput& v) {
                                return v.cpu_policy == CpuPolicy::Shared &&
                                       std::find(v.nodes.begin(), v.nodes.end(), node) != v.nodes.end();
                              });
    if (hosts_shared && !free.empty()) free.pop_back();
    std::vector<CpuId> given;
    for (std::size_t k = 0; k < lost[i].size() && k < free.size(); ++k) given.push_back(free[k]);
    for (CpuId c : given) {
      claims.cpus[i].push_back(c);
      taken.insert(c);
    }
    plan.vms[i].repaired += given.empty() ? "; no free CPU on node " + std::to_string(node) +
                                                " to replace it, so the node's CPUs are divided among fewer"
                                          : "; it gets free CPU " + cpu_text(given) + " of node " +
                                                std::to_string(node) + " instead";
  }
  return claims;
}

// CPUs per VM: the division, plus the CPUs that no VM wants (divide leaves them unassigned when every
// VM is at its demand) handed back to the VMs that held them, highest weight first, ties by name.
// Dropping them instead would shrink the node's pool for good: the reconciler records the planned
// set as what each VM holds, so the CPUs would be gone when the load comes back.
std::vector<int> give_back_unwanted(std::span<const VmCpuInput> vms, const Claims& claims,
                                    const std::vector<std::size_t>& members, const Division& division, int pool_size) {
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
    const int held = std::min(static_cast<int>(claims.cpus[members[k]].size()), vm.max_vcpus);
    const int back = std::clamp(held - counts[k], 0, unwanted);
    counts[k] += back;
    unwanted -= back;
  }
  return counts;
}

// Re-divides the CPUs held by the dedicated VMs of one node (indices into `vms`) among them. Claims
// are disjoint here (repair_claims ran first).
void plan_node(std::span<const VmCpuInput> vms, const Claims& claims, const std::vector<std::size_t>& members,
               double alpha, CpuPlan& plan) {
  std::vector<CpuId> pool;
  for (std::size_t i : members) pool.insert(pool.end(), claims.cpus[i].begin(), claims.cpus[i].end());
  std::sort(pool.begin(), pool.end());
  std::vector<VmDemand> demands;
  demands.reserve(members.size());
  for (std::size_t i : members) {
    const VmCpuInput& vm = vms[i];
    const double demand = std::isnan(vm.demand_cpus) ? -1.0 : vm.demand_cpus;
    demands.push_back({vm.name, vm.priority, vm.min_vcpus, vm.max_vcpus, demand});
  }
  const Division division = divide(demands, static_cast<int>(pool.size()), alpha);
  const std::vector<int> counts = give_back_unwanted(vms, claims, members, division, static_cast<int>(pool.size()));

  // Each VM keeps a prefix of what it holds (its lowest vCPUs stay where they are).
  std::vector<CpuId> kept;
  for (std::size_t k = 0; k < members.size(); ++k) {
    VmCpuPlan& out = plan.vms[members[k]];
    const auto& held = claims.cpus[members[k]];
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
    if (out.cpus.empty()) {
      // Fewer CPUs than VMs (after a repair found no replacement): this one waits, as it is.
      out.error = "no dedicated CPU of node " + std::to_string(vms[members[k]].nodes.front()) +
                  " is left for it after the repair (its node's CPUs went to VMs of higher weight); it keeps "
                  "running where libvirt has it: free a CPU of that node or remove a VM";
      out.cpus = vms[members[k]].cpus;
      continue;
    }
    out.vcpus_online = static_cast<int>(out.cpus.size());
  }
}

// Elastic vCPU counts of the shared VMs `members` (indices into `vms`) floating over one pool of
// `pool_size` CPUs (see the header's rules).
void plan_pool(std::span<const VmCpuInput> vms, std::vector<std::size_t> members, int pool_size, double alpha,
               CpuPlan& plan) {
  std::sort(members.begin(), members.end(), [&](std::size_t a, std::size_t b) { return vms[a].name < vms[b].name; });
  std::vector<VmDemand> demands;
  demands.reserve(members.size());
  for (std::size_t i : members) {
    const VmCpuInput& vm = vms[i];
    const int cap = std::max(1, std::min(vm.max_vcpus, pool_size));
    const double demand = std::isnan(vm.demand_cpus) ? -1.0 : vm.demand_cpus;
    demands.push_back({vm.name, vm.priority, 0, cap, demand});
  }
  const Division division = divide(demands, pool_size, alpha);
  // Whole parts: the pool in proportion to the water-filled shares, each at most its share rounded up.
  std::vector<std::size_t> wanting;
  std::vector<double> shares;
  std::vector<int> lo, hi;
  for (std::size_t k = 0; k < members.size(); ++k) {
    const double share = division.share_cpus[k];
    if (!(share > 1e-9)) continue;
    wanting.push_back(k);
    shares.push_back(share);
    lo.push_back(0);
    hi.push_back(std::min(demands[k].max_cpus, static_cast<int>(std::ceil(share - 1e-9))));
  }
  std::vector<int> parts(members.size(), 0);
  if (!wanting.empty()) {
    const std::vector<int> whole = apportion(shares, pool_size, lo, hi);
    for (std::size_t j = 0; j < wanting.size(); ++j) parts[wanting[j]] = whole[j];
  }
  for (std::size_t k = 0; k < members.size(); ++k) {
    VmCpuPlan& out = plan.vms[members[k]];
    const int cap = demands[k].max_cpus;
    const int floor = std::clamp(vms[members[k]].min_vcpus, 1, cap);
    out.vcpus_online = std::clamp(parts[k], floor, cap);
    out.node_share = division.share_cpus[k];
    out.pool_weight = division.weights[k];
  }
}

}  // namespace

std::vector<CpuId> shared_pool(const CpuHost& host, const std::vector<NodeId>& nodes,
                               const std::set<CpuId>& dedicated) {
  std::vector<CpuId> pool;
  for (NodeId node : nodes) {
    auto it = host.node_cpus.find(node);
    if (it == host.node_cpus.end()) continue;
    for (CpuId c : it->second) {
      const bool allowed = host.shared.empty() ? !host.reserved.count(c) : host.shared.count(c) > 0;
      if (allowed && !dedicated.count(c) && !host.held.count(c)) pool.push_back(c);
    }
  }
  std::sort(pool.begin(), pool.end());
  pool.erase(std::unique(pool.begin(), pool.end()), pool.end());
  return pool;
}

CpuPlan plan_cpus(std::span<const VmCpuInput> vms, double alpha, const CpuHost& host) {
  CpuPlan plan;
  if (vms.empty()) return plan;
  plan.vms.resize(vms.size());

  // Input errors leave a VM out; the rest are weighed among themselves.
  std::vector<std::size_t> valid;
  std::vector<double> priorities;
  std::vector<bool> fixed(vms.size(), false);
  for (std::size_t i = 0; i < vms.size(); ++i) {
    VmCpuPlan& out = plan.vms[i];
    out.name = vms[i].name;
    out.cpus = vms[i].cpus;
    out.error = input_error(vms[i]);
    fixed[i] = !out.error.empty() || !dedicated_on_one_node(vms[i]);
    if (!out.error.empty()) continue;
    valid.push_back(i);
    priorities.push_back(vms[i].priority);
  }
  if (!valid.empty()) {
    std::vector<double> weights;
    try {
      weights = compute_weights(priorities, alpha);
    } catch (const std::invalid_argument& e) {  // alpha out of range: not one VM's fault, but plan nothing
      for (std::size_t i : valid) plan.vms[i].error = std::string("cannot weigh the VMs: ") + e.what();
      return plan;
    }
    for (std::size_t k = 0; k < valid.size(); ++k) {
      plan.vms[valid[k]].weight = weights[k];
      plan.vms[valid[k]].cpu_shares = cpu_shares(weights[k], valid.size());
    }
  }

  const Claims claims = repair_claims(vms, fixed, host, plan);
  std::map<NodeId, std::vector<std::size_t>> dedicated_by_node;
  for (std::size_t i = 0; i < vms.size(); ++i) {
    if (fixed[i] || !plan.vms[i].error.empty() || !claims.held_some[i]) continue;
    dedicated_by_node[vms[i].nodes.front()].push_back(i);
  }
  for (const auto& [node, members] : dedicated_by_node) {
    try {
      plan_node(vms, claims, members, alpha, plan);
    } catch (const std::invalid_argument& e) {  // validated above; a node's failure stays that node's
      for (std::size_t i : members) {
        plan.vms[i].error = "cannot divide node " + std::to_string(node) + ": " + e.what();
        plan.vms[i].cpus = vms[i].cpus;
        plan.vms[i].vcpus_online.reset();
      }
    }
  }

  // Shared pools, from the dedicated CPUs as planned (and those of VMs left as they are).
  if (host.node_cpus.empty()) return plan;
  std::set<CpuId> dedicated;
  for (std::size_t i = 0; i < vms.size(); ++i)
    if (vms[i].cpu_policy == CpuPolicy::Dedicated) dedicated.insert(plan.vms[i].cpus.begin(), plan.vms[i].cpus.end());
  for (std::size_t i = 0; i < vms.size(); ++i) {
    VmCpuPlan& out = plan.vms[i];
    if (vms[i].cpu_policy != CpuPolicy::Shared || !out.error.empty()) continue;
    std::vector<CpuId> pool = shared_pool(host, vms[i].nodes, dedicated);
    if (pool.empty()) {
      std::string nodes;
      for (NodeId n : vms[i].nodes) nodes += (nodes.empty() ? "" : ",") + std::to_string(n);
      out.error = "no CPU of node " + nodes +
                  " is left for shared vCPUs (all are reserved or dedicated); it keeps "
                  "its CPUs " +
                  cpu_text(vms[i].cpus) + ": free a CPU of that node (or set shared_cpus)";
      continue;
    }
    out.cpus = std::move(pool);
    out.pool_planned = true;
  }

  // Elastic vCPU counts: the VMs of each pool divide it among themselves.
  std::map<std::vector<CpuId>, std::vector<std::size_t>> by_pool;
  for (std::size_t i = 0; i < vms.size(); ++i)
    if (plan.vms[i].pool_planned && plan.vms[i].error.empty()) by_pool[plan.vms[i].cpus].push_back(i);
  for (const auto& [pool, members] : by_pool) {
    try {
      plan_pool(vms, members, static_cast<int>(pool.size()), alpha, plan);
    } catch (const std::invalid_argument& e) {  // validated above; a pool's failure stays that pool's
      for (std::size_t i : members) {
        plan.vms[i].vcpus_online.reset();
        plan.vms[i].cpus = vms[i].cpus;
        plan.vms[i].pool_planned = false;
        plan.vms[i].error = "cannot divide shared pool " + cpu_text(pool) + ": " + e.what();
      }
    }
  }
  return plan;
}

}  // namespace llmorch::policy
