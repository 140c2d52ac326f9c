// Hypervisor on the libvirt C API. One connection, guarded by a mutex (libvirt connections are
// thread-safe, but reconnecting swaps the pointer). Errors become HypervisorError with libvirt's message.
#include "llmorch/orch/libvirt_hypervisor.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <numa.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include <pugixml.hpp>

namespace llmorch::orch {
namespace {

using Kind = HypervisorError::Kind;

constexpr unsigned kUndefineFlags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                    VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA;

const char* const kConnectHint =
    "is libvirtd running? Start it (tools/libvirtd-up on machines without systemd) or choose another URI "
    "with -c/--connect or LIBVIRT_DEFAULT_URI";

// ---------------------------------------------------------------------------------------------
// Errors.

Kind classify(const virError* e) {
  if (!e) return Kind::Other;
  switch (e->code) {
    case VIR_ERR_NO_DOMAIN: return Kind::NoDomain;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_RPC:
    case VIR_ERR_AUTH_FAILED:
    case VIR_ERR_INVALID_CONN: return Kind::Connection;
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_CONFIG_UNSUPPORTED: return Kind::InvalidArgument;
    default: return e->domain == VIR_FROM_RPC ? Kind::Connection : Kind::Other;
  }
}

// Builds the error from libvirt's last error on this thread.
HypervisorError last_error(const std::string& action, std::string hint = {}) {
  const virError* e = virGetLastError();
  Kind kind = classify(e);
  std::string msg = virGetLastErrorMessage();
  if (hint.empty() && kind == Kind::Connection) hint = kConnectHint;
  return HypervisorError(kind, action, msg, hint);
}

// ---------------------------------------------------------------------------------------------
// Process-wide setup: quiet error printing, the default event loop and its thread.

void init_libvirt_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    virInitialize();
    virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});  // we report errors ourselves
    virEventRegisterDefaultImpl();
    std::thread([] {
      for (;;) virEventRunDefaultImpl();
    }).detach();
  });
}

// ---------------------------------------------------------------------------------------------
// Handles.

struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using Domain = std::unique_ptr<std::remove_pointer_t<virDomainPtr>, DomainFree>;

struct CFree {
  void operator()(void* p) const { std::free(p); }
};
using CString = std::unique_ptr<char, CFree>;

// State the event thread touches; shared so that it outlives the object if a callback is in flight.
struct EventState {
  std::mutex mu;
  LifecycleCallback callback;
  std::atomic<bool> closed{false};
};

std::optional<LifecycleEvent> map_event(int event) {
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED: return LifecycleEvent::Defined;
    case VIR_DOMAIN_EVENT_UNDEFINED: return LifecycleEvent::Undefined;
    case VIR_DOMAIN_EVENT_STARTED: return LifecycleEvent::Started;
    case VIR_DOMAIN_EVENT_SUSPENDED: return LifecycleEvent::Suspended;
    case VIR_DOMAIN_EVENT_RESUMED: return LifecycleEvent::Resumed;
    case VIR_DOMAIN_EVENT_STOPPED: return LifecycleEvent::Stopped;
    case VIR_DOMAIN_EVENT_SHUTDOWN: return LifecycleEvent::Shutdown;
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return LifecycleEvent::PmSuspended;
    case VIR_DOMAIN_EVENT_CRASHED: return LifecycleEvent::Crashed;
    default: return std::nullopt;
  }
}

int on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int, void* opaque) {
  auto& state = **static_cast<std::shared_ptr<EventState>*>(opaque);
  auto mapped = map_event(event);
  std::lock_guard lock(state.mu);
  if (mapped && state.callback) state.callback(virDomainGetName(dom), *mapped);
  return 0;
}

void on_close(virConnectPtr, int, void* opaque) { (*static_cast<std::shared_ptr<EventState>*>(opaque))->closed = true; }

void free_state_ref(void* opaque) { delete static_cast<std::shared_ptr<EventState>*>(opaque); }

