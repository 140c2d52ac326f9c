#include "llmorch/orch/reconciler.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "fake_hypervisor.h"
#include "llmorch/policy/weighting.h"

namespace llmorch::orch {
namespace {

using policy::CpuPolicy;
using testing::FakeHypervisor;
using testing::make_domain;
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

template <class T>
std::size_t count(const std::vector<Action>& actions, const std::string& vm = "") {
  return static_cast<std::size_t>(std::count_if(
      actions.begin(), actions.end(), [&](const Action& a) { return a.is<T>() && (vm.empty() || a.vm == vm); }));
}

// Applies actions to the fake, as the daemon would.
void apply_to(FakeHypervisor& hv, const std::vector<Action>& actions) {
  for (const Action& a : actions) {
    std::visit(Overloaded{
                   [&](const SetCpuShares& c) {
                     hv.set_cpu_shares(a.vm, c.shares,
                                       c.live_only ? Hypervisor::Scope::LiveOnly : Hypervisor::Scope::LiveAndConfig);
                   },
                   [&](const SetVcpus& c) { hv.set_vcpus(a.vm, c.count); },
                   [&](const PinVcpu& c) { hv.pin_vcpu(a.vm, c.vcpu, c.cpus); },
                   [&](const PinEmulator& c) { hv.pin_emulator(a.vm, c.cpus); },
                   [&](const SetMetadata& c) { hv.set_metadata(a.vm, c.facts); },
                   [&](const SetMemory& c) { hv.set_memory_mib(a.vm, c.target_mib); },
                   [](const SendVcpusOnline&) {},
               },
               a.change);
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
  EXPECT_DOUBLE_EQ(demand_cpus(fresh(report(1, 50, 1, 4))), 2.0 * 1.25);  // busy 2 CPUs > 1 runnable
  EXPECT_DOUBLE_EQ(demand_cpus(fresh(report(1, 10, 3, 2))), 2.0 * 1.25);  // 3 runnable (the agent too) > 0.2 busy
  EXPECT_DOUBLE_EQ(demand_cpus(fresh(report(1, 2, 1, 2))), 0.04 * 1.25);  // idle: runnable 1 is the agent
}

TEST(Reconciler, SharesActionsOnlyWhenOutsideTolerance) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  Reconciler r;
  const auto t = Clock::time_point{} + seconds(100);
  Snapshot snap = snapshot_of(doms);
  auto actions = r.diff(snap, make_plan(snap), t);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(describe(actions[0]), "vm a: cpu_shares 1024 -> 1455 (priority 1 from template, weight 0.711 of 2 VMs)");
  ASSERT_TRUE(actions[1].is<SetCpuShares>());
  EXPECT_EQ(actions[1].as<SetCpuShares>()->shares, 593u);
  EXPECT_EQ(actions[1].as<SetCpuShares>()->live, std::optional<std::uint64_t>(1024));

  doms[0].cpu_shares = 1450;  // within 2%
  doms[1].cpu_shares = 600;   // within 8 shares
  snap = snapshot_of(doms);
  EXPECT_TRUE(r.diff(snap, make_plan(snap), t).empty());
  doms[1].cpu_shares = 610;  // 17 off: more than max(8, 2%)
  snap = snapshot_of(doms);
  EXPECT_EQ(count<SetCpuShares>(r.diff(snap, make_plan(snap), t)), 1u);
  doms[1].cpu_shares.reset();  // unknown live value: always set
  snap = snapshot_of(doms);
  EXPECT_EQ(count<SetCpuShares>(r.diff(snap, make_plan(snap), t), "b"), 1u);
  doms[1].cpu_shares_unreadable = true;  // the read failed (libvirtd reconnecting): no reason to write
  snap = snapshot_of(doms);
  EXPECT_EQ(count<SetCpuShares>(r.diff(snap, make_plan(snap), t), "b"), 0u);
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

// Issue 12, debt 2: metadata of an older llmorch (old_format) is rewritten once, and only once.
TEST(Reconciler, OldFormatMetadataIsRewrittenOnce) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 1, {0})};
  doms[1].facts.old_format = true;
  Snapshot snap = snapshot_of(doms);
  Reconciler r;
  const auto actions = r.diff(snap, make_plan(snap), {});
  ASSERT_EQ(count<SetMetadata>(actions), 1u);
  ASSERT_EQ(count<SetMetadata>(actions, "b"), 1u);
  const auto meta = std::find_if(actions.begin(), actions.end(), [](const Action& a) { return a.is<SetMetadata>(); });
  EXPECT_FALSE(meta->as<SetMetadata>()->facts.old_format);
  EXPECT_EQ(meta->as<SetMetadata>()->facts.placement.cpus, doms[1].facts.placement.cpus);
  EXPECT_NE(meta->reason.find("older llmorch"), std::string::npos) << meta->reason;
  record_applied(snap, actions);
  EXPECT_EQ(count<SetMetadata>(r.diff(snap, make_plan(snap), {})), 0u);
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
  EXPECT_EQ(count<SetVcpus>(actions, "a"), 1u);  // 2 -> 3: hot-add
  EXPECT_EQ(count<SetVcpus>(actions, "b"), 0u);  // going down is the agent's job
  EXPECT_EQ(count<SendVcpusOnline>(actions, "a"), 1u);
  EXPECT_EQ(count<SendVcpusOnline>(actions, "b"), 1u);
  EXPECT_EQ(count<SetMetadata>(actions), 2u);
  // a: vCPU 2 -> {3}, vCPU 3 -> {0,1,3}; b: vCPUs 1-3 -> {2} (vCPU 0 is on 2 already).
  std::vector<std::string> pins;
  for (const Action& a : actions)
    if (a.is<PinVcpu>()) pins.push_back(describe(a).substr(0, describe(a).find(" (")));
  EXPECT_EQ(pins,
            (std::vector<std::string>{"vm a: pin vCPU 2 to 3", "vm a: pin vCPU 3 to 0-1,3", "vm b: pin vCPU 1 to 2",
                                      "vm b: pin vCPU 2 to 2", "vm b: pin vCPU 3 to 2"}));
  const SendVcpusOnline* online = nullptr;
  for (const Action& a : actions)
    if (a.vm == "b" && a.is<SendVcpusOnline>()) online = a.as<SendVcpusOnline>();
  ASSERT_NE(online, nullptr);
  EXPECT_EQ(online->online, 1);

