#include "llmorch/policy/cpu_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

namespace llmorch::policy {
namespace {

VmCpuInput dedicated(std::string name, NodeId node, std::vector<CpuId> cpus, int max, double prio, double demand = -1) {
  VmCpuInput vm;
  vm.name = std::move(name);
  vm.cpu_policy = CpuPolicy::Dedicated;
  vm.nodes = {node};
  vm.cpus = std::move(cpus);
  vm.max_vcpus = max;
  vm.priority = prio;
  vm.demand_cpus = demand;
  return vm;
}

VmCpuInput shared(std::string name, std::vector<CpuId> pool, double prio) {
  VmCpuInput vm;
  vm.name = std::move(name);
  vm.cpu_policy = CpuPolicy::Shared;
  vm.nodes = {0};
  vm.cpus = std::move(pool);
  vm.max_vcpus = 2;
  vm.priority = prio;
  return vm;
}

TEST(CpuPlan, SharedVmsGetSharesInTheRatioOfTheirWeights) {
  const std::vector<VmCpuInput> vms = {shared("a", {1}, 1), shared("b", {1}, 3)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  ASSERT_EQ(plan.vms.size(), 2u);
  EXPECT_NEAR(plan.vms[0].weight, 0.9 / (0.9 + 0.8 / 3 + 0.1), 1e-9);
  EXPECT_NEAR(plan.vms[1].weight, (0.8 / 3 + 0.1) / (0.9 + 0.8 / 3 + 0.1), 1e-9);
  EXPECT_NEAR(double(plan.vms[0].cpu_shares) / plan.vms[1].cpu_shares, plan.vms[0].weight / plan.vms[1].weight, 0.01);
  // Shared VMs keep their pool and vCPU count.
  EXPECT_EQ(plan.vms[0].cpus, std::vector<CpuId>{1});
  EXPECT_FALSE(plan.vms[0].vcpus_online.has_value());
}

TEST(CpuPlan, DedicatedVmsOnANodeDivideTheCpusTheyHoldByWeight) {
  // Two busy VMs holding 4 CPUs each on node 0, may grow to 8: priority 1 vs 3 gives 6 and 2
  // (weights 0.711 and 0.289 of 8 CPUs = 5.68 and 2.32).
  const std::vector<VmCpuInput> vms = {dedicated("hi", 0, {0, 1, 2, 3}, 8, 1), dedicated("lo", 0, {4, 5, 6, 7}, 8, 3)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].vcpus_online, 6);
  EXPECT_EQ(plan.vms[1].vcpus_online, 2);
  // Stable: each keeps a prefix of what it held; the loser's highest vCPUs' CPUs move.
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1, 2, 3, 6, 7}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{4, 5}));
}

TEST(CpuPlan, AnIdleVmGivesItsCpusToABusyOne) {
  const std::vector<VmCpuInput> vms = {dedicated("busy", 0, {0, 1}, 4, 3, 4.0),
                                       dedicated("idle", 0, {2, 3}, 4, 1, 0.1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].vcpus_online, 3);  // idle keeps its minimum of 1
  EXPECT_EQ(plan.vms[1].vcpus_online, 1);
  EXPECT_EQ(plan.vms[1].cpus, std::vector<CpuId>{2});
}

TEST(CpuPlan, CpusNoVmWantsStayWithTheirHolders) {
  // Both idle: divide() wants 1 CPU each and leaves 6 unassigned. Dropping them would shrink the
  // node's pool for good (the held set is recorded), so each VM keeps what it holds.
  const std::vector<VmCpuInput> idle = {dedicated("a", 0, {0, 1, 2, 3}, 4, 1, 0.2),
                                        dedicated("b", 0, {4, 5, 6, 7}, 4, 3, 0.2)};
  const CpuPlan plan = plan_cpus(idle, 0.8);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1, 2, 3}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{4, 5, 6, 7}));
}

