// An in-memory Hypervisor for unit tests: domains are ManagedDomain values; levers change them and are
// recorded; a VM name in `fail_on` makes every lever on that VM throw; `fail_if` (fault injection) makes
// a lever throw when it returns true for the call's text ("pin_vcpu b 1 2"; "domain_stats" for the
// statistics read); `down` makes every call
// throw a connection error. `caps` is what capabilities_xml() returns. hang(vm) models a QEMU that
// stopped answering (SIGSTOP): its levers block, and so does the first statistics read (it takes the
// VM's job), while later reads skip it (NOWAIT) and its control info says Occupied; release(vm) lets the
// blocked calls return with an error, changing nothing. Calls run on BoundedCalls' worker threads:
// state a blocked call could touch late is behind hang_mu_.
// define_and_start keeps the XML in `defined` and adds the running domain its metadata and live values
// describe; destroy_and_undefine_uuid removes a domain and records its name in `removed`. `unmanaged`
// are names of domains without llmorch metadata (domain_exists sees them, list_managed does not);
// `after_find` runs after each find_managed (another process changing the host meanwhile).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "llmorch/orch/hypervisor.h"

namespace llmorch::orch::testing {

class FakeHypervisor : public Hypervisor {
  std::mutex hang_mu_;
  std::condition_variable hang_cv_;
  std::set<std::string> hung_;                                          // hang(): their QEMU stopped
  std::map<std::string, std::chrono::steady_clock::time_point> stuck_;  // a call blocked in it since

 public:
  std::vector<ManagedDomain> domains;
  std::vector<std::string> calls;  // "set_cpu_shares a 1456", "pin_vcpu a 0 4", ...
  std::set<std::string> fail_on;
  std::function<bool(const std::string& call)> fail_if;
  std::string caps = "<capabilities/>";
  bool down = false;
  int list_calls = 0;
  LifecycleCallback callback;
  std::map<std::string, MemoryStats> memory;  // balloon stats by VM; set_memory_mib moves actual_kib
  std::map<policy::NodeId, std::uint64_t> free_mib{{0, 1024}};
  std::vector<std::string> defined;  // XML passed to define_and_start
  std::vector<std::string> removed;  // names of the domains destroy_and_undefine(_uuid) removed
  std::set<std::string> unmanaged;
  std::function<void()> after_find;
  int defines = 0;

  ManagedDomain& dom(const std::string& name) {
    for (auto& d : domains)
      if (d.name == name) return d;
    throw HypervisorError(HypervisorError::Kind::NoDomain, "lookup " + name, "no such domain", "");
  }

