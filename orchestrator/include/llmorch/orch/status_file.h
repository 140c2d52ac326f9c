// llmorchd's status file: DIR/status.json (DIR: --state-dir, default /run/llmorch), replaced atomically
// (a new temporary file + rename: a reader sees the old file or the new one, never part of one).
// `llmorch status` / `llmorch explain` read it with read_status_file() and status_from_json().
//
// When status.json is written (StatusWriter): after a tick (or a failed one) whose status differs from
// the file in anything but last_tick_at, and otherwise once last_tick_at is kStatusRefresh (1 s) old.
// So a reader can rely on: all but last_tick_at is what the newest tick found (a tick that changed
// nothing else is not written), and while llmorchd ticks, last_tick_at is at most 1 s + one interval +
// one tick's duration old (`llmorch status` calls the daemon stuck past 3 intervals + 5 s). In practice the
// file changes almost every tick while agents report (report ages and counters move); skipping saves
// the write on quiet hosts and in ticks that follow one another quickly. The text is written without a
// JSON DOM (status_text), which for 1,000 VMs costs about 5 ms instead of 40-60.
//
// The schema lives in code once: StatusFile below mirrors the file field by field; status_to_json
// writes through it and status_from_json reads it back (a round-trip test keeps the two equal). The
// comment is the reader's guide; where it and StatusFile disagree, StatusFile is right.
//
// Schema (version 1). Times: "..._at" are ISO 8601 UTC strings ("2026-11-25T10:00:00.123Z"), ages and
// intervals are numbers as named. A field that is unknown is null.
// {
//   "version": 1,
//   "pid": 1234,                       daemon process id
//   "started_at": "...",               when the daemon started
//   "last_tick_at": "...",             when this file was written
//   "alpha": 0.8,                      weighting trade-off in force
//   "interval_ms": 1000,               tick interval
//   "dry_run": false,                  true: decisions are logged, not applied
//   "connected": true,                 libvirt answered during the last tick
//   "health": "ok",                    "ok"; "degraded": some VM has a problem (listed in "problems":
//                                      that VM is skipped, held or repaired, every other VM goes on);
//                                      "disconnected": libvirt unreachable (changes pause, nothing lost)
//   "problems": [                      VM-scoped problems the daemon works around, sorted by VM, kind
//     { "vm": "a", "kind": "unresponsive", "detail": "...", "since": "..." } ],
//                                      kinds: unresponsive, flapping, bad_metadata, plan_error, ...
//   "daemon": {                        the daemon's own figures
//     "report_to_apply_ms": {          per agent report that changed the plan: from reading its bytes
//       "n": 12,                       to the return of the last libvirt call that applied the change;
//       "p50": 3.1, "p99": 9.8,        the last 256 such reports (nearest-rank percentiles); p50, p99
//       "max": 11.2 } },               and max are null while n is 0
//   "vms": [                           every active managed VM in the plan, sorted by name
//     { "name": "a",
//       "effective_priority": 1.0,     what the weights use
//       "priority_source": "agent",    "agent" (fresh report), "template" (no report, or the report
//                                      states no priority) or "stale" (the last report expired)
//       "template_priority": 3.0,      VmFacts::priority
//       "reported_priority": 1.0,      from the newest report (clamped), null when none/absent
//       "report": {...} | null,        the newest valid report, all protocol fields (PROTOCOL.md names:
//                                      seq, prio, cpu_pct, psi_cpu_some10, runnable, ncpu_online,
//                                      mem_total_kib, mem_avail_kib, psi_mem_some10, floor_mib,
//                                      llm_running, llm_waiting, interval_ms; absent optionals are null)
//       "report_age_s": 0.4 | null,    age of that report
//       "report_fresh": true,          within its TTL
//       "agent": { "connected": true, "ok": 12, "malformed": 0, "oversized": 0, "rate_limited": 0,
//                  "unknown_keys": 0, "clamped": 0, "hostile": false, "last_error": "" },
//       "hostile": false,              same as agent.hostile
//       "flapping": false,             its priority keeps flipping: held at the last applied one
//                                      (a "flapping" problem says since when; reconciler.h)
//       "demand_cpus": 1.25,           -1: unknown (no fresh report)
//       "weight": 0.7105,
//       "cpu_shares": 1455,            planned
//       "cpu_time_s": 12.5 | null,     the domain's cumulative CPU time (all its threads, libvirt's
//                                      cpu.time) at this tick; null when the statistics were not read.
//                                      CPU % = its difference between two files / their last_tick_at
//                                      difference (llmorch top). Older files lack it: read as null.
//       "cpus": [0, 1],                dedicated: vCPU i on cpus[i]; shared: the pool
//       "vcpus_online": 2 | null,      rebalanced dedicated VMs, and shared VMs whose count is managed
//       "reason": "priority 1 reported by agent, weight 0.711 of 2 VMs",
//       "last_change_at": "..." | null, when the daemon last changed this VM
//       "last_change": "..." | null,   that change, as logged
//       "balloon": {                   memory (policy/balloon.h), MiB
//         "actual_mib": 200 | null,    the balloon now (null: not reported)
//         "target_mib": 180 | null,    this tick's target; null: left where it is
//         "floor_mib": 96, "max_mib": 256,
//         "left_alone": false,         no usable stats (driver missing, stats stopped): not managed
//         "reason": "...",             this tick's decision, or why it is left alone
//         "last_change_at": "..." | null, "last_change_reason": "..." | null   the last applied change
//       }
//     } ] }
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "llmorch/orch/latency_window.h"
#include "llmorch/orch/reconciler.h"

