#include "llmorch/orch/reconciler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "llmorch/orch/config.h"
#include "llmorch/policy/cpu_plan.h"

namespace llmorch::orch {

std::string_view to_string(PrioritySource s) {
  switch (s) {
    case PrioritySource::Agent: return "agent";
    case PrioritySource::Template: return "template";
    case PrioritySource::Stale: return "stale";
    case PrioritySource::Hostile: return "hostile";
  }
  return "unknown";
}

namespace {

// Positions of `vms` sorted by name (stable: of equal names, the first in plan order comes first).
template <typename Vm>
std::vector<std::uint32_t> name_index(const std::vector<Vm>& vms) {
  std::vector<std::uint32_t> order(vms.size());
  for (std::size_t i = 0; i < vms.size(); ++i) order[i] = static_cast<std::uint32_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return vms[a].name < vms[b].name; });
  return order;
}

// O(log n) with an index that covers `vms`, else the first VM of that name by a linear scan.
template <typename Vm>
const Vm* find_by_name(const std::vector<Vm>& vms, const std::vector<std::uint32_t>& by_name, std::string_view name) {
  if (by_name.size() != vms.size()) {
    for (const Vm& vm : vms)
      if (vm.name == name) return &vm;
    return nullptr;
  }
  auto it = std::lower_bound(by_name.begin(), by_name.end(), name,
                             [&](std::uint32_t i, std::string_view n) { return std::string_view(vms[i].name) < n; });
  return it != by_name.end() && vms[*it].name == name ? &vms[*it] : nullptr;
}

}  // namespace

const VmPlan* Plan::find(std::string_view name) const { return find_by_name(vms, by_name, name); }
void Plan::index_by_name() {
  by_name = name_index(vms);
  memory.index_by_name();
}

const VmMemoryPlan* MemoryPlan::find(std::string_view name) const { return find_by_name(vms, by_name, name); }
void MemoryPlan::index_by_name() { by_name = name_index(vms); }

bool agent_distrusted(const AgentState& agent) { return agent.hostile; }

double effective_priority(const VmFacts& facts, const AgentState& agent, PrioritySource* source) {
  PrioritySource s = PrioritySource::Template;
  double p = facts.priority;
  if (agent.hostile) {
    s = PrioritySource::Hostile;  // a guest that misbehaves is not believed, even in its valid frames
  } else if (agent.fresh && agent.last_report && agent.last_report->priority) {
    s = PrioritySource::Agent;
    p = *agent.last_report->priority;
  } else if (!agent.fresh && agent.last_report) {
    s = PrioritySource::Stale;
  }
  if (source) *source = s;
  return p;
}

double demand_cpus(const AgentState& agent) {
  if (agent.hostile || !agent.fresh || !agent.last_report) return -1.0;
  const protocol::Report& r = *agent.last_report;
  const double busy = r.cpu_pct / 100.0 * static_cast<double>(r.ncpu_online);
  // runnable counts the agent itself (it reads /proc/stat while it runs): an idle guest reports 1.
  const double others = r.runnable > 0 ? static_cast<double>(r.runnable - 1) : 0.0;
  return std::max(others, busy) * kDemandHeadroom;
}

