#include "llmorch/orch/place_vm.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <utility>
#include <variant>

#include "llmorch/orch/bounded_calls.h"
#include "llmorch/orch/topology.h"

namespace llmorch::orch {

namespace {

// One bounded read; a call that does not return in time is an error that says so.
template <typename T>
T bounded_read(BoundedCalls& calls, const std::string& what, std::chrono::seconds timeout, std::function<T()> fn) {
  BoundedCalls::Result r;
  auto value = calls.get<T>(what, timeout, std::move(fn), r);
  if (value) return std::move(*value);
  if (r.status == BoundedCalls::Status::Error) std::rethrow_exception(r.error);
  throw HypervisorError(HypervisorError::Kind::Connection, "cannot read " + what,
                        "libvirt did not answer within " + std::to_string(timeout.count()) + " s",
                        "is libvirtd overloaded or stuck? Check `virsh list`, then try again");
}

}  // namespace

HostSnapshot read_host(const std::shared_ptr<Hypervisor>& hv, std::chrono::seconds timeout, std::ostream& warn) {
  BoundedCalls calls([hv](const std::string&) { hv->abandon_connection(); });
  HostSnapshot host;
  host.topology = parse_capabilities(
      bounded_read<std::string>(calls, "the host capabilities", timeout, [hv] { return hv->capabilities_xml(); }));
  host.domains = bounded_read<std::vector<ManagedDomain>>(calls, "the domain list", timeout,
                                                          [hv] { return hv->list_managed(); });
  // A VM whose llmorch metadata is bad says nothing usable about what it holds (llmorchd reports it).
  std::erase_if(host.domains, [](const ManagedDomain& d) { return d.metadata_error.has_value(); });
  host.free_mib = bounded_read<std::map<policy::NodeId, std::uint64_t>>(calls, "the free memory per node", timeout,
                                                                        [hv] { return hv->free_memory_mib(); });
  BoundedCalls::Result r;
  auto stats = calls.get<std::map<std::string, DomainStats>>(
      "stats", timeout, [hv] { return hv->domain_stats(); }, r);
  if (r.status == BoundedCalls::Status::TimedOut) {
    warn << "warning: libvirt did not return the VMs' statistics within " << timeout.count()
         << " s (a VM's QEMU may not be answering: `virsh domcontrol NAME` shows which); their balloon sizes "
            "stand in for their resident memory\n";
  }
  // An error (a VM stopped meanwhile, no stats): balloon sizes stand in too (host_state.h).
  if (stats) {
    for (const auto& d : host.domains) {
      auto it = stats->find(d.name);
      if (d.active() && it != stats->end() && it->second.memory.rss_kib)
        host.resident_mib[d.name] = *it->second.memory.rss_kib / 1024;
    }
  }
  return host;
}

PlaceLock::PlaceLock(const std::string& dir) {
  int dir_fd = -1;
  try {
    dir_fd = open_state_dir(dir);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("cannot take the place lock: ") + e.what());
  }
  const std::string path = dir + "/place.lock";
  fd_ = ::openat(dir_fd, "place.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  const int open_errno = errno;
  ::close(dir_fd);
  if (fd_ < 0) throw std::runtime_error("cannot open the lock file " + path + ": " + std::strerror(open_errno));
  if (::flock(fd_, LOCK_EX) != 0) {
    const int err = errno;
    ::close(fd_);
    throw std::runtime_error("cannot lock " + path + ": " + std::strerror(err));
  }
}

PlaceLock::~PlaceLock() { ::close(fd_); }  // closing releases the lock

Plan offline_plan(const std::vector<ManagedDomain>& domains, const policy::HostTopology& topology,
                  const HostConfig& config) {
  Snapshot snapshot;
  snapshot.alpha = config.alpha;
  snapshot.cpu_host = cpu_host(topology, config.reserved_cpus, config.shared_cpus);
  snapshot.memory.reserve_mib = config.memory_reserve_mib;
  snapshot.memory.limit_mib = config.host_memory_limit_mib;
  for (const ManagedDomain& d : domains)
    if (!d.metadata_error) snapshot.vms.push_back({.domain = d, .agent = {}, .balloon = {}});
  return make_plan(snapshot);
}

namespace {

// The domain `spec` defines, as libvirt will list it once started.
ManagedDomain as_running(const DomainSpec& spec, const std::string& xml) {
  const LiveDomainXml live = parse_live_domain_xml(xml);
  ManagedDomain d;
  d.name = spec.name;
  d.state = DomainState::Running;
  d.facts = make_facts(spec.template_path, spec.tmpl, spec.placement);
  d.vcpus_current = live.vcpus_current;
  d.vcpus_max = live.vcpus_max;
  for (const auto& [vcpu, cpus] : live.vcpu_pins) {
    if (vcpu < 0) continue;
    if (d.vcpu_pins.size() <= static_cast<std::size_t>(vcpu)) d.vcpu_pins.resize(static_cast<std::size_t>(vcpu) + 1);
    d.vcpu_pins[static_cast<std::size_t>(vcpu)] = cpus;
  }
  return d;
}

}  // namespace

PlaceVmResult place_vm(const std::shared_ptr<Hypervisor>& hypervisor, const PlaceVmRequest& request, std::ostream& warn,
                       const PlaceVmProgress& progress) {
  std::optional<PlaceLock> lock;
  if (!request.dry_run) lock.emplace(request.lock_dir);

  PlaceVmResult result;
  const HostSnapshot host = read_host(hypervisor, request.call_timeout, warn);
  check_config(host.topology, request.config);
  if (hypervisor->domain_exists(request.name)) {
    result.outcome = PlaceVmResult::Outcome::NameTaken;
    return result;
  }
  const VmTemplate& tmpl = request.tmpl;
  const policy::PlacementRequest placement_request{request.name, tmpl.vcpus, tmpl.max_memory_mib, tmpl.cpu_policy,
                                                   tmpl.hugepage_kib};
  auto placed = place_on_host(host, request.config, placement_request);
  if (auto* r = std::get_if<policy::Rejection>(&placed)) {
    result.outcome = PlaceVmResult::Outcome::NoFit;
    result.rejection = r->reason;
    return result;
  }
  DomainSpec& spec = result.spec;
  spec.name = request.name;
  spec.template_path = std::filesystem::absolute(request.template_path).lexically_normal().string();
  spec.placement = cells_up_to(std::get<policy::Placement>(placed), tmpl.max_vcpus);
  spec.domain_type = tmpl.domain_type.empty() ? request.config.domain_type : tmpl.domain_type;
  spec.tmpl = tmpl;

  // cpu_shares: what llmorchd's own plan gives the new VM among the running ones, at template priorities.
  std::vector<ManagedDomain> with_new = host.domains;
  with_new.push_back(as_running(spec, render_domain_xml(spec)));
  const Plan plan = offline_plan(with_new, host.topology, request.config);
  const auto mine = std::find_if(plan.vms.begin(), plan.vms.end(),
                                 [&](const VmPlan& v) { return v.name == spec.name; });
  if (mine != plan.vms.end()) spec.cpu_shares = static_cast<std::uint64_t>(mine->cpu_shares);
  result.xml = render_domain_xml(spec);

  if (request.dry_run) {
    result.outcome = PlaceVmResult::Outcome::DryRun;
    return result;
  }
  if (progress.defining) progress.defining(spec);
  try {
    hypervisor->define_and_start(result.xml);
  } catch (...) {
    if (progress.defined) progress.defined(false);
    throw;
  }
  if (progress.defined) progress.defined(true);
  result.outcome = PlaceVmResult::Outcome::Placed;
  return result;
}

}  // namespace llmorch::orch
