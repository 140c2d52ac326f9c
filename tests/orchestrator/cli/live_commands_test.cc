// place, list, status, host, explain, remove through the CLI's entry point, on the fake hypervisor
// (fake_hypervisor.h) serving a host fixture's capabilities and keeping defined domains in memory.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../fake_hypervisor.h"
#include "cli_common.h"
#include "llmorch/orch/domain_xml.h"
#include "llmorch/orch/reconciler.h"
#include "llmorch/orch/status_file.h"
#include "llmorch/orch/topology.h"
#include "run_cli.h"

namespace llmorch::cli {
namespace {

namespace fs = std::filesystem;
using orch::ManagedDomain;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

using Result = CliResult;

class LiveCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("llmorch-cli-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    config_ = (dir_ / "llmorch.conf").string();
    std::ofstream(config_) << "reserved_cpus = 0,48\nmemory_reserve_mib = 1024\ndomain_type = qemu\n";
    template_ = (dir_ / "vm.conf").string();
    std::ofstream(template_) << "vcpus = 2\nmax_vcpus = 4\nmemory_mib = 2048\nmemory_floor_mib = 512\n"
                                "priority = 2\npriority_max = 10\nkernel = /boot/vmlinuz\n";
    host_->caps = slurp(std::string(LLMORCH_HOSTS_DIR) + "/x86-2node-96cpu-cascadelake.xml");
    host_->free_mib = {{0, 30000}, {1, 30000}};
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result cli(std::vector<std::string> args, bool with_config = true) {
    if (with_config) {
      args.insert(args.end(), {"--config", config_, "--state-dir", (dir_ / "run").string()});
    }
    return run_cli(args, [this](const std::string& uri) {
      uri_ = uri;
      return host_;
    });
  }
  Result place(const std::string& name, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"place", "--template", template_, "--name", name};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }
  void write_status(const nlohmann::json& status) {
    fs::create_directories(dir_ / "run");
    std::ofstream(dir_ / "run" / "status.json") << status.dump();
  }

