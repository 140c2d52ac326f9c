#include "llmorch/policy/cpu_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace llmorch::policy {
namespace {

VmCpuInput dedicated(std::string name, NodeId node, std::vector<CpuId> cpus, int max, double prio,
                     double demand = -1) {
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
  const std::vector<VmCpuInput> vms = {dedicated("hi", 0, {0, 1, 2, 3}, 8, 1),
                                       dedicated("lo", 0, {4, 5, 6, 7}, 8, 3)};
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
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 1}, 2, 1, 0.1),
                                       dedicated("b", 0, {2, 3, 4}, 3, 5, 0.1),
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
  const std::vector<VmCpuInput> vms = {dedicated("n0", 0, {0, 1}, 4, 1), dedicated("n1", 1, {4, 5}, 4, 5),
                                       span};
  const CpuPlan plan = plan_cpus(vms, 0.8);
  // Alone on their node, each keeps exactly the CPUs it holds, whatever its priority.
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<CpuId>{4, 5}));
  EXPECT_EQ(plan.vms[2].cpus, (std::vector<CpuId>{8, 9}));
  EXPECT_FALSE(plan.vms[2].vcpus_online.has_value());
}

TEST(CpuPlan, ACpuClaimedTwiceIsRefused) {
  const std::vector<VmCpuInput> vms = {dedicated("a", 0, {0, 1}, 2, 1), dedicated("b", 0, {1, 2}, 2, 1)};
  EXPECT_THROW(plan_cpus(vms, 0.8), std::invalid_argument);
}

TEST(CpuPlan, ABadPriorityNamesTheVm) {
  const std::vector<VmCpuInput> vms = {shared("good", {0}, 1), shared("evil", {0}, -2)};
  try {
    plan_cpus(vms, 0.8);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("evil"), std::string::npos) << e.what();
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
      vms.push_back(dedicated("vm" + std::to_string(i), 0, cpus, held + int(rng() % 4),
                              1 + double(rng() % 5), demand));
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

}  // namespace
}  // namespace llmorch::policy