namespace llmorch::orch {

inline constexpr const char* kDefaultStateDir = "/run/llmorch";
inline constexpr int kStatusVersion = 1;

struct LastChange {
  std::chrono::system_clock::time_point at;
  std::string what;
};

// A problem scoped to one VM that the daemon works around: the VM is skipped, held or repaired while
// every other VM is managed as usual. kind is a short token ("unresponsive", "flapping",
// "bad_metadata", "plan_error"), detail a sentence for the operator, since when it was first seen.
struct VmProblem {
  std::string kind;
  std::string detail;
  std::chrono::system_clock::time_point since;
};

struct DaemonStatus {
  int pid = 0;
  std::chrono::system_clock::time_point started_at, last_tick_at;
  double alpha = 0.8;
  int interval_ms = 1000;
  bool dry_run = false;
  bool connected = false;
  Plan plan;
  std::map<std::string, AgentState> agents;                // by VM name
  std::map<std::string, LastChange> last_change;           // by VM name
  std::map<std::string, LastChange> balloon_change;        // by VM name: the last balloon change and why
  LatencySummary report_to_apply_ms;                       // see "daemon.report_to_apply_ms" above
  std::map<std::string, std::vector<VmProblem>> problems;  // by VM name; see "problems" above
  std::map<std::string, double> cpu_time_s;                // by VM name: "cpu_time_s" above (this tick's)
};

// "ok", "degraded" or "disconnected", as documented above.
std::string health(const DaemonStatus& status);

// What set_problems changed, for the log: problems new (or with a new detail), and VMs rid of one.
struct ProblemChanges {
  std::vector<std::pair<std::string, std::string>> raised;  // VM, detail
  std::vector<std::string> cleared;                         // VM
};
// Makes `current` (VM -> detail) the problems of this kind: adds the new ones (since `now`), keeps
// `since` of those that go on, drops those no longer there. Problems of other kinds are untouched.
ProblemChanges set_problems(DaemonStatus& status, const std::string& kind,
                            const std::map<std::string, std::string>& current,
                            std::chrono::system_clock::time_point now);

// status.json as a value, field by field (the schema above; times as written: ISO 8601 strings).
struct StatusFileVm {
  struct Agent {
    bool connected = false;
    std::uint64_t ok = 0, malformed = 0, oversized = 0, rate_limited = 0, unknown_keys = 0, clamped = 0;
    bool hostile = false;
    std::string last_error;
    bool operator==(const Agent&) const = default;
  };
  struct Balloon {
    std::optional<std::uint64_t> actual_mib, target_mib;
    std::uint64_t floor_mib = 0, max_mib = 0;
    bool left_alone = true;
    std::string reason;
    std::optional<std::string> last_change_at, last_change_reason;
    bool operator==(const Balloon&) const = default;
  };
  std::string name;
  double effective_priority = 1.0;
  std::string priority_source;  // "agent", "template", "stale", "hostile"
  double template_priority = 1.0;
  std::optional<double> reported_priority;
  std::optional<protocol::Report> report;
  std::optional<double> report_age_s;
  bool report_fresh = false;
  Agent agent;
  bool hostile = false;
  bool flapping = false;
  double demand_cpus = -1.0;
  double weight = 0.0;
  int cpu_shares = 1024;
  std::optional<double> cpu_time_s;
  std::vector<policy::CpuId> cpus;
  std::optional<int> vcpus_online;
  std::string reason;
  std::optional<std::string> last_change_at, last_change;
  Balloon balloon;
  bool operator==(const StatusFileVm&) const = default;
};

struct StatusFileProblem {
  std::string vm, kind, detail, since;
  bool operator==(const StatusFileProblem&) const = default;
};

struct StatusFile {
  int version = kStatusVersion;
  int pid = 0;
  std::string started_at, last_tick_at;
  double alpha = 0.8;
  int interval_ms = 1000;
  bool dry_run = false;
  bool connected = false;
  std::string health;  // "ok", "degraded", "disconnected"
  std::vector<StatusFileProblem> problems;
  LatencySummary report_to_apply_ms;
  std::vector<StatusFileVm> vms;
  const StatusFileVm* vm(const std::string& name) const;  // null when absent
};

// status.json holds something status_from_json cannot read; what() names the field and what to do.
struct StatusFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string iso8601(std::chrono::system_clock::time_point t);
nlohmann::json report_to_json(const protocol::Report& r);
StatusFile status_file_of(const DaemonStatus& status);
nlohmann::json to_json(const StatusFile& status);
nlohmann::json to_json(const StatusFileVm::Balloon& balloon);  // "balloon" of a "vms" entry
nlohmann::json status_to_json(const DaemonStatus& status);     // to_json(status_file_of(status))
// The bytes of status.json: to_json(f).dump(2) plus a newline, written without building the DOM.
std::string status_text(const StatusFile& f);
void status_text(const StatusFile& f, std::string& out);  // the same into `out` (cleared first)
// Reads what status_to_json wrote. Throws StatusFileError naming the first field that is missing or of
// the wrong type, or a version other than kStatusVersion. Keys it does not know are ignored.
StatusFile status_from_json(const nlohmann::json& j);

// llmorchd's state directory (status.json) is also the place lock's (llmorch place). Creates it when
// missing (mode 0755 exactly, whatever the umask; parents as needed), then refuses it unless it is a
// directory owned by the effective user and writable by nobody else: whoever can write there could
// plant files llmorch writes through or reads. Returns an open O_DIRECTORY descriptor (the caller
// closes it). Throws std::runtime_error naming the directory and what to do.
int open_state_dir(const std::string& dir);

// Replaces dir/status.json (mode 0644) atomically: a new file of its own in dir (mkstemp: created
// exclusively, never through a symlink), written in full, fsync'ed and closed without error, then
// renamed over status.json. On any failure the old status.json stays and the new file is removed.
// Checks dir as open_state_dir does. Throws std::runtime_error naming the path when it cannot.
void write_status_file(const std::string& dir, const DaemonStatus& status);
// The same with the file's bytes given (status_text).
void write_status_text(const std::string& dir, const std::string& text);

// How old status.json's last_tick_at may grow while llmorchd ticks and nothing else changes.
inline constexpr std::chrono::milliseconds kStatusRefresh{1000};

// llmorchd's writer of status.json (see "When status.json is written" above): writes after a tick
// when anything but last_tick_at differs from what it last wrote, or when what it last wrote is
// kStatusRefresh old or older (by status.last_tick_at); otherwise leaves the file as it is.
class StatusWriter {
 public:
  // Returns true when it wrote dir/status.json (through write_status_text), false when it had no need.
  // Throws as write_status_text does; a failed write is retried at the next call.
  bool write(const std::string& dir, const DaemonStatus& status);

 private:
  std::string last_;  // the text last written, with an empty last_tick_at
  std::string next_;  // this call's text, with an empty last_tick_at
  std::string out_;   // this call's text as written
  std::optional<std::chrono::system_clock::time_point> last_at_;
};

// Reads dir/status.json. Throws std::runtime_error with a hint ("is llmorchd running?") when the file
// is missing, or naming the file when it is not valid JSON.
nlohmann::json read_status_file(const std::string& dir = kDefaultStateDir);

}  // namespace llmorch::orch
