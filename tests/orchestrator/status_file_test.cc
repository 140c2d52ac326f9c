#include "llmorch/orch/status_file.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>

#include <gtest/gtest.h>

namespace llmorch::orch {
namespace {

namespace fs = std::filesystem;

class StatusFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("llmorch-status-" + std::to_string(::getpid()));
    fs::remove_all(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

TEST_F(StatusFileTest, RoundTripWithEveryField) {
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
  EXPECT_EQ(j["daemon"]["report_to_apply_ms"], nlohmann::json({{"n", 3}, {"p50", 4.5}, {"p99", 9.25}, {"max", 9.25}}));
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

// ---- issue 12, debt 4: status.json read back through a typed status_from_json ---------------------

// Every field status.json has, set to something other than its default.
DaemonStatus full_status() {
  DaemonStatus s;
  s.pid = 42;
  s.started_at = std::chrono::system_clock::time_point{} + std::chrono::milliseconds(1'764'064'800'123);
  s.last_tick_at = s.started_at + std::chrono::seconds(5);
  s.alpha = 0.5;
  s.interval_ms = 250;
  s.dry_run = true;
  s.connected = true;
  for (const char* name : {"vm2", "vm1"}) {
    VmPlan p;
    p.name = name;
    p.priority = 2;
    p.source = PrioritySource::Stale;
    p.template_priority = 4;
    p.reported_priority = 2;
    p.demand_cpus = 1.5;
    p.weight = 0.25;
    p.cpu_shares = 512;
    p.cpus = {4, 5};
    p.vcpus_online = 2;
    p.reason = std::string("why ") + name;
    p.flapping = true;
    s.plan.vms.push_back(p);
  }
  s.plan.memory.vms.push_back({.name = "vm1",
                               .actual_mib = 200,
                               .target_mib = 180,
                               .floor_mib = 96,
                               .max_mib = 256,
                               .reason = "shrink",
                               .left_alone = false,
                               .held = false});
  AgentState a;
  protocol::Report r;
  r.seq = 7;
  r.priority = 2;
  r.cpu_pct = 12.5;
  r.psi_cpu_some10 = 1.25;
  r.runnable = 3;
  r.ncpu_online = 2;
  r.mem_total_kib = 4096;
  r.mem_avail_kib = 1024;
  r.psi_mem_some10 = 0.5;
  r.floor_mib = 64;
  r.llm_running = 1;
  r.llm_waiting = 3;
  r.interval_ms = 500;
  a.last_report = r;
  a.last_report_age_s = 0.5;
  a.fresh = true;
  a.connected = true;
  a.counters = {.frames_ok = 1, .malformed = 2, .oversized = 3, .rate_limited = 4, .unknown_keys = 5, .clamped = 6};
  a.hostile = true;
  a.last_error = "oversized frame";
  s.agents["vm1"] = a;
  s.last_change["vm1"] = {s.last_tick_at, "vm vm1: cpu_shares 1024 -> 512 (why)"};
  s.balloon_change["vm1"] = {s.last_tick_at, "balloon 256 -> 200 MiB"};
  s.report_to_apply_ms = {.n = 3, .p50 = 4.5, .p99 = 9.25, .max = 9.25};
  s.problems["vm2"].push_back({"flapping", "priority changed 9 times in 5 s", s.started_at});
  s.cpu_time_s["vm1"] = 12.5;  // vm2's statistics were not read
  return s;
}

TEST(StatusFromJson, ReadsBackEverythingTheDaemonWrites) {
  const DaemonStatus s = full_status();
  const nlohmann::json written = status_to_json(s);
  // Through the text, as the CLI reads it.
  const orch::StatusFile f = status_from_json(nlohmann::json::parse(written.dump(2)));
  EXPECT_EQ(to_json(f), written);  // nothing written is lost or changed on the way back
  EXPECT_EQ(f.pid, 42);
  EXPECT_EQ(f.last_tick_at, "2025-11-25T10:00:05.123Z");
  EXPECT_EQ(f.interval_ms, 250);
  EXPECT_TRUE(f.dry_run);
  EXPECT_EQ(f.health, "degraded");
  ASSERT_EQ(f.problems.size(), 1u);
  EXPECT_EQ(f.problems[0].vm, "vm2");
  EXPECT_EQ(f.report_to_apply_ms.p99, 9.25);
  ASSERT_EQ(f.vms.size(), 2u);
  EXPECT_EQ(f.vms[0].name, "vm1");  // sorted by name
  const orch::StatusFileVm* v = f.vm("vm1");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->report, s.agents.at("vm1").last_report);
  EXPECT_EQ(v->priority_source, "stale");
  EXPECT_EQ(v->agent.clamped, 6u);
  EXPECT_EQ(v->agent.last_error, "oversized frame");
  EXPECT_EQ(v->cpus, std::vector<policy::CpuId>({4, 5}));
  EXPECT_EQ(v->vcpus_online, 2);
  EXPECT_EQ(v->cpu_time_s, 12.5);
  EXPECT_EQ(v->last_change, "vm vm1: cpu_shares 1024 -> 512 (why)");
  EXPECT_EQ(v->balloon.target_mib, 180u);
  EXPECT_EQ(v->balloon.last_change_reason, "balloon 256 -> 200 MiB");
  EXPECT_FALSE(v->balloon.left_alone);
  const orch::StatusFileVm* v2 = f.vm("vm2");  // no agent, no balloon plan: the nulls come back as such
  ASSERT_NE(v2, nullptr);
  EXPECT_FALSE(v2->report.has_value());
  EXPECT_FALSE(v2->report_age_s.has_value());
  EXPECT_FALSE(v2->cpu_time_s.has_value());  // its statistics were not read
  EXPECT_FALSE(v2->balloon.actual_mib.has_value());
  EXPECT_TRUE(v2->balloon.left_alone);
  EXPECT_EQ(f.vm("vm3"), nullptr);
}

// status_text writes status.json without building the DOM; it must be exactly what the DOM dumps.
std::string dom_text(const StatusFile& f) {
  return to_json(f).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

TEST(StatusText, IsByteForByteWhatTheDomDumps) {
  const StatusFile full = status_file_of(full_status());
  EXPECT_EQ(status_text(full), dom_text(full));
  EXPECT_EQ(status_text(full), status_to_json(full_status()).dump(2) + "\n");
  const StatusFile empty = status_file_of(DaemonStatus{});  // no VM, no problem: "[]"
  EXPECT_EQ(status_text(empty), dom_text(empty));
}

// Random values in every field, including the awkward ones: strings to escape (quotes, control
// characters, UTF-8, invalid UTF-8), doubles of every magnitude, -0, NaN and infinities (null), empty
// and missing things.
TEST(StatusText, IsByteForByteWhatTheDomDumpsForRandomContent) {
  std::mt19937_64 rng(20261202);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
  auto text = [&] {
    static const std::vector<std::string> parts{"vm-1",
                                                "a \"quoted\" word",
                                                "back\\slash",
                                                "tab\there",
                                                "line\nbreak",
                                                std::string("nul\0byte", 8),
                                                "\x01\x1f\x7f",
                                                "caf\xc3\xa9 \xe2\x82\xac",
                                                "bad \xff\xfe utf-8",
                                                "\xc3",
                                                ""};
    std::string s;
    for (int k = pick(3); k >= 0; --k) s += parts[static_cast<std::size_t>(pick(static_cast<int>(parts.size())))];
    return s;
  };
  auto real = [&]() -> double {
    switch (pick(8)) {
      case 0: return 0.0;
      case 1: return -0.0;
      case 2: return std::numeric_limits<double>::quiet_NaN();
      case 3: return pick(2) ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
      case 4: return static_cast<double>(pick(2000) - 1000);
      case 5: return std::ldexp(std::uniform_real_distribution<double>(-1, 1)(rng), pick(2000) - 1000);
      default: return std::uniform_real_distribution<double>(-1e6, 1e6)(rng);
    }
  };
  auto whole = [&] { return pick(2) ? rng() : rng() % 100; };
  auto maybe_real = [&]() -> std::optional<double> { return pick(3) ? std::optional(real()) : std::nullopt; };
  auto maybe_text = [&]() -> std::optional<std::string> { return pick(3) ? std::optional(text()) : std::nullopt; };
  auto maybe_whole = [&]() -> std::optional<std::uint64_t> { return pick(3) ? std::optional(whole()) : std::nullopt; };
  for (int round = 0; round < 200; ++round) {
    StatusFile f;
    f.pid = static_cast<int>(rng());
    f.started_at = text();
    f.last_tick_at = text();
    f.alpha = real();
    f.interval_ms = static_cast<int>(rng());
    f.dry_run = pick(2);
    f.connected = pick(2);
    f.health = text();
    for (int k = pick(3); k > 0; --k) f.problems.push_back({text(), text(), text(), text()});
    f.report_to_apply_ms = {.n = whole(), .p50 = maybe_real(), .p99 = maybe_real(), .max = maybe_real()};
    for (int k = pick(4); k > 0; --k) {
      StatusFileVm v;
      v.name = text();
      v.effective_priority = real();
      v.priority_source = text();
      v.template_priority = real();
      v.reported_priority = maybe_real();
      if (pick(2)) {
        protocol::Report r;
        r.seq = whole();
        r.priority = maybe_real();
        r.cpu_pct = real();
        r.psi_cpu_some10 = maybe_real();
        r.runnable = whole();
        r.ncpu_online = whole();
        r.mem_total_kib = whole();
        r.mem_avail_kib = whole();
        r.psi_mem_some10 = maybe_real();
        r.floor_mib = whole();
        r.llm_running = maybe_whole();
        r.llm_waiting = maybe_whole();
        r.interval_ms = whole();
        v.report = r;
      }
      v.report_age_s = maybe_real();
      v.report_fresh = pick(2);
      v.agent = {.connected = pick(2) == 1,
                 .ok = whole(),
                 .malformed = whole(),
                 .oversized = whole(),
                 .rate_limited = whole(),
                 .unknown_keys = whole(),
                 .clamped = whole(),
                 .hostile = pick(2) == 1,
                 .last_error = text()};
      v.hostile = pick(2);
      v.flapping = pick(2);
      v.demand_cpus = real();
      v.weight = real();
      v.cpu_shares = static_cast<int>(rng());
      for (int c = pick(4); c > 0; --c) v.cpus.push_back(static_cast<policy::CpuId>(rng()));
      if (pick(2)) v.vcpus_online = static_cast<int>(rng());
      if (pick(2)) v.cpu_time_s = real();
      v.reason = text();
      v.last_change_at = maybe_text();
      v.last_change = maybe_text();
      v.balloon = {.actual_mib = maybe_whole(),
                   .target_mib = maybe_whole(),
                   .floor_mib = whole(),
                   .max_mib = whole(),
                   .left_alone = pick(2) == 1,
                   .reason = text(),
                   .last_change_at = maybe_text(),
                   .last_change_reason = maybe_text()};
      f.vms.push_back(v);
    }
    const std::string fast = status_text(f);
    ASSERT_EQ(fast, dom_text(f)) << "round " << round;
    EXPECT_TRUE(nlohmann::json::accept(fast));
  }
}

TEST(StatusFromJson, NamesTheFieldItCannotRead) {
  const nlohmann::json good = status_to_json(full_status());
  auto message = [](const nlohmann::json& j) -> std::string {
    try {
      status_from_json(j);
    } catch (const StatusFileError& e) {
      return e.what();
    }
    return "(no error)";
  };
  nlohmann::json j = good;
  j["vms"][1]["balloon"].erase("max_mib");
  EXPECT_NE(message(j).find("status.json: vms[1].balloon.max_mib is missing; was it written by another llmorchd "
                            "version?"),
            std::string::npos)
      << message(j);
  j = good;
  j["vms"][0]["cpus"] = "4,5";
  EXPECT_NE(message(j).find("vms[0].cpus is not an array of CPU numbers"), std::string::npos) << message(j);
  j = good;
  j["vms"][0]["report"]["seq"] = -1;
  EXPECT_NE(message(j).find("vms[0].report.seq is not a whole number >= 0"), std::string::npos) << message(j);
  j = good;
  j["vms"][0]["last_change"] = 3;
  EXPECT_NE(message(j).find("vms[0].last_change is neither null nor a string"), std::string::npos) << message(j);
  j = good;
  j["version"] = 2;
  EXPECT_NE(message(j).find("version is 2, not 1"), std::string::npos) << message(j);
  EXPECT_NE(message(nlohmann::json::array()).find("the file is not a JSON object"), std::string::npos);
  j = good;
  j["future_field"] = 1;  // unknown keys: a newer writer's additions are ignored
  EXPECT_EQ(message(j), "(no error)");
  j = good;
  j["vms"][0].erase("cpu_time_s");  // written by an llmorchd from before cpu_time_s: read as unknown
  EXPECT_EQ(message(j), "(no error)");
  EXPECT_FALSE(status_from_json(j).vms[0].cpu_time_s.has_value());
  j["vms"][0]["cpu_time_s"] = "12";
  EXPECT_NE(message(j).find("vms[0].cpu_time_s is neither null nor a number"), std::string::npos) << message(j);
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

TEST_F(StatusFileTest, MissingAndBrokenFilesSayWhatToDo) {
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

// ---- issue 11, finding 5: the status file and the state directory ---------------------------------

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

DaemonStatus small_status(int pid) {
  DaemonStatus s;
  s.pid = pid;
  s.connected = true;
  return s;
}

// StatusWriter: a tick that changes nothing but the time is not written until last_tick_at is
// kStatusRefresh old; any other change is written at once; what is written is whole (rename).
TEST_F(StatusFileTest, WriterSkipsATickThatChangedNothingButTheTimeAndWritesAnyChange) {
  DaemonStatus s = full_status();
  const auto t0 = s.last_tick_at;
  const fs::path file = dir / "status.json";
  StatusWriter writer;
  ASSERT_TRUE(writer.write(dir.string(), s));  // the first write always happens
  const std::string first = slurp(file);
  EXPECT_EQ(first, status_text(status_file_of(s)));  // the real last_tick_at, spliced in right
  EXPECT_EQ(status_from_json(nlohmann::json::parse(first)).last_tick_at, iso8601(t0));

  s.last_tick_at = t0 + std::chrono::milliseconds(400);  // nothing else changed, 0.4 s later
  EXPECT_FALSE(writer.write(dir.string(), s));
  EXPECT_EQ(slurp(file), first);

  s.plan.vms[0].cpu_shares = 700;  // a change: written at once
  s.last_tick_at = t0 + std::chrono::milliseconds(500);
  ASSERT_TRUE(writer.write(dir.string(), s));
  const StatusFile second = status_from_json(nlohmann::json::parse(slurp(file)));
  EXPECT_EQ(second.last_tick_at, iso8601(s.last_tick_at));
  EXPECT_EQ(second.vm(s.plan.vms[0].name)->cpu_shares, 700);

  s.last_tick_at = t0 + std::chrono::milliseconds(1499);  // 0.999 s after the last write: skipped
  EXPECT_FALSE(writer.write(dir.string(), s));
  s.last_tick_at = t0 + std::chrono::milliseconds(1500);  // kStatusRefresh after it: the time is refreshed
  ASSERT_TRUE(writer.write(dir.string(), s));
  EXPECT_EQ(slurp(file), status_text(status_file_of(s)));

  s.agents["vm1"].counters.frames_ok += 1;  // a counter moving is a change too
  s.last_tick_at += std::chrono::milliseconds(10);
  EXPECT_TRUE(writer.write(dir.string(), s));
  EXPECT_EQ(slurp(file), status_text(status_file_of(s)));
  // Only status.json is left: every temporary file was renamed over it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
}

// A write that fails is not remembered: the next call writes even though nothing changed.
TEST_F(StatusFileTest, WriterRetriesAWriteThatFailed) {
  DaemonStatus s = full_status();
  StatusWriter writer;
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_write);  // refused: group-writable
  EXPECT_THROW(writer.write(dir.string(), s), std::runtime_error);
  fs::permissions(dir, fs::perms::owner_all);
  s.last_tick_at += std::chrono::milliseconds(100);
  EXPECT_TRUE(writer.write(dir.string(), s));
  EXPECT_EQ(slurp(dir / "status.json"), status_text(status_file_of(s)));
}

TEST_F(StatusFileTest, CreatesTheStateDirectory0755WhateverTheUmask) {
  const mode_t old = ::umask(077);
  write_status_file((dir / "a" / "state").string(), small_status(1));
  ::umask(old);
  EXPECT_EQ(fs::status(dir / "a" / "state").permissions(), static_cast<fs::perms>(0755));
  EXPECT_EQ(fs::status(dir / "a" / "state" / "status.json").permissions(), static_cast<fs::perms>(0644));
  EXPECT_EQ(read_status_file((dir / "a" / "state").string())["pid"], 1);
}

TEST_F(StatusFileTest, ASymlinkPlantedAtTheOldTemporaryNameIsNotFollowed) {
  fs::create_directories(dir);
  fs::permissions(dir, static_cast<fs::perms>(0755));
  std::ofstream(dir / "victim") << "keep me\n";
  fs::create_symlink(dir / "victim", dir / "status.json.tmp");
  write_status_file(dir.string(), small_status(7));
  EXPECT_EQ(slurp(dir / "victim"), "keep me\n");
  EXPECT_TRUE(fs::is_symlink(dir / "status.json.tmp"));
  EXPECT_FALSE(fs::is_symlink(dir / "status.json"));
  EXPECT_EQ(read_status_file(dir.string())["pid"], 7);
}

TEST_F(StatusFileTest, AStateDirectoryOthersMayWriteToIsRefused) {
  for (const auto mode : {0777, 0775, 01777}) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    ASSERT_EQ(::chmod(dir.c_str(), static_cast<mode_t>(mode)), 0);
    try {
      write_status_file(dir.string(), small_status(1));
      ADD_FAILURE() << "state directory of mode " << std::oct << mode << " accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("writable by group or others"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("chmod go-w " + dir.string()), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir / "status.json"));
    EXPECT_THROW(close(open_state_dir(dir.string())), std::runtime_error);
  }
}

TEST_F(StatusFileTest, AStateDirectoryOwnedBySomeoneElseIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the directory away";
  fs::create_directories(dir);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  try {
    write_status_file(dir.string(), small_status(1));
    ADD_FAILURE() << "a state directory owned by uid 65534 was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("owned by uid 65534"), std::string::npos) << e.what();
  }
}

TEST_F(StatusFileTest, AFailedWriteLeavesTheOldStatusFileInPlace) {
  write_status_file(dir.string(), small_status(1));
  const std::string before = slurp(dir / "status.json");
  // Files may grow to 64 bytes only: the write of the new status file fails half way (EFBIG).
  DaemonStatus big = small_status(2);
  for (int i = 0; i < 50; ++i) big.last_change["vm" + std::to_string(i)] = {{}, std::string(100, 'x')};
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* const old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  bool threw = false;
  try {
    write_status_file(dir.string(), big);
  } catch (const std::runtime_error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("left as it was"), std::string::npos) << e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw);
  EXPECT_EQ(slurp(dir / "status.json"), before);
  EXPECT_EQ(read_status_file(dir.string())["pid"], 1);
  for (const auto& e : fs::directory_iterator(dir))  // and no temporary file is left behind
    EXPECT_EQ(e.path().filename(), "status.json");
}

TEST_F(StatusFileTest, SetProblemsKeepsSinceReplacesOneKindAndSaysWhatChanged) {
  DaemonStatus s;
  const auto t1 = std::chrono::system_clock::time_point{} + std::chrono::seconds(100);
  const auto t2 = t1 + std::chrono::seconds(1);
  s.problems["a"].push_back({"unresponsive", "libvirt call did not return", t1});
  ProblemChanges c = set_problems(s, "bad_metadata", {{"a", "bad metadata: x"}, {"b", "bad metadata: y"}}, t1);
  EXPECT_EQ(c.raised.size(), 2u);
  EXPECT_TRUE(c.cleared.empty());
  EXPECT_EQ(s.problems["a"].size(), 2u);
  c = set_problems(s, "bad_metadata", {{"b", "bad metadata: y"}}, t2);
  EXPECT_TRUE(c.raised.empty());
  EXPECT_EQ(c.cleared, std::vector<std::string>({"a"}));
  ASSERT_EQ(s.problems["a"].size(), 1u);
  EXPECT_EQ(s.problems["a"][0].kind, "unresponsive");  // another kind: untouched
  ASSERT_EQ(s.problems["b"].size(), 1u);
  EXPECT_EQ(s.problems["b"][0].since, t1);  // goes on since t1
  c = set_problems(s, "bad_metadata", {}, t2);
  EXPECT_EQ(c.cleared, std::vector<std::string>({"b"}));
  EXPECT_FALSE(s.problems.count("b"));
  s.connected = true;
  EXPECT_EQ(health(s), "degraded");  // a's other problem
}

}  // namespace
}  // namespace llmorch::orch
