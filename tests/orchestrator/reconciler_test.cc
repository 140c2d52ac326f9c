#include "llmorch/orch/reconciler.h"

#include <algorithm>

#include <gtest/gtest.h>

#include "fake_hypervisor.h"
#include "llmorch/policy/weighting.h"

namespace llmorch::orch {
namespace {

using testing::FakeHypervisor;
using testing::make_domain;
using policy::CpuPolicy;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

protocol::Report report(std::optional<double> prio, double cpu_pct = 50, std::uint64_t runnable = 1,
                        std::uint64_t ncpu = 1) {
  protocol::Report r;
  r.priority = prio;
  r.cpu_pct = cpu_pct;
  r.runnable = runnable;
  r.ncpu_online = ncpu;
  return r;
}

AgentState fresh(protocol::Report r) {
  AgentState a;
  a.last_report = r;
  a.fresh = true;
  a.connected = true;
  return a;
}

Snapshot snapshot_of(const std::vector<ManagedDomain>& domains, std::map<std::string, AgentState> agents = {}) {
  Snapshot s;
  for (const auto& d : domains) s.vms.push_back({d, agents[d.name], {}});
  return s;
}

std::size_t count(const std::vector<Action>& actions, Action::Kind kind, const std::string& vm = "") {
  return static_cast<std::size_t>(std::count_if(actions.begin(), actions.end(), [&](const Action& a) {
    return a.kind == kind && (vm.empty() || a.vm == vm);
  }));
}

// Applies actions to the fake, as the daemon would.
void apply_to(FakeHypervisor& hv, const std::vector<Action>& actions) {
  for (const Action& a : actions) {
    switch (a.kind) {
      case Action::Kind::SetCpuShares: hv.set_cpu_shares(a.vm, a.value); break;
      case Action::Kind::SetVcpus: hv.set_vcpus(a.vm, static_cast<int>(a.value)); break;
      case Action::Kind::PinVcpu: hv.pin_vcpu(a.vm, static_cast<int>(a.value), a.cpus); break;
      case Action::Kind::SetMetadata: hv.set_metadata(a.vm, a.facts); break;
      case Action::Kind::SetMemory: hv.set_memory_mib(a.vm, a.value); break;
      case Action::Kind::SendVcpusOnline: break;
    }
  }
}

TEST(Reconciler, TemplatePrioritiesGiveFormulaWeightsAndShares) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  const Plan plan = make_plan(snapshot_of(doms));
  ASSERT_EQ(plan.vms.size(), 2u);
  EXPECT_NEAR(plan.vms[0].weight, 0.7105, 1e-4);
  EXPECT_NEAR(plan.vms[1].weight, 0.2895, 1e-4);
  EXPECT_EQ(plan.vms[0].source, PrioritySource::Template);
  EXPECT_NEAR(double(plan.vms[0].cpu_shares) / plan.vms[1].cpu_shares, 0.7105 / 0.2895, 0.01);
  EXPECT_EQ(plan.vms[0].cpu_shares + plan.vms[1].cpu_shares, 2048);
  EXPECT_EQ(plan.vms[0].reason, "priority 1 from template, weight 0.711 of 2 VMs");
  EXPECT_FALSE(plan.vms[0].vcpus_online.has_value());  // shared: no re-division
}

TEST(Reconciler, FreshAgentPriorityOverridesTemplate) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  const Plan plan = make_plan(snapshot_of(doms, {{"b", fresh(report(1.0))}}));
  EXPECT_EQ(plan.vms[1].source, PrioritySource::Agent);
  EXPECT_EQ(plan.vms[1].priority, 1.0);
  EXPECT_EQ(plan.vms[1].template_priority, 3.0);
  EXPECT_NEAR(plan.vms[0].weight, 0.5, 1e-12);
  EXPECT_EQ(plan.vms[1].cpu_shares, 1024);
  EXPECT_NE(plan.vms[1].reason.find("reported by agent"), std::string::npos);
}