namespace {

std::string priority_phrase(double p, PrioritySource s) {
  switch (s) {
    case PrioritySource::Agent: return fmt::format("priority {:g} reported by agent", p);
    case PrioritySource::Template: return fmt::format("priority {:g} from template", p);
    case PrioritySource::Stale: return fmt::format("priority {:g} from template, agent report stale", p);
    case PrioritySource::Hostile: return fmt::format("priority {:g} from template, agent flagged hostile", p);
  }
  return {};
}

std::string cpu_list(const std::vector<policy::CpuId>& cpus) {
  return format_cpu_list(std::set<policy::CpuId>(cpus.begin(), cpus.end()));
}

bool rebalanced(const ManagedDomain& d) {
  return d.facts.placement.cpu_policy == policy::CpuPolicy::Dedicated && d.facts.placement.nodes.size() == 1;
}

std::optional<std::uint64_t> kib_to_mib(const std::optional<std::uint64_t>& kib) {
  if (!kib) return std::nullopt;
  return *kib / 1024;
}

policy::BalloonStats balloon_stats(const MemoryStats& m) {
  return {.actual_mib = kib_to_mib(m.actual_kib),
          .unused_mib = kib_to_mib(m.unused_kib),
          .available_mib = kib_to_mib(m.available_kib),
          .usable_mib = kib_to_mib(m.usable_kib),
          .swap_in_mib = kib_to_mib(m.swap_in_kib),
          .swap_out_mib = kib_to_mib(m.swap_out_kib),
          .major_faults = m.major_faults};
}

// The agent's memory figures, from a fresh report of an agent that is believed only (PROTOCOL.md: KiB,
// floor in MiB).
std::optional<policy::AgentMemory> agent_memory(const AgentState& agent) {
  if (agent_distrusted(agent) || !agent.fresh || !agent.last_report) return std::nullopt;
  const protocol::Report& r = *agent.last_report;
  return policy::AgentMemory{.mem_total_mib = r.mem_total_kib / 1024,
                             .mem_available_mib = r.mem_avail_kib / 1024,
                             .psi_some10 = r.psi_mem_some10,
                             .floor_mib = r.floor_mib};
}

// Why this VM's balloon is left alone for an expected reason, or empty. Hugepage-backed memory stays in
// the host's hugepage pool whatever the balloon does: squeezing the guest would gain the host nothing.
std::string balloon_hold(const VmSnapshot& vm) {
  if (vm.domain.facts.placement.hugepage_kib != 0)
    return "hugepage-backed memory: the balloon cannot give it back to the host";
  return vm.balloon.hold;
}

policy::BalloonVm balloon_vm(const VmSnapshot& vm, double weight, const HostMemory& host) {
  const ManagedDomain& d = vm.domain;
  policy::BalloonVm b;
  b.name = d.name;
  if (vm.balloon.stats) b.stats = balloon_stats(*vm.balloon.stats);
  if (vm.balloon.previous) b.previous = balloon_stats(*vm.balloon.previous);
  b.stats_fresh = vm.balloon.fresh;
  if (vm.balloon.stats) b.rss_mib = kib_to_mib(vm.balloon.stats->rss_kib);
  // Held until statistics newer than its last change come: counted at the target it is moving to.
  if (vm.balloon.settling && vm.balloon.requested_mib && b.stats.actual_mib)
    b.stats.actual_mib = vm.balloon.requested_mib;
  b.last_shrink = vm.balloon.last_shrink;
  b.agent = agent_memory(vm.agent);
  // A claimed floor goes no higher than the operator allows (memory_floor_max_mib), and expires with its
  // report: a stale or distrusted agent leaves the template's floor only.
  if (const std::uint64_t cap = floor_claim_cap(d.facts); b.agent && cap > 0)
    b.agent->floor_mib = std::min(b.agent->floor_mib, cap);
  b.template_floor_mib = d.facts.memory_floor_mib;
  if (!balloon_hold(vm).empty()) b.stats_fresh = false;  // the rule leaves it alone but counts its memory
  b.max_memory_mib = d.facts.max_memory_mib ? d.facts.max_memory_mib : d.memory_max_kib / 1024;
  b.weight = std::clamp(weight, 0.0, 1.0);
  const auto& nodes = d.facts.placement.nodes;
  const bool known = std::all_of(nodes.begin(), nodes.end(), [&](policy::NodeId n) { return host.free_mib.count(n); });
  if (known) b.nodes = nodes;  // else: counted for the host limit only
  return b;
}

// plan_balloon over the active VMs. Inputs it rejects (a VM without a max size) leave every balloon
// alone this tick, with the rule's message as the reason, instead of stopping the CPU plan.
MemoryPlan make_memory_plan(const Snapshot& snapshot, const std::vector<VmPlan>& cpu) {
  std::vector<policy::BalloonVm> vms;
  std::vector<std::string> holds;
  std::vector<bool> settling;
  std::vector<std::optional<std::uint64_t>> actuals;  // the balloons now (a settling VM is planned at its target)
  for (const VmSnapshot& vm : snapshot.vms) {
    if (!vm.domain.active()) continue;
    holds.push_back(balloon_hold(vm));
    settling.push_back(vm.balloon.settling && vm.domain.facts.placement.hugepage_kib == 0);
    actuals.push_back(vm.balloon.stats ? kib_to_mib(vm.balloon.stats->actual_kib) : std::nullopt);
    // The CPU plan holds the active VMs in the same (snapshot) order: its next entry is this VM's.
    const std::size_t k = vms.size();
    const VmPlan* p = k < cpu.size() && cpu[k].name == vm.domain.name ? &cpu[k] : nullptr;
    vms.push_back(balloon_vm(vm, p ? p->weight : 0.0, snapshot.memory));
  }
  policy::BalloonHost host;
  for (const auto& [id, free] : snapshot.memory.free_mib)
    host.nodes.push_back({.id = id, .free_mib = free, .reserve_mib = snapshot.memory.reserve_mib});
  host.limit_mib = snapshot.memory.limit_mib;
  std::vector<policy::BalloonDecision> decisions;
  std::string error;
  try {
    decisions = policy::plan_balloon(host, vms, snapshot.memory.config);
  } catch (const std::invalid_argument& e) {
    error = std::string("left alone: ") + e.what();
  }
  MemoryPlan out;
  for (std::size_t i = 0; i < vms.size(); ++i) {
    const policy::BalloonVm& vm = vms[i];
    VmMemoryPlan m{.name = vm.name,
                   .actual_mib = actuals[i],
                   .target_mib = std::nullopt,
                   .floor_mib = policy::effective_floor(vm),
                   .max_mib = vm.max_memory_mib,
                   .reason = error,
                   .left_alone = true};
    if (error.empty()) {
      m.target_mib = decisions[i].target_mib;
      m.reason = decisions[i].reason;
      m.left_alone = decisions[i].left_alone;
    }
    if (!holds[i].empty()) {
      m.reason = "left alone: " + holds[i];
      m.left_alone = m.held = true;
      m.settling = settling[i];
      if (m.settling && vm.stats.actual_mib && vm.stats.actual_mib != m.actual_mib)
        m.reason += fmt::format("; counted at its target {} MiB", *vm.stats.actual_mib);
    }
    out.vms.push_back(std::move(m));
  }
  return out;
}

// Why a shared VM's agent cannot be asked to change its online vCPUs, or empty (see the header).
std::string no_believed_agent(const AgentState& agent) {
  if (agent.hostile) return "its agent is flagged hostile, so its ncpu_online is not believed";
  if (!agent.last_report) return "no agent has reported from it (only the agent can online vCPUs in the guest)";
  if (!agent.fresh) return "its agent's last report is stale (only the agent can online vCPUs in the guest)";
  return {};
}

// Elastic vCPUs of a shared VM whose pool was planned: what its part of the pool is, and whether the
// count is managed now (a believed, fresh agent and no hold) or left as it is (and why).
void shared_vcpus(const VmSnapshot& vm, const policy::VmCpuPlan& c, const Snapshot& snapshot, VmPlan& out,
                  std::vector<PlanProblem>& problems) {
  const ManagedDomain& d = vm.domain;
  const int k = *c.vcpus_online;
  out.vcpus_target = k;
  const std::string no_agent = no_believed_agent(vm.agent);
  const int now = no_agent.empty() ? static_cast<int>(vm.agent.last_report->ncpu_online) : d.vcpus_current;
  const std::string demand = out.demand_cpus >= 0 ? fmt::format("demand {:.1f} CPUs", out.demand_cpus)
                                                  : std::string("demand unknown (no fresh agent report)");
  out.vcpus_reason = fmt::format("vCPUs {} -> {}: pool of {} CPUs, weight {:.3f}, {}", now, k, out.cpus.size(),
                                 c.pool_weight.value_or(0.0), demand);
  if (now == k)
    out.vcpus_reason = fmt::format("vCPUs {}: pool of {} CPUs, weight {:.3f}, {}", k, out.cpus.size(),
                                   c.pool_weight.value_or(0.0), demand);
  out.reason += "; " + out.vcpus_reason;
  const auto hold = snapshot.vcpu_holds.find(d.name);
  if (no_agent.empty() && hold == snapshot.vcpu_holds.end()) {
    out.vcpus_now = now;
    return;
  }
  out.vcpus_online.reset();  // left at its count
  if (now == k) return;      // nothing to change anyway
  if (!no_agent.empty()) {
    // A guest that has never reported is flagged only once it has been silent for a while (hold_vcpus):
    // a booting guest's agent has not started yet.
    if (!vm.agent.last_report && hold == snapshot.vcpu_holds.end()) return;
    problems.push_back({d.name, "vcpus_held",
                        fmt::format("its part of the shared pool is {} vCPUs, but {}; left at {} vCPUs (check "
                                    "that the guest runs llmorch-agent)",
                                    k, no_agent, now)});
  } else {
    problems.push_back({d.name, "vcpus_unconfirmed", hold->second});
  }
}

}  // namespace

