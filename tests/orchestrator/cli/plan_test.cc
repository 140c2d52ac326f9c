// llmorch plan, through the CLI's entry point, on the host fixtures.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "run_cli.h"

namespace llmorch::cli {
namespace {

const std::string kHosts = LLMORCH_HOSTS_DIR;

using Result = CliResult;

Result plan(std::vector<std::string> args) {
  args.insert(args.begin(), "plan");
  return run_cli(args);
}

std::string host(const std::string& name) { return kHosts + "/" + name; }

TEST(PlanCli, JsonPlacesInOrderAndRejectsWithReasons) {
  const Result r = plan({"--capabilities", host("x86-2node-96cpu-cascadelake.xml"), "--json", "--reserve-cpus", "0,48",
                         "--vm", "name=a,vcpus=4,memory_mib=4096", "--vm", "name=b,vcpus=60,memory_mib=40000", "--vm",
                         "name=s,vcpus=2,memory_mib=1024,cpu_policy=shared", "--vm",
                         "name=huge,vcpus=200,memory_mib=1024"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);  // exactly one JSON value
  ASSERT_EQ(doc.at("placed").size(), 3u);
  const auto& a = doc["placed"][0];
  EXPECT_EQ(a.at("name"), "a");
  EXPECT_EQ(a.at("nodes"), nlohmann::json::array({0}));
  EXPECT_EQ(a.at("cpus"), nlohmann::json::array({1, 49, 2, 50}));  // 0 and 48 reserved; siblings adjacent
  EXPECT_EQ(a.at("memory_mib_per_node").at("0"), 4096);
  EXPECT_EQ(a.at("cpu_policy"), "dedicated");
  const auto& b = doc["placed"][1];
  EXPECT_EQ(b.at("nodes"), nlohmann::json::array({0, 1}));
  EXPECT_EQ(b.at("cpus").size(), 60u);
  EXPECT_EQ(b.at("cells").size(), 2u);
  EXPECT_EQ(b["memory_mib_per_node"]["0"].get<int>() + b["memory_mib_per_node"]["1"].get<int>(), 40000);
  std::set<int> dedicated;
  for (const auto& p : {a, b}) {
    for (int cpu : p.at("cpus")) EXPECT_TRUE(dedicated.insert(cpu).second) << "CPU " << cpu << " twice";
  }
  EXPECT_EQ(dedicated.count(0) + dedicated.count(48), 0u);
  const auto& s = doc["placed"][2];
  EXPECT_EQ(s.at("cpu_policy"), "shared");
  for (int cpu : s.at("cpus")) EXPECT_EQ(dedicated.count(cpu), 0u) << "shared pool has dedicated CPU " << cpu;
  ASSERT_EQ(doc.at("rejected").size(), 1u);
  EXPECT_EQ(doc["rejected"][0].at("name"), "huge");
  const std::string reason = doc["rejected"][0].at("reason");
  EXPECT_NE(reason.find("node 0:"), std::string::npos) << reason;
  EXPECT_NE(reason.find("node 1:"), std::string::npos) << reason;
  EXPECT_TRUE(r.err.empty());
}

// Issue 11 C: a shared VM placed before a dedicated one does not float over the dedicated VM's CPUs.
TEST(PlanCli, ASharedVmPlacedFirstFloatsOnlyOverWhatDedicatedVmsLeave) {
  const Result r = plan({"--capabilities", host("x86-1node-2cpu-small.xml"), "--json", "--vm",
                         "name=s,vcpus=1,memory_mib=256,cpu_policy=shared", "--vm", "name=d,vcpus=1,memory_mib=256"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc.at("placed").size(), 2u) << r.out;
  const auto& s = doc["placed"][0];
  const auto& d = doc["placed"][1];
  ASSERT_EQ(d.at("cpus").size(), 1u);
  const int dedicated = d["cpus"][0];
  EXPECT_EQ(s.at("cpus"), nlohmann::json::array({1 - dedicated})) << r.out;
  const Result table = plan({"--capabilities", host("x86-1node-2cpu-small.xml"), "--vm",
                             "name=s,vcpus=1,memory_mib=256,cpu_policy=shared", "--vm",
                             "name=d,vcpus=1,memory_mib=256"});
  const auto row = table.out.find("\ns ");
  ASSERT_NE(row, std::string::npos) << table.out;
  const std::string line = table.out.substr(row + 1, table.out.find('\n', row + 1) - row - 1);
  EXPECT_EQ(line.back(), '0' + (1 - dedicated)) << line;  // HOST CPUS, the last column
}

TEST(PlanCli, HugepagesAndSpanningOnEpyc) {
  const Result r = plan({"--capabilities", host("x86-8node-384cpu-epyc-nps4.xml"), "--json", "--vm",
                         "name=h,vcpus=8,memory_mib=20480,hugepages=2M", "--vm",
                         "name=g,vcpus=2,memory_mib=1024,hugepages=1G"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc.at("placed").size(), 1u);
  const auto& h = doc["placed"][0];
  EXPECT_EQ(h.at("hugepages"), "2M");
  ASSERT_EQ(h.at("nodes").size(), 2u);                                // 16 GiB of 2 MiB pages per node
  EXPECT_EQ(h["nodes"][1].get<int>() - h["nodes"][0].get<int>(), 1);  // neighbours of one socket
  EXPECT_EQ(doc["rejected"][0].at("name"), "g");
  EXPECT_NE(doc["rejected"][0].at("reason").get<std::string>().find("1 GiB hugepages"), std::string::npos);
}

TEST(PlanCli, TableNamesEveryVm) {
  const Result r = plan({"--capabilities", host("x86-1node-2cpu-small.xml"), "--vm", "name=web,vcpus=1,memory_mib=512",
                         "--vm", "name=db,vcpus=2,memory_mib=512"});
  ASSERT_EQ(r.status, kExitOk) << r.err;
  EXPECT_NE(r.out.find("1 NUMA nodes, 2 CPUs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("web"), std::string::npos);
  EXPECT_NE(r.out.find("db: no NUMA node set fits 'db'"), std::string::npos) << r.out;
}

TEST(PlanCli, HelpExplainsSpecsAndJson) {
  const Result r = plan({"--help"});
  EXPECT_EQ(r.status, kExitOk);
  for (const char* word : {"--capabilities", "--reserve-cpus", "cpu_policy=dedicated|shared", "hugepages=2M|1G",
                           "memory_mib_per_node", "Exit status"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
}

TEST(PlanCli, BadArgumentsAndFilesAreUsageErrors) {
  const std::string small = host("x86-1node-2cpu-small.xml");
  const std::string ok_vm = "name=a,vcpus=1,memory_mib=1";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--vm", ok_vm}, "--capabilities FILE is required"},
      {{"--capabilities", small}, "at least one --vm"},
      {{"--capabilities", kHosts + "/missing.xml", "--vm", ok_vm}, "missing.xml"},
      {{"--capabilities", kHosts + "/README.md", "--vm", ok_vm}, "README.md"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1"}, "missing memory_mib"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=x,memory_mib=1"}, "vcpus must be a whole number"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=0,memory_mib=1"}, "vcpus must be 1..4096"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,memory_mib=0"}, "memory_mib must be at least 1"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,memory_mib=1,cpu_policy=fast"}, "cpu_policy must be"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,memory_mib=1,hugepages=4K"}, "hugepages must be 2M or 1G"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,memory_mib=1,color=red"}, "unknown key 'color'"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,vcpus=2,memory_mib=1"}, "vcpus is given twice"},
      {{"--capabilities", small, "--vm", "name=a,vcpus=1,memory_mib=1,"}, "is not KEY=VALUE"},
      {{"--capabilities", small, "--vm", ok_vm, "--vm", ok_vm}, "'a' is given twice"},
      {{"--capabilities", small, "--reserve-cpus", "3-1", "--vm", ok_vm}, "'3-1'"},
      {{"--capabilities", small, "--reserve-cpus", "7", "--vm", ok_vm}, "CPU 7, which the host does not have"},
      {{"--capabilities", small, "--bogus", "--vm", ok_vm}, "bogus"},
  };
  for (const auto& [args, message] : cases) {
    const Result r = plan(args);
    EXPECT_EQ(r.status, kExitUsage) << message;
    EXPECT_NE(r.err.find(message), std::string::npos) << "expected '" << message << "' in: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

}  // namespace
}  // namespace llmorch::cli
