#include "llmorch/orch/daemon.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include "llmorch/orch/topology.h"

namespace llmorch::orch {

namespace {

std::string_view prefix(bool dry_run) { return dry_run ? "dry run, not applied: " : ""; }

// What a repeated failure is about, per VM: the lever (and which vCPU).
std::string lever_name(const Action& a) {
  return std::visit(Overloaded{
                        [](const SetCpuShares&) -> std::string { return "cpu_shares"; },
                        [](const SetVcpus&) -> std::string { return "vCPU count"; },
                        [](const PinVcpu& c) { return "pin vCPU " + std::to_string(c.vcpu); },
                        [](const PinEmulator&) -> std::string { return "pin emulator"; },
                        [](const SetMetadata&) -> std::string { return "metadata"; },
                        [](const SetMemory&) -> std::string { return "balloon"; },
                        [](const SendVcpusOnline&) -> std::string { return "vcpus online to agent"; },
                    },
                    a.change);
}

// Whole CPUs the policy would plan for a demand (-1: unknown).
double demand_step(double demand) { return demand < 0 ? -1.0 : std::ceil(demand); }

// Replaces the problems the plan reports (plan_error, repaired, flapping, vcpus_*) with this tick's, keeping
// when each was first seen and every other kind; logs each problem when it appears and when it clears.
void record_plan_problems(const std::vector<PlanProblem>& found, std::chrono::system_clock::time_point now,
                          std::map<std::string, std::vector<VmProblem>>& problems) {
  static const std::set<std::string> kinds = {"plan_error", "repaired", "flapping", "vcpus_held", "vcpus_unconfirmed"};
  std::map<std::string, std::vector<VmProblem>> next;
  for (const PlanProblem& p : found) {
    auto since = now;
    bool known = false;
    for (const VmProblem& old : problems[p.vm])
      if (old.kind == p.kind) since = old.since, known = true;
    if (!known) spdlog::warn("vm {}: {}: {}", p.vm, p.kind, p.detail);
    next[p.vm].push_back({p.kind, p.detail, since});
  }
  for (auto& [vm, list] : problems) {
    for (VmProblem& old : list) {
      if (!kinds.count(old.kind)) {
        next[vm].push_back(std::move(old));
        continue;
      }
      const auto& now_list = next[vm];
      if (std::none_of(now_list.begin(), now_list.end(), [&](const VmProblem& p) { return p.kind == old.kind; }))
        spdlog::info("vm {}: no longer {}", vm, old.kind == "repaired" ? "in need of repair" : old.kind);
    }
  }
  std::erase_if(next, [](const auto& kv) { return kv.second.empty(); });
  problems.swap(next);
}

}  // namespace

Daemon::Daemon(Hypervisor& hv, const Clock& clock, DaemonOptions options)
    : hv_(hv),
      clock_(clock),
      options_(std::move(options)),
      reconciler_(options_.reconciler),
      calls_([this](const std::string& key) {
        spdlog::debug("libvirt call '{}' still waiting; later calls use a fresh connection", key);
        hv_.abandon_connection();
      }) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("cannot create an eventfd for the daemon loop");
  status_.pid = static_cast<int>(::getpid());
  status_.started_at = clock_.wall();
  status_.dry_run = options_.dry_run;
  reconciler_.set_priority_dwell(std::chrono::milliseconds(options_.config.priority_dwell_ms));
  if (options_.notifier) watchdog_period_ = options_.notifier->watchdog_interval() / 2;
  try {
    hv_.set_lifecycle_callback([this](const std::string& vm, LifecycleEvent e) {
      {
        std::lock_guard lock(events_mu_);
        events_.emplace_back(vm, e);
      }
      wake();
    });
  } catch (const HypervisorError& e) {
    spdlog::warn("cannot subscribe to domain lifecycle events ({}); changes are seen at the next tick", e.what());
  }
}

Daemon::~Daemon() {
  try {
    hv_.set_lifecycle_callback({});
  } catch (const HypervisorError&) {  // the connection is gone; nothing left to unsubscribe
  }
  ::close(wake_fd_);
}

void Daemon::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void Daemon::request_stop() {
  stop_ = true;
  wake();
}

void Daemon::request_reload() {
  reload_ = true;
  wake();
}

BoundedCalls::Result Daemon::bounded(const std::string& key, std::chrono::milliseconds deadline,
                                     std::function<void()> fn) {
  BoundedCalls::Result r = calls_.run(key, deadline, std::move(fn));
  if (r.status == BoundedCalls::Status::Error) std::rethrow_exception(r.error);
  return r;
}

