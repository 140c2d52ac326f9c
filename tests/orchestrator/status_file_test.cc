#include "llmorch/orch/status_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;

class StatusFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("llmorch-status-" + std::to_string(::getpid()));
    fs::remove_all(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

TEST_F(StatusFile, RoundTripWithEveryField) {
  DaemonStatus s;
  s.pid = 42;
  s.started_at = std::chrono::system_clock::time_point{} + std::chrono::milliseconds(1'764'064'800'123);
  s.last_tick_at = s.started_at + std::chrono::seconds(5);
  s.alpha = 0.5;
  s.interval_ms = 250;
  s.connected = true;
  VmPlan p;
  p.name = "vm1";
  p.priority = 2;
  p.source = PrioritySource::Agent;
  p.template_priority = 4;
  p.reported_priority = 2;
  p.weight = 0.25;
  p.cpu_shares = 512;
  p.cpus = {4, 5};
  p.vcpus_online = 2;
  p.reason = "why";
  p.flapping = true;
  s.plan.vms.push_back(p);
  AgentState a;
  protocol::Report r;
  r.seq = 7;
  r.priority = 2;
  r.llm_waiting = 3;
  a.last_report = r;
  a.last_report_age_s = 0.5;
  a.fresh = true;
  a.counters.malformed = 2;
  a.hostile = true;
  s.agents["vm1"] = a;
  s.last_change["vm1"] = {s.last_tick_at, "vm vm1: cpu_shares 1024 -> 512 (why)"};
  s.report_to_apply_ms = {.n = 3, .p50 = 4.5, .p99 = 9.25, .max = 9.25};

  write_status_file(dir.string(), s);
  EXPECT_EQ(fs::status(dir).permissions() & fs::perms::all, fs::perms(0755));
  EXPECT_FALSE(fs::exists(dir / "status.json.tmp"));
  const auto j = read_status_file(dir.string());
  EXPECT_EQ(j["pid"], 42);
  EXPECT_EQ(j["started_at"], "2025-11-25T10:00:00.123Z");
  EXPECT_EQ(j["interval_ms"], 250);
  EXPECT_EQ(j["daemon"]["report_to_apply_ms"],
            nlohmann::json({{"n", 3}, {"p50", 4.5}, {"p99", 9.25}, {"max", 9.25}}));
  const auto& v = j["vms"][0];
  EXPECT_EQ(v["priority_source"], "agent");
  EXPECT_EQ(v["template_priority"], 4.0);
  EXPECT_EQ(v["report"]["seq"], 7);
  EXPECT_EQ(v["report"]["llm_waiting"], 3);
  EXPECT_TRUE(v["report"]["llm_running"].is_null());
  EXPECT_EQ(v["report_age_s"], 0.5);
  EXPECT_EQ(v["agent"]["malformed"], 2);
  EXPECT_TRUE(v["hostile"].get<bool>());
  EXPECT_TRUE(v["flapping"].get<bool>());
  EXPECT_EQ(v["cpus"], nlohmann::json({4, 5}));
  EXPECT_EQ(v["vcpus_online"], 2);
  EXPECT_EQ(v["last_change_at"], "2025-11-25T10:00:05.123Z");
  EXPECT_EQ(j["health"], "ok");
  EXPECT_EQ(j["problems"], nlohmann::json::array());
}

TEST(StatusHealth, ProblemsDegradeAndDisconnectedWins) {
  DaemonStatus s;
  s.connected = true;
  EXPECT_EQ(health(s), "ok");
  s.problems["b"];  // an entry without problems is healthy
  EXPECT_EQ(health(s), "ok");
  const auto since = std::chrono::system_clock::time_point{} + std::chrono::seconds(1'764'064'800);
  s.problems["b"].push_back({"unresponsive", "libvirt call did not return within 2 s", since});
  s.problems["a"].push_back({"flapping", "priority changed 9 times in 5 s", since});
  EXPECT_EQ(health(s), "degraded");
  const auto j = status_to_json(s);
  EXPECT_EQ(j["health"], "degraded");
  ASSERT_EQ(j["problems"].size(), 2u);
  EXPECT_EQ(j["problems"][0]["vm"], "a");  // sorted by VM
  EXPECT_EQ(j["problems"][1]["kind"], "unresponsive");
  EXPECT_EQ(j["problems"][1]["since"], "2025-11-25T10:00:00.000Z");
  s.connected = false;
  EXPECT_EQ(health(s), "disconnected");
}

TEST_F(StatusFile, MissingAndBrokenFilesSayWhatToDo) {
  try {
    read_status_file(dir.string());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is llmorchd running?"), std::string::npos);
  }
  fs::create_directories(dir);
  std::ofstream(dir / "status.json") << "{not json";
  EXPECT_THROW(read_status_file(dir.string()), std::runtime_error);
}

}  // namespace
}  // namespace llmorch::orch
