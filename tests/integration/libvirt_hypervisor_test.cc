// The libvirt backend against a real libvirtd (qemu:///system, TCG guests of type 'qemu').
// Needs libvirtd running (tools/libvirtd-up; tools/test starts it). Every domain is named
// llmorch-it-<test>-<pid> and removed by a guard, and leftovers of this or dead test processes are
// removed before and after the suite, so ctest -j2 runs can share the daemon.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "remove_domain.h"

namespace llmorch::orch {
namespace {

constexpr const char* kSocket = "/var/run/libvirt/libvirt-sock";
constexpr const char* kUri = "qemu:///system";
constexpr const char* kPrefix = "llmorch-it-";
const std::string kGuestDir = "/var/lib/libvirt/images/llmorch";

std::string run(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    while (std::size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
  }
  return out;
}

std::string virsh(const std::string& args) { return run(std::string("virsh -q -c ") + kUri + " " + args + " 2>&1"); }

// Removes llmorch-it-*-PID domains whose PID is this process or a process that no longer exists.
void remove_leftovers(Hypervisor& hv) {
  std::istringstream names(virsh("list --all --name"));
  for (std::string name; std::getline(names, name);) {
    if (name.rfind(kPrefix, 0) != 0) continue;
    pid_t pid = std::atoi(name.substr(name.rfind('-') + 1).c_str());
    if (pid != getpid() && !(pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)) continue;
    virsh("destroy " + name);  // not running: says so, harmless
    const std::string out = virsh("undefine " + name);
    if (out.find("undefined") == std::string::npos)
      ADD_FAILURE() << "cannot remove leftover domain " << name << ": " << out;
    (void)hv;
  }
}

struct DomainGuard {
  Hypervisor& hv;
  std::string name;
  ~DomainGuard() {
    try {
      remove_domain_named(hv, name);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cleanup of " << name << " failed: " << e.what();
    }
  }
};

class LibvirtIntegration : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kSocket)) return;  // each test fails with the message below
    hv_ = connect_libvirt(kUri).release();
    remove_leftovers(*hv_);
  }
  static void TearDownTestSuite() {
    if (!hv_) return;
    remove_leftovers(*hv_);
    delete hv_;
    hv_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kSocket))
        << kSocket << " is missing: libvirtd is not running. Start it with tools/libvirtd-up "
        << "(tools/test does this) and rerun.";
    ASSERT_NE(hv_, nullptr);
  }

  static std::string unique_name(const std::string& what) { return kPrefix + what + "-" + std::to_string(getpid()); }

  // A one-to-two-vCPU TCG domain pinned to the host's CPUs; with `boot`, the test guest kernel.
  static DomainSpec small_spec(const std::string& name, bool boot = false) {
    DomainSpec s;
    s.name = name;
    s.template_path = "tests/integration/" + name + ".conf";
    s.domain_type = "qemu";
    s.cpu_shares = 1536;
    s.tmpl.vcpus = 1;
    s.tmpl.max_vcpus = 2;
    s.tmpl.memory_mib = 192;
    s.tmpl.max_memory_mib = 192;
    s.tmpl.memory_floor_mib = 64;
    s.tmpl.priority = 3;
    s.tmpl.priority_min = 1;
    s.tmpl.priority_max = 9;
    const int last = static_cast<int>(std::thread::hardware_concurrency()) - 1;
    s.placement = {.name = name,
                   .nodes = {0},
                   .cpus = {last, 0},
                   .memory_mib_per_node = {{0, 192}},
                   .cells = {{0, {0, 1}, 192}},
                   .cpu_policy = policy::CpuPolicy::Dedicated,
                   .hugepage_kib = 0,
                   .vcpus = 2};
    if (boot) {
      s.tmpl.kernel = kGuestDir + "/vmlinuz";
      s.tmpl.initrd = kGuestDir + "/initrd.gz";
      s.tmpl.kernel_args = "console=ttyS0 quiet";
    }
    return s;
  }

  ManagedDomain must_find(const std::string& name) {
    auto m = hv_->find_managed(name);
    if (!m) throw std::runtime_error("domain " + name + " is not listed as managed");
    return *m;
  }

  static Hypervisor* hv_;
};

Hypervisor* LibvirtIntegration::hv_ = nullptr;

TEST_F(LibvirtIntegration, HostCapabilitiesAndFreeMemory) {
  std::string caps = hv_->capabilities_xml();
  EXPECT_NE(caps.find("<capabilities>"), std::string::npos);
  auto free = hv_->free_memory_mib();
  ASSERT_FALSE(free.empty());
  EXPECT_GT(free.begin()->second, 64u);
  EXPECT_NO_THROW(hv_->ensure_connected());
}

