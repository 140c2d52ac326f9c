// llmorchd's loop: one thread, poll() over the agent channels, a wake-up eventfd (lifecycle events from
// the hypervisor's event thread, signals) and the tick timeout. Each reconcile takes a snapshot (managed
// domains + agent state), plans with the pure reconciler, applies the difference (or only logs it in a
// dry run), and rewrites the status file. The hypervisor and the clock are injected.
// Balloon: each tick reads every active VM's balloon statistics (fresh while their last_update moved
// within kStaleStatsPeriods stats periods) and the nodes' free memory, and plans memory with the CPU
// plan. A VM whose balloon is left alone is logged once when that starts (and when its reason
// changes), and once when it is managed again. After each balloon change it applies, llmorchd holds
// that VM's balloon (quietly) until the guest's statistics are newer than the change (last_update, in
// whole seconds, after it) and its balloon has stopped moving towards the target or reached it (at
// most kBalloonSettleMax), so no decision rests on figures from before or halfway through its own
// step; for a shrink it
// records the balloon size, QEMU's RSS and the nodes' free memory before, and from those first newer
// statistics once the balloon has reached the target the RSS after and what was taken
// (policy::ShrinkReturn), for the balloon rule to judge. While held, the VM counts at its target.
// Bounded libvirt calls: every hypervisor call of the loop runs through BoundedCalls with the config's
// libvirt_timeout_ms. Statistics are one bulk call per tick that never waits for a busy domain's job.
// A VM whose call does not return in time, or whose QEMU libvirt has been waiting on for longer than
// that (control info, asked when its statistics came back incomplete), is marked unresponsive (status
// problem "unresponsive", with since when) and skipped: none of its levers is called, its CPUs and
// memory still count for everyone else's plan. It rejoins by itself once its calls have returned and
// its control interface is idle. A host-level call that does not return (listing, reconnecting) pauses
// changes for the tick, like a lost connection.
// Reports first: a report that changes the plan is applied as soon as it is read, before any other
// libvirt work: the plan is made from the last tick's snapshot (libvirt as that tick left it, see
// record_applied) with the agents' state of now, and only the CPU levers go out (shares, pins, vCPUs;
// no reads, no balloon). A full tick follows report_coalesce later. A lifecycle event or a reload since
// the last tick makes that snapshot stale: then the report waits for the full tick. At most one such
// fast reconcile per report_coalesce, whatever guests send: reports in between wait for the full tick.
// Latency: for each report that changes the plan, the time from reading its bytes to the return of the
// last libvirt call that applies it (kLatencySamples kept; status.json
// daemon.report_to_apply_ms). A tick that applies nothing (dry run, dwell, failure) drops the sample.
// Service manager (DaemonOptions::notifier, systemd's notify protocol): "READY=1" after the first tick
// that reached libvirt; "STATUS=" after every tick, one line (VMs managed, the last change, how many
// unresponsive and hostile); "WATCHDOG=1" from run()'s loop, at half the watchdog interval, once a tick
// has completed: a loop stalled anywhere (every libvirt call is bounded, so a stall is llmorchd's own)
// stops the pings and the service manager restarts it; "RELOADING=1" (with MONOTONIC_USEC) and then
// "READY=1" around a SIGHUP reload; "STOPPING=1" when run() returns.
// Channels held by another process (AgentChannel::held_by_another) are the problem "channel_held",
// logged once when seen and once when gone.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llmorch/orch/agent_channel.h"
#include "llmorch/orch/bounded_calls.h"
#include "llmorch/orch/clock.h"
#include "llmorch/orch/config.h"
#include "llmorch/orch/failure_log.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/orch/latency_window.h"
#include "llmorch/orch/metrics.h"
#include "llmorch/orch/notifier.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/status_file.h"

