// The pure half of llmorchd: a snapshot of the managed VMs (libvirt's view plus what each VM's agent
// reported) goes in, a plan comes out, and the difference between the plan and the live state becomes a
// list of actions. No libvirt, clock or socket here: time is a parameter, so the daemon, --dry-run and
// the unit tests share this code.
//
// Effective priority of a VM:
//   - the agent's reported priority (AgentSession already clamped it into the template's
//     [priority_min, priority_max]) while the report is fresh (within its TTL)   -> source "agent";
//   - the template's priority (VmFacts::priority) when there is no report, or the fresh report states
//     no priority                                                               -> source "template";
//   - the template's priority when the last report expired                     -> source "stale";
//   - the template's priority while the agent is flagged hostile (garbage, oversized frames or a
//     flood within AgentSession's window), whatever its valid frames claim     -> source "hostile".
// Demand (CPUs a VM can use now), from a fresh report of an agent that is not hostile only:
//   demand_cpus = max(runnable - 1, cpu_pct / 100 * ncpu_online) * 1.25   (25% headroom; runnable
//   counts the agent itself, so an idle guest's 1 is no demand)
//   no fresh report -> -1 (unknown: the policy treats it as max_vcpus).
// Priority dwell (Reconciler::hold_priorities, before make_plan; time is a parameter): the effective
// priority above is what a VM *wants*; the one in force may lag. A VM's priority changes the plan at
// most once per priority_dwell: the first change after a quiet dwell applies at once, a later one waits
// until a dwell has passed since the last applied change. A VM whose wanted priority changed more than
// flap_changes times within one dwell is flagged flapping and held at its last applied priority until
// its wanted priority has been steady for a whole dwell. So no guest can make llmorchd rewrite its
// neighbours' shares or pins more than about once per dwell.
//
// CPU plan: policy::plan_cpus over every active (running/paused/blocked) managed VM: weights by the
// formula, cpu_shares from the weights, dedicated single-node VMs re-divided within their node (the CPUs
// each holds are VmFacts::placement.cpus; a CPU two VMs claim is repaired from libvirt's live pins, see
// cpu_plan.h), and with the host's CPUs known (Snapshot::cpu_host), each shared VM's pool recomputed
// so that it never overlaps a dedicated VM's CPUs (shut-off dedicated VMs' CPUs count as held). A VM
// the plan cannot handle gets VmPlan::error and is left as it is; every other VM is planned.
// Plan::problems lists, per VM: "plan_error" (left as it is), "repaired" (claims repaired this tick),
// "flapping" (priority held).
//
// Actions (only what differs from the live state; none for a VM with a plan error):
//   - cpu_shares when the live value is unknown or differs from the plan by more than
//     max(share_tolerance_abs, share_tolerance * live);
//   - dedicated single-node VM whose planned set S (k CPUs) differs from the held set: set_vcpus(k)
//     when k > vcpus_current (hot-add), pin vCPU i to {S[i]} for i < k and vCPUs k.. to all of S,
//     agent "vcpus online=k", metadata with placement.cpus = S. A node's VMs are re-pinned together,
//     and not again within min_dwell of the last re-pin of that node, whatever changed (a repair of
//     the node's claims excepted). Live pins that disagree with the held set are repaired at once
//     (e.g. after a restart), without dwell.
//   - shared VM whose pool was planned: every vCPU pinned to the whole pool and the emulator threads to
//     the pool, where the live pins differ.
//   - "vcpus online=k" again when a fresh report shows ncpu_online != k, at most once per min_dwell.
//   - shared VM with a planned count k (elastic vCPUs, cpu_plan.h) whose agent reports m != k online:
//     set_vcpus(k) when k > vcpus_current (hot-add), then "vcpus online=k" (the agent onlines or
//     offlines; ACPI unplug is never used). A VM's count changes at most once per min_dwell (the re-pin
//     dwell, per VM here since shared VMs hold no CPUs); the same request is repeated at most once per
//     min_dwell until the guest reports it.
// Elastic shared vCPUs are only planned for a VM whose agent is believed and fresh: its ncpu_online is
// the count the host counts (never what libvirt has hot-added). Without one (no agent, a stale report,
// a hostile agent) the VM is left at its count and, when the pool would give it another, gets the
// problem "vcpus_held" (a guest whose agent has never reported: once it has been silent for
// vcpus_confirm_timeout, so that a booting guest is not flagged). A guest that has not reported the requested count
// vcpus_confirm_timeout after the first request is left at its count with the problem "vcpus_unconfirmed"
// (Reconciler::hold_vcpus, before make_plan) until it reports the count or the plan wants another one.
//
// Memory plan: policy::plan_balloon over the active VMs (balloon.h has the rule). Inputs per VM: its
// balloon statistics (KiB -> MiB) and the previous tick's, whether they are fresh, QEMU's RSS and what
// the host got back from its last shrink (BalloonSample::last_shrink), the agent's memory
// figures and floor from a fresh report of an agent that is not distrusted (agent_distrusted) only, the
// floor capped at memory_floor_max_mib (floor_claim_cap): a floor expires with its report, so one huge
// claim followed by silence cannot hold the VM at its maximum; the template floor and max memory
// (VmFacts), the weight from the
// CPU plan and the placement's nodes; per node the free memory and the reserve; the host limit.
// A VM whose nodes are not all in the free-memory map counts for the host limit only. Action:
// set_memory when a decision has a target that differs from the balloon's actual size, unless that
// target was already requested and the guest is still moving towards it (a guest that cannot give
// more keeps the request pending in QEMU; asking again every tick would only repeat the log line).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "llmorch/orch/agent_session.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/policy/balloon.h"
#include "llmorch/policy/cpu_plan.h"
#include "llmorch/protocol/messages.h"

