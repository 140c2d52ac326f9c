#include "settings.h"

#include <gtest/gtest.h>

#include "control.h"

namespace llmorch::agent {
namespace {

TEST(Settings, ParsesKernelCommandLine) {
  std::vector<std::string> warnings;
  auto c = parse_cmdline(
      "console=ttyS0 llmorch.priority=2.5 quiet llmorch.floor_mib=160 "
      "llmorch.priority_at=30:1 llmorch.priority_at=10:4\n",
      &warnings);
  EXPECT_EQ(c.layer.priority, 2.5);
  EXPECT_EQ(c.layer.floor_mib, 160u);
  ASSERT_EQ(c.scheduled.size(), 2u);
  EXPECT_EQ(c.scheduled[0].after_s, 10);  // sorted by time
  EXPECT_TRUE(warnings.empty());
}

TEST(Settings, SkipsInvalidValuesWithWarnings) {
  std::vector<std::string> warnings;
  auto c = parse_cmdline(
      "llmorch.priority=0 llmorch.floor_mib=-5 llmorch.priority_at=x:1 "
      "llmorch.priority_at=5:nan llmorch.priority=inf",
      &warnings);
  EXPECT_FALSE(c.layer.priority);
  EXPECT_FALSE(c.layer.floor_mib);
  EXPECT_TRUE(c.scheduled.empty());
  EXPECT_EQ(warnings.size(), 5u);
}

TEST(Settings, ParsesConfigFile) {
  std::vector<std::string> warnings;
  auto f = parse_config_file(
      "# comment\n\npriority = 3\nfloor_mib=512\ninterval_ms=250\n"
      "llm_metrics=http://127.0.0.1:8080/metrics\nbogus=1\ninterval_ms=5\nnoequals\n",
      &warnings);
  EXPECT_EQ(f.layer.priority, 3.0);
  EXPECT_EQ(f.layer.floor_mib, 512u);
  EXPECT_EQ(f.interval_ms, 250u);
  EXPECT_EQ(f.llm_metrics, "http://127.0.0.1:8080/metrics");
  EXPECT_EQ(warnings.size(), 3u);
}

TEST(Settings, PrecedenceIsCmdlineThenFileThenRuntime) {
  std::vector<std::string> w;
  Settings none(parse_cmdline("", &w), Layer{});
  EXPECT_FALSE(none.priority());
  EXPECT_EQ(none.floor_mib(), 0u);

  Settings s(parse_cmdline("llmorch.priority=5 llmorch.floor_mib=100", &w), Layer{});
  EXPECT_EQ(s.priority(), 5.0);
  EXPECT_EQ(s.floor_mib(), 100u);

  Settings f(parse_cmdline("llmorch.priority=5 llmorch.floor_mib=100", &w), Layer{3.0, std::nullopt});
  EXPECT_EQ(f.priority(), 3.0);
  EXPECT_EQ(f.floor_mib(), 100u);  // the file says nothing about the floor
  f.set_runtime_floor(64);
  EXPECT_EQ(f.floor_mib(), 64u);
  f.set_runtime_priority(1.5);
  EXPECT_EQ(f.priority(), 1.5);
}

TEST(Settings, ScheduledPriorityReplacesTheCommandLineValue) {
  std::vector<std::string> w;
  Settings s(parse_cmdline("llmorch.priority=5 llmorch.priority_at=10:2 llmorch.priority_at=20:1", &w), Layer{});
  s.advance(9.9);
  EXPECT_EQ(s.priority(), 5.0);
  s.advance(10);
  EXPECT_EQ(s.priority(), 2.0);
  s.advance(100);  // both due: the later one wins
  EXPECT_EQ(s.priority(), 1.0);
  s.set_runtime_priority(7);
  EXPECT_EQ(s.priority(), 7.0);

  Settings with_file(parse_cmdline("llmorch.priority_at=0:2", &w), Layer{4.0, std::nullopt});
  with_file.advance(1);
  EXPECT_EQ(with_file.priority(), 4.0);  // the file outranks the command line
}

TEST(Control, ParsesRequests) {
  auto p = parse_control_request("set-priority 2.5\n");
  ASSERT_TRUE(p);
  EXPECT_EQ(std::get<SetPriority>(*p).priority, 2.5);
  auto f = parse_control_request("set-floor 512");
  ASSERT_TRUE(f);
  EXPECT_EQ(std::get<SetFloor>(*f).floor_mib, 512u);
  EXPECT_FALSE(parse_control_request("set-priority 0"));
  EXPECT_FALSE(parse_control_request("set-priority nan"));
  EXPECT_FALSE(parse_control_request("set-floor -1"));
  EXPECT_FALSE(parse_control_request("reboot 1"));
  EXPECT_FALSE(parse_control_request("set-priority"));
}

}  // namespace
}  // namespace llmorch::agent