TEST(CpuPlan, ABusyVmTakesOnlyWhatItWantsAndTheIdleOneKeepsTheRest) {
  // busy may use 5 (one more than it holds), idle 1: the division is 5 and 1, and the 2 CPUs nobody
  // wants go back to idle, which held them.
  const std::vector<VmCpuInput> vms = {dedicated("busy", 0, {0, 1, 2, 3}, 5, 3, 8.0),
                                       dedicated("idle", 0, {4, 5, 6, 7}, 4, 1, 0.2)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1, 2, 3, 7}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{4, 5, 6}));
  EXPECT_EQ(plan.vms[1].vcpus_online, 3);
}

TEST(CpuPlan, UnwantedCpusGoBackToTheHeavierHolderFirst) {
  // Division: a 1, b 1, c 3 of 6. a and b free 3 CPUs, c takes 2; the one left goes back to a
  // (priority 1) rather than b (priority 5).
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 1}, 2, 1, 0.1), dedicated("b", 0, {2, 3, 4}, 3, 5, 0.1),
                                       dedicated("c", 0, {5}, 3, 9, 9.0)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{2}));
  EXPECT_EQ(plan.vms[2].cpus, (std::vector<CpuId>{5, 3, 4}));
}

TEST(CpuPlan, ADedicatedVmHoldingNoCpusIsLeftAlone) {
  // Without the guard, two VMs with min 1 would share one CPU and one would get 0 vCPUs online.
  const std::vector<VmCpuInput> vms = {dedicated("held", 0, {3}, 2, 5), dedicated("none", 0, {}, 2, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].cpus, std::vector<CpuId>{3});
  EXPECT_EQ(plan.vms[0].vcpus_online, 1);
  EXPECT_TRUE(plan.vms[1].cpus.empty());
  EXPECT_FALSE(plan.vms[1].vcpus_online.has_value());
}

TEST(CpuPlan, NodesAreDividedSeparatelyAndSpanningVmsAreLeftAlone) {
  VmCpuInput span = dedicated("span", 0, {8, 9}, 2, 1);
  span.nodes = {0, 1};
  const std::vector<VmCpuInput> vms = {dedicated("n0", 0, {0, 1}, 4, 1), dedicated("n1", 1, {4, 5}, 4, 5), span};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  // Alone on their node, each keeps exactly the CPUs it holds, whatever its priority.
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{4, 5}));
  EXPECT_EQ(plan.vms[2].cpus, (std::vector<CpuId>{8, 9}));
  EXPECT_FALSE(plan.vms[2].vcpus_online.has_value());
}

TEST(CpuPlan, ABadPriorityLeavesOnlyThatVmOut) {
  const std::vector<VmCpuInput> vms = {shared("good", {0}, 1), shared("evil", {0}, -2),
                                       shared("nan", {0}, std::nan("")), shared("other", {0}, 3)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  ASSERT_EQ(plan.vms.size(), 4u);
  EXPECT_NE(plan.vms[1].error.find("priority"), std::string::npos) << plan.vms[1].error;
  EXPECT_FALSE(plan.vms[2].error.empty());
  EXPECT_EQ(plan.vms[1].weight, 0.0);
  // The others are weighed among themselves: p 1 and 3 over two VMs.
  EXPECT_TRUE(plan.vms[0].error.empty());
  EXPECT_NEAR(plan.vms[0].weight, 0.9 / (0.9 + 0.8 / 3 + 0.1), 1e-9);
  EXPECT_NEAR(plan.vms[0].weight + plan.vms[3].weight, 1.0, 1e-12);
}

TEST(CpuPlan, BadVcpuBoundsLeaveOnlyThatVmOut) {
  VmCpuInput bad = dedicated("bad", 0, {2, 3}, 0, 1);  // max_vcpus 0
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 1}, 2, 1), bad};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_NE(plan.vms[1].error.find("vCPU bounds"), std::string::npos) << plan.vms[1].error;
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{2, 3}));  // as it is
  EXPECT_EQ(plan.vms[0].vcpus_online, 2);                   // a alone on the node keeps its CPUs
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
}

CpuHost one_node(std::vector<CpuId> cpus) {
  CpuHost host;
  host.node_cpus[0] = std::move(cpus);
  return host;
}