// connected_ (status.json "connected") is false while libvirt cannot be reached or a host-level call
// did not return; connection_lost_ only while the connection itself is down (what the log speaks of).
bool Daemon::refresh_connection() {
  try {
    if (!bounded("connect", host_call_timeout(), [this] { hv_.ensure_connected(); }).ok()) {
      if (!connection_lost_)
        spdlog::warn(
            "libvirt is not answering (no reply within {} ms); reconnecting in the background, "
            "changes pause until it answers",
            host_call_timeout().count());
      connection_lost_ = true;
      connected_ = false;
      return false;
    }
    if (connection_lost_) {
      spdlog::info("libvirt connection restored");
      ++counters_.reconnects;
    }
    connection_lost_ = false;
    connected_ = true;
  } catch (const HypervisorError& e) {
    if (!connection_lost_) spdlog::warn("libvirt connection lost; retrying ({})", e.what());
    connection_lost_ = true;
    connected_ = false;
  }
  return connected_;
}

void Daemon::notify(const std::string& state) {
  if (options_.notifier) options_.notifier->notify(state);
}

std::string Daemon::status_line() const {
  std::size_t hostile = 0;
  for (const auto& [vm, agent] : status_.agents) hostile += agent.hostile ? 1 : 0;
  std::string line = connected_ ? "" : "libvirt not answering; ";
  line += fmt::format("{} VMs managed, {} unresponsive, {} hostile", status_.agents.size(), unresponsive_.size(),
                      hostile);
  const LastChange* last = nullptr;  // the first VM (by name) of those changed last
  std::size_t also = 0;              // and how many more changed then
  for (const auto& [vm, change] : status_.last_change) {
    if (last && change.at == last->at) ++also;
    if (!last || change.at > last->at) last = &change, also = 0;
  }
  if (last) line += fmt::format("; last change {}: {}", iso8601(last->at), last->what);
  if (also) line += fmt::format(" (and {} more VM{})", also, also == 1 ? "" : "s");
  constexpr std::size_t kMax = 240;  // systemctl status shows one line
  if (line.size() > kMax) line = line.substr(0, kMax - 3) + "...";
  std::replace(line.begin(), line.end(), '\n', ' ');
  return line;
}

MetricsSnapshot Daemon::metrics_snapshot() const {
  MetricsSnapshot m;
  m.libvirt_up = connected_;
  m.vms = vm_metrics(status_file_of(status_));
  m.counters = counters_;
  return m;
}

void Daemon::notify_watchdog(Clock::TimePoint now) {
  if (watchdog_period_.count() <= 0 || reconciles_ == 0 || now - last_watchdog_ < watchdog_period_) return;
  notify("WATCHDOG=1");
  last_watchdog_ = now;
}

bool Daemon::tick() {
  const auto started = clock_.now();
  const bool ok = reconcile();
  counters_.tick_seconds.observe(std::chrono::duration<double>(clock_.now() - started).count());
  if (options_.metrics) options_.metrics(metrics_snapshot());
  if (ok && !ready_sent_) {
    ready_sent_ = true;
    notify("READY=1\nSTATUS=" + status_line());
  } else {
    notify("STATUS=" + status_line());
  }
  return ok;
}