  // Applied, the next diff on the same input is empty: the live state is the plan.
  apply_to(hv, actions);
  r.commit(actions, plan, t0);
  agents["b"].last_report->ncpu_online = 1;  // the guest followed the command
  Snapshot after = snap();
  EXPECT_EQ(after.vms[0].domain.facts.placement.cpus, (std::vector<int>{0, 1, 3}));
  EXPECT_TRUE(r.diff(after, make_plan(after), t0 + seconds(1)).empty());
}

// record_applied brings a snapshot to what libvirt holds after the actions: the same domains as the
// fake that applied them, and a diff against it repeats nothing.
TEST_F(Dedicated, RecordAppliedIsWhatLibvirtHoldsAfterTheActions) {
  agents["b"] = fresh(report(std::nullopt, 10, 0, 2));
  Snapshot s = snap();
  const Plan plan = make_plan(s);
  const auto actions = r.diff(s, plan, t0);
  ASSERT_GE(count<PinVcpu>(actions), 1u);
  ASSERT_EQ(count<SetVcpus>(actions), 1u);
  apply_to(hv, actions);
  r.commit(actions, plan, t0);
  record_applied(s, actions);
  for (std::size_t i = 0; i < hv.domains.size(); ++i) {
    const ManagedDomain& want = hv.domains[i];
    const ManagedDomain& got = s.vms[i].domain;
    EXPECT_EQ(got.cpu_shares, want.cpu_shares) << want.name;
    EXPECT_EQ(got.vcpus_current, want.vcpus_current) << want.name;
    EXPECT_EQ(got.vcpu_pins, want.vcpu_pins) << want.name;
    EXPECT_EQ(got.emulator_pins, want.emulator_pins) << want.name;
    EXPECT_EQ(got.facts.placement.cpus, want.facts.placement.cpus) << want.name;
  }
  s.vms[1].agent.last_report->ncpu_online = 1;  // the guest followed the command
  EXPECT_TRUE(r.diff(s, make_plan(s), t0 + seconds(1)).empty());
  // An action for a VM the snapshot does not hold is ignored.
  Action other;
  other.vm = "gone";
  EXPECT_NO_THROW(record_applied(s, {other}));
}

TEST_F(Dedicated, DwellHoldsRepinsWhateverChanged) {
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
  // A priority change does not skip the dwell either (a guest flipping its priority would use it): its
  // shares follow at once, its pins after the dwell.
  agents["a"] = fresh(report(5.0));
  s = snap();
  plan = make_plan(s);
  actions = r.diff(s, plan, t0 + seconds(1));
  EXPECT_EQ(count<SetMetadata>(actions), 0u);
  EXPECT_EQ(count<SetCpuShares>(actions), 2u);
  // After the dwell time it moves.
  EXPECT_EQ(count<SetMetadata>(r.diff(s, plan, t0 + seconds(6))), 2u);
}