// A re-pin applied halfway: a took CPU 2 from b (a's metadata says 0,2), b's calls failed (its metadata
// still says 1,2). libvirt pins a's vCPU 1 to 2, so a keeps it; b gets free CPU 3 instead, and the node
// is divided as usual.
TEST(CpuPlan, ACpuClaimedTwiceIsRepairedFromTheLivePins) {
  VmCpuInput a = dedicated("a", 0, {0, 2}, 2, 1), b = dedicated("b", 0, {1, 2}, 2, 1);
  a.live_pins = {{0}, {2}};
  b.live_pins = {{1}, {1, 2}};                 // b's vCPU 1 floats: its pin was never applied as planned
  const std::vector<VmCpuInput> vms = {b, a};  // the keeper does not depend on order
  const CpuPlan plan = plan_cpus(vms, 0.8, one_node({0, 1, 2, 3}));
  EXPECT_TRUE(plan.vms[0].error.empty()) << plan.vms[0].error;
  EXPECT_TRUE(plan.vms[1].repaired.empty());
  EXPECT_NE(plan.vms[0].repaired.find("CPU 2 is also claimed by 'a'"), std::string::npos) << plan.vms[0].repaired;
  EXPECT_NE(plan.vms[0].repaired.find("libvirt pins a vCPU of 'a' there"), std::string::npos);
  EXPECT_NE(plan.vms[0].repaired.find("gets free CPU 3"), std::string::npos) << plan.vms[0].repaired;
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{0, 2}));
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{1, 3}));
  EXPECT_EQ(plan.vms[0].vcpus_online, 2);
}

TEST(CpuPlan, WithoutLiveEvidenceTheFirstByNameKeepsTheCpuAndTheOtherShrinks) {
  // No free CPU on the node (the host is unknown): b gives CPU 1 up and the node's 3 CPUs are divided.
  const std::vector<VmCpuInput> vms = {dedicated("b", 0, {1, 2}, 2, 1), dedicated("a", 0, {0, 1}, 2, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_NE(plan.vms[0].repaired.find("the first by name"), std::string::npos) << plan.vms[0].repaired;
  EXPECT_NE(plan.vms[0].repaired.find("no free CPU on node 0"), std::string::npos) << plan.vms[0].repaired;
  std::set<CpuId> all;
  for (const auto& vm : plan.vms) {
    ASSERT_TRUE(vm.vcpus_online.has_value()) << vm.name << ": " << vm.error;
    for (CpuId c : vm.cpus) EXPECT_TRUE(all.insert(c).second) << "CPU " << c << " given twice";
  }
  EXPECT_EQ(all, (std::set<CpuId>{0, 1, 2}));
}

TEST(CpuPlan, ARepairNeverTakesAReservedSharedOrHeldCpuNorTheLastSharedOne) {
  CpuHost host = one_node({0, 1, 2, 3, 4, 5});
  host.reserved = {3};
  host.held = {4};  // a shut-off dedicated VM's
  VmCpuInput a = dedicated("a", 0, {0}, 1, 1), b = dedicated("b", 0, {0}, 1, 1);
  a.live_pins = {{0}};
  // Free: 1, 2, 5; the shared VM on node 0 keeps one of them (the highest).
  const std::vector<VmCpuInput> vms = {a, b, dedicated("c", 0, {1}, 1, 1), shared("s", {5}, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8, host);
  EXPECT_EQ(plan.vms[1].cpus, std::vector<CpuId>{2});
  EXPECT_EQ(plan.vms[3].cpus, std::vector<CpuId>{5});
  EXPECT_TRUE(plan.vms[3].pool_planned);
}

TEST(CpuPlan, AVmLeftWithoutACpuAfterARepairIsLeftAsItIsAndTheOthersArePlanned) {
  // Two VMs claim the node's only CPU: a keeps it (live pin), b has nothing left and waits.
  VmCpuInput a = dedicated("a", 0, {0}, 1, 1), b = dedicated("b", 0, {0}, 1, 1);
  a.live_pins = {{0}};
  const std::vector<VmCpuInput> vms = {a, b, shared("s", {0}, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_EQ(plan.vms[0].cpus, std::vector<CpuId>{0});
  EXPECT_EQ(plan.vms[0].vcpus_online, 1);
  EXPECT_NE(plan.vms[1].error.find("no dedicated CPU of node 0"), std::string::npos) << plan.vms[1].error;
  EXPECT_FALSE(plan.vms[1].vcpus_online.has_value());
  EXPECT_TRUE(plan.vms[2].error.empty());
  EXPECT_GT(plan.vms[2].cpu_shares, 0);
}

TEST(CpuPlan, ACpuListedTwiceByOneVmIsKeptOnce) {
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 0, 1}, 3, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_NE(plan.vms[0].repaired.find("listed twice"), std::string::npos);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
}

TEST(CpuPlan, ASpanningVmKeepsAContestedCpuAndAConflictBetweenTwoOfThemIsAnError) {
  VmCpuInput span = dedicated("span", 0, {1, 8}, 2, 1);
  span.nodes = {0, 1};
  VmCpuInput span2 = dedicated("span2", 0, {8, 9}, 2, 1);
  span2.nodes = {0, 1};
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 1}, 2, 1), span, span2};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_NE(plan.vms[0].repaired.find("it cannot be re-divided"), std::string::npos) << plan.vms[0].repaired;
  EXPECT_EQ(plan.vms[0].cpus, std::vector<CpuId>{0});
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{1, 8}));
  EXPECT_TRUE(plan.vms[1].error.empty());
  EXPECT_NE(plan.vms[2].error.find("spans nodes"), std::string::npos) << plan.vms[2].error;
  EXPECT_EQ(plan.vms[2].cpus, (std::vector<CpuId>{8, 9}));
}