policy::CpuHost cpu_host(const policy::HostTopology& topology, const std::set<policy::CpuId>& reserved,
                         const std::set<policy::CpuId>& shared) {
  policy::CpuHost host;
  for (const policy::NumaNode& n : topology.nodes) {
    auto& cpus = host.node_cpus[n.id];
    for (const policy::Cpu& c : n.cpus) cpus.push_back(c.id);
  }
  host.reserved = reserved;
  host.shared = shared;
  return host;
}

Plan make_plan(const Snapshot& snapshot) {
  std::vector<policy::VmCpuInput> inputs;
  Plan plan;
  policy::CpuHost host = snapshot.cpu_host;
  for (const VmSnapshot& vm : snapshot.vms) {
    const ManagedDomain& d = vm.domain;
    if (d.active() || d.facts.placement.cpu_policy != policy::CpuPolicy::Dedicated) continue;
    host.held.insert(d.facts.placement.cpus.begin(), d.facts.placement.cpus.end());  // a later start needs them
  }
  for (const VmSnapshot& vm : snapshot.vms) {
    const ManagedDomain& d = vm.domain;
    if (!d.active()) continue;
    VmPlan out;
    out.name = d.name;
    out.priority = effective_priority(d.facts, vm.agent, &out.source);
    if (auto hold = snapshot.priority_holds.find(d.name); hold != snapshot.priority_holds.end()) {
      out.priority = hold->second.priority;
      out.flapping = hold->second.flapping;
      out.held = hold->second.reason;
    }
    out.template_priority = d.facts.priority;
    if (vm.agent.last_report) out.reported_priority = vm.agent.last_report->priority;
    out.demand_cpus = demand_cpus(vm.agent);
    if (rebalanced(d)) out.rebalanced_node = d.facts.placement.nodes.front();
    plan.vms.push_back(std::move(out));
    int max_vcpus = std::max(1, d.facts.max_vcpus);
    if (d.vcpus_max > 0) max_vcpus = std::min(max_vcpus, d.vcpus_max);  // the domain's real limit
    inputs.push_back({.name = d.name,
                      .cpu_policy = d.facts.placement.cpu_policy,
                      .nodes = d.facts.placement.nodes,
                      .cpus = d.facts.placement.cpus,
                      .min_vcpus = std::clamp(d.facts.vcpus_min, 1, max_vcpus),
                      .max_vcpus = max_vcpus,
                      .priority = plan.vms.back().priority,
                      .demand_cpus = plan.vms.back().demand_cpus,
                      .live_pins = d.vcpu_pins});
  }
  const policy::CpuPlan cpu = policy::plan_cpus(inputs, snapshot.alpha, host);
  std::vector<const VmSnapshot*> active;  // in plan order
  for (const VmSnapshot& vm : snapshot.vms)
    if (vm.domain.active()) active.push_back(&vm);
  std::size_t planned = 0;
  for (const policy::VmCpuPlan& c : cpu.vms) planned += c.error.empty() || c.weight > 0 ? 1 : 0;
  for (std::size_t i = 0; i < plan.vms.size(); ++i) {
    VmPlan& out = plan.vms[i];
    const policy::VmCpuPlan& c = cpu.vms[i];
    out.weight = c.weight;
    out.cpu_shares = c.cpu_shares;
    out.cpus = c.cpus;
    out.vcpus_online = c.vcpus_online;
    out.shared_pool = c.pool_planned;
    out.error = c.error;
    out.repaired = c.repaired;
    const std::string priority = out.held.empty() ? priority_phrase(out.priority, out.source)
                                                  : fmt::format("priority {:g} held: {}", out.priority, out.held);
    out.reason = fmt::format("{}, weight {:.3f} of {} VMs", priority, out.weight, planned);
    if (out.rebalanced_node && out.demand_cpus >= 0) out.reason += fmt::format(", demand {:.2f} CPUs", out.demand_cpus);
    if (!out.error.empty()) {
      out.reason = "left as it is: " + out.error;
      plan.problems.push_back({out.name, "plan_error", out.error});
    }
    if (out.shared_pool && c.vcpus_online && out.error.empty())
      shared_vcpus(*active[i], c, snapshot, out, plan.problems);
    if (!out.repaired.empty()) plan.problems.push_back({out.name, "repaired", out.repaired});
    if (out.flapping) plan.problems.push_back({out.name, "flapping", out.held});
  }
  plan.memory = make_memory_plan(snapshot, plan.vms);
  plan.index_by_name();
  return plan;
}

