// llmorchd's Prometheus metrics (--metrics-listen, config key metrics_listen): what they are and how
// they are rendered. Pure: the daemon fills a MetricsSnapshot after every tick from the same data
// status.json is written from (status_file_of) plus its own counters; render_metrics turns it into the
// text exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/). The HTTP
// side is metrics_server.h; it only serves the text rendered last.
//
// The exposition is written by hand: prometheus-cpp is not packaged in Debian 12, and the format is a
// few lines per family (HELP, TYPE, samples) with one escaping rule for label values.
//
// Families (base units; a VM's series carry label vm="NAME"; an unknown value is no series at all):
//   llmorch_vm_priority{vm,source}         effective priority; source: agent, template, stale, hostile
//   llmorch_vm_weight{vm}                  share of the node's CPU time (0..1)
//   llmorch_vm_cpu_shares{vm}              planned cgroup cpu.shares
//   llmorch_vm_vcpus_online{vm}            vCPUs the plan keeps online (managed counts only)
//   llmorch_vm_cpu_seconds_total{vm}       CPU time of all the domain's threads (libvirt, measured)
//   llmorch_vm_balloon_actual_bytes{vm}    the balloon now
//   llmorch_vm_balloon_target_bytes{vm}    this tick's target (absent: left where it is)
//   llmorch_vm_balloon_floor_bytes{vm}     the least the balloon may shrink to
//   llmorch_vm_agent_report_age_seconds{vm} age of the newest valid agent report
//   llmorch_vm_hostile{vm}, llmorch_vm_flapping{vm}, llmorch_vm_unresponsive{vm}   0 or 1
//   llmorch_tick_duration_seconds          histogram: one reconcile (Daemon::tick)
//   llmorch_report_to_applied_seconds      histogram: a plan-changing report's bytes read -> the last
//                                          libvirt call applying it returned (status.json's
//                                          daemon.report_to_apply_ms, all samples instead of the last 256)
//   llmorch_actions_applied_total{kind}    changes applied (not dry-run ones); kind: cpu_shares, vcpus,
//                                          pin_vcpu, pin_emulator, metadata, balloon, vcpus_online
//   llmorch_libvirt_up                     1 while libvirt answered in the last tick
//   llmorch_libvirt_reconnects_total       times the connection came back after being lost
//   llmorch_build_info{version}            1
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/status_file.h"

namespace llmorch::orch {

// A Prometheus histogram: upper bounds (ascending, +Inf implied), per-bucket counts (not cumulative:
// rendering accumulates them), sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  // counts()[i]: observations in (bounds[i-1], bounds[i]]; the last one: above every bound.
  const std::vector<std::uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  std::uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// Seconds. A tick on a quiet host takes a few ms; TCG hosts and timed-out libvirt calls reach seconds.
inline const std::vector<double> kTickBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25,  0.5,    1,     2.5,  5,     10};
// Seconds. Reports applied first take about a millisecond; those waiting for a full tick up to one interval.
inline const std::vector<double> kReportBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                   0.05,   0.1,   0.25,   0.5,   1,    2.5};

// The daemon's own counters, kept across ticks by Daemon.
struct DaemonCounters {
  Histogram tick_seconds{kTickBuckets};
  Histogram report_to_applied_seconds{kReportBuckets};
  std::map<std::string, std::uint64_t> actions_applied;  // by action_kind
  std::uint64_t reconnects = 0;
};

// The `kind` label of llmorch_actions_applied_total for an action.
std::string action_kind(const Action& action);

struct VmMetrics {
  std::string name;
  double priority = 1.0;
  std::string priority_source;
  double weight = 0.0;
  int cpu_shares = 0;
  std::optional<int> vcpus_online;
  std::optional<double> cpu_seconds;
  std::optional<std::uint64_t> balloon_actual_bytes, balloon_target_bytes;
  std::uint64_t balloon_floor_bytes = 0;
  std::optional<double> report_age_seconds;
  bool hostile = false, flapping = false, unresponsive = false;
};

struct MetricsSnapshot {
  bool libvirt_up = false;
  std::vector<VmMetrics> vms;  // sorted by name
  DaemonCounters counters;
};

// The VMs of status.json (as status_file_of makes it; CPU seconds are its cpu_time_s).
std::vector<VmMetrics> vm_metrics(const StatusFile& status);

// A label value escaped per the exposition format: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);

// The exposition text (format 0.0.4), every family with HELP and TYPE. `version`: llmorch_build_info's.
std::string render_metrics(const MetricsSnapshot& snapshot, std::string_view version);

// The Content-Type of render_metrics' text.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// --metrics-listen / metrics_listen: "ADDR:PORT" (IPv6 in brackets: "[::1]:9477"); port 1-65535.
struct ListenAddress {
  std::string host;  // without brackets
  int port = 0;
};
// Throws std::invalid_argument saying what is wrong and what is expected.
ListenAddress parse_listen_address(const std::string& text);

}  // namespace llmorch::orch