  fs::path dir_;
  std::string config_, template_;
  std::shared_ptr<orch::testing::FakeHypervisor> host_ = std::make_shared<orch::testing::FakeHypervisor>();
  std::string uri_;  // what connect() was given
};

TEST_F(LiveCommands, PlaceDefinesAPinnedDomainAndReportsIt) {
  const Result r = place("a", {"--json"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.err.find("defining vm a on node 0 (cpus 1,49)... started"), std::string::npos) << r.err;
  const auto j = r.json();
  EXPECT_EQ(j["name"], "a");
  EXPECT_EQ(j["dry_run"], false);
  EXPECT_FALSE(j.contains("xml"));
  EXPECT_EQ(j["domain_type"], "qemu");                                // the template sets none: the host config's
  EXPECT_EQ(j["placement"]["cpus"], nlohmann::json::array({1, 49}));  // vcpus (2), not max_vcpus (4)
  EXPECT_EQ(j["placement"]["cells"][0]["vcpus"], nlohmann::json::array({0, 1, 2, 3}));
  ASSERT_EQ(host_->defined.size(), 1u);
  const auto live = orch::parse_live_domain_xml(host_->defined[0]);
  EXPECT_EQ(live.vcpu_pins.at(0), std::vector<int>({1}));
  EXPECT_EQ(live.vcpu_pins.at(3), std::vector<int>({1, 49}));
  EXPECT_EQ(live.cpu_shares, 1024u);  // alone
  EXPECT_EQ(uri_, "qemu:///system");
  EXPECT_TRUE(fs::exists(dir_ / "run" / "place.lock"));
}

// Issue 11, finding 5: the place lock's directory was created with the caller's umask and never
// checked; a lock file planted as a symlink was followed.
TEST_F(LiveCommands, PlaceRefusesAStateDirectoryOthersMayWriteTo) {
  fs::create_directories(dir_ / "run");
  fs::permissions(dir_ / "run", fs::perms::all);  // 0777
  const Result r = place("a");
  EXPECT_EQ(r.status, kExitFailure);
  EXPECT_NE(r.err.find("writable by group or others"), std::string::npos) << r.err;
  EXPECT_TRUE(host_->defined.empty());
  EXPECT_FALSE(fs::exists(dir_ / "run" / "place.lock"));
}

TEST_F(LiveCommands, PlaceCreatesTheLockDirectory0755AndNeverFollowsALockSymlink) {
  const mode_t old = ::umask(077);
  ASSERT_EQ(place("a").status, kExitOk);
  ::umask(old);
  EXPECT_EQ(fs::status(dir_ / "run").permissions(), static_cast<fs::perms>(0755));
  fs::remove(dir_ / "run" / "place.lock");
  fs::create_symlink(dir_ / "elsewhere", dir_ / "run" / "place.lock");
  const Result r = place("b");
  EXPECT_EQ(r.status, kExitFailure);
  EXPECT_NE(r.err.find("cannot open the lock file"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "elsewhere"));
}

TEST_F(LiveCommands, SecondVmAvoidsTheFirstsCpusAndGetsSharesByWeight) {
  ASSERT_EQ(place("a").status, kExitOk);
  const Result r = place("b", {"--json", "--set", "priority=1"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const auto j = r.json();
  for (int c : j["placement"]["cpus"]) EXPECT_TRUE(c != 1 && c != 49 && c != 0 && c != 48) << c;
  // Priorities {2, 1}, alpha 0.8: weight of b 0.6429 of 2 VMs -> round(0.6429 * 2 * 1024) = 1317.
  EXPECT_EQ(j["cpu_shares"], 1317);
}

TEST_F(LiveCommands, DryRunPrintsXmlAndChangesNothing) {
  const Result r = place("a", {"--dry-run", "--json"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(r.json()["dry_run"], true);
  EXPECT_NE(r.json()["xml"].get<std::string>().find("<name>a</name>"), std::string::npos);
  EXPECT_TRUE(host_->defined.empty());
  EXPECT_FALSE(fs::exists(dir_ / "run"));  // not even the lock
  const Result text = place("a", {"--dry-run"});
  EXPECT_NE(text.out.find("would place vm a on node 0"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("<domain type=\"qemu\">"), std::string::npos) << text.out;
}

TEST_F(LiveCommands, RejectionsChangeNothingAndUseTheirExitCodes) {
  Result r = place("big", {"--set", "vcpus=64", "--set", "max_vcpus=64", "--set", "memory_mib=70000"});
  EXPECT_EQ(r.status, kExitNoFit);
  EXPECT_NE(r.err.find("node 0:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("node 1:"), std::string::npos) << r.err;
  host_->unmanaged.insert("taken");
  r = place("taken");
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("exists already"), std::string::npos) << r.err;
  r = place("bad/name");
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("not a valid VM name"), std::string::npos) << r.err;
  r = place("x", {"--set", "vcpus=9"});  // > max_vcpus 4
  EXPECT_EQ(r.status, kExitUsage) << r.err;
  r = cli({"place", "--name", "x"});
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("--template FILE is required"), std::string::npos) << r.err;
  EXPECT_TRUE(host_->defined.empty());
}

TEST_F(LiveCommands, CommonOptionsReachConnectAndConfig) {
  Result r = cli({"list", "-c", "test:///default"}, false);
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(uri_, "test:///default");
  r = cli({"host", "--config", (dir_ / "missing.conf").string()}, false);
  EXPECT_EQ(r.status, kExitUsage);
  EXPECT_NE(r.err.find("missing.conf"), std::string::npos) << r.err;
  for (const char* command : {"place", "list", "status", "host", "explain", "remove"}) {
    r = cli({command, "--help"}, false);
    EXPECT_EQ(r.status, kExitOk) << command;
    EXPECT_NE(r.out.find("usage: llmorch " + std::string(command)), std::string::npos) << command;
    EXPECT_NE(r.out.find("--connect"), std::string::npos) << command;
    EXPECT_NE(r.out.find("--config"), std::string::npos) << command;
  }
  EXPECT_EQ(cli({"list", "--bogus"}).status, kExitUsage);
}

TEST_F(LiveCommands, StatusWithoutDaemonComputesWeightsAndSaysSo) {
  ASSERT_EQ(place("a").status, kExitOk);
  ASSERT_EQ(place("b", {"--set", "priority=1"}).status, kExitOk);
  Result r = cli({"status", "--json"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const auto j = r.json();
  EXPECT_EQ(j["daemon"]["running"], false);
  ASSERT_EQ(j["vms"].size(), 2u);
  const auto& a = j["vms"][0];
  EXPECT_EQ(a["name"], "a");
  EXPECT_NEAR(a["weight"].get<double>(), 0.3571, 1e-4);
  EXPECT_EQ(a["weight_source"], "computed");
  EXPECT_EQ(a["priority_template"], 2.0);
  EXPECT_TRUE(a["priority_reported"].is_null());
  EXPECT_TRUE(a["load"].is_null());
  EXPECT_EQ(a["vcpus"], 2);
  EXPECT_EQ(a["max_vcpus"], 4);
  EXPECT_EQ(a["memory_max_mib"], 2048);
  EXPECT_EQ(a["memory_floor_mib"], 512);
  EXPECT_EQ(a["hostile"], false);
  r = cli({"status"});
  EXPECT_NE(r.out.find("llmorchd: not running"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0.3571 (computed)"), std::string::npos) << r.out;
  r = cli({"status", "nope"});
  EXPECT_EQ(r.status, kExitFailure);
  EXPECT_NE(r.err.find("no VM named 'nope'"), std::string::npos) << r.err;
}

// What llmorchd writes (status_to_json) after a tick `age_s` ago: vm "a" with an agent report.
nlohmann::json daemon_status(double age_s, int pid) {
  orch::DaemonStatus s;
  s.pid = pid;
  s.last_tick_at = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      std::chrono::system_clock::now() - std::chrono::milliseconds(static_cast<int>(age_s * 1000)));
  s.started_at = s.last_tick_at - std::chrono::seconds(10);
  s.alpha = 0.5;
  s.interval_ms = 1000;
  s.connected = true;
  orch::VmPlan a;
  a.name = "a";
  a.priority = 1.0;
  a.source = orch::PrioritySource::Agent;
  a.template_priority = 2.0;
  a.reported_priority = 1.0;
  a.demand_cpus = 3.75;
  a.weight = 0.75;
  a.cpu_shares = 1536;
  a.cpus = {1, 49};
  a.reason = "priority 1 reported by agent";
  s.plan.vms.push_back(a);
  orch::AgentState agent;
  protocol::Report report;
  report.priority = 1.0;
  report.cpu_pct = 87.5;
  report.runnable = 3;
  report.ncpu_online = 2;
  agent.last_report = report;
  agent.last_report_age_s = 0.4;
  agent.fresh = true;
  agent.hostile = true;
  s.agents["a"] = agent;
  return orch::status_to_json(s);
}

TEST_F(LiveCommands, StatusAndExplainUseTheDaemonsStatusFile) {
  ASSERT_EQ(place("a").status, kExitOk);
  ASSERT_EQ(place("b").status, kExitOk);
  write_status(daemon_status(0.5, ::getpid()));
  Result r = cli({"status", "a", "--json"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  auto j = r.json();
  EXPECT_EQ(j["daemon"]["running"], true);
  ASSERT_EQ(j["vms"].size(), 1u);
  const auto& a = j["vms"][0];
  EXPECT_EQ(a["weight"], 0.75);
  EXPECT_EQ(a["weight_source"], "daemon");
  EXPECT_EQ(a["priority"], 1.0);
  EXPECT_EQ(a["priority_reported"], 1.0);
  EXPECT_EQ(a["load"]["cpu_pct"], 87.5);
  EXPECT_EQ(a["load"]["demand_cpus"], 3.75);
  EXPECT_EQ(a["report_age_s"], 0.4);
  EXPECT_EQ(a["hostile"], true);

  r = cli({"explain", "a"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  // Daemon's numbers: alpha 0.5, a at priority 1 (agent), b at its template's 2: raw 0.75 and 0.5.
  EXPECT_NE(r.out.find("alpha = 0.50 and n = 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sum(raw) = 1.2500, so w(a) = 0.7500 / 1.2500 = 0.6000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Last decision: priority 1 reported by agent"), std::string::npos) << r.out;

  // A stale file or a dead pid: not running, and the output says why.
  write_status(daemon_status(60, ::getpid()));
  j = cli({"status", "--json"}).json();
  EXPECT_EQ(j["daemon"]["running"], false);
  EXPECT_NE(j["daemon"]["why_not"].get<std::string>().find("s ago"), std::string::npos);
  EXPECT_EQ(j["vms"][0]["weight_source"], "computed");
}

TEST_F(LiveCommands, ExplainWithoutDaemonShowsTheFormula) {
  ASSERT_EQ(place("a").status, kExitOk);
  ASSERT_EQ(place("b", {"--set", "priority=1"}).status, kExitOk);
  const Result r = cli({"explain", "a"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("llmorchd is not running"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sum(raw) = 1.4000, so w(a) = 0.5000 / 1.4000 = 0.3571"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("round(0.3571 * 2 * 1024) = 731"), std::string::npos) << r.out;
  EXPECT_EQ(cli({"explain", "zzz"}).status, kExitFailure);
}

TEST_F(LiveCommands, HostShowsReservedDedicatedAndMemory) {
  host_->free_mib = {{0, 20000}, {1, 30000}};
  ASSERT_EQ(place("a").status, kExitOk);
  const Result r = cli({"host", "--json"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const auto n0 = r.json()["nodes"][0];
  EXPECT_EQ(n0["reserved_cpus"], nlohmann::json::array({0, 48}));
  EXPECT_EQ(n0["dedicated"]["a"], nlohmann::json::array({1, 49}));
  EXPECT_EQ(n0["free_cpus"].size(), 48u - 4);
  EXPECT_EQ(n0["memory"]["vms"]["a"]["reserved_mib"], 2048);
  EXPECT_EQ(n0["memory"]["reserve_mib"], 1024);
  const std::uint64_t total = n0["memory"]["total_mib"], others = n0["memory"]["others_mib"];
  EXPECT_EQ(others, total - 20000 - 2048);
  EXPECT_EQ(n0["memory"]["available_mib"], total - 1024 - others - 2048);
  EXPECT_EQ(n0["hugepages"], nlohmann::json::array());  // the fixture's 2 MiB and 1 GiB pools are empty
}

TEST_F(LiveCommands, ListAndRemove) {
  ASSERT_EQ(place("a").status, kExitOk);
  Result r = cli({"list"});
  EXPECT_NE(r.out.find("a     running  dedicated  0      1,49  2/4    2048/2048 MiB"), std::string::npos) << r.out;
  host_->unmanaged.insert("foreign");
  r = cli({"remove", "foreign"});
  EXPECT_EQ(r.status, kExitFailure);
  EXPECT_NE(r.err.find("not managed by llmorch"), std::string::npos) << r.err;
  EXPECT_EQ(cli({"remove", "ghost"}).status, kExitFailure);
  EXPECT_TRUE(host_->removed.empty());
  r = cli({"remove", "a"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(host_->removed, std::vector<std::string>({"a"}));
  EXPECT_NE(r.out.find("2048 MiB, cpus 1,49"), std::string::npos) << r.out;
}

// Between remove's lookup and its removal another process removes "a" and places a new "a": remove
// must not destroy the new one (it resolved the name once, to the old one's UUID).
TEST_F(LiveCommands, RemoveDestroysTheDomainItLookedUpNotANewOneOfTheSameName) {
  ASSERT_EQ(place("a").status, kExitOk);
  const std::string old_uuid = host_->domains.at(0).uuid;
  host_->after_find = [this] {
    host_->after_find = nullptr;
    host_->domains.clear();
    ASSERT_EQ(place("a").status, kExitOk);
  };
  const Result r = cli({"remove", "a"});
  EXPECT_EQ(r.status, kExitFailure);
  EXPECT_NE(r.err.find("was removed meanwhile"), std::string::npos) << r.err;
  ASSERT_EQ(host_->domains.size(), 1u);
  EXPECT_NE(host_->domains[0].uuid, old_uuid);  // the new "a" is still there
  EXPECT_TRUE(host_->removed.empty());
}

TEST_F(LiveCommands, RemoveTakesAVmWhoseMetadataIsBad) {
  ManagedDomain bad;
  bad.name = "broken";
  bad.uuid = "11111111-2222-3333-4444-555555555555";
  bad.state = orch::DomainState::Running;
  bad.metadata_error = "bad metadata: priority (nan) is not a number in [0.001, 1000000]; set one in that range";
  host_->domains.push_back(bad);
  const Result r = cli({"remove", "broken"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_EQ(host_->removed, std::vector<std::string>({"broken"}));
  EXPECT_NE(r.out.find("removed vm broken"), std::string::npos) << r.out;
}

// A status file llmorchd did not write (another version, a hand edit) is not trusted: the output says
// why and computes the weights itself.
TEST_F(LiveCommands, StatusSaysWhyItIgnoresAStatusFileItCannotRead) {
  ASSERT_EQ(place("a").status, kExitOk);
  nlohmann::json status = daemon_status(0.5, ::getpid());
  status["vms"][0].erase("weight");
  write_status(status);
  const auto j = cli({"status", "--json"}).json();
  EXPECT_EQ(j["daemon"]["running"], false);
  EXPECT_NE(j["daemon"]["why_not"].get<std::string>().find("vms[0].weight is missing"), std::string::npos)
      << j["daemon"]["why_not"];
  EXPECT_EQ(j["vms"][0]["weight_source"], "computed");
}

// Issue 12, debt 1: without a daemon, status/explain built their own plan, which skipped the
// reconciler's clamp of max_vcpus to the domain's real vCPU limit, so they showed a plan llmorchd
// would not make. They now show make_plan's, the daemon's own.
TEST_F(LiveCommands, ExplainWithoutDaemonShowsTheDaemonsPlanClampedToTheDomainsVcpus) {
  // Dedicated on node 0, metadata max_vcpus 4, but the domain itself has only 2 vCPUs.
  auto d = orch::testing::make_domain("a", 2, {1, 2, 3, 4}, policy::CpuPolicy::Dedicated, 2, 4);
  d.vcpus_max = 2;
  d.vcpu_pins.resize(2);
  host_->domains.push_back(d);

  orch::Snapshot snapshot;  // what llmorchd plans from, without agents
  snapshot.alpha = 0.8;
  snapshot.cpu_host = orch::cpu_host(orch::parse_capabilities(host_->caps), {0, 48}, {});
  snapshot.vms.push_back({.domain = d, .agent = {}, .balloon = {}});
  const orch::Plan daemon = orch::make_plan(snapshot);
  ASSERT_EQ(daemon.vms.size(), 1u);
  ASSERT_TRUE(daemon.vms[0].vcpus_online.has_value());
  EXPECT_EQ(*daemon.vms[0].vcpus_online, 2);  // clamped to the domain's 2, not the metadata's 4
  std::string cpus;
  for (int c : daemon.vms[0].cpus) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);

  const Result r = cli({"explain", "a"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("planned " + cpus + " (2 vCPUs online)"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace llmorch::cli