namespace llmorch::orch {

enum class PrioritySource { Agent, Template, Stale, Hostile };
std::string_view to_string(PrioritySource s);

// What the daemon knows from one VM's agent channel.
struct AgentState {
  std::optional<protocol::Report> last_report;  // newest valid report, kept after it expires
  double last_report_age_s = 0;
  bool fresh = false;  // last_report is within its TTL
  bool connected = false;
  AgentSessionCounters counters;
  bool hostile = false;
  std::string last_error;
};

// What the daemon read of one VM's balloon.
struct BalloonSample {
  std::optional<MemoryStats> stats;     // this tick's; absent when they could not be read
  std::optional<MemoryStats> previous;  // the previous tick's
  bool fresh = false;                   // last_update moved within the last few stats periods
  std::string hold;                     // non-empty: leave this balloon alone, for this reason
  // The hold only waits for statistics newer than llmorchd's own last balloon change (after every
  // step, for a stats period or two): expected, so not worth a log line.
  bool settling = false;
  // While settling: the target llmorchd asked for; the VM counts at it (its balloon is on its way), so
  // that its neighbours are not asked for the same memory meanwhile.
  std::optional<std::uint64_t> requested_mib = std::nullopt;
  std::optional<policy::ShrinkReturn> last_shrink = std::nullopt;  // what the host got back from the last shrink
};

struct VmSnapshot {
  ManagedDomain domain;
  AgentState agent;
  BalloonSample balloon;
};

// Host memory as the balloon rule needs it.
struct HostMemory {
  std::map<policy::NodeId, std::uint64_t> free_mib;  // per node, free now; empty: unknown
  std::uint64_t reserve_mib = 0;                     // per node (HostConfig::memory_reserve_mib)
  std::optional<std::uint64_t> limit_mib;            // host-wide sum of VM memory allowed
  policy::BalloonConfig config;
};

// A VM's priority in force when it differs from the one it wants (Reconciler::hold_priorities).
struct PriorityHold {
  double priority = 1.0;  // in force: the last applied one
  bool flapping = false;
  std::string reason;  // a sentence: what it wants and why it is held
};

struct Snapshot {
  std::vector<VmSnapshot> vms;  // every managed domain, in any state
  double alpha = 0.8;
  HostMemory memory;
  // The host's CPUs, reserved_cpus and shared_cpus (cpu_plan.h). No nodes: unknown (shared VMs keep
  // their CPUs). make_plan adds the CPUs of the inactive dedicated VMs in `vms` as held.
  policy::CpuHost cpu_host;
  std::map<std::string, PriorityHold> priority_holds;  // by VM; from Reconciler::hold_priorities
  std::map<std::string, std::string> vcpu_holds;       // by VM, why; from Reconciler::hold_vcpus
};

inline constexpr double kDemandHeadroom = 1.25;

struct VmPlan {
  std::string name;
  double priority = 1.0;  // effective
  PrioritySource source = PrioritySource::Template;
  double template_priority = 1.0;
  std::optional<double> reported_priority;  // from the newest report, fresh or not
  double demand_cpus = -1.0;
  double weight = 0.0;
  int cpu_shares = 1024;
  std::vector<policy::CpuId> cpus;  // dedicated: vCPU i on cpus[i]; shared: its pool
  std::optional<int> vcpus_online;  // rebalanced dedicated VMs, and shared VMs whose count is managed now
  std::optional<int> vcpus_target;  // shared: the count its part of the pool gives, before any hold
  std::optional<int> vcpus_now;     // shared, managed: online in the guest, per its agent's fresh report
  std::string vcpus_reason;         // shared: "vCPUs 1 -> 2: pool of 2 CPUs, weight 1.000, demand 2.7 CPUs"
  std::optional<policy::NodeId> rebalanced_node;
  bool shared_pool = false;  // shared VM whose cpus are its node's pool as of this plan
  bool flapping = false;     // its priority keeps flipping: held (see PriorityHold)
  std::string held;          // non-empty: its priority is held, and why
  std::string error;         // non-empty: the plan leaves this VM as it is, and why
  std::string repaired;      // non-empty: its claimed CPUs were repaired this tick, and how
  std::string reason;        // "priority 1 reported by agent, weight 0.711 of 2 VMs"
};

// A problem of one VM the plan works around (status.json "problems").
struct PlanProblem {
  std::string vm;
  std::string kind;    // "plan_error", "repaired", "flapping", "vcpus_held", "vcpus_unconfirmed"
  std::string detail;  // a sentence
};

struct VmMemoryPlan {
  std::string name;
  std::optional<std::uint64_t> actual_mib;  // the balloon now (null: not reported)
  std::optional<std::uint64_t> target_mib;  // absent: leave the balloon where it is
  std::uint64_t floor_mib = 0;              // the floor the rule enforced
  std::uint64_t max_mib = 0;
  std::string reason;
  bool left_alone = false;  // no usable stats: not managed this tick
  bool held = false;        // left alone for an expected reason: a first report or statistics
                            // still to come (BalloonSample::hold), or hugepage-backed memory
  bool settling = false;    // held until statistics newer than the last change come
};

// Per active VM, in plan order. find() is a binary search over `by_name` (positions of vms sorted by
// name) when it covers vms, which make_plan sees to; a plan whose vms were edited since (tests) calls
// index_by_name() again, or is searched linearly while by_name has another size.
struct MemoryPlan {
  std::vector<VmMemoryPlan> vms;
  std::vector<std::uint32_t> by_name;
  const VmMemoryPlan* find(std::string_view name) const;
  void index_by_name();
};

struct Plan {
  std::vector<VmPlan> vms;  // active managed VMs, in snapshot order
  MemoryPlan memory;
  std::vector<PlanProblem> problems;   // in snapshot order
  std::vector<std::uint32_t> by_name;  // as MemoryPlan::by_name
  const VmPlan* find(std::string_view name) const;
  void index_by_name();  // this plan's and its memory plan's
};

// Whether what this VM's agent claims is disbelieved: it is flagged hostile (one place to add other
// flags, such as flapping). Its memory claims (floor and figures) are then ignored for the template's.
bool agent_distrusted(const AgentState& agent);
double effective_priority(const VmFacts& facts, const AgentState& agent, PrioritySource* source);
double demand_cpus(const AgentState& agent);

// Does not throw for one VM's sake: a VM it cannot plan gets VmPlan::error and a problem.
Plan make_plan(const Snapshot& snapshot);

// The host's CPUs for the plan: every node's CPUs from the topology, reserved_cpus and shared_cpus.
policy::CpuHost cpu_host(const policy::HostTopology& topology, const std::set<policy::CpuId>& reserved,
                         const std::set<policy::CpuId>& shared);

// What the reconciler asks for, one type per lever: every consumer (Daemon::apply_one, describe, the
// daemon's failure log) visits them all, so the compiler names the case one forgets.
struct SetCpuShares {
  std::optional<std::uint64_t> live;  // the live value; absent: unknown
  std::uint64_t shares = 0;
  bool live_only = false;  // DiffPass::Reports: the running domain only; the next tick saves the definition
};
struct SetVcpus {  // hot-add (going down is the agent's job: SendVcpusOnline)
  int current = 0;
  int count = 0;
};
struct PinVcpu {
  int vcpu = 0;
  std::vector<policy::CpuId> cpus;
};
struct PinEmulator {
  std::vector<policy::CpuId> cpus;
};
struct SendVcpusOnline {  // "vcpus online=N" to the VM's agent, sent on the daemon's loop
  int online = 1;
};
struct SetMetadata {  // the VM's facts with its new placement.cpus
  VmFacts facts;
};
struct SetMemory {  // the balloon's target
  std::uint64_t actual_mib = 0;
  std::uint64_t target_mib = 0;
};
using Change = std::variant<SetCpuShares, SetVcpus, PinVcpu, PinEmulator, SendVcpusOnline, SetMetadata, SetMemory>;

struct Action {
  std::string vm;
  Change change;
  std::string reason;

