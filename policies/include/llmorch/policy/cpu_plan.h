// The CPU half of one daemon tick: from the running VMs' priorities and load to the levers llmorchd
// sets on them. Pure: no libvirt, clock or I/O; the daemon, `llmorchd --dry-run`, `llmorch explain`,
// `llmorch plan` and the tests share it.
//
// Rules:
// - Every running VM gets a weight by the formula over all running VMs (compute_weights), and
//   cpu_shares from it (cpu_shares(): ratios of shares equal ratios of weights). Shares decide who
//   runs when VMs contend for the same host CPU (shared VMs floating over one pool).
// - Dedicated VMs that live on one node divide that node's dedicated CPUs among themselves: the pool
//   is the union of the CPUs they hold now (so a rebalance never takes a free CPU away from future
//   placements, nor one from a shared pool). divide() gives each VM a whole number of CPUs in
//   [min_vcpus, max_vcpus] by weight (over that node's VMs) and load: an idle VM's CPUs go to busy
//   ones. CPUs that no VM wants (every VM at its demand) go back to the VMs that held them, highest
//   weight first, so the pool does not shrink while the node is idle. vCPU i runs on cpus[i], and
//   vcpus_online = cpus.size().
// - Stability: a VM keeps the CPUs it holds, in order (it loses its highest vCPUs first when it
//   shrinks); CPUs set free go, lowest id first, to the VMs that grow, in name order.
// - Shared VMs float over their nodes' shared pool (shared_pool()): with the host known (CpuHost), the
//   pool is recomputed every tick, so it is always disjoint from every dedicated VM's CPUs, also those
//   placed after the shared VM. Without a host, shared VMs keep their CPUs.
// - Elastic shared vCPUs: the shared VMs whose pools are the same divide that pool with divide()
//   (weights over those VMs, demand from their load, min 0, max min(max_vcpus, pool size)). Its
//   water-filled share_cpus (an idle VM's unused part goes to the busy ones) are made whole with
//   apportion(): the pool's CPUs in proportion to the shares, each at most its share rounded up, so the
//   parts never sum to more than the pool. vcpus_online = the part clamped to
//   [min(min_vcpus, cap), cap], cap = min(max_vcpus, pool size) (and at least 1): a VM never has more
//   online vCPUs than its pool has CPUs; only the vcpus_min floors can make the online counts of a
//   pool sum to more than the pool (an idle VM keeps its floor while a busy one uses the whole pool).
//   Ties (equal shares) go by name. cpu_shares still decide the fine division inside the pool.
// - VMs that span nodes and dedicated VMs that hold no CPUs keep their CPUs and vCPU count
//   (vcpus_online is empty).
// - One VM's fault stays that VM's (nothing here throws for one VM's sake):
//   * bad input for a VM (a priority that is not a finite positive number, vCPU bounds out of order):
//     `error` says why; the VM gets no weight, keeps its CPUs and is left out of every division;
//   * a CPU claimed by two dedicated VMs (a re-pin applied halfway: one VM's calls failed after its
//     neighbour took the CPU) is repaired: one VM keeps it (the one libvirt pins a vCPU to exactly
//     that CPU now, else the one that cannot be re-divided, else the first by name), the other gives
//     it up and gets a free CPU of its node instead when there is one (neither reserved, nor shared,
//     nor held by anyone; a node with shared VMs keeps one for them), then the node is divided as
//     usual. `repaired` says what was done. A CPU listed twice by one VM is dropped once, the same way.
//     When the loser spans nodes it cannot be repaired here: `error`, and it is left as it is.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "llmorch/policy/division.h"
#include "llmorch/policy/types.h"

namespace llmorch::policy {

struct VmCpuInput {
  std::string name;
  CpuPolicy cpu_policy = CpuPolicy::Dedicated;
  std::vector<NodeId> nodes;  // the nodes the VM's placement uses
  std::vector<CpuId> cpus;    // dedicated: the CPUs it holds now, vCPU i on cpus[i]; shared: its pool
  int min_vcpus = 1;
  int max_vcpus = 1;
  double priority = 1.0;      // effective: the agent's (clamped) report, or the template's
  double demand_cpus = -1.0;  // CPUs it can use now, from its load; < 0: unknown, so max_vcpus
  // What libvirt pins each vCPU to now (ManagedDomain::vcpu_pins); decides who keeps a CPU claimed
  // twice. Empty: unknown.
  std::vector<std::vector<CpuId>> live_pins;
};

// The host's CPUs as the plan needs them. Default (no nodes): unknown; shared VMs then keep their CPUs
// and a repaired VM gets no replacement CPU.
struct CpuHost {
  std::map<NodeId, std::vector<CpuId>> node_cpus;  // every node's CPUs
  std::set<CpuId> reserved;                        // reserved_cpus: never given to VMs
  std::set<CpuId> shared;                          // shared_cpus; empty: the pool is what is left
  std::set<CpuId> held;                            // CPUs of dedicated VMs not in this plan (shut off)
};

struct VmCpuPlan {
  std::string name;
  double weight = 0.0;  // among all running VMs, Σ = 1
  int cpu_shares = 1024;
  std::vector<CpuId> cpus;            // dedicated: after rebalancing, vCPU i on cpus[i]; else unchanged
  std::optional<int> vcpus_online;    // set for rebalanced dedicated VMs and shared VMs with a planned pool
  std::optional<double> node_share;   // rebalanced / shared: fractional CPUs from water-filling on its node / pool
  std::optional<double> pool_weight;  // shared with vcpus_online: its weight among its pool's VMs
  bool pool_planned = false;          // shared: cpus is the node's shared pool as of this plan
  std::string error;                  // non-empty: left out of the plan (weight 0, CPUs as they are)
  std::string repaired;               // non-empty: its claimed CPUs were repaired, and how
};

struct CpuPlan {
  std::vector<VmCpuPlan> vms;  // in the order of the input
};

// Never throws for one VM's sake (see the rules above); std::bad_alloc aside, it does not throw.
CpuPlan plan_cpus(std::span<const VmCpuInput> vms, double alpha = kDefaultAlpha, const CpuHost& host = {});

// The pool shared vCPUs on `nodes` float over: shared_cpus on those nodes when configured, else the
// nodes' CPUs that are neither reserved nor in `dedicated`. Either way never a CPU in `dedicated` or
// `host.held`. Sorted; empty when nothing is left (or the host is unknown).
std::vector<CpuId> shared_pool(const CpuHost& host, const std::vector<NodeId>& nodes, const std::set<CpuId>& dedicated);

}  // namespace llmorch::policy