TEST_F(LibvirtIntegration, DefineStartAndReadBack) {
  DomainSpec spec = small_spec(unique_name("readback"));
  DomainGuard guard{*hv_, spec.name};
  hv_->define_and_start(render_domain_xml(spec));

  ManagedDomain m = must_find(spec.name);
  EXPECT_EQ(m.state, DomainState::Running);
  EXPECT_EQ(m.uuid.size(), 36u);
  EXPECT_EQ(m.facts.template_path, spec.template_path);
  EXPECT_EQ(m.facts.priority, 3);
  EXPECT_EQ(m.facts.priority_max, 9);
  EXPECT_EQ(m.facts.memory_floor_mib, 64u);
  EXPECT_EQ(m.facts.placement.cpus, spec.placement.cpus);
  EXPECT_EQ(m.vcpus_current, 1);
  EXPECT_EQ(m.vcpus_max, 2);
  ASSERT_EQ(m.vcpu_pins.size(), 2u);
  EXPECT_EQ(m.vcpu_pins[0], std::vector<int>({spec.placement.cpus[0]}));
  EXPECT_EQ(m.vcpu_pins[1], std::vector<int>({0}));
  EXPECT_EQ(m.cpu_shares, 1536u);
  EXPECT_EQ(m.memory_max_kib, 192u * 1024);
  ASSERT_FALSE(m.channel_path.empty());
  EXPECT_TRUE(std::filesystem::is_socket(m.channel_path)) << m.channel_path;

  // Cross-check against virsh's view of the live XML.
  LiveDomainXml live = parse_live_domain_xml(virsh("dumpxml " + spec.name));
  EXPECT_EQ(live.vcpu_pins.at(0), m.vcpu_pins[0]);
  EXPECT_EQ(live.channel_path, m.channel_path);
  EXPECT_EQ(live.cpu_shares, 1536u);

  bool listed = false;
  for (const auto& d : hv_->list_managed()) listed |= d.name == spec.name;
  EXPECT_TRUE(listed);
}

TEST_F(LibvirtIntegration, LiveLevers) {
  DomainSpec spec = small_spec(unique_name("levers"));
  DomainGuard guard{*hv_, spec.name};
  hv_->define_and_start(render_domain_xml(spec));

  hv_->set_cpu_shares(spec.name, 3072, Hypervisor::Scope::LiveAndConfig);
  EXPECT_EQ(must_find(spec.name).cpu_shares, 3072u);
  EXPECT_NE(virsh("schedinfo " + spec.name).find("cpu_shares     : 3072"), std::string::npos);

  hv_->pin_vcpu(spec.name, 0, {0});
  EXPECT_EQ(must_find(spec.name).vcpu_pins.at(0), std::vector<int>({0}));
  // CONFIG too: the persistent definition keeps the new pin.
  EXPECT_EQ(parse_live_domain_xml(virsh("dumpxml --inactive " + spec.name)).vcpu_pins.at(0), std::vector<int>({0}));

  hv_->pin_emulator(spec.name, {0});
  EXPECT_EQ(parse_live_domain_xml(virsh("dumpxml " + spec.name)).emulator_pins, std::vector<int>({0}));

  hv_->set_vcpus(spec.name, 2);
  EXPECT_EQ(must_find(spec.name).vcpus_current, 2);
  EXPECT_EQ(hv_->domain_stats().at(spec.name).cpu.vcpu_ns.size(), 2u);

  VmFacts facts = must_find(spec.name).facts;
  facts.priority = 7.5;
  hv_->set_metadata(spec.name, facts);
  EXPECT_EQ(must_find(spec.name).facts.priority, 7.5);
  auto persisted = parse_metadata(virsh("dumpxml --inactive " + spec.name));
  ASSERT_TRUE(persisted.has_value());
  EXPECT_EQ(persisted->priority, 7.5);

  EXPECT_THROW(hv_->pin_vcpu(spec.name, 0, {4096}), HypervisorError);
  EXPECT_THROW(hv_->set_vcpus(spec.name, 3), HypervisorError);  // above max_vcpus
}