namespace llmorch::orch {

struct DaemonOptions {
  HostConfig config;
  bool dry_run = false;
  std::string state_dir = kDefaultStateDir;  // empty: write no status file
  // Manage only domains whose name starts with this (empty: every managed domain). Lets tests and
  // side-by-side deployments share one libvirtd without touching each other's VMs.
  std::string domain_prefix;
  ReconcilerConfig reconciler;
  // Reports that change the plan trigger a reconcile at once, but not more often than this.
  std::chrono::milliseconds report_coalesce{100};
  // SIGHUP: returns the new config (throws ConfigError to keep the old one). Empty: no reload.
  std::function<HostConfig()> reload;
  // Told about readiness, status, reloads and stops, and pinged for its watchdog (see daemon.h's top).
  // Not owned; null: tell nobody.
  Notifier* notifier = nullptr;
  // Given the Prometheus metrics (metrics.h) after every tick, on the loop's thread. Empty: none.
  std::function<void(const MetricsSnapshot&)> metrics;
};

inline constexpr int kStaleStatsPeriods = 3;
inline constexpr std::chrono::milliseconds kHostCallTimeout{5000};
inline constexpr std::size_t kLatencySamples = 256;
// A VM whose agent has not reported since llmorchd began watching it keeps its balloon this long:
// its floor may be above the template's, and a restarted daemon must not squeeze it before it knows.
inline constexpr std::chrono::seconds kFirstReportGrace{5};
// A booting guest's balloon driver has not reported yet (libvirt's last-update is 0): its balloon is
// held, quietly, this long; after that it is left alone with a warning (no driver, or no stats period).
inline constexpr std::chrono::seconds kFirstStatsGrace{60};
// After a balloon change, a VM whose balloon still moves towards the target is held at most this long.
inline constexpr std::chrono::seconds kBalloonSettleMax{10};

class Daemon {
 public:
  Daemon(Hypervisor& hv, const Clock& clock, DaemonOptions options);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // One reconcile. False when libvirt could not be reached (logged once per outage).
  bool tick();
  // Waits at most max_wait for channel data, a lifecycle event or a stop/reload request and handles
  // what arrived (reads reports; applies those that change the plan, and marks a full reconcile due).
  void poll_once(std::chrono::milliseconds max_wait);
  // Ticks every interval and on events until request_stop(). Returns the exit status (0).
  int run();

  // Async-signal-safe: set a flag and write to the eventfd.
  void request_stop();
  void request_reload();

  const Plan& plan() const { return plan_; }
  const DaemonStatus& status() const { return status_; }
  // The one-line summary sent as STATUS= after each tick.
  std::string status_line() const;
  // What the metrics callback is given: status.json's VMs, measured CPU time, the daemon's counters.
  MetricsSnapshot metrics_snapshot() const;
  bool reconcile_due() const { return reconcile_due_; }
  std::uint64_t reconciles() const { return reconciles_; }
  AgentChannels& channels() { return channels_; }
  // Waits up to `grace` for libvirt calls still running (stuck in a QEMU) to return; returns how many
  // still run. The Hypervisor must outlive them: a caller that gets non-zero must not destroy it.
  std::size_t drain_calls(std::chrono::milliseconds grace) { return calls_.drain(grace); }

 private:
  bool reconcile();  // tick() without telling the service manager
  void notify(const std::string& state);
  void notify_watchdog(Clock::TimePoint now);
  bool refresh_connection();
  std::optional<std::vector<ManagedDomain>> list_domains();
  BoundedCalls::Result bounded(const std::string& key, std::chrono::milliseconds deadline, std::function<void()> fn);
  // Calls that can wait on a VM's QEMU (levers, statistics, control info) get libvirt_timeout_ms;
  // host-level calls that never do (listing, free memory, reconnecting) get at least kHostCallTimeout,
  // so that a merely busy libvirtd does not look like an outage.
  std::chrono::milliseconds call_timeout() const {
    return std::chrono::milliseconds(options_.config.libvirt_timeout_ms);
  }
  std::chrono::milliseconds host_call_timeout() const { return std::max(call_timeout(), kHostCallTimeout); }
  std::optional<std::map<std::string, DomainStats>> read_stats();
  void check_responsive(const std::vector<ManagedDomain>& domains,
                        const std::optional<std::map<std::string, DomainStats>>& stats);
  void mark_unresponsive(const std::string& vm, const std::string& detail, std::chrono::system_clock::time_point since);
  bool skipped(const std::string& vm) const { return unresponsive_.count(vm) != 0 || calls_.busy(vm); }
  BalloonSample sample_balloon(const ManagedDomain& d, const AgentState& agent, const DomainStats* stats,
                               Clock::TimePoint now);
  HostMemory host_memory();
  policy::CpuHost cpu_host();
  void report_left_alone(const MemoryPlan& memory);
  void apply(const std::vector<Action>& actions, std::vector<Action>& applied);
  void apply_one(const Action& a);
  void on_reports(const std::string& vm, Clock::TimePoint received);
  void apply_reports();
  void record_report_latency(bool applied_any, Clock::TimePoint applied_at);
  void handle_events();
  void write_status();
  void wake();