// Issue 11 C: a shared VM placed before a dedicated one floats over what the dedicated one now holds.
TEST(CpuPlan, ASharedPoolIsAlwaysDisjointFromDedicatedCpus) {
  CpuHost host = one_node({0, 1, 2, 3});
  host.reserved = {3};
  const std::vector<VmCpuInput> vms = {shared("s", {0, 1, 2}, 1), dedicated("d", 0, {0}, 1, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8, host);
  EXPECT_TRUE(plan.vms[0].pool_planned);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{1, 2}));
  // The dedicated VM removed: the pool grows back.
  const CpuPlan alone = plan_cpus(std::vector<VmCpuInput>{vms[0]}, 0.8, host);
  EXPECT_EQ(alone.vms[0].cpus, (std::vector<CpuId>{0, 1, 2}));
  // A shut-off dedicated VM's CPUs stay out of the pool.
  host.held = {2};
  EXPECT_EQ(plan_cpus(std::vector<VmCpuInput>{vms[0]}, 0.8, host).vms[0].cpus, (std::vector<CpuId>{0, 1}));
}

TEST(CpuPlan, AConfiguredSharedPoolIsSharedCpusOnTheVmsNodes) {
  CpuHost host = one_node({0, 1, 2, 3});
  host.node_cpus[1] = {4, 5, 6, 7};
  host.shared = {1, 5};
  const std::vector<VmCpuInput> vms = {shared("s", {0, 1, 2, 3}, 1)};
  EXPECT_EQ(plan_cpus(vms, 0.8, host).vms[0].cpus, std::vector<CpuId>{1});
  EXPECT_EQ(shared_pool(host, {0, 1}, {}), (std::vector<CpuId>{1, 5}));
  EXPECT_EQ(shared_pool(host, {0, 1}, {5}), std::vector<CpuId>{1});
}