DomainState map_state(int s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING: return DomainState::Running;
    case VIR_DOMAIN_BLOCKED: return DomainState::Blocked;
    case VIR_DOMAIN_PAUSED: return DomainState::Paused;
    case VIR_DOMAIN_SHUTDOWN: return DomainState::ShuttingDown;
    case VIR_DOMAIN_SHUTOFF: return DomainState::ShutOff;
    case VIR_DOMAIN_CRASHED: return DomainState::Crashed;
    case VIR_DOMAIN_PMSUSPENDED: return DomainState::PmSuspended;
    default: return DomainState::NoState;
  }
}

// "driver://host/path": only a URI without a host talks to this machine, where libnuma may answer.
bool is_local_uri(const std::string& uri) {
  auto scheme = uri.find("://");
  return scheme != std::string::npos && uri.compare(scheme + 3, 1, "/") == 0;
}

std::vector<policy::NodeId> node_ids_from_capabilities(const std::string& caps) {
  pugi::xml_document doc;
  std::vector<policy::NodeId> ids;
  if (!doc.load_string(caps.c_str())) return ids;
  for (auto cell : doc.child("capabilities").child("host").child("topology").child("cells").children("cell"))
    ids.push_back(cell.attribute("id").as_int());
  return ids;
}

std::optional<std::uint64_t> numa_free_mib(policy::NodeId node) {
  if (numa_available() < 0) return std::nullopt;
  long long free_bytes = 0;
  if (numa_node_size64(node, &free_bytes) < 0) return std::nullopt;
  return static_cast<std::uint64_t>(free_bytes) / (1024 * 1024);
}

// ---------------------------------------------------------------------------------------------

class LibvirtHypervisor final : public Hypervisor {
 public:
  LibvirtHypervisor(std::string uri, LibvirtOptions options) : uri_(std::move(uri)), options_(options) {
    init_libvirt_once();
    std::lock_guard lock(mu_);
    open_locked();
  }

  ~LibvirtHypervisor() override {
    std::lock_guard lock(mu_);
    close_locked();
  }

  std::string capabilities_xml() override {
    std::lock_guard lock(mu_);
    CString caps(virConnectGetCapabilities(conn_));
    if (!caps) throw last_error("cannot read the host capabilities from " + uri_);
    return caps.get();
  }

  std::map<policy::NodeId, std::uint64_t> free_memory_mib() override {
    std::lock_guard lock(mu_);
    CString caps(virConnectGetCapabilities(conn_));
    if (!caps) throw last_error("cannot read the host capabilities from " + uri_);
    std::map<policy::NodeId, std::uint64_t> out;
    for (policy::NodeId id : node_ids_from_capabilities(caps.get())) {
      unsigned long long free_bytes = 0;
      if (virNodeGetCellsFreeMemory(conn_, &free_bytes, id, 1) == 1) {
        out[id] = free_bytes / (1024 * 1024);
        continue;
      }
      auto fallback = is_local_uri(uri_) ? numa_free_mib(id) : std::nullopt;
      if (!fallback) throw last_error("cannot read the free memory of NUMA node " + std::to_string(id));
      out[id] = *fallback;
    }
    return out;
  }

  std::vector<ManagedDomain> list_managed() override {
    std::lock_guard lock(mu_);
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(conn_, &doms, 0);
    if (n < 0) throw last_error("cannot list the domains on " + uri_);
    std::vector<Domain> owned(doms, doms + n);
    std::free(doms);
    std::vector<ManagedDomain> out;
    for (auto& d : owned)
      if (auto m = describe_listed(d.get())) out.push_back(std::move(*m));
    return out;
  }