std::string describe(const Action& a) {
  const std::string& vm = a.vm;
  const std::string& why = a.reason;
  return std::visit(Overloaded{
                        [&](const SetCpuShares& c) {
                          return fmt::format("vm {}: cpu_shares {} -> {}{} ({})", vm,
                                             c.live ? std::to_string(*c.live) : "?", c.shares,
                                             c.live_only ? " (live)" : "", why);
                        },
                        [&](const SetVcpus& c) {
                          return fmt::format("vm {}: vCPUs {} -> {} (hot-add; {})", vm, c.current, c.count, why);
                        },
                        [&](const PinVcpu& c) {
                          return fmt::format("vm {}: pin vCPU {} to {} ({})", vm, c.vcpu, cpu_list(c.cpus), why);
                        },
                        [&](const PinEmulator& c) {
                          return fmt::format("vm {}: pin emulator threads to {} ({})", vm, cpu_list(c.cpus), why);
                        },
                        [&](const SendVcpusOnline& c) {
                          return fmt::format("vm {}: ask agent for {} online vCPUs ({})", vm, c.online, why);
                        },
                        [&](const SetMetadata& c) {
                          return fmt::format("vm {}: record placement CPUs {} in metadata ({})", vm,
                                             cpu_list(c.facts.placement.cpus), why);
                        },
                        [&](const SetMemory& c) {
                          return fmt::format("vm {}: balloon {} -> {} MiB ({})", vm, c.actual_mib, c.target_mib, why);
                        },
                    },
                    a.change);
}

