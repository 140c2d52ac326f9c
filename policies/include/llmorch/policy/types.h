// Core value types shared by every decision in llmorch. Plain data, standard library only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace llmorch::policy {

using CpuId = int;
using NodeId = int;

// ---------------------------------------------------------------------------------------------
// Host topology (what libvirt's capabilities XML describes).

struct Cpu {
  CpuId id = 0;
  int socket_id = 0;
  int die_id = 0;
  int core_id = 0;
  std::vector<CpuId> siblings;  // SMT threads of the same core, including this CPU, sorted
};

struct PageInfo {
  std::uint64_t size_kib = 0;  // 4, 2048, 1048576
  std::uint64_t count = 0;     // as reported; may disagree with memory_kib (do not trust blindly)
};

struct NumaNode {
  NodeId id = 0;
  std::uint64_t memory_kib = 0;     // total memory of the node
  std::vector<Cpu> cpus;            // sorted by id; may be empty (memory-only node)
  std::vector<PageInfo> pages;      // sorted by size
  std::map<NodeId, int> distances;  // empty when the host did not report distances
};

struct HostTopology {
  std::vector<NumaNode> nodes;  // sorted by id; ids need not be 0..N-1

  const NumaNode* node(NodeId id) const;
  // NUMA distance; 10 for a == b and 20 otherwise when the host gave no distances.
  int distance(NodeId a, NodeId b) const;
  std::size_t cpu_count() const;
};

// ---------------------------------------------------------------------------------------------
// Placement.

enum class CpuPolicy { Dedicated, Shared };

// "dedicated" / "shared": the one spelling in templates, domain metadata, CLI arguments and JSON.
std::string_view to_string(CpuPolicy p);
// The policy named `text`; nullopt when it is neither name (the caller says what it expected).
std::optional<CpuPolicy> cpu_policy_from_string(std::string_view text);

struct PlacementRequest {
  std::string name;
  int vcpus = 1;
  std::uint64_t memory_mib = 0;
  CpuPolicy cpu_policy = CpuPolicy::Dedicated;
  std::uint64_t hugepage_kib = 0;  // 0: ordinary pages; else 2048 or 1048576
};

// One guest NUMA cell: the vCPUs and memory that live on one host node.
struct GuestCell {
  NodeId host_node = 0;
  std::vector<int> vcpus;  // guest vCPU indices in this cell
  std::uint64_t memory_mib = 0;
};

struct Placement {
  std::string name;
  std::vector<NodeId> nodes;  // host nodes used, ascending
  // Dedicated: cpus[i] is the host CPU vCPU i is pinned to (size == vcpus).
  // Shared: the pool of host CPUs the vCPUs float over (the unreserved CPUs of `nodes`).
  std::vector<CpuId> cpus;
  std::map<NodeId, std::uint64_t> memory_mib_per_node;
  std::vector<GuestCell> cells;  // one per node; a single-node VM has one cell
  CpuPolicy cpu_policy = CpuPolicy::Dedicated;
  std::uint64_t hugepage_kib = 0;
  int vcpus = 0;
};

// What is already taken on the host before a decision.
struct HostUsage {
  std::set<CpuId> reserved_cpus;  // never given to VMs
  std::vector<Placement> placed;  // VMs already placed
  // Memory each node cannot give to VMs beyond what `placed` uses (host reserve, other processes).
  // Absent: nothing beyond `placed`.
  std::map<NodeId, std::uint64_t> unavailable_mib;
};

struct Rejection {
  std::string name;
  std::string reason;  // one line; names every node and why it could not take the VM
};

// ---------------------------------------------------------------------------------------------
// Weights and CPU division.

struct VmDemand {
  std::string name;
  double priority = 1.0;      // > 0; 1 is the most important
  int min_cpus = 1;           // whole CPUs the VM must keep
  int max_cpus = 1;           // whole CPUs the VM can use (its vCPU count)
  double demand_cpus = -1.0;  // CPUs the VM can use now (from its load); < 0 means "unknown: max"
};

}  // namespace llmorch::policy
