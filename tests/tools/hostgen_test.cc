// tools/hostgen: the checked-in host descriptions are its output, and what it generates is what the
// topology parser and placement read as the host it describes.
#include "hostgen.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "llmorch/orch/topology.h"

namespace llmorch::tools {
namespace {

namespace fs = std::filesystem;
using policy::CpuId;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// LLMORCH_UPDATE_GOLDEN=1 rewrites the files instead (then review `git diff tests/fixtures/hosts`).
TEST(HostGenFixtures, CheckedInFilesAreTheGeneratorsOutput) {
  const bool update = std::getenv("LLMORCH_UPDATE_GOLDEN") != nullptr;
  int xml_files = 0;
  for (const auto& e : fs::directory_iterator(LLMORCH_HOSTS_DIR)) xml_files += e.path().extension() == ".xml";
  EXPECT_EQ(xml_files, static_cast<int>(presets().size()))
      << "a file in " << LLMORCH_HOSTS_DIR << " has no description in hostgen.cc, or the reverse";
  for (const HostSpec& spec : presets()) {
    SCOPED_TRACE(spec.name);
    const fs::path file = fs::path(LLMORCH_HOSTS_DIR) / (spec.name + ".xml");
    const std::string xml = render_capabilities(spec);
    if (update) std::ofstream(file, std::ios::trunc) << xml;
    EXPECT_EQ(slurp(file), xml) << file
                                << " differs from its description; regenerate it (tests/fixtures/hosts/README.md)";
  }
}

TEST(HostGen, GeometryBecomesTheTopologyTheParserReads) {
  HostSpec s;
  s.sockets = 2;
  s.nodes_per_socket = 2;
  s.cores_per_node = 3;
  s.threads_per_core = 2;
  s.memory_kib = {1 << 20, 2 << 20, 3 << 20, 4 << 20};
  s.hugepages_2m = {16};
  s.same_socket = 11;
  s.remote = 31;
  const policy::HostTopology t = orch::parse_capabilities(render_capabilities(s));
  ASSERT_EQ(t.nodes.size(), 4u);
  EXPECT_EQ(t.cpu_count(), 24u);
  // SMT split: 12 cores, siblings n and n + 12; node 1 holds cores 3..5.
  EXPECT_EQ(t.nodes[1].cpus.front().id, 3);
  EXPECT_EQ(t.nodes[1].cpus.front().siblings, (std::vector<CpuId>{3, 15}));
  EXPECT_EQ(t.nodes[3].cpus.back().id, 23);
  EXPECT_EQ(t.nodes[2].cpus[0].socket_id, 1);
  EXPECT_EQ(t.nodes[2].memory_kib, 3u << 20);
  EXPECT_EQ(t.distance(0, 1), 11);
  EXPECT_EQ(t.distance(1, 2), 31);
  EXPECT_EQ(t.distance(3, 3), 10);
  ASSERT_EQ(t.nodes[0].pages.size(), 3u);
  EXPECT_EQ(t.nodes[0].pages[1].count, 16u);
  EXPECT_EQ(t.nodes[0].pages[0].count, ((1u << 20) - 16 * 2048) / 4);  // 4 KiB pages: the rest
}

TEST(HostGen, AdjacentAndInterleavedNumbering) {
  HostSpec s;
  s.sockets = 2;
  s.cores_per_node = 2;
  s.threads_per_core = 2;
  s.numbering = HostSpec::Numbering::Adjacent;
  policy::HostTopology t = orch::parse_capabilities(render_capabilities(s));
  EXPECT_EQ(t.nodes[1].cpus[0].siblings, (std::vector<CpuId>{4, 5}));
  s.numbering = HostSpec::Numbering::Interleaved;
  t = orch::parse_capabilities(render_capabilities(s));
  std::vector<CpuId> ids;
  for (const auto& c : t.nodes[1].cpus) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<CpuId>{1, 3, 5, 7}));
}

TEST(HostGen, InconsistentSpecsAreClearErrors) {
  HostSpec s;
  s.sockets = 3;
  s.memory_kib = {1, 2};
  EXPECT_THROW(
      {
        try {
          render_capabilities(s);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("memory_kib: 2 values for 3 nodes"), std::string::npos) << e.what();
          throw;
        }
      },
      std::invalid_argument);
  s = HostSpec{};
  s.sockets = 2;
  s.node_ids = {1, 1};
  EXPECT_THROW(render_capabilities(s), std::invalid_argument);
  s = HostSpec{};
  s.memory_only = {{.id = 0, .memory_kib = 1}};
  EXPECT_THROW(render_capabilities(s), std::invalid_argument);  // node 0 twice
  s = HostSpec{};
  s.cores_per_node = 0;
  EXPECT_THROW(render_capabilities(s), std::invalid_argument);
  s = HostSpec{};
  s.core_ids = {0};
  EXPECT_THROW(render_capabilities(s), std::invalid_argument);
}

TEST(HostGen, PresetsAreNamedOnce) {
  std::set<std::string> names;
  for (const HostSpec& s : presets()) EXPECT_TRUE(names.insert(s.name).second) << s.name;
  EXPECT_NE(find_preset("x86-8node-384cpu-epyc-nps4"), nullptr);
  EXPECT_EQ(find_preset("nope"), nullptr);
}

}  // namespace
}  // namespace llmorch::tools
