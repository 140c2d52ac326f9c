// host_state: what managed domains, the host config and other users' memory leave for a new VM.
#include "llmorch/orch/host_state.h"

#include <gtest/gtest.h>

#include <variant>

namespace llmorch::orch {
namespace {

using policy::CpuPolicy;

// Two nodes: CPUs 0-3 and 4-7, 4096 MiB each.
policy::HostTopology two_nodes() {
  policy::HostTopology t;
  for (int n = 0; n < 2; ++n) {
    policy::NumaNode node;
    node.id = n;
    node.memory_kib = 4096ull * 1024;
    for (int c = 4 * n; c < 4 * n + 4; ++c) node.cpus.push_back({c, n, 0, c, {c}});
    t.nodes.push_back(node);
  }
  return t;
}

ManagedDomain vm(const std::string& name, CpuPolicy policy, std::vector<int> cpus,
                 std::map<int, std::uint64_t> mib_per_node, std::uint64_t actual_mib,
                 DomainState state = DomainState::Running) {
  ManagedDomain d;
  d.name = name;
  d.state = state;
  d.memory_actual_kib = actual_mib * 1024;
  auto& p = d.facts.placement;
  p.name = name;
  p.cpu_policy = policy;
  p.cpus = std::move(cpus);
  p.memory_mib_per_node = std::move(mib_per_node);
  for (const auto& [node, mib] : p.memory_mib_per_node) p.nodes.push_back(node);
  return d;
}

policy::Placement placed(const policy::PlacementResult& r) {
  if (auto* rej = std::get_if<policy::Rejection>(&r)) ADD_FAILURE() << "rejected: " << rej->reason;
  return std::get<policy::Placement>(r);
}

std::string rejected(const policy::PlacementResult& r) {
  EXPECT_TRUE(std::holds_alternative<policy::Rejection>(r)) << "unexpectedly placed";
  return std::holds_alternative<policy::Rejection>(r) ? std::get<policy::Rejection>(r).reason : "";
}

TEST(HostState, OthersMemoryIsTotalMinusFreeMinusRunningVmsClampedAtZero) {
  HostSnapshot host{two_nodes(), {}, {{0, 3000}, {1, 4000}}, {}};
  // A spanning VM with 1000 MiB actual, placed 3:1 over the nodes; a shut-off VM counts nothing.
  host.domains.push_back(vm("span", CpuPolicy::Dedicated, {0, 4}, {{0, 1500}, {1, 500}}, 1000));
  host.domains.push_back(vm("off", CpuPolicy::Dedicated, {1}, {{0, 512}}, 512, DomainState::ShutOff));
  EXPECT_EQ(actual_mib_per_node(host.domains[0]), (std::map<int, std::uint64_t>{{0, 750}, {1, 250}}));
  EXPECT_TRUE(actual_mib_per_node(host.domains[1]).empty());
  const auto others = others_mib(host);
  EXPECT_EQ(others.at(0), 4096u - 3000 - 750);
  EXPECT_EQ(others.at(1), 0u);  // 4096 - 4000 = 96 used, the VM claims 250: clamped
}

TEST(HostState, ResidentMemoryOfAFreshVmStandsInForItsBalloonSize) {
  // A just-started VM: balloon 2048 MiB, but QEMU holds only 100 MiB of the node's memory so far.
  HostSnapshot host{
      two_nodes(), {vm("fresh", CpuPolicy::Dedicated, {0}, {{0, 2048}}, 2048)}, {{0, 3000}, {1, 4096}}, {}};
  EXPECT_EQ(others_mib(host).at(0), 0u);  // 1096 used - 2048: clamped, the reservation looks free twice
  host.resident_mib["fresh"] = 100;
  EXPECT_EQ(others_mib(host).at(0), 4096u - 3000 - 100);
  HostConfig config;
  config.memory_reserve_mib = 0;
  // Node 0 gives 4096 - 996 others - 2048 reserved = 1052 MiB.
  EXPECT_EQ(placed(place_on_host(host, config, {"a", 1, 1052})).nodes, std::vector<int>({0}));
  EXPECT_NE(rejected(place_on_host(host, config, {"b", 1, 4097})).find("node 0: 1052 MiB free"), std::string::npos);
}

TEST(HostState, MemoryReserveAndOthersAreUnavailable) {
  HostConfig config;
  config.memory_reserve_mib = 512;
  HostSnapshot host{two_nodes(), {}, {{0, 1000}, {1, 4096}}, {}};  // node 0: others hold 3096 MiB
  const auto usage = host_usage(host, config, CpuPolicy::Dedicated);
  EXPECT_EQ(usage.unavailable_mib.at(0), 3096u + 512);
  EXPECT_EQ(usage.unavailable_mib.at(1), 512u);
  // 3584 MiB fit node 1 only; 3585 fit nowhere and the reason names both nodes.
  EXPECT_EQ(placed(place_on_host(host, config, {"a", 2, 3584})).nodes, std::vector<int>({1}));
  const std::string why = rejected(place_on_host(host, config, {"b", 1, 3585}));
  EXPECT_NE(why.find("node 0: 488 MiB free"), std::string::npos) << why;
  EXPECT_NE(why.find("node 1: 3584 MiB free"), std::string::npos) << why;
}

TEST(HostState, ReservedCpusNeverGoToVms) {
  HostConfig config;
  config.reserved_cpus = {0, 1, 2, 3, 4};
  config.memory_reserve_mib = 0;
  HostSnapshot host{two_nodes(), {}, {}, {}};
  const auto p = placed(place_on_host(host, config, {"a", 3, 1024}));
  EXPECT_EQ(p.cpus, std::vector<int>({5, 6, 7}));
  const auto s = placed(place_on_host(host, config, {"s", 2, 1024, CpuPolicy::Shared}));
  for (int c : s.cpus) EXPECT_GE(c, 5) << "shared pool holds reserved CPU " << c;
}

TEST(HostState, ConfiguredSharedPoolIsKeptFromDedicatedVmsAndBoundsSharedOnes) {
  HostConfig config;
  config.memory_reserve_mib = 0;
  config.shared_cpus = {6, 7};
  HostSnapshot host{two_nodes(), {}, {}, {}};
  // A shared VM goes where shared_cpus are, and its pool is exactly them.
  const auto s = placed(place_on_host(host, config, {"s", 4, 1024, CpuPolicy::Shared}));
  EXPECT_EQ(s.nodes, std::vector<int>({1}));
  EXPECT_EQ(s.cpus, std::vector<int>({6, 7}));
  host.domains.push_back(vm("s", CpuPolicy::Shared, s.cpus, {{1, 1024}}, 1024));
  // Node 1 gives dedicated VMs 4 and 5 only, and keeps no extra CPU back for the shared VM.
  const auto d = placed(place_on_host(host, config, {"d", 6, 1024}));
  for (int c : d.cpus) EXPECT_TRUE(c != 6 && c != 7) << "dedicated VM got shared CPU " << c;
  EXPECT_EQ(placed(place_on_host(host, config, {"d2", 2, 1024})).cpus, std::vector<int>({4, 5}));
  // Memory of the shared VM still counts on node 1: 4096 - 1024 left.
  EXPECT_EQ(placed(place_on_host(host, config, {"d3", 1, 3072})).nodes, std::vector<int>({1}));
  const std::string why = rejected(place_on_host(host, config, {"d4", 1, 3073 + 3072}));
  EXPECT_NE(why.find("node 1: 3072 MiB free"), std::string::npos) << why;
}

TEST(HostState, SharedVmRejectionNamesSharedCpus) {
  HostConfig config;
  config.memory_reserve_mib = 0;
  config.shared_cpus = {7};
  HostSnapshot host{two_nodes(), {}, {}, {}};
  const std::string why = rejected(place_on_host(host, config, {"s", 1, 4096 + 1, CpuPolicy::Shared}));
  EXPECT_NE(why.find("shared_cpus = 7"), std::string::npos) << why;
  EXPECT_THROW(shared_pool(host, config, {0}), ConfigError);
  try {
    shared_pool(host, config, {0});
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'shared_cpus'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(shared_pool(host, config, {0, 1}), std::vector<int>({7}));
}

TEST(HostState, WithoutSharedCpusThePoolIsWhatDedicatedVmsLeave) {
  HostConfig config;
  config.reserved_cpus = {0};
  HostSnapshot host{two_nodes(), {vm("d", CpuPolicy::Dedicated, {1, 2}, {{0, 512}}, 512)}, {}, {}};
  EXPECT_EQ(shared_pool(host, config, {0}), std::vector<int>({3}));
  host.domains.push_back(vm("s", CpuPolicy::Shared, {3}, {{0, 512}}, 512));
  // Node 0 keeps CPU 3 for the shared VM, so a dedicated VM needing 1 CPU goes to node 1.
  EXPECT_EQ(placed(place_on_host(host, config, {"x", 1, 256})).nodes, std::vector<int>({1}));
}

TEST(HostState, CheckConfigNamesTheKeyOfUnknownCpus) {
  HostConfig config;
  config.shared_cpus = {7, 8, 9};
  try {
    check_config(two_nodes(), config);
    FAIL() << "CPUs 8-9 do not exist";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'shared_cpus' names CPU(s) 8-9"), std::string::npos) << e.what();
  }
  config.shared_cpus = {7};
  config.reserved_cpus = {42};
  EXPECT_THROW(check_config(two_nodes(), config), ConfigError);
  config.reserved_cpus = {0};
  EXPECT_NO_THROW(check_config(two_nodes(), config));
}

TEST(HostState, DescribeNodesSaysWhoUsesWhat) {
  HostConfig config;
  config.reserved_cpus = {0};
  config.shared_cpus = {3};
  config.memory_reserve_mib = 100;
  HostSnapshot host{
      two_nodes(),
      {vm("d", CpuPolicy::Dedicated, {1}, {{0, 1024}}, 800), vm("s", CpuPolicy::Shared, {3}, {{0, 512}}, 512)},
      {{0, 2000}, {1, 4096}},
      {}};
  const auto nodes = describe_nodes(host, config);
  ASSERT_EQ(nodes.size(), 2u);
  const NodeUse& n = nodes[0];
  EXPECT_EQ(n.reserved, std::vector<int>({0}));
  EXPECT_EQ(n.dedicated.at("d"), std::vector<int>({1}));
  EXPECT_EQ(n.shared_pool, std::vector<int>({3}));
  EXPECT_EQ(n.shared_vms, std::vector<std::string>({"s"}));
  EXPECT_EQ(n.free, std::vector<int>({2}));
  EXPECT_EQ(n.others_mib, 4096u - 2000 - 800 - 512);
  EXPECT_EQ(n.vm_mib.at("d"), 1024u);
  EXPECT_EQ(n.vm_actual_mib.at("d"), 800u);
  EXPECT_EQ(n.available_mib, 4096u - 100 - n.others_mib - 1024 - 512);
  EXPECT_EQ(nodes[1].free, std::vector<int>({4, 5, 6, 7}));
  EXPECT_TRUE(nodes[1].shared_pool.empty());  // shared_cpus has none on node 1
  EXPECT_EQ(nodes[1].available_mib, 4096u - 100);
}

// Node 0 has a pool of 256 2 MiB pages (512 MiB) and lists 4 KiB pages (not a hugepage pool); node 1
// has no pool but a VM backed by 1 GiB pages placed there (a pool freed after placement): both shown.
TEST(HostState, DescribeNodesShowsHugepagePoolsAndWhoReservesThem) {
  HostSnapshot host{two_nodes(), {}, {{0, 2000}, {1, 4096}}, {}};
  host.topology.nodes[0].pages = {{.size_kib = 4, .count = 1000}, {.size_kib = 2048, .count = 256}};
  host.domains.push_back(vm("hp", CpuPolicy::Dedicated, {1}, {{0, 384}}, 384));
  host.domains.back().facts.placement.hugepage_kib = 2048;
  host.domains.push_back(vm("plain", CpuPolicy::Dedicated, {2}, {{0, 256}}, 256));
  host.domains.push_back(vm("big", CpuPolicy::Dedicated, {4}, {{1, 1024}}, 1024));
  host.domains.back().facts.placement.hugepage_kib = 1048576;
  const auto nodes = describe_nodes(host, HostConfig{});
  ASSERT_EQ(nodes[0].hugepages.size(), 1u);
  const HugepagePool& p = nodes[0].hugepages[0];
  EXPECT_EQ(p.page_kib, 2048u);
  EXPECT_EQ(p.pool_mib, 512u);
  EXPECT_EQ(p.vm_mib, (std::map<std::string, std::uint64_t>{{"hp", 384}}));
  EXPECT_EQ(p.available_mib, 128u);
  ASSERT_EQ(nodes[1].hugepages.size(), 1u);
  EXPECT_EQ(nodes[1].hugepages[0].page_kib, 1048576u);
  EXPECT_EQ(nodes[1].hugepages[0].pool_mib, 0u);
  EXPECT_EQ(nodes[1].hugepages[0].available_mib, 0u);  // over-reserved: clamped, not wrapped
}

// With shared_cpus set, a dedicated request does not see shared VMs' CPUs, but it must still see the
// hugepages a shared VM holds: 512 MiB pool, 384 MiB held by a shared VM, so 256 MiB does not fit.
TEST(HostState, SharedVmsHugepagesCountAgainstADedicatedRequest) {
  HostConfig config;
  config.shared_cpus = {3};
  HostSnapshot host{two_nodes(), {}, {{0, 4096}, {1, 4096}}, {}};
  host.topology.nodes[0].pages = {{.size_kib = 2048, .count = 256}};
  host.domains.push_back(vm("shared-hp", CpuPolicy::Shared, {3}, {{0, 384}}, 384));
  host.domains.back().facts.placement.hugepage_kib = 2048;
  policy::PlacementRequest r{
      .name = "ded-hp", .vcpus = 1, .memory_mib = 256, .cpu_policy = CpuPolicy::Dedicated, .hugepage_kib = 2048};
  EXPECT_NE(rejected(place_on_host(host, config, r)).find("hugepages"), std::string::npos);
  EXPECT_EQ(describe_nodes(host, config)[0].hugepages.at(0).available_mib, 128u);
  r.memory_mib = 128;
  EXPECT_EQ(placed(place_on_host(host, config, r)).nodes, std::vector<int>({0}));
}

}  // namespace
}  // namespace llmorch::orch