TEST_F(Dedicated, DriftedLivePinsAreRepairedWithoutMovingTheSet) {
  hv.domains[0].vcpu_pins[1] = {0, 1, 2, 3};  // e.g. someone ran virsh vcpupin
  Snapshot s = snap();
  const auto actions = r.diff(s, make_plan(s), t0);
  ASSERT_EQ(actions.size(), 1u);
  const auto* pin = actions[0].as<PinVcpu>();
  ASSERT_NE(pin, nullptr) << describe(actions[0]);
  EXPECT_EQ(pin->vcpu, 1);
  EXPECT_EQ(pin->cpus, (std::vector<int>{1}));
}

TEST_F(Dedicated, GuestThatDidNotOnlineGetsTheCommandAgainAfterDwell) {
  agents["a"] = fresh(report(std::nullopt, 100, 4, 1));  // plan says 2 online; guest has 1
  Snapshot s = snap();
  Plan plan = make_plan(s);
  auto actions = r.diff(s, plan, t0);
  ASSERT_EQ(count<SendVcpusOnline>(actions, "a"), 1u);
  r.commit(actions, plan, t0);
  EXPECT_EQ(count<SendVcpusOnline>(r.diff(s, plan, t0 + seconds(1))), 0u);
  EXPECT_EQ(count<SendVcpusOnline>(r.diff(s, plan, t0 + seconds(6))), 1u);
}

policy::CpuHost node0(std::vector<policy::CpuId> cpus) {
  policy::CpuHost host;
  host.node_cpus[0] = std::move(cpus);
  return host;
}

// Issue 11 A: a re-pin applied halfway. a took CPU 2 from b; b's calls failed (a libvirt timeout, the
// VM stopping, llmorchd killed), so both claim CPU 2. The plan repairs b from libvirt's live pins,
// re-pins it onto a free CPU of its node at once (even within the dwell), and plans every other VM.
TEST_F(Dedicated, ACpuClaimedTwiceIsRepairedAndTheOthersArePlanned) {
  hv.domains[0].facts.placement.cpus = {0, 1, 2};  // a's metadata was written...
  hv.domains[0].vcpu_pins = {{0}, {1}, {2}, {0, 1, 2}};
  hv.domains[0].vcpus_current = 3;
  // ...b's was not: it still says {2, 3}, and its vCPU 0 is pinned to 2 as before.
  hv.domains.push_back(make_domain("s", 3, {0, 1, 2, 3, 4}));  // a shared neighbour, shares 1024
  Snapshot s = snap();
  s.cpu_host = node0({0, 1, 2, 3, 4, 5});
  r.commit({}, make_plan(s), t0);  // (no history)
  const Plan plan = make_plan(s);
  const VmPlan* b = plan.find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->error.empty()) << b->error;
  EXPECT_NE(b->repaired.find("CPU 2 is also claimed by 'a'"), std::string::npos) << b->repaired;
  ASSERT_EQ(plan.problems.size(), 1u);
  EXPECT_EQ(plan.problems[0].vm, "b");
  EXPECT_EQ(plan.problems[0].kind, "repaired");
  // Both pins were live on 2; no evidence breaks the tie, so the first by name (a) keeps it and b
  // gets the free CPU 4 (5, the highest, stays for the shared VM).
  std::set<policy::CpuId> a_cpus(plan.find("a")->cpus.begin(), plan.find("a")->cpus.end());
  std::set<policy::CpuId> b_cpus(b->cpus.begin(), b->cpus.end());
  for (policy::CpuId c : b_cpus) EXPECT_FALSE(a_cpus.count(c)) << "CPU " << c << " still in both";
  EXPECT_TRUE(b_cpus.count(4));
  EXPECT_EQ(plan.find("s")->cpus, std::vector<policy::CpuId>{5});  // the pool: neither a's nor b's

  // Applied within the re-pin dwell of the node (a was just re-pinned): the repair is not held.
  const Action fake_repin{.vm = "a", .change = SetMetadata{}, .reason = {}};
  r.commit({fake_repin}, plan, t0);
  const auto actions = r.diff(s, plan, t0 + seconds(1));
  EXPECT_EQ(count<SetMetadata>(actions, "b"), 1u);
  EXPECT_EQ(count<SetCpuShares>(actions, "s"), 1u);  // the neighbour is managed as usual
  EXPECT_EQ(count<PinEmulator>(actions, "s"), 1u);
  apply_to(hv, actions);
  Snapshot after = snap();
  after.cpu_host = s.cpu_host;
  const Plan again = make_plan(after);
  EXPECT_TRUE(again.problems.empty()) << again.problems[0].detail;
  EXPECT_TRUE(r.diff(after, again, t0 + seconds(2)).empty());
}

