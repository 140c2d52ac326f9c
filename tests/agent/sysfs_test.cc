#include "sysfs.h"

#include <gtest/gtest.h>

#include "fake_root.h"

namespace llmorch::agent {
namespace {

TEST(PortDiscovery, FindsThePortByChannelName) {
  FakeRoot sys;
  sys.write("class/virtio-ports/vport0p1/name", "org.qemu.guest_agent.0\n");
  sys.write("class/virtio-ports/vport1p2/name", "org.llmorch.agent.0\n");
  EXPECT_EQ(find_port(sys.path(), "/dev", kDefaultPortName), "/dev/vport1p2");
  EXPECT_EQ(find_port(sys.path(), "/dev", "org.qemu.guest_agent.0"), "/dev/vport0p1");
  EXPECT_FALSE(find_port(sys.path(), "/dev", "org.other.0"));
  EXPECT_FALSE(find_port(sys / "nothing", "/dev", kDefaultPortName));
}

TEST(CpuList, Parses) {
  EXPECT_EQ(parse_cpu_list("0-3,6,8-9\n"), (std::vector<int>{0, 1, 2, 3, 6, 8, 9}));
  EXPECT_EQ(parse_cpu_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_cpu_list(""), (std::vector<int>{}));
  EXPECT_FALSE(parse_cpu_list("3-1"));
  EXPECT_FALSE(parse_cpu_list("a"));
  EXPECT_FALSE(parse_cpu_list("0-99999999"));
}

class CpuControlTest : public ::testing::Test {
 protected:
  // cpu0 has no online file (as on x86); cpu1..cpu3 are hotpluggable, all offline: freshly hot-added.
  void SetUp() override {
    sys.mkdirs("devices/system/cpu/cpu0");
    for (int i = 1; i <= 3; ++i) sys.write("devices/system/cpu/cpu" + std::to_string(i) + "/online", "0\n");
    sys.mkdirs("devices/system/cpu/cpufreq");  // not a CPU
    sys.write("devices/system/cpu/online", "0\n");
  }
  std::string state(int cpu) { return sys.read("devices/system/cpu/cpu" + std::to_string(cpu) + "/online"); }
  FakeRoot sys;
};

TEST_F(CpuControlTest, OnlinesTheLowestAndOfflinesTheRest) {
  CpuControl c(sys.path());
  EXPECT_EQ(c.present(), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_TRUE(c.set_online(3).empty());
  EXPECT_EQ(state(1), "1");
  EXPECT_EQ(state(2), "1");
  EXPECT_EQ(state(3), "0");
  EXPECT_TRUE(c.set_online(1).empty());
  EXPECT_EQ(state(1), "0");
  EXPECT_EQ(state(2), "0");
}

TEST_F(CpuControlTest, NeverOfflinesCpu0EvenIfItHasAnOnlineFile) {
  sys.write("devices/system/cpu/cpu0/online", "1\n");
  CpuControl c(sys.path());
  EXPECT_TRUE(c.set_online(0).empty());  // clamped to 1
  EXPECT_EQ(state(0), "1");
  EXPECT_TRUE(c.set_online(100).empty());  // clamped to the 4 present
  for (int i = 0; i <= 3; ++i) EXPECT_EQ(state(i), "1") << i;
}

TEST_F(CpuControlTest, ReadsOnlineList) {
  sys.write("devices/system/cpu/online", "0-1\n");
  EXPECT_EQ(CpuControl(sys.path()).online(), (std::vector<int>{0, 1}));
}

}  // namespace
}  // namespace llmorch::agent