TEST(Reconciler, StaleReportFallsBackToTemplate) {
  AgentState stale = fresh(report(1.0));
  stale.fresh = false;
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  const Plan plan = make_plan(snapshot_of(doms, {{"b", stale}}));
  EXPECT_EQ(plan.vms[1].source, PrioritySource::Stale);
  EXPECT_EQ(plan.vms[1].priority, 3.0);
  EXPECT_EQ(plan.vms[1].reported_priority, 1.0);
  EXPECT_LT(plan.vms[1].weight, 0.3);
  EXPECT_EQ(plan.vms[1].demand_cpus, -1.0);
}

TEST(Reconciler, ReportWithoutPriorityUsesTemplate) {
  PrioritySource s{};
  VmFacts f;
  f.priority = 4;
  EXPECT_EQ(effective_priority(f, fresh(report(std::nullopt)), &s), 4.0);
  EXPECT_EQ(s, PrioritySource::Template);
  EXPECT_EQ(effective_priority(f, AgentState{}, &s), 4.0);
  EXPECT_EQ(s, PrioritySource::Template);
}

TEST(Reconciler, HostileAgentIsNotBelievedEvenInItsValidReports) {
  PrioritySource s{};
  VmFacts f;
  f.priority = 4;
  AgentState agent = fresh(report(1, 100, 8, 2));
  agent.hostile = true;
  EXPECT_EQ(effective_priority(f, agent, &s), 4.0);
  EXPECT_EQ(s, PrioritySource::Hostile);
  EXPECT_EQ(demand_cpus(agent), -1.0);
  agent.hostile = false;
  EXPECT_EQ(effective_priority(f, agent, &s), 1.0);
  EXPECT_EQ(s, PrioritySource::Agent);
}

TEST(Reconciler, DemandFormula) {
  EXPECT_EQ(demand_cpus(AgentState{}), -1.0);
  EXPECT_DOUBLE_EQ(demand_cpus(fresh(report(1, 50, 1, 4))), 2.0 * 1.25);   // busy 2 CPUs > 1 runnable
  EXPECT_DOUBLE_EQ(demand_cpus(fresh(report(1, 10, 3, 2))), 3.0 * 1.25);   // 3 runnable > 0.2 busy
}

TEST(Reconciler, SharesActionsOnlyWhenOutsideTolerance) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  Reconciler r;
  const auto t = Clock::time_point{} + seconds(100);
  Snapshot snap = snapshot_of(doms);
  auto actions = r.diff(snap, make_plan(snap), t);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(describe(actions[0]), "vm a: cpu_shares 1024 -> 1455 (priority 1 from template, weight 0.711 of 2 VMs)");
  EXPECT_EQ(actions[1].value, 593u);

  doms[0].cpu_shares = 1450;  // within 2%
  doms[1].cpu_shares = 600;   // within 8 shares
  snap = snapshot_of(doms);
  EXPECT_TRUE(r.diff(snap, make_plan(snap), t).empty());
  doms[1].cpu_shares = 610;  // 17 off: more than max(8, 2%)
  snap = snapshot_of(doms);
  EXPECT_EQ(count(r.diff(snap, make_plan(snap), t), Action::Kind::SetCpuShares), 1u);
  doms[1].cpu_shares.reset();  // unknown live value: always set
  snap = snapshot_of(doms);
  EXPECT_EQ(count(r.diff(snap, make_plan(snap), t), Action::Kind::SetCpuShares, "b"), 1u);
}

TEST(Reconciler, InactiveDomainsAreLeftOut) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  doms[1].state = DomainState::ShutOff;
  Snapshot snap = snapshot_of(doms);
  const Plan plan = make_plan(snap);
  ASSERT_EQ(plan.vms.size(), 1u);
  EXPECT_EQ(plan.vms[0].weight, 1.0);
  EXPECT_EQ(Reconciler().diff(snap, plan, {}).size(), 0u);  // 1 VM alone: 1024 = live
}

class Dedicated : public ::testing::Test {
 protected:
  void SetUp() override {
    // Node 0 CPUs 0-3: a holds {0,1}, b holds {2,3}; both can use up to 4 vCPUs, 2 online now.
    hv.domains = {make_domain("a", 1, {0, 1}, CpuPolicy::Dedicated, 2, 2),
                  make_domain("b", 1, {2, 3}, CpuPolicy::Dedicated, 2, 2)};
    for (auto& d : hv.domains) {
      d.facts.max_vcpus = 4;
      d.vcpus_max = 4;
      d.vcpu_pins.resize(4, d.facts.placement.cpus);
    }
  }
  Snapshot snap() { return snapshot_of(hv.domains, agents); }