TEST(Reconciler, AVmThePlanCannotHandleIsLeftAsItIsAndTheOthersAreManaged) {
  std::vector<ManagedDomain> doms{make_domain("a", 1, {0}), make_domain("b", 3, {0})};
  doms[0].facts.priority = -1;  // bad metadata (no agent report to stand in for it)
  Snapshot snap = snapshot_of(doms);
  const Plan plan = make_plan(snap);
  ASSERT_EQ(plan.problems.size(), 1u);
  EXPECT_EQ(plan.problems[0].kind, "plan_error");
  EXPECT_NE(plan.find("a")->reason.find("left as it is"), std::string::npos) << plan.find("a")->reason;
  const auto actions = Reconciler().diff(snap, plan, {});
  EXPECT_EQ(count<SetCpuShares>(actions, "a"), 0u);
  EXPECT_EQ(plan.find("b")->weight, 1.0);
  EXPECT_EQ(plan.find("b")->reason, "priority 3 from template, weight 1.000 of 1 VMs");
}

// Issue 11 C: a shared VM placed before a dedicated one is re-pinned (vCPUs and emulator threads) to
// what the dedicated one left; nothing is re-pinned once it is there.
TEST(Reconciler, SharedVmsArePinnedToThePoolLeftByDedicatedVms) {
  std::vector<ManagedDomain> doms{make_domain("s", 1, {0, 1}, CpuPolicy::Shared, 1, 2),
                                  make_domain("d", 1, {0}, CpuPolicy::Dedicated)};
  Snapshot snap = snapshot_of(doms);
  snap.cpu_host = node0({0, 1});
  const Plan plan = make_plan(snap);
  EXPECT_TRUE(plan.find("s")->shared_pool);
  EXPECT_EQ(plan.find("s")->cpus, std::vector<policy::CpuId>{1});
  Reconciler r;
  const auto actions = r.diff(snap, plan, {});
  std::vector<std::string> pins;
  for (const Action& a : actions)
    if (a.vm == "s" && (a.is<PinVcpu>() || a.is<PinEmulator>()))
      pins.push_back(describe(a).substr(0, describe(a).find(" (")));
  EXPECT_EQ(pins, (std::vector<std::string>{"vm s: pin vCPU 0 to 1", "vm s: pin vCPU 1 to 1",
                                            "vm s: pin emulator threads to 1"}));
  FakeHypervisor hv;
  hv.domains = doms;
  apply_to(hv, actions);
  Snapshot after = snapshot_of(hv.domains);
  after.cpu_host = snap.cpu_host;
  EXPECT_TRUE(r.diff(after, make_plan(after), {}).empty());
  // The dedicated VM shut off: its CPU stays held (a start needs it), so the pool does not move.
  hv.dom("d").state = DomainState::ShutOff;
  Snapshot off = snapshot_of(hv.domains);
  off.cpu_host = snap.cpu_host;
  EXPECT_EQ(make_plan(off).find("s")->cpus, std::vector<policy::CpuId>{1});
  // Removed: the pool grows back.
  hv.domains.pop_back();
  Snapshot gone = snapshot_of(hv.domains);
  gone.cpu_host = snap.cpu_host;
  EXPECT_EQ(make_plan(gone).find("s")->cpus, (std::vector<policy::CpuId>{0, 1}));
  EXPECT_EQ(count<PinEmulator>(r.diff(gone, make_plan(gone), {})), 1u);
}

// Issue 13: elastic vCPU counts for shared VMs, with simulated time and the one fake hypervisor.
class ElasticVcpus : public ::testing::Test {
 protected:
  void SetUp() override { hv.domains = {make_domain("a", 1, {0, 1}, CpuPolicy::Shared, 1, 2)}; }
  // Busy on two threads (runnable 3: two loops and the agent), 100 % of its online vCPUs.
  static AgentState busy(std::uint64_t online) { return fresh(report(1, 100, 3, online)); }
  static AgentState idle(std::uint64_t online) { return fresh(report(1, 2, 1, online)); }
  // One tick at t: holds, plan, diff, applied to the fake and committed.
  std::vector<Action> tick(Clock::time_point t) {
    Snapshot s = snapshot_of(hv.domains, agents);
    s.cpu_host = node0({0, 1});
    s.vcpu_holds = r.hold_vcpus(s, t);
    plan = make_plan(s);
    const auto actions = r.diff(s, plan, t);
    apply_to(hv, actions);
    r.commit(actions, plan, t);
    return actions;
  }
  std::optional<int> sent(const std::vector<Action>& actions, const std::string& vm) {
    for (const Action& a : actions)
      if (a.vm == vm && a.is<SendVcpusOnline>()) return a.as<SendVcpusOnline>()->online;
    return std::nullopt;
  }
  std::vector<std::string> problem_kinds(const std::string& vm) const {
    std::vector<std::string> out;
    for (const PlanProblem& p : plan.problems)
      if (p.vm == vm) out.push_back(p.kind);
    return out;
  }
  FakeHypervisor hv;
  std::map<std::string, AgentState> agents;
  Reconciler r;
  Plan plan;
  const Clock::time_point t0 = Clock::time_point{} + seconds(1000);
};