bool Daemon::reconcile() {
  const auto now = clock_.now();
  last_reconcile_ = now;
  reconcile_due_ = false;
  ++reconciles_;
  std::optional<std::vector<ManagedDomain>> listed;
  if (refresh_connection()) listed = list_domains();
  last_snapshot_.reset();
  if (!listed) {
    write_status();
    return false;
  }
  std::vector<ManagedDomain>& domains = *listed;
  // VMs whose llmorch metadata is bad are left alone (not planned, no agent channel) and reported.
  std::map<std::string, std::string> bad_metadata;
  for (const ManagedDomain& d : domains)
    if (d.metadata_error) bad_metadata[d.name] = *d.metadata_error;
  std::erase_if(domains, [](const ManagedDomain& d) { return d.metadata_error.has_value(); });
  const ProblemChanges bad = set_problems(status_, "bad_metadata", bad_metadata, clock_.wall());
  for (const auto& [vm, why] : bad.raised)
    spdlog::error("vm {}: {}; left alone until its metadata is fixed (or 'llmorch remove {}')", vm, why, vm);
  for (const std::string& vm : bad.cleared) spdlog::info("vm {}: metadata usable again (or the VM is gone)", vm);
  const auto stats = read_stats();
  status_.cpu_time_s.clear();  // status.json's cpu_time_s (llmorch top's CPU %)
  if (stats)
    for (const auto& [vm, st] : *stats) status_.cpu_time_s[vm] = static_cast<double>(st.cpu.total_ns) / 1e9;
  check_responsive(domains, stats);
  channels_.sync(domains, now);
  const ProblemChanges held = set_problems(status_, "channel_held", channels_.held_by_another(now), clock_.wall());
  for (const auto& [vm, why] : held.raised) spdlog::warn("vm {}: {}", vm, why);
  for (const std::string& vm : held.cleared) spdlog::info("vm {}: agent channel no longer held by another process", vm);
  Snapshot snap{.vms = {},
                .alpha = options_.config.alpha,
                .memory = host_memory(),
                .cpu_host = cpu_host(),
                .priority_holds = {},
                .vcpu_holds = {}};
  std::map<std::string, BalloonHistory> seen;
  for (auto& d : domains) {
    AgentState agent = channels_.state(d.name, now);
    BalloonSample balloon;
    if (d.active()) {
      const DomainStats* st = nullptr;
      if (stats) {
        auto it = stats->find(d.name);
        if (it != stats->end()) st = &it->second;
      }
      balloon = sample_balloon(d, agent, st, now);
      seen[d.name] = balloons_[d.name];
    }
    snap.vms.push_back({std::move(d), std::move(agent), std::move(balloon)});
  }
  balloons_.swap(seen);  // forget VMs that stopped or went away
  snap.priority_holds = reconciler_.hold_priorities(snap, now);
  snap.vcpu_holds = reconciler_.hold_vcpus(snap, now);

  Plan plan;
  try {
    plan = make_plan(snap);  // one VM's fault is that VM's problem, not an exception
  } catch (const std::invalid_argument& e) {
    spdlog::error("cannot plan this tick: {}; check the VMs' llmorch metadata", e.what());
    write_status();
    return true;
  }
  record_plan_problems(plan.problems, clock_.wall(), status_.problems);
  report_left_alone(plan.memory);
  const std::vector<Action> actions = reconciler_.diff(snap, plan, now);
  std::vector<Action> applied;
  apply(actions, applied);
  record_report_latency(!applied.empty(), clock_.now());
  if (!options_.dry_run) {
    reconciler_.commit(applied, plan, now);
    record_applied(snap, applied);
  }

  plan_ = std::move(plan);
  status_.agents.clear();
  for (const VmSnapshot& vm : snap.vms) status_.agents[vm.domain.name] = vm.agent;
  write_status();
  last_snapshot_ = std::move(snap);
  return true;
}

// See "Reports first" in daemon.h.
void Daemon::apply_reports() {
  if (!last_snapshot_ || !connected_) return;  // the full tick applies them
  const auto now = clock_.now();
  last_fast_apply_ = now;
  Snapshot& snap = *last_snapshot_;
  for (VmSnapshot& vm : snap.vms) vm.agent = channels_.state(vm.domain.name, now);
  snap.priority_holds = reconciler_.hold_priorities(snap, now);
  snap.vcpu_holds = reconciler_.hold_vcpus(snap, now);
  Plan plan;
  try {
    plan = make_plan(snap);
  } catch (const std::invalid_argument&) {
    last_snapshot_.reset();  // the full tick says why
    return;
  }
  const std::vector<Action> actions = reconciler_.diff(snap, plan, now, Reconciler::DiffPass::Reports);
  std::vector<Action> applied;
  apply(actions, applied);
  spdlog::debug("{} report(s) applied first: {} change(s) from the last tick's view, before reading libvirt",
                pending_reports_.size(), applied.size());
  record_report_latency(!applied.empty(), clock_.now());
  if (!options_.dry_run) {
    reconciler_.commit(applied, plan, now);
    record_applied(snap, applied);
  }
  plan_ = std::move(plan);
}

namespace {
// A balloon of `actual` MiB has reached `target` when it is within the dead band of it.
bool at_target(std::uint64_t actual, std::uint64_t target, std::uint64_t band) {
  return actual + band >= target && actual <= target + band;
}
}  // namespace