  FakeHypervisor hv;
  std::map<std::string, AgentState> agents;
  Reconciler r;
  Clock::time_point t0 = Clock::time_point{} + seconds(1000);
};

TEST_F(Dedicated, BalancedNodeNeedsNoRepin) {
  // Equal priorities, unknown demand: 2 CPUs each, what they hold; the vCPUs 2-3 already float on the set.
  Snapshot s = snap();
  const Plan plan = make_plan(s);
  EXPECT_EQ(plan.vms[0].vcpus_online, 2);
  EXPECT_TRUE(r.diff(s, plan, t0).empty());
}

TEST_F(Dedicated, IdleVmGivesCpusToBusyOne) {
  agents["b"] = fresh(report(std::nullopt, 10, 0, 2));  // demand 0.25 -> 1 CPU
  Snapshot s = snap();
  const Plan plan = make_plan(s);
  EXPECT_EQ(plan.vms[0].cpus, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(plan.vms[1].cpus, (std::vector<int>{2}));
  const auto actions = r.diff(s, plan, t0);
  EXPECT_EQ(count(actions, Action::Kind::SetVcpus, "a"), 1u);  // 2 -> 3: hot-add
  EXPECT_EQ(count(actions, Action::Kind::SetVcpus, "b"), 0u);  // going down is the agent's job
  EXPECT_EQ(count(actions, Action::Kind::SendVcpusOnline, "a"), 1u);
  EXPECT_EQ(count(actions, Action::Kind::SendVcpusOnline, "b"), 1u);
  EXPECT_EQ(count(actions, Action::Kind::SetMetadata), 2u);
  // a: vCPU 2 -> {3}, vCPU 3 -> {0,1,3}; b: vCPUs 1-3 -> {2} (vCPU 0 is on 2 already).
  std::vector<std::string> pins;
  for (const Action& a : actions)
    if (a.kind == Action::Kind::PinVcpu) pins.push_back(describe(a).substr(0, describe(a).find(" (")));
  EXPECT_EQ(pins, (std::vector<std::string>{"vm a: pin vCPU 2 to 3", "vm a: pin vCPU 3 to 0-1,3",
                                            "vm b: pin vCPU 1 to 2",
                                            "vm b: pin vCPU 2 to 2", "vm b: pin vCPU 3 to 2"}));
  const Action* online = nullptr;
  for (const Action& a : actions)
    if (a.kind == Action::Kind::SendVcpusOnline && a.vm == "b") online = &a;
  ASSERT_NE(online, nullptr);
  EXPECT_EQ(online->value, 1u);

  // Applied, the next diff on the same input is empty: the live state is the plan.
  apply_to(hv, actions);
  r.commit(actions, plan, t0);
  agents["b"].last_report->ncpu_online = 1;  // the guest followed the command
  Snapshot after = snap();
  EXPECT_EQ(after.vms[0].domain.facts.placement.cpus, (std::vector<int>{0, 1, 3}));
  EXPECT_TRUE(r.diff(after, make_plan(after), t0 + seconds(1)).empty());
}

TEST_F(Dedicated, DwellHoldsRepinsUnlessPriorityChanges) {
  agents["b"] = fresh(report(std::nullopt, 10, 0, 2));
  Snapshot s = snap();
  Plan plan = make_plan(s);
  auto actions = r.diff(s, plan, t0);
  apply_to(hv, actions);
  r.commit(actions, plan, t0);

  // b gets busy again 1 s later: the plan moves back, but the dwell time holds the pins.
  agents["b"] = fresh(report(std::nullopt, 100, 4, 1));
  s = snap();
  plan = make_plan(s);
  EXPECT_EQ(plan.vms[1].cpus.size(), 2u);
  EXPECT_TRUE(r.diff(s, plan, t0 + seconds(1)).empty());
  // After the dwell time it moves.
  EXPECT_EQ(count(r.diff(s, plan, t0 + seconds(6)), Action::Kind::SetMetadata), 2u);
  // Within the dwell time, a priority change moves it at once.
  agents["a"] = fresh(report(5.0));
  s = snap();
  plan = make_plan(s);
  EXPECT_GT(count(r.diff(s, plan, t0 + seconds(1)), Action::Kind::SetMetadata), 0u);
}

TEST_F(Dedicated, DriftedLivePinsAreRepairedWithoutMovingTheSet) {
  hv.domains[0].vcpu_pins[1] = {0, 1, 2, 3};  // e.g. someone ran virsh vcpupin
  Snapshot s = snap();
  const auto actions = r.diff(s, make_plan(s), t0);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Action::Kind::PinVcpu);
  EXPECT_EQ(actions[0].cpus, (std::vector<int>{1}));
}

