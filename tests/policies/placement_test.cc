#include "llmorch/policy/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "llmorch/orch/topology.h"

namespace llmorch::policy {
namespace {

const std::string kHosts = LLMORCH_HOSTS_DIR;

// Every host description: the project's own, and real hosts' files when a directory of them exists.
std::vector<std::string> host_files() {
  std::vector<std::string> files;
  for (const std::filesystem::path& dir :
       {std::filesystem::path(kHosts), std::filesystem::path(LLMORCH_REAL_HOSTS_DIR)}) {
    if (!std::filesystem::is_directory(dir)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".xml") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

HostTopology fixture(const std::string& name) { return orch::parse_capabilities_file(kHosts + "/" + name); }

PlacementRequest vm(std::string name, int vcpus, std::uint64_t mib, CpuPolicy policy = CpuPolicy::Dedicated,
                    std::uint64_t hugepage_kib = 0) {
  return PlacementRequest{std::move(name), vcpus, mib, policy, hugepage_kib};
}

// Places and records the VM; fails the test on rejection.
Placement must_place(const HostTopology& host, HostUsage& usage, const PlacementRequest& request) {
  PlacementResult r = place(host, usage, request);
  if (const auto* rej = std::get_if<Rejection>(&r)) {
    ADD_FAILURE() << "rejected: " << rej->reason;
    return {};
  }
  usage.placed.push_back(std::get<Placement>(r));
  return usage.placed.back();
}

std::string must_reject(const HostTopology& host, const HostUsage& usage, const PlacementRequest& request) {
  PlacementResult r = place(host, usage, request);
  if (const auto* rej = std::get_if<Rejection>(&r)) {
    EXPECT_EQ(rej->name, request.name);
    return rej->reason;
  }
  ADD_FAILURE() << "placed '" << request.name << "' on " << std::get<Placement>(r).nodes.size() << " nodes";
  return {};
}

NodeId node_of(const HostTopology& host, CpuId cpu) {
  for (const NumaNode& n : host.nodes) {
    for (const Cpu& c : n.cpus) {
      if (c.id == cpu) return n.id;
    }
  }
  return -1;
}

// The rules place() promises, checked over everything placed so far.
void check_invariants(const HostTopology& host, const HostUsage& usage) {
  std::set<CpuId> dedicated;
  std::map<NodeId, std::uint64_t> mib, huge_mib;
  for (const Placement& p : usage.placed) {
    SCOPED_TRACE(p.name);
    ASSERT_FALSE(p.nodes.empty());
    EXPECT_TRUE(std::is_sorted(p.nodes.begin(), p.nodes.end()));
    ASSERT_EQ(p.cells.size(), p.nodes.size());
    int vcpu = 0;
    std::uint64_t cell_mib = 0;
    for (std::size_t i = 0; i < p.cells.size(); ++i) {
      EXPECT_EQ(p.cells[i].host_node, p.nodes[i]);
      EXPECT_FALSE(p.cells[i].vcpus.empty());
      EXPECT_GT(p.cells[i].memory_mib, 0u);
      EXPECT_EQ(p.memory_mib_per_node.at(p.nodes[i]), p.cells[i].memory_mib);
      for (int v : p.cells[i].vcpus) {
        EXPECT_EQ(v, vcpu++);
        if (p.cpu_policy == CpuPolicy::Dedicated) {
          EXPECT_EQ(node_of(host, p.cpus[v]), p.nodes[i]);
        }
      }
      cell_mib += p.cells[i].memory_mib;
      mib[p.nodes[i]] += p.cells[i].memory_mib;
      if (p.hugepage_kib) {
        EXPECT_EQ(p.cells[i].memory_mib % (p.hugepage_kib / 1024), 0u);
        huge_mib[p.nodes[i]] += p.cells[i].memory_mib;
      }
    }
    EXPECT_EQ(vcpu, p.vcpus);
    EXPECT_EQ(p.memory_mib_per_node.size(), p.nodes.size());
    EXPECT_GT(cell_mib, 0u);
    for (CpuId c : p.cpus) {
      EXPECT_EQ(usage.reserved_cpus.count(c), 0u) << "reserved CPU " << c << " used";
      EXPECT_NE(std::find(p.nodes.begin(), p.nodes.end(), node_of(host, c)), p.nodes.end());
    }
    if (p.cpu_policy == CpuPolicy::Dedicated) {
      EXPECT_EQ(p.cpus.size(), static_cast<std::size_t>(p.vcpus));
      for (CpuId c : p.cpus) EXPECT_TRUE(dedicated.insert(c).second) << "CPU " << c << " pinned twice";
    }
  }
  for (const Placement& p : usage.placed) {  // shared pools never include another VM's dedicated CPUs
    if (p.cpu_policy != CpuPolicy::Shared) continue;
    EXPECT_FALSE(p.cpus.empty());
  }
  for (const NumaNode& n : host.nodes) {
    const auto unavailable = usage.unavailable_mib.count(n.id) ? usage.unavailable_mib.at(n.id) : 0;
    EXPECT_LE(mib[n.id] + unavailable, n.memory_kib / 1024) << "node " << n.id;
    EXPECT_LE(huge_mib[n.id] * 1024, n.memory_kib) << "node " << n.id;
  }
}

TEST(Placement, SingleNodeBestFit) {
  const HostTopology host = fixture("x86-4node-uneven-synthetic.xml");  // 1/2/3/4 GiB, 4 CPUs each
  HostUsage usage;
  // Nodes 1-3 have the memory; all have 4 CPUs: the least memory left wins.
  EXPECT_EQ(must_place(host, usage, vm("a", 2, 1500)).nodes, std::vector<NodeId>{1});
  // Node 1 now has 2 CPUs free, the fewest: best fit keeps the others whole.
  EXPECT_EQ(must_place(host, usage, vm("b", 1, 100)).nodes, std::vector<NodeId>{1});
  EXPECT_EQ(must_place(host, usage, vm("c", 4, 100)).nodes, std::vector<NodeId>{0});
  // Nodes 2 and 3 both have 4 CPUs: node 2 is left with less memory.
  EXPECT_EQ(must_place(host, usage, vm("d", 3, 3000)).nodes, std::vector<NodeId>{2});
  const Placement e = must_place(host, usage, vm("e", 2, 2000));
  EXPECT_EQ(e.nodes, std::vector<NodeId>{3});
  EXPECT_EQ(e.cells.size(), 1u);
  EXPECT_EQ(e.memory_mib_per_node.at(3), 2000u);
  check_invariants(host, usage);
}

TEST(Placement, KeepsSmtSiblingsTogether) {
  const HostTopology host = fixture("x86-2node-96cpu-cascadelake.xml");  // pairs n, n+48
  HostUsage usage;
  EXPECT_EQ(must_place(host, usage, vm("a", 4, 1024)).cpus, (std::vector<CpuId>{0, 48, 1, 49}));
  EXPECT_EQ(must_place(host, usage, vm("b", 3, 1024)).cpus, (std::vector<CpuId>{2, 50, 3}));
  // One vCPU goes to the half-used core rather than breaking a whole one.
  EXPECT_EQ(must_place(host, usage, vm("c", 1, 1024)).cpus, (std::vector<CpuId>{51}));
  EXPECT_EQ(must_place(host, usage, vm("d", 2, 1024)).cpus, (std::vector<CpuId>{4, 52}));
  check_invariants(host, usage);
}

TEST(Placement, FourThreadCoresAndReservedCpus) {
  HostTopology host;
  NumaNode n;
  n.memory_kib = 8 << 20;
  for (CpuId id = 0; id < 8; ++id) {
    const CpuId first = id / 4 * 4;
    n.cpus.push_back(Cpu{id, 0, 0, id / 4, {first, first + 1, first + 2, first + 3}});
  }
  host.nodes.push_back(n);
  HostUsage usage;
  usage.reserved_cpus = {0};
  EXPECT_EQ(must_place(host, usage, vm("a", 4, 64)).cpus, (std::vector<CpuId>{4, 5, 6, 7}));
  EXPECT_EQ(must_place(host, usage, vm("b", 2, 64)).cpus, (std::vector<CpuId>{1, 2}));
  const std::string why = must_reject(host, usage, vm("c", 2, 64));
  EXPECT_NE(why.find("node 0: 1 CPUs free, 2 needed"), std::string::npos) << why;
  check_invariants(host, usage);
}

TEST(Placement, SpansTwoNodesWithMatchingCells) {
  const HostTopology host = fixture("x86-2node-96cpu-cascadelake.xml");
  HostUsage usage;
  usage.reserved_cpus = {0, 48};
  const Placement p = must_place(host, usage, vm("big", 60, 40000));
  EXPECT_EQ(p.nodes, (std::vector<NodeId>{0, 1}));
  ASSERT_EQ(p.cells.size(), 2u);
  // Node 0 gives 46 CPUs, node 1 48: vCPUs split in proportion, exact sums.
  EXPECT_EQ(p.cells[0].vcpus.size() + p.cells[1].vcpus.size(), 60u);
  EXPECT_EQ(p.cells[0].vcpus.size(), 29u);
  EXPECT_EQ(p.cells[1].vcpus.size(), 31u);
  EXPECT_EQ(p.cells[0].memory_mib + p.cells[1].memory_mib, 40000u);
  // Memory follows what each node has free (node 1 has a little more).
  const double free0 = host.nodes[0].memory_kib / 1024, free1 = host.nodes[1].memory_kib / 1024;
  EXPECT_NEAR(p.cells[0].memory_mib, 40000 * free0 / (free0 + free1), 1.0);
  check_invariants(host, usage);
}

TEST(Placement, SpansTheNearestNodesOnEpyc) {
  const HostTopology host = fixture("x86-8node-384cpu-epyc-nps4.xml");
  {
    HostUsage usage;
    const Placement p = must_place(host, usage, vm("wide", 120, 1000));
    EXPECT_EQ(p.nodes, (std::vector<NodeId>{0, 1, 2}));  // three nodes of one socket, distance 12
  }
  HostUsage usage;
  for (NodeId id : {0, 1, 2}) {  // ties go to the lowest id
    EXPECT_EQ(must_place(host, usage, vm("fill" + std::to_string(id), 48, 1000)).nodes, std::vector<NodeId>{id});
  }
  // Node 3 plus a node of the other socket (distance 32) would fit; two nodes of socket 1 (12) win.
  const Placement p = must_place(host, usage, vm("span", 64, 1000));
  ASSERT_EQ(p.nodes.size(), 2u);
  EXPECT_EQ(host.distance(p.nodes[0], p.nodes[1]), 12);
  EXPECT_GE(p.nodes[0], 4);
  // A VM that fits node 3 alone goes there, not across nodes.
  EXPECT_EQ(must_place(host, usage, vm("small", 40, 1000)).nodes, std::vector<NodeId>{3});
  check_invariants(host, usage);
}

TEST(Placement, GreedyNodeSetsOnLargeHosts) {
  HostTopology host;  // 16 nodes on a line: distance grows with |i - j|
  for (NodeId id = 0; id < 16; ++id) {
    NumaNode n;
    n.id = id;
    n.memory_kib = 1 << 20;
    for (CpuId c = 0; c < 4; ++c) n.cpus.push_back(Cpu{id * 4 + c, 0, 0, id * 4 + c, {id * 4 + c}});
    for (NodeId other = 0; other < 16; ++other) n.distances[other] = 10 + 10 * std::abs(id - other);
    host.nodes.push_back(n);
  }
  HostUsage usage;
  usage.reserved_cpus = {24, 25, 26, 27};  // all of node 6
  for (NodeId id : {0, 1, 2, 3, 4}) {
    EXPECT_EQ(must_place(host, usage, vm("fill" + std::to_string(id), 4, 10)).nodes, std::vector<NodeId>{id});
  }
  // 10 usable nodes: too many to try every set. 10 vCPUs need 3 nodes: 5-7-8 has the lowest ids, but the run 7-8-9 is
  // nearer (70 vs 90).
  EXPECT_EQ(must_place(host, usage, vm("big", 10, 10)).nodes, (std::vector<NodeId>{7, 8, 9}));
  check_invariants(host, usage);
}

TEST(Placement, HugepagesAreTrackedPerNodeAndCapped) {
  const HostTopology epyc = fixture("x86-8node-384cpu-epyc-nps4.xml");  // 16 GiB of 2 MiB pages per node
  HostUsage usage;
  const Placement a = must_place(epyc, usage, vm("a", 4, 16384, CpuPolicy::Dedicated, 2048));
  const Placement b = must_place(epyc, usage, vm("b", 4, 16384, CpuPolicy::Dedicated, 2048));
  EXPECT_NE(a.nodes, b.nodes);  // node a's hugepages are used up though its memory is not
  // 40 GiB of 2 MiB pages spans three nodes' pools even though one node has the memory.
  const Placement c = must_place(epyc, usage, vm("c", 8, 40960, CpuPolicy::Dedicated, 2048));
  EXPECT_EQ(c.nodes.size(), 3u);
  const std::string why = must_reject(epyc, usage, vm("d", 2, 2048, CpuPolicy::Dedicated, 1048576));
  EXPECT_NE(why.find("0 MiB of 1 GiB hugepages free"), std::string::npos) << why;
  check_invariants(epyc, usage);

  const HostTopology uneven = fixture("x86-4node-uneven-synthetic.xml");
  // 4096 x 2 MiB pages reported on a 1 GiB node: capacity is the node's memory.
  EXPECT_EQ(hugepage_capacity_kib(uneven.nodes[0], 2048), 1048576u);
  EXPECT_EQ(hugepage_capacity_kib(uneven.nodes[0], 1048576), 1048576u);
  EXPECT_EQ(hugepage_capacity_kib(uneven.nodes[0], 512), 0u);
  HostUsage u2;
  must_place(uneven, u2, vm("h", 1, 4096, CpuPolicy::Dedicated, 1048576));
  check_invariants(uneven, u2);
  const std::string odd = must_reject(uneven, u2, vm("odd", 1, 1000, CpuPolicy::Dedicated, 2048 * 512));
  EXPECT_NE(odd.find("not a whole number of 1 GiB hugepages"), std::string::npos) << odd;
}

TEST(Placement, SharedVmsFloatOverUndedicatedCpus) {
  const HostTopology host = fixture("x86-1node-2cpu-small.xml");
  HostUsage usage;
  EXPECT_EQ(must_place(host, usage, vm("s1", 4, 512, CpuPolicy::Shared)).cpus, (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(must_place(host, usage, vm("d1", 1, 512)).cpus, (std::vector<CpuId>{0}));
  // The last CPU stays with the shared VM.
  const std::string why = must_reject(host, usage, vm("d2", 1, 512));
  EXPECT_NE(why.find("node 0: 0 CPUs free (1 kept for shared VMs), 1 needed"), std::string::npos) << why;
  EXPECT_EQ(must_place(host, usage, vm("s2", 2, 512, CpuPolicy::Shared)).cpus, (std::vector<CpuId>{1}));
  check_invariants(host, usage);
}

TEST(Placement, MemoryOnlyNodesAndUnavailableMemory) {
  HostTopology host;
  for (NodeId id : {2, 5}) {
    NumaNode n;
    n.id = id;
    n.memory_kib = 4 << 20;
    if (id == 2) n.cpus = {Cpu{10, 0, 0, 0, {10}}, Cpu{11, 0, 0, 1, {11}}};
    host.nodes.push_back(n);
  }
  HostUsage usage;
  usage.unavailable_mib[2] = 1024;
  EXPECT_EQ(must_place(host, usage, vm("a", 1, 3072)).nodes, std::vector<NodeId>{2});
  const std::string why = must_reject(host, usage, vm("b", 1, 1));
  EXPECT_NE(why.find("node 2: 0 MiB free, 1 needed; node 5: no CPUs (memory-only node)"), std::string::npos) << why;
  check_invariants(host, usage);
}

TEST(Placement, RejectionsNameEveryNode) {
  HostTopology host;
  for (NodeId id : {0, 1}) {
    NumaNode n;
    n.id = id;
    n.memory_kib = (id == 0 ? 8192 : 2048) * 1024;
    for (CpuId c = 0; c < (id == 0 ? 6 : 8); ++c) n.cpus.push_back(Cpu{id * 10 + c, id, 0, c, {id * 10 + c}});
    host.nodes.push_back(n);
  }
  HostUsage usage;
  const std::string why = must_reject(host, usage, vm("big", 16, 4096));
  EXPECT_EQ(why,
            "no NUMA node set fits 'big' (16 vCPUs, 4096 MiB): node 0: 6 CPUs free, 16 needed; node 1: 8 CPUs "
            "free, 16 needed, 2048 MiB free, 4096 needed; all 2 usable nodes together have 14 CPUs and 10240 MiB free");
  EXPECT_NE(must_reject(host, usage, vm("z", 0, 10)).find("at least 1"), std::string::npos);
  EXPECT_NE(must_reject(host, usage, vm("m", 1, 0)).find("0 MiB"), std::string::npos);
  EXPECT_NE(must_reject(host, usage, vm("p", 1, 10, CpuPolicy::Dedicated, 3)).find("KiB hugepages"), std::string::npos);
  must_place(host, usage, vm("dup", 1, 10));
  EXPECT_NE(must_reject(host, usage, vm("dup", 1, 10)).find("already placed"), std::string::npos);
}

// Random VMs until the host is full: the invariants hold after every decision.
TEST(PlacementProperty, FillingEveryFixtureNeverDoubleAllocates) {
  const std::vector<std::string> files = host_files();
  ASSERT_GE(files.size(), 6u) << "the project's host descriptions are missing from " << kHosts;
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const HostTopology host = orch::parse_capabilities_file(file);
    std::mt19937 rng(12345);
    HostUsage usage;
    for (const NumaNode& n : host.nodes)
      if (usage.reserved_cpus.empty() && !n.cpus.empty()) usage.reserved_cpus = {n.cpus[0].id};
    usage.unavailable_mib[host.nodes.back().id] = 256;
    const int max_vcpus = static_cast<int>(host.cpu_count() / 3) + 1;
    std::uint64_t total_mib = 0;
    for (const NumaNode& n : host.nodes) total_mib += n.memory_kib / 1024;
    const std::uint64_t max_mib = total_mib / 3 + 1;
    int misses = 0, placed = 0;
    for (int i = 0; misses < 30 && i < 2000; ++i) {
      const bool big = rng() % 4 == 0;  // mostly small VMs, so the host really fills up
      PlacementRequest r = vm("vm" + std::to_string(i), std::uniform_int_distribution(1, big ? max_vcpus : 8)(rng),
                              std::uniform_int_distribution<std::uint64_t>(1, big ? max_mib : 2048)(rng));
      if (rng() % 5 == 0) r.cpu_policy = CpuPolicy::Shared;
      if (rng() % 4 == 0) {
        r.hugepage_kib = 2048;
        r.memory_mib += r.memory_mib % 2;
      }
      PlacementResult result = place(host, usage, r);
      if (auto* p = std::get_if<Placement>(&result)) {
        usage.placed.push_back(std::move(*p));
        ++placed;
        check_invariants(host, usage);
        if (HasFatalFailure() || HasNonfatalFailure()) return;
      } else {
        ++misses;
        EXPECT_FALSE(std::get<Rejection>(result).reason.empty());
      }
    }
    EXPECT_GT(placed, 2);
  }
}

}  // namespace
}  // namespace llmorch::policy