  std::string capabilities_xml() override {
    check();
    return caps;
  }
  std::map<policy::NodeId, std::uint64_t> free_memory_mib() override { return free_mib; }
  std::vector<ManagedDomain> list_managed(std::string_view name_prefix = {}) override {
    check();
    ++list_calls;
    std::vector<ManagedDomain> out;
    for (const auto& d : domains)
      if (d.name.starts_with(name_prefix)) out.push_back(d);
    return out;
  }
  std::optional<ManagedDomain> find_managed(const std::string& name) override {
    check();
    std::optional<ManagedDomain> found;
    for (auto& d : domains)
      if (d.name == name) found = d;
    if (after_find) {
      const auto hook = after_find;  // the hook may replace itself
      hook();
    }
    return found;
  }
  bool domain_exists(const std::string& name) override { return find_managed(name) || unmanaged.count(name); }
  void define_and_start(const std::string& xml) override {
    check();
    calls.push_back("define_and_start");
    const auto facts = parse_metadata(xml);
    if (!facts) throw HypervisorError(HypervisorError::Kind::InvalidArgument, "define", "no llmorch metadata", "");
    const LiveDomainXml live = parse_live_domain_xml(xml);
    defined.push_back(xml);
    ManagedDomain d;
    d.name = facts->placement.name;
    d.uuid = "00000000-0000-0000-0000-" + std::to_string(100000000000 + ++defines);
    d.state = DomainState::Running;
    d.facts = *facts;
    d.vcpus_current = live.vcpus_current;
    d.vcpus_max = live.vcpus_max;
    for (const auto& [vcpu, cpus] : live.vcpu_pins) {
      if (d.vcpu_pins.size() <= static_cast<std::size_t>(vcpu)) d.vcpu_pins.resize(static_cast<std::size_t>(vcpu) + 1);
      d.vcpu_pins[static_cast<std::size_t>(vcpu)] = cpus;
    }
    d.emulator_pins = live.emulator_pins;
    d.cpu_shares = live.cpu_shares;
    d.memory_actual_kib = facts->memory_mib * 1024;
    d.memory_max_kib = facts->max_memory_mib * 1024;
    domains.push_back(d);
  }
  bool destroy_and_undefine_uuid(const std::string& uuid) override {
    check();
    calls.push_back("destroy_and_undefine_uuid " + uuid);
    for (const auto& d : domains)
      if (d.uuid == uuid) removed.push_back(d.name);
    return std::erase_if(domains, [&](const ManagedDomain& d) { return d.uuid == uuid; }) > 0;
  }
  void set_cpu_shares(const std::string& name, std::uint64_t shares, Scope scope) override {
    lever(name, "set_cpu_shares " + name + " " + std::to_string(shares) + (scope == Scope::LiveOnly ? " live" : ""));
    dom(name).cpu_shares = shares;
  }
  void pin_vcpu(const std::string& name, int vcpu, const std::vector<policy::CpuId>& cpus) override {
    std::string c;
    for (auto cpu : cpus) c += (c.empty() ? "" : ",") + std::to_string(cpu);
    lever(name, "pin_vcpu " + name + " " + std::to_string(vcpu) + " " + c);
    auto& pins = dom(name).vcpu_pins;
    if (pins.size() <= static_cast<std::size_t>(vcpu)) pins.resize(static_cast<std::size_t>(vcpu) + 1);
    pins[static_cast<std::size_t>(vcpu)] = cpus;
  }
  void pin_emulator(const std::string& name, const std::vector<policy::CpuId>& cpus) override {
    std::string c;
    for (auto cpu : cpus) c += (c.empty() ? "" : ",") + std::to_string(cpu);
    lever(name, "pin_emulator " + name + " " + c);
    dom(name).emulator_pins = cpus;
  }
  void set_vcpus(const std::string& name, int count) override {
    lever(name, "set_vcpus " + name + " " + std::to_string(count));
    dom(name).vcpus_current = count;
  }
  void set_memory_mib(const std::string& name, std::uint64_t mib) override {
    lever(name, "set_memory_mib " + name + " " + std::to_string(mib));
    dom(name).memory_actual_kib = mib * 1024;
    if (memory.count(name)) memory[name].actual_kib = mib * 1024;
  }
  void set_metadata(const std::string& name, const VmFacts& facts) override {
    lever(name, "set_metadata " + name);
    dom(name).facts = facts;
  }
  std::map<std::string, DomainStats> domain_stats() override {
    check();
    if (fail_if && fail_if("domain_stats"))
      throw HypervisorError(HypervisorError::Kind::Other, "domain_stats", "injected failure", "");
    std::map<std::string, DomainStats> out;
    for (const auto& d : domains) {
      if (!d.active()) continue;
      DomainStats& st = out[d.name];
      auto it = memory.find(d.name);
      if (it != memory.end()) st.memory = it->second;
      st.memory.actual_kib = st.memory.actual_kib.value_or(d.memory_actual_kib);
      st.memory_complete = true;
    }
    std::unique_lock lock(hang_mu_);
    const std::vector<std::string> hung(hung_.begin(), hung_.end());  // release() changes hung_ meanwhile
    for (const auto& vm : hung) {
      if (!out.count(vm)) continue;
      if (stuck_.count(vm)) {
        MemoryStats skipped;  // its job is held: only what needs no job
        skipped.actual_kib = out[vm].memory.actual_kib;
        out[vm].memory = skipped;
        out[vm].memory_complete = false;
      } else {
        block(lock, vm);  // takes its job and waits on its QEMU
      }
    }
    return out;
  }
  ControlInfo control_info(const std::string& name) override {
    check();
    std::lock_guard lock(hang_mu_);
    auto it = stuck_.find(name);
    if (it == stuck_.end()) return {};
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                          it->second);
    return {ControlState::Occupied, static_cast<std::uint64_t>(ms.count())};
  }
  void hang(const std::string& vm) {
    std::lock_guard lock(hang_mu_);
    hung_.insert(vm);
  }
  void release(const std::string& vm) {
    {
      std::lock_guard lock(hang_mu_);
      hung_.erase(vm);
    }
    hang_cv_.notify_all();
  }
  // Waits (up to 5 s) until no call is blocked in `vm` any more.
  bool wait_unstuck(const std::string& vm) {
    std::unique_lock lock(hang_mu_);
    return hang_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return !stuck_.count(vm); });
  }
  int blocked_calls() {
    std::lock_guard lock(hang_mu_);
    return static_cast<int>(stuck_.size());
  }
  void set_lifecycle_callback(LifecycleCallback cb) override { callback = std::move(cb); }
  void ensure_connected() override { check(); }

 private:
  void check() const {
    if (down) throw HypervisorError(HypervisorError::Kind::Connection, "connect", "libvirtd is gone", "start it");
  }
  // Blocks while vm hangs; then throws, as a call that failed late (the caller stopped waiting).
  // vm by value: release() erases the name from hung_, where a caller's reference may point.
  void block(std::unique_lock<std::mutex>& lock, const std::string vm) {
    stuck_.emplace(vm, std::chrono::steady_clock::now());
    hang_cv_.wait(lock, [&] { return !hung_.count(vm); });
    stuck_.erase(vm);
    hang_cv_.notify_all();
    throw HypervisorError(HypervisorError::Kind::Other, "call on " + vm, "QEMU answered late", "");
  }
  void lever(const std::string& name, std::string call) {
    check();
    {
      std::unique_lock lock(hang_mu_);
      if (hung_.count(name)) block(lock, name);
    }
    if (fail_on.count(name) || (fail_if && fail_if(call)))
      throw HypervisorError(HypervisorError::Kind::Other, call, "injected failure", "");
    calls.push_back(std::move(call));
  }
};