  template <class T>
  bool is() const {
    return std::holds_alternative<T>(change);
  }
  template <class T>
  const T* as() const {
    return std::get_if<T>(&change);
  }
};

// std::visit(Overloaded{[](const SetCpuShares&) {...}, ...}, action.change): one lambda per type.
template <class... Fs>
struct Overloaded : Fs... {
  using Fs::operator()...;
};

// One log line: "vm a: cpu_shares 1024 -> 1456 (priority 1 reported by agent, weight 0.711 of 2 VMs)".
std::string describe(const Action& action);

// Brings `snapshot`'s domains to what libvirt holds once `applied` went through (shares, pins, vCPU
// count, metadata), so that a reconcile between two reads of libvirt (an agent's report applied at
// once, Daemon) diffs against the truth and does not repeat a change. The balloon is not touched: its
// size follows the guest, not the request.
void record_applied(Snapshot& snapshot, const std::vector<Action>& applied);

inline constexpr std::chrono::milliseconds kDefaultPriorityDwell{3000};

struct ReconcilerConfig {
  double share_tolerance = 0.02;
  std::uint64_t share_tolerance_abs = 8;
  std::chrono::milliseconds min_dwell{5000};  // between two re-pins of one node
  // Between two changes of one VM's priority in force (host config priority_dwell_ms); 0: no dwell
  // and no flapping flag.
  std::chrono::milliseconds priority_dwell{kDefaultPriorityDwell};
  int flap_changes = 3;  // more changes than this within one priority_dwell: flapping
  // How long a guest's agent has to report the online vCPU count it was asked for (shared VMs).
  std::chrono::milliseconds vcpus_confirm_timeout{20000};
};

class Reconciler {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit Reconciler(ReconcilerConfig config = {}) : config_(config) {}