bool Reconciler::dwell_blocks(policy::NodeId node, TimePoint now) const {
  auto it = nodes_.find(node);
  return it != nodes_.end() && now - it->second.repinned_at < config_.min_dwell;
}

void Reconciler::observe(PriorityTrack& t, double wanted, TimePoint now) const {
  if (wanted != t.wanted) {
    t.changes.push_back(now);
    t.wanted = wanted;
  }
  while (!t.changes.empty() && now - t.changes.front() >= config_.priority_dwell) t.changes.pop_front();
  if (static_cast<int>(t.changes.size()) > config_.flap_changes) t.flapping = true;
  else if (t.changes.empty()) t.flapping = false;  // steady for a whole dwell
}

bool Reconciler::may_apply(const PriorityTrack& t, TimePoint now) const {
  return !t.flapping && (!t.applied_at || now - *t.applied_at >= config_.priority_dwell);
}

bool Reconciler::observe_priority(const std::string& vm, double wanted, TimePoint now) {
  auto it = priorities_.find(vm);
  if (it == priorities_.end()) return true;
  observe(it->second, wanted, now);
  return wanted != it->second.applied && may_apply(it->second, now);
}

std::map<std::string, PriorityHold> Reconciler::hold_priorities(const Snapshot& snapshot, TimePoint now) {
  std::map<std::string, PriorityHold> holds;
  std::map<std::string, PriorityTrack> seen;
  const double dwell_s = std::chrono::duration<double>(config_.priority_dwell).count();
  for (const VmSnapshot& vm : snapshot.vms) {
    if (!vm.domain.active()) continue;
    const double wanted = effective_priority(vm.domain.facts, vm.agent, nullptr);
    auto it = priorities_.find(vm.domain.name);
    if (it == priorities_.end()) {  // new: its priority applies at once
      seen[vm.domain.name] = {
          .applied = wanted, .applied_at = std::nullopt, .wanted = wanted, .changes = {}, .flapping = false};
      continue;
    }
    PriorityTrack& t = seen[vm.domain.name] = std::move(it->second);
    observe(t, wanted, now);
    if (wanted != t.applied && may_apply(t, now)) {
      t.applied = wanted;
      t.applied_at = now;
    }
    if (t.applied == wanted && !t.flapping) continue;
    PriorityHold& h = holds[vm.domain.name];
    h.priority = t.applied;
    h.flapping = t.flapping;
    if (t.flapping) {
      h.reason = fmt::format(
          "its priority changed {} times within {:g} s (flapping; now it wants {:g}); held at {:g} "
          "until it is steady for {:g} s",
          t.changes.size(), dwell_s, wanted, t.applied, dwell_s);
    } else {
      const double left = dwell_s - std::chrono::duration<double>(now - *t.applied_at).count();
      h.reason = fmt::format(
          "it wants {:g}, but a VM's priority changes the plan at most once per {:g} s "
          "(priority_dwell_ms); {:.1f} s to go",
          wanted, dwell_s, std::max(0.0, left));
    }
  }
  priorities_.swap(seen);
  return holds;
}

