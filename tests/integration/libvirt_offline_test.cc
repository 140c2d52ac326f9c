// The libvirt backend without a daemon: URI resolution, connection errors, and libvirt's built-in
// test driver (test:///default: 2 NUMA cells, no cpu_shares lever). Labelled `unit`: it needs no libvirtd.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/libvirt_hypervisor.h"
#include "remove_domain.h"

namespace llmorch::orch {
namespace {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { old_ ? setenv(name_, old_->c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ResolveUri, FlagThenEnvironmentThenSystem) {
  {
    ScopedEnv env("LIBVIRT_DEFAULT_URI", nullptr);
    EXPECT_EQ(resolve_uri(std::nullopt), "qemu:///system");
    EXPECT_EQ(resolve_uri(std::string()), "qemu:///system");
    EXPECT_EQ(resolve_uri(std::string("test:///default")), "test:///default");
  }
  ScopedEnv env("LIBVIRT_DEFAULT_URI", "qemu:///session");
  EXPECT_EQ(resolve_uri(std::nullopt), "qemu:///session");
  EXPECT_EQ(resolve_uri(std::string("qemu+ssh://host/system")), "qemu+ssh://host/system");
}

TEST(LibvirtConnect, UnreachableDaemonIsAConnectionErrorWithAHint) {
  try {
    connect_libvirt("qemu+unix:///system?socket=/nonexistent/llmorch.sock");
    FAIL() << "connected to a socket that does not exist";
  } catch (const HypervisorError& e) {
    EXPECT_EQ(e.kind(), HypervisorError::Kind::Connection);
    EXPECT_NE(std::string(e.what()).find("libvirtd"), std::string::npos) << e.what();
    EXPECT_FALSE(e.libvirt_message().empty());
  }
}

TEST(LibvirtTestDriver, HostQueriesAndManagedDomains) {
  auto hv = connect_libvirt("test:///default");
  EXPECT_NE(hv->capabilities_xml().find("<cells num='2'>"), std::string::npos);
  EXPECT_EQ(hv->free_memory_mib().size(), 2u);

  // The test driver's own domain has no llmorch metadata: not managed.
  EXPECT_TRUE(hv->list_managed().empty());
  EXPECT_FALSE(hv->find_managed("test").has_value());

  DomainSpec s;
  s.name = "llmorch-offline";
  s.domain_type = "qemu";
  s.tmpl.vcpus = 2;
  s.tmpl.max_vcpus = 2;
  s.tmpl.memory_mib = 256;
  s.tmpl.max_memory_mib = 256;
  s.placement = {.name = s.name,
                 .nodes = {0},
                 .cpus = {2, 3},
                 .memory_mib_per_node = {{0, 256}},
                 .cells = {{0, {0, 1}, 256}},
                 .cpu_policy = policy::CpuPolicy::Dedicated,
                 .hugepage_kib = 0,
                 .vcpus = 2};
  hv->define_and_start(render_domain_xml(s));
  auto managed = hv->list_managed();
  ASSERT_EQ(managed.size(), 1u);
  EXPECT_EQ(managed[0].name, s.name);
  EXPECT_EQ(managed[0].state, DomainState::Running);
  EXPECT_EQ(managed[0].vcpu_pins, std::vector<std::vector<int>>({{2}, {3}}));
  // The definition's <shares>, read from the XML (the test driver's own scheduler calls it "weight").
  EXPECT_EQ(managed[0].cpu_shares, parse_live_domain_xml(render_domain_xml(s)).cpu_shares);
  EXPECT_TRUE(managed[0].cpu_shares.has_value());
  EXPECT_TRUE(remove_domain_named(*hv, s.name));
  EXPECT_TRUE(hv->list_managed().empty());
}

DomainSpec offline_spec(const std::string& name) {
  DomainSpec s;
  s.name = name;
  s.domain_type = "qemu";
  s.tmpl.vcpus = 1;
  s.tmpl.max_vcpus = 1;
  s.tmpl.memory_mib = 128;
  s.tmpl.max_memory_mib = 128;
  s.tmpl.cpu_policy = policy::CpuPolicy::Shared;
  s.placement = {.name = s.name,
                 .nodes = {0},
                 .cpus = {0},
                 .memory_mib_per_node = {{0, 128}},
                 .cells = {{0, {0}, 128}},
                 .cpu_policy = policy::CpuPolicy::Shared,
                 .hugepage_kib = 0,
                 .vcpus = 1};
  return s;
}

// A name prefix rules domains out before anything is read of them: only the matching ones are listed,
// managed or not by the prefix's own standards (the test driver is in-process, so the saved calls are not
// observable here; the libvirt backend reads nothing of a domain whose name does not match).
TEST(LibvirtTestDriver, ListingWithANamePrefixListsOnlyTheDomainsWhoseNamesStartWithIt) {
  auto hv = connect_libvirt("test:///default");
  for (const char* name : {"llmorch-mine-1", "llmorch-mine-2", "llmorch-theirs-1"})
    hv->define_and_start(render_domain_xml(offline_spec(name)));
  std::vector<std::string> mine, all;
  for (const auto& d : hv->list_managed("llmorch-mine-")) mine.push_back(d.name);
  for (const auto& d : hv->list_managed()) all.push_back(d.name);
  std::sort(mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(mine, (std::vector<std::string>{"llmorch-mine-1", "llmorch-mine-2"}));
  EXPECT_EQ(all, (std::vector<std::string>{"llmorch-mine-1", "llmorch-mine-2", "llmorch-theirs-1"}));
  EXPECT_TRUE(hv->list_managed("nobody-").empty());
  for (const char* name : {"llmorch-mine-1", "llmorch-mine-2", "llmorch-theirs-1"})
    EXPECT_TRUE(remove_domain_named(*hv, name));
}

// Domains that come and go (through a second connection to the same in-process driver) while the
// first connection lists: a domain that vanishes mid-listing is simply not listed, never an error.
TEST(LibvirtTestDriver, DomainsVanishingWhileListedAreNotErrors) {
  auto lister = connect_libvirt("test:///default");
  auto churner = connect_libvirt("test:///default");
  std::atomic<bool> stop{false};
  std::atomic<int> cycles{0};
  std::thread churn([&] {
    for (int i = 0; !stop; ++i) {
      const std::string name = "llmorch-race-" + std::to_string(i % 4);
      churner->define_and_start(render_domain_xml(offline_spec(name)));
      remove_domain_named(*churner, name);
      ++cycles;
    }
  });
  int lists = 0;
  std::size_t most = 0;
  try {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (std::chrono::steady_clock::now() < end || cycles < 50) {
      most = std::max(most, lister->list_managed().size());
      ++lists;
    }
  } catch (const HypervisorError& e) {
    ADD_FAILURE() << "listing failed while domains came and went: " << e.what();
  }
  stop = true;
  churn.join();
  EXPECT_GT(lists, 10);
  EXPECT_LE(most, 1u);  // at most the one domain the churner holds at a time
  EXPECT_TRUE(lister->list_managed().empty());
}

}  // namespace
}  // namespace llmorch::orch
