// The hypervisor as llmorch sees it: one small interface, one libvirt backend (orchestrator/libvirt/),
// fakes beside the tests. No libvirt include here.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/orch/domain_xml.h"
#include "llmorch/policy/types.h"

namespace llmorch::orch {

// A hypervisor call failed. what() is a sentence for the operator: what failed, libvirt's message, and
// the hint (what to do).
class HypervisorError : public std::runtime_error {
 public:
  enum class Kind { Other, NoDomain, Connection, InvalidArgument };

  HypervisorError(Kind kind, const std::string& action, std::string libvirt_message, std::string hint)
      : std::runtime_error(action + ": " + libvirt_message + (hint.empty() ? "" : " (" + hint + ")")),
        kind_(kind),
        libvirt_message_(std::move(libvirt_message)),
        hint_(std::move(hint)) {}

  Kind kind() const { return kind_; }
  const std::string& libvirt_message() const { return libvirt_message_; }
  const std::string& hint() const { return hint_; }

 private:
  Kind kind_;
  std::string libvirt_message_;
  std::string hint_;
};

enum class DomainState { NoState, Running, Blocked, Paused, ShuttingDown, ShutOff, Crashed, PmSuspended };
inline std::string_view to_string(DomainState s) {
  switch (s) {
    case DomainState::NoState: return "no state";
    case DomainState::Running: return "running";
    case DomainState::Blocked: return "blocked";
    case DomainState::Paused: return "paused";
    case DomainState::ShuttingDown: return "shutting down";
    case DomainState::ShutOff: return "shut off";
    case DomainState::Crashed: return "crashed";
    case DomainState::PmSuspended: return "pm suspended";
  }
  return "unknown";
}

// A domain that carries llmorch metadata, as libvirt reports it now.
struct ManagedDomain {
  std::string name;
  std::string uuid;
  DomainState state = DomainState::NoState;
  // Set when its llmorch metadata is malformed or out of range ("bad metadata: ..."; read_metadata in
  // domain_xml.h). Then facts are defaults and nothing else but name, uuid and state is filled in:
  // leave the VM alone (do not plan it) and report it. `llmorch remove` still removes it.
  std::optional<std::string> metadata_error;
  VmFacts facts;
  int vcpus_current = 0;
  int vcpus_max = 0;
  std::vector<std::vector<policy::CpuId>> vcpu_pins;  // [vCPU] -> host CPUs it may run on (up to max)
  std::vector<policy::CpuId> emulator_pins;           // host CPUs of QEMU's emulator threads; empty: unknown
  std::optional<std::uint64_t> cpu_shares;            // absent when the driver does not report it
  // The read of cpu_shares failed this time (e.g. libvirtd still reconnecting to its QEMUs after a
  // restart): unknown, but not a reason to write it; the reconciler leaves the shares alone this tick.
  bool cpu_shares_unreadable = false;
  std::uint64_t memory_actual_kib = 0;  // balloon size now (configured size when off)
  std::uint64_t memory_max_kib = 0;
  std::string channel_path;  // agent socket; empty while the domain is not running
  bool active() const {
    return state == DomainState::Running || state == DomainState::Paused || state == DomainState::Blocked;
  }
};

// virDomainMemoryStats; a field the guest/driver did not report is absent. KiB unless noted.
struct MemoryStats {
  std::optional<std::uint64_t> actual_kib, unused_kib, available_kib, usable_kib, swap_in_kib, swap_out_kib,
      major_faults, minor_faults, rss_kib, last_update_s;
};

struct CpuStats {
  std::uint64_t total_ns = 0;          // all of the domain's threads
  std::vector<std::uint64_t> vcpu_ns;  // per present vCPU
};

// One running domain's statistics from the bulk read.
struct DomainStats {
  CpuStats cpu;
  MemoryStats memory;            // actual_kib always; the guest's figures (unused, usable, rss, last update...)
                                 // only when memory_complete
  bool memory_complete = false;  // false: libvirt skipped what needs the domain's job (it is busy)
};

// libvirt's control interface to a domain's QEMU (virDomainGetControlInfo), which never waits on QEMU:
// Occupied for a long time means QEMU has not answered a monitor command (stopped, hung, swapping).
enum class ControlState { Ok, Job, Occupied, Error };
struct ControlInfo {
  ControlState state = ControlState::Ok;
  std::uint64_t for_ms = 0;  // how long it has been in that state (0 for Ok)
};

enum class LifecycleEvent { Defined, Undefined, Started, Suspended, Resumed, Stopped, Shutdown, PmSuspended, Crashed };
inline std::string_view to_string(LifecycleEvent e) {
  switch (e) {
    case LifecycleEvent::Defined: return "defined";
    case LifecycleEvent::Undefined: return "undefined";
    case LifecycleEvent::Started: return "started";
    case LifecycleEvent::Suspended: return "suspended";
    case LifecycleEvent::Resumed: return "resumed";
    case LifecycleEvent::Stopped: return "stopped";
    case LifecycleEvent::Shutdown: return "shutdown";
    case LifecycleEvent::PmSuspended: return "pm suspended";
    case LifecycleEvent::Crashed: return "crashed";
  }
  return "unknown";
}
inline std::string_view to_string(ControlState s) {
  switch (s) {
    case ControlState::Ok: return "ok";
    case ControlState::Job: return "busy with a job";
    case ControlState::Occupied: return "waiting for QEMU to answer";
    case ControlState::Error: return "monitor error";
  }
  return "unknown";
}

// Called on the hypervisor's event thread: keep it short and thread-safe (e.g. push to a queue).
using LifecycleCallback = std::function<void(const std::string& domain, LifecycleEvent event)>;

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;