BalloonSample Daemon::sample_balloon(const ManagedDomain& d, const AgentState& agent, const DomainStats* stats,
                                     Clock::TimePoint now) {
  BalloonSample sample;
  auto [it, first] = balloons_.try_emplace(d.name);
  BalloonHistory& h = it->second;
  if (first) h.watched_since = now;
  if (!first) sample.previous = h.last;
  if (!agent.last_report && now - h.watched_since < kFirstReportGrace)
    sample.hold = "waiting for the agent's first report (its floor may be above the template's)";
  if (!stats || !stats->memory_complete) {
    spdlog::debug("vm {}: no balloon statistics this tick", d.name);
    // A read that failed or timed out (libvirtd busy, the guest's job held) says nothing about the
    // guest's memory: count it at its last known size (libvirt's current one when the read had it) and
    // leave it alone, instead of at its maximum, which would squeeze its neighbours for memory it does
    // not hold.
    // A balloon still on its way to a target we set (a hot-add holding the domain's job is enough to
    // make libvirt skip its statistics) counts at that target, as while settling: its neighbours are
    // not asked for memory it is about to give.
    if (first || !h.last.actual_kib) return sample;
    sample.stats = h.last;
    if (stats && stats->memory.actual_kib) sample.stats->actual_kib = stats->memory.actual_kib;
    const std::uint64_t actual = *sample.stats->actual_kib / 1024;
    const bool on_its_way = h.changed_at && clock_.wall() - *h.changed_at < kBalloonSettleMax &&
                            !at_target(actual, h.requested_mib, options_.config.balloon.dead_band_mib);
    if (on_its_way) {
      sample.settling = true;
      sample.requested_mib = h.requested_mib;
    }
    if (sample.hold.empty())
      sample.hold = on_its_way
                        ? fmt::format("no balloon statistics this tick; on its way from {} to {} MiB", actual,
                                      h.requested_mib)
                        : fmt::format("no balloon statistics this tick; counted at its last known size {} MiB", actual);
    return sample;
  }
  sample.stats = stats->memory;
  // last_update is the host's time (s) of the guest's last stats; 0 or absent: never reported.
  const std::uint64_t update = sample.stats->last_update_s.value_or(0);
  if (update != 0 && (first || update != h.last_update)) {
    const auto wall_s = std::chrono::duration_cast<std::chrono::seconds>(clock_.wall().time_since_epoch()).count();
    const auto age = first ? std::max<std::int64_t>(0, wall_s - static_cast<std::int64_t>(update)) : 0;
    h.moved_at = now - std::chrono::seconds(age);
  }
  h.last_update = update;
  h.last = *sample.stats;
  h.nodes = d.facts.placement.nodes;
  if (update == 0 && sample.hold.empty() && now - h.watched_since < kFirstStatsGrace)
    sample.hold = "waiting for the guest's first balloon statistics (its driver reports once the kernel is up)";
  if (!sample.stats->rss_kib && !h.rss_missing_logged) {
    spdlog::info(
        "vm {}: libvirt reports no QEMU RSS for it; balloon squeezes go on without checking what the "
        "host gets back",
        d.name);
    h.rss_missing_logged = true;
  }
  sample.fresh = update != 0 && now - h.moved_at <= std::chrono::seconds(kStaleStatsPeriods * kBalloonStatsPeriodS);
  if (h.changed_at) {
    // last_update has whole seconds: only a later second is surely after the change.
    const auto changed_s = std::chrono::duration_cast<std::chrono::seconds>(h.changed_at->time_since_epoch()).count();
    const std::uint64_t actual = sample.stats->actual_kib.value_or(0) / 1024;
    const bool reached = at_target(actual, h.requested_mib, options_.config.balloon.dead_band_mib);
    // A guest inflates or deflates over seconds (slower under load): while its balloon still moves
    // towards the target, figures taken mid-way are not a basis either (bounded by kBalloonSettleMax).
    const bool moving = !reached && sample.previous && sample.previous->actual_kib &&
                        *sample.previous->actual_kib / 1024 != actual &&
                        clock_.wall() - *h.changed_at < kBalloonSettleMax;
    const bool old_stats = static_cast<std::int64_t>(update) <= changed_s;
    if (old_stats || moving) {
      // Statistics that stopped altogether are not a wait: the rule leaves the VM alone with a warning.
      if (sample.hold.empty() && sample.fresh) {
        const auto ago = std::chrono::duration_cast<std::chrono::seconds>(clock_.wall() - *h.changed_at).count();
        sample.hold = old_stats ? fmt::format(
                                      "waiting for the guest's statistics newer than the last balloon change "
                                      "({} s ago)",
                                      ago)
                                : fmt::format(
                                      "waiting for the balloon to reach the target set {} s ago ({} MiB, now "
                                      "{} MiB and moving)",
                                      ago, h.requested_mib, actual);
        sample.settling = true;
        sample.requested_mib = h.requested_mib;
      }
    } else if (h.shrink && !h.shrink_measured &&  // and the balloon reached its target (within the dead band)
               sample.stats->actual_kib.value_or(0) / 1024 <= h.requested_mib + options_.config.balloon.dead_band_mib) {
      const std::uint64_t actual = sample.stats->actual_kib.value_or(0) / 1024;
      h.shrink->taken_mib = h.shrink_from_mib > actual ? h.shrink_from_mib - actual : 0;
      if (sample.stats->rss_kib) h.shrink->rss_after_mib = *sample.stats->rss_kib / 1024;
      h.shrink_measured = true;
      h.measured = h.shrink;
      if (h.shrink->rss_before_mib && h.shrink->rss_after_mib)
        spdlog::debug("vm {}: balloon shrink took {} MiB; QEMU RSS {} -> {} MiB", d.name, h.shrink->taken_mib,
                      *h.shrink->rss_before_mib, *h.shrink->rss_after_mib);
    }
  }
  sample.last_shrink = h.measured;
  return sample;
}