namespace {

Action make_action(const std::string& vm, Change change, std::string reason) {
  return Action{.vm = vm, .change = std::move(change), .reason = std::move(reason)};
}

// persist: the definition lacks shares set live only by the report fast path: write them even within
// the tolerance. live_only: the fast path's own write.
void shares_action(const ManagedDomain& d, const VmPlan& p, std::uint64_t tol_abs, double tol, bool persist,
                   bool live_only, std::vector<Action>& out) {
  const auto want = static_cast<std::uint64_t>(p.cpu_shares);
  if (!d.cpu_shares && d.cpu_shares_unreadable) return;  // unknown this tick: no reason to write
  std::string reason = p.reason;
  if (d.cpu_shares) {
    const std::uint64_t live = *d.cpu_shares;
    const std::uint64_t delta = live > want ? live - want : want - live;
    const auto limit = std::max<std::uint64_t>(tol_abs, static_cast<std::uint64_t>(tol * static_cast<double>(live)));
    if (delta <= limit && !persist) return;
    if (delta <= limit) reason = "save the shares set live at the agent's report into the definition";
  }
  out.push_back(
      make_action(d.name, SetCpuShares{.live = d.cpu_shares, .shares = want, .live_only = live_only}, reason));
}

// Pins that make vCPU i run on set[i] (i < k) and the rest on the whole set; only those that differ.
void pin_actions(const ManagedDomain& d, const std::vector<policy::CpuId>& set, const std::string& reason,
                 std::vector<Action>& out) {
  std::vector<policy::CpuId> whole = set;
  std::sort(whole.begin(), whole.end());
  const int total = std::max(d.vcpus_max, static_cast<int>(set.size()));
  for (int i = 0; i < total; ++i) {
    std::vector<policy::CpuId> want = i < static_cast<int>(set.size())
                                          ? std::vector<policy::CpuId>{set[static_cast<std::size_t>(i)]}
                                          : whole;
    const bool same = i < static_cast<int>(d.vcpu_pins.size()) && d.vcpu_pins[static_cast<std::size_t>(i)] == want;
    if (same) continue;
    out.push_back(make_action(d.name, PinVcpu{.vcpu = i, .cpus = std::move(want)}, reason));
  }
}

// A shared VM: every vCPU and the emulator threads on the whole pool; only those that differ.
void pool_pin_actions(const ManagedDomain& d, const VmPlan& p, std::vector<Action>& out) {
  const std::string reason = fmt::format(
      "shared pool {}: the CPUs of its node(s) that are neither reserved nor "
      "dedicated; {}",
      cpu_list(p.cpus), p.reason);
  const int total = std::max(d.vcpus_max, static_cast<int>(d.vcpu_pins.size()));
  for (int i = 0; i < total; ++i) {
    const bool same = i < static_cast<int>(d.vcpu_pins.size()) && d.vcpu_pins[static_cast<std::size_t>(i)] == p.cpus;
    if (same) continue;
    out.push_back(make_action(d.name, PinVcpu{.vcpu = i, .cpus = p.cpus}, reason));
  }
  if (d.emulator_pins != p.cpus) {
    out.push_back(make_action(d.name, PinEmulator{.cpus = p.cpus}, reason));
  }
}

void memory_action(const VmMemoryPlan* m, const std::map<std::string, std::uint64_t>& requested,
                   std::vector<Action>& out) {
  if (!m || !m->target_mib || !m->actual_mib || *m->target_mib == *m->actual_mib) return;
  auto pending = requested.find(m->name);
  if (pending != requested.end() && pending->second == *m->target_mib) return;
  out.push_back(make_action(m->name, SetMemory{.actual_mib = *m->actual_mib, .target_mib = *m->target_mib}, m->reason));
}

}  // namespace