  // The actions that bring the live state of `snapshot` to `plan`. Does not change the reconciler:
  // call commit() with what was applied (a dry run commits nothing).
  // DiffPass::Reports (the report fast path, daemon.h "Reports first"): CPU levers only, no balloon,
  // and cpu_shares on the running domain alone (live_only). The next DiffPass::Tick saves the shares of
  // such VMs into their definitions (a SetCpuShares even within the tolerance), so a VM restarted while
  // llmorchd is down starts with them.
  enum class DiffPass { Tick, Reports };
  std::vector<Action> diff(const Snapshot& snapshot, const Plan& plan, TimePoint now,
                           DiffPass pass = DiffPass::Tick) const;
  // Records applied actions (re-pin times, for the dwell rule).
  void commit(const std::vector<Action>& applied, const Plan& plan, TimePoint now);

  // The priority dwell (see the top of this file). Records what each active VM of `snapshot` wants now,
  // applies what the dwell allows, and returns the holds for Snapshot::priority_holds. Forgets VMs that
  // are gone. A dry run calls it too: the priorities in force are the plan's, not libvirt's.
  std::map<std::string, PriorityHold> hold_priorities(const Snapshot& snapshot, TimePoint now);
  // Records that `vm` wants `wanted` now (from a report read between ticks). True when a tick now
  // would change its priority in force (so it is worth reconciling at once); false while it is held
  // or unchanged. Unknown VMs: true (the next tick decides).
  bool observe_priority(const std::string& vm, double wanted, TimePoint now);
  void set_priority_dwell(std::chrono::milliseconds dwell) { config_.priority_dwell = dwell; }
  // Elastic shared vCPUs (see the top of this file): forgets requests the guest confirmed (its agent
  // reports the count) and VMs that are gone; returns, by VM, why a VM is held at its count: it has not
  // confirmed the count asked for within vcpus_confirm_timeout, or no agent has reported from it for
  // that long. For Snapshot::vcpu_holds.
  std::map<std::string, std::string> hold_vcpus(const Snapshot& snapshot, TimePoint now);
  const ReconcilerConfig& config() const { return config_; }