// An applied balloon change: later decisions wait for statistics newer than it; a shrink opens a new
// measurement (or extends one not measured yet) with the size, RSS and node free memory before it.
void Daemon::note_balloon_change(const Action& a) {
  const SetMemory* m = a.as<SetMemory>();
  auto it = balloons_.find(a.vm);
  if (!m || it == balloons_.end()) return;
  BalloonHistory& h = it->second;
  h.changed_at = clock_.wall();
  h.requested_mib = m->target_mib;
  if (m->target_mib >= m->actual_mib) {  // a grow: the guest has the memory again, nothing to measure
    h.shrink.reset();
    h.measured.reset();
    h.shrink_measured = false;
    return;
  }
  if (h.shrink && !h.shrink_measured) return;  // one measurement from the first step's "before"
  h.shrink = policy::ShrinkReturn{};
  h.shrink_measured = false;
  h.shrink_from_mib = m->actual_mib;
  if (h.last.rss_kib) h.shrink->rss_before_mib = *h.last.rss_kib / 1024;
  std::uint64_t free = 0;
  bool known = !h.nodes.empty();
  for (policy::NodeId n : h.nodes) {
    auto f = last_free_mib_.find(n);
    if (f == last_free_mib_.end()) known = false;
    else free += f->second;
  }
  if (known) h.shrink->node_free_before_mib = free;
}

// The host's CPUs for the plan (shared pools, repairs). The topology is read once; until it is, the
// plan runs without it (shared VMs keep their CPUs).
policy::CpuHost Daemon::cpu_host() {
  if (!topology_) {
    try {
      BoundedCalls::Result r;
      auto caps = calls_.get<std::string>(
          "capabilities", host_call_timeout(), [this] { return hv_.capabilities_xml(); }, r);
      if (r.status == BoundedCalls::Status::Error) std::rethrow_exception(r.error);
      if (!caps) {
        spdlog::debug("host capabilities not read this tick (libvirt slow); shared VMs keep their CPUs");
        return {};
      }
      topology_ = parse_capabilities(*caps);
    } catch (const std::exception& e) {
      spdlog::debug("host topology unknown this tick ({}); shared VMs keep their CPUs", e.what());
      return {};
    }
  }
  return orch::cpu_host(*topology_, options_.config.reserved_cpus, options_.config.shared_cpus);
}

HostMemory Daemon::host_memory() {
  HostMemory m{.free_mib = {},
               .reserve_mib = options_.config.memory_reserve_mib,
               .limit_mib = options_.config.host_memory_limit_mib,
               .config = options_.config.balloon};
  try {
    BoundedCalls::Result r;
    auto free = calls_.get<std::map<policy::NodeId, std::uint64_t>>(
        "free-memory", host_call_timeout(), [this] { return hv_.free_memory_mib(); }, r);
    if (free) m.free_mib = last_free_mib_ = std::move(*free);
    else if (r.status == BoundedCalls::Status::Error) std::rethrow_exception(r.error);
    else
      spdlog::debug("free memory per node not read this tick (libvirt slow); the balloon follows the host limit only");
  } catch (const HypervisorError& e) {
    spdlog::debug("no free memory per node this tick ({}); the balloon follows the host limit only", e.what());
  }
  return m;
}

void Daemon::report_left_alone(const MemoryPlan& memory) {
  std::map<std::string, std::string> now_alone;
  for (const VmMemoryPlan& m : memory.vms) {
    auto before = left_alone_.find(m.name);
    if (m.settling) {  // waiting for statistics after our own step: expected, every step
      spdlog::debug("vm {}: balloon {}", m.name, m.reason);
      if (before != left_alone_.end()) now_alone[m.name] = before->second;
      continue;
    }
    if (m.left_alone) {
      if (before == left_alone_.end() || before->second != m.reason) {
        // A hold is a normal passing state (a guest booting, an agent not yet heard): not a warning.
        spdlog::log(m.held ? spdlog::level::info : spdlog::level::warn, "vm {}: balloon {}", m.name, m.reason);
      }
      now_alone[m.name] = m.reason;
    } else if (before != left_alone_.end()) {
      spdlog::info("vm {}: balloon managed again ({})", m.name, m.reason);
    }
  }
  left_alone_.swap(now_alone);
}

// The backend skips domains that vanish while it lists them, so a failed listing means libvirt is
// unreachable (or failing) for now: the next tick tries again.
std::optional<std::vector<ManagedDomain>> Daemon::list_domains() {
  try {
    BoundedCalls::Result r;
    auto listed = calls_.get<std::vector<ManagedDomain>>(
        "list", host_call_timeout(), [this] { return hv_.list_managed(options_.domain_prefix); }, r);
    if (r.status == BoundedCalls::Status::Error) std::rethrow_exception(r.error);
    if (!listed) {
      if (host_call_stuck_.empty())
        spdlog::warn("libvirt did not list the domains within {} ms; changes pause until it answers",
                     host_call_timeout().count());
      host_call_stuck_ = "list";
      connected_ = false;
      return std::nullopt;
    }
    if (!host_call_stuck_.empty()) spdlog::info("libvirt lists the domains again");
    host_call_stuck_.clear();
    return std::move(*listed);
  } catch (const HypervisorError& e) {
    if (connected_) spdlog::warn("cannot list the domains; retrying at the next tick ({})", e.what());
    connected_ = false;
    return std::nullopt;
  }
}

