// The CPU half of one daemon tick: from the running VMs' priorities and load to the levers llmorchd
// sets on them. Pure: no libvirt, clock or I/O; the daemon, `llmorchd --dry-run`, `llmorch explain`
// and the tests share it.
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
// - Shared VMs, VMs that span nodes and dedicated VMs that hold no CPUs keep their CPUs and vCPU
//   count (vcpus_online is empty).
#pragma once

#include <optional>
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
};

struct VmCpuPlan {
  std::string name;
  double weight = 0.0;                // among all running VMs, Σ = 1
  int cpu_shares = 1024;
  std::vector<CpuId> cpus;            // dedicated: after rebalancing, vCPU i on cpus[i]; else unchanged
  std::optional<int> vcpus_online;    // set for rebalanced dedicated VMs
  std::optional<double> node_share;   // rebalanced: fractional CPUs from water-filling on its node
};

struct CpuPlan {
  std::vector<VmCpuPlan> vms;  // in the order of the input
};

// Throws std::invalid_argument (naming the VM) for a bad priority or bounds, or when two dedicated
// VMs claim the same CPU.
CpuPlan plan_cpus(std::span<const VmCpuInput> vms, double alpha = kDefaultAlpha);

}  // namespace llmorch::policy