  Hypervisor& hv_;
  const Clock& clock_;
  DaemonOptions options_;
  Reconciler reconciler_;
  AgentChannels channels_;
  Plan plan_;
  DaemonStatus status_;
  StatusWriter status_writer_;  // writes status.json when it changed (status_file.h)
  bool connected_ = true;
  bool connection_lost_ = false;
  bool reconcile_due_ = false;
  Clock::TimePoint last_reconcile_{};
  Clock::TimePoint last_fast_apply_{};        // the last apply_reports that planned (at most one per report_coalesce)
  std::atomic<std::uint64_t> reconciles_{0};  // read by other threads (tests, while run() loops)
  // Reports that changed the plan and are not applied yet: VM and when their bytes were read.
  std::vector<std::pair<std::string, Clock::TimePoint>> pending_reports_;
  // The last tick's snapshot, brought up to date with what was applied since (record_applied); reset
  // when it goes stale (a lifecycle event, a reload, a tick that could not plan).
  std::optional<Snapshot> last_snapshot_;
  LatencyWindow report_to_apply_{kLatencySamples};
  DaemonCounters counters_;  // metrics: tick and report histograms, actions, reconnects

  // Per active VM: the previous tick's balloon stats and when their last_update last moved; when
  // llmorchd last changed its balloon, and what the host got back from its last shrink.
  struct BalloonHistory {
    MemoryStats last;
    std::uint64_t last_update = 0;
    Clock::TimePoint moved_at{};
    Clock::TimePoint watched_since{};
    std::optional<std::chrono::system_clock::time_point> changed_at;  // our last SetMemory applied
    std::optional<policy::ShrinkReturn> shrink;  // the shrink step(s) being measured; reset by a grow
    std::uint64_t shrink_from_mib = 0;           // the balloon before those step(s)
    std::uint64_t requested_mib = 0;             // the target of our last change
    bool shrink_measured = false;                // rss_after/taken filled from stats newer than the step
    // The last shrink measured in full: what the rule judges by until the next one is (reset by a grow).
    std::optional<policy::ShrinkReturn> measured;
    std::vector<policy::NodeId> nodes;
    bool rss_missing_logged = false;
  };
  void note_balloon_change(const Action& a);
  std::map<std::string, BalloonHistory> balloons_;
  std::map<policy::NodeId, std::uint64_t> last_free_mib_;  // the latest node free memory read
  std::map<std::string, std::string> left_alone_;          // VMs whose balloon is left alone, and why
  std::optional<policy::HostTopology> topology_;           // read once, for the CPU plan

  FailureLog failures_;  // levers failing tick after tick, logged when they start and stop
  BoundedCalls calls_;   // keys: a VM's name, or "connect", "list", "stats", "stats.2", "free-memory",
                         // "capabilities"
  struct Unresponsive {
    std::chrono::system_clock::time_point since;
    std::string detail;
  };
  std::map<std::string, Unresponsive> unresponsive_;  // VMs skipped until libvirt answers for them
  std::string host_call_stuck_;  // the host-level call that did not return, while it has not (logged once)

  bool ready_sent_ = false;
  std::chrono::microseconds watchdog_period_{0};  // half the notifier's watchdog interval; 0: none
  Clock::TimePoint last_watchdog_{};

  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_{false};
  std::mutex events_mu_;
  std::vector<std::pair<std::string, LifecycleEvent>> events_;  // from the hypervisor's event thread
};

}  // namespace llmorch::orch