TEST(CpuPlan, ASharedVmWithNoCpuLeftKeepsItsCpusAndSaysWhy) {
  const std::vector<VmCpuInput> vms = {shared("s", {0, 1}, 1), dedicated("d", 0, {0, 1}, 2, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8, one_node({0, 1}));
  EXPECT_FALSE(plan.vms[0].pool_planned);
  EXPECT_NE(plan.vms[0].error.find("no CPU of node 0 is left for shared vCPUs"), std::string::npos)
      << plan.vms[0].error;
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(plan.vms[1].vcpus_online, 2);
}

TEST(CpuPlan, WithoutAHostSharedVmsKeepTheirCpus) {
  const std::vector<VmCpuInput> vms = {shared("s", {0, 1}, 1), dedicated("d", 0, {0}, 1, 1)};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  EXPECT_FALSE(plan.vms[0].pool_planned);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
}

// Property: random claims with random overlaps and random live pins: the plan never throws, never
// gives a CPU to two dedicated VMs, and every VM either gets CPUs or an error.
TEST(CpuPlan, RandomOverlappingClaimsAreAlwaysRepairedIntoDisjointSets) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    CpuHost host = one_node({0, 1, 2, 3, 4, 5, 6, 7});
    std::vector<VmCpuInput> vms;
    const int n = 1 + int(rng() % 5);
    for (int i = 0; i < n; ++i) {
      std::vector<CpuId> cpus;
      for (int c = 0, held = 1 + int(rng() % 3); c < held; ++c) cpus.push_back(CpuId(rng() % 8));
      VmCpuInput vm = dedicated("vm" + std::to_string(i), 0, cpus, 4, 1 + double(rng() % 5));
      for (CpuId c : cpus) vm.live_pins.push_back(rng() % 2 ? std::vector<CpuId>{c} : std::vector<CpuId>{c, 7});
      vms.push_back(vm);
    }
    if (rng() % 2) vms.push_back(shared("s", {0, 1, 2, 3, 4, 5, 6, 7}, 2));
    CpuPlan plan;
    ASSERT_NO_THROW(plan = plan_cpus(vms, 0.8, host));
    std::set<CpuId> seen;
    for (std::size_t i = 0; i < vms.size(); ++i) {
      const auto& p = plan.vms[i];
      if (vms[i].cpu_policy == CpuPolicy::Shared) {
        if (!p.error.empty()) continue;  // nothing left for it: kept as it is, and says so
        EXPECT_TRUE(p.pool_planned);
        for (CpuId c : p.cpus) EXPECT_FALSE(seen.count(c)) << "shared pool overlaps a dedicated CPU, round " << round;
        continue;
      }
      if (!p.error.empty()) continue;
      ASSERT_TRUE(p.vcpus_online.has_value()) << "round " << round;
      for (CpuId c : p.cpus) EXPECT_TRUE(seen.insert(c).second) << "CPU " << c << " given twice in round " << round;
    }
  }
}

// Property: on random nodes the CPUs held are conserved, never shared, and bounds are kept.
TEST(CpuPlan, RandomNodesConserveCpusAndNeverShareOne) {
  std::mt19937 rng(42);
  for (int round = 0; round < 300; ++round) {
    std::vector<VmCpuInput> vms;
    CpuId next = 0;
    const int n = 1 + int(rng() % 6);
    for (int i = 0; i < n; ++i) {
      const int held = 1 + int(rng() % 4);
      std::vector<CpuId> cpus;
      for (int c = 0; c < held; ++c) cpus.push_back(next++);
      const double demand = (rng() % 3 == 0) ? -1.0 : double(rng() % 8) + 0.5;
      vms.push_back(dedicated("vm" + std::to_string(i), 0, cpus, held + int(rng() % 4), 1 + double(rng() % 5), demand));
    }
    const CpuPlan plan = plan_cpus(vms, 0.8);
    std::set<CpuId> seen;
    std::size_t total = 0;
    for (std::size_t i = 0; i < vms.size(); ++i) {
      const auto& p = plan.vms[i];
      ASSERT_TRUE(p.vcpus_online.has_value());
      EXPECT_EQ(std::size_t(*p.vcpus_online), p.cpus.size());
      EXPECT_GE(*p.vcpus_online, 1);
      EXPECT_LE(*p.vcpus_online, vms[i].max_vcpus);
      for (CpuId c : p.cpus) {
        EXPECT_LT(c, next);
        EXPECT_TRUE(seen.insert(c).second) << "CPU " << c << " given twice in round " << round;
      }
      total += p.cpus.size();
    }
    EXPECT_LE(total, std::size_t(next));
    // Same input, same plan.
    const CpuPlan again = plan_cpus(vms, 0.8);
    for (std::size_t i = 0; i < vms.size(); ++i) EXPECT_EQ(again.vms[i].cpus, plan.vms[i].cpus);
  }
}