// Two slots: while one bulk read is stuck on a QEMU that stopped answering (it holds that domain's job),
// the next skips that domain (NOWAIT) and returns; a third would pile up threads, so it waits.
std::optional<std::map<std::string, DomainStats>> Daemon::read_stats() {
  for (const char* key : {"stats", "stats.2"}) {
    BoundedCalls::Result r;
    auto stats = calls_.get<std::map<std::string, DomainStats>>(
        key, call_timeout(), [this] { return hv_.domain_stats(); }, r);
    if (stats) return stats;
    if (r.status == BoundedCalls::Status::Error) {
      try {
        std::rethrow_exception(r.error);
      } catch (const HypervisorError& e) {
        spdlog::debug("no domain statistics this tick ({})", e.what());
      }
      return std::nullopt;
    }
    if (r.status == BoundedCalls::Status::TimedOut) {
      spdlog::info(
          "domain statistics did not come back within {} ms (a VM's QEMU may not be answering); "
          "balloon decisions wait for the next tick",
          options_.config.libvirt_timeout_ms);
      return std::nullopt;
    }
  }
  spdlog::debug("two statistics reads are still waiting on libvirt; none this tick");
  return std::nullopt;
}

void Daemon::mark_unresponsive(const std::string& vm, const std::string& detail,
                               std::chrono::system_clock::time_point since) {
  auto [it, added] = unresponsive_.try_emplace(vm, Unresponsive{since, detail});
  if (!added) return;
  spdlog::warn(
      "vm {}: unresponsive: {}; its levers are skipped until libvirt answers for it, every other VM "
      "goes on",
      vm, detail);
}

// Which VMs libvirt is stuck on. A VM is suspected when it is already unresponsive, when its statistics
// came back without what needs its job, or when the bulk read did not come back at all; then its control
// interface says whether libvirt is waiting on its QEMU, and for how long.
void Daemon::check_responsive(const std::vector<ManagedDomain>& domains,
                              const std::optional<std::map<std::string, DomainStats>>& stats) {
  const auto wall = clock_.wall();
  std::set<std::string> active;
  for (const ManagedDomain& d : domains) {
    if (!d.active()) continue;
    active.insert(d.name);
    const bool known = unresponsive_.count(d.name) != 0;
    const DomainStats* s = nullptr;
    if (stats) {
      auto it = stats->find(d.name);
      if (it != stats->end()) s = &it->second;
    }
    if (!known && s && s->memory_complete) continue;
    if (calls_.busy(d.name)) {  // a call of ours has not returned
      mark_unresponsive(d.name, "a libvirt call for it has not returned", wall);
      continue;
    }
    BoundedCalls::Result r;
    const std::string name = d.name;
    auto info = calls_.get<ControlInfo>(
        name, call_timeout(), [this, name] { return hv_.control_info(name); }, r);
    if (!info) {
      if (r.status == BoundedCalls::Status::TimedOut)
        mark_unresponsive(
            name,
            fmt::format("libvirt did not tell its control state within {} ms", options_.config.libvirt_timeout_ms),
            wall);
      continue;  // an error (it stopped meanwhile): decide at the next tick
    }
    if (info->state != ControlState::Ok &&
        info->for_ms >= static_cast<std::uint64_t>(options_.config.libvirt_timeout_ms)) {
      mark_unresponsive(name,
                        fmt::format("libvirt has been waiting {:.1f} s for its QEMU ({})", info->for_ms / 1000.0,
                                    to_string(info->state)),
                        wall - std::chrono::milliseconds(info->for_ms));
    } else if (known) {
      const double s_down = std::chrono::duration<double>(wall - unresponsive_[name].since).count();
      spdlog::info("vm {}: answering again after {:.1f} s; managed again", name, s_down);
      unresponsive_.erase(name);
    }
  }
  std::erase_if(unresponsive_, [&](const auto& kv) { return !active.count(kv.first); });  // stopped or gone
}

