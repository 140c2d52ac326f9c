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

void on_close(virConnectPtr, int, void* opaque) { **static_cast<std::shared_ptr<std::atomic<bool>>*>(opaque) = true; }

void free_state_ref(void* opaque) { delete static_cast<std::shared_ptr<EventState>*>(opaque); }

// One open connection and its registrations. Each call holds a reference for its duration, so a
// reconnect never closes a connection under a call still running (or stuck) on another thread: the
// last reference closes it.
struct Connection {
  virConnectPtr ptr = nullptr;
  int lifecycle_id = -1;
  bool close_registered = false;
  std::shared_ptr<std::atomic<bool>> closed = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<std::shared_ptr<std::atomic<bool>>> close_ref;  // on_close's opaque while registered

  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (!ptr) return;
    if (lifecycle_id >= 0) virConnectDomainEventDeregisterAny(ptr, lifecycle_id);
    if (close_registered) virConnectUnregisterCloseCallback(ptr, on_close);
    virConnectClose(ptr);
    virResetLastError();
  }
  bool alive() const { return !*closed && virConnectIsAlive(ptr) == 1; }
};

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
    conn_ = open();
  }

  std::string capabilities_xml() override {
    const auto c = conn();
    CString caps(virConnectGetCapabilities(c->ptr));
    if (!caps) throw last_error("cannot read the host capabilities from " + uri_);
    return caps.get();
  }

  std::map<policy::NodeId, std::uint64_t> free_memory_mib() override {
    const auto c = conn();
    CString caps(virConnectGetCapabilities(c->ptr));
    if (!caps) throw last_error("cannot read the host capabilities from " + uri_);
    std::map<policy::NodeId, std::uint64_t> out;
    for (policy::NodeId id : node_ids_from_capabilities(caps.get())) {
      unsigned long long free_bytes = 0;
      if (virNodeGetCellsFreeMemory(c->ptr, &free_bytes, id, 1) == 1) {
        out[id] = free_bytes / (1024 * 1024);
        continue;
      }
      auto fallback = is_local_uri(uri_) ? numa_free_mib(id) : std::nullopt;
      if (!fallback) throw last_error("cannot read the free memory of NUMA node " + std::to_string(id));
      out[id] = *fallback;
    }
    return out;
  }

  std::vector<ManagedDomain> list_managed(std::string_view name_prefix = {}) override {
    const auto c = conn();
    virDomainPtr* doms = nullptr;
    int n = virConnectListAllDomains(c->ptr, &doms, 0);
    if (n < 0) throw last_error("cannot list the domains on " + uri_);
    std::vector<Domain> owned(doms, doms + n);
    std::free(doms);
    std::vector<ManagedDomain> out;
    std::optional<HostConstants> host;  // read once per listing, not once per domain (a round trip each)
    for (auto& d : owned) {
      // The name came with the listing: checking it costs no round trip.
      if (!std::string_view(virDomainGetName(d.get())).starts_with(name_prefix)) continue;
      if (!host) host = HostConstants{.cpus = host_cpu_count(c->ptr)};
      if (auto m = describe_listed(c->ptr, d.get(), *host)) out.push_back(std::move(*m));
    }
    return out;
  }

  std::optional<ManagedDomain> find_managed(const std::string& name) override {
    const auto c = conn();
    Domain d(virDomainLookupByName(c->ptr, name.c_str()));
    if (!d) {
      if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return std::nullopt;
      throw last_error("cannot look up domain '" + name + "'");
    }
    HostConstants host{.cpus = host_cpu_count(c->ptr)};
    return describe(d.get(), host);
  }

  bool domain_exists(const std::string& name) override {
    const auto c = conn();
    Domain d(virDomainLookupByName(c->ptr, name.c_str()));
    if (d) return true;
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return false;
    throw last_error("cannot look up domain '" + name + "'");
  }

  void define_and_start(const std::string& xml) override {
    const auto c = conn();
    const std::string name = domain_name(xml);
    if (Domain existing{virDomainLookupByName(c->ptr, name.c_str())})
      throw HypervisorError(Kind::InvalidArgument, "cannot define domain '" + name + "'",
                            "a domain with that name exists", "pick another name or remove it first");
    virResetLastError();
    Domain d(virDomainDefineXMLFlags(c->ptr, xml.c_str(), VIR_DOMAIN_DEFINE_VALIDATE));
    if (!d) throw last_error("libvirt rejected the definition of domain '" + name + "'");
    if (virDomainCreate(d.get()) < 0) {
      const std::string log = "QEMU's log is /var/log/libvirt/qemu/" + name + ".log";
      HypervisorError err = last_error("cannot start domain '" + name + "'",
                                       "its definition was removed again; " + log);
      if (undefine(d.get()) || virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) throw err;
      // Say so when the roll-back failed too: the domain is still defined, and the caller must know.
      const std::string undefine_message = virGetLastErrorMessage();
      throw HypervisorError(err.kind(), "cannot start domain '" + name + "'", err.libvirt_message(),
                            "removing its definition again failed too (" + undefine_message +
                                "), so it is still defined, shut off: remove it with 'llmorch remove " + name +
                                "' or 'virsh undefine " + name + "'; " + log);
    }
  }

  bool destroy_and_undefine_uuid(const std::string& uuid) override {
    const auto c = conn();
    Domain d(virDomainLookupByUUIDString(c->ptr, uuid.c_str()));
    if (!d) {
      const int code = virGetLastErrorCode();
      if (code == VIR_ERR_NO_DOMAIN) return false;
      if (code == VIR_ERR_INVALID_ARG)
        throw HypervisorError(Kind::InvalidArgument, "cannot look up domain " + uuid, "not a UUID",
                              "pass the uuid that list_managed/find_managed reported");
      throw last_error("cannot look up domain " + uuid);
    }
    destroy_and_undefine_domain(d.get(), std::string("domain '") + virDomainGetName(d.get()) + "' (" + uuid + ")");
    return true;
  }

  void set_cpu_shares(const std::string& name, std::uint64_t shares, Scope scope) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    virTypedParameterPtr params = nullptr;
    int n = 0, max = 0;
    virTypedParamsAddULLong(&params, &n, &max, VIR_DOMAIN_SCHEDULER_CPU_SHARES, shares);
    const unsigned int flags = scope == Scope::LiveOnly ? static_cast<unsigned int>(VIR_DOMAIN_AFFECT_LIVE)
                                                        : live_and_config(d.get());
    int rc = virDomainSetSchedulerParametersFlags(d.get(), params, n, flags);
    virTypedParamsFree(params, n);
    if (rc < 0) throw last_error("cannot set cpu_shares of domain '" + name + "' to " + std::to_string(shares));
  }

  void pin_vcpu(const std::string& name, int vcpu, const std::vector<policy::CpuId>& cpus) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    auto map = cpumap(c->ptr, cpus);
    if (virDomainPinVcpuFlags(d.get(), vcpu, map.data(), map.size(), live_and_config(d.get())) < 0)
      throw last_error("cannot pin vCPU " + std::to_string(vcpu) + " of domain '" + name + "'");
  }

  void pin_emulator(const std::string& name, const std::vector<policy::CpuId>& cpus) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    auto map = cpumap(c->ptr, cpus);
    if (virDomainPinEmulator(d.get(), map.data(), map.size(), live_and_config(d.get())) < 0)
      throw last_error("cannot pin the emulator threads of domain '" + name + "'");
  }

  void set_vcpus(const std::string& name, int count) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    if (virDomainSetVcpusFlags(d.get(), count, live_and_config(d.get())) < 0)
      throw last_error("cannot set the vCPU count of domain '" + name + "' to " + std::to_string(count),
                       "the count must lie within 1 and the domain's maximum");
  }

  void set_memory_mib(const std::string& name, std::uint64_t mib) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    if (virDomainSetMemoryFlags(d.get(), mib * 1024, VIR_DOMAIN_AFFECT_LIVE) < 0)
      throw last_error("cannot set the balloon of domain '" + name + "' to " + std::to_string(mib) + " MiB",
                       "the domain must be running and the size at most its maximum memory");
  }

  void set_metadata(const std::string& name, const VmFacts& facts) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    const std::string fragment = render_metadata_body(facts);
    if (virDomainSetMetadata(d.get(), VIR_DOMAIN_METADATA_ELEMENT, fragment.c_str(), kMetadataPrefix,
                             kMetadataNamespace, live_and_config(d.get())) < 0)
      throw last_error("cannot store llmorch metadata in domain '" + name + "'");
  }

  std::map<std::string, DomainStats> domain_stats() override {
    const auto c = conn();
    virDomainStatsRecordPtr* records = nullptr;
    const unsigned stats = VIR_DOMAIN_STATS_CPU_TOTAL | VIR_DOMAIN_STATS_BALLOON | VIR_DOMAIN_STATS_VCPU;
    // NOWAIT: a domain whose job is held (a call stuck in its monitor) is not waited for; it gets only
    // what needs no job.
    const int n = virConnectGetAllDomainStats(
        c->ptr, stats, &records, VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT);
    if (n < 0) throw last_error("cannot read the domains' statistics on " + uri_);
    std::map<std::string, DomainStats> out;
    for (int i = 0; i < n; ++i) {
      const virDomainStatsRecord& r = *records[i];
      DomainStats& d = out[virDomainGetName(r.dom)];
      auto ull = [&](const char* key) -> std::optional<std::uint64_t> {
        unsigned long long v = 0;
        if (virTypedParamsGetULLong(r.params, r.nparams, key, &v) == 1) return v;
        return std::nullopt;
      };
      d.cpu.total_ns = ull("cpu.time").value_or(0);
      unsigned int current = 0;
      virTypedParamsGetUInt(r.params, r.nparams, "vcpu.current", &current);
      for (unsigned int v = 0; v < current; ++v)
        d.cpu.vcpu_ns.push_back(ull(("vcpu." + std::to_string(v) + ".time").c_str()).value_or(0));
      MemoryStats& m = d.memory;
      m.actual_kib = ull("balloon.current");
      m.unused_kib = ull("balloon.unused");
      m.available_kib = ull("balloon.available");
      m.usable_kib = ull("balloon.usable");
      m.swap_in_kib = ull("balloon.swap_in");
      m.swap_out_kib = ull("balloon.swap_out");
      m.major_faults = ull("balloon.major_fault");
      m.minor_faults = ull("balloon.minor_fault");
      m.rss_kib = ull("balloon.rss");
      m.last_update_s = ull("balloon.last-update");
      // rss comes with the part that needs the job (QEMU's balloon query); skipped when it was busy.
      d.memory_complete = m.rss_kib.has_value() || m.last_update_s.has_value();
    }
    virDomainStatsRecordListFree(records);
    return out;
  }

  ControlInfo control_info(const std::string& name) override {
    const auto c = conn();
    Domain d = lookup(c->ptr, name);
    virDomainControlInfo info{};
    if (virDomainGetControlInfo(d.get(), &info, 0) < 0)
      throw last_error("cannot read the control state of domain '" + name + "'");
    ControlInfo out;
    switch (info.state) {
      case VIR_DOMAIN_CONTROL_JOB: out.state = ControlState::Job; break;
      case VIR_DOMAIN_CONTROL_OCCUPIED: out.state = ControlState::Occupied; break;
      case VIR_DOMAIN_CONTROL_ERROR: out.state = ControlState::Error; break;
      default: out.state = ControlState::Ok; break;
    }
    out.for_ms = out.state == ControlState::Ok ? 0 : info.stateTime;
    return out;
  }

  void set_lifecycle_callback(LifecycleCallback cb) override {
    std::lock_guard lock(events_->mu);
    events_->callback = std::move(cb);
  }

  void abandon_connection() override {
    std::lock_guard lock(mu_);
    if (conn_) abandoned_ = true;
    conn_.reset();
  }

  bool alive() {
    std::shared_ptr<Connection> c;
    {
      std::lock_guard lock(mu_);
      c = conn_;
    }
    return c && c->alive();
  }

  void ensure_connected() override {
    std::lock_guard reconnecting(reconnect_mu_);  // one reconnect at a time
    if (alive()) return;
    {
      std::lock_guard lock(mu_);
      conn_.reset();  // ours; a call still running on another thread keeps its own reference
      abandoned_ = false;
    }
    const auto deadline = std::chrono::steady_clock::now() + options_.reconnect_timeout;
    auto backoff = options_.initial_backoff;
    for (;;) {
      try {
        auto fresh = open();
        std::lock_guard lock(mu_);
        conn_ = std::move(fresh);
        return;
      } catch (const HypervisorError&) {
        if (std::chrono::steady_clock::now() + backoff > deadline) throw;
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
  }

 private:
  // --- connection ---

  // The connection for one call. Calls run concurrently (and may be stuck in a QEMU that stopped
  // answering): none holds a lock while it is in libvirt, only its reference to the connection.
  std::shared_ptr<Connection> conn() {
    std::lock_guard lock(mu_);
    if (!conn_ && abandoned_) {
      conn_ = open();  // throws when libvirtd is gone; the caller's error then says so
      abandoned_ = false;
    }
    if (!conn_)
      throw HypervisorError(Kind::Connection, "not connected to " + uri_, "the last reconnect failed", kConnectHint);
    return conn_;
  }

  std::shared_ptr<Connection> open() {
    auto c = std::make_shared<Connection>();
    c->ptr = virConnectOpen(uri_.c_str());
    if (!c->ptr) {
      HypervisorError e = last_error("cannot connect to " + uri_, kConnectHint);
      throw HypervisorError(Kind::Connection, "cannot connect to " + uri_, e.libvirt_message(), kConnectHint);
    }
    // Keepalive and the close callback let alive() notice a libvirtd that went away. Drivers without
    // a daemon (test:///) refuse both; that is fine.
    virConnectSetKeepAlive(c->ptr, 5, 3);
    // The close callback's ref is ours, freed after unregistering: drivers without close callbacks
    // (test:///) accept the registration but never call a free function (a leak).
    c->close_ref = std::make_unique<std::shared_ptr<std::atomic<bool>>>(c->closed);
    c->close_registered = virConnectRegisterCloseCallback(c->ptr, on_close, c->close_ref.get(), nullptr) == 0;
    auto* event_ref = new std::shared_ptr<EventState>(events_);
    c->lifecycle_id = virConnectDomainEventRegisterAny(c->ptr, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                       VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), event_ref,
                                                       free_state_ref);
    if (c->lifecycle_id < 0) {
      delete event_ref;
      throw last_error("cannot subscribe to domain events on " + uri_);  // ~Connection closes it
    }
    virResetLastError();
    return c;
  }

  // --- domains ---

  static Domain lookup(virConnectPtr conn, const std::string& name) {
    Domain d(virDomainLookupByName(conn, name.c_str()));
    if (!d) throw last_error("cannot find domain '" + name + "'", "check the name with `llmorch list`");
    return d;
  }

  // Stops the domain if it runs and removes its definition. `what` names it in errors.
  static void destroy_and_undefine_domain(virDomainPtr d, const std::string& what) {
    // A domain that stopped on its own meanwhile makes destroy fail with "not running": fine.
    if (virDomainIsActive(d) == 1 && virDomainDestroy(d) < 0 && virGetLastErrorCode() != VIR_ERR_OPERATION_INVALID)
      throw last_error("cannot stop " + what);
    if (virDomainIsPersistent(d) == 1 && !undefine(d) && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN)
      throw last_error("cannot undefine " + what);
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

  static int host_cpu_count(virConnectPtr conn) {
    int n = virNodeGetCPUMap(conn, nullptr, nullptr, 0);
    if (n > 0) return n;
    virNodeInfo info;
    if (virNodeGetInfo(conn, &info) < 0) throw last_error("cannot read the host's CPU count");
    return static_cast<int>(info.cpus);
  }

  static std::vector<unsigned char> cpumap(virConnectPtr conn, const std::vector<policy::CpuId>& cpus) {
    const int ncpus = host_cpu_count(conn);
    std::vector<unsigned char> map(VIR_CPU_MAPLEN(ncpus), 0);
    if (cpus.empty())
      throw HypervisorError(Kind::InvalidArgument, "cannot pin", "empty CPU set", "name at least one CPU");
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
  // What describe() needs of the host, the same for every domain: read once for a whole listing.
  struct HostConstants {
    int cpus = 0;              // host_cpu_count()
    int scheduler_params = 0;  // virDomainGetSchedulerType's count, once one domain has answered (0: not yet)
  };

  static std::optional<ManagedDomain> describe_listed(virConnectPtr conn, virDomainPtr d, HostConstants& host) {
    try {
      return describe(d, host);
    } catch (const HypervisorError& e) {
      if (e.kind() == Kind::Connection) throw;
      if (!still_defined(conn, d)) return std::nullopt;
    }
    try {
      return describe(d, host);
    } catch (const HypervisorError& e) {
      if (e.kind() == Kind::Connection || still_defined(conn, d)) throw;
      return std::nullopt;
    }
  }

  // Whether libvirt still knows the domain (by UUID, so a new domain of the same name does not count).
  static bool still_defined(virConnectPtr conn, virDomainPtr d) {
    unsigned char uuid[VIR_UUID_BUFLEN];
    if (virDomainGetUUID(d, uuid) < 0) return false;
    Domain again(virDomainLookupByUUID(conn, uuid));
    if (again) return true;
    if (virGetLastErrorCode() == VIR_ERR_NO_DOMAIN) return false;
    throw last_error("cannot look up a listed domain again");
  }

  static std::optional<ManagedDomain> describe(virDomainPtr d, HostConstants& host) {
    CString xml(virDomainGetXMLDesc(d, 0));
    if (!xml) throw last_error(std::string("cannot read the XML of domain '") + virDomainGetName(d) + "'");
    auto metadata = read_metadata(xml.get());
    if (!metadata) return std::nullopt;
    ManagedDomain m;
    m.name = virDomainGetName(d);
    char uuid[VIR_UUID_STRING_BUFLEN];
    if (virDomainGetUUIDString(d, uuid) == 0) m.uuid = uuid;
    virDomainInfo info;
    if (virDomainGetInfo(d, &info) < 0) throw last_error("cannot read the state of domain '" + m.name + "'");
    m.state = map_state(info.state);
    if (!metadata->facts) {  // llmorch's, but unusable: name, uuid and state only (hypervisor.h)
      m.metadata_error = metadata->error;
      return m;
    }
    m.facts = std::move(*metadata->facts);
    m.memory_actual_kib = info.memory;
    m.memory_max_kib = info.maxMem;
    LiveDomainXml live = parse_live_domain_xml(xml.get());
    m.vcpus_current = live.vcpus_current;
    m.vcpus_max = live.vcpus_max;
    m.channel_path = m.active() ? live.channel_path : "";
    auto pins = effective_vcpu_pins(live, host.cpus);  // from the XML: no round trip, but for placement 'auto'
    m.vcpu_pins = pins ? std::move(*pins) : vcpu_pins(d, m.vcpus_max, host.cpus);
    m.emulator_pins = live.emulator_pins;
    // The live XML's <shares> is libvirt's own record of the cgroup value (read back when the domain
    // starts, updated by every change through libvirt): no round trip. Absent (never set) means ask.
    m.cpu_shares = live.cpu_shares ? live.cpu_shares : cpu_shares(d, m.cpu_shares_unreadable, host.scheduler_params);
    return m;
  }

  static std::vector<std::vector<policy::CpuId>> vcpu_pins(virDomainPtr d, int max_vcpus, int ncpus) {
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

  // Absent when the driver has no cpu_shares (e.g. the test driver's "weight"); `unreadable` when the
  // driver has a scheduler but the read failed (a domain libvirtd is still reconnecting to).
  // known_params: the driver's parameter count when another domain has given it (0: ask this one, and
  // remember its answer), which saves the scheduler-type round trip for every other domain.
  static std::optional<std::uint64_t> cpu_shares(virDomainPtr d, bool& unreadable, int& known_params) {
    unreadable = false;
    int n = known_params;
    if (n == 0) {
      CString type(virDomainGetSchedulerType(d, &n));
      if (!type) {
        const int code = virGetLastErrorCode();
        unreadable = code != VIR_ERR_NO_SUPPORT && code != VIR_ERR_OPERATION_UNSUPPORTED;
        virResetLastError();
        return std::nullopt;
      }
      known_params = n;
    }
    std::optional<std::uint64_t> out;
    if (n > 0) {
      std::vector<virTypedParameter> params(n);
      unsigned long long v = 0;
      if (virDomainGetSchedulerParametersFlags(d, params.data(), &n, 0) != 0) unreadable = true;
      else if (virTypedParamsGetULLong(params.data(), n, VIR_DOMAIN_SCHEDULER_CPU_SHARES, &v) == 1) out = v;
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
  std::mutex mu_;            // guards conn_ (the pointer, not the calls)
  std::mutex reconnect_mu_;  // one ensure_connected() at a time
  std::shared_ptr<Connection> conn_;
  bool abandoned_ = false;  // conn_ was dropped under a stuck call: the next call opens a fresh one
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