std::vector<Action> Reconciler::diff(const Snapshot& snapshot, const Plan& plan, TimePoint now, DiffPass pass) const {
  const bool reports = pass == DiffPass::Reports;
  std::vector<Action> out;
  std::map<policy::NodeId, bool> blocked;
  for (const VmPlan& p : plan.vms)
    if (p.rebalanced_node && !blocked.count(*p.rebalanced_node))
      blocked[*p.rebalanced_node] = dwell_blocks(*p.rebalanced_node, now);
  for (const VmPlan& p : plan.vms)  // a repair is applied at once: half of it would re-create the conflict
    if (p.rebalanced_node && !p.repaired.empty()) blocked[*p.rebalanced_node] = false;

  for (const VmSnapshot& vm : snapshot.vms) {
    const ManagedDomain& d = vm.domain;
    const VmPlan* p = plan.find(d.name);
    if (!p || !p->error.empty()) continue;  // a VM the plan cannot handle is left as it is
    shares_action(d, *p, config_.share_tolerance_abs, config_.share_tolerance,
                  !reports && shares_live_only_.count(d.name), reports, out);
    if (!reports) memory_action(plan.memory.find(d.name), memory_requested_, out);
    if (p->shared_pool) pool_pin_actions(d, *p, out);
    if (d.facts.old_format) {
      SetMetadata meta{.facts = d.facts};
      meta.facts.old_format = false;
      out.push_back(make_action(d.name, std::move(meta),
                                "metadata of an older llmorch: the CPU policy and hugepage size now live only in "
                                "<placement>, rewritten once"));
    }
    if (p->shared_pool && p->vcpus_online && p->vcpus_now && *p->vcpus_online != *p->vcpus_now) {
      const int k = *p->vcpus_online;
      const auto track = vcpu_tracks_.find(d.name);
      const bool known = track != vcpu_tracks_.end();
      const bool again = known && track->second.pending == k;  // the same request, not yet reported
      const bool due = again ? now - track->second.asked_at >= config_.min_dwell
                             : !known || now - track->second.changed_at >= config_.min_dwell;
      if (due) {
        if (k > d.vcpus_current) {
          out.push_back(make_action(d.name, SetVcpus{.current = d.vcpus_current, .count = k}, p->vcpus_reason));
        }
        out.push_back(make_action(d.name, SendVcpusOnline{.online = k},
                                  again ? "the guest has not reported it yet; " + p->vcpus_reason : p->vcpus_reason));
      }
    }
    if (!p->rebalanced_node || !p->vcpus_online) continue;

    const int k = *p->vcpus_online;
    const bool moves = p->cpus != d.facts.placement.cpus;
    if (moves && blocked[*p->rebalanced_node]) {
      // Dwell: keep the held set, but still repair live pins that drifted from it.
      pin_actions(d, d.facts.placement.cpus, "restore the recorded placement", out);
      continue;
    }
    const std::string reason = moves ? fmt::format("CPUs {} -> {}: {}", cpu_list(d.facts.placement.cpus),
                                                   cpu_list(p->cpus),
                                                   p->repaired.empty() ? p->reason : "repair: " + p->repaired)
                                     : "restore the recorded placement";
    if (k > d.vcpus_current) {
      out.push_back(make_action(d.name, SetVcpus{.current = d.vcpus_current, .count = k}, p->reason));
    }
    pin_actions(d, p->cpus, reason, out);
    const auto last_sent = vcpus_sent_.find(d.name);
    const bool guest_differs = vm.agent.fresh && vm.agent.last_report &&
                               vm.agent.last_report->ncpu_online != static_cast<std::uint64_t>(k);
    const bool resend_due = last_sent == vcpus_sent_.end() || now - last_sent->second >= config_.min_dwell;
    if (moves || (guest_differs && resend_due))
      out.push_back(make_action(d.name, SendVcpusOnline{.online = k},
                                moves ? p->reason : "the guest reports a different number of online CPUs"));
    if (moves) {
      SetMetadata meta{.facts = d.facts};
      meta.facts.placement.cpus = p->cpus;
      meta.facts.old_format = false;
      out.push_back(make_action(d.name, std::move(meta), "so a restart rebuilds the same placement"));
    }
  }
  return out;
}

void record_applied(Snapshot& snapshot, const std::vector<Action>& applied) {
  std::map<std::string_view, ManagedDomain*> by_name;
  for (VmSnapshot& v : snapshot.vms) by_name.emplace(v.domain.name, &v.domain);
  for (const Action& a : applied) {
    auto vm = by_name.find(a.vm);
    if (vm == by_name.end()) continue;
    ManagedDomain& d = *vm->second;
    std::visit(
        Overloaded{
            [&](const SetCpuShares& c) {
              d.cpu_shares = c.shares;
              d.cpu_shares_unreadable = false;
            },
            [&](const SetVcpus& c) { d.vcpus_current = c.count; },
            [&](const PinVcpu& c) {
              const auto i = static_cast<std::size_t>(c.vcpu);
              if (d.vcpu_pins.size() <= i) d.vcpu_pins.resize(i + 1);
              d.vcpu_pins[i] = c.cpus;
            },
            [&](const PinEmulator& c) { d.emulator_pins = c.cpus; }, [&](const SetMetadata& c) { d.facts = c.facts; },
            [](const SetMemory&) {},        // the balloon's size follows the guest
            [](const SendVcpusOnline&) {},  // the guest's business; its agent reports it
        },
        a.change);
  }
}