TEST_F(LibvirtIntegration, BalloonAndStatsOnABootedGuest) {
  ASSERT_TRUE(std::filesystem::exists(kGuestDir + "/vmlinuz"))
      << "the test guest is missing; build it with tools/build-test-guest";
  DomainSpec spec = small_spec(unique_name("balloon"), /*boot=*/true);
  DomainGuard guard{*hv_, spec.name};
  hv_->define_and_start(render_domain_xml(spec));

  // The guest needs a few seconds to load virtio_balloon; retry the target until it takes.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::uint64_t actual = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    hv_->set_memory_mib(spec.name, 160);
    actual = must_find(spec.name).memory_actual_kib;
    if (actual == 160u * 1024) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_EQ(actual, 160u * 1024);
  const auto all = hv_->domain_stats();  // one bulk call for every running domain
  ASSERT_TRUE(all.count(spec.name));
  const DomainStats& ds = all.at(spec.name);
  EXPECT_TRUE(ds.memory_complete);
  ASSERT_TRUE(ds.memory.actual_kib.has_value());
  EXPECT_EQ(*ds.memory.actual_kib, 160u * 1024);
  ASSERT_TRUE(ds.memory.rss_kib.has_value());
  EXPECT_GT(*ds.memory.rss_kib, 0u);
  EXPECT_GT(ds.cpu.total_ns, 0u);
  EXPECT_EQ(hv_->control_info(spec.name).state, ControlState::Ok);
  EXPECT_THROW(hv_->set_memory_mib(spec.name, 4096), HypervisorError);  // above the maximum
}

TEST_F(LibvirtIntegration, BadXmlIsRejectedAndLeavesNothing) {
  DomainSpec spec = small_spec(unique_name("badxml"));
  DomainGuard guard{*hv_, spec.name};
  std::string xml = render_domain_xml(spec);
  xml.replace(xml.find("<memory unit=\"MiB\">"), 19, "<memory unit=\"bogus\">");
  try {
    hv_->define_and_start(xml);
    FAIL() << "a bad memory unit was accepted";
  } catch (const HypervisorError& e) {
    EXPECT_FALSE(e.libvirt_message().empty());
  }
  EXPECT_FALSE(hv_->find_managed(spec.name).has_value());
  EXPECT_FALSE(remove_domain_named(*hv_, spec.name));
}