// Elastic shared vCPUs (issue 13): each shared VM's online count is its part of its pool.
VmCpuInput elastic(std::string name, int min, int max, double prio, double demand) {
  VmCpuInput vm = shared(std::move(name), {}, prio);
  vm.min_vcpus = min;
  vm.max_vcpus = max;
  vm.demand_cpus = demand;
  return vm;
}

std::vector<int> online_counts(const std::vector<VmCpuInput>& vms, const CpuHost& host) {
  const CpuPlan plan = plan_cpus(vms, 0.8, host);
  std::vector<int> out;
  for (const VmCpuPlan& p : plan.vms) {
    EXPECT_TRUE(p.error.empty()) << p.name << ": " << p.error;
    EXPECT_TRUE(p.vcpus_online.has_value()) << p.name;
    out.push_back(p.vcpus_online.value_or(-1));
  }
  return out;
}

TEST(CpuPlan, ABusySharedVmAloneGetsAsManyVcpusAsItsPoolHasCpus) {
  const std::vector<VmCpuInput> vms = {elastic("a", 1, 2, 1, 2.7)};
  const CpuPlan plan = plan_cpus(vms, 0.8, one_node({0, 1}));
  ASSERT_EQ(plan.vms[0].vcpus_online, 2);
  EXPECT_DOUBLE_EQ(plan.vms[0].pool_weight.value_or(0), 1.0);
  EXPECT_DOUBLE_EQ(plan.vms[0].node_share.value_or(0), 2.0);
  // Never more vCPUs than the pool has CPUs, whatever max_vcpus and the demand say.
  EXPECT_EQ(online_counts({elastic("a", 1, 8, 1, 9)}, one_node({0, 1})), (std::vector<int>{2}));
  // And never more than max_vcpus, whatever the pool.
  EXPECT_EQ(online_counts({elastic("a", 1, 2, 1, 9)}, one_node({0, 1, 2, 3})), (std::vector<int>{2}));
}

TEST(CpuPlan, TwoBusySharedVmsOfEqualPrioritySplitThePoolAndAnIdleOneLeavesItToTheOther) {
  const CpuHost host = one_node({0, 1});
  EXPECT_EQ(online_counts({elastic("a", 1, 2, 1, 2.5), elastic("b", 1, 2, 1, 2.5)}, host), (std::vector<int>{1, 1}));
  // b idle: its unused part goes to a; b keeps its floor of 1.
  EXPECT_EQ(online_counts({elastic("a", 1, 2, 1, 2.5), elastic("b", 1, 2, 1, 0.05)}, host), (std::vector<int>{2, 1}));
  EXPECT_EQ(online_counts({elastic("a", 1, 2, 1, 0), elastic("b", 1, 2, 1, 2.5)}, host), (std::vector<int>{1, 2}));
}

TEST(CpuPlan, SharedVcpusFollowTheWorkedExample) {
  // 4 CPUs, priorities 2 and 1, both busy: 1.43 and 2.57 CPUs, so 1 and 3 vCPUs.
  const std::vector<VmCpuInput> vms = {elastic("a", 1, 4, 2, 8), elastic("b", 1, 4, 1, 8)};
  const CpuPlan plan = plan_cpus(vms, 0.8, one_node({0, 1, 2, 3}));
  EXPECT_EQ(plan.vms[0].vcpus_online, 1);
  EXPECT_EQ(plan.vms[1].vcpus_online, 3);
  EXPECT_NEAR(plan.vms[0].node_share.value_or(0), 4 * 0.5 / 1.4, 1e-9);
}