std::map<std::string, std::string> Reconciler::hold_vcpus(const Snapshot& snapshot, TimePoint now) {
  std::map<std::string, std::string> holds;
  std::map<std::string, VcpuTrack> seen;
  std::map<std::string, TimePoint> silent;
  for (const VmSnapshot& vm : snapshot.vms) {
    if (vm.domain.active() && !vm.agent.last_report) {  // no agent has reported yet: booting, or none
      auto since = silent_since_.find(vm.domain.name);
      const TimePoint first = since == silent_since_.end() ? now : since->second;
      silent[vm.domain.name] = first;
      if (now - first >= config_.vcpus_confirm_timeout)
        holds[vm.domain.name] = fmt::format("no agent has reported from it in {:.0f} s",
                                            std::chrono::duration<double>(now - first).count());
    }
    auto it = vcpu_tracks_.find(vm.domain.name);
    if (!vm.domain.active() || it == vcpu_tracks_.end()) continue;  // gone or stopped: forgotten
    VcpuTrack& t = seen[vm.domain.name] = it->second;
    if (!t.pending) continue;
    const AgentState& agent = vm.agent;
    const bool believed = !agent.hostile && agent.fresh && agent.last_report;
    if (believed && agent.last_report->ncpu_online == static_cast<std::uint64_t>(*t.pending)) {
      t.pending.reset();  // confirmed
      continue;
    }
    if (now - t.first_asked < config_.vcpus_confirm_timeout) continue;
    const std::string reports = believed
                                    ? fmt::format("its agent still reports {} online", agent.last_report->ncpu_online)
                                    : std::string("its agent has sent no fresh report since");
    holds[vm.domain.name] = fmt::format(
        "asked its agent for {} online vCPUs {:.0f} s ago, but {}; left at its count until the guest reports {} "
        "(check the agent's log in the guest, or that its vCPUs can be onlined)",
        *t.pending, std::chrono::duration<double>(now - t.first_asked).count(), reports, *t.pending);
  }
  vcpu_tracks_.swap(seen);
  silent_since_.swap(silent);
  return holds;
}

void Reconciler::commit(const std::vector<Action>& applied, const Plan& plan, TimePoint now) {
  std::erase_if(memory_requested_, [&](const auto& kv) {
    const VmMemoryPlan* m = plan.memory.find(kv.first);
    return !m || m->actual_mib == kv.second;  // gone, or reached
  });
  std::erase_if(shares_live_only_, [&](const std::string& vm) { return !plan.find(vm); });
  for (const VmPlan& p : plan.vms) {  // a request the plan no longer wants is forgotten (and its hold)
    auto t = vcpu_tracks_.find(p.name);
    if (t != vcpu_tracks_.end() && t->second.pending && p.vcpus_target && *p.vcpus_target != *t->second.pending)
      t->second.pending.reset();
  }
  for (const Action& a : applied) {
    if (const auto* m = a.as<SetMemory>()) memory_requested_[a.vm] = m->target_mib;
    if (const auto* s = a.as<SetCpuShares>()) {
      if (s->live_only) shares_live_only_.insert(a.vm);
      else shares_live_only_.erase(a.vm);
    }
    if (a.is<SendVcpusOnline>()) vcpus_sent_[a.vm] = now;
    if (const auto* v = a.as<SendVcpusOnline>(); v) {
      const VmPlan* p = plan.find(a.vm);
      if (p && p->shared_pool) {
        VcpuTrack& t = vcpu_tracks_[a.vm];
        if (t.pending != v->online) {
          t.pending = v->online;
          t.first_asked = now;
          t.changed_at = now;
        }
        t.asked_at = now;
      }
    }
    if (!a.is<SetMetadata>()) continue;  // a node's re-pin is recorded by its metadata
    const VmPlan* p = plan.find(a.vm);
    if (!p || !p->rebalanced_node) continue;
    nodes_[*p->rebalanced_node].repinned_at = now;
  }
}

}  // namespace llmorch::orch