 private:
  struct NodeHistory {
    TimePoint repinned_at{};
  };
  struct PriorityTrack {
    double applied = 1.0;                 // in force
    std::optional<TimePoint> applied_at;  // when it last changed (none: never; the next change is at once)
    double wanted = 1.0;                  // the last seen
    std::deque<TimePoint> changes;        // when `wanted` changed, within the last priority_dwell
    bool flapping = false;
  };
  bool dwell_blocks(policy::NodeId node, TimePoint now) const;
  void observe(PriorityTrack& t, double wanted, TimePoint now) const;
  bool may_apply(const PriorityTrack& t, TimePoint now) const;

  ReconcilerConfig config_;
  std::map<std::string, PriorityTrack> priorities_;
  std::map<policy::NodeId, NodeHistory> nodes_;
  std::map<std::string, std::uint64_t> memory_requested_;  // balloon targets set and not yet reached
  std::map<std::string, TimePoint> vcpus_sent_;
  std::set<std::string> shares_live_only_;  // cpu_shares set live only (DiffPass::Reports), definition not yet
  struct VcpuTrack {                        // a shared VM's elastic vCPU count
    std::optional<int> pending;             // asked for and not yet reported by the guest
    TimePoint first_asked{};                // when `pending` was first asked for
    TimePoint asked_at{};                   // the last request
    TimePoint changed_at{};                 // the last time a new count was asked for (the dwell)
  };
  std::map<std::string, VcpuTrack> vcpu_tracks_;
  std::map<std::string, TimePoint> silent_since_;  // active VMs whose agent has never reported, since when
};

}  // namespace llmorch::orch
