// The host as placement sees it: what the managed domains, the host config and the memory other
// processes hold leave for a new VM. Pure: libvirt's answers (topology, managed domains, free memory
// per node) come in as values; `llmorch place`, `llmorch host` and the tests share it.
//
// Rules:
// - Every managed domain counts, running or shut off: its definition pins CPUs and reserves memory
//   (placement.memory_mib_per_node, i.e. max_memory_mib) that a later start needs.
// - reserved_cpus never go to VMs.
// - shared_cpus set: dedicated VMs never take those CPUs, and a shared VM's pool is shared_cpus ∩ the
//   CPUs of its node(s); a node without any of them cannot take a shared VM. shared_cpus empty: the
//   pool is the node's CPUs minus reserved and dedicated ones, and a node hosting shared VMs keeps one
//   CPU out of dedicated use (policy::place's rule).
// - Memory a node cannot give to new VMs, beyond what managed domains reserve:
//     memory_reserve_mib (host config), plus
//     others = node total − node free now − Σ actual memory (balloon size) of the running managed VMs
//              on that node, clamped at 0.
//   `others` is what non-llmorch users hold now (host kernel, page cache, other processes, QEMU's own
//   overhead). A running VM's actual memory is split over its nodes in proportion to its placement's
//   memory per node. Nodes missing from the free-memory map count as fully free (others = 0).
//   Refinement: when the hypervisor reports a running VM's resident memory (QEMU's RSS), that is used
//   instead of its actual memory. A freshly started guest has touched little of its memory, so its
//   balloon size is far above what it takes from the node's free memory; subtracting the balloon size
//   would hand its untouched reservation out a second time (two `place` in a row would both fit).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "llmorch/orch/config.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/policy/placement.h"
#include "llmorch/policy/types.h"

namespace llmorch::orch {

struct HostSnapshot {
  policy::HostTopology topology;
  std::vector<ManagedDomain> domains;                 // every managed domain, any state
  std::map<policy::NodeId, std::uint64_t> free_mib;   // free memory per node now
  std::map<std::string, std::uint64_t> resident_mib;  // running VMs' RSS, where known
};

// Throws ConfigError naming the key when reserved_cpus or shared_cpus name CPUs the host lacks.
void check_config(const policy::HostTopology& topology, const HostConfig& config);

// A running VM's actual memory per node (MiB), or `mib` split the same way when given; empty for a
// domain that is not active.
std::map<policy::NodeId, std::uint64_t> actual_mib_per_node(const ManagedDomain& domain,
                                                            std::optional<std::uint64_t> mib = std::nullopt);

// Memory non-llmorch users hold per node now (see the rule above).
std::map<policy::NodeId, std::uint64_t> others_mib(const HostSnapshot& host);

// What is taken, as policy::place needs it for a request of `cpu_policy`.
policy::HostUsage host_usage(const HostSnapshot& host, const HostConfig& config, policy::CpuPolicy cpu_policy);

// Places one VM with the rules above. A rejection names every node; with shared_cpus set, a shared
// VM's rejection also names the key.
policy::PlacementResult place_on_host(const HostSnapshot& host, const HostConfig& config,
                                      const policy::PlacementRequest& request);

// The pool shared vCPUs on `nodes` float over now. Throws ConfigError naming shared_cpus when that
// key is set and has no CPU on those nodes.
std::vector<policy::CpuId> shared_pool(const HostSnapshot& host, const HostConfig& config,
                                       const std::vector<policy::NodeId>& nodes);

// A node's pool of hugepages of one size, as placement counts it: the pool (capabilities' page count,
// at most the node's memory), what managed VMs backed by such pages reserve there, and the rest.
struct HugepagePool {
  std::uint64_t page_kib = 0;
  std::uint64_t pool_mib = 0;
  std::map<std::string, std::uint64_t> vm_mib;  // VM -> MiB of these pages it reserves on the node
  std::uint64_t available_mib = 0;              // what placement can still give: pool − Σ vm_mib, at least 0
};

// One node as `llmorch host` shows it.
struct NodeUse {
  policy::NodeId id = 0;
  std::vector<policy::CpuId> cpus;                              // all of the node's CPUs
  std::vector<policy::CpuId> reserved;                          // reserved_cpus on this node
  std::map<std::string, std::vector<policy::CpuId>> dedicated;  // VM -> CPUs it holds here
  std::vector<policy::CpuId> shared_pool;                       // where shared vCPUs float (empty: none possible)
  std::vector<std::string> shared_vms;                          // shared VMs with memory on this node
  std::vector<policy::CpuId> free;  // neither reserved, dedicated nor in a configured shared pool
  std::uint64_t total_mib = 0;
  std::uint64_t free_mib = 0;                          // free now (kernel's view)
  std::uint64_t reserve_mib = 0;                       // memory_reserve_mib
  std::uint64_t others_mib = 0;                        // non-llmorch users now
  std::map<std::string, std::uint64_t> vm_mib;         // reserved by each managed VM here
  std::map<std::string, std::uint64_t> vm_actual_mib;  // running VMs' balloon size here
  std::uint64_t available_mib = 0;      // what a new VM could get: total − reserve − others − Σ vm_mib
  std::vector<HugepagePool> hugepages;  // page sizes above 4 KiB with a pool or a VM using them
};

std::vector<NodeUse> describe_nodes(const HostSnapshot& host, const HostConfig& config);

}  // namespace llmorch::orch