TEST_F(ElasticVcpus, ABusySharedVmAloneIsHotAddedToThePoolsCpusAndTheAgentOnlinesThem) {
  agents["a"] = busy(1);
  const auto actions = tick(t0);
  ASSERT_EQ(count<SetVcpus>(actions, "a"), 1u);
  EXPECT_EQ(hv.dom("a").vcpus_current, 2);
  EXPECT_EQ(sent(actions, "a"), 2);
  const VmPlan* a = plan.find("a");
  EXPECT_EQ(a->vcpus_reason, "vCPUs 1 -> 2: pool of 2 CPUs, weight 1.000, demand 2.5 CPUs");
  EXPECT_NE(a->reason.find("; vCPUs 1 -> 2: pool of 2 CPUs"), std::string::npos) << a->reason;
  for (const Action& x : actions) {
    if (x.is<SetVcpus>() || x.is<SendVcpusOnline>()) {
      EXPECT_NE(describe(x).find("vCPUs 1 -> 2"), std::string::npos) << describe(x);
    }
  }
  // Not yet reported by the guest: asked again only after min_dwell, without a second hot-add.
  EXPECT_FALSE(sent(tick(t0 + seconds(1)), "a"));
  const auto again = tick(t0 + seconds(5));
  EXPECT_EQ(sent(again, "a"), 2);
  EXPECT_EQ(count<SetVcpus>(again, "a"), 0u);
  // The guest reports 2 online: nothing more to do, no problem.
  agents["a"] = busy(2);
  EXPECT_TRUE(tick(t0 + seconds(6)).empty());
  EXPECT_TRUE(plan.problems.empty());
  EXPECT_EQ(plan.find("a")->vcpus_online, 2);
}

TEST_F(ElasticVcpus, TwoBusyVmsOfEqualPrioritySettleAtOneEachAndAnIdleOneLeavesThePoolToTheOther) {
  agents["a"] = busy(2);
  hv.dom("a").vcpus_current = 2;
  EXPECT_TRUE(tick(t0).empty());  // alone at 2: as planned
  hv.domains.push_back(make_domain("b", 1, {0, 1}, CpuPolicy::Shared, 1, 2));
  agents["b"] = busy(1);
  auto actions = tick(t0 + seconds(10));
  EXPECT_EQ(sent(actions, "a"), 1);  // the agent offlines one: no ACPI unplug, no SetVcpus
  EXPECT_EQ(count<SetVcpus>(actions), 0u);
  EXPECT_FALSE(sent(actions, "b"));
  EXPECT_EQ(plan.find("b")->vcpus_online, 1);
  agents["a"] = busy(1);
  EXPECT_TRUE(tick(t0 + seconds(11)).empty());
  // b goes idle: a gets the pool back, but not within min_dwell of its last change.
  agents["b"] = idle(1);
  EXPECT_FALSE(sent(tick(t0 + seconds(12)), "a"));
  EXPECT_EQ(plan.find("a")->vcpus_online, 2);  // wanted, held by the dwell
  actions = tick(t0 + seconds(15));
  EXPECT_EQ(sent(actions, "a"), 2);
  EXPECT_EQ(count<SetVcpus>(actions, "a"), 0u);  // vCPU 1 is still present (offlined, not unplugged)
  EXPECT_FALSE(sent(actions, "b"));              // b keeps its floor of 1
}

