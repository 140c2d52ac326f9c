// The real `llmorch` binary against qemu:///system (start libvirtd with tools/libvirtd-up) with real
// test guests (tools/build-test-guest; templates/tiny-test.conf boots them under TCG). Every domain is
// named llmorch-it-cli-* and removed after each test, whatever happened.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "llmorch/orch/domain_xml.h"
#include "llmorch/policy/weighting.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kBin = LLMORCH_BIN;
const std::string kTemplate = std::string(LLMORCH_TEMPLATES_DIR) + "/tiny-test.conf";
const std::string kPrefix = "llmorch-it-cli-";

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Proc {
  int status = -1;
  std::string out, err;
  json doc() const { return json::parse(out); }
};

// Runs a shell command line; stderr goes through a file named after `tag`.
Proc shell(const std::string& line, const std::string& tag) {
  const std::string err_file =
      (fs::temp_directory_path() / ("llmorch-cli-it-" + std::to_string(getpid()) + "-" + tag)).string();
  Proc r;
  FILE* p = ::popen((line + " 2>" + quote(err_file)).c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream in(err_file);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  fs::remove(err_file);
  return r;
}

Proc virsh(const std::string& args) { return shell("virsh -q -c qemu:///system " + args, "virsh"); }

std::set<std::string> domains() {
  std::set<std::string> out;
  std::istringstream in(virsh("list --all --name").out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.insert(line);
  return out;
}

void remove_test_domains() {
  for (const auto& name : domains()) {
    if (name.rfind(kPrefix, 0) != 0) continue;
    virsh("destroy " + quote(name));
    virsh("undefine " + quote(name));
  }
}

class CliIt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const Proc v = virsh("version");
    ASSERT_EQ(v.status, 0) << "libvirtd does not answer on qemu:///system (" << v.err
                           << "); start it with tools/libvirtd-up";
    for (const char* f : {"/var/lib/libvirt/images/llmorch/vmlinuz", "/var/lib/libvirt/images/llmorch/initrd.gz"})
      ASSERT_TRUE(fs::exists(f)) << f << " is missing: run tools/build-test-guest first";
  }
  void SetUp() override {
    remove_test_domains();
    dir_ = fs::temp_directory_path() / ("llmorch-cli-it-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    config_ = (dir_ / "llmorch.conf").string();
    std::ofstream(config_) << "reserved_cpus =\ndomain_type = qemu\nmemory_reserve_mib = 64\n";
  }
  void TearDown() override {
    remove_test_domains();
    fs::remove_all(dir_);
  }

  Proc llmorch(const std::vector<std::string>& args, const std::string& tag = "cli") {
    std::string line = quote(kBin);
    for (const auto& a : args) line += " " + quote(a);
    line += " --config " + quote(config_) + " --state-dir " + quote((dir_ / "run").string());
    return shell(line, tag);
  }
  Proc place(const std::string& name, std::vector<std::string> extra = {}, const std::string& tag = "place") {
    std::vector<std::string> args = {"place", "--template", kTemplate, "--name", name, "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return llmorch(args, tag);
  }
  // What `place` gives a new VM of `priority`: the formula over the running managed VMs (other
  // tests' VMs included) and the new one.
  std::uint64_t expected_shares(double priority) {
    const Proc r = llmorch({"status", "--json"});
    EXPECT_EQ(r.status, 0) << r.err;
    std::vector<double> priorities;
    const json doc = r.doc();  // named: a range-for over a member of a temporary reads freed memory
    for (const auto& v : doc.at("vms"))
      if (v["active"].get<bool>()) priorities.push_back(v["priority_template"].get<double>());
    priorities.push_back(priority);
    const auto w = llmorch::policy::compute_weights(priorities, llmorch::policy::kDefaultAlpha);
    return static_cast<std::uint64_t>(llmorch::policy::cpu_shares(w.back(), w.size()));
  }
  json host() {
    const Proc r = llmorch({"host", "--json"});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.doc();
  }

  fs::path dir_;
  std::string config_;
};

TEST_F(CliIt, PlacesDedicatedAndSharedVmsWithPinsTuningAndMetadata) {
  const json before = host()["nodes"][0];
  ASSERT_FALSE(before["free_cpus"].empty()) << "node 0 has no free CPU (other VMs hold them): " << before.dump();
  const std::set<int> node0(before["cpus"].begin(), before["cpus"].end());

  const std::string d = kPrefix + "dedicated", s = kPrefix + "shared";
  const std::uint64_t d_shares = expected_shares(1);
  Proc r = place(d, {"--set", "cpu_policy=dedicated"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("defining vm " + d + " on node 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("... started"), std::string::npos) << r.err;
  // The shares place computed (an llmorchd running meanwhile may change the live value at once).
  EXPECT_EQ(r.doc()["cpu_shares"], d_shares);
  const json pd = r.doc()["placement"];
  ASSERT_EQ(pd["cpus"].size(), 1u);  // tiny-test: vcpus 1, max_vcpus 2: the start count is reserved
  const int cpu = pd["cpus"][0];
  EXPECT_TRUE(node0.count(cpu));

  const std::uint64_t s_shares = expected_shares(1);
  r = place(s);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.doc()["cpu_shares"], s_shares);
  const json placed = r.doc();
  for (int c : placed.at("placement").at("cpus")) EXPECT_NE(c, cpu) << "shared pool holds the dedicated CPU";

  // The live domain as libvirt has it.
  const std::string xml = virsh("dumpxml " + d).out;
  const auto live = llmorch::orch::parse_live_domain_xml(xml);
  EXPECT_EQ(live.vcpus_current, 1);
  EXPECT_EQ(live.vcpus_max, 2);
  EXPECT_EQ(live.vcpu_pins.at(0), std::vector<int>({cpu}));
  EXPECT_EQ(live.vcpu_pins.at(1), std::vector<int>({cpu}));  // offline vCPU: on the CPUs held
  EXPECT_EQ(live.emulator_pins, std::vector<int>({cpu}));
  EXPECT_TRUE(live.cpu_shares.has_value());
  EXPECT_NE(xml.find("<memory mode='strict' nodeset='0'/>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<memballoon model='virtio'>"), std::string::npos) << xml;
  EXPECT_NE(xml.find("<stats period='2'/>"), std::string::npos) << xml;
  EXPECT_NE(live.channel_path.find("org.llmorch.agent.0"), std::string::npos) << xml;
  const auto facts = llmorch::orch::parse_metadata(xml);
  ASSERT_TRUE(facts.has_value()) << xml;
  EXPECT_EQ(facts->placement.cpus, std::vector<int>({cpu}));
  EXPECT_EQ(facts->template_path, kTemplate);
  const auto shared_live = llmorch::orch::parse_live_domain_xml(virsh("dumpxml " + s).out);
  for (const auto& [vcpu, pins] : shared_live.vcpu_pins)
    for (int c : pins) EXPECT_TRUE(node0.count(c) && c != cpu) << "shared vCPU " << vcpu << " on " << c;

  r = llmorch({"status", "--json"});
  ASSERT_EQ(r.status, 0) << r.err;
  const json st = r.doc();
  EXPECT_EQ(st["daemon"]["running"], false);  // no llmorchd on this test's state dir
  std::map<std::string, json> vms;
  for (const auto& v : st["vms"]) vms[v["name"]] = v;
  ASSERT_TRUE(vms.count(d) && vms.count(s)) << st.dump();
  EXPECT_EQ(vms[d]["state"], "running");
  EXPECT_EQ(vms[d]["cpus"], json::array({cpu}));
  EXPECT_EQ(vms[d]["max_vcpus"], 2);
  EXPECT_EQ(vms[d]["memory_max_mib"], 256);
  EXPECT_EQ(vms[d]["memory_floor_mib"], 96);
  EXPECT_EQ(vms[d]["cpu_shares"], *live.cpu_shares);
  EXPECT_EQ(vms[d]["weight_source"], "computed");
  EXPECT_GT(vms[d]["weight"].get<double>(), 0.0);

  r = llmorch({"list"});
  EXPECT_NE(r.out.find(d), std::string::npos) << r.out;
  r = llmorch({"remove", d});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(domains().count(d));
  EXPECT_TRUE(host()["nodes"][0]["dedicated"].is_object() && !host()["nodes"][0]["dedicated"].contains(d));
}

TEST_F(CliIt, DryRunRejectionAndDuplicateNameChangeNothing) {
  const std::string a = kPrefix + "a";
  Proc r = place(kPrefix + "dry", {"--dry-run"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.doc()["dry_run"], true);
  EXPECT_NE(r.doc()["xml"].get<std::string>().find("<name>" + kPrefix + "dry</name>"), std::string::npos);
  EXPECT_FALSE(domains().count(kPrefix + "dry"));

  r = place(kPrefix + "big", {"--set", "memory_mib=100000000", "--set", "max_memory_mib=100000000"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_NE(r.err.find("node 0:"), std::string::npos) << r.err;
  EXPECT_FALSE(domains().count(kPrefix + "big"));
  r = place(kPrefix + "wide", {"--set", "vcpus=64", "--set", "max_vcpus=64", "--set", "cpu_policy=dedicated"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_FALSE(domains().count(kPrefix + "wide"));

  ASSERT_EQ(place(a).status, 0);
  const std::string uuid = virsh("domuuid " + a).out;
  r = place(a);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("exists already"), std::string::npos) << r.err;
  EXPECT_EQ(virsh("domuuid " + a).out, uuid);
  EXPECT_NE(virsh("domstate " + a).out.find("running"), std::string::npos);
}

TEST_F(CliIt, ConcurrentPlacesForTheLastRoomLetExactlyOneWin) {
  // Each asks for 60% of what node 0 has left for VMs: one fits, two do not.
  const std::uint64_t available = host()["nodes"][0]["memory"]["available_mib"];
  ASSERT_GT(available, 400u) << "node 0 has too little memory left for this test";
  const std::string mib = std::to_string(available * 6 / 10);
  const std::vector<std::string> big = {"--set", "memory_mib=" + mib, "--set", "max_memory_mib=" + mib};
  auto first = std::async(std::launch::async, [&] { return place(kPrefix + "race1", big, "race1"); });
  auto second = std::async(std::launch::async, [&] { return place(kPrefix + "race2", big, "race2"); });
  const Proc r1 = first.get(), r2 = second.get();
  EXPECT_EQ(std::multiset<int>({r1.status, r2.status}), std::multiset<int>({0, 3})) << r1.err << "\n" << r2.err;
  EXPECT_EQ(domains().count(kPrefix + "race1") + domains().count(kPrefix + "race2"), 1u);
}

TEST_F(CliIt, RemoveRefusesDomainsLlmorchDoesNotManage) {
  const std::string foreign = kPrefix + "foreign";
  const std::string xml_path = (dir_ / "foreign.xml").string();
  std::ofstream(xml_path) << "<domain type='qemu'><name>" << foreign
                          << "</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
                             "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>";
  ASSERT_EQ(virsh("define " + quote(xml_path)).status, 0);
  Proc r = llmorch({"remove", foreign});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("not managed by llmorch"), std::string::npos) << r.err;
  EXPECT_TRUE(domains().count(foreign));
  r = place(foreign);  // its name is taken, though not by llmorch
  EXPECT_EQ(r.status, 2) << r.err;
  r = llmorch({"remove", kPrefix + "ghost"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no VM named"), std::string::npos) << r.err;
}

}  // namespace