TEST(CpuPlan, SharedVcpuTiesGoByNameAndMinsAreFloors) {
  // Three equal busy VMs in a pool of 4: 1.33 each, the spare CPU to the first by name.
  EXPECT_EQ(online_counts({elastic("c", 1, 4, 1, 8), elastic("a", 1, 4, 1, 8), elastic("b", 1, 4, 1, 8)},
                          one_node({0, 1, 2, 3})),
            (std::vector<int>{1, 2, 1}));
  // vcpus_min 2 keeps an idle VM at 2; it is capped by the pool.
  EXPECT_EQ(online_counts({elastic("a", 2, 4, 1, 0), elastic("b", 1, 4, 1, 8)}, one_node({0, 1, 2, 3})),
            (std::vector<int>{2, 4}));
  EXPECT_EQ(online_counts({elastic("a", 3, 4, 1, 0)}, one_node({0, 1})), (std::vector<int>{2}));
  // Unknown demand (no agent) counts as max_vcpus.
  EXPECT_EQ(online_counts({elastic("a", 1, 2, 1, -1), elastic("b", 1, 2, 1, 2.5)}, one_node({0, 1})),
            (std::vector<int>{1, 1}));
}

TEST(CpuPlan, ADemandCapsASharedVmsVcpus) {
  // a wants 1.2 CPUs of a pool of 4 (so 2 vCPUs, its share rounded up); b takes the rest.
  EXPECT_EQ(online_counts({elastic("a", 1, 4, 1, 1.2), elastic("b", 1, 4, 1, 8)}, one_node({0, 1, 2, 3})),
            (std::vector<int>{1, 3}));
  EXPECT_EQ(online_counts({elastic("a", 1, 4, 1, 1.2), elastic("b", 1, 4, 1, 0.1)}, one_node({0, 1, 2, 3})),
            (std::vector<int>{2, 1}));
}

TEST(CpuPlan, SharedVmsOnDifferentPoolsAreDividedSeparately) {
  CpuHost host;
  host.node_cpus[0] = {0, 1};
  host.node_cpus[1] = {2, 3, 4};
  VmCpuInput b = elastic("b", 1, 4, 1, 8);
  b.nodes = {1};
  const std::vector<VmCpuInput> vms = {elastic("a", 1, 4, 1, 8), b};
  EXPECT_EQ(online_counts(vms, host), (std::vector<int>{2, 3}));
}

// Property: in every pool the parts (online counts above the floors) never sum to more than the pool,
// no VM has more vCPUs than the pool or its max, none fewer than its floor.
TEST(CpuPlan, RandomSharedPoolsNeverOvercommitAboveTheFloors) {
  std::mt19937 rng(13);
  for (int round = 0; round < 500; ++round) {
    const int pool = 1 + int(rng() % 6);
    std::vector<CpuId> cpus;
    for (int c = 0; c < pool; ++c) cpus.push_back(c);
    std::vector<VmCpuInput> vms;
    const int n = 1 + int(rng() % 5);
    for (int i = 0; i < n; ++i) {
      const int max = 1 + int(rng() % 6);
      const double demand = rng() % 4 == 0 ? -1.0 : double(rng() % 80) / 10.0;
      vms.push_back(elastic("vm" + std::to_string(i), 1, max, 1 + double(rng() % 4), demand));
    }
    const CpuPlan plan = plan_cpus(vms, 0.8, one_node(cpus));
    int sum = 0;
    for (std::size_t i = 0; i < vms.size(); ++i) {
      ASSERT_TRUE(plan.vms[i].vcpus_online) << round;
      const int k = *plan.vms[i].vcpus_online;
      EXPECT_GE(k, 1);
      EXPECT_LE(k, std::min(pool, vms[i].max_vcpus)) << round;
      sum += k;
    }
    // The floors (1 each) are the only overcommit: when every VM's water-filled share is at least one
    // CPU, no floor is needed and the counts sum to at most the pool; the shares never exceed it.
    double shares = 0;
    bool floors_needed = false;
    for (const VmCpuPlan& p : plan.vms) {
      shares += p.node_share.value_or(0);
      floors_needed = floors_needed || p.node_share.value_or(0) < 1.0;
    }
    EXPECT_LE(shares, pool + 1e-9) << round;
    if (!floors_needed || n == 1) {
      EXPECT_LE(sum, pool) << round;
    }
  }
}

}  // namespace
}  // namespace llmorch::policy
