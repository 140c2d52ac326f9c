// The one placement-to-JSON of `llmorch plan --json` and `llmorch place --json`.
#include "placement_json.h"

#include <gtest/gtest.h>

namespace llmorch::cli {
namespace {

TEST(PlacementJson, EveryFieldOfAPlacement) {
  policy::Placement p;
  p.name = "a";
  p.nodes = {1, 3};
  p.cpus = {8, 9, 24};
  p.memory_mib_per_node = {{1, 2048}, {3, 1024}};
  p.cells = {{.host_node = 1, .vcpus = {0, 1}, .memory_mib = 2048}, {.host_node = 3, .vcpus = {2}, .memory_mib = 1024}};
  p.cpu_policy = policy::CpuPolicy::Shared;
  p.hugepage_kib = 1048576;
  p.vcpus = 3;
  const nlohmann::ordered_json j = placement_json(p);
  EXPECT_EQ(j.dump(), R"({"name":"a","nodes":[1,3],"cpus":[8,9,24],"memory_mib_per_node":{"1":2048,"3":1024},)"
                      R"("cpu_policy":"shared","hugepages":"1G","cells":[{"node":1,"vcpus":[0,1],"memory_mib":2048},)"
                      R"({"node":3,"vcpus":[2],"memory_mib":1024}]})");
  p.hugepage_kib = 2048;
  EXPECT_EQ(placement_json(p)["hugepages"], "2M");
  p.hugepage_kib = 0;
  p.cpu_policy = policy::CpuPolicy::Dedicated;
  EXPECT_TRUE(placement_json(p)["hugepages"].is_null());
  EXPECT_EQ(placement_json(p)["cpu_policy"], "dedicated");
}

}  // namespace
}  // namespace llmorch::cli