TEST_F(Dedicated, GuestThatDidNotOnlineGetsTheCommandAgainAfterDwell) {
  agents["a"] = fresh(report(std::nullopt, 100, 4, 1));  // plan says 2 online; guest has 1
  Snapshot s = snap();
  Plan plan = make_plan(s);
  auto actions = r.diff(s, plan, t0);
  ASSERT_EQ(count(actions, Action::Kind::SendVcpusOnline, "a"), 1u);
  r.commit(actions, plan, t0);
  EXPECT_EQ(count(r.diff(s, plan, t0 + seconds(1)), Action::Kind::SendVcpusOnline), 0u);
  EXPECT_EQ(count(r.diff(s, plan, t0 + seconds(6)), Action::Kind::SendVcpusOnline), 1u);
}

TEST(Reconciler, DoubleClaimedDedicatedCpuIsAnError) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}, CpuPolicy::Dedicated),
                                  make_domain("b", 1, {0}, CpuPolicy::Dedicated)};
  EXPECT_THROW(make_plan(snapshot_of(doms)), std::invalid_argument);
}

// Memory plan: a 256 MiB VM whose fresh agent report (KiB, floor in MiB) raises the floor above the
// template's, under a limit that asks for more than its free memory.
TEST(MemoryPlan, AgentFloorAndUnitsReachTheBalloonRule) {
  ManagedDomain d = make_domain("a", 1, {0});
  d.facts.max_memory_mib = 256;
  d.facts.memory_floor_mib = 96;
  protocol::Report r = report(1.0);
  r.mem_total_kib = 220 * 1024;
  r.mem_avail_kib = 200 * 1024;
  r.floor_mib = 200;
  Snapshot s = snapshot_of({d}, {{"a", fresh(r)}});
  MemoryStats m;
  m.actual_kib = 256 * 1024;  // no usable/unused: the agent's mem_available is the free memory
  s.vms[0].balloon = {.stats = m, .previous = std::nullopt, .fresh = true, .hold = {}};
  s.memory = {.free_mib = {{0, 8192}}, .reserve_mib = 512, .limit_mib = 100, .config = {}};
  const Plan plan = make_plan(s);
  const VmMemoryPlan* a = plan.memory.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->floor_mib, 200u);
  EXPECT_EQ(a->max_mib, 256u);
  EXPECT_EQ(a->actual_mib, std::optional<std::uint64_t>(256));
  ASSERT_TRUE(a->target_mib.has_value()) << a->reason;
  EXPECT_EQ(*a->target_mib, 200u) << a->reason;  // squeezed to the agent's floor, not the template's
  const auto actions = Reconciler().diff(s, plan, Clock::now());
  ASSERT_EQ(count(actions, Action::Kind::SetMemory, "a"), 1u);
  for (const Action& act : actions)
    if (act.kind == Action::Kind::SetMemory) {
      EXPECT_EQ(describe(act).rfind("vm a: balloon 256 -> 200 MiB (", 0), 0u);
    }

  // The same report gone stale: no free memory known (the balloon reports none), so it is left alone.
  s.vms[0].agent.fresh = false;
  const Plan stale = make_plan(s);
  EXPECT_TRUE(stale.memory.find("a")->left_alone);
  EXPECT_EQ(count(Reconciler().diff(s, stale, Clock::now()), Action::Kind::SetMemory), 0u);
}