void Daemon::apply(const std::vector<Action>& actions, std::vector<Action>& applied) {
  std::string failed_vm;                       // after one failure, a VM's remaining actions wait for the next tick
  std::map<std::string, std::string> changes;  // per VM, this tick's applied changes
  for (const Action& a : actions) {
    const std::string line = describe(a);
    if (options_.dry_run) {
      spdlog::info("{}{}", prefix(true), line);
      continue;
    }
    if (a.vm == failed_vm || skipped(a.vm)) continue;
    try {
      if (const auto* send = a.as<SendVcpusOnline>()) {  // the agent channel: the loop's own, never waits
        AgentChannel* ch = channels_.find(a.vm);
        const protocol::VcpusCommand command{static_cast<std::uint64_t>(send->online)};
        // Not a libvirt failure: the VM's other actions go on, and the reconciler sends it again later.
        if ((!ch || !ch->send(command)) &&
            failures_.failed(a.vm + ": " + lever_name(a), "agent channel not connected or full", clock_.now()))
          spdlog::warn(
              "vm {}: agent channel not connected or full; 'vcpus online={}' dropped (logged again when "
              "this stops)",
              a.vm, command.online);
      } else if (!bounded(a.vm, call_timeout(), [this, a] { apply_one(a); }).ok()) {
        mark_unresponsive(
            a.vm, fmt::format("libvirt did not return within {} ms from: {}", options_.config.libvirt_timeout_ms, line),
            clock_.wall());
        failed_vm = a.vm;
        continue;
      }
      spdlog::info("{}", line);
      applied.push_back(a);
      ++counters_.actions_applied[action_kind(a)];
      std::string& c = changes[a.vm];
      c += (c.empty() ? "" : "; ") + line;
      if (a.is<SetMemory>()) {
        status_.balloon_change[a.vm] = {clock_.wall(), a.reason};
        note_balloon_change(a);
      }
    } catch (const HypervisorError& e) {
      // Logged when it starts or changes, not every tick (a lever the driver lacks fails every tick).
      if (failures_.failed(a.vm + ": " + lever_name(a), e.what(), clock_.now()))
        spdlog::warn("{} failed: {}; retried every tick, logged again when this stops or changes", line, e.what());
      else spdlog::debug("{} failed again: {}", line, e.what());
      failed_vm = a.vm;
    }
  }
  const auto now = clock_.now();
  for (const FailureLog::Ended& f : failures_.end_tick())
    spdlog::info(
        "vm {}: failing no more (it worked, or is not needed now) after {} failure(s) in {:.0f} s (the last: {})",
        f.key, f.failures, std::chrono::duration<double>(now - f.since).count(), f.message);
  for (auto& [vm, what] : changes) status_.last_change[vm] = {clock_.wall(), std::move(what)};
}

void Daemon::record_report_latency(bool applied_any, Clock::TimePoint applied_at) {
  for (const auto& [vm, received] : pending_reports_) {
    const double ms = std::chrono::duration<double, std::milli>(applied_at - received).count();
    if (!applied_any) {
      spdlog::debug("vm {}: report changed the plan but this tick applied nothing; no latency sample", vm);
      continue;
    }
    report_to_apply_.add(ms);
    counters_.report_to_applied_seconds.observe(ms / 1000.0);
    spdlog::debug("vm {}: report to applied in {:.2f} ms", vm, ms);
  }
  pending_reports_.clear();
  status_.report_to_apply_ms = report_to_apply_.summary();
}

void Daemon::apply_one(const Action& a) {
  const std::string& vm = a.vm;
  std::visit(Overloaded{
                 [&](const SetCpuShares& c) {
                   hv_.set_cpu_shares(vm, c.shares,
                                      c.live_only ? Hypervisor::Scope::LiveOnly : Hypervisor::Scope::LiveAndConfig);
                 },
                 [&](const SetVcpus& c) { hv_.set_vcpus(vm, c.count); },
                 [&](const PinVcpu& c) { hv_.pin_vcpu(vm, c.vcpu, c.cpus); },
                 [&](const PinEmulator& c) { hv_.pin_emulator(vm, c.cpus); },
                 [&](const SetMetadata& c) { hv_.set_metadata(vm, c.facts); },
                 [&](const SetMemory& c) { hv_.set_memory_mib(vm, c.target_mib); },
                 [](const SendVcpusOnline&) {},  // apply() sends it on the loop's thread
             },
             a.change);
}

void Daemon::write_status() {
  status_.last_tick_at = clock_.wall();
  status_.alpha = options_.config.alpha;
  status_.interval_ms = options_.config.interval_ms;
  status_.connected = connected_;
  status_.plan = plan_;
  // Unresponsive VMs carry their own since (when libvirt began waiting on them): replaced here, other
  // kinds are kept up to date by set_problems where they are found.
  for (auto& [vm, problems] : status_.problems)
    std::erase_if(problems, [](const VmProblem& p) { return p.kind == "unresponsive"; });
  for (const auto& [vm, u] : unresponsive_) status_.problems[vm].push_back({"unresponsive", u.detail, u.since});
  std::erase_if(status_.problems, [](const auto& kv) { return kv.second.empty(); });
  if (options_.state_dir.empty()) return;
  try {
    status_writer_.write(options_.state_dir, status_);
  } catch (const std::exception& e) {
    spdlog::warn("{}", e.what());
  }
}

