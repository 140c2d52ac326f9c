// Host descriptions for tests, demos and simulations: libvirt capabilities XML (what `virsh
// capabilities` prints) generated from a few numbers, so the project needs no real host's files.
//
// A host is sockets x nodes_per_socket NUMA nodes, each with cores_per_node cores of threads_per_core
// hardware threads. CPU ids follow one of the numberings real kernels use:
//   SmtSplit     first threads of every core, then second threads (Intel and AMD on Linux: siblings
//                n and n + cores); a node's CPUs are two contiguous ranges.
//   Adjacent     a core's threads are consecutive ids (siblings 2k, 2k+1).
//   Interleaved  nodes take cores round-robin (BIOS "node interleave" numbering): a node's CPU ids are
//                not contiguous.
// Node ids are 0..N-1 unless node_ids names them (sparse ids), plus memory_only nodes (memory, no CPUs).
// Pages: 4 KiB count = (memory - hugepages) / 4 KiB unless pages_4k overrides it (to model hosts whose
// counts disagree with their memory). Distances: 10 local, same_socket within a socket, remote across;
// none at all when with_distances is false.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmorch::tools {

struct HostSpec {
  std::string name;
  std::string description;
  int sockets = 1;
  int nodes_per_socket = 1;
  int cores_per_node = 2;
  int threads_per_core = 1;
  enum class Numbering { SmtSplit, Adjacent, Interleaved } numbering = Numbering::SmtSplit;
  // Per node, in node order; a single value applies to every node. Memory in KiB.
  std::vector<std::uint64_t> memory_kib{4ull << 20};
  std::vector<std::uint64_t> hugepages_2m{0};
  std::vector<std::uint64_t> hugepages_1g{0};
  std::vector<std::uint64_t> pages_4k;  // empty: derived from memory
  std::vector<int> node_ids;            // empty: 0..N-1
  std::vector<int> core_ids;            // per core within a socket; empty: 0..cores-1 (gaps allowed)
  struct MemoryOnlyNode {
    int id;
    std::uint64_t memory_kib;
  };
  std::vector<MemoryOnlyNode> memory_only;
  bool with_distances = true;
  int same_socket = 12;
  int remote = 21;
  std::string model = "qemu64";
};

// The capabilities document. Throws std::invalid_argument on an inconsistent spec (a per-node list of
// the wrong length, duplicate node ids, non-positive counts), naming the field.
std::string render_capabilities(const HostSpec& spec);

// The project's named host descriptions (tests/fixtures/hosts/NAME.xml are their rendering).
const std::vector<HostSpec>& presets();
const HostSpec* find_preset(const std::string& name);

}  // namespace llmorch::tools