TEST_F(ElasticVcpus, AGuestThatDoesNotConfirmIsLeftAtItsCountAndFlagged) {
  agents["a"] = busy(1);
  EXPECT_EQ(sent(tick(t0), "a"), 2);
  EXPECT_EQ(sent(tick(t0 + seconds(19)), "a"), 2);  // repeated once per min_dwell meanwhile
  EXPECT_TRUE(plan.problems.empty());
  const auto actions = tick(t0 + seconds(20));  // vcpus_confirm_timeout after the first request
  EXPECT_FALSE(sent(actions, "a"));
  EXPECT_EQ(problem_kinds("a"), std::vector<std::string>{"vcpus_unconfirmed"});
  EXPECT_NE(plan.problems[0].detail.find("asked its agent for 2 online vCPUs 20 s ago, but its agent still reports 1"),
            std::string::npos)
      << plan.problems[0].detail;
  EXPECT_FALSE(plan.find("a")->vcpus_online);
  EXPECT_FALSE(sent(tick(t0 + seconds(60)), "a"));  // still held
  // It reports the count at last: the hold is lifted.
  agents["a"] = busy(2);
  EXPECT_TRUE(tick(t0 + seconds(61)).empty());
  EXPECT_TRUE(plan.problems.empty());
  EXPECT_EQ(plan.find("a")->vcpus_online, 2);
}

TEST_F(ElasticVcpus, AHeldRequestIsForgottenWhenThePlanWantsAnotherCount) {
  agents["a"] = busy(1);
  tick(t0);
  tick(t0 + seconds(20));
  EXPECT_EQ(problem_kinds("a"), std::vector<std::string>{"vcpus_unconfirmed"});
  agents["a"] = idle(1);  // now it wants 1, which it has
  EXPECT_TRUE(tick(t0 + seconds(21)).empty());
  EXPECT_TRUE(plan.problems.empty());
  agents["a"] = busy(1);  // and 2 again: asked afresh
  EXPECT_EQ(sent(tick(t0 + seconds(30)), "a"), 2);
  EXPECT_TRUE(plan.problems.empty());
}

TEST_F(ElasticVcpus, WithoutABelievedAgentTheCountIsLeftAloneAndFlagged) {
  EXPECT_FALSE(sent(tick(t0), "a"));   // no agent: demand unknown (so max), nobody to online
  EXPECT_TRUE(plan.problems.empty());  // booting: its agent may not have started yet
  EXPECT_EQ(count<SetVcpus>(tick(t0 + seconds(19)), "a"), 0u);
  EXPECT_TRUE(plan.problems.empty());
  EXPECT_FALSE(sent(tick(t0 + seconds(20)), "a"));  // silent for vcpus_confirm_timeout: flagged
  EXPECT_EQ(problem_kinds("a"), std::vector<std::string>{"vcpus_held"});
  EXPECT_NE(plan.problems[0].detail.find("no agent has reported"), std::string::npos) << plan.problems[0].detail;
  agents["a"] = busy(1);
  agents["a"].hostile = true;
  EXPECT_FALSE(sent(tick(t0 + seconds(10)), "a"));
  EXPECT_NE(plan.problems[0].detail.find("flagged hostile"), std::string::npos) << plan.problems[0].detail;
  agents["a"] = busy(1);
  agents["a"].fresh = false;
  EXPECT_FALSE(sent(tick(t0 + seconds(20)), "a"));
  EXPECT_NE(plan.problems[0].detail.find("stale"), std::string::npos) << plan.problems[0].detail;
  // A VM with one vCPU at most is never flagged: its count cannot change.
  hv.dom("a").facts.max_vcpus = 1;
  tick(t0 + seconds(30));
  EXPECT_TRUE(plan.problems.empty());
}

TEST_F(ElasticVcpus, VcpusMinIsAFloorFromTheMetadata) {
  hv.domains.push_back(make_domain("b", 1, {0, 1}, CpuPolicy::Shared, 2, 2));
  hv.dom("b").facts.vcpus_min = 2;
  agents["a"] = busy(1);
  agents["b"] = idle(2);
  const auto actions = tick(t0);
  EXPECT_EQ(plan.find("b")->vcpus_online, 2);  // idle, but kept at its vcpus_min
  EXPECT_EQ(sent(actions, "a"), 2);            // the pool's idle part still goes to a
  EXPECT_FALSE(sent(actions, "b"));
}

// Issue 11 B, with simulated time.
class PriorityDwell : public ::testing::Test {
 protected:
  void SetUp() override { doms = {make_domain("flip", 1, {0}), make_domain("honest", 2, {0})}; }
  // One tick at t with flip wanting `p`: holds, plan, diff, applied to the live shares.
  Plan tick(double p, Clock::time_point t) {
    agents["flip"] = fresh(report(p));
    Snapshot s = snapshot_of(doms, agents);
    s.priority_holds = r.hold_priorities(s, t);
    const Plan plan = make_plan(s);
    const auto actions = r.diff(s, plan, t);
    for (const Action& a : actions)
      if (const auto* c = a.as<SetCpuShares>()) {
        for (auto& d : doms)
          if (d.name == a.vm) d.cpu_shares = c->shares;
        if (a.vm == "honest") ++honest_rewrites;
      }
    r.commit(actions, plan, t);
    return plan;
  }

