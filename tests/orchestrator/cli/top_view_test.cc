// llmorch top's frame (top_view.h): status files in, lines out.
#include "top_view.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace llmorch::cli {
namespace {

orch::StatusFileVm vm(const std::string& name, double weight, std::optional<double> cpu_time_s) {
  orch::StatusFileVm v;
  v.name = name;
  v.effective_priority = 2;
  v.priority_source = "agent";
  v.weight = weight;
  v.cpu_shares = static_cast<int>(weight * 2048);
  v.cpu_time_s = cpu_time_s;
  v.vcpus_online = 2;
  v.report_age_s = 0.4;
  v.report_fresh = true;
  v.agent.connected = true;
  v.balloon.actual_mib = 200;
  v.balloon.floor_mib = 96;
  return v;
}

orch::StatusFile file(const std::string& tick, std::vector<orch::StatusFileVm> vms) {
  orch::StatusFile f;
  f.pid = 4242;
  f.last_tick_at = tick;
  f.health = "ok";
  f.connected = true;
  f.vms = std::move(vms);
  return f;
}

TEST(TopView, SortsByWeightAndComputesCpuFromTwoFiles) {
  const orch::StatusFile before = file("2026-12-01T10:00:00.000Z", {vm("light", 0.25, 10.0), vm("heavy", 0.75, 20.0)});
  const orch::StatusFile now = file("2026-12-01T10:00:02.000Z", {vm("light", 0.25, 10.5), vm("heavy", 0.75, 23.0)});
  const std::vector<TopRow> rows = top_rows({.status = &now, .previous = &before});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "heavy");
  EXPECT_EQ(rows[1].name, "light");
  ASSERT_TRUE(rows[0].cpu_pct);
  EXPECT_DOUBLE_EQ(*rows[0].cpu_pct, 150.0);  // 3 CPU seconds in 2 s
  EXPECT_DOUBLE_EQ(*rows[1].cpu_pct, 25.0);
  EXPECT_FALSE(top_rows({.status = &now})[0].cpu_pct) << "one file: no CPU %";
}

TEST(TopView, CpuIsUnknownWithoutTimesOrAfterARestart) {
  const orch::StatusFile before = file("2026-12-01T10:00:00.000Z", {vm("a", 0.5, 50.0), vm("b", 0.5, std::nullopt)});
  const orch::StatusFile now = file("2026-12-01T10:00:01.000Z",
                                    {vm("a", 0.5, 1.0), vm("b", 0.5, 3.0), vm("c", 0.1, 1.0)});
  for (const TopRow& r : top_rows({.status = &now, .previous = &before})) EXPECT_FALSE(r.cpu_pct) << r.name;
  const orch::StatusFile same_tick = file(now.last_tick_at, now.vms);
  EXPECT_FALSE(top_rows({.status = &now, .previous = &same_tick})[0].cpu_pct);
}

TEST(TopView, FlagsNameEveryProblem) {
  orch::StatusFileVm v = vm("a", 0.5, std::nullopt);
  v.hostile = true;
  v.flapping = true;
  orch::StatusFileVm quiet = vm("b", 0.4, std::nullopt);
  orch::StatusFile f = file("2026-12-01T10:00:00.000Z", {v, quiet});
  f.problems.push_back({"a", "unresponsive", "QEMU does not answer", "2026-12-01T09:59:00.000Z"});
  f.problems.push_back({"a", "flapping", "priority flips", "2026-12-01T09:59:00.000Z"});
  const std::vector<TopRow> rows = top_rows({.status = &f});
  EXPECT_EQ(rows[0].flags, "hostile,flapping,unresponsive");  // flapping once
  EXPECT_EQ(rows[1].flags, "-");
}

TEST(TopView, FrameHasHeaderSummaryTitlesAndOneLinePerVm) {
  const orch::StatusFile before = file("2026-12-01T10:00:00.000Z",
                                       {vm("vm-small", 0.25, 10.0), vm("vm-big", 0.75, 20.0)});
  const orch::StatusFile now = file("2026-12-01T10:00:02.000Z", {vm("vm-small", 0.25, 10.5), vm("vm-big", 0.75, 23.0)});
  const std::vector<std::string> lines = render_top(
      {.status = &now, .previous = &before, .why_not = "", .age_s = 0.5, .clock = "10:00:02", .live = true}, 120);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0], "llmorch top 10:00:02  llmorchd pid 4242, ok, alpha 0.80, tick 1000 ms, last 0.5 s ago");
  EXPECT_EQ(lines[1], "2 VMs, 0 flagged, CPU 175%   (q quits)");
  EXPECT_EQ(lines[3], "NAME      PRIO SRC       WEIGHT SHARES   CPU% VCPU   BAL/FLOOR    AGE FLAGS");
  EXPECT_EQ(lines[4], "vm-big     2.0 agent      0.750   1536  150.0    2      200/96   0.4s -");
  EXPECT_EQ(lines[5], "vm-small   2.0 agent      0.250    512   25.0    2      200/96   0.4s -");
}

TEST(TopView, LinesAreCutToTheWidth) {
  const orch::StatusFile now = file("2026-12-01T10:00:02.000Z", {vm(std::string(40, 'x'), 0.5, 1.0)});
  for (std::size_t width : {20u, 33u, 80u})
    for (const std::string& line : render_top({.status = &now, .clock = "10:00:02"}, width))
      EXPECT_LE(line.size(), width) << line;
  // A long name is cut to 24 columns, so the numbers still line up.
  EXPECT_EQ(render_top({.status = &now}, 200)[4].substr(0, 30), std::string(24, 'x') + "   2.0");
}

TEST(TopView, SaysWhenLlmorchdIsNotRunning) {
  const std::vector<std::string> lines = render_top(
      {.status = nullptr, .why_not = "cannot read /run/llmorch/status.json", .clock = "10:00:02"}, 200);
  EXPECT_EQ(lines[0], "llmorch top 10:00:02  llmorchd: not running: cannot read /run/llmorch/status.json");
  EXPECT_EQ(lines.back(), "(no status: start llmorchd, or pass its --state-dir)");
}

}  // namespace
}  // namespace llmorch::cli