// A report that moves the VM's effective priority, or (for a rebalanced VM) its demand by a whole CPU,
// changes the plan: reconcile soon instead of at the next tick.
void Daemon::on_reports(const std::string& vm, Clock::TimePoint received) {
  const VmPlan* before = plan_.find(vm);
  if (!before) return;
  const AgentState agent = channels_.state(vm, clock_.now());
  VmFacts facts;
  facts.priority = before->template_priority;
  // A priority held by the dwell (or a flapping guest) does not make llmorchd reconcile for it.
  if (reconciler_.observe_priority(vm, effective_priority(facts, agent, nullptr), received) ||
      (before->rebalanced_node && demand_step(demand_cpus(agent)) != demand_step(before->demand_cpus))) {
    reconcile_due_ = true;
    pending_reports_.emplace_back(vm, received);
  }
}

void Daemon::handle_events() {
  std::uint64_t count = 0;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
  std::vector<std::pair<std::string, LifecycleEvent>> events;
  {
    std::lock_guard lock(events_mu_);
    events.swap(events_);
  }
  for (const auto& [vm, e] : events) {
    spdlog::debug("vm {}: {}", vm, to_string(e));
    if (e == LifecycleEvent::Started || e == LifecycleEvent::Stopped) channels_.restart(vm, clock_.now());
    reconcile_due_ = true;
    last_snapshot_.reset();
  }
  if (reload_.exchange(false) && options_.reload) {
    const auto monotonic = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now().time_since_epoch());
    notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", monotonic.count()));
    try {
      options_.config = options_.reload();
      reconciler_.set_priority_dwell(std::chrono::milliseconds(options_.config.priority_dwell_ms));
      spdlog::info("configuration reloaded (alpha {}, interval {} ms)", options_.config.alpha,
                   options_.config.interval_ms);
      reconcile_due_ = true;
      last_snapshot_.reset();
      notify("READY=1");
    } catch (const std::exception& e) {
      spdlog::error("configuration not reloaded: {}", e.what());
      notify(fmt::format("READY=1\nSTATUS=configuration not reloaded, the old one stays: {}", e.what()));
    }
  }
}

void Daemon::poll_once(std::chrono::milliseconds max_wait) {
  std::vector<pollfd> fds{{wake_fd_, POLLIN, 0}};
  std::vector<std::string> names{""};
  const auto polled_at = clock_.now();
  for (auto& [name, ch] : channels_.all()) {
    if (!ch->wants_read(polled_at)) continue;  // not connected, or its read budget is spent for now
    fds.push_back({ch->fd(), static_cast<short>(POLLIN | (ch->wants_write() ? POLLOUT : 0)), 0});
    names.push_back(name);
  }
  const int rc = ::poll(fds.data(), fds.size(), static_cast<int>(std::max<std::int64_t>(0, max_wait.count())));
  if (rc <= 0) return;
  if (fds[0].revents) handle_events();
  for (std::size_t i = 1; i < fds.size(); ++i) {
    if (!fds[i].revents) continue;
    AgentChannel* ch = channels_.find(names[i]);
    if (!ch) continue;
    if (fds[i].revents & POLLOUT) ch->flush();
    if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
      const auto received = clock_.now();
      if (!ch->read_available(received).empty()) on_reports(names[i], received);
    }
  }
  // At most one fast reconcile per report_coalesce: a guest sending a plan-changing report per frame
  // cannot make llmorchd plan the whole host that often; later reports wait for the coalesced tick.
  if (!pending_reports_.empty() && clock_.now() - last_fast_apply_ >= options_.report_coalesce) apply_reports();
}

int Daemon::run() {
  using std::chrono::milliseconds;
  auto next_tick = clock_.now();
  while (!stop_) {
    auto now = clock_.now();
    const bool coalesced = now - last_reconcile_ >= options_.report_coalesce;
    if (now >= next_tick || (reconcile_due_ && coalesced)) {
      const auto started = now;
      tick();
      now = clock_.now();
      // From the tick's start: a tick slowed by a libvirt call that timed out does not push the schedule.
      next_tick = started + milliseconds(options_.config.interval_ms);
    }
    notify_watchdog(now);
    auto wake_at = next_tick;
    if (reconcile_due_) wake_at = std::min(wake_at, last_reconcile_ + options_.report_coalesce);
    if (watchdog_period_.count() > 0) wake_at = std::min(wake_at, last_watchdog_ + watchdog_period_);
    poll_once(std::chrono::ceil<milliseconds>(std::max(wake_at - now, Clock::TimePoint::duration::zero())));
  }
  spdlog::info("llmorchd stopping");
  notify("STOPPING=1");
  return 0;
}

}  // namespace llmorch::orch