  std::vector<ManagedDomain> doms;
  std::map<std::string, AgentState> agents;
  Reconciler r;  // priority_dwell 3 s, flapping above 3 changes within it
  Clock::time_point t0 = Clock::time_point{} + seconds(1000);
  int honest_rewrites = 0;
};

TEST_F(PriorityDwell, TheFirstChangeAppliesAtOnceALaterOneAfterTheDwell) {
  EXPECT_EQ(tick(1, t0).find("flip")->priority, 1.0);
  EXPECT_EQ(tick(5, t0 + seconds(10)).find("flip")->priority, 5.0);  // at once
  const Plan held = tick(2, t0 + seconds(11));
  EXPECT_EQ(held.find("flip")->priority, 5.0);
  EXPECT_FALSE(held.find("flip")->flapping);
  EXPECT_NE(held.find("flip")->reason.find("at most once per 3 s"), std::string::npos) << held.find("flip")->reason;
  EXPECT_TRUE(held.problems.empty());                                // a held change is not a problem
  EXPECT_EQ(tick(2, t0 + seconds(13)).find("flip")->priority, 2.0);  // 3 s after the last applied one
  // Between ticks: the daemon reconciles at once only for a change that would apply.
  EXPECT_FALSE(r.observe_priority("flip", 2, t0 + seconds(14)));  // unchanged
  EXPECT_FALSE(r.observe_priority("flip", 4, t0 + seconds(14)));  // held by the dwell
  EXPECT_TRUE(r.observe_priority("flip", 4, t0 + seconds(16)));
  EXPECT_TRUE(r.observe_priority("new-vm", 4, t0));
}

