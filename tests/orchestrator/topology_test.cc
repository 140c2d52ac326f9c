#include "llmorch/orch/topology.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <iostream>

namespace llmorch::orch {
namespace {

using policy::CpuId;
using policy::HostTopology;

const std::string kHosts = LLMORCH_HOSTS_DIR;

HostTopology fixture(const std::string& name) { return parse_capabilities_file(kHosts + "/" + name); }

std::string with_cells(const std::string& cells) {
  return "<capabilities><host><topology><cells>" + cells + "</cells></topology></host></capabilities>";
}

std::string error_of(const std::string& xml) {
  try {
    parse_capabilities(xml);
  } catch (const CapabilitiesError& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_ERROR(xml, part)                                         \
  do {                                                                  \
    const std::string msg = error_of(xml);                              \
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg; \
  } while (0)

std::vector<CpuId> cpu_ids(const policy::NumaNode& n) {
  std::vector<CpuId> ids;
  for (const auto& c : n.cpus) ids.push_back(c.id);
  return ids;
}

TEST(TopologyFixtures, SmallBuildMachine) {
  const HostTopology t = fixture("x86-1node-2cpu-small.xml");
  ASSERT_EQ(t.nodes.size(), 1u);
  EXPECT_EQ(t.cpu_count(), 2u);
  EXPECT_EQ(t.nodes[0].memory_kib, 4942044u);
  EXPECT_EQ(cpu_ids(t.nodes[0]), (std::vector<CpuId>{0, 1}));
  EXPECT_EQ(t.nodes[0].cpus[1].siblings, (std::vector<CpuId>{1}));
  EXPECT_EQ(t.nodes[0].cpus[1].core_id, 1);
  EXPECT_EQ(t.distance(0, 0), 10);
  ASSERT_EQ(t.nodes[0].pages.size(), 3u);
  EXPECT_EQ(t.nodes[0].pages[0].size_kib, 4u);
  EXPECT_EQ(t.nodes[0].pages[0].count, 1235511u);
  EXPECT_EQ(t.nodes[0].pages[2].size_kib, 1048576u);
}

TEST(TopologyFixtures, CascadeLakeTwoSockets) {
  const HostTopology t = fixture("x86-2node-96cpu-cascadelake.xml");
  ASSERT_EQ(t.nodes.size(), 2u);
  EXPECT_EQ(t.cpu_count(), 96u);
  for (const auto& n : t.nodes) {
    EXPECT_EQ(n.cpus.size(), 48u);
    for (const auto& c : n.cpus) {
      ASSERT_EQ(c.siblings.size(), 2u) << "cpu " << c.id;
      EXPECT_EQ(c.siblings[1], c.siblings[0] + 48);
      EXPECT_EQ(c.socket_id, n.id);
    }
  }
  EXPECT_EQ(t.nodes[0].cpus[0].siblings, (std::vector<CpuId>{0, 48}));
  EXPECT_EQ(t.nodes[0].cpus[7].core_id, 9);  // core ids have gaps on this host
  EXPECT_EQ(t.nodes[0].memory_kib, 32646592u);
  EXPECT_EQ(t.distance(0, 1), 21);
  EXPECT_EQ(t.distance(1, 1), 10);
}

TEST(TopologyFixtures, UnevenSyntheticWithoutDistances) {
  const HostTopology t = fixture("x86-4node-uneven-synthetic.xml");
  ASSERT_EQ(t.nodes.size(), 4u);
  EXPECT_EQ(t.cpu_count(), 16u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(t.nodes[i].memory_kib, (i + 1) * 1048576u);
    EXPECT_TRUE(t.nodes[i].distances.empty());
    EXPECT_EQ(t.nodes[i].cpus.size(), 4u);
  }
  EXPECT_EQ(t.distance(0, 3), 20);
  EXPECT_EQ(t.distance(2, 2), 10);
  // Counts are kept as reported, even though 6144 x 1 GiB cannot fit in 1 GiB.
  EXPECT_EQ(t.nodes[0].pages[2].count, 6144u);
}

TEST(TopologyFixtures, EpycNps4EightNodes) {
  const HostTopology t = fixture("x86-8node-384cpu-epyc-nps4.xml");
  ASSERT_EQ(t.nodes.size(), 8u);
  EXPECT_EQ(t.cpu_count(), 384u);
  for (const auto& n : t.nodes) {
    EXPECT_EQ(n.cpus.size(), 48u);
    EXPECT_EQ(n.memory_kib, 96u * 1024 * 1024);
    EXPECT_EQ(n.pages[1].size_kib, 2048u);
    EXPECT_EQ(n.pages[1].count, 8192u);
  }
  EXPECT_EQ(t.nodes[0].cpus[0].siblings, (std::vector<CpuId>{0, 192}));
  EXPECT_EQ(t.distance(0, 1), 12);
  EXPECT_EQ(t.distance(0, 4), 32);
  EXPECT_EQ(t.distance(5, 7), 12);
  EXPECT_EQ(t.distance(6, 6), 10);
}

TEST(TopologyFixtures, SparseNodeIdsInterleavedCpusMemoryOnlyNode) {
  const HostTopology t = fixture("x86-odd-sparse-interleaved.xml");
  ASSERT_EQ(t.nodes.size(), 4u);
  EXPECT_EQ(t.nodes[1].id, 2);
  EXPECT_EQ(t.nodes[3].id, 7);
  EXPECT_TRUE(t.node(7)->cpus.empty());
  EXPECT_EQ(t.node(7)->memory_kib, 8u * 1024 * 1024);
  EXPECT_EQ(t.cpu_count(), 24u);
  EXPECT_EQ(cpu_ids(*t.node(0)), (std::vector<CpuId>{0, 3, 6, 9, 12, 15, 18, 21}));
  EXPECT_EQ(t.node(0)->cpus[0].siblings, (std::vector<CpuId>{0, 6, 12, 18}));  // four threads per core
  EXPECT_EQ(t.node(0)->cpus[1].core_id, 4);
  EXPECT_EQ(t.distance(0, 5), 20);
  EXPECT_EQ(t.distance(7, 7), 10);
}

TEST(TopologyFixtures, InterleavedTwoNodes) {
  const HostTopology t = fixture("x86-2node-16cpu-interleaved.xml");
  ASSERT_EQ(t.nodes.size(), 2u);
  EXPECT_EQ(cpu_ids(t.nodes[1]), (std::vector<CpuId>{1, 3, 5, 7, 9, 11, 13, 15}));
  EXPECT_EQ(t.nodes[1].cpus[0].siblings, (std::vector<CpuId>{1, 9}));
}

// Real hosts' capabilities, when a directory of them is beside the checkout: an extra check, never
// required (the project's own descriptions above cover the same shapes).
TEST(RealHosts, EveryRealHostParses) {
  const std::filesystem::path dir = LLMORCH_REAL_HOSTS_DIR;
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no real host files at " << dir << " (optional)";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".xml") continue;
    SCOPED_TRACE(entry.path().string());
    const HostTopology t = parse_capabilities_file(entry.path().string());
    EXPECT_FALSE(t.nodes.empty());
    EXPECT_GT(t.cpu_count(), 0u);
    for (const auto& n : t.nodes)
      for (const auto& c : n.cpus)
        EXPECT_NE(std::find(c.siblings.begin(), c.siblings.end(), c.id), c.siblings.end()) << "cpu " << c.id;
    ++count;
  }
  std::cout << "parsed " << count << " real host files from " << dir << "\n";
  EXPECT_GT(count, 0) << dir << " exists but holds no .xml file";
}

TEST(TopologyEdgeCases, OddIdsUnitsThreadsAndEmptyNodes) {
  const HostTopology t = parse_capabilities(with_cells(R"(
    <cell id='7'>
      <memory unit='GiB'>2</memory>
      <pages unit='MiB' size='2'>10</pages>
      <pages size='4'>100</pages>
      <cpus num='4'>
        <cpu id='12' socket_id='1' core_id='3' siblings='9,12,30-31'/>
        <cpu id='9' socket_id='1' core_id='3' siblings='9,12,30-31'/>
        <cpu id='31' siblings='9,12,30-31'/>
        <cpu id='30' siblings='9,12,30-31'/>
      </cpus>
    </cell>
    <cell id='3'>
      <memory unit='bytes'>1048576</memory>
      <cpus num='0'/>
    </cell>
    <cell id='5'>
      <memory unit='MiB'>512</memory>
    </cell>
    <cell id='9'>
      <cpus num='1'><cpu id='40'/></cpus>
    </cell>)"));
  ASSERT_EQ(t.nodes.size(), 4u);
  EXPECT_EQ(t.nodes[0].id, 3);  // sorted by id
  EXPECT_EQ(t.nodes[3].id, 9);
  const auto* n7 = t.node(7);
  ASSERT_NE(n7, nullptr);
  EXPECT_EQ(n7->memory_kib, 2u * 1024 * 1024);
  EXPECT_EQ(cpu_ids(*n7), (std::vector<CpuId>{9, 12, 30, 31}));
  EXPECT_EQ(n7->cpus[1].siblings, (std::vector<CpuId>{9, 12, 30, 31}));  // four threads per core
  EXPECT_EQ(n7->cpus[1].socket_id, 1);
  EXPECT_EQ(n7->cpus[2].core_id, 0);  // absent ids read as 0
  ASSERT_EQ(n7->pages.size(), 2u);
  EXPECT_EQ(n7->pages[0].size_kib, 4u);
  EXPECT_EQ(n7->pages[1].size_kib, 2048u);
  EXPECT_EQ(n7->pages[1].count, 10u);
  EXPECT_EQ(t.node(3)->memory_kib, 1024u);
  EXPECT_TRUE(t.node(3)->cpus.empty());
  EXPECT_TRUE(t.node(5)->cpus.empty());
  EXPECT_EQ(t.node(9)->memory_kib, 0u);
  EXPECT_EQ(t.node(9)->cpus[0].siblings, (std::vector<CpuId>{40}));  // no siblings attribute
  EXPECT_EQ(t.distance(7, 3), 20);
  EXPECT_EQ(t.cpu_count(), 5u);
}

TEST(TopologyEdgeCases, SiblingsListWithoutSelfIncludesSelf) {
  const HostTopology t = parse_capabilities(with_cells("<cell id='0'><cpus><cpu id='2' siblings='3'/></cpus></cell>"));
  EXPECT_EQ(t.nodes[0].cpus[0].siblings, (std::vector<CpuId>{2, 3}));
}

TEST(TopologyErrors, MalformedInputIsAClearError) {
  EXPECT_ERROR("this is not xml <", "not well-formed XML");
  EXPECT_ERROR("", "not well-formed XML");
  EXPECT_ERROR("<domain/>", "no <capabilities>");
  EXPECT_ERROR("<capabilities><host><cpu/></host></capabilities>", "no <host><topology><cells>");
  EXPECT_ERROR(with_cells(""), "lists no <cell>");
  EXPECT_ERROR(with_cells("<cell/>"), "missing attribute 'id'");
  EXPECT_ERROR(with_cells("<cell id='-1'/>"), "'-1' is not a non-negative integer");
  EXPECT_ERROR(with_cells("<cell id='x'/>"), "'x'");
  EXPECT_ERROR(with_cells("<cell id='0'/><cell id='0'/>"), "cell 0 listed twice");
  EXPECT_ERROR(with_cells("<cell id='0'><memory>12x</memory></cell>"), "cell 0 <memory>: '12x'");
  EXPECT_ERROR(with_cells("<cell id='0'><memory unit='parsecs'>1</memory></cell>"), "unknown unit 'parsecs'");
  EXPECT_ERROR(with_cells("<cell id='0'><memory unit='TiB'>99999999999999999</memory></cell>"), "too large");
  EXPECT_ERROR(with_cells("<cell id='0'><pages>5</pages></cell>"), "missing attribute 'size'");
  EXPECT_ERROR(with_cells("<cell id='0'><pages size='4'>-5</pages></cell>"), "count: '-5'");
  EXPECT_ERROR(with_cells("<cell id='0'><pages size='4'>1</pages><pages size='4'>2</pages></cell>"), "listed twice");
  EXPECT_ERROR(with_cells("<cell id='0'><distances><sibling id='0' value='ten'/></distances></cell>"), "'ten'");
  EXPECT_ERROR(with_cells("<cell id='0'><cpus><cpu socket_id='0'/></cpus></cell>"), "missing attribute 'id'");
  EXPECT_ERROR(with_cells("<cell id='0'><cpus><cpu id='1'/><cpu id='1'/></cpus></cell>"), "cpu 1 listed twice");
  EXPECT_ERROR(
      with_cells("<cell id='0'><cpus><cpu id='1'/></cpus></cell><cell id='1'><cpus><cpu id='1'/></cpus></cell>"),
      "cell 1: cpu 1 listed twice");
  EXPECT_ERROR(with_cells("<cell id='0'><cpus><cpu id='1' siblings='3-1'/></cpus></cell>"), "cpu 1: siblings");
  EXPECT_ERROR(with_cells("<cell id='0'><cpus><cpu id='1' core_id='z'/></cpus></cell>"), "core_id");
}

TEST(TopologyErrors, UnreadableFilesNameThePath) {
  const std::string missing = kHosts + "/no-such-host.xml";
  try {
    parse_capabilities_file(missing);
    FAIL() << "no error for a missing file";
  } catch (const CapabilitiesError& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_capabilities_file(kHosts), CapabilitiesError);  // a directory
  const auto readme = kHosts + "/README.md";
  try {
    parse_capabilities_file(readme);
    FAIL() << "README.md parsed as capabilities";
  } catch (const CapabilitiesError& e) {
    EXPECT_NE(std::string(e.what()).find(readme), std::string::npos) << e.what();
  }
}

TEST(TopologyFixtures, EveryFixtureParses) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kHosts)) {
    if (entry.path().extension() != ".xml") continue;
    SCOPED_TRACE(entry.path().string());
    const HostTopology t = parse_capabilities_file(entry.path().string());
    EXPECT_FALSE(t.nodes.empty());
    EXPECT_GT(t.cpu_count(), 0u);
    ++count;
  }
  EXPECT_GE(count, 4);
}

}  // namespace
}  // namespace llmorch::orch
