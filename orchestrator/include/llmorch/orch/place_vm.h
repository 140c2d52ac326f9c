// Use cases that read the live host and change it, shared by every front end (the CLI, tests, a fleet
// tool): read the host with bounded calls, place a VM (lock, read, place, render, define), and the CPU
// plan llmorchd would make without agent reports. The front end parses and prints; these decide and act.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "llmorch/orch/config.h"
#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/host_state.h"
#include "llmorch/orch/hypervisor.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/status_file.h"
#include "llmorch/orch/template.h"

namespace llmorch::orch {

// Topology, managed domains (those with bad metadata left out: they say nothing usable about what they
// hold), free memory and the running VMs' resident memory, each libvirt call bounded by `timeout`.
// Statistics that do not come back in time are skipped with a warning on `warn` (balloon sizes stand
// in for resident memory); a listing that does not is a HypervisorError. Shared: a call still running
// after its deadline keeps the hypervisor alive.
HostSnapshot read_host(const std::shared_ptr<Hypervisor>& hypervisor, std::chrono::seconds timeout, std::ostream& warn);

// Holds an exclusive flock on DIR/place.lock for its lifetime, so two placements never race. DIR is
// checked as llmorchd's state directory is (open_state_dir: created 0755, refused when others may write
// to it), and the lock file is never opened through a symlink. Throws std::runtime_error saying what to do.
class PlaceLock {
 public:
  explicit PlaceLock(const std::string& dir);
  ~PlaceLock();
  PlaceLock(const PlaceLock&) = delete;
  PlaceLock& operator=(const PlaceLock&) = delete;

 private:
  int fd_ = -1;
};

struct PlaceVmRequest {
  std::string name;           // valid_vm_name()
  std::string template_path;  // recorded in the metadata (made absolute)
  VmTemplate tmpl;            // loaded, overrides applied
  HostConfig config;
  bool dry_run = false;                     // place and render only: no lock, nothing defined
  std::string lock_dir = kDefaultStateDir;  // where place.lock lives (llmorchd's --state-dir)
  std::chrono::seconds call_timeout{5};     // per libvirt read (read_host)
};

struct PlaceVmResult {
  enum class Outcome { Placed, DryRun, NameTaken, NoFit };
  Outcome outcome = Outcome::NoFit;
  std::string rejection;  // NoFit: why, naming every node
  DomainSpec spec;        // Placed, DryRun: what was (or would be) defined
  std::string xml;        // Placed, DryRun: its domain XML
};

// Observes the one change place_vm makes: `defining` runs just before define_and_start, `defined` after
// it returned (true) or threw (false, the exception then propagates). Either may be empty.
struct PlaceVmProgress {
  std::function<void(const DomainSpec&)> defining;
  std::function<void(bool ok)> defined;
};

// Places one VM on the live host and (unless dry_run) defines and starts it, holding the place lock
// from reading the host to defining the domain. The VM's cpu_shares are what llmorchd's plan gives it
// among the running VMs at their template priorities (offline_plan). Nothing changes unless the
// outcome is Placed. Throws ConfigError (host config vs topology), HypervisorError, CapabilitiesError,
// std::runtime_error (the lock).
PlaceVmResult place_vm(const std::shared_ptr<Hypervisor>& hypervisor, const PlaceVmRequest& request, std::ostream& warn,
                       const PlaceVmProgress& progress = {});

// The plan llmorchd would make now if no agent had reported: its own make_plan on a snapshot of
// `domains` (any state; those with bad metadata are left out) without agents or balloon statistics,
// on the host's CPUs as the host config divides them. What status/explain show without a daemon.
Plan offline_plan(const std::vector<ManagedDomain>& domains, const policy::HostTopology& topology,
                  const HostConfig& config);

}  // namespace llmorch::orch