// A guest flipping between priority_min and priority_max ten times a second for 20 s: its neighbour's
// shares are rewritten a handful of times, not ~8 times a second; it is flagged flapping and held; once
// it is steady for a dwell it is believed again.
TEST_F(PriorityDwell, AFlappingGuestIsHeldAndItsNeighbourLeftAlone) {
  tick(1, t0);
  honest_rewrites = 0;
  Plan plan;
  bool flagged = false;
  for (int i = 1; i <= 200; ++i) {
    plan = tick(i % 2 ? 100 : 1, t0 + milliseconds(100 * i));
    flagged = flagged || plan.find("flip")->flapping;
  }
  EXPECT_LE(honest_rewrites, 2) << "neighbour's cpu_shares rewritten " << honest_rewrites << " times in 20 s";
  EXPECT_TRUE(flagged);
  ASSERT_TRUE(plan.find("flip")->flapping);
  ASSERT_EQ(plan.problems.size(), 1u);
  EXPECT_EQ(plan.problems[0].kind, "flapping");
  EXPECT_NE(plan.problems[0].detail.find("flapping"), std::string::npos) << plan.problems[0].detail;
  const double held_at = plan.find("flip")->priority;
  EXPECT_TRUE(held_at == 1.0 || held_at == 100.0);
  // Steady at 7 from 20.0 s: still held until a whole dwell has passed, then applied and unflagged.
  EXPECT_EQ(tick(7, t0 + milliseconds(20'100)).find("flip")->priority, held_at);
  EXPECT_TRUE(tick(7, t0 + milliseconds(22'000)).find("flip")->flapping);
  const Plan steady = tick(7, t0 + milliseconds(23'200));
  EXPECT_FALSE(steady.find("flip")->flapping);
  EXPECT_EQ(steady.find("flip")->priority, 7.0);
  EXPECT_TRUE(steady.problems.empty());
}

TEST_F(PriorityDwell, ZeroDwellAppliesEveryChange) {
  r.set_priority_dwell(milliseconds(0));
  tick(1, t0);
  for (int i = 1; i <= 10; ++i)
    EXPECT_EQ(tick(i % 2 ? 100 : 1, t0 + milliseconds(100 * i)).find("flip")->priority, i % 2 ? 100 : 1);
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
  ASSERT_EQ(count<SetMemory>(actions, "a"), 1u);
  for (const Action& act : actions)
    if (act.is<SetMemory>()) {
      EXPECT_EQ(describe(act).rfind("vm a: balloon 256 -> 200 MiB (", 0), 0u);
    }

  // The same report gone stale: no free memory known (the balloon reports none), so it is left alone.
  s.vms[0].agent.fresh = false;
  const Plan stale = make_plan(s);
  EXPECT_TRUE(stale.memory.find("a")->left_alone);
  EXPECT_EQ(count<SetMemory>(Reconciler().diff(s, stale, Clock::now())), 0u);
}

// What the host got back from the last shrink (gathered by the daemon) and QEMU's RSS (KiB) reach the
// balloon rule: an idle VM whose 100 MiB shrink returned 5 MiB is not squeezed below its keep; a
// settling hold (statistics older than the last change) decides nothing and says so.
TEST(MemoryPlan, RssAndTheLastShrinkReachTheBalloonRuleAndASettlingHoldDecidesNothing) {
  ManagedDomain d = make_domain("a", 1, {0});
  d.facts.max_memory_mib = 256;
  d.facts.memory_floor_mib = 32;
  Snapshot s = snapshot_of({d});
  MemoryStats m;
  m.actual_kib = 156 * 1024;
  m.usable_kib = 40 * 1024;  // keep = 156 − 40 + 64 = 180: nothing reclaimable, 124 MiB squeezable
  m.rss_kib = 195 * 1024;
  s.vms[0].balloon = {.stats = m,
                      .previous = std::nullopt,
                      .fresh = true,
                      .hold = {},
                      .settling = false,
                      .last_shrink = policy::ShrinkReturn{
                          .taken_mib = 100, .rss_before_mib = 200, .rss_after_mib = 195, .node_free_before_mib = 8192}};
  s.memory = {.free_mib = {{0, 8192}}, .reserve_mib = 512, .limit_mib = 100, .config = {}};
  const Plan stopped = make_plan(s);
  const VmMemoryPlan* a = stopped.memory.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_FALSE(a->target_mib.has_value()) << a->reason;
  EXPECT_NE(a->reason.find("not below keep 180 MiB: the last 100 MiB taken gave the host back 5 MiB (QEMU RSS "
                           "200 -> 195 MiB"),
            std::string::npos)
      << a->reason;
  EXPECT_EQ(count<SetMemory>(Reconciler().diff(s, stopped, Clock::now())), 0u);

  s.vms[0].balloon.stats->rss_kib = 170 * 1024;  // RSS moved by 25 MiB (a quarter of 100): squeezed again
  const Plan moved = make_plan(s);
  EXPECT_EQ(moved.memory.find("a")->target_mib, std::optional<std::uint64_t>(100)) << moved.memory.find("a")->reason;

  s.vms[0].balloon.hold = "waiting for the guest's statistics newer than the last balloon change (1 s ago)";
  s.vms[0].balloon.settling = true;
  const Plan settling = make_plan(s);
  a = settling.memory.find("a");
  EXPECT_TRUE(a->left_alone && a->held && a->settling);
  EXPECT_FALSE(a->target_mib.has_value());
  EXPECT_NE(a->reason.find("newer than the last balloon change"), std::string::npos) << a->reason;
  EXPECT_EQ(count<SetMemory>(Reconciler().diff(s, settling, Clock::now())), 0u);
  s.vms[0].balloon.requested_mib = 100;  // on its way there: counted at it, shown at what it is now
  const Plan on_its_way = make_plan(s);  // kept: `a` points into it
  a = on_its_way.memory.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->actual_mib, std::optional<std::uint64_t>(156));
  EXPECT_NE(a->reason.find("counted at its target 100 MiB"), std::string::npos) << a->reason;
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
  doms[0].facts.placement.hugepage_kib = 2048;
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
  EXPECT_EQ(count<SetMemory>(actions, "a"), 0u);
  EXPECT_EQ(count<SetMemory>(actions, "b"), 1u);
}

std::uint64_t memory_target(const std::vector<Action>& actions) {
  for (const Action& a : actions)
    if (const auto* m = a.as<SetMemory>()) return m->target_mib;
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
  ASSERT_EQ(count<SetMemory>(actions), 1u);
  rec.commit(actions, plan, now);
  EXPECT_EQ(memory_target(actions), 150u);  // 256 - (256 - 150 over the limit)
  // The guest gave only part of it: the same target (150) stays pending, no second request.
  s.vms[0].balloon.stats->actual_kib = 200 * 1024;
  s.vms[0].balloon.stats->usable_kib = 150 * 1024;
  plan = make_plan(s);
  ASSERT_EQ(plan.memory.find("a")->target_mib, std::optional<std::uint64_t>(150));
  EXPECT_EQ(count<SetMemory>(rec.diff(s, plan, now)), 0u);
  EXPECT_EQ(count<SetMemory>(Reconciler().diff(s, plan, now)), 1u);  // without the history
  // A new target is requested at once.
  s.memory.limit_mib = 120;
  plan = make_plan(s);
  actions = rec.diff(s, plan, now);
  ASSERT_EQ(count<SetMemory>(actions), 1u);
  EXPECT_EQ(memory_target(actions), 120u);
}

}  // namespace
}  // namespace llmorch::orch