  std::optional<ManagedDomain> find_managed(const std::string& name) override {
    std::lock_guard lock(mu_);
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d) {
      if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return std::nullopt;
      throw last_error("cannot look up domain '" + name + "'");
    }
    return describe(d.get());
  }

  bool domain_exists(const std::string& name) override {
    std::lock_guard lock(mu_);
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (d) return true;
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return false;
    throw last_error("cannot look up domain '" + name + "'");
  }

  void define_and_start(const std::string& xml) override {
    std::lock_guard lock(mu_);
    const std::string name = domain_name(xml);
    if (Domain existing{virDomainLookupByName(conn_, name.c_str())})
      throw HypervisorError(Kind::InvalidArgument, "cannot define domain '" + name + "'",
                            "a domain with that name exists", "pick another name or remove it first");
    virResetLastError();
    Domain d(virDomainDefineXMLFlags(conn_, xml.c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
    if (!d) throw last_error("libvirt rejected the definition of domain '" + name + "'");
    if (virDomainCreate(d.get()) < 0) {
      HypervisorError err = last_error("cannot start domain '" + name + "'",
                                       "its definition was removed again; QEMU's log is /var/log/libvirt/qemu/" +
                                           name + ".log");
      undefine(d.get());
      throw err;
    }
  }

  bool destroy_and_undefine(const std::string& name) override {
    std::lock_guard lock(mu_);
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d) {
      if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return false;
      throw last_error("cannot look up domain '" + name + "'");
    }
    // A domain that stopped on its own meanwhile makes destroy fail with "not running": fine.
    if (virDomainIsActive(d.get()) == 1 && virDomainDestroy(d.get()) < 0 &&
        virGetLastErrorCode() != VIR_ERR_OPERATION_INVALID)
      throw last_error("cannot stop domain '" + name + "'");
    if (virDomainIsPersistent(d.get()) == 1 && !undefine(d.get()) && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN)
      throw last_error("cannot undefine domain '" + name + "'");
    return true;
  }

  void set_cpu_shares(const std::string& name, std::uint64_t shares) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    virTypedParameterPtr params = nullptr;
    int n = 0, max = 0;
    virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_SCHEDULER_CPU_SHARES, shares);
    int rc = virDomainSetSchedulerParametersFlags(d.get(), params, n, live_and_config(d.get()));
    virTypedParamsFree(params, n);
    if (rc < 0) throw last_error("cannot set cpu_shares of domain '" + name + "' to " + std::to_string(shares));
  }

  void pin_vcpu(const std::string& name, int vcpu, const std::vector<policy::CpuId>& cpus) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    auto map = cpumap(cpus);
    if (virDomainPinVcpuFlags(d.get(), vcpu, map.data(), map.size(), live_and_config(d.get())) < 0)
      throw last_error("cannot pin vCPU " + std::to_string(vcpu) + " of domain '" + name + "'");
  }

  void pin_emulator(const std::string& name, const std::vector<policy::CpuId>& cpus) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    auto map = cpumap(cpus);
    if (virDomainPinEmulator(d.get(), map.data(), map.size(), live_and_config(d.get())) < 0)
      throw last_error("cannot pin the emulator threads of domain '" + name + "'");
  }

  void set_vcpus(const std::string& name, int count) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    if (virDomainSetVcpusFlags(d.get(), count, live_and_config(d.get())) < 0)
      throw last_error("cannot set the vCPU count of domain '" + name + "' to " + std::to_string(count),
                       "the count must lie within 1 and the domain's maximum");
  }

  void set_memory_mib(const std::string& name, std::uint64_t mib) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    if (virDomainSetMemoryFlags(d.get(), mib * 1024, VIR_DOMAIN_AFFECT_LIVE) < 0)
      throw last_error("cannot set the balloon of domain '" + name + "' to " + std::to_string(mib) + " MiB",
                       "the domain must be running and the size at most its maximum memory");
  }

  void set_metadata(const std::string& name, const VmFacts& facts) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    const std::string fragment = render_metadata_body(facts);
    if (virDomainSetMetadata(d.get(), VIR_DOMAIN_METADATA_ELEMENT, fragment.c_str(), kMetadataPrefix,
                             kMetadataNamespace, live_and_config(d.get())) < 0)
      throw last_error("cannot store llmorch metadata in domain '" + name + "'");
  }

  MemoryStats memory_stats(const std::string& name) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    virDomainMemoryStatStruct stats[VIR_DOMAIN_MEMORY_STAT_NR];
    int n = virDomainMemoryStats(d.get(), stats, VIR_DOMAIN_MEMORY_STAT_NR, 0);
    if (n < 0) throw last_error("cannot read memory statistics of domain '" + name + "'");
    MemoryStats out;
    for (int i = 0; i < n; ++i) {
      std::uint64_t v = stats[i].val;
      switch (stats[i].tag) {
        case VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON: out.actual_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_UNUSED: out.unused_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_AVAILABLE: out.available_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_USABLE: out.usable_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_SWAP_IN: out.swap_in_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_SWAP_OUT: out.swap_out_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_MAJOR_FAULT: out.major_faults = v; break;
        case VIR_DOMAIN_MEMORY_STAT_MINOR_FAULT: out.minor_faults = v; break;
        case VIR_DOMAIN_MEMORY_STAT_RSS: out.rss_kib = v; break;
        case VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE: out.last_update_s = v; break;
        default: break;
      }
    }
    return out;
  }

  CpuStats cpu_stats(const std::string& name) override {
    std::lock_guard lock(mu_);
    Domain d = lookup(name);
    virDomainPtr doms[] = {d.get(), nullptr};
    virDomainStatsRecordPtr* records = nullptr;
    if (virDomainListGetStats(doms, VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_VCPU, &records, 0) < 1) {
      if (records) virDomainStatsRecordListFree(records);
      throw last_error("cannot read CPU statistics of domain '" + name + "'");
    }
    CpuStats out;
    const virDomainStatsRecord& r = *records[0];
    unsigned long long v = 0;
    if (virTypedParamsGetULLong(r.params, r.nparams, "cpu.time", &v) == 1) out.total_ns = v;
    unsigned int current = 0;
    virTypedParamsGetUInt(r.params, r.nparams, "vcpu.current", &current);
    for (unsigned int i = 0; i < current; ++i) {
      const std::string key = "vcpu." + std::to_string(i) + ".time";
      v = 0;
      virTypedParamsGetULLong(r.params, r.nparams, key.c_str(), &v);
      out.vcpu_ns.push_back(v);
    }
    virDomainStatsRecordListFree(records);
    return out;
  }

  void set_lifecycle_callback(LifecycleCallback cb) override {
    std::lock_guard lock(events_->mu);
    events_->callback = std::move(cb);
  }

  bool alive() override {
    std::lock_guard lock(mu_);
    return alive_locked();
  }

  void ensure_connected() override {
    std::lock_guard lock(mu_);
    if (alive_locked()) return;
    close_locked();
    const auto deadline = std::chrono::steady_clock::now() + options_.reconnect_timeout;
    auto backoff = options_.initial_backoff;
    for (;;) {
      try {
        open_locked();
        return;
      } catch (const HypervisorError&) {
        if (std::chrono::steady_clock::now() + backoff > deadline) throw;
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

 private:
  // --- connection (callers hold mu_) ---

  void open_locked() {
    conn_ = virConnectOpen(uri_.c_str());
    if (!conn_) {
      HypervisorError e = last_error("cannot connect to " + uri_, kConnectHint);
      throw HypervisorError(Kind::Connection, "cannot connect to " + uri_, e.libvirt_message(), kConnectHint);
    }
    events_->closed = false;
    // Keepalive and the close callback let alive() notice a libvirtd that went away. Drivers without
    // a daemon (test:///) refuse both; that is fine.
    virConnectSetKeepAlive(conn_, 5, 3);
    // The close callback's ref is ours, freed in close_locked after unregistering: drivers without
    // close callbacks (test:///) accept the registration but never call a free function (a leak).
    close_ref_ = std::make_unique<std::shared_ptr<EventState>>(events_);
    close_registered_ = virConnectRegisterCloseCallback(conn_, on_close, close_ref_.get(), nullptr) == 0;
    auto* event_ref = new std::shared_ptr<EventState>(events_);
    lifecycle_id_ = virConnectDomainEventRegisterAny(conn_, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                     VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), event_ref,
                                                     free_state_ref);
    if (lifecycle_id_ < 0) {
      delete event_ref;
      HypervisorError e = last_error("cannot subscribe to domain events on " + uri_);
      close_locked();
      throw e;
    }
    virResetLastError();
  }

  void close_locked() {
    if (!conn_) return;
    if (lifecycle_id_ >= 0) virConnectDomainEventDeregisterAny(conn_, lifecycle_id_);
    if (close_registered_) virConnectUnregisterCloseCallback(conn_, on_close);
    lifecycle_id_ = -1;
    close_registered_ = false;
    virConnectClose(conn_);
    conn_ = nullptr;
    close_ref_.reset();
    virResetLastError();
  }

  bool alive_locked() { return conn_ && !events_->closed && virConnectIsAlive(conn_) == 1; }

  // --- domains (callers hold mu_) ---

  Domain lookup(const std::string& name) {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d) throw last_error("cannot find domain '" + name + "'", "check the name with `llmorch list`");
    return d;
  }

  // Removes the definition with everything attached to it. Drivers that know fewer of these flags
  // (the test driver) reject them as invalid; retry with the ones every driver has.
  static bool undefine(virDomainPtr d) {
    if (virDomainUndefineFlags(d, kUndefineFlags) == 0) return true;
    if (virGetLastErrorCode() != VIR_ERR_INVALID_ARG) return false;
    return virDomainUndefineFlags(d, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) == 0;
  }

  // Running: change it now and in its definition. Shut off: the definition only.
  static unsigned int live_and_config(virDomainPtr d) {
    unsigned int flags = 0;
    if (virDomainIsActive(d) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
    if (virDomainIsPersistent(d) == 1) flags |= VIR_DOMAIN_AFFECT_CONFIG;
    return flags;
  }

  int host_cpu_count() {
    int n = virNodeGetCPUMap(conn_, nullptr, nullptr, 0);
    if (n > 0) return n;
    virNodeInfo info;
    if (virNodeGetInfo(conn_, &info) < 0) throw last_error("cannot read the host's CPU count");
    return static_cast<int>(info.cpus);
  }

  std::vector<unsigned char> cpumap(const std::vector<policy::CpuId>& cpus) {
    const int ncpus = host_cpu_count();
    std::vector<unsigned char> map(VIR_CPU_MAPLEN(ncpus), 0);
    if (cpus.empty()) throw HypervisorError(Kind::InvalidArgument, "cannot pin", "empty CPU set", "name at least one CPU");
    for (policy::CpuId c : cpus) {
      if (c < 0 || c >= ncpus)
        throw HypervisorError(Kind::InvalidArgument, "cannot pin to CPU " + std::to_string(c),
                              "the host has CPUs 0-" + std::to_string(ncpus - 1), "pick CPUs the host has");
      VIR_USE_CPU(map.data(), c);
    }
    return map;
  }

  // A listed domain that stops or vanishes while it is described makes libvirt fail with varying
  // errors: VIR_ERR_NO_DOMAIN, "domain is not running", or no error at all ("no error" messages from
  // calls that lost their object). So on any failure, look the domain up again: gone means it is not
  // listed; still there means its state changed under us, and one more try describes the new state.
  std::optional<ManagedDomain> describe_listed(virDomainPtr d) {
    try {
      return describe(d);
    } catch (const HypervisorError& e) {
      if (e.kind() == Kind::Connection) throw;
      if (!still_defined(d)) return std::nullopt;
    }
    try {
      return describe(d);
    } catch (const HypervisorError& e) {
      if (e.kind() == Kind::Connection || still_defined(d)) throw;
      return std::nullopt;
    }
  }

  // Whether libvirt still knows the domain (by UUID, so a new domain of the same name does not count).
  bool still_defined(virDomainPtr d) {
    unsigned char uuid[VIR_UUID_BUFLEN];
    if (virDomainGetUUID(d, uuid) < 0) return false;
    Domain again(virDomainLookupByUUID(conn_, uuid));
    if (again) return true;
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return false;
    throw last_error("cannot look up a listed domain again");
  }

  std::optional<ManagedDomain> describe(virDomainPtr d) {
    CString xml(virDomainGetXMLDesc(d, 0));
    if (!xml) throw last_error(std::string("cannot read the XML of domain '") + virDomainGetName(d) + "'");
    auto facts = parse_metadata(xml.get());
    if (!facts) return std::nullopt;
    ManagedDomain m;
    m.name = virDomainGetName(d);
    m.facts = std::move(*facts);
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(d, uuid) == 0) m.uuid = uuid;
    virDomainInfo info;
    if (virDomainGetInfo(d, &info) < 0) throw last_error("cannot read the state of domain '" + m.name + "'");
    m.state = map_state(info.state);
    m.memory_actual_kib = info.memory;
    m.memory_max_kib = info.maxMem;
    LiveDomainXml live = parse_live_domain_xml(xml.get());
    m.vcpus_current = live.vcpus_current;
    m.vcpus_max = live.vcpus_max;
    m.channel_path = m.active() ? live.channel_path : "";
    m.vcpu_pins = vcpu_pins(d, m.vcpus_max);
    m.emulator_pins = live.emulator_pins;
    m.cpu_shares = cpu_shares(d);
    return m;
  }

  std::vector<std::vector<policy::CpuId>> vcpu_pins(virDomainPtr d, int max_vcpus) {
    const int ncpus = host_cpu_count();
    const int maplen = VIR_CPU_MAPLEN(ncpus);
    std::vector<unsigned char> maps(static_cast<std::size_t>(maplen) * max_vcpus, 0);
    int n = virDomainGetVcpuPinInfo(d, max_vcpus, maps.data(), maplen, 0);
    if (n < 0) throw last_error(std::string("cannot read the vCPU pinning of domain '") + virDomainGetName(d) + "'");
    std::vector<std::vector<policy::CpuId>> out(n);
    for (int v = 0; v < n; ++v)
      for (int c = 0; c < ncpus; ++c)
        if (VIR_CPU_USABLE(maps.data(), maplen, v, c)) out[v].push_back(c);
    return out;
  }

  // Absent when the driver has no cpu_shares (e.g. the test driver's "weight").
  std::optional<std::uint64_t> cpu_shares(virDomainPtr d) {
    int n = 0;
    CString type(virDomainGetSchedulerType(d, &n));
    std::optional<std::uint64_t> out;
    if (type && n > 0) {
      std::vector<virTypedParameter> params(n);
      unsigned long long v = 0;
      if (virDomainGetSchedulerParametersFlags(d, params.data(), &n, 0) == 0 &&
          virTypedParamsGetULLong(params.data(), n, VIR_DOMAIN_SCHEDULER_CPU_SHARES, &v) == 1)
        out = v;
      virTypedParamsClear(params.data(), n);
    }
    virResetLastError();
    return out;
  }

  static std::string domain_name(const std::string& xml) {
    pugi::xml_document doc;
    std::string name;
    if (doc.load_string(xml.c_str())) name = doc.child("domain").child_value("name");
    if (name.empty())
      throw HypervisorError(Kind::InvalidArgument, "cannot define a domain", "the XML has no <domain><name>",
                            "render it with render_domain_xml()");
    return name;
  }

  std::string uri_;
  LibvirtOptions options_;
  std::mutex mu_;
  virConnectPtr conn_ = nullptr;
  int lifecycle_id_ = -1;
  bool close_registered_ = false;
  std::unique_ptr<std::shared_ptr<EventState>> close_ref_;  // on_close's opaque while registered
  std::shared_ptr<EventState> events_ = std::make_shared<EventState>();
};

}  // namespace

std::string resolve_uri(const std::optional<std::string>& flag) {
  if (flag && !flag->empty()) return *flag;
  const char* env = std::getenv("LIBVIRT_DEFAULT_URI");
  if (env && *env) return env;
  return kDefaultLibvirtUri;
}

std::unique_ptr<Hypervisor> connect_libvirt(const std::string& uri, const LibvirtOptions& options) {
  return std::make_unique<LibvirtHypervisor>(uri, options);
}

}  // namespace llmorch::orch