TEST_F(LibvirtIntegration, StartFailureRollsBack) {
  DomainSpec spec = small_spec(unique_name("nostart"));
  DomainGuard guard{*hv_, spec.name};
  spec.tmpl.kernel = "/nonexistent/llmorch/vmlinuz";  // defines fine, QEMU cannot start
  try {
    hv_->define_and_start(render_domain_xml(spec));
    FAIL() << "a domain with a missing kernel started";
  } catch (const HypervisorError& e) {
    EXPECT_NE(std::string(e.what()).find("definition was removed"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(hv_->find_managed(spec.name).has_value());
  EXPECT_NE(virsh("domstate " + spec.name).find("failed to get domain"), std::string::npos);
}

TEST_F(LibvirtIntegration, ExistingNameIsRefusedAndKept) {
  DomainSpec spec = small_spec(unique_name("dup"));
  DomainGuard guard{*hv_, spec.name};
  hv_->define_and_start(render_domain_xml(spec));
  spec.tmpl.priority = 5;
  EXPECT_THROW(hv_->define_and_start(render_domain_xml(spec)), HypervisorError);
  ManagedDomain m = must_find(spec.name);
  EXPECT_EQ(m.state, DomainState::Running);
  EXPECT_EQ(m.facts.priority, 3);  // the original, not the refused one
}

TEST_F(LibvirtIntegration, DestroyUndefineCleansUpAndEventsArrive) {
  DomainSpec spec = small_spec(unique_name("cleanup"));
  DomainGuard guard{*hv_, spec.name};
  std::mutex mu;
  std::vector<LifecycleEvent> seen;
  hv_->set_lifecycle_callback([&](const std::string& name, LifecycleEvent e) {
    std::lock_guard lock(mu);
    if (name == spec.name) seen.push_back(e);
  });
  hv_->define_and_start(render_domain_xml(spec));
  const std::string uuid = must_find(spec.name).uuid;
  ASSERT_TRUE(hv_->destroy_and_undefine_uuid(uuid));
  EXPECT_FALSE(hv_->find_managed(spec.name).has_value());
  EXPECT_FALSE(hv_->destroy_and_undefine_uuid(uuid));
  EXPECT_NE(virsh("domstate " + spec.name).find("failed to get domain"), std::string::npos);

  const std::vector<LifecycleEvent> expected = {LifecycleEvent::Defined, LifecycleEvent::Started,
                                                LifecycleEvent::Stopped, LifecycleEvent::Undefined};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(mu);
      if (seen.size() >= expected.size()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  hv_->set_lifecycle_callback({});
  // libvirt also reports Resumed (QEMU starts paused) and Shutdown around these; check the order of
  // the four that matter.
  std::lock_guard lock(mu);
  std::vector<std::string> got;
  for (auto e : seen) got.emplace_back(to_string(e));
  auto it = seen.begin();
  for (auto want : expected) {
    it = std::find(it, seen.end(), want);
    ASSERT_NE(it, seen.end()) << "no '" << to_string(want) << "' event in order; got " << testing::PrintToString(got);
  }
}

// Issue 11, finding 7: `llmorch remove` resolves the name once, to a UUID, and destroys by UUID: a domain
// of the same name defined since (another remove and place) is left alone.
TEST_F(LibvirtIntegration, DestroyByUuidLeavesANewDomainOfTheSameNameAlone) {
  DomainSpec spec = small_spec(unique_name("byuuid"));
  DomainGuard guard{*hv_, spec.name};
  hv_->define_and_start(render_domain_xml(spec));
  const std::string old_uuid = must_find(spec.name).uuid;
  ASSERT_TRUE(hv_->destroy_and_undefine_uuid(old_uuid));
  hv_->define_and_start(render_domain_xml(spec));  // the same name again: libvirt gives a new UUID
  const std::string new_uuid = must_find(spec.name).uuid;
  ASSERT_NE(new_uuid, old_uuid);

  EXPECT_FALSE(hv_->destroy_and_undefine_uuid(old_uuid));
  const ManagedDomain m = must_find(spec.name);
  EXPECT_EQ(m.uuid, new_uuid);
  EXPECT_EQ(m.state, DomainState::Running);

  EXPECT_TRUE(hv_->destroy_and_undefine_uuid(new_uuid));
  EXPECT_FALSE(hv_->find_managed(spec.name).has_value());
  EXPECT_NE(virsh("domstate " + spec.name).find("failed to get domain"), std::string::npos);
  EXPECT_FALSE(hv_->destroy_and_undefine_uuid(new_uuid));
  EXPECT_THROW(hv_->destroy_and_undefine_uuid("not-a-uuid"), HypervisorError);
}

// Issue 11, finding 4: llmorch metadata with a priority that is not one is listed as bad metadata (name,
// uuid and state known; facts not) instead of as a VM to plan, or as no VM at all.
TEST_F(LibvirtIntegration, BadMetadataIsListedAsSuchAndCanBeRemoved) {
  DomainSpec spec = small_spec(unique_name("badmeta"));
  DomainGuard guard{*hv_, spec.name};
  std::string xml = render_domain_xml(spec);
  const auto pos = xml.find("value=\"3\"");
  ASSERT_NE(pos, std::string::npos) << xml;
  xml.replace(pos, 9, "value=\"nan\"");
  hv_->define_and_start(xml);
  const ManagedDomain m = must_find(spec.name);
  ASSERT_TRUE(m.metadata_error.has_value());
  EXPECT_NE(m.metadata_error->find("bad metadata: priority (nan)"), std::string::npos) << *m.metadata_error;
  EXPECT_EQ(m.state, DomainState::Running);
  EXPECT_EQ(m.uuid.size(), 36u);
  bool listed = false;
  for (const auto& d : hv_->list_managed()) listed |= d.name == spec.name && d.metadata_error.has_value();
  EXPECT_TRUE(listed);
  EXPECT_TRUE(hv_->destroy_and_undefine_uuid(m.uuid));
  EXPECT_FALSE(hv_->find_managed(spec.name).has_value());
}

// libvirtd dropping the connection (as on a daemon restart), simulated with virt-admin so that other
// test processes keep theirs: alive() notices, ensure_connected() reconnects.
std::vector<std::string> clients_of_this_process() {
  std::vector<std::string> ids;
  std::istringstream list(run("virt-admin srv-clients-list libvirtd 2>&1"));
  std::string line;
  for (int skip = 0; skip < 2 && std::getline(list, line); ++skip) {
  }
  while (std::getline(list, line)) {
    std::istringstream fields(line);
    std::string id;
    if (!(fields >> id)) continue;
    const std::string info = run("virt-admin client-info libvirtd " + id + " 2>&1");
    if (info.find("unix_process_id: " + std::to_string(getpid()) + "\n") != std::string::npos) ids.push_back(id);
  }
  return ids;
}

TEST_F(LibvirtIntegration, ReconnectsAfterTheDaemonDropsTheConnection) {
  auto ids = clients_of_this_process();
  ASSERT_FALSE(ids.empty()) << "virt-admin lists no client for this process";
  for (const auto& id : ids) run("virt-admin client-disconnect libvirtd " + id + " 2>&1");

  // The disconnect reaches the client asynchronously: list until a call fails, as a connection error.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool dropped = false;
  while (!dropped && std::chrono::steady_clock::now() < deadline) {
    try {
      hv_->list_managed();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } catch (const HypervisorError& e) {
      EXPECT_EQ(e.kind(), HypervisorError::Kind::Connection) << e.what();
      dropped = true;
    }
  }
  ASSERT_TRUE(dropped) << "listing on a dropped connection kept succeeding for 5 s";
  hv_->ensure_connected();
  EXPECT_NO_THROW(hv_->list_managed());
}

}  // namespace
}  // namespace llmorch::orch
