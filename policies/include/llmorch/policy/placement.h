// NUMA placement: which host nodes, CPUs and memory a new VM gets. Pure: no I/O, no clock.
//
// Rules, in order:
// - Accounting. Reserved CPUs are never given to VMs. A dedicated VM's CPUs are exclusive: no other
//   VM is pinned to them. A shared VM floats over its nodes' pool: the node's CPUs minus reserved
//   minus dedicated ones (the pool stored in its Placement is the pool at decision time; whoever
//   applies placements recomputes it as dedicated VMs come and go). A node that hosts shared VMs
//   keeps at least one CPU out of dedicated use, so their pool never becomes empty. Shared vCPUs may
//   outnumber their pool (overcommit). Node memory for VMs = node memory - unavailable_mib - what
//   placed VMs use there. Hugepage-backed memory also needs free hugepages of that size on the node:
//   capacity = min(count * size, node memory) (reported counts are not trusted), minus what placed
//   VMs with that page size use. Memory-only nodes (no CPUs) are never used.
// - A VM that fits in one node gets exactly one node. Among fitting nodes, best fit: the node that
//   leaves the fewest free CPUs, then the least free memory, then the lowest id (keeps big holes
//   for big VMs, so the host fragments less).
// - Otherwise the VM spans the fewest nodes possible; among node sets of that size, the one with the
//   smallest sum of pairwise NUMA distances, then best fit as above, then the lowest node ids. Up to
//   8 usable nodes every set is tried; beyond that, the sets grown greedily from each node by adding
//   the nearest one.
// - A spanning VM gets one guest NUMA cell per host node. vCPUs and memory are split in proportion to
//   what each node can give (every cell at least one vCPU and one page), sums exact; hugepage memory
//   is split in whole pages.
// - Dedicated vCPUs take whole free cores first with SMT siblings adjacent (vCPU 2k and 2k+1 on one
//   core), then fill cores that are already partly used, breaking a free core only when needed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "llmorch/policy/types.h"

namespace llmorch::policy {

// A page size for people: "2 MiB", "1 GiB", "4 KiB".
std::string page_size_text(std::uint64_t kib);

// Hugepage memory (KiB) a node can hold for pages of page_kib: min(count * size, memory); 0 when the
// node does not list that page size.
std::uint64_t hugepage_capacity_kib(const NumaNode& node, std::uint64_t page_kib);

// What one node has left for VMs, after reserved CPUs, placed VMs and unavailable memory.
struct NodeFree {
  NodeId id = 0;
  std::vector<CpuId> cpus;    // neither reserved nor pinned by a dedicated VM (= the shared pool)
  bool hosts_shared = false;  // a shared VM uses this node (one of `cpus` stays shared)
  std::uint64_t memory_mib = 0;
  std::map<std::uint64_t, std::uint64_t> hugepage_mib;  // page size KiB -> free hugepage MiB

  // CPUs a new dedicated VM may take here.
  std::size_t dedicated_cpus() const { return cpus.size() - (hosts_shared && !cpus.empty() ? 1 : 0); }
};

// One entry per topology node, in the topology's order.
std::vector<NodeFree> free_resources(const HostTopology& host, const HostUsage& usage);

using PlacementResult = std::variant<Placement, Rejection>;

// Places one VM on a host that already carries `usage`. Never returns a placement that breaks the
// rules above; a Rejection's reason names every node and what it lacks.
PlacementResult place(const HostTopology& host, const HostUsage& usage, const PlacementRequest& request);

}  // namespace llmorch::policy