// A running managed domain; shared placement over `pool` unless dedicated CPUs are given.
inline ManagedDomain make_domain(const std::string& name, double priority, std::vector<policy::CpuId> cpus,
                                 policy::CpuPolicy policy = policy::CpuPolicy::Shared, int vcpus = 1,
                                 int max_vcpus = 1) {
  ManagedDomain d;
  d.name = name;
  d.uuid = "uuid-" + name;
  d.state = DomainState::Running;
  d.facts.priority = priority;
  d.facts.priority_min = 1;
  d.facts.priority_max = 10;
  d.facts.vcpus = vcpus;
  d.facts.max_vcpus = max_vcpus;
  d.facts.placement.name = name;
  d.facts.placement.nodes = {0};
  d.facts.placement.cpus = cpus;
  d.facts.placement.cpu_policy = policy;
  d.facts.placement.vcpus = max_vcpus;
  d.vcpus_current = vcpus;
  d.vcpus_max = max_vcpus;
  d.cpu_shares = 1024;
  d.emulator_pins = cpus;
  for (int i = 0; i < max_vcpus; ++i)
    d.vcpu_pins.push_back(policy == policy::CpuPolicy::Dedicated
                              ? std::vector<policy::CpuId>{cpus.at(static_cast<std::size_t>(i))}
                              : cpus);
  return d;
}

}  // namespace llmorch::orch::testing