  // Host.
  virtual std::string capabilities_xml() = 0;  // parse with parse_capabilities() (topology.h)
  virtual std::map<policy::NodeId, std::uint64_t> free_memory_mib() = 0;

  // Domains llmorch manages (those with llmorch metadata) whose names start with `name_prefix`. Others
  // are ignored, and the libvirt backend makes no call for a domain the prefix rules out: on a shared host
  // another tool's domain that is slow to answer (one that is starting, say) cannot hold up the listing.
  // Overriders repeat the default.
  virtual std::vector<ManagedDomain> list_managed(std::string_view name_prefix = {}) = 0;
  virtual std::optional<ManagedDomain> find_managed(const std::string& name) = 0;
  // Whether any domain, managed or not, has this name. The default knows only managed domains (enough
  // for fakes); the libvirt backend asks libvirt.
  virtual bool domain_exists(const std::string& name) { return find_managed(name).has_value(); }

  // Defines a new persistent domain and starts it. Refuses a name that exists. If the start fails the
  // domain is undefined again, so nothing half-made remains. Throws HypervisorError.
  virtual void define_and_start(const std::string& domain_xml) = 0;
  // Stops the domain with this UUID (ManagedDomain::uuid) if running and removes its definition,
  // managed save and snapshot metadata. By UUID only: a domain of the same name defined since the
  // caller looked is left alone. False when no domain has that UUID.
  virtual bool destroy_and_undefine_uuid(const std::string& uuid) = 0;

  // Live levers. Changes apply to the running domain and to its persistent definition (where libvirt
  // allows: set_memory_mib is live only, the definition keeps its start size).
  // LiveOnly: the running domain alone (fewer calls and no definition written: libvirt saves it with
  // fsync); for the report fast path, whose tick saves the definition right after.
  enum class Scope { LiveAndConfig, LiveOnly };
  virtual void set_cpu_shares(const std::string& name, std::uint64_t shares, Scope scope) = 0;
  virtual void pin_vcpu(const std::string& name, int vcpu, const std::vector<policy::CpuId>& cpus) = 0;
  virtual void pin_emulator(const std::string& name, const std::vector<policy::CpuId>& cpus) = 0;
  virtual void set_vcpus(const std::string& name, int count) = 0;               // hot-add; guest must online them
  virtual void set_memory_mib(const std::string& name, std::uint64_t mib) = 0;  // balloon target
  virtual void set_metadata(const std::string& name, const VmFacts& facts) = 0;

  // Statistics of every running domain in one call that never waits for a busy domain's job
  // (virConnectGetAllDomainStats, NOWAIT): a domain whose job is held, e.g. by a call stuck in its
  // QEMU monitor, gets only what needs no job (memory_complete false). It still starts a job on an
  // idle domain, so a QEMU that stopped answering blocks it once: call it through BoundedCalls.
  virtual std::map<std::string, DomainStats> domain_stats() = 0;
  // Whether libvirt is waiting on the domain's QEMU, and since when. Never waits on QEMU.
  virtual ControlInfo control_info(const std::string& name) = 0;

  // Replaces the lifecycle callback (empty function: none). Events arrive on an internal thread.
  virtual void set_lifecycle_callback(LifecycleCallback cb) = 0;

  // A call on the current connection has not returned (it waits on a QEMU that does not answer).
  // libvirt's client serialises a connection's traffic behind such a call (measured: other calls on it
  // took 5-15 s), so later calls must not share it: the libvirt backend drops it and opens a fresh one
  // at the next call; the stuck call keeps the old one, which closes when that call returns.
  virtual void abandon_connection() {}

  // Reconnects with backoff when the connection died (libvirtd restarted); throws
  // HypervisorError(Kind::Connection) when it gives up.
  virtual void ensure_connected() = 0;
};

}  // namespace llmorch::orch