TEST(MemoryPlan, AVmWithoutAMaxSizeLeavesEveryBalloonAloneButTheCpuPlanStands) {
  ManagedDomain d = make_domain("a", 1, {0});  // max_memory_mib 0 in facts and domain
  const Plan plan = make_plan(snapshot_of({d}));
  ASSERT_EQ(plan.vms.size(), 1u);
  ASSERT_NE(plan.memory.find("a"), nullptr);
  EXPECT_TRUE(plan.memory.find("a")->left_alone);
  EXPECT_NE(plan.memory.find("a")->reason.find("'a'"), std::string::npos) << plan.memory.find("a")->reason;
}

// A hugepage-backed VM's memory stays in the host's pool whatever its balloon does: it is left alone
// (quietly: an expected state), and still counted, so under a limit the other VM gives the difference.
TEST(MemoryPlan, HugepageBackedVmIsLeftAloneButCounted) {
  std::vector<ManagedDomain> doms = {make_domain("a", 1, {0}), make_domain("b", 1, {0})};
  for (ManagedDomain& d : doms) {
    d.facts.max_memory_mib = 256;
    d.facts.memory_floor_mib = 96;
  }
  doms[0].facts.hugepage_kib = 2048;
  Snapshot s = snapshot_of(doms);
  MemoryStats m;
  m.actual_kib = 256 * 1024;
  m.usable_kib = 200 * 1024;
  for (VmSnapshot& vm : s.vms) vm.balloon = {.stats = m, .previous = std::nullopt, .fresh = true, .hold = {}};
  s.memory = {.free_mib = {{0, 8192}}, .reserve_mib = 512, .limit_mib = 400, .config = {}};
  const Plan plan = make_plan(s);
  const VmMemoryPlan* a = plan.memory.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(a->left_alone && a->held);
  EXPECT_FALSE(a->target_mib.has_value());
  EXPECT_NE(a->reason.find("hugepage-backed"), std::string::npos) << a->reason;
  EXPECT_EQ(plan.memory.find("b")->target_mib, std::optional<std::uint64_t>(144)) << plan.memory.find("b")->reason;
  const auto actions = Reconciler().diff(s, plan, Clock::now());
  EXPECT_EQ(count(actions, Action::Kind::SetMemory, "a"), 0u);
  EXPECT_EQ(count(actions, Action::Kind::SetMemory, "b"), 1u);
}

std::uint64_t memory_target(const std::vector<Action>& actions) {
  for (const Action& a : actions)
    if (a.kind == Action::Kind::SetMemory) return a.value;
  return 0;
}

TEST(MemoryPlan, APendingBalloonTargetIsNotRequestedAgainUntilItChanges) {
  ManagedDomain d = make_domain("a", 1, {0});
  d.facts.max_memory_mib = 256;
  d.facts.memory_floor_mib = 96;
  Snapshot s = snapshot_of({d});
  MemoryStats m;
  m.actual_kib = 256 * 1024;
  m.usable_kib = 200 * 1024;
  s.vms[0].balloon = {.stats = m, .previous = std::nullopt, .fresh = true, .hold = {}};
  s.memory = {.free_mib = {{0, 8192}}, .reserve_mib = 512, .limit_mib = 150, .config = {}};
  Reconciler rec;
  const auto now = Clock::now();
  Plan plan = make_plan(s);
  auto actions = rec.diff(s, plan, now);
  ASSERT_EQ(count(actions, Action::Kind::SetMemory), 1u);
  rec.commit(actions, plan, now);
  EXPECT_EQ(memory_target(actions), 150u);  // 256 - (256 - 150 over the limit)
  // The guest gave only part of it: the same target (150) stays pending, no second request.
  s.vms[0].balloon.stats->actual_kib = 200 * 1024;
  s.vms[0].balloon.stats->usable_kib = 150 * 1024;
  plan = make_plan(s);
  ASSERT_EQ(plan.memory.find("a")->target_mib, std::optional<std::uint64_t>(150));
  EXPECT_EQ(count(rec.diff(s, plan, now), Action::Kind::SetMemory), 0u);
  EXPECT_EQ(count(Reconciler().diff(s, plan, now), Action::Kind::SetMemory), 1u);  // without the history
  // A new target is requested at once.
  s.memory.limit_mib = 120;
  plan = make_plan(s);
  actions = rec.diff(s, plan, now);
  ASSERT_EQ(count(actions, Action::Kind::SetMemory), 1u);
  EXPECT_EQ(memory_target(actions), 120u);
}

}  // namespace
}  // namespace llmorch::orch
